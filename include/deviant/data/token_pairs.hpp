// deviant/data/token_pairs.hpp — preference pairs as token ids, the input of `deviant score`
// and of trainers that bring their own tokenisation. One JSON object per line:
//   {"prompt_ids":[...],"chosen_ids":[...],"rejected_ids":[...],"weight":w}   (weight optional, 1)
// Every problem (malformed JSON, missing or mistyped field, empty completion, id outside the
// vocabulary, negative weight) is an error naming the file, line and field.
#pragma once
#include <filesystem>
#include <span>
#include <vector>

#include "deviant/core/content_hash.hpp"
#include "deviant/data/jsonl.hpp"

namespace deviant::data {

struct TokenPair {
    std::vector<std::int64_t> prompt, chosen, rejected;
    double weight = 1.0;
};

// Feeds the pairs' count, then each pair's prompt/chosen/rejected ids with their lengths (and,
// with_weights, its weight) into `h`: the content key of a data set (reference-log-prob cache,
// resume fingerprint).
inline void hash_token_pairs(ContentHash& h, std::span<const TokenPair> pairs, bool with_weights) {
    h.add(std::uint64_t(pairs.size()));
    for (const auto& p : pairs) {
        for (const auto* ids : {&p.prompt, &p.chosen, &p.rejected}) {
            h.add(std::uint64_t(ids->size()));
            h.update(ids->data(), ids->size() * sizeof(std::int64_t));
        }
        if (with_weights) h.add(p.weight);
    }
}

namespace detail {
inline std::vector<std::int64_t> id_list(const json& obj, const char* field, std::int64_t vocab_size, bool allow_empty) {
    auto it = obj.find(field);
    DEVIANT_REQUIRE(it != obj.end(), "missing field '{}'", field);
    DEVIANT_REQUIRE(it->is_array(), "field '{}' must be an array of token ids, got {}", field, it->type_name());
    std::vector<std::int64_t> ids;
    ids.reserve(it->size());
    for (std::size_t i = 0; i < it->size(); ++i) {
        const json& v = (*it)[i];
        DEVIANT_REQUIRE(v.is_number_integer(), "field '{}'[{}] must be an integer token id, got {}", field, i, v.dump());
        std::int64_t id = v.get<std::int64_t>();
        DEVIANT_REQUIRE(id >= 0 && (vocab_size <= 0 || id < vocab_size), "field '{}'[{}]: token id {} is outside the vocabulary [0, {})",
                        field, i, id, vocab_size);
        ids.push_back(id);
    }
    DEVIANT_REQUIRE(allow_empty || !ids.empty(), "field '{}' is empty: a completion needs at least one token", field);
    return ids;
}
}  // namespace detail

inline TokenPair parse_token_pair(const json& obj, std::int64_t vocab_size) {
    DEVIANT_REQUIRE(obj.is_object(), "expected a JSON object, got {}", obj.type_name());
    TokenPair p;
    p.prompt = detail::id_list(obj, "prompt_ids", vocab_size, /*allow_empty=*/false);
    p.chosen = detail::id_list(obj, "chosen_ids", vocab_size, false);
    p.rejected = detail::id_list(obj, "rejected_ids", vocab_size, false);
    if (auto it = obj.find("weight"); it != obj.end()) {
        DEVIANT_REQUIRE(it->is_number(), "field 'weight' must be a number, got {}", it->dump());
        p.weight = it->get<double>();
        DEVIANT_REQUIRE(std::isfinite(p.weight) && p.weight >= 0, "field 'weight' must be finite and non-negative, got {}", p.weight);
    }
    return p;
}

// Reads every pair of a JSON Lines file; vocab_size > 0 checks ids against the model.
inline std::vector<TokenPair> read_token_pairs(const std::filesystem::path& path, std::int64_t vocab_size = 0) {
    std::vector<TokenPair> pairs;
    for_each_json_line(path, [&](JsonLine& line) { pairs.push_back(parse_token_pair(line.value, vocab_size)); });
    DEVIANT_REQUIRE(!pairs.empty(), "{}: no pairs in the file", path.string());
    return pairs;
}

}  // namespace deviant::data
