// deviant/deviation/deviation.hpp — deviation weights for the responses of one prompt (CPU only).
// Why: DDPO/DORPO weight each pair by how far its chosen response lies from the other responses
// written for the same prompt, so that rare-but-good responses teach more (docs/method.md,
// "Deviation weights"). Steps, per prompt with N responses and K embedding spaces:
//   raw_deviation:       d_k(i) = mean_{j != i} (1 - cos(e_k(i), e_k(j)))   (vectors L2-normalised)
//   rescale_min_max:     min-max to [-1, 1]; all equal -> 0
//   combine_spaces:      s(i) = 2 prod_k ((d~_k(i) + 1) / 2)^(1/K) - 1     (geometric mean on [0, 1])
//   normalise_weights:   w(i) = N (s(i) + 1) / sum_j (s(j) + 1); all s equal -> 1; then max(w, floor)
// A weighting policy (EmbeddingDeviation, UniformWeight) maps the responses of a prompt to one
// weight per response; objectives and data preparation are templated on such a policy.
#pragma once
#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "deviant/core/error.hpp"

namespace deviant::deviation {

using Embedding = std::vector<double>;

// One response of a prompt: its text, its quality score and one embedding per named space.
struct Response {
    std::string text;
    double score = 0.0;
    std::map<std::string, Embedding> embedding;  // space name ("sem", "sty", ...) -> vector
};

// The responses written for one prompt.
struct PromptResponses {
    std::string prompt;
    std::vector<Response> responses;

