// deviant/generate/sampler.hpp — sampling completions from a causal language model, with the
// logits processors of Hugging Face transformers applied in transformers' order:
//   1. repetition penalty (RepetitionPenaltyLogitsProcessor): for every token id seen in the
//      row so far (prompt + generated), a positive logit is divided by the penalty and a
//      negative one multiplied by it;
//   2. temperature (TemperatureLogitsWarper): logits / temperature;
//   3. top-k (TopKLogitsWarper): logits below the k-th largest become -inf (ties are kept);
//   4. top-p (TopPLogitsWarper): sort ascending, remove tokens whose cumulative probability is
//      <= 1 - top_p, always keeping the most likely token; i.e. the smallest set whose mass
//      reaches top_p.
// temperature 0 means greedy decoding: only the repetition penalty, then the first arg-max (as
// transformers' generate(do_sample=False)). A processor whose setting is neutral (penalty 1,
// temperature 1, top_k 0, top_p 1) is skipped, as in transformers.
//
// Why our own random mapping: std::uniform_real_distribution differs between standard
// libraries; uniform_double() maps the top 53 bits of std::mt19937_64 to [0, 1), so a seed gives
// the same samples everywhere. Each row (prompt i, sample j) has its own generator seeded from
// (seed, i, j): the samples do not depend on the batch size or on the other prompts.
//
// generate() batches rows left-aligned (B, T): row tokens get segment id 0 and the right padding
// segment id 1, so padding is never attended to and every row keeps its own positions 0..len-1.
// On the CPU (use_cache) decoding is incremental: one prefill of the right-padded prompts fills a
// KV cache (ops/cached_attention.hpp), then each step runs one new token per row and applies the
// LM head to that position only; finished rows leave the cache. Elsewhere (CUDA) each step
// recomputes the full forward pass. Either way each row's logits (V) at its last token go to the
// host, where the processors and the draw run in float64.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <vector>

#include "deviant/autodiff/tape.hpp"
#include "deviant/models/causal_lm.hpp"
#include "deviant/train/progress.hpp"

