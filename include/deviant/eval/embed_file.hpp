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
// embed_file_with_encoder does the same with a neural sentence encoder (eval/sentence_encoder.hpp)
// under a space name of the caller's choice (usually "sem"): every text of the file is encoded in
// batches (with a progress bar), then the lines are written with the same fields the built-in
// spaces write, so `deviation`, `pairs` and `evaluate` read them unchanged.
#pragma once
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "deviant/data/jsonl.hpp"
#include "deviant/eval/embedder.hpp"
#include "deviant/train/progress.hpp"

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
    data::require_distinct_paths(input, output);
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

// Encodes texts (N) -> N vectors; called with batches of texts.
using TextEncoder = std::function<std::vector<std::vector<float>>(const std::vector<std::string>&)>;

inline EmbedReport embed_file_with_encoder(const std::filesystem::path& input, const std::filesystem::path& output, const TextEncoder& encode,
                                           const std::string& space, std::size_t chunk = 256, bool show_progress = true) {
    DEVIANT_REQUIRE(!space.empty(), "embed: the space name is empty");
    data::require_distinct_paths(input, output);
    // pass 1: read and check every line, collect its texts
    std::vector<json> lines;
    std::vector<std::string> texts;
    data::for_each_json_line(input, [&](data::JsonLine& line) {
        json& v = line.value;
        DEVIANT_REQUIRE(v.is_object(), "expected a JSON object, got {}", v.type_name());
        if (auto responses = v.find("responses"); responses != v.end()) {
            DEVIANT_REQUIRE(responses->is_array(), "field 'responses' must be an array, got {}", responses->type_name());
            for (std::size_t i = 0; i < responses->size(); ++i) {
                const json& r = (*responses)[i];
                DEVIANT_REQUIRE(r.is_object(), "response {}: expected a JSON object, got {}", i, r.type_name());
                auto text = r.find("text");
                DEVIANT_REQUIRE(text != r.end() && text->is_string(), "response {}: field 'text' missing or not a string", i);
                auto emb = r.find("embedding");
                DEVIANT_REQUIRE(emb == r.end() || emb->is_null() || emb->is_object(), "response {}: field 'embedding' must be an object of space -> array", i);
                texts.push_back(text->get<std::string>());
            }
        } else if (auto samples = v.find("samples"); samples != v.end()) {
            DEVIANT_REQUIRE(samples->is_array(), "field 'samples' must be an array, got {}", samples->type_name());
            auto emb = v.find("embeddings");
            DEVIANT_REQUIRE(emb == v.end() || emb->is_null() || emb->is_object(), "field 'embeddings' must be an object of space -> arrays");
            for (std::size_t i = 0; i < samples->size(); ++i) {
                DEVIANT_REQUIRE((*samples)[i].is_string(), "sample {}: expected a string, got {}", i, (*samples)[i].type_name());
                texts.push_back((*samples)[i].get<std::string>());
            }
        } else {
            fail("expected a field 'responses' (prompt/responses schema) or 'samples' (generated samples)");
        }
        lines.push_back(std::move(v));
    });
    // pass 2: encode in chunks
    std::vector<std::vector<float>> vectors;
    vectors.reserve(texts.size());
    ProgressBar bar("embed", std::int64_t(texts.size()), show_progress && !texts.empty());
    for (std::size_t b = 0; b < texts.size(); b += chunk) {
        std::vector<std::string> part(texts.begin() + std::ptrdiff_t(b), texts.begin() + std::ptrdiff_t(std::min(texts.size(), b + chunk)));
        std::vector<std::vector<float>> got = encode(part);
        DEVIANT_REQUIRE(got.size() == part.size(), "embed: the encoder returned {} vectors for {} texts", got.size(), part.size());
        std::int64_t n_tokens = 0;
        for (const auto& t : part) n_tokens += std::int64_t(t.size());
        for (auto& g : got) vectors.push_back(std::move(g));
        bar.update(std::int64_t(vectors.size()), n_tokens);
    }
    bar.finish();
    // pass 3: write
    auto to_json = [](const std::vector<float>& v) {
        json a = json::array();
        for (float x : v) a.push_back(double(x));
        return a;
    };
    data::AtomicTextFile out(output);
    std::size_t next = 0;
    for (json& v : lines) {
        if (auto responses = v.find("responses"); responses != v.end()) {
            for (json& r : *responses) {
                json& emb = r["embedding"];
                if (emb.is_null()) emb = json::object();
                emb[space] = to_json(vectors[next++]);
            }
        } else {
            json& emb = v["embeddings"];
            if (emb.is_null()) emb = json::object();
            json per_sample = json::array();
            for (std::size_t i = 0; i < v["samples"].size(); ++i) per_sample.push_back(to_json(vectors[next++]));
            emb[space] = std::move(per_sample);
        }
        out.write_line(v);
    }
    out.commit();
    return {lines.size(), texts.size()};
}

}  // namespace deviant::eval
