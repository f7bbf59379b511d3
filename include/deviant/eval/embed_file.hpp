// deviant/eval/embed_file.hpp — `deviant embed`: add built-in embeddings (eval/embedder.hpp) to
// a JSON Lines file, for `deviant deviation` / `deviant pairs` and for diversity metrics.
// Accepted line schemas (detected per line):
//   prompt/responses (data/writing_prompts.hpp output):
//       {"prompt", "responses": [{"text", ...}, ...]}
//     -> every response gets "embedding": {space: [...]} (spaces already there are kept unless
//        recomputed here);
//   generated samples (`deviant generate` output):
//       {"prompt", "samples": ["text", ...]}
//     -> the line gets "embeddings": {space: [[...] per sample]}.
// Other fields are kept. Errors name FILE:LINE and the field / response index; the output is
// written atomically.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "deviant/data/jsonl.hpp"
#include "deviant/eval/embedder.hpp"

namespace deviant::eval {

using data::json;

struct EmbedReport {
    std::size_t lines = 0, texts = 0;
};

// Adds the embeddings of `spaces` to one line (either schema); returns the number of texts.
inline std::size_t embed_line(json& line, const std::vector<Space>& spaces) {
    DEVIANT_REQUIRE(!spaces.empty(), "embed: no embedding space selected");
    DEVIANT_REQUIRE(line.is_object(), "expected a JSON object, got {}", line.type_name());
    auto to_json = [](const std::vector<double>& v) {
        json a = json::array();
        for (double x : v) a.push_back(x);
        return a;
    };
    if (auto responses = line.find("responses"); responses != line.end()) {
        DEVIANT_REQUIRE(responses->is_array(), "field 'responses' must be an array, got {}", responses->type_name());
        for (std::size_t i = 0; i < responses->size(); ++i) {
            json& r = (*responses)[i];
            DEVIANT_REQUIRE(r.is_object(), "response {}: expected a JSON object, got {}", i, r.type_name());
            auto text = r.find("text");
            DEVIANT_REQUIRE(text != r.end() && text->is_string(), "response {}: field 'text' missing or not a string", i);
            json& emb = r["embedding"];
            if (emb.is_null()) emb = json::object();
            DEVIANT_REQUIRE(emb.is_object(), "response {}: field 'embedding' must be an object of space -> array", i);
            const std::string& t = text->get_ref<const std::string&>();
            for (Space s : spaces) emb[std::string(space_name(s))] = to_json(embed(t, s));
        }
        return responses->size();
    }
    if (auto samples = line.find("samples"); samples != line.end()) {
        DEVIANT_REQUIRE(samples->is_array(), "field 'samples' must be an array, got {}", samples->type_name());
        json& out = line["embeddings"];
        if (out.is_null()) out = json::object();
        DEVIANT_REQUIRE(out.is_object(), "field 'embeddings' must be an object of space -> arrays");
        for (Space s : spaces) {
            json per_sample = json::array();
            for (std::size_t i = 0; i < samples->size(); ++i) {
                const json& t = (*samples)[i];
                DEVIANT_REQUIRE(t.is_string(), "sample {}: expected a string, got {}", i, t.type_name());
                per_sample.push_back(to_json(embed(t.get_ref<const std::string&>(), s)));
            }
            out[std::string(space_name(s))] = std::move(per_sample);
        }
        return samples->size();
    }
    fail("expected a field 'responses' (prompt/responses schema) or 'samples' (generated samples)");
}

// Embeds every line of `input` into `output` (written atomically).
inline EmbedReport embed_file(const std::filesystem::path& input, const std::filesystem::path& output, const std::vector<Space>& spaces) {
    DEVIANT_REQUIRE(!spaces.empty(), "embed: no embedding space selected");
    data::AtomicTextFile out(output);
    EmbedReport report;
    data::for_each_json_line(input, [&](data::JsonLine& line) {
        report.texts += embed_line(line.value, spaces);
        ++report.lines;
        out.write_line(line.value);
    });
    out.commit();
    return report;
}

}  // namespace deviant::eval
