// deviant/kernels/adamw.cuh — the CUDA AdamW update of optim/adamw.hpp: one grid-stride launch
// per parameter, math in the state type (float for f32/bf16 parameters, double for f64), the
// parameter rounded back to nearest-even for bf16. With a float32 master copy (mixed precision,
// bf16 parameters) the update runs on the master and the bf16 weight is rewritten from it.
// The formula is optim/adamw_math.hpp's.
#pragma once
#include "deviant/kernels/common.cuh"
#include "deviant/optim/adamw_math.hpp"

namespace deviant::kernels {

template <class T, class S>
__global__ void adamw_step_kernel(T* param, const T* grad, S* exp_avg, S* exp_avg_sq, S* master, std::int64_t n, S decay, S w1,
                                  S beta2, S one_minus_beta2, S neg_step_size, S bias_correction2_sqrt, S eps) {
    DEVIANT_GRID_STRIDE(i, n) {
        S p = master ? master[i] : S(ld(param[i]));
        S m = exp_avg[i], v = exp_avg_sq[i];
        optim::adamw_update<S>(p, S(ld(grad[i])), m, v, decay, w1, beta2, one_minus_beta2, neg_step_size, bias_correction2_sqrt, eps);
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        if (master) master[i] = p;
        param[i] = st<T>(p);
    }
}

void adamw_step(const TensorRef& param, const TensorRef& grad, const TensorRef& exp_avg, const TensorRef& exp_avg_sq,
                const TensorRef& master, const optim::AdamWCoefficients& c) {
    if (master.data && (param.dtype != DType::bf16 || master.dtype != DType::f32 || master.numel() != param.numel() || !master.contiguous()))
        ::deviant::fail("adamw_step: a master copy must be a contiguous float32 tensor of a bfloat16 parameter's size");
    if (!param.contiguous() || !grad.contiguous() || !exp_avg.contiguous() || !exp_avg_sq.contiguous())
        ::deviant::fail("adamw_step: every operand must be contiguous");
    if (grad.dtype != param.dtype) ::deviant::fail("adamw_step: gradient is {}, parameter {}", dtype_name(grad.dtype), dtype_name(param.dtype));
    std::int64_t n = param.numel();
    if (n == 0) return;
    dispatch_float(param.dtype, [&](auto tag) {
        using T = decltype(tag);
        using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
        if (exp_avg.dtype != dtype_of<S>() || exp_avg_sq.dtype != dtype_of<S>())
            ::deviant::fail("adamw_step: state must be {} for a {} parameter", dtype_name(dtype_of<S>()), dtype_name(param.dtype));
        adamw_step_kernel<T, S><<<blocks_for(n, 256), 256>>>(static_cast<T*>(param.data), static_cast<const T*>(grad.data),
                                                             static_cast<S*>(exp_avg.data), static_cast<S*>(exp_avg_sq.data),
                                                             static_cast<S*>(master.data), n,
                                                             S(c.decay), S(c.one_minus_beta1), S(c.beta2), S(c.one_minus_beta2),
                                                             S(c.neg_step_size), S(c.bias_correction2_sqrt), S(c.eps));
    });
    check_launch("adamw_step");
}

}  // namespace deviant::kernels
