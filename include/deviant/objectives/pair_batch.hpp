// deviant/objectives/pair_batch.hpp — what a preference objective sees of a batch of B pairs:
// summed completion log-probs of the policy (on the tape), token counts, the frozen reference's
// log-probs (plain tensors, when the objective needs them) and each pair's chosen weight.
#pragma once
#include "deviant/autodiff/tape.hpp"

namespace deviant {

struct PairLogps {
    Var chosen_logp;        // (B,) sum over completion tokens of log pi(y_c,t | x, y_c,<t)
    Var rejected_logp;      // (B,)
    Tensor chosen_tokens;   // (B,) completion token counts, same float dtype as the log-probs
    Tensor rejected_tokens; // (B,)
    Tensor ref_chosen_logp;    // (B,) frozen reference; undefined for reference-free objectives
    Tensor ref_rejected_logp;  // (B,)
    Tensor chosen_weight;      // (B,) deviation weight of the chosen response; undefined = all 1
    // Optional NLL over prompt + completion (TRL's ORPO convention): summed log-prob and count.
    Var chosen_full_logp;      // (B,)
    Tensor chosen_full_tokens; // (B,)

    std::int64_t size() const { return chosen_logp.value().numel(); }
};

}  // namespace deviant