namespace deviant {

struct SamplingOptions {
    double temperature = 1.0;              // 0: greedy
    double top_p = 0.95;                   // 1: off
    std::int64_t top_k = 50;               // 0: off
    double repetition_penalty = 1.1;       // 1: off
    std::int64_t max_new_tokens = 128;
    std::uint64_t seed = 0;
    std::vector<std::int64_t> stop_ids;    // a row ends after producing one of these (kept in its output)
    // Also ends a row when it returns true for the row's generated ids so far (stop strings: the
    // caller decodes and searches; generate/stop_strings below). Empty: not used.
    std::function<bool(const std::vector<std::int64_t>& generated)> stop_when;
    std::int64_t batch_size = 16;          // rows per forward pass (0: all rows at once)
    bool show_progress = true;             // progress bar on stderr
    bool use_cache = true;                 // incremental decoding with a KV cache (CPU models); false: full forward per token
};

inline void validate_sampling(const SamplingOptions& o) {
    DEVIANT_REQUIRE(std::isfinite(o.temperature) && o.temperature >= 0, "temperature must be >= 0, got {}", o.temperature);
    DEVIANT_REQUIRE(o.top_p > 0 && o.top_p <= 1, "top_p must be in (0, 1], got {}", o.top_p);
    DEVIANT_REQUIRE(o.top_k >= 0, "top_k must be >= 0 (0 = off), got {}", o.top_k);
    DEVIANT_REQUIRE(std::isfinite(o.repetition_penalty) && o.repetition_penalty > 0, "repetition_penalty must be > 0, got {}",
                    o.repetition_penalty);
    DEVIANT_REQUIRE(o.max_new_tokens >= 0, "max_new_tokens must be >= 0, got {}", o.max_new_tokens);
    DEVIANT_REQUIRE(o.batch_size >= 0, "batch_size must be >= 0 (0 = all rows), got {}", o.batch_size);
}

// --- logits processors, in place on one row of logits (V) ---

// RepetitionPenaltyLogitsProcessor: every id in `seen` (duplicates count once).
inline void apply_repetition_penalty(std::span<double> logits, std::span<const std::int64_t> seen, double penalty) {
    if (penalty == 1.0) return;
    std::vector<bool> done(logits.size(), false);
    for (std::int64_t id : seen) {
        DEVIANT_REQUIRE(id >= 0 && std::size_t(id) < logits.size(), "repetition penalty: token id {} outside the vocabulary [0, {})", id,
                        logits.size());
        if (done[std::size_t(id)]) continue;
        done[std::size_t(id)] = true;
        double& l = logits[std::size_t(id)];
        l = l < 0 ? l * penalty : l / penalty;
    }
}

inline void apply_temperature(std::span<double> logits, double temperature) {
    DEVIANT_REQUIRE(temperature > 0, "temperature must be > 0 to scale logits, got {}", temperature);
    if (temperature == 1.0) return;
    for (double& l : logits) l /= temperature;
}

// TopKLogitsWarper: logits strictly below the k-th largest value become -inf.
inline void apply_top_k(std::span<double> logits, std::int64_t top_k) {
    if (top_k <= 0 || std::size_t(top_k) >= logits.size()) return;
    std::vector<double> sorted(logits.begin(), logits.end());
    std::nth_element(sorted.begin(), sorted.begin() + (top_k - 1), sorted.end(), std::greater<>());
    const double kth = sorted[std::size_t(top_k - 1)];
    for (double& l : logits)
        if (l < kth) l = -std::numeric_limits<double>::infinity();
}

// softmax of a row; -inf logits get probability 0 (an all -inf row is an error).
inline std::vector<double> softmax_probs(std::span<const double> logits) {
    double mx = -std::numeric_limits<double>::infinity();
    for (double l : logits) mx = std::max(mx, l);
    DEVIANT_REQUIRE(std::isfinite(mx), "cannot sample: every logit is -inf or the maximum is not finite ({})", mx);
    std::vector<double> p(logits.size());
    double sum = 0;
    for (std::size_t i = 0; i < logits.size(); ++i) sum += (p[i] = std::exp(logits[i] - mx));
    for (double& v : p) v /= sum;
    return p;
}

// TopPLogitsWarper: ascending sort (stable, so ties keep id order), cumulative probabilities,
// tokens with cumulative <= 1 - top_p removed, the last (most likely) always kept. Without a
// full sort: the m most likely tokens are selected (m = 64, doubled until their mass reaches
// top_p); every other token lies below them in the ascending order and its cumulative is at most
// 1 - mass <= 1 - top_p, so it is removed; only the m candidates are sorted.
inline void apply_top_p(std::span<double> logits, double top_p) {
    if (top_p >= 1.0) return;
    const std::vector<double> p = softmax_probs(logits);
    const std::size_t V = logits.size();
    std::vector<std::size_t> order(V);
    std::iota(order.begin(), order.end(), std::size_t(0));
    // descending likelihood; among equal logits the higher id first (the ascending stable order reversed)
    const auto more_likely = [&](std::size_t a, std::size_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a > b); };
    std::size_t m = std::min<std::size_t>(64, V);
    double mass = 0;
    for (;;) {
        std::nth_element(order.begin(), order.begin() + std::ptrdiff_t(m - 1), order.end(), more_likely);
        mass = 0;
        for (std::size_t r = 0; r < m; ++r) mass += p[order[r]];
        if (mass >= top_p * (1 + 1e-12) || m == V) break;
        m = std::min(V, 2 * m);
    }
    std::sort(order.begin(), order.begin() + std::ptrdiff_t(m), more_likely);
    // ascending walk: first the V - m tokens outside the candidates (mass 1 - mass), then the candidates from the least likely
    double cum = 0;
    for (std::size_t r = m; r < V; ++r) cum += p[order[r]];
    std::vector<std::size_t> removed(order.begin() + std::ptrdiff_t(m), order.end());
    for (std::size_t r = m; r-- > 1;) {  // never the most likely (r = 0)
        cum += p[order[r]];
        if (cum <= 1.0 - top_p) removed.push_back(order[r]);
        else break;
    }
    for (std::size_t i : removed) logits[i] = -std::numeric_limits<double>::infinity();
}

