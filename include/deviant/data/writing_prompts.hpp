// deviant/data/writing_prompts.hpp — the r/WritingPrompts preference data (docs/method.md,
// "Building pairs") turned into the prompt/responses schema of `deviant deviation`, and a reader
// for the text pairs `deviant pairs` writes.
//
// Input, one JSON object per line (schema of euclaise/WritingPrompts_preferences):
//   {"post_title": "[WP] ...", "post_text": "...", "comment_texts": [...], "comment_scores": [...]}
// Cleaning, as in the paper:
//   prompt = the title without its leading "[XX]" tag (and the spaces after it), a newline, the
//            post text (the title alone when the post text is empty);
//   comments containing "**Welcome to the Prompt!**", "this submission has been removed" or
//   "**Off-Topic Discussion**" (moderator posts) are dropped, as are empty ones and, optionally,
//   those longer than a limit in characters (UTF-8 code points) or words;
//   a prompt left with fewer than min_responses responses is dropped.
// Split: by prompt, from a 64-bit FNV-1a hash of the prompt text mixed with `split_seed`, so a
// prompt always lands on the same side on every run and machine, and duplicate prompts stay
// together. Output lines: {"prompt": "...", "responses": [{"text": "...", "score": n}, ...]}.
// Every drop is counted in the report. Malformed lines are an error naming FILE:LINE, or with
// skip_bad_lines are skipped and counted (their line numbers kept).
#pragma once
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "deviant/data/jsonl.hpp"
#include "deviant/data/pairs.hpp"

