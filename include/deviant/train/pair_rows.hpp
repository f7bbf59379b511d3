// deviant/train/pair_rows.hpp — from token pairs to the log-probs an objective needs.
//
// A batch of B pairs holds 2B sequences: sequence i < B is prompt+chosen of pair i, sequence
// B+i is prompt+rejected of pair i. Every sequence goes through the model in ONE forward, laid
// out in rows (R, T) in one of two ways:
//   make_rows         padded: row s holds sequence s, right-padded to the longest (R = 2B);
//   make_packed_rows  packed: sequences placed first-fit into rows of at most row_tokens tokens,
//                     several per row; segment ids keep them from attending to each other and
//                     restart their positions (the model builds both from the segment ids).
// Position t of the model's next-token log-probs (R, T-1) predicts token t+1 of its row. The
// per-token sequence index (R, T-1) names the sequence whose completion token position t
// predicts (-1 for prompt tokens, padding and predictions across a sequence boundary);
// segment_sum over it gives each SEQUENCE's summed log-prob, whatever row it sits in. Padded and
// packed rows therefore give the same log-probs and losses.
#pragma once
#include <algorithm>
#include <span>
#include <vector>

#include "deviant/data/token_pairs.hpp"
#include "deviant/models/causal_lm.hpp"
#include "deviant/objectives/pair_batch.hpp"
#include "deviant/ops/segment.hpp"

namespace deviant {

struct SequenceRows {
    std::int64_t pairs = 0;        // B; sequences = 2B (chosen 0..B-1, rejected B..2B-1), or B when chosen_only
    bool chosen_only = false;      // only the chosen sequences were laid out (objectives that never read rejected: SFT)
    TokenBatch batch;              // ids (R, T), segments (R, T)
    Tensor completion_index;       // (R, T-1) int64: sequence whose completion token is predicted at t, else -1
    Tensor full_index;             // (R, T-1) int64: sequence of every predicted token after its first (prompt + completion)
    Tensor completion_mask;        // (R, T-1): completion_index >= 0, in the float dtype
    Tensor full_mask;              // (R, T-1): full_index >= 0
    Tensor completion_tokens;      // (S,) completion token counts per sequence
    Tensor full_tokens;            // (S,) predicted tokens per sequence (its length - 1)
    Tensor chosen_weight;          // (B,)

