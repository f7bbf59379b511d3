// examples/custom_objective.cpp — a new preference objective written in user code, the program
// that docs/adding-an-objective.md walks through (every code block there is part of this file).
//
// (a) a loss policy: robust DPO (Chowdhury et al. 2024, "Provably Robust DPO"; TRL's
//     loss_type="robust"), unbiased under a label-flip rate eps:
//       L = ( -(1 - eps) logsig(beta z) + eps logsig(-beta z) ) / (1 - 2 eps)
//     with z = (logp_c - ref_c) - (logp_r - ref_r);
// (b) a weighting policy: deviation weights clipped to [w_min, w_max].
// It evaluates PreferenceObjective<RobustDpo, ClippedWeights> on a tiny batch, runs backward,
// prints the loss and gradients, and exits non-zero unless they match the closed form.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "deviant/objectives/preference_objective.hpp"

using namespace deviant;

// --- (a) the loss policy ---------------------------------------------------------------------
struct RobustDpo {
    static constexpr std::string_view name = "robust_dpo";
    double beta = 0.1;
    double eps = 0.1;  // assumed rate of flipped preference labels, in [0, 0.5)

    bool needs_reference() const { return true; }    // reads ref_chosen_logp / ref_rejected_logp
    bool applies_weights() const { return false; }   // PreferenceObjective multiplies by the weight

    // Per-pair losses (B,) on the tape.
    Var per_pair(const PairLogps& b, const Var* /*weight*/, Metrics& m) const {
        DEVIANT_REQUIRE(eps >= 0 && eps < 0.5, "robust_dpo: eps must be in [0, 0.5), got {}", eps);
        DEVIANT_REQUIRE(b.ref_chosen_logp.defined() && b.ref_rejected_logp.defined(), "robust_dpo needs reference log-probs");
        Tape& t = *b.chosen_logp.tape;
        auto constant = [&](const Tensor& x) { return t.constant(x.to(b.chosen_logp.device(), b.chosen_logp.dtype())); };
        Var z = (b.chosen_logp - constant(b.ref_chosen_logp)) - (b.rejected_logp - constant(b.ref_rejected_logp));
        Var bz = z * beta;
        Var loss = (logsigmoid(bz) * -(1.0 - eps) + logsigmoid(-bz) * eps) * (1.0 / (1.0 - 2.0 * eps));
        m.set("rewards/margins", beta * mean_of(z.value()));
        return loss;
    }
};

// --- (b) the weighting policy ----------------------------------------------------------------
struct ClippedWeights {
    static constexpr std::string_view name = "clipped";
    static constexpr bool weighted = true;  // the objective reads PairLogps::chosen_weight
    double w_min = 0.5, w_max = 2.0;

    // The batch's weights (B,) -> the weights applied (B,). Small host work; any device is fine.
    Tensor transform(const Tensor& w) const {
        std::vector<double> v = w.to_vector<double>();
        for (double& x : v) x = std::clamp(x, w_min, w_max);
        return Tensor::from(v, w.shape(), w.dtype());
    }
};

// --- the objective: loss x weighting, nothing else to write ----------------------------------
using ClippedRobustDpo = PreferenceObjective<RobustDpo, ClippedWeights>;

// Closed form of the batch loss and its gradients, in plain doubles.
struct ClosedForm {
    double loss = 0;
    std::vector<double> grad_chosen, grad_rejected;
};
ClosedForm closed_form(const std::vector<double>& lc, const std::vector<double>& lr, const std::vector<double>& rc,
                       const std::vector<double>& rr, const std::vector<double>& w, double beta, double eps, double w_min,
                       double w_max) {
    auto logsig = [](double x) { return x >= 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x)); };
    auto sig = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
    std::size_t n = lc.size();
    ClosedForm f;
    for (std::size_t i = 0; i < n; ++i) {
        double z = (lc[i] - rc[i]) - (lr[i] - rr[i]), wi = std::clamp(w[i], w_min, w_max);
        double li = (-(1 - eps) * logsig(beta * z) + eps * logsig(-beta * z)) / (1 - 2 * eps);
        // dL/dz = beta (-(1 - eps) sig(-beta z) - eps sig(beta z)) / (1 - 2 eps)
        double dz = beta * (-(1 - eps) * sig(-beta * z) - eps * sig(beta * z)) / (1 - 2 * eps);
        f.loss += wi * li / double(n);
        f.grad_chosen.push_back(wi * dz / double(n));
        f.grad_rejected.push_back(-wi * dz / double(n));
    }
    return f;
}