// All processors of `o` in transformers' order; `context` = the row's tokens so far.
// With temperature 0 (greedy) only the repetition penalty applies.
inline void process_logits(std::span<double> logits, std::span<const std::int64_t> context, const SamplingOptions& o) {
    apply_repetition_penalty(logits, context, o.repetition_penalty);
    if (o.temperature == 0) return;
    apply_temperature(logits, o.temperature);
    apply_top_k(logits, o.top_k);
    apply_top_p(logits, o.top_p);
}

// --- drawing ---

// [0, 1) from the top 53 bits of one 64-bit draw: the same on every standard library.
inline double uniform_double(std::mt19937_64& rng) { return double(rng() >> 11) * 0x1.0p-53; }

// A token drawn with probability probs[i] / sum(probs) (inverse CDF in id order).
inline std::int64_t sample_token(std::span<const double> probs, std::mt19937_64& rng) {
    double total = 0;
    std::int64_t last_positive = -1;
    for (std::size_t i = 0; i < probs.size(); ++i)
        if (probs[i] > 0) {
            total += probs[i];
            last_positive = std::int64_t(i);
        }
    DEVIANT_REQUIRE(last_positive >= 0 && std::isfinite(total), "cannot sample from a distribution with total mass {}", total);
    const double target = uniform_double(rng) * total;
    double cum = 0;
    for (std::size_t i = 0; i < probs.size(); ++i) {
        if (probs[i] <= 0) continue;
        cum += probs[i];
        if (target < cum) return std::int64_t(i);
    }
    return last_positive;  // rounding: target within the last ulp of the total
}