    std::size_t size() const { return responses.size(); }
    // The responses at `indices`, in that order (the prompt is kept).
    PromptResponses subset(const std::vector<std::size_t>& indices) const {
        PromptResponses out{prompt, {}};
        out.responses.reserve(indices.size());
        for (std::size_t i : indices) {
            DEVIANT_REQUIRE(i < responses.size(), "PromptResponses::subset: index {} out of range for {} responses", i,
                            responses.size());
            out.responses.push_back(responses[i]);
        }
        return out;
    }
};

// d(i) = mean over j != i of (1 - cos(e(i), e(j))) for the N embeddings of one space.
// N = 1 gives 0. Errors: no embeddings, vectors of different lengths, a zero (or empty) vector,
// a non-finite value; each names the response index.
inline std::vector<double> raw_deviation(const std::vector<Embedding>& embeddings) {
    const std::size_t n = embeddings.size();
    DEVIANT_REQUIRE(n >= 1, "raw_deviation: needs at least 1 response, got 0");
    const std::size_t dim = embeddings[0].size();
    std::vector<Embedding> unit(n);
    for (std::size_t i = 0; i < n; ++i) {
        const Embedding& e = embeddings[i];
        DEVIANT_REQUIRE(e.size() == dim, "raw_deviation: response {} has an embedding of length {}, response 0 has length {}", i,
                        e.size(), dim);
        double sq = 0.0;
        for (std::size_t t = 0; t < dim; ++t) {
            DEVIANT_REQUIRE(std::isfinite(e[t]), "raw_deviation: response {} has a non-finite embedding value at position {}", i, t);
            sq += e[t] * e[t];
        }
        const double norm = std::sqrt(sq);
        DEVIANT_REQUIRE(norm > 0.0, "raw_deviation: response {} has a zero embedding vector (length {}), which cannot be normalised",
                        i, dim);
        unit[i].resize(dim);
        for (std::size_t t = 0; t < dim; ++t) unit[i][t] = e[t] / norm;
    }
    std::vector<double> d(n, 0.0);
    if (n == 1) return d;
    for (std::size_t i = 0; i < n; ++i) {
        double sum = 0.0;
        for (std::size_t j = 0; j < n; ++j) {
            if (j == i) continue;
            double cos = 0.0;
            for (std::size_t t = 0; t < dim; ++t) cos += unit[i][t] * unit[j][t];
            sum += 1.0 - cos;
        }
        d[i] = sum / double(n - 1);
    }
    return d;
}

// Min-max rescale to [-1, 1]: 2 (d - min) / (max - min) - 1; all equal (exactly) -> all 0.
inline std::vector<double> rescale_min_max(const std::vector<double>& d) {
    DEVIANT_REQUIRE(!d.empty(), "rescale_min_max: empty input");
    const auto [lo_it, hi_it] = std::minmax_element(d.begin(), d.end());
    const double lo = *lo_it, hi = *hi_it;
    std::vector<double> out(d.size(), 0.0);
    if (hi == lo) return out;
    for (std::size_t i = 0; i < d.size(); ++i) out[i] = 2.0 * (d[i] - lo) / (hi - lo) - 1.0;
    return out;
}

// Geometric mean over K spaces on the [0, 1] scale: rescaled[k][i] in [-1, 1] ->
// s(i) = 2 prod_k ((rescaled[k][i] + 1) / 2)^(1/K) - 1, in [-1, 1]. Needs K >= 1, equal lengths.
inline std::vector<double> combine_spaces(const std::vector<std::vector<double>>& rescaled) {
    const std::size_t k = rescaled.size();
    DEVIANT_REQUIRE(k >= 1, "combine_spaces: needs at least 1 embedding space, got 0");
    const std::size_t n = rescaled[0].size();
    for (std::size_t s = 1; s < k; ++s)
        DEVIANT_REQUIRE(rescaled[s].size() == n, "combine_spaces: space {} has {} responses, space 0 has {}", s, rescaled[s].size(), n);
    std::vector<double> out(n);
    for (std::size_t i = 0; i < n; ++i) {
        double g = 1.0;
        for (std::size_t s = 0; s < k; ++s) g *= std::pow((rescaled[s][i] + 1.0) / 2.0, 1.0 / double(k));
        out[i] = 2.0 * g - 1.0;
    }
    return out;
}

// w(i) = N (s(i) + 1) / sum_j (s(j) + 1), non-negative and summing to N; all s equal (exactly)
// -> all 1. Then the optional floor: w(i) = max(w(i), floor) (floor 0 = none; paper ablation 0.2).
inline std::vector<double> normalise_weights(const std::vector<double>& s, double floor = 0.0) {
    DEVIANT_REQUIRE(!s.empty(), "normalise_weights: empty input");
    DEVIANT_REQUIRE(std::isfinite(floor) && floor >= 0.0 && floor <= 1.0,
                    "deviation weight floor must be in [0, 1] (weights average 1; a higher floor would lift every weight), got {}", floor);
    const std::size_t n = s.size();
    const auto [lo_it, hi_it] = std::minmax_element(s.begin(), s.end());
    std::vector<double> w(n, 1.0);
    if (*lo_it != *hi_it) {
        double total = 0.0;
        for (double v : s) total += v + 1.0;
        for (std::size_t i = 0; i < n; ++i) w[i] = double(n) * (s[i] + 1.0) / total;
    }
    for (double& v : w) v = std::max(v, floor);
    return w;
}

// Combined deviation score s(i) in [-1, 1] from the raw deviations of K spaces (raw[k][i]).
inline std::vector<double> deviation_scores(const std::vector<std::vector<double>>& raw) {
    std::vector<std::vector<double>> rescaled;
    rescaled.reserve(raw.size());
    for (const auto& d : raw) rescaled.push_back(rescale_min_max(d));
    return combine_spaces(rescaled);
}

// The whole pipeline: weights w(i) from the raw deviations of K spaces (raw[k][i]).
inline std::vector<double> deviation_weights(const std::vector<std::vector<double>>& raw, double floor = 0.0) {
    return normalise_weights(deviation_scores(raw), floor);
}

struct DeviationOptions {
    std::vector<std::string> spaces;  // spaces to combine; empty = every space present in all responses
    double floor = 0.0;               // minimum weight w_min (0 = none)
};

// The spaces that `opts` selects for `r`: opts.spaces, or (when empty) every space that all
// responses have, in name order. Errors when the result is empty or a listed space is missing.
inline std::vector<std::string> resolve_spaces(const PromptResponses& r, const DeviationOptions& opts) {
    DEVIANT_REQUIRE(r.size() >= 1, "deviation: a prompt needs at least 1 response, got 0");
    std::vector<std::string> spaces = opts.spaces;
    if (spaces.empty()) {
        for (const auto& entry : r.responses[0].embedding) {
            const std::string& name = entry.first;
            bool everywhere = std::all_of(r.responses.begin(), r.responses.end(),
                                          [&](const Response& x) { return x.embedding.count(name) > 0; });
            if (everywhere) spaces.push_back(name);
        }
        DEVIANT_REQUIRE(!spaces.empty(), "deviation: no embedding space is present in all {} responses", r.size());
    }
    for (const auto& name : spaces)
        for (std::size_t i = 0; i < r.size(); ++i)
            DEVIANT_REQUIRE(r.responses[i].embedding.count(name) > 0, "deviation: response {} has no embedding for space '{}'", i,
                            name);
    return spaces;
}

// Raw deviations per selected space (in the order of `spaces`); errors name the space.
inline std::vector<std::vector<double>> raw_deviations(const PromptResponses& r, const std::vector<std::string>& spaces) {
    std::vector<std::vector<double>> raw;
    raw.reserve(spaces.size());
    for (const auto& name : spaces) {
        std::vector<Embedding> e;
        e.reserve(r.size());
        for (std::size_t i = 0; i < r.size(); ++i) {
            auto it = r.responses[i].embedding.find(name);
            DEVIANT_REQUIRE(it != r.responses[i].embedding.end(), "deviation: response {} has no embedding for space '{}'", i, name);
            e.push_back(it->second);
        }
        try {
            raw.push_back(raw_deviation(e));
        } catch (const Error& err) {
            fail("space '{}': {}", name, err.what());
        }
    }
    return raw;
}

// ---- weighting policies --------------------------------------------------------------------
// A WeightingPolicy maps the responses of one prompt to one weight per response (same order).
// Objectives weight a pair by the weight of its chosen response; UniformWeight gives plain
// DPO/ORPO, EmbeddingDeviation gives DDPO/DORPO.
template <class P>
concept WeightingPolicy = requires(const P& p, const PromptResponses& r) {
    { p.weights(r) } -> std::convertible_to<std::vector<double>>;
};

// Every response weighs 1.
struct UniformWeight {
    std::vector<double> weights(const PromptResponses& r) const { return std::vector<double>(r.size(), 1.0); }
};

// The paper's deviation weights over the embedding spaces in `opts`.
struct EmbeddingDeviation {
    DeviationOptions opts;

    std::vector<double> weights(const PromptResponses& r) const { return normalise_weights(scores(r), opts.floor); }
    // Combined deviation s(i) in [-1, 1] (before normalisation): ranks responses by deviation.
    std::vector<double> scores(const PromptResponses& r) const { return deviation_scores(raw_deviations(r, resolve_spaces(r, opts))); }
};

static_assert(WeightingPolicy<UniformWeight> && WeightingPolicy<EmbeddingDeviation>);

}  // namespace deviant::deviation
