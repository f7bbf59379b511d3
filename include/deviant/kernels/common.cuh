// deviant/kernels/common.cuh — shared CUDA plumbing: device element types, load/store in the
// compute type, strided offsets from a TensorRef, launch-error checks and block reductions.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "deviant/core/cuda_runtime.hpp"
#include "deviant/core/tensor_ref.hpp"

namespace deviant::kernels {

// Checks the launch that was just made (configuration errors, and faults when DEVIANT_CUDA_SYNC is set).
inline void check_launch(const char* what) {
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) ::deviant::fail("CUDA kernel {} failed to launch: {}", what, cudaGetErrorString(e));
#ifdef DEVIANT_CUDA_SYNC
    e = cudaDeviceSynchronize();
    if (e != cudaSuccess) ::deviant::fail("CUDA kernel {} failed: {}", what, cudaGetErrorString(e));
#endif
}

inline unsigned blocks_for(std::int64_t n, int threads) {
    std::int64_t b = (n + threads - 1) / threads;
    return unsigned(b < 65535 * 32 ? (b > 0 ? b : 1) : 65535 * 32);
}

template <class T> struct compute_of { using type = T; };
template <> struct compute_of<__nv_bfloat16> { using type = float; };
template <class T> using compute_of_t = typename compute_of<T>::type;

// Load / store converters. __host__ too: launchers convert fill values on the host (a __device__-only
// function called from host code through a generic lambda compiles, and exits the process at run time).
__host__ __device__ __forceinline__ float ld(float v) { return v; }
__host__ __device__ __forceinline__ double ld(double v) { return v; }
__host__ __device__ __forceinline__ float ld(__nv_bfloat16 v) { return __bfloat162float(v); }
__host__ __device__ __forceinline__ std::int64_t ld(std::int64_t v) { return v; }
__host__ __device__ __forceinline__ std::uint8_t ld(std::uint8_t v) { return v; }

template <class T, class C> __host__ __device__ __forceinline__ T st(C v) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16(float(v));
    else return T(v);
}

// Element offset of the i-th element (row-major order) of a strided ref.
__device__ __forceinline__ std::int64_t strided_offset(const TensorRef& r, std::int64_t i) {
    std::int64_t off = 0;
    for (int k = r.rank - 1; k >= 0; --k) {
        std::int64_t e = r.shape[k];
        off += (i % e) * r.strides[k];
        i /= e;
    }
    return off;
}

#define DEVIANT_GRID_STRIDE(i, n) \
    for (std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += std::int64_t(gridDim.x) * blockDim.x)

// Runs f with T bound to the device storage type of a floating dtype.
template <class F>
void dispatch_float(DType t, F&& f) {
    switch (t) {
        case DType::f32: f(float{}); break;
        case DType::f64: f(double{}); break;
        case DType::bf16: f(__nv_bfloat16{}); break;
        default: ::deviant::fail("CUDA kernel: expected a floating dtype, got {}", dtype_name(t));
    }
}
template <class F>
void dispatch_any(DType t, F&& f) {
    switch (t) {
        case DType::f32: f(float{}); break;
        case DType::f64: f(double{}); break;
        case DType::bf16: f(__nv_bfloat16{}); break;
        case DType::i64: f(std::int64_t{}); break;
        case DType::u8: f(std::uint8_t{}); break;
    }
}

// Sum over a block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
template <class C>
__device__ C block_sum(C v) {
    __shared__ C shared[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    int nw = blockDim.x / 32;
    v = lane < nw ? shared[lane] : C(0);
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}
template <class C>
__device__ C block_max(C v) {
    __shared__ C shared[32];
    for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffff, v, o));
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    int nw = blockDim.x / 32;
    v = lane < nw ? shared[lane] : shared[0];
    for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}

}  // namespace deviant::kernels