int main() {
    const std::vector<double> lc{-12.0, -20.5, -7.25, -30.0}, lr{-14.0, -18.0, -9.5, -29.0};  // policy, summed
    const std::vector<double> rc{-12.5, -20.0, -8.0, -31.0}, rr{-13.0, -18.5, -9.0, -28.0};   // reference
    const std::vector<double> tokens{4, 6, 3, 9}, weights{0.2, 1.0, 1.7, 3.5};
    const std::int64_t B = 4;
    const double beta = 0.5, eps = 0.1, w_min = 0.5, w_max = 2.0;

    Parameter chosen("chosen", Tensor::from(lc, {B})), rejected("rejected", Tensor::from(lr, {B}));
    Tape tape;
    PairLogps batch;
    batch.chosen_logp = tape.param(chosen);
    batch.rejected_logp = tape.param(rejected);
    batch.chosen_tokens = batch.rejected_tokens = Tensor::from(tokens, {B});
    batch.ref_chosen_logp = Tensor::from(rc, {B});
    batch.ref_rejected_logp = Tensor::from(rr, {B});
    batch.chosen_weight = Tensor::from(weights, {B});

    ClippedRobustDpo objective{RobustDpo{beta, eps}, ClippedWeights{w_min, w_max}};
    ObjectiveResult result = objective(batch);
    tape.backward(result.loss);

    std::printf("%s x %s: loss %.17g\n", std::string(RobustDpo::name).c_str(), std::string(ClippedWeights::name).c_str(),
                result.loss.value().item());
    for (const auto& [key, value] : result.metrics.items()) std::printf("  %s = %.6g\n", key.c_str(), value);
    auto gc = chosen.grad.to_vector<double>(), gr = rejected.grad.to_vector<double>();
    for (std::int64_t i = 0; i < B; ++i) std::printf("  pair %ld: dL/dchosen %+.10f  dL/drejected %+.10f\n", long(i), gc[i], gr[i]);

    // Check against the closed form.
    ClosedForm want = closed_form(lc, lr, rc, rr, weights, beta, eps, w_min, w_max);
    auto close = [](double a, double b) { return std::abs(a - b) <= 1e-12 * std::max(1.0, std::abs(b)); };
    int bad = 0;
    if (!close(result.loss.value().item(), want.loss)) {
        std::printf("MISMATCH loss %.17g, closed form %.17g\n", result.loss.value().item(), want.loss);
        ++bad;
    }
    for (std::int64_t i = 0; i < B; ++i) {
        if (!close(gc[i], want.grad_chosen[i]) || !close(gr[i], want.grad_rejected[i])) {
            std::printf("MISMATCH pair %ld gradient (%.17g, %.17g), closed form (%.17g, %.17g)\n", long(i), gc[i], gr[i],
                        want.grad_chosen[i], want.grad_rejected[i]);
            ++bad;
        }
    }
    if (std::abs(result.metrics.get("weights/chosen") - (0.5 + 1.0 + 1.7 + 2.0) / 4) > 1e-15) {
        std::printf("MISMATCH mean applied weight %.17g\n", result.metrics.get("weights/chosen"));
        ++bad;
    }

    // With eps = 0 and no weights the robust loss is plain DPO: compare with the library's Dpo.
    {
        Parameter c2("chosen", Tensor::from(lc, {B})), r2("rejected", Tensor::from(lr, {B}));
        Tape t2;
        PairLogps b2 = batch;
        b2.chosen_logp = t2.param(c2);
        b2.rejected_logp = t2.param(r2);
        double robust = PreferenceObjective<RobustDpo>{RobustDpo{beta, 0.0}}(b2).loss.value().item();
        double dpo = DpoObjective{losses::Dpo{beta, 0.0}}(b2).loss.value().item();
        if (!close(robust, dpo)) {
            std::printf("MISMATCH robust_dpo(eps=0) %.17g vs dpo %.17g\n", robust, dpo);
            ++bad;
        }
    }
    std::printf(bad ? "FAILED: %d mismatches with the closed form\n" : "matches the closed form\n", bad);
    return bad ? 1 : 0;
}
