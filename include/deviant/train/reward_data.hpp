// deviant/train/reward_data.hpp — what the reward model reads: scored responses for regression,
// preference pairs for Bradley-Terry, and files to score, tokenised as the policy sees them
// (data/text_pairs.hpp: the prompt through the chat template, the completion ending in EOS; the
// reward is read at that EOS).
//
//   read_scored_prompts(path)  lines {"prompt", "responses": [{"text", "score"}, ...]} (the
//                              prepare split) or {"prompt", "response", "score"}; every score a
//                              finite number, every text non-empty; errors name FILE:LINE
//   reward_sequences(...)      RewardData with targets = transform(score), one group per prompt
//   reward_pair_data(...)      RewardData of text pairs {"prompt", "chosen", "rejected"}
#pragma once
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "deviant/data/jsonl.hpp"
#include "deviant/data/text_pairs.hpp"
#include "deviant/train/reward_trainer.hpp"

namespace deviant {

using data::json;
using data::TextPair;
using data::TokenizeOptions;

struct ScoredPrompt {
    std::string prompt, origin;  // origin: FILE:LINE
    std::vector<std::string> texts;
    std::vector<double> scores;
};

inline std::vector<ScoredPrompt> read_scored_prompts(const std::filesystem::path& path) {
    std::vector<ScoredPrompt> out;
    data::for_each_json_line(path, [&](data::JsonLine& line) {  // errors get FILE:LINE
        const json& j = line.value;
        DEVIANT_REQUIRE(j.is_object(), "expected a JSON object, got {}", j.type_name());
        ScoredPrompt p;
        p.origin = fmt::format("{}:{}", path.string(), line.number);
        auto prompt = j.find("prompt");
        DEVIANT_REQUIRE(prompt != j.end() && prompt->is_string(), "field 'prompt' missing or not a string");
        p.prompt = prompt->get<std::string>();
        auto add = [&](const json& text, const json* score, const std::string& what) {
            DEVIANT_REQUIRE(text.is_string() && !text.get<std::string>().empty(), "{}: text missing, empty or not a string", what);
            DEVIANT_REQUIRE(score && score->is_number(), "{}: field 'score' missing or not a number", what);
            const double s = score->get<double>();
            DEVIANT_REQUIRE(std::isfinite(s), "{}: score {} is not finite", what, s);
            p.texts.push_back(text.get<std::string>());
            p.scores.push_back(s);
        };
        if (auto rs = j.find("responses"); rs != j.end()) {
            DEVIANT_REQUIRE(rs->is_array(), "field 'responses' is not an array");
            for (std::size_t i = 0; i < rs->size(); ++i) {
                const json& r = (*rs)[i];
                DEVIANT_REQUIRE(r.is_object(), "response {}: expected an object, got {}", i, r.type_name());
                auto text = r.find("text");
                auto score = r.find("score");
                DEVIANT_REQUIRE(text != r.end(), "response {}: field 'text' missing", i);
                add(*text, score == r.end() ? nullptr : &*score, fmt::format("response {}", i));
            }
        } else {
            auto text = j.find("response");
            auto score = j.find("score");
            DEVIANT_REQUIRE(text != j.end(), "needs 'responses' (a list of {{text, score}}) or 'response' and 'score'");
            add(*text, score == j.end() ? nullptr : &*score, "field 'response'");
        }
        if (!p.texts.empty()) out.push_back(std::move(p));
    });
    DEVIANT_REQUIRE(!out.empty(), "{}: no scored responses in the file", path.string());
    return out;
}

inline std::vector<double> all_scores(const std::vector<ScoredPrompt>& prompts) {
    std::vector<double> s;
    for (const auto& p : prompts) s.insert(s.end(), p.scores.begin(), p.scores.end());
    return s;
}

// Prompt + completion token ids, at most max_length (the prompt keeps its end, the completion its
// start, so that the EOS the reward is read at is kept unless the completion alone is too long).
inline std::vector<std::int64_t> reward_sequence_ids(const BpeTokenizer& tok, const std::string& prompt, const std::string& completion,
                                                     const TokenizeOptions& opts, std::int64_t max_length, const std::string& what) {
    std::vector<std::int64_t> p = data::tokenize_prompt(tok, prompt, opts), c = data::tokenize_completion(tok, completion, opts);
    DEVIANT_REQUIRE(!c.empty(), "{}: the completion has no tokens", what);
    if (max_length > 0 && std::int64_t(p.size() + c.size()) > max_length) {
        const std::int64_t keep_prompt = std::max<std::int64_t>(0, max_length - std::int64_t(c.size()));
        p.erase(p.begin(), p.end() - std::min<std::ptrdiff_t>(std::ptrdiff_t(p.size()), keep_prompt));
        if (std::int64_t(c.size()) > max_length) c.resize(std::size_t(max_length));
    }
    p.insert(p.end(), c.begin(), c.end());
    return p;
}

inline RewardData reward_sequences(const BpeTokenizer& tok, const std::vector<ScoredPrompt>& prompts, const ScoreTransform& transform,
                                   const TokenizeOptions& opts, std::int64_t max_length) {
    RewardData d;
    for (std::size_t g = 0; g < prompts.size(); ++g)
        for (std::size_t i = 0; i < prompts[g].texts.size(); ++i)
            d.sequences.push_back({reward_sequence_ids(tok, prompts[g].prompt, prompts[g].texts[i], opts, max_length,
                                                       fmt::format("{}: response {}", prompts[g].origin, i)),
                                   transform(prompts[g].scores[i]), std::int64_t(g)});
    return d;
}

inline RewardData reward_pair_data(const BpeTokenizer& tok, const std::vector<TextPair>& pairs, const TokenizeOptions& opts,
                                   std::int64_t max_length) {
    RewardData d;
    for (std::size_t i = 0; i < pairs.size(); ++i) {
        const std::string what = pairs[i].origin.empty() ? fmt::format("pair {}", i) : pairs[i].origin;
        d.sequences.push_back({reward_sequence_ids(tok, pairs[i].prompt, pairs[i].chosen, opts, max_length, what + " chosen"), 1.0,
                               std::int64_t(i)});
        d.sequences.push_back({reward_sequence_ids(tok, pairs[i].prompt, pairs[i].rejected, opts, max_length, what + " rejected"), 0.0,
                               std::int64_t(i)});
        d.pairs.emplace_back(2 * i, 2 * i + 1);
    }
    return d;
}

}  // namespace deviant
