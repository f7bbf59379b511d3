// deviant/kernels/softmax.cuh — CUDA kernels for ops/softmax.hpp: softmax / log_softmax of
// contiguous (rows, cols) data and their backward. One block per row (a single warp for rows of
// at most 32), block reductions from common.cuh, accumulation in the compute type.
#pragma once
#include "deviant/kernels/common.cuh"

namespace deviant::kernels {

template <class C> __device__ __forceinline__ C negative_infinity() {
    if constexpr (std::is_same_v<C, double>) return __longlong_as_double((long long)0xfff0000000000000ULL);
    else return __int_as_float(int(0xff800000u));
}

template <class T>
__global__ void softmax_forward_kernel(const T* x, T* y, std::int64_t rows, std::int64_t cols, bool log) {
    using C = compute_of_t<T>;
    for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* px = x + r * cols;
        T* py = y + r * cols;
        C m = negative_infinity<C>();
        for (std::int64_t j = threadIdx.x; j < cols; j += blockDim.x) m = max(m, ld(px[j]));
        m = block_max(m);
        C s = C(0);
        for (std::int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += exp(ld(px[j]) - m);
        s = block_sum(s);
        if (log) {
            C log_s = ::log(s);
            for (std::int64_t j = threadIdx.x; j < cols; j += blockDim.x) py[j] = st<T>((ld(px[j]) - m) - log_s);
        } else {
            C inv = C(1) / s;
            for (std::int64_t j = threadIdx.x; j < cols; j += blockDim.x) py[j] = st<T>(exp(ld(px[j]) - m) * inv);
        }
    }
}

template <class T>
__global__ void softmax_backward_kernel(const T* y, const T* dy, T* dx, std::int64_t rows, std::int64_t cols, bool log) {
    using C = compute_of_t<T>;
    for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* py = y + r * cols;
        const T* pg = dy + r * cols;
        T* pd = dx + r * cols;
        C s = C(0);
        for (std::int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += log ? ld(pg[j]) : ld(pg[j]) * ld(py[j]);
        s = block_sum(s);
        for (std::int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
            C yj = ld(py[j]), gj = ld(pg[j]);
            pd[j] = st<T>(log ? gj - exp(yj) * s : yj * (gj - s));
        }
    }
}

inline void softmax_launch_shape(std::int64_t rows, std::int64_t cols, unsigned& blocks, int& threads) {
    threads = cols <= 32 ? 32 : cols >= 1024 ? 512 : int((cols + 63) / 64 * 32);  // about two elements per thread
    if (threads < 32) threads = 32;
    blocks = unsigned(rows < (1 << 20) ? rows : (1 << 20));
}

void softmax_forward(const TensorRef& x, const TensorRef& y, std::int64_t rows, std::int64_t cols, bool log) {
    if (rows == 0 || cols == 0) return;
    unsigned blocks;
    int threads;
    softmax_launch_shape(rows, cols, blocks, threads);
    dispatch_float(x.dtype, [&](auto tag) {
        using T = decltype(tag);
        softmax_forward_kernel<T><<<blocks, threads>>>(static_cast<const T*>(x.data), static_cast<T*>(y.data), rows, cols, log);
    });
    check_launch("softmax_forward");
}

void softmax_backward(const TensorRef& y, const TensorRef& dy, const TensorRef& dx, std::int64_t rows, std::int64_t cols, bool log) {
    if (rows == 0 || cols == 0) return;
    unsigned blocks;
    int threads;
    softmax_launch_shape(rows, cols, blocks, threads);
    dispatch_float(y.dtype, [&](auto tag) {
        using T = decltype(tag);
        softmax_backward_kernel<T><<<blocks, threads>>>(static_cast<const T*>(y.data), static_cast<const T*>(dy.data),
                                                        static_cast<T*>(dx.data), rows, cols, log);
    });
    check_launch("softmax_backward");
}

}  // namespace deviant::kernels
