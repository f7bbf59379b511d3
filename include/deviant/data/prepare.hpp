// deviant/data/prepare.hpp — the data-preparation steps behind `deviant deviation` and
// `deviant pairs`, as library functions over JSON Lines files.
// Input line (extra fields are kept by deviation_file):
//   {"prompt": "...", "responses": [{"text": "...", "score": 12,
//                                    "embedding": {"sem": [...], "sty": [...]}}, ...]}
// deviation_file adds to every response "deviation": {space: raw mean cosine distance} and
// "weight" (over all responses of the line); pairs_file writes one line per pair:
//   {"prompt", "chosen", "rejected", "weight", "chosen_score", "rejected_score"}.
// Errors name FILE:LINE and the response index / space; outputs are written atomically.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "deviant/data/jsonl.hpp"
#include "deviant/data/pairs.hpp"
#include "deviant/deviation/deviation.hpp"

namespace deviant::data {

// Reads the prompt/responses schema of one line. With `need_text_and_score`, "prompt" and every
// response's "text" must be strings and "score" a number; otherwise they are read when present.
inline deviation::PromptResponses parse_prompt_responses(const json& line, bool need_text_and_score) {
    DEVIANT_REQUIRE(line.is_object(), "expected a JSON object, got {}", line.type_name());
    deviation::PromptResponses r;
    auto prompt = line.find("prompt");
    if (need_text_and_score) DEVIANT_REQUIRE(prompt != line.end() && prompt->is_string(), "field 'prompt' missing or not a string");
    if (prompt != line.end() && prompt->is_string()) r.prompt = prompt->get<std::string>();
    auto responses = line.find("responses");
    DEVIANT_REQUIRE(responses != line.end() && responses->is_array(), "field 'responses' missing or not an array");
    for (std::size_t i = 0; i < responses->size(); ++i) {
        const json& x = (*responses)[i];
        DEVIANT_REQUIRE(x.is_object(), "response {}: expected a JSON object, got {}", i, x.type_name());
        deviation::Response resp;
        auto text = x.find("text");
        auto score = x.find("score");
        if (need_text_and_score) {
            DEVIANT_REQUIRE(text != x.end() && text->is_string(), "response {}: field 'text' missing or not a string", i);
            DEVIANT_REQUIRE(score != x.end() && score->is_number(), "response {}: field 'score' missing or not a number", i);
        }
        if (text != x.end() && text->is_string()) resp.text = text->get<std::string>();
        if (score != x.end() && score->is_number()) resp.score = score->get<double>();
        if (auto emb = x.find("embedding"); emb != x.end()) {
            DEVIANT_REQUIRE(emb->is_object(), "response {}: field 'embedding' must be an object of space -> array", i);
            for (const auto& [space, values] : emb->items()) {
                DEVIANT_REQUIRE(values.is_array(), "response {}: embedding '{}' is not an array", i, space);
                deviation::Embedding e;
                e.reserve(values.size());
                for (std::size_t t = 0; t < values.size(); ++t) {
                    DEVIANT_REQUIRE(values[t].is_number(), "response {}: embedding '{}' value {} is not a number", i, space, t);
                    e.push_back(values[t].get<double>());
                }
                resp.embedding.emplace(space, std::move(e));
            }
        }
        r.responses.push_back(std::move(resp));
    }
    return r;
}

// Adds "deviation" (raw, per selected space) and "weight" to every response of one line.
inline void annotate_deviation(json& line, const deviation::DeviationOptions& opts) {
    const deviation::PromptResponses r = parse_prompt_responses(line, false);
    const std::vector<std::string> spaces = deviation::resolve_spaces(r, opts);
    const std::vector<std::vector<double>> raw = deviation::raw_deviations(r, spaces);
    const std::vector<double> w = deviation::normalise_weights(deviation::deviation_scores(raw), opts.floor);
    json& responses = line["responses"];
    for (std::size_t i = 0; i < r.size(); ++i) {
        json d = json::object();
        for (std::size_t k = 0; k < spaces.size(); ++k) d[spaces[k]] = raw[k][i];
        responses[i]["deviation"] = std::move(d);
        responses[i]["weight"] = w[i];
    }
}

// `deviant deviation`: annotate every line of `input`, write to `output` (atomically).
inline void deviation_file(const std::filesystem::path& input, const std::filesystem::path& output,
                           const deviation::DeviationOptions& opts) {
    AtomicTextFile out(output);
    for_each_json_line(input, [&](JsonLine& line) {
        annotate_deviation(line.value, opts);
        out.write_line(line.value);
    });
    out.commit();
}

enum class PairMethod { gap, divpo };

struct PairsOptions {
    PairMethod method = PairMethod::gap;
    double gap = 5.0;                // gap: minimum score difference, when such a pair exists
    std::size_t max_responses = 0;   // gap: responses used per prompt (0 = all)
    bool sort_by_score = false;      // gap: with max_responses, keep the highest-scored first
    double rho = 25.0;               // divpo: percentage of responses in each of the high/low sets
    std::size_t n_max = 4;           // divpo: at most n_max/2 pairs per prompt
    std::uint64_t seed = 0;          // each prompt draws from derive_seed(seed, its record index)
    bool weights = true;             // false: every pair weighs 1 (no embeddings needed for gap)
    std::size_t max_prompts = 0;     // only the first N prompts of the file (0 = all): a smaller run
    deviation::DeviationOptions deviation;
};

// The pairs of one line (record `index` of its file) as output JSON objects.
inline std::vector<json> make_pairs(const json& line, const PairsOptions& opts, std::uint64_t index) {
    const deviation::PromptResponses r = parse_prompt_responses(line, true);
    std::vector<double> scores;
    for (const auto& x : r.responses) scores.push_back(x.score);
    const std::uint64_t seed = derive_seed(opts.seed, index);
    const deviation::EmbeddingDeviation policy{opts.deviation};
    std::vector<Pair> pairs;
    if (opts.method == PairMethod::gap) {
        pairs = build_gap_pairs(scores, opts.gap, opts.max_responses, opts.sort_by_score, seed);
    } else {
        pairs = divpo_select(
            scores, [&](const std::vector<std::size_t>& members) { return policy.scores(r.subset(members)); }, opts.rho, opts.n_max,
            seed);
    }
    const std::vector<double> w =
        opts.weights ? chosen_weights(r, pairs, policy) : chosen_weights(r, pairs, deviation::UniformWeight{});
    const json& responses = line.at("responses");
    std::vector<json> out;
    for (std::size_t p = 0; p < pairs.size(); ++p) {
        const json& c = responses[pairs[p].chosen];
        const json& j = responses[pairs[p].rejected];
        out.push_back(json{{"prompt", line.at("prompt")},
                           {"chosen", c.at("text")},
                           {"rejected", j.at("text")},
                           {"weight", w[p]},
                           {"chosen_score", c.at("score")},
                           {"rejected_score", j.at("score")}});
    }
    return out;
}

// `deviant pairs`: pairs of every line of `input`, written to `output` (atomically).
// Returns the number of pairs written.
inline std::size_t pairs_file(const std::filesystem::path& input, const std::filesystem::path& output, const PairsOptions& opts) {
    AtomicTextFile out(output);
    std::uint64_t index = 0;
    std::size_t count = 0;
    for_each_json_line(input, [&](JsonLine& line) {
        if (opts.max_prompts > 0 && index >= opts.max_prompts) return;
        for (const json& p : make_pairs(line.value, opts, index)) {
            out.write_line(p);
            ++count;
        }
        ++index;
    });
    out.commit();
    return count;
}

}  // namespace deviant::data
