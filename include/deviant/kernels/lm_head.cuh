// deviant/kernels/lm_head.cuh — CUDA kernels for ops/lm_head.hpp. The chunk logits themselves
// come from cuBLASLt (ops::matmul); these kernels do the rest: fold a chunk into each row's
// running log-sum-exp (one block per row, block reductions), turn the running state into
// log-probabilities, and overwrite a recomputed chunk of logits with its gradient (element-wise).
// Logits and state are in the compute type (float for float32/bfloat16, double for float64).
#pragma once
#include "deviant/kernels/common.cuh"
#include "deviant/kernels/softmax.cuh"  // negative_infinity

namespace deviant::kernels {

template <class C>
__global__ void lm_head_update_kernel(const C* z, const std::int64_t* targets, C* state, std::int64_t rows, std::int64_t cols,
                                      std::int64_t v0) {
    for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const C* zr = z + r * cols;
        C* s = state + 3 * r;
        C m = negative_infinity<C>();
        for (std::int64_t j = threadIdx.x; j < cols; j += blockDim.x) m = max(m, zr[j]);
        m = block_max(m);
        const C old_m = s[0], new_m = max(old_m, m);  // read by all before thread 0 writes (block_sum syncs)
        if (new_m == negative_infinity<C>()) continue;  // uniform across the block: every logit so far is -inf
        C sum = C(0);
        for (std::int64_t j = threadIdx.x; j < cols; j += blockDim.x) sum += exp(zr[j] - new_m);
        sum = block_sum(sum);
        if (threadIdx.x == 0) {
            s[1] = s[1] * exp(old_m - new_m) + sum;
            s[0] = new_m;
            std::int64_t t = targets[r] - v0;
            if (t >= 0 && t < cols) s[2] = zr[t];
        }
    }
}

template <class T>
__global__ void lm_head_finish_kernel(const compute_of_t<T>* state, T* logprobs, compute_of_t<T>* lse, std::int64_t n) {
    using C = compute_of_t<T>;
    DEVIANT_GRID_STRIDE(i, n) {
        const C m = state[3 * i], log_s = ::log(state[3 * i + 1]);
        logprobs[i] = st<T>((state[3 * i + 2] - m) - log_s);
        lse[i] = m + log_s;
    }
}

template <class C>
__global__ void lm_head_logit_grad_kernel(C* z, const std::int64_t* targets, const C* lse, const C* dy, std::int64_t rows,
                                          std::int64_t cols, std::int64_t v0) {
    DEVIANT_GRID_STRIDE(i, rows * cols) {
        const std::int64_t r = i / cols, j = i % cols;
        const C d = dy[r];
        C g = -d * exp(z[i] - lse[r]);
        if (targets[r] - v0 == j) g += d;
        z[i] = g;
    }
}

template <class F>
void dispatch_compute(DType t, F&& f) {
    switch (t) {
        case DType::f32: f(float{}); break;
        case DType::f64: f(double{}); break;
        default: ::deviant::fail("lm_head kernel: expected float32 or float64 work data, got {}", dtype_name(t));
    }
}

void lm_head_update(const TensorRef& logits, const TensorRef& targets, const TensorRef& state, std::int64_t rows, std::int64_t cols,
                    std::int64_t v0) {
    if (rows == 0 || cols == 0) return;
    unsigned blocks;
    int threads;
    softmax_launch_shape(rows, cols, blocks, threads);
    dispatch_compute(logits.dtype, [&](auto tag) {
        using C = decltype(tag);
        lm_head_update_kernel<C><<<blocks, threads>>>(static_cast<const C*>(logits.data), static_cast<const std::int64_t*>(targets.data),
                                                      static_cast<C*>(state.data), rows, cols, v0);
    });
    check_launch("lm_head_update");
}

void lm_head_finish(const TensorRef& state, const TensorRef& logprobs, const TensorRef& lse, std::int64_t n) {
    if (n == 0) return;
    dispatch_float(logprobs.dtype, [&](auto tag) {
        using T = decltype(tag);
        using C = compute_of_t<T>;
        lm_head_finish_kernel<T><<<blocks_for(n, 256), 256>>>(static_cast<const C*>(state.data), static_cast<T*>(logprobs.data),
                                                              static_cast<C*>(lse.data), n);
    });
    check_launch("lm_head_finish");
}

void lm_head_logit_grad(const TensorRef& logits, const TensorRef& targets, const TensorRef& lse, const TensorRef& dy, std::int64_t rows,
                        std::int64_t cols, std::int64_t v0) {
    if (rows == 0 || cols == 0) return;
    dispatch_compute(logits.dtype, [&](auto tag) {
        using C = decltype(tag);
        lm_head_logit_grad_kernel<C><<<blocks_for(rows * cols, 256), 256>>>(
            static_cast<C*>(logits.data), static_cast<const std::int64_t*>(targets.data), static_cast<const C*>(lse.data),
            static_cast<const C*>(dy.data), rows, cols, v0);
    });
    check_launch("lm_head_logit_grad");
}

}  // namespace deviant::kernels
