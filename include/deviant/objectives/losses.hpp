// deviant/objectives/losses.hpp — the loss policies of method.md, one small struct each.
//
// A loss policy turns a PairLogps batch into per-pair losses (B,) on the tape and records its
// metrics. Notation (method.md): logp = summed completion log-probs, abar = logp / tokens,
// z = (logp_c - ref_c) - (logp_r - ref_r).
//   Dpo    -(1-eps) logsig(beta z) - eps logsig(-beta z)
//   Ipo    (zbar - 1/(2 beta))^2, zbar from length-averaged log-probs (summed with `average=false`)
//   Hinge  max(0, 1 - beta z)
//   SimPo  softplus(-(beta (abar_c - abar_r) - gamma))                 (no reference)
//   Orpo   -abar_c - lambda logsig(logOR)                               (no reference)
//          logOR = (abar_c - abar_r) - (log1mexp(abar_c) - log1mexp(abar_r))
//   Sft    -abar_c
// Interface: `static constexpr std::string_view name`, `bool needs_reference() const`,
// `bool applies_weights() const` (true when the policy places the chosen weight itself), and
// `Var per_pair(const PairLogps&, const Var* weight, Metrics&) const`.
#pragma once
#include <string_view>

#include "deviant/objectives/metrics.hpp"
#include "deviant/objectives/pair_batch.hpp"
#include "deviant/ops/elementwise.hpp"
#include "deviant/ops/reduce.hpp"

namespace deviant::losses {

namespace detail {
inline Var average(const Var& logp, const Tensor& tokens) {
    return logp / logp.tape->constant(tokens.to(logp.device(), logp.dtype()));
}
inline Var ref(const Var& like, const Tensor& t, const char* what) {
    DEVIANT_REQUIRE(t.defined(), "objective needs reference log-probs ({}) but none were given", what);
    DEVIANT_REQUIRE(t.shape() == like.shape(), "reference {} has shape {}, policy log-probs {}", what, t.shape().str(), like.shape().str());
    return like.tape->constant(t.to(like.device(), like.dtype()));
}
// log pi(y) - log pi_ref(y) for the chosen and the rejected responses (summed log-probs).
inline std::pair<Var, Var> policy_minus_reference(const PairLogps& b) {
    return {b.chosen_logp - ref(b.chosen_logp, b.ref_chosen_logp, "chosen"), b.rejected_logp - ref(b.rejected_logp, b.ref_rejected_logp, "rejected")};
}
// beta * (policy - reference) rewards and the margin/accuracy metrics shared by DPO-style losses.
inline void reward_metrics(Metrics& m, const Tensor& rc, const Tensor& rr) {
    auto c = rc.to_vector<double>(), r = rr.to_vector<double>();
    double acc = 0, margin = 0;
    for (std::size_t i = 0; i < c.size(); ++i) {
        acc += c[i] > r[i] ? 1.0 : 0.0;
        margin += c[i] - r[i];
    }
    double n = double(std::max<std::size_t>(c.size(), 1));
    m.set("rewards/chosen", mean_of(rc));
    m.set("rewards/rejected", mean_of(rr));
    m.set("rewards/accuracies", acc / n);
    m.set("rewards/margins", margin / n);
}
inline void logp_metrics(Metrics& m, const PairLogps& b) {
    m.set("logps/chosen", mean_of(b.chosen_logp.value()));
    m.set("logps/rejected", mean_of(b.rejected_logp.value()));
}
}  // namespace detail

struct Dpo {
    static constexpr std::string_view name = "dpo";
    double beta = 0.1;
    double label_smoothing = 0.0;  // eps: conservative DPO
    bool needs_reference() const { return true; }
    bool applies_weights() const { return false; }

    Var per_pair(const PairLogps& b, const Var*, Metrics& m) const {
        auto [rc, rr] = detail::policy_minus_reference(b);
        Var bz = (rc - rr) * beta;
        Var loss = logsigmoid(bz) * -(1.0 - label_smoothing);
        if (label_smoothing != 0.0) loss = loss + logsigmoid(-bz) * -label_smoothing;
        detail::reward_metrics(m, ops::affine(rc.value(), beta), ops::affine(rr.value(), beta));
        detail::logp_metrics(m, b);
        return loss;
    }
};

struct Ipo {
    static constexpr std::string_view name = "ipo";
    double beta = 0.1;
    bool average = true;  // length-averaged log-probs (method.md, TRL); false = summed (OpenRLHF)
    bool needs_reference() const { return true; }
    bool applies_weights() const { return false; }

    Var per_pair(const PairLogps& b, const Var*, Metrics& m) const {
        auto [rc, rr] = detail::policy_minus_reference(b);
        if (average) {
            rc = detail::average(rc, b.chosen_tokens);
            rr = detail::average(rr, b.rejected_tokens);
        }
        Var loss = square((rc - rr) - 1.0 / (2.0 * beta));
        detail::reward_metrics(m, ops::affine(rc.value(), beta), ops::affine(rr.value(), beta));
        detail::logp_metrics(m, b);
        return loss;
    }
};

struct Hinge {
    static constexpr std::string_view name = "hinge";
    double beta = 0.1;
    bool needs_reference() const { return true; }
    bool applies_weights() const { return false; }

