// deviant/data/pairs.hpp — preference pairs from the scored responses of one prompt.
// Why: the paper's data step (docs/method.md, "Building pairs") turns N scored responses into
// disjoint (chosen, rejected) pairs; DivPO (docs/method.md, "DivPO") selects the most deviating
// high-scored responses against the least deviating low-scored ones. Pairs hold response
// indices; chosen_weights attaches the chosen response's weight computed over the responses
// that entered pairs. Randomness: std::mt19937_64 with our own uniform-index mapping, so a
// seed gives the same pairs with every standard library.
#pragma once
#include <algorithm>
#include <compare>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "deviant/deviation/deviation.hpp"

namespace deviant::data {

// Indices into the responses of one prompt; scores[chosen] >= scores[rejected].
struct Pair {
    std::size_t chosen = 0, rejected = 0;
    auto operator<=>(const Pair&) const = default;
};

// Uniform integer in [0, n) from a 64-bit engine, by rejection (exactly uniform, portable).
inline std::size_t uniform_index(std::mt19937_64& rng, std::size_t n) {
    DEVIANT_REQUIRE(n >= 1, "uniform_index: empty range");
    const std::uint64_t range = n;
    const std::uint64_t threshold = (0 - range) % range;  // 2^64 mod n: values below it are rejected
    std::uint64_t x;
    do x = rng();
    while (x < threshold);
    return std::size_t(x % range);
}

// Fisher-Yates shuffle with uniform_index.
template <class T>
void shuffle(std::vector<T>& v, std::mt19937_64& rng) {
    for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[uniform_index(rng, i)]);
}

// Mixes a base seed with a stream index (splitmix64), e.g. one independent stream per prompt.
inline std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream) {
    std::uint64_t z = seed + 0x9E3779B97F4A7C15ull * (stream + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// The responses a prompt contributes: all (max_responses = 0) or the first max_responses, in
// input order or, with sort_by_score, highest score first (ties keep input order).
inline std::vector<std::size_t> capped_responses(const std::vector<double>& scores, std::size_t max_responses, bool sort_by_score) {
    std::vector<std::size_t> idx(scores.size());
    std::iota(idx.begin(), idx.end(), std::size_t{0});
    if (sort_by_score)
        std::stable_sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) { return scores[a] > scores[b]; });
    if (max_responses > 0 && idx.size() > max_responses) idx.resize(max_responses);
    return idx;
}

// The paper's pairing: among the capped responses, repeatedly draw a uniformly random pair of
// unused responses whose score difference is >= gap, falling back to any pair with different
// scores; chosen = higher score; stop when no pair with different scores is left.
inline std::vector<Pair> build_gap_pairs(const std::vector<double>& scores, double gap = 5.0, std::size_t max_responses = 0,
                                         bool sort_by_score = false, std::uint64_t seed = 0) {
    DEVIANT_REQUIRE(std::isfinite(gap) && gap >= 0.0, "build_gap_pairs: gap must be finite and >= 0, got {}", gap);
    for (std::size_t i = 0; i < scores.size(); ++i)
        DEVIANT_REQUIRE(std::isfinite(scores[i]), "build_gap_pairs: score of response {} is not finite", i);
    std::vector<std::size_t> unused = capped_responses(scores, max_responses, sort_by_score);
    std::mt19937_64 rng(seed);
    std::vector<Pair> pairs;
    std::vector<std::pair<std::size_t, std::size_t>> wide, any;  // candidate pairs: positions a < b into `unused`
    while (unused.size() >= 2) {
        wide.clear();
        any.clear();
        for (std::size_t a = 0; a < unused.size(); ++a)
            for (std::size_t b = a + 1; b < unused.size(); ++b) {
                const double diff = std::abs(scores[unused[a]] - scores[unused[b]]);
                if (diff == 0.0) continue;
                any.push_back({a, b});
                if (diff >= gap) wide.push_back({a, b});
            }
        const auto& pool = wide.empty() ? any : wide;
        if (pool.empty()) break;
        const auto pick = pool[uniform_index(rng, pool.size())];
        std::size_t i = unused[pick.first], j = unused[pick.second];
        if (scores[i] < scores[j]) std::swap(i, j);
        pairs.push_back({i, j});
        unused.erase(unused.begin() + std::ptrdiff_t(pick.second));  // second > first: erase it first
        unused.erase(unused.begin() + std::ptrdiff_t(pick.first));
    }
    return pairs;
}