// First index of the maximum (torch.argmax).
inline std::int64_t argmax_token(std::span<const double> logits) {
    DEVIANT_REQUIRE(!logits.empty(), "argmax of an empty row of logits");
    return std::int64_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

// The next token for a row: processors, then arg-max (temperature 0) or a draw.
inline std::int64_t next_token(std::vector<double> logits, std::span<const std::int64_t> context, const SamplingOptions& o,
                               std::mt19937_64& rng) {
    // NaN logits (non-finite weights, an overflow) would make arg-max pick token 0 and sampling
    // write empty or garbage samples: stop instead
    for (std::size_t v = 0; v < logits.size(); ++v)
        DEVIANT_REQUIRE(!std::isnan(logits[v]) && logits[v] != std::numeric_limits<double>::infinity(),
                        "the model gave a non-finite logit ({}) for token {} after {} context tokens (non-finite weights?); nothing written",
                        logits[v], v, context.size());
    process_logits(logits, context, o);
    if (o.temperature == 0) return argmax_token(logits);
    return sample_token(softmax_probs(logits), rng);
}

// Seed of the generator of row (prompt, sample): splitmix64 over the three values.
inline std::uint64_t row_seed(std::uint64_t seed, std::uint64_t prompt, std::uint64_t sample) {
    auto mix = [](std::uint64_t z) {
        z += 0x9e3779b97f4a7c15ULL;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    };
    return mix(mix(mix(seed) ^ prompt) ^ sample);
}

// Samples n_samples_per_prompt completions of every prompt (token ids, BOS included when the
// model expects one). Returns prompts.size() * n_samples_per_prompt sequences of generated ids
// only, prompt-major (prompt i's samples at [i * n, (i + 1) * n)); a sequence that stopped
// ends with its stop id (as transformers returns its EOS), otherwise it has max_new_tokens ids.
template <class Model>
std::vector<std::vector<std::int64_t>> generate(const Model& model, const std::vector<std::vector<std::int64_t>>& prompts,
                                                SamplingOptions options, std::int64_t n_samples_per_prompt = 1) {
    validate_sampling(options);
    DEVIANT_REQUIRE(n_samples_per_prompt >= 1, "samples per prompt must be >= 1, got {}", n_samples_per_prompt);
    const std::int64_t V = model.config.vocab_size;
    const std::int64_t max_positions = model.config.max_position_embeddings;
    for (std::size_t i = 0; i < prompts.size(); ++i) {
        DEVIANT_REQUIRE(!prompts[i].empty(), "prompt {} has no tokens", i);
        for (std::int64_t id : prompts[i])
            DEVIANT_REQUIRE(id >= 0 && id < V, "prompt {}: token id {} is outside the vocabulary [0, {})", i, id, V);
        DEVIANT_REQUIRE(max_positions <= 0 || std::int64_t(prompts[i].size()) + options.max_new_tokens <= max_positions,
                        "prompt {}: {} prompt tokens + max_new_tokens {} exceed the model's {} positions", i, prompts[i].size(),
                        options.max_new_tokens, max_positions);
    }
    for (std::int64_t id : options.stop_ids) DEVIANT_REQUIRE(id >= 0 && id < V, "stop id {} is outside the vocabulary [0, {})", id, V);

    struct Row {
        std::vector<std::int64_t> tokens;  // prompt + generated
        std::size_t prompt_len = 0;
        std::mt19937_64 rng;
    };
    const std::size_t n = std::size_t(n_samples_per_prompt);
    std::vector<Row> rows(prompts.size() * n);
    for (std::size_t i = 0; i < prompts.size(); ++i)
        for (std::size_t j = 0; j < n; ++j) {
            Row& r = rows[i * n + j];
            r.tokens = prompts[i];
            r.prompt_len = prompts[i].size();
            r.rng.seed(row_seed(options.seed, i, j));
        }

    NoGradGuard no_grad;
    const std::size_t chunk = options.batch_size > 0 ? std::size_t(options.batch_size) : std::max<std::size_t>(rows.size(), 1);
    ProgressBar progress("generate", std::int64_t(rows.size()), options.show_progress && !rows.empty());
    std::int64_t finished = 0, pending_tokens = 0;
    auto is_stop = [&](std::int64_t id) { return std::find(options.stop_ids.begin(), options.stop_ids.end(), id) != options.stop_ids.end(); };

    // Draws row r's next token from its logits (V) and reports whether the row is done.
    auto step_row = [&](std::size_t r, std::vector<double> l) {
        Row& row = rows[r];
        const std::int64_t token = next_token(std::move(l), row.tokens, options, row.rng);
        row.tokens.push_back(token);
        ++pending_tokens;
        bool done = is_stop(token) || std::int64_t(row.tokens.size() - row.prompt_len) >= options.max_new_tokens;
        if (!done && options.stop_when)
            done = options.stop_when(std::vector<std::int64_t>(row.tokens.begin() + std::ptrdiff_t(row.prompt_len), row.tokens.end()));
        if (done) ++finished;
        return done;
    };
    const bool cached = options.use_cache && model.device() == Device::cpu;

    for (std::size_t begin = 0; begin < rows.size(); begin += chunk) {
        std::vector<std::size_t> active;
        for (std::size_t r = begin; r < std::min(rows.size(), begin + chunk); ++r) active.push_back(r);
        if (options.max_new_tokens == 0) {
            finished += std::int64_t(active.size());
            active.clear();
        }
        if (cached && !active.empty()) {
            // Prefill: the prompts right-padded to the longest, each row's logits at its own last token;
            // then one token per row and step, finished rows dropped from the cache.
            std::int64_t Tp = 0;
            for (std::size_t r : active) Tp = std::max(Tp, std::int64_t(rows[r].tokens.size()));
            const std::int64_t B = std::int64_t(active.size());
            KvCache cache = model.make_kv_cache(B, Tp + options.max_new_tokens);
            std::vector<std::int64_t> ids(static_cast<std::size_t>(B * Tp), 0), last(static_cast<std::size_t>(B)), advance(static_cast<std::size_t>(B));
            for (std::int64_t b = 0; b < B; ++b) {
                const auto& tok = rows[active[std::size_t(b)]].tokens;
                std::copy(tok.begin(), tok.end(), ids.begin() + b * Tp);
                last[std::size_t(b)] = std::int64_t(tok.size()) - 1;
                advance[std::size_t(b)] = std::int64_t(tok.size());
            }
            Tensor logits = model.cached_logits(Tensor::from(ids, {B, Tp}), cache, last, advance);  // (B, V)
            while (!active.empty()) {
                DEVIANT_REQUIRE(logits.rank() == 2 && logits.size(1) == V, "model logits {} do not have the vocabulary size {}",
                                logits.shape().str(), V);
                std::vector<std::size_t> still;
                std::vector<std::int64_t> keep;
                for (std::size_t b = 0; b < active.size(); ++b)
                    if (!step_row(active[b], logits.select(0, std::int64_t(b)).template to_vector<double>())) {
                        still.push_back(active[b]);
                        keep.push_back(std::int64_t(b));
                    }
                if (still.size() != active.size()) {
                    progress.update(finished, pending_tokens);
                    pending_tokens = 0;
                    if (!still.empty()) cache.keep_rows(keep);
                }
                active = std::move(still);
                if (active.empty()) break;
                const std::int64_t Bn = std::int64_t(active.size());
                std::vector<std::int64_t> next(static_cast<std::size_t>(Bn));
                for (std::int64_t b = 0; b < Bn; ++b) next[std::size_t(b)] = rows[active[std::size_t(b)]].tokens.back();
                logits = model.cached_logits(Tensor::from(next, {Bn, 1}), cache, std::vector<std::int64_t>(std::size_t(Bn), 0),
                                             std::vector<std::int64_t>(std::size_t(Bn), 1));
            }
        }
        while (!active.empty()) {
            const std::int64_t B = std::int64_t(active.size());
            std::int64_t T = 0;
            for (std::size_t r : active) T = std::max(T, std::int64_t(rows[r].tokens.size()));
            std::vector<std::int64_t> ids(std::size_t(B * T), 0), segs(std::size_t(B * T), 1);
            for (std::int64_t b = 0; b < B; ++b) {
                const auto& tok = rows[active[std::size_t(b)]].tokens;
                std::copy(tok.begin(), tok.end(), ids.begin() + b * T);
                std::fill(segs.begin() + b * T, segs.begin() + b * T + std::int64_t(tok.size()), 0);
            }
            TokenBatch batch{Tensor::from(ids, {B, T}), Tensor::from(segs, {B, T})};
            Tape tape;
            Tensor logits = model.sampling_logits(tape, batch);  // (B, T, V), float32 for bf16 models
            DEVIANT_REQUIRE(logits.rank() == 3 && logits.size(2) == V, "model logits {} do not have the vocabulary size {}", logits.shape().str(), V);
            std::vector<std::size_t> still;
            for (std::int64_t b = 0; b < B; ++b) {
                const std::size_t r = active[std::size_t(b)];
                // the row's logits (V) at its last token: one view, copied to the host
                std::vector<double> l = logits.select(0, b).select(0, std::int64_t(rows[r].tokens.size()) - 1).template to_vector<double>();
                if (!step_row(r, std::move(l))) still.push_back(r);
            }
            if (still.size() != active.size()) {
                progress.update(finished, pending_tokens);
                pending_tokens = 0;
            }
            active = std::move(still);
        }
    }
    if (pending_tokens > 0) progress.update(finished, pending_tokens);
    progress.finish();

    std::vector<std::vector<std::int64_t>> out(rows.size());
    for (std::size_t r = 0; r < rows.size(); ++r)
        out[r].assign(rows[r].tokens.begin() + std::ptrdiff_t(rows[r].prompt_len), rows[r].tokens.end());
    return out;
}

// Stop strings: the position in `text` where the first of `stops` begins (npos: none). A sample
// whose decoded text contains one ends there (the string and what follows are not part of it).
inline std::size_t first_stop_string(const std::string& text, const std::vector<std::string>& stops) {
    std::size_t best = std::string::npos;
    for (const std::string& s : stops)
        if (!s.empty()) best = std::min(best, text.find(s));
    return best;
}

}  // namespace deviant
