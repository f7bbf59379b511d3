// deviant/kernels/reduce.cuh — CUDA kernels for ops/reduce.hpp: sum / mean / max (with argmax)
// along one axis of a contiguous tensor viewed as (outer, n, inner), and the max backward scatter.
// inner == 1 (reducing the last axis): one block per row with block reductions;
// otherwise one thread per output element walking n with coalesced reads across inner.
#pragma once
#include "deviant/kernels/api.hpp"
#include "deviant/kernels/common.cuh"
#include "deviant/ops/reduce_math.hpp"

namespace deviant::kernels {

template <class C> __device__ __forceinline__ C lowest_value() {
    if constexpr (std::is_same_v<C, double>) return __longlong_as_double((long long)0xfff0000000000000ULL);  // -inf
    else return __int_as_float(int(0xff800000u));
}

// (value, index) maximum over a block under math::max_better; every thread gets the result.
template <class C>
__device__ void block_argmax(C& v, std::int64_t& idx) {
    __shared__ C shared_v[32];
    __shared__ long long shared_i[32];
    long long i = idx;
    for (int o = 16; o > 0; o >>= 1) {
        C ov = __shfl_xor_sync(0xffffffff, v, o);
        long long oi = __shfl_xor_sync(0xffffffff, i, o);
        if (math::max_better<C>(ov, oi, v, i)) v = ov, i = oi;
    }
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    __syncthreads();
    if (lane == 0) shared_v[warp] = v, shared_i[warp] = i;
    __syncthreads();
    int nw = blockDim.x / 32;
    v = lane < nw ? shared_v[lane] : shared_v[0];
    i = lane < nw ? shared_i[lane] : shared_i[0];
    for (int o = 16; o > 0; o >>= 1) {
        C ov = __shfl_xor_sync(0xffffffff, v, o);
        long long oi = __shfl_xor_sync(0xffffffff, i, o);
        if (math::max_better<C>(ov, oi, v, i)) v = ov, i = oi;
    }
    idx = i;
}

// inner == 1: block b reduces rows b, b + gridDim.x, ...
template <class T>
__global__ void reduce_rows_kernel(ReduceOp op, const T* x, T* y, std::int64_t* argmax, std::int64_t outer, std::int64_t n) {
    using C = compute_of_t<T>;
    for (std::int64_t r = blockIdx.x; r < outer; r += gridDim.x) {
        const T* row = x + r * n;
        if (op == ReduceOp::max) {
            C best = lowest_value<C>();
            std::int64_t bi = INT64_MAX;
            for (std::int64_t j = threadIdx.x; j < n; j += blockDim.x) {
                C v = ld(row[j]);
                if (math::max_better<C>(v, j, best, bi)) best = v, bi = j;
            }
            block_argmax(best, bi);
            if (threadIdx.x == 0) {
                y[r] = st<T>(best);
                argmax[r] = bi;
            }
        } else {
            C acc = C(0);
            for (std::int64_t j = threadIdx.x; j < n; j += blockDim.x) acc += ld(row[j]);
            acc = block_sum(acc);
            if (op == ReduceOp::mean) acc /= C(n);
            if (threadIdx.x == 0) y[r] = st<T>(acc);
        }
    }
}

// inner > 1: one thread per (outer, inner) output.
template <class T>
__global__ void reduce_inner_kernel(ReduceOp op, const T* x, T* y, std::int64_t* argmax, std::int64_t outer, std::int64_t n,
                                    std::int64_t inner) {
    using C = compute_of_t<T>;
    DEVIANT_GRID_STRIDE(out, outer * inner) {
        std::int64_t o = out / inner, in = out % inner;
        const T* col = x + o * n * inner + in;
        if (op == ReduceOp::max) {
            C best = ld(col[0]);
            std::int64_t bi = 0;
            for (std::int64_t j = 1; j < n; ++j) {
                C v = ld(col[j * inner]);
                if (math::max_better<C>(v, j, best, bi)) best = v, bi = j;
            }
            y[out] = st<T>(best);
            argmax[out] = bi;
        } else {
            C acc = C(0);
            for (std::int64_t j = 0; j < n; ++j) acc += ld(col[j * inner]);
            if (op == ReduceOp::mean) acc /= C(n);
            y[out] = st<T>(acc);
        }
    }
}

template <class T>
__global__ void reduce_max_backward_kernel(const T* dy, const std::int64_t* argmax, T* dx, std::int64_t n, std::int64_t inner,
                                           std::int64_t total) {
    using C = compute_of_t<T>;
    DEVIANT_GRID_STRIDE(i, total) {
        std::int64_t in = i % inner, j = (i / inner) % n, o = i / (inner * n);
        std::int64_t out = o * inner + in;
        dx[i] = argmax[out] == j ? dy[out] : st<T>(C(0));
    }
}

void reduce_axis(ReduceOp op, const TensorRef& x, const TensorRef& y, const TensorRef& argmax, std::int64_t outer, std::int64_t n,
                 std::int64_t inner) {
    if (outer * inner == 0) return;
    DEVIANT_REQUIRE(op != ReduceOp::max || (argmax.data != nullptr && argmax.dtype == DType::i64),
                    "reduce_axis: max needs an int64 argmax output");
    DEVIANT_REQUIRE(op != ReduceOp::max || n > 0, "reduce_axis: max over an empty axis");
    auto* pi = static_cast<std::int64_t*>(argmax.data);
    dispatch_float(x.dtype, [&](auto tag) {
        using T = decltype(tag);
        const T* px = static_cast<const T*>(x.data);
        T* py = static_cast<T*>(y.data);
        if (inner == 1) {
            int threads = n >= 256 ? 256 : int((n + 31) / 32 * 32);
            if (threads < 32) threads = 32;
            unsigned blocks = unsigned(outer < (1 << 20) ? outer : (1 << 20));
            reduce_rows_kernel<T><<<blocks, threads>>>(op, px, py, pi, outer, n);
        } else {
            reduce_inner_kernel<T><<<blocks_for(outer * inner, 256), 256>>>(op, px, py, pi, outer, n, inner);
        }
    });
    check_launch("reduce_axis");
}

void reduce_max_backward(const TensorRef& dy, const TensorRef& argmax, const TensorRef& dx, std::int64_t outer, std::int64_t n,
                         std::int64_t inner) {
    std::int64_t total = outer * n * inner;
    if (total == 0) return;
    dispatch_float(dy.dtype, [&](auto tag) {
        using T = decltype(tag);
        reduce_max_backward_kernel<T><<<blocks_for(total, 256), 256>>>(static_cast<const T*>(dy.data),
                                                                      static_cast<const std::int64_t*>(argmax.data),
                                                                      static_cast<T*>(dx.data), n, inner, total);
    });
    check_launch("reduce_max_backward");
}

}  // namespace deviant::kernels
