// deviant/train/pair_rows.hpp — from token pairs to the log-probs an objective needs.
//
// Chosen and rejected sequences go through the model in ONE forward: rows 0..B-1 hold
// prompt+chosen, rows B..2B-1 prompt+rejected, right-padded to the longest row. Position t of
// the model's next-token log-probs (R, T-1) predicts token t+1; the completion mask selects the
// completion tokens, so padding and the prompt never enter a log-prob sum.
#pragma once
#include <span>

#include "deviant/data/token_pairs.hpp"
#include "deviant/models/causal_lm.hpp"
#include "deviant/objectives/pair_batch.hpp"

namespace deviant {

struct SequenceRows {
    std::int64_t pairs = 0;        // B; rows = 2B
    TokenBatch batch;              // ids (2B, T), segments (2B, T)
    Tensor completion_mask;        // (2B, T-1): 1 where the predicted token is a completion token
    Tensor completion_tokens;      // (2B,)
    Tensor full_mask;              // (2B, T-1): every real token after the first (prompt + completion)
    Tensor full_tokens;            // (2B,)
    Tensor chosen_weight;          // (B,)
};

inline SequenceRows make_rows(std::span<const data::TokenPair> pairs, DType dtype = DType::f32, std::int64_t pad_id = 0) {
    std::int64_t B = std::int64_t(pairs.size()), R = 2 * B, T = 2;
    DEVIANT_REQUIRE(B > 0, "no pairs to batch");
    for (const auto& p : pairs) T = std::max<std::int64_t>(T, std::int64_t(p.prompt.size() + std::max(p.chosen.size(), p.rejected.size())));
    std::vector<std::int64_t> ids(std::size_t(R * T), pad_id), seg(std::size_t(R * T), 0);
    std::vector<double> cmask(std::size_t(R * (T - 1)), 0.0), fmask(cmask.size(), 0.0), ccount(static_cast<std::size_t>(R)), fcount(static_cast<std::size_t>(R)), w(static_cast<std::size_t>(B));
    for (std::int64_t r = 0; r < R; ++r) {
        const auto& p = pairs[std::size_t(r % B)];
        const auto& completion = r < B ? p.chosen : p.rejected;
        DEVIANT_REQUIRE(!completion.empty(), "pair {} has an empty {} completion", r % B, r < B ? "chosen" : "rejected");
        std::int64_t np = std::int64_t(p.prompt.size()), nc = std::int64_t(completion.size()), n = np + nc;
        std::copy(p.prompt.begin(), p.prompt.end(), ids.begin() + r * T);
        std::copy(completion.begin(), completion.end(), ids.begin() + r * T + np);
        for (std::int64_t t = n; t < T; ++t) seg[std::size_t(r * T + t)] = 1;  // padding: its own segment
        for (std::int64_t t = 0; t + 1 < n; ++t) {
            fmask[std::size_t(r * (T - 1) + t)] = 1.0;
            if (t + 1 >= np) cmask[std::size_t(r * (T - 1) + t)] = 1.0;
        }
        ccount[std::size_t(r)] = double(nc);
        fcount[std::size_t(r)] = double(n - 1);
        if (r < B) w[std::size_t(r)] = p.weight;
    }
    SequenceRows rows;
    rows.pairs = B;
    rows.batch.ids = Tensor::from(ids, {R, T});
    rows.batch.segments = Tensor::from(seg, {R, T});
    rows.completion_mask = Tensor::from(cmask, {R, T - 1}, dtype);
    rows.full_mask = Tensor::from(fmask, {R, T - 1}, dtype);
    rows.completion_tokens = Tensor::from(ccount, {R}, dtype);
    rows.full_tokens = Tensor::from(fcount, {R}, dtype);
    rows.chosen_weight = Tensor::from(w, {B}, dtype);
    return rows;
}

// Summed log-probs of each row's tokens selected by `mask` (R, T-1) -> (R,).
template <class Model>
Var masked_sequence_logps(Var token_logps, const Tensor& mask) {
    return sum(token_logps * token_logps.tape->constant(mask.to(token_logps.device(), token_logps.dtype())), 1);
}

// Policy log-probs on the tape, split into chosen and rejected, with counts and weights filled in.
// `with_prompt_nll` also records prompt+completion sums (ORPO's TRL convention).
template <class Model>
PairLogps pair_logps(Tape& t, const Model& model, const SequenceRows& rows, bool with_prompt_nll = false) {
    std::int64_t B = rows.pairs;
    Var lp = model.next_token_logprobs(t, rows.batch);  // (2B, T-1)
    Var completion = masked_sequence_logps<Model>(lp, rows.completion_mask);
    PairLogps out;
    out.chosen_logp = narrow(completion, 0, 0, B);
    out.rejected_logp = narrow(completion, 0, B, B);
    out.chosen_tokens = rows.completion_tokens.narrow(0, 0, B).contiguous();
    out.rejected_tokens = rows.completion_tokens.narrow(0, B, B).contiguous();
    out.chosen_weight = rows.chosen_weight;
    if (with_prompt_nll) {
        out.chosen_full_logp = narrow(masked_sequence_logps<Model>(lp, rows.full_mask), 0, 0, B);
        out.chosen_full_tokens = rows.full_tokens.narrow(0, 0, B).contiguous();
    }
    return out;
}

// Frozen reference: completion log-probs (chosen, rejected), computed without recording a graph.
template <class Model>
std::pair<Tensor, Tensor> reference_logps(const Model& ref, const SequenceRows& rows) {
    NoGradGuard no_grad;
    Tape t;
    Tensor all = masked_sequence_logps<Model>(ref.next_token_logprobs(t, rows.batch), rows.completion_mask).value();
    return {all.narrow(0, 0, rows.pairs).contiguous(), all.narrow(0, rows.pairs, rows.pairs).contiguous()};
}

}  // namespace deviant
