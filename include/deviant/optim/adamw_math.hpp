// deviant/optim/adamw_math.hpp — the per-element AdamW update, shared by the CPU loop
// (optim/adamw.hpp) and the CUDA kernel (kernels/adamw.cuh) so both run one formula.
// Operation order follows torch.optim.AdamW (single-tensor path) so float32 results agree to
// rounding: p *= 1 - lr*wd; m = lerp(m, g, 1 - beta1); v = v*beta2 + (1 - beta2)*g*g;
// p += (-lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps).
#pragma once
#include <cmath>

#include "deviant/core/hd.hpp"

namespace deviant::optim {

// Step-dependent scalars of one AdamW update, computed on the host in double.
struct AdamWCoefficients {
    double decay = 1.0;                  // 1 - lr * weight_decay
    double one_minus_beta1 = 0.1;        // lerp weight of the first moment
    double beta2 = 0.999;
    double one_minus_beta2 = 0.001;
    double neg_step_size = 0.0;          // -lr / (1 - beta1^t)
    double bias_correction2_sqrt = 1.0;  // sqrt(1 - beta2^t)
    double eps = 1e-8;
};

// One element: parameter p, gradient g, moments m and v, all in the compute type C.
template <class C>
DEVIANT_HD void adamw_update(C& p, C g, C& m, C& v, C decay, C w1, C beta2, C one_minus_beta2, C neg_step_size,
                             C bias_correction2_sqrt, C eps) {
    p = p * decay;
    // torch's lerp: start + w * (end - start) for w < 0.5, else end - (end - start) * (1 - w)
    m = w1 < C(0.5) ? m + w1 * (g - m) : g - (g - m) * (C(1) - w1);
    v = v * beta2;
    v = v + one_minus_beta2 * g * g;
    C denom = std::sqrt(v) / bias_correction2_sqrt + eps;
    p = p + neg_step_size * m / denom;
}

}  // namespace deviant::optim