    Var per_pair(const PairLogps& b, const Var*, Metrics& m) const {
        auto [rc, rr] = detail::policy_minus_reference(b);
        Var loss = relu(affine(rc - rr, -beta, 1.0));
        detail::reward_metrics(m, ops::affine(rc.value(), beta), ops::affine(rr.value(), beta));
        detail::logp_metrics(m, b);
        return loss;
    }
};

struct SimPo {
    static constexpr std::string_view name = "simpo";
    double beta = 2.0;
    double gamma = 0.5;
    bool needs_reference() const { return false; }
    bool applies_weights() const { return false; }

    Var per_pair(const PairLogps& b, const Var*, Metrics& m) const {
        Var ac = detail::average(b.chosen_logp, b.chosen_tokens);
        Var ar = detail::average(b.rejected_logp, b.rejected_tokens);
        Var loss = softplus(affine(ac - ar, -beta, gamma));  // softplus(-(beta (ac - ar) - gamma))
        detail::reward_metrics(m, ops::affine(ac.value(), beta), ops::affine(ar.value(), beta));
        detail::logp_metrics(m, b);
        return loss;
    }
};

// Where the chosen weight enters ORPO (DORPO): per pair outside both terms (method.md, the
// paper's text) or as in the paper's released code: logsig(w logOR) per pair plus the batch-mean
// weight times the batch token-mean NLL.
enum class WeightPlacement { outside, released_code };

struct Orpo {
    static constexpr std::string_view name = "orpo";
    double lambda = 0.25;
    bool nll_includes_prompt = false;  // TRL's convention: NLL token mean over prompt + completion
    WeightPlacement placement = WeightPlacement::outside;
    bool needs_reference() const { return false; }
    bool applies_weights() const { return placement == WeightPlacement::released_code; }

    Var per_pair(const PairLogps& b, const Var* weight, Metrics& m) const {
        Var ac = detail::average(b.chosen_logp, b.chosen_tokens);
        Var ar = detail::average(b.rejected_logp, b.rejected_tokens);
        Var log_odds = (ac - ar) - (log1mexp(ac) - log1mexp(ar));
        Var nll_avg;
        if (nll_includes_prompt) {
            DEVIANT_REQUIRE(b.chosen_full_logp.defined(), "ORPO with the prompt in the NLL needs prompt+completion log-probs");
            nll_avg = detail::average(b.chosen_full_logp, b.chosen_full_tokens);
        } else {
            nll_avg = ac;
        }
        Var ratio = weight && applies_weights() ? logsigmoid(log_odds * *weight) : logsigmoid(log_odds);
        Var nll = -nll_avg;
        if (weight && applies_weights()) {
            // released code: mean(w) * mean over the batch's tokens of the NLL, spread evenly over pairs
            Tensor tokens = nll_includes_prompt ? b.chosen_full_tokens : b.chosen_tokens;
            Var sum_logp = nll_includes_prompt ? b.chosen_full_logp : b.chosen_logp;
            double total_tokens = 0;
            for (double t : tokens.to_vector<double>()) total_tokens += t;
            double mean_w = mean_of(weight->value());
            Var token_mean_nll = scale(sum_logp, -1.0 / total_tokens * double(b.size()));  // mean over pairs = token mean
            nll = token_mean_nll * mean_w;
        }
        Var loss = nll - ratio * lambda;
        m.set("rewards/chosen", lambda * mean_of(ac.value()));
        m.set("rewards/rejected", lambda * mean_of(ar.value()));
        {
            auto c = ac.value().to_vector<double>(), r = ar.value().to_vector<double>();
            double acc = 0, margin = 0;
            for (std::size_t i = 0; i < c.size(); ++i) acc += c[i] > r[i], margin += lambda * (c[i] - r[i]);
            m.set("rewards/accuracies", acc / double(c.size()));
            m.set("rewards/margins", margin / double(c.size()));
        }
        detail::logp_metrics(m, b);
        m.set("nll_loss", mean_of(nll.value()));
        m.set("log_odds_ratio", mean_of(ratio.value()));
        m.set("log_odds_chosen", mean_of(log_odds.value()));
        return loss;
    }
};

struct Sft {
    static constexpr std::string_view name = "sft";
    static constexpr bool uses_rejected = false;  // the trainer may skip the rejected sequences
    bool needs_reference() const { return false; }
    bool applies_weights() const { return false; }

    Var per_pair(const PairLogps& b, const Var*, Metrics& m) const {
        Var loss = -detail::average(b.chosen_logp, b.chosen_tokens);
        m.set("logps/chosen", mean_of(b.chosen_logp.value()));
        m.set("nll_loss", mean_of(loss.value()));
        return loss;
    }
};

}  // namespace deviant::losses