// DivPO set sizes for n responses: k = floor(min(n/2, max(n_max/2, n rho / 100))),
// m = min(floor(n_max/2), k). High/low sets hold k responses each; 2m responses are selected.
struct DivpoCounts {
    std::size_t k = 0, m = 0;
};
inline DivpoCounts divpo_counts(std::size_t n, double rho = 25.0, std::size_t n_max = 4) {
    DEVIANT_REQUIRE(std::isfinite(rho) && rho > 0.0 && rho <= 100.0, "divpo: rho must be in (0, 100], got {}", rho);
    DEVIANT_REQUIRE(n_max >= 2, "divpo: n_max must be >= 2, got {}", n_max);
    const double nd = double(n);
    const double k = std::floor(std::min(nd / 2.0, std::max(double(n_max) / 2.0, nd * rho / 100.0)));
    DivpoCounts c;
    c.k = std::size_t(k);
    c.m = std::min(n_max / 2, c.k);
    return c;
}

// DivPO selection: high set = top k by score, low set = bottom k (disjoint; score ties keep
// input order). `deviations(members)` returns one deviation per member, computed within that
// set (larger = more deviating). Chosen = the m most deviating of the high set, rejected = the
// m least deviating of the low set, paired at random. scores[chosen] >= scores[rejected].
template <class DeviationFn>
    requires std::invocable<DeviationFn&, const std::vector<std::size_t>&>
std::vector<Pair> divpo_select(const std::vector<double>& scores, DeviationFn&& deviations, double rho = 25.0, std::size_t n_max = 4,
                               std::uint64_t seed = 0) {
    for (std::size_t i = 0; i < scores.size(); ++i)
        DEVIANT_REQUIRE(std::isfinite(scores[i]), "divpo: score of response {} is not finite", i);
    const DivpoCounts c = divpo_counts(scores.size(), rho, n_max);
    if (c.m == 0) return {};
    std::vector<std::size_t> by_score = capped_responses(scores, 0, true);
    std::vector<std::size_t> high(by_score.begin(), by_score.begin() + std::ptrdiff_t(c.k));
    std::vector<std::size_t> low(by_score.end() - std::ptrdiff_t(c.k), by_score.end());

    // The members of `set` ordered by deviation, most deviating first (ties keep set order).
    auto by_deviation = [&](const std::vector<std::size_t>& set) {
        std::vector<double> d = deviations(set);
        DEVIANT_REQUIRE(d.size() == set.size(), "divpo: the deviation function returned {} values for {} responses", d.size(),
                        set.size());
        std::vector<std::size_t> order(set.size());
        std::iota(order.begin(), order.end(), std::size_t{0});
        std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return d[a] > d[b]; });
        std::vector<std::size_t> out;
        for (std::size_t o : order) out.push_back(set[o]);
        return out;
    };
    std::vector<std::size_t> chosen = by_deviation(high);
    chosen.resize(c.m);
    std::vector<std::size_t> low_sorted = by_deviation(low);
    std::vector<std::size_t> rejected(low_sorted.end() - std::ptrdiff_t(c.m), low_sorted.end());
    std::mt19937_64 rng(seed);
    shuffle(rejected, rng);
    std::vector<Pair> pairs;
    for (std::size_t i = 0; i < c.m; ++i) pairs.push_back({chosen[i], rejected[i]});
    return pairs;
}

// The responses that entered `pairs`, in first-appearance order (chosen before rejected).
inline std::vector<std::size_t> paired_responses(const std::vector<Pair>& pairs) {
    std::vector<std::size_t> out;
    auto add = [&](std::size_t i) {
        if (std::find(out.begin(), out.end(), i) == out.end()) out.push_back(i);
    };
    for (const Pair& p : pairs) {
        add(p.chosen);
        add(p.rejected);
    }
    return out;
}

// One weight per pair: the chosen response's weight, with `policy` applied to the responses
// that entered the pairs (not to every response of the prompt).
template <deviation::WeightingPolicy Policy>
std::vector<double> chosen_weights(const deviation::PromptResponses& r, const std::vector<Pair>& pairs, const Policy& policy) {
    if (pairs.empty()) return {};
    const std::vector<std::size_t> members = paired_responses(pairs);
    const std::vector<double> w = policy.weights(r.subset(members));
    DEVIANT_REQUIRE(w.size() == members.size(), "chosen_weights: the policy returned {} weights for {} responses", w.size(),
                    members.size());
    std::vector<double> out;
    out.reserve(pairs.size());
    for (const Pair& p : pairs) out.push_back(w[std::size_t(std::find(members.begin(), members.end(), p.chosen) - members.begin())]);
    return out;
}

}  // namespace deviant::data