namespace deviant::data {

struct WritingPromptsOptions {
    std::size_t max_response_chars = 0;  // drop responses longer than this many code points (0 = no limit)
    std::size_t max_response_words = 0;  // drop responses longer than this many words (0 = no limit)
    std::size_t min_responses = 2;       // drop prompts left with fewer responses
    double test_fraction = 0.1;          // share of prompts in the test split
    std::uint64_t split_seed = 0;        // changes which prompts are held out, deterministically
    bool skip_bad_lines = false;         // skip and count malformed lines instead of failing
};

struct WritingPromptsReport {
    std::size_t lines = 0, train_prompts = 0, test_prompts = 0, responses = 0;
    std::size_t dropped_moderator = 0, dropped_too_long = 0, dropped_empty = 0, dropped_prompts = 0;
    std::size_t skipped_lines = 0;
    std::vector<std::size_t> skipped_line_numbers;  // the first 100
    std::string summary() const {
        return fmt::format("{} lines: {} train / {} test prompts, {} responses; dropped {} moderator, {} over-long, {} empty "
                           "responses and {} prompts with too few responses; skipped {} malformed lines",
                           lines, train_prompts, test_prompts, responses, dropped_moderator, dropped_too_long, dropped_empty,
                           dropped_prompts, skipped_lines);
    }
};

struct WritingPrompt {
    std::string prompt;
    std::vector<std::string> texts;
    std::vector<double> scores;
    bool test = false;
    std::size_t line = 0;
    json to_json() const {
        json responses = json::array();
        for (std::size_t i = 0; i < texts.size(); ++i) responses.push_back(json{{"text", texts[i]}, {"score", scores[i]}});
        return json{{"prompt", prompt}, {"responses", responses}};
    }
};

namespace wp {

inline constexpr std::string_view kModeratorMarkers[] = {"**Welcome to the Prompt!**", "this submission has been removed",
                                                         "**Off-Topic Discussion**"};

inline bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

inline std::string_view trim(std::string_view s) {
    while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
    return s;
}

// The title without one leading "[XX]" tag (a bracketed run without brackets or newlines) and
// the whitespace around it: "[WP] A dragon" -> "A dragon".
inline std::string strip_tag(std::string_view title) {
    std::string_view t = trim(title);
    if (!t.empty() && t.front() == '[') {
        const std::size_t close = t.find(']');
        if (close != std::string_view::npos && t.substr(1, close - 1).find_first_of("[\n") == std::string_view::npos)
            t = trim(t.substr(close + 1));
    }
    return std::string(t);
}

inline std::string make_prompt(std::string_view title, std::string_view text) {
    std::string p = strip_tag(title);
    std::string_view body = trim(text);
    if (!body.empty()) p += "\n" + std::string(body);
    return p;
}

inline bool is_moderator(std::string_view text) {
    for (std::string_view m : kModeratorMarkers)
        if (text.find(m) != std::string_view::npos) return true;
    return false;
}

inline std::size_t code_points(std::string_view s) {
    std::size_t n = 0;
    for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    return n;
}

inline std::size_t words(std::string_view s) {
    std::size_t n = 0;
    bool in_word = false;
    for (char c : s) {
        if (is_space(c)) in_word = false;
        else if (!in_word) in_word = true, ++n;
    }
    return n;
}

// 64-bit FNV-1a of the bytes (the same value on every platform).
inline std::uint64_t fnv1a64(std::string_view bytes) {
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (char c : bytes) {
        h ^= static_cast<unsigned char>(c);
        h *= 0x100000001b3ull;
    }
    return h;
}

// FNV-1a of the prompt mixed with the seed (splitmix64 finaliser, data::derive_seed).
inline std::uint64_t prompt_hash(std::string_view prompt, std::uint64_t seed) { return derive_seed(fnv1a64(prompt), seed); }

}  // namespace wp

// True when `prompt` belongs to the test split: hash / 2^64 < test_fraction.
inline bool in_test_split(std::string_view prompt, double test_fraction, std::uint64_t seed = 0) {
    const double u = double(wp::prompt_hash(prompt, seed) >> 11) * 0x1.0p-53;
    return u < test_fraction;
}

// One input line cleaned; nullopt when the prompt is dropped (counted in `report`).
inline std::optional<WritingPrompt> clean_writing_prompt(const json& line, const WritingPromptsOptions& opts, WritingPromptsReport& report) {
    DEVIANT_REQUIRE(line.is_object(), "expected a JSON object, got {}", line.type_name());
    auto str = [&](const char* field) {
        auto it = line.find(field);
        DEVIANT_REQUIRE(it != line.end(), "missing field '{}'", field);
        if (it->is_null()) return std::string();
        DEVIANT_REQUIRE(it->is_string(), "field '{}' must be a string, got {}", field, it->type_name());
        return it->get<std::string>();
    };
    auto list = [&](const char* field) -> const json& {
        auto it = line.find(field);
        DEVIANT_REQUIRE(it != line.end(), "missing field '{}'", field);
        DEVIANT_REQUIRE(it->is_array(), "field '{}' must be an array, got {}", field, it->type_name());
        return *it;
    };
    WritingPrompt wp;
    const std::string title = str("post_title");
    wp.prompt = wp::make_prompt(title, str("post_text"));
    DEVIANT_REQUIRE(!wp.prompt.empty(), "field 'post_title' is empty: no prompt");
    const json& texts = list("comment_texts");
    const json& scores = list("comment_scores");
    DEVIANT_REQUIRE(texts.size() == scores.size(), "'comment_texts' has {} entries but 'comment_scores' has {}", texts.size(),
                    scores.size());
    // Validate the whole line before counting anything, so a skipped line leaves no trace.
    for (std::size_t i = 0; i < texts.size(); ++i) {
        DEVIANT_REQUIRE(texts[i].is_string(), "'comment_texts'[{}] must be a string, got {}", i, texts[i].type_name());
        DEVIANT_REQUIRE(scores[i].is_number(), "'comment_scores'[{}] must be a number, got {}", i, scores[i].dump());
        DEVIANT_REQUIRE(std::isfinite(scores[i].get<double>()), "'comment_scores'[{}] is not finite", i);
    }
    std::size_t moderator = 0, too_long = 0, empty = 0;
    for (std::size_t i = 0; i < texts.size(); ++i) {
        const std::string& text = texts[i].get_ref<const std::string&>();
        if (wp::is_moderator(text)) ++moderator;
        else if (wp::trim(text).empty()) ++empty;
        else if ((opts.max_response_chars > 0 && wp::code_points(text) > opts.max_response_chars) ||
                 (opts.max_response_words > 0 && wp::words(text) > opts.max_response_words))
            ++too_long;
        else {
            wp.texts.push_back(text);
            wp.scores.push_back(scores[i].get<double>());
        }
    }
    report.dropped_moderator += moderator;
    report.dropped_too_long += too_long;
    report.dropped_empty += empty;
    if (wp.texts.size() < opts.min_responses) {
        ++report.dropped_prompts;
        return std::nullopt;
    }
    wp.test = in_test_split(wp.prompt, opts.test_fraction, opts.split_seed);
    report.responses += wp.texts.size();
    ++(wp.test ? report.test_prompts : report.train_prompts);
    return wp;
}

// Calls fn(prompt) for every kept prompt of a WritingPrompts JSON Lines file, in file order.
template <class Fn>
WritingPromptsReport for_each_writing_prompt(const std::filesystem::path& path, const WritingPromptsOptions& opts, Fn&& fn) {
    DEVIANT_REQUIRE(opts.test_fraction >= 0.0 && opts.test_fraction <= 1.0, "test_fraction must be in [0, 1], got {}",
                    opts.test_fraction);
    WritingPromptsReport report;
    std::ifstream in(path);
    DEVIANT_REQUIRE(in.is_open(), "{}: cannot open for reading", path.string());
    std::string text;
    std::size_t number = 0;
    while (std::getline(in, text)) {
        ++number;
        if (!text.empty() && text.back() == '\r') text.pop_back();
        if (wp::trim(text).empty()) continue;
        ++report.lines;
        std::optional<WritingPrompt> wp;
        try {
            wp = clean_writing_prompt(json::parse(text), opts, report);
        } catch (const std::exception& e) {  // invalid JSON, or a deviant::Error about the content
            if (!opts.skip_bad_lines) fail("{}:{}: {}", path.string(), number, e.what());
            ++report.skipped_lines;
            if (report.skipped_line_numbers.size() < 100) report.skipped_line_numbers.push_back(number);
            continue;
        }
        if (!wp) continue;
        wp->line = number;
        fn(*wp);
    }
    DEVIANT_REQUIRE(!in.bad(), "{}:{}: read error", path.string(), number);
    return report;
}

// Reads and cleans a whole file into memory.
inline std::vector<WritingPrompt> read_writing_prompts(const std::filesystem::path& path, const WritingPromptsOptions& opts,
                                                       WritingPromptsReport* report = nullptr) {
    std::vector<WritingPrompt> out;
    WritingPromptsReport r = for_each_writing_prompt(path, opts, [&](WritingPrompt& wp) { out.push_back(std::move(wp)); });
    if (report) *report = std::move(r);
    return out;
}

// Cleans `input` into two prompt/responses files (written atomically, both or neither).
inline WritingPromptsReport convert_writing_prompts(const std::filesystem::path& input, const std::filesystem::path& train_output,
                                                    const std::filesystem::path& test_output, const WritingPromptsOptions& opts) {
    AtomicTextFile train(train_output), test(test_output);
    WritingPromptsReport report =
        for_each_writing_prompt(input, opts, [&](const WritingPrompt& wp) { (wp.test ? test : train).write_line(wp.to_json()); });
    DEVIANT_REQUIRE(report.train_prompts + report.test_prompts > 0, "{}: no prompt left after cleaning ({})", input.string(),
                    report.summary());
    train.commit();
    test.commit();
    return report;
}

// --- text pairs (the output of `deviant pairs`) ---

struct TextPair {
    std::string prompt, chosen, rejected;
    double weight = 1.0;
    std::string origin;  // "FILE:LINE", for error messages
};

inline TextPair parse_text_pair(const json& obj) {
    DEVIANT_REQUIRE(obj.is_object(), "expected a JSON object, got {}", obj.type_name());
    TextPair p;
    for (auto [field, dst] : {std::pair{"prompt", &p.prompt}, std::pair{"chosen", &p.chosen}, std::pair{"rejected", &p.rejected}}) {
        auto it = obj.find(field);
        DEVIANT_REQUIRE(it != obj.end(), "missing field '{}'", field);
        DEVIANT_REQUIRE(it->is_string(), "field '{}' must be a string, got {}", field, it->type_name());
        *dst = it->get<std::string>();
    }
    if (auto it = obj.find("weight"); it != obj.end()) {
        DEVIANT_REQUIRE(it->is_number(), "field 'weight' must be a number, got {}", it->dump());
        p.weight = it->get<double>();
        DEVIANT_REQUIRE(std::isfinite(p.weight) && p.weight >= 0, "field 'weight' must be finite and non-negative, got {}", p.weight);
    }
    return p;
}

// Every pair of a `deviant pairs` output file ({"prompt","chosen","rejected","weight",...}).
inline std::vector<TextPair> read_text_pairs(const std::filesystem::path& path) {
    std::vector<TextPair> pairs;
    for_each_json_line(path, [&](JsonLine& line) {
        pairs.push_back(parse_text_pair(line.value));
        pairs.back().origin = fmt::format("{}:{}", path.string(), line.number);
    });
    DEVIANT_REQUIRE(!pairs.empty(), "{}: no pairs in the file", path.string());
    return pairs;
}

}  // namespace deviant::data
