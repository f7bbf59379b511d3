// deviant/eval/samples_file.hpp — the JSON Lines file of generated samples that `deviant
// generate` writes and `deviant evaluate` reads, one prompt per line:
//   {"prompt": "...", "samples": ["text", ...], "embeddings": {"sem": [[...], ...], ...}}
// "embeddings" is optional (added by an embedder); each named list holds one vector per sample,
// all of one length. Reading checks every field and fails with "FILE:LINE: field ...".
#pragma once
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "deviant/data/jsonl.hpp"
#include "deviant/eval/diversity.hpp"

namespace deviant::eval {

namespace detail {
inline std::vector<std::vector<double>> parse_embedding_list(const data::json& v, const std::string& field, std::size_t samples) {
    DEVIANT_REQUIRE(v.is_array(), "field '{}' must be a list of vectors (one per sample)", field);
    DEVIANT_REQUIRE(v.size() == samples, "field '{}' has {} vectors for {} samples", field, v.size(), samples);
    std::vector<std::vector<double>> out;
    for (std::size_t i = 0; i < v.size(); ++i) {
        const auto& e = v[i];
        DEVIANT_REQUIRE(e.is_array() && !e.empty(), "field '{}[{}]' must be a non-empty list of numbers", field, i);
        std::vector<double> vec;
        for (std::size_t d = 0; d < e.size(); ++d) {
            DEVIANT_REQUIRE(e[d].is_number(), "field '{}[{}][{}]' must be a number, got {}", field, i, d, e[d].dump());
            vec.push_back(e[d].get<double>());
            DEVIANT_REQUIRE(std::isfinite(vec.back()), "field '{}[{}][{}]' is not finite", field, i, d);
        }
        DEVIANT_REQUIRE(out.empty() || vec.size() == out.front().size(), "field '{}[{}]' has {} dimensions, '{}[0]' has {}", field, i,
                        vec.size(), field, out.front().size());
        out.push_back(std::move(vec));
    }
    return out;
}
}  // namespace detail

// Reads every line; `required_embeddings` must be present on every line.
inline std::vector<SampleGroup> read_sample_groups(const std::filesystem::path& path, const std::vector<std::string>& required_embeddings = {}) {
    std::vector<SampleGroup> groups;
    data::for_each_json_line(path, [&](data::JsonLine& line) {
        const data::json& j = line.value;
        DEVIANT_REQUIRE(j.is_object(), "expected a JSON object with field 'samples'");
        SampleGroup g;
        if (j.contains("prompt")) {
            DEVIANT_REQUIRE(j["prompt"].is_string(), "field 'prompt' must be a string");
            g.prompt = j["prompt"].get<std::string>();
        }
        DEVIANT_REQUIRE(j.contains("samples"), "missing field 'samples'");
        const auto& s = j["samples"];
        DEVIANT_REQUIRE(s.is_array() && !s.empty(), "field 'samples' must be a non-empty list of strings");
        for (std::size_t i = 0; i < s.size(); ++i) {
            DEVIANT_REQUIRE(s[i].is_string(), "field 'samples[{}]' must be a string, got {}", i, s[i].type_name());
            g.samples.push_back(s[i].get<std::string>());
        }
        if (j.contains("embeddings")) {
            const auto& e = j["embeddings"];
            DEVIANT_REQUIRE(e.is_object(), "field 'embeddings' must be an object of named vector lists");
            for (const auto& [name, v] : e.items()) g.embeddings[name] = detail::parse_embedding_list(v, "embeddings." + name, g.samples.size());
        }
        if (j.contains("rewards")) {
            const auto& r = j["rewards"];
            DEVIANT_REQUIRE(r.is_array() && r.size() == g.samples.size(), "field 'rewards' must be a list of {} numbers (one per sample)",
                            g.samples.size());
            for (std::size_t i = 0; i < r.size(); ++i) {
                DEVIANT_REQUIRE(r[i].is_number() && std::isfinite(r[i].get<double>()), "field 'rewards[{}]' must be a finite number", i);
                g.rewards.push_back(r[i].get<double>());
            }
        }
        for (const std::string& name : required_embeddings)
            DEVIANT_REQUIRE(g.embeddings.count(name), "missing field 'embeddings.{}'", name);
        if (!groups.empty())
            for (const auto& [name, v] : g.embeddings)
                if (auto it = groups.front().embeddings.find(name); it != groups.front().embeddings.end())
                    DEVIANT_REQUIRE(v.front().size() == it->second.front().size(),
                                    "field 'embeddings.{}' has {} dimensions, the first line's has {}", name, v.front().size(),
                                    it->second.front().size());
        groups.push_back(std::move(g));
    });
    DEVIANT_REQUIRE(!groups.empty(), "{}: no samples (the file is empty)", path.string());
    return groups;
}

inline data::json sample_group_json(const SampleGroup& g) {
    data::json j{{"prompt", g.prompt}, {"samples", g.samples}};
    if (!g.embeddings.empty()) {
        data::json e = data::json::object();
        for (const auto& [name, v] : g.embeddings) e[name] = v;
        j["embeddings"] = e;
    }
    if (!g.rewards.empty()) j["rewards"] = g.rewards;
    return j;
}

// Writes the groups atomically (the file appears only when complete); invalid UTF-8 in a text
// (a sample cut inside a multi-byte character) is written as U+FFFD.
inline void write_sample_groups(const std::filesystem::path& path, const std::vector<SampleGroup>& groups) {
    data::AtomicTextFile out(path);
    for (const SampleGroup& g : groups)
        out.stream() << sample_group_json(g).dump(-1, ' ', false, data::json::error_handler_t::replace) << '\n';
    out.commit();
}

}  // namespace deviant::eval
