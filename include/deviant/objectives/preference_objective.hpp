// deviant/objectives/preference_objective.hpp — the generic preference objective.
//
//   PreferenceObjective<Loss, Weighting>
//     Loss      — a loss policy from losses.hpp (or your own, same interface)
//     Weighting — Unweighted, or DeviationWeighted: each pair's loss is multiplied by its chosen
//                 response's deviation weight (deviation/deviation.hpp computes those weights when
//                 the pairs are built; see method.md "Deviation weights"). A weighting policy is
//                 `static constexpr bool weighted` plus, optionally, `Tensor transform(const Tensor& w)
//                 const` mapping the batch's (B,) weights to the ones applied (e.g. clipping); the
//                 objective holds a copy of it (docs/adding-an-objective.md).
//
// The batch loss is the mean over pairs of w_i * loss_i (+ alpha * NLL_i, RPO-style, when
// nll_alpha > 0). DDPO and DORPO are aliases: DeviationWeighted over Dpo and Orpo; with every
// weight 1 they equal DPO and ORPO exactly (the multiplication by 1 is exact in floating point).
// Empty completions are rejected naming the pair, instead of producing 0/0.
#pragma once
#include <concepts>

#include "deviant/objectives/losses.hpp"

namespace deviant {

struct Unweighted {
    static constexpr bool weighted = false;
};
struct DeviationWeighted {
    static constexpr bool weighted = true;
};

// A weighting policy that rewrites the weights before they are applied.
template <class Weighting>
concept TransformsWeights = requires(const Weighting& w, const Tensor& t) {
    { w.transform(t) } -> std::convertible_to<Tensor>;
};

struct ObjectiveResult {
    Var loss;  // scalar on the tape
    Metrics metrics;
};

template <class Loss, class Weighting = Unweighted>
class PreferenceObjective {
public:
    using loss_type = Loss;
    using weighting_type = Weighting;

    Loss loss{};
    double nll_alpha = 0.0;  // extra -abar_c term (RPO), 0 = off
    Weighting weighting{};

    PreferenceObjective() = default;
    explicit PreferenceObjective(Loss l, double alpha = 0.0) : loss(l), nll_alpha(alpha) {}
    PreferenceObjective(Loss l, Weighting w, double alpha = 0.0) : loss(l), nll_alpha(alpha), weighting(w) {}

    bool needs_reference() const { return loss.needs_reference(); }
    static constexpr bool weighted() { return Weighting::weighted; }
    // False when the loss reads only the chosen completions (SFT): a trainer may then leave the
    // rejected sequences out of the forward pass. A loss says so with `uses_rejected = false`.
    static constexpr bool uses_rejected() {
        if constexpr (requires { Loss::uses_rejected; }) return Loss::uses_rejected;
        else return true;
    }

    ObjectiveResult operator()(const PairLogps& b) const {
        validate(b);
        Metrics m;
        Var weight;
        if constexpr (Weighting::weighted) {
            if (b.chosen_weight.defined()) {
                Tensor w = b.chosen_weight;
                if constexpr (TransformsWeights<Weighting>) {
                    w = weighting.transform(w);
                    DEVIANT_REQUIRE(w.defined() && w.numel() == b.size(), "objective: the weighting's transform gave {} weights for {} pairs",
                                    w.defined() ? w.numel() : 0, b.size());
                    w = w.reshape({b.size()});
                }
                weight = b.chosen_logp.tape->constant(w.to(b.chosen_logp.device(), b.chosen_logp.dtype()));
            }
        }
        Var per = loss.per_pair(b, weight.defined() ? &weight : nullptr, m);
        if (nll_alpha != 0.0) {
            Var nll = -losses::detail::average(b.chosen_logp, b.chosen_tokens);
            per = per + nll * nll_alpha;
            if (!m.contains("nll_loss")) m.set("nll_loss", mean_of(nll.value()));
        }
        if (weight.defined() && !loss.applies_weights()) per = per * weight;
        Var total = mean_all(per);
        Metrics out;
        out.set("loss", total.value().item());
        for (auto& [k, v] : m.items()) out.set(k, v);
        if (weight.defined()) out.set("weights/chosen", mean_of(weight.value()));
        return {total, out};
    }

private:
    static void validate(const PairLogps& b) {
        DEVIANT_REQUIRE(b.chosen_logp.defined() && b.rejected_logp.defined(), "objective: missing policy log-probs");
        std::int64_t n = b.size();
        DEVIANT_REQUIRE(n > 0, "objective: empty batch");
        DEVIANT_REQUIRE(b.rejected_logp.value().numel() == n && b.chosen_tokens.numel() == n && b.rejected_tokens.numel() == n,
                        "objective: batch fields disagree on the number of pairs ({} chosen log-probs)", n);
        auto ct = b.chosen_tokens.to_vector<double>(), rt = b.rejected_tokens.to_vector<double>();
        for (std::int64_t i = 0; i < n; ++i) {
            DEVIANT_REQUIRE(ct[i] > 0, "pair {} of the batch has an empty chosen completion (0 tokens)", i);
            DEVIANT_REQUIRE(rt[i] > 0, "pair {} of the batch has an empty rejected completion (0 tokens)", i);
        }
        if constexpr (Weighting::weighted) {
            if (b.chosen_weight.defined()) {
                DEVIANT_REQUIRE(b.chosen_weight.numel() == n, "objective: {} weights for {} pairs", b.chosen_weight.numel(), n);
                auto w = b.chosen_weight.to_vector<double>();
                for (std::int64_t i = 0; i < n; ++i)
                    DEVIANT_REQUIRE(std::isfinite(w[i]) && w[i] >= 0, "pair {} has an invalid deviation weight {}", i, w[i]);
            }
        }
    }
};

// The objectives of method.md, as types.
using DpoObjective = PreferenceObjective<losses::Dpo>;
using IpoObjective = PreferenceObjective<losses::Ipo>;
using HingeObjective = PreferenceObjective<losses::Hinge>;
using SimPoObjective = PreferenceObjective<losses::SimPo>;
using OrpoObjective = PreferenceObjective<losses::Orpo>;
using SftObjective = PreferenceObjective<losses::Sft>;
using DdpoObjective = PreferenceObjective<losses::Dpo, DeviationWeighted>;
using DorpoObjective = PreferenceObjective<losses::Orpo, DeviationWeighted>;

}  // namespace deviant