    std::int64_t sequences() const { return chosen_only ? pairs : 2 * pairs; }
    std::int64_t rows() const { return batch.ids.defined() ? batch.ids.size(0) : 0; }
};

namespace detail {

// One sequence: pair p's prompt followed by its chosen (rejected = false) or rejected completion.
struct SequenceRef {
    std::int64_t pair = 0;
    bool rejected = false;
    const std::vector<std::int64_t>* prompt = nullptr;
    const std::vector<std::int64_t>* completion = nullptr;
    std::int64_t length() const { return std::int64_t(prompt->size() + completion->size()); }
};

inline std::vector<SequenceRef> sequences_of(std::span<const data::TokenPair> pairs, bool chosen_only = false) {
    const std::int64_t B = std::int64_t(pairs.size());
    DEVIANT_REQUIRE(B > 0, "no pairs to batch");
    std::vector<SequenceRef> seqs(std::size_t(chosen_only ? B : 2 * B));
    for (std::int64_t i = 0; i < B; ++i) {
        const auto& p = pairs[std::size_t(i)];
        DEVIANT_REQUIRE(!p.prompt.empty(), "pair {} has an empty prompt: the first completion token would not be predicted", i);
        DEVIANT_REQUIRE(!p.chosen.empty(), "pair {} has an empty chosen completion", i);
        DEVIANT_REQUIRE(!p.rejected.empty(), "pair {} has an empty rejected completion", i);
        seqs[std::size_t(i)] = {i, false, &p.prompt, &p.chosen};
        if (!chosen_only) seqs[std::size_t(B + i)] = {i, true, &p.prompt, &p.rejected};
    }
    return seqs;
}

// Lays sequences out in rows: placement[s] = {row, start column}; rows of width T.
inline SequenceRows layout_rows(std::span<const data::TokenPair> pairs, const std::vector<SequenceRef>& seqs,
                                const std::vector<std::pair<std::int64_t, std::int64_t>>& placement, std::int64_t R, std::int64_t T,
                                DType dtype, std::int64_t pad_id) {
    const std::int64_t S = std::int64_t(seqs.size()), B = std::int64_t(pairs.size());
    dtype = compute_dtype(dtype);  // masks, counts and weights of a bf16 model stay float32, as its log-probs
    std::vector<std::int64_t> ids(std::size_t(R * T), pad_id), seg(std::size_t(R * T), -1);
    std::vector<std::int64_t> cidx(std::size_t(R * (T - 1)), -1), fidx(cidx.size(), -1);
    std::vector<std::int64_t> next_segment(static_cast<std::size_t>(R), 0);
    std::vector<double> ccount(static_cast<std::size_t>(S)), fcount(static_cast<std::size_t>(S)), w(static_cast<std::size_t>(B));
    // The sequences of a row get distinct segment ids 0, 1, ... (in sequence order) and the
    // padding one more: no attention crosses them and positions restart at each.
    for (std::int64_t s = 0; s < S; ++s) {
        const SequenceRef& q = seqs[std::size_t(s)];
        const auto [r, start] = placement[std::size_t(s)];
        const std::int64_t np = std::int64_t(q.prompt->size()), nc = std::int64_t(q.completion->size()), n = np + nc;
        const std::int64_t segment = next_segment[std::size_t(r)]++;
        std::int64_t* row = ids.data() + r * T + start;
        std::copy(q.prompt->begin(), q.prompt->end(), row);
        std::copy(q.completion->begin(), q.completion->end(), row + np);
        std::fill(seg.begin() + r * T + start, seg.begin() + r * T + start + n, segment);
        for (std::int64_t k = 0; k + 1 < n; ++k) {  // column start+k predicts token k+1 of the sequence
            const std::size_t at = std::size_t(r * (T - 1) + start + k);
            fidx[at] = s;
            if (k + 1 >= np) cidx[at] = s;
        }
        ccount[std::size_t(s)] = double(nc);
        fcount[std::size_t(s)] = double(n - 1);
        if (s < B) w[std::size_t(s)] = pairs[std::size_t(s)].weight;
    }
    for (std::int64_t r = 0; r < R; ++r)
        for (std::int64_t t = 0; t < T; ++t)
            if (seg[std::size_t(r * T + t)] < 0) seg[std::size_t(r * T + t)] = next_segment[std::size_t(r)];  // padding
    std::vector<double> cmask(cidx.size()), fmask(fidx.size());
    for (std::size_t i = 0; i < cidx.size(); ++i) cmask[i] = cidx[i] >= 0, fmask[i] = fidx[i] >= 0;
    SequenceRows rows;
    rows.pairs = B;
    rows.chosen_only = S == B;
    rows.batch.ids = Tensor::from(ids, {R, T});
    rows.batch.segments = Tensor::from(seg, {R, T});
    rows.completion_index = Tensor::from(cidx, {R, T - 1});
    rows.full_index = Tensor::from(fidx, {R, T - 1});
    rows.completion_mask = Tensor::from(cmask, {R, T - 1}, dtype);
    rows.full_mask = Tensor::from(fmask, {R, T - 1}, dtype);
    rows.completion_tokens = Tensor::from(ccount, {S}, dtype);
    rows.full_tokens = Tensor::from(fcount, {S}, dtype);
    rows.chosen_weight = Tensor::from(w, {B}, dtype);
    return rows;
}

}  // namespace detail

// Padded rows: row s holds sequence s (2B rows, or B with chosen_only), right-padded with pad_id
// to the longest.
inline SequenceRows make_rows(std::span<const data::TokenPair> pairs, DType dtype = DType::f32, std::int64_t pad_id = 0,
                              bool chosen_only = false) {
    const std::vector<detail::SequenceRef> seqs = detail::sequences_of(pairs, chosen_only);
    std::int64_t T = 2;
    std::vector<std::pair<std::int64_t, std::int64_t>> placement;
    for (std::size_t s = 0; s < seqs.size(); ++s) {
        T = std::max(T, seqs[s].length());
        placement.push_back({std::int64_t(s), 0});
    }
    return detail::layout_rows(pairs, seqs, placement, std::int64_t(seqs.size()), T, dtype, pad_id);
}

// Packed rows of at most row_tokens tokens: sequences in the order chosen 0, rejected 0,
// chosen 1, ... each go into the first row with room left (first-fit), else a new row. Rows are
// as wide as the fullest one. A sequence longer than row_tokens is an error naming its pair.
inline SequenceRows make_packed_rows(std::span<const data::TokenPair> pairs, std::int64_t row_tokens, DType dtype = DType::f32,
                                     std::int64_t pad_id = 0, bool chosen_only = false) {
    DEVIANT_REQUIRE(row_tokens >= 2, "packing needs rows of at least 2 tokens, got row_tokens = {}", row_tokens);
    const std::vector<detail::SequenceRef> seqs = detail::sequences_of(pairs, chosen_only);
    const std::int64_t B = std::int64_t(pairs.size()), S = std::int64_t(seqs.size());
    std::vector<std::pair<std::int64_t, std::int64_t>> placement(seqs.size());
    std::vector<std::int64_t> used;  // tokens used per row
    for (std::int64_t k = 0; k < S; ++k) {
        const std::int64_t s = chosen_only ? k : (k % 2) * B + k / 2;  // chosen 0, rejected 0, chosen 1, ...
        const detail::SequenceRef& q = seqs[std::size_t(s)];
        const std::int64_t n = q.length();
        DEVIANT_REQUIRE(n <= row_tokens, "pair {}: prompt + {} is {} tokens ({} + {}), longer than a packed row of {} tokens", q.pair,
                        q.rejected ? "rejected" : "chosen", n, q.prompt->size(), q.completion->size(), row_tokens);
        std::size_t r = 0;
        while (r < used.size() && used[r] + n > row_tokens) ++r;
        if (r == used.size()) used.push_back(0);
        placement[std::size_t(s)] = {std::int64_t(r), used[r]};
        used[r] += n;
    }
    std::int64_t T = 2;
    for (std::int64_t u : used) T = std::max(T, u);
    return detail::layout_rows(pairs, seqs, placement, std::int64_t(used.size()), T, dtype, pad_id);
}

// Summed log-probs per sequence: token_logps (R, T-1) summed over `index` (R, T-1) -> (num_sequences,).
inline Var sequence_logps(Var token_logps, const Tensor& index, std::int64_t num_sequences) {
    return segment_sum(token_logps, index, num_sequences);
}

// Summed log-probs of each row's tokens selected by `mask` (R, T-1) -> (R,) (per row; padded rows only).
template <class Model>
Var masked_sequence_logps(Var token_logps, const Tensor& mask) {
    return sum(token_logps * token_logps.tape->constant(mask.to(token_logps.device(), token_logps.dtype())), 1);
}

// Policy log-probs on the tape, split into chosen and rejected, with counts and weights filled in.
// `with_prompt_nll` also records prompt+completion sums (ORPO's TRL convention). Rows laid out
// chosen_only give the chosen log-probs in the rejected fields too (for objectives that never
// read them: half the forward and backward work of SFT).
template <class Model>
PairLogps pair_logps(Tape& t, const Model& model, const SequenceRows& rows, bool with_prompt_nll = false) {
    const std::int64_t B = rows.pairs;
    // (R, T-1); the LM head runs only where a sum below reads the position (full_index covers
    // completion_index)
    Var lp = model.next_token_logprobs(t, rows.batch, with_prompt_nll ? rows.full_index : rows.completion_index);
    if (rows.chosen_only) {
        PairLogps out;
        out.chosen_logp = out.rejected_logp = sequence_logps(lp, rows.completion_index, B);
        out.chosen_tokens = out.rejected_tokens = rows.completion_tokens;
        out.chosen_weight = rows.chosen_weight;
        if (with_prompt_nll) {
            out.chosen_full_logp = sequence_logps(lp, rows.full_index, B);
            out.chosen_full_tokens = rows.full_tokens;
        }
        return out;
    }
    Var completion = sequence_logps(lp, rows.completion_index, 2 * B);
    PairLogps out;
    out.chosen_logp = narrow(completion, 0, 0, B);
    out.rejected_logp = narrow(completion, 0, B, B);
    out.chosen_tokens = rows.completion_tokens.narrow(0, 0, B).contiguous();
    out.rejected_tokens = rows.completion_tokens.narrow(0, B, B).contiguous();
    out.chosen_weight = rows.chosen_weight;
    if (with_prompt_nll) {
        out.chosen_full_logp = narrow(sequence_logps(lp, rows.full_index, 2 * B), 0, 0, B);
        out.chosen_full_tokens = rows.full_tokens.narrow(0, 0, B).contiguous();
    }
    return out;
}

// Frozen reference: completion log-probs (chosen, rejected), computed without recording a graph.
template <class Model>
std::pair<Tensor, Tensor> reference_logps(const Model& ref, const SequenceRows& rows) {
    DEVIANT_REQUIRE(!rows.chosen_only, "reference log-probs need the rejected sequences too (rows were laid out chosen-only)");
    NoGradGuard no_grad;
    Tape t;
    Tensor all = sequence_logps(ref.next_token_logprobs(t, rows.batch, rows.completion_index), rows.completion_index, 2 * rows.pairs).value();
    return {all.narrow(0, 0, rows.pairs).contiguous(), all.narrow(0, rows.pairs, rows.pairs).contiguous()};
}

}  // namespace deviant
