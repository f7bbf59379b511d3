// deviant/data/jsonl.hpp — JSON Lines input and atomic output.
// Why: every data file of the pipeline is one JSON object per line. JsonLinesReader yields
// (line number, parsed json), skips blank lines and turns a parse error into a one-line
// deviant::Error "FILE:LINE: ..."; AtomicTextFile writes to a temporary file beside the target
// and renames it on commit(), so an error never leaves a half-written output behind.
#pragma once
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <system_error>

#include "deviant/core/error.hpp"

namespace deviant::data {

using json = nlohmann::json;

struct JsonLine {
    std::size_t number = 0;  // 1-based line number in the file
    json value;
};

class JsonLinesReader {
public:
    explicit JsonLinesReader(std::filesystem::path path) : path_(std::move(path)), in_(path_) {
        DEVIANT_REQUIRE(in_.is_open(), "{}: cannot open for reading", path_.string());
    }

    const std::filesystem::path& path() const { return path_; }

    // Reads the next non-blank line into `line`; false at end of file.
    bool next(JsonLine& line) {
        std::string text;
        while (std::getline(in_, text)) {
            ++number_;
            if (!text.empty() && text.back() == '\r') text.pop_back();
            if (text.find_first_not_of(" \t\r\n") == std::string::npos) continue;
            line.number = number_;
            check_depth(text);
            try {
                line.value = json::parse(text);
            } catch (const json::exception& e) {  // syntax, and numbers beyond double (1e999)
                fail("{}:{}: invalid JSON: {}", path_.string(), number_, clean_message(e.what()));
            }
            return true;
        }
        DEVIANT_REQUIRE(!in_.bad(), "{}:{}: read error", path_.string(), number_);
        return false;
    }

    // "FILE:LINE: message" for errors about the line last returned.
    std::string where(const JsonLine& line) const { return fmt::format("{}:{}", path_.string(), line.number); }
    // The number of the last line read (also when reading it failed).
    std::size_t line_number() const { return number_; }

    // Deepest nesting of arrays and objects a line may have: far beyond any real record, well
    // below what recursive copying and printing of the parsed value can survive.
    static constexpr int max_depth = 256;

    // nlohmann messages start with "[json.exception.parse_error.101] "; keep the readable rest.
    static std::string clean_message(std::string m) {
        if (auto p = m.find("] "); m.rfind("[json.exception.", 0) == 0 && p != std::string::npos) m.erase(0, p + 2);
        return m;
    }

private:
    // Counts [ and { outside strings; a line nested deeper than max_depth is an error before it
    // is parsed (a 100,000-deep line would otherwise exhaust the stack when copied or printed).
    void check_depth(const std::string& text) const {
        int depth = 0;
        bool in_string = false, escaped = false;
        for (char c : text) {
            if (in_string) {
                if (escaped) escaped = false;
                else if (c == '\\') escaped = true;
                else if (c == '"') in_string = false;
            } else if (c == '"') {
                in_string = true;
            } else if (c == '[' || c == '{') {
                DEVIANT_REQUIRE(++depth <= max_depth, "{}:{}: JSON nested deeper than {} levels", path_.string(), number_, max_depth);
            } else if (c == ']' || c == '}') {
                --depth;
            }
        }
    }

    std::filesystem::path path_;
    std::ifstream in_;
    std::size_t number_ = 0;
};

// Calls fn(line) for every JSON line of `path`; a deviant::Error thrown by fn is re-thrown
// prefixed with "FILE:LINE: ".
inline void for_each_json_line(const std::filesystem::path& path, const std::function<void(JsonLine&)>& fn) {
    JsonLinesReader reader(path);
    JsonLine line;
    while (reader.next(line)) {
        try {
            fn(line);
        } catch (const Error& e) {
            fail("{}: {}", reader.where(line), e.what());
        } catch (const json::exception& e) {
            fail("{}: {}", reader.where(line), JsonLinesReader::clean_message(e.what()));
        }
    }
}

// An output must never overwrite an input: refuses `output` when it names the same file as
// `input` (after resolving links and relative paths).
inline void require_distinct_paths(const std::filesystem::path& input, const std::filesystem::path& output,
                                   const char* input_flag = "--input", const char* output_flag = "--output") {
    std::error_code ec1, ec2;
    const auto a = std::filesystem::weakly_canonical(input, ec1), b = std::filesystem::weakly_canonical(output, ec2);
    DEVIANT_REQUIRE(ec1 || ec2 || a != b, "{} {} is also the {}: refusing to overwrite an input", output_flag, output.string(), input_flag);
}

// A text file that appears at `target` only when commit() succeeds. Until then the content
// goes to "TARGET.tmp-PID-N" in the same directory; destruction without commit removes it.
class AtomicTextFile {
public:
    explicit AtomicTextFile(std::filesystem::path target) : target_(std::move(target)) {
        static std::atomic<std::uint64_t> counter{0};
        temp_ = target_;
        temp_ += fmt::format(".tmp-{}-{}", ::getpid(), counter++);
        out_.open(temp_, std::ios::out | std::ios::trunc | std::ios::binary);
        DEVIANT_REQUIRE(out_.is_open(), "{}: cannot open for writing", temp_.string());
    }
    AtomicTextFile(const AtomicTextFile&) = delete;
    AtomicTextFile& operator=(const AtomicTextFile&) = delete;
    ~AtomicTextFile() {
        if (committed_) return;
        out_.close();
        std::error_code ec;
        std::filesystem::remove(temp_, ec);
    }

    std::ostream& stream() { return out_; }
    void write_line(const json& value) { out_ << value.dump() << '\n'; }

    void commit() {
        DEVIANT_REQUIRE(!committed_, "{}: already committed", target_.string());
        out_.flush();
        DEVIANT_REQUIRE(out_.good(), "{}: write error", temp_.string());
        out_.close();
        DEVIANT_REQUIRE(!out_.fail(), "{}: write error on close", temp_.string());
        std::error_code ec;
        std::filesystem::rename(temp_, target_, ec);
        DEVIANT_REQUIRE(!ec, "{}: cannot move the output into place: {}", target_.string(), ec.message());
        committed_ = true;
    }

private:
    std::filesystem::path target_, temp_;
    std::ofstream out_;
    bool committed_ = false;
};

}  // namespace deviant::data
