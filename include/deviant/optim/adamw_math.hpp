// deviant/optim/adamw_math.hpp — the per-element AdamW update, shared by the CPU loop
// (optim/adamw.hpp) and the CUDA kernel (kernels/adamw.cuh) so both run one formula.
// Operation order follows torch.optim.AdamW (single-tensor path) so float32 results agree to
// rounding: p *= 1 - lr*wd; m = lerp(m, g, 1 - beta1); v = v*beta2 + (1 - beta2)*g*g;
// p += (-lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps).
#pragma once
#include <cmath>
#include <cstdint>

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

// One float32-state parameter for the multi-tensor CUDA update (kernels/adamw.cuh): float32 or
// bfloat16 weights (bf16: `master` is its float32 master copy, or null), a float32 gradient (or a
// bf16 one for a bf16 weight), float32
// moments, and the scalars of its update (each parameter keeps its own step count).
struct AdamWTensorF32 {
    void* param = nullptr;
    const void* grad = nullptr;
    float* exp_avg = nullptr;
    float* exp_avg_sq = nullptr;
    float* master = nullptr;
    std::int64_t n = 0;
    int bf16 = 0;       // weights stored as bfloat16
    int grad_bf16 = 0;  // gradient stored as bfloat16 (else float32)
    float decay = 1, one_minus_beta1 = 0.1f, beta2 = 0.999f, one_minus_beta2 = 0.001f, neg_step_size = 0,
          bias_correction2_sqrt = 1, eps = 1e-8f;
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
