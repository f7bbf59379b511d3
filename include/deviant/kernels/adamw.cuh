// deviant/kernels/adamw.cuh — the CUDA AdamW update of optim/adamw.hpp: one grid-stride launch
// per parameter, math in the state type (float for f32/bf16 parameters, double for f64), the
// parameter rounded back to nearest-even for bf16. adamw_step_many updates many float32-state
// parameters in one launch; with a float32 master copy (mixed precision, bf16 parameters) the
// update runs on the master and the bf16 weight is rewritten from it. A bf16 parameter's
// gradient may be float32 (Parameter::grad_dtype) or bf16. The formula is
// optim/adamw_math.hpp's.
#pragma once
#include "deviant/kernels/common.cuh"
#include "deviant/optim/adamw_math.hpp"

#include <algorithm>

namespace deviant::kernels {

template <class T, class S>
__global__ void adamw_step_kernel(T* param, const T* grad, S* exp_avg, S* exp_avg_sq, std::int64_t n, S decay, S w1, S beta2,
                                  S one_minus_beta2, S neg_step_size, S bias_correction2_sqrt, S eps) {
    DEVIANT_GRID_STRIDE(i, n) {
        S p = S(ld(param[i]));
        S m = exp_avg[i], v = exp_avg_sq[i];
        optim::adamw_update<S>(p, S(ld(grad[i])), m, v, decay, w1, beta2, one_minus_beta2, neg_step_size, bias_correction2_sqrt, eps);
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        param[i] = st<T>(p);
    }
}

void adamw_step(const TensorRef& param, const TensorRef& grad, const TensorRef& exp_avg, const TensorRef& exp_avg_sq,
                const optim::AdamWCoefficients& c) {
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
                                                             static_cast<S*>(exp_avg.data), static_cast<S*>(exp_avg_sq.data), n,
                                                             S(c.decay), S(c.one_minus_beta1), S(c.beta2), S(c.one_minus_beta2),
                                                             S(c.neg_step_size), S(c.bias_correction2_sqrt), S(c.eps));
    });
    check_launch("adamw_step");
}

// Multi-tensor update: up to kTensors float32-state parameters per launch, passed by value; the
// blocks [block_begin[t], block_begin[t + 1]) stride over tensor t. One launch for ~40 parameters
// instead of one each (the optimizer step of a small model is launch-bound).
struct AdamWTable {
    static constexpr int kTensors = 36;
    optim::AdamWTensorF32 t[kTensors];
    int block_begin[kTensors + 1];
    int count;
};

__global__ void adamw_step_many_kernel(AdamWTable table) {
    int k = 0;
    while (k + 1 < table.count && int(blockIdx.x) >= table.block_begin[k + 1]) ++k;  // uniform per block
    const optim::AdamWTensorF32& e = table.t[k];
    const std::int64_t block = std::int64_t(blockIdx.x) - table.block_begin[k];
    const std::int64_t stride = std::int64_t(table.block_begin[k + 1] - table.block_begin[k]) * blockDim.x;
    for (std::int64_t i = block * blockDim.x + threadIdx.x; i < e.n; i += stride) {
        float p = e.bf16 ? (e.master ? e.master[i] : ld(static_cast<const __nv_bfloat16*>(e.param)[i]))
                         : static_cast<const float*>(e.param)[i];
        float g = e.grad_bf16 ? ld(static_cast<const __nv_bfloat16*>(e.grad)[i]) : static_cast<const float*>(e.grad)[i];
        float m = e.exp_avg[i], v = e.exp_avg_sq[i];
        optim::adamw_update<float>(p, g, m, v, e.decay, e.one_minus_beta1, e.beta2, e.one_minus_beta2, e.neg_step_size,
                                   e.bias_correction2_sqrt, e.eps);
        e.exp_avg[i] = m;
        e.exp_avg_sq[i] = v;
        if (e.bf16) {
            if (e.master) e.master[i] = p;
            static_cast<__nv_bfloat16*>(e.param)[i] = __float2bfloat16(p);
        } else {
            static_cast<float*>(e.param)[i] = p;
        }
    }
}

void adamw_step_many(const optim::AdamWTensorF32* tensors, std::int64_t count) {
    constexpr int threads = 256, max_blocks_per_tensor = 1024;
    for (std::int64_t i = 0; i < count;) {
        AdamWTable table{};
        int blocks = 0;
        table.count = 0;
        for (; i < count && table.count < AdamWTable::kTensors; ++i) {
            const std::int64_t n = tensors[i].n;
            if (n == 0) continue;
            table.t[table.count] = tensors[i];
            table.block_begin[table.count] = blocks;
            blocks += int(std::min<std::int64_t>((n + threads - 1) / threads, max_blocks_per_tensor));
            ++table.count;
        }
        if (table.count == 0) continue;
        table.block_begin[table.count] = blocks;
        adamw_step_many_kernel<<<unsigned(blocks), threads>>>(table);
        check_launch("adamw_step_many");
    }
}

}  // namespace deviant::kernels
