// deviant/kernels/grad_norm.cuh — sum of squares of a contiguous floating tensor in double, for
// optim/clip.hpp. Deterministic: pass 1 writes one partial sum per block (grid capped at 1024
// blocks), pass 2 sums the partials in one block; no atomics, so the result is reproducible.
#pragma once
#include "deviant/core/allocator.hpp"
#include "deviant/kernels/common.cuh"

namespace deviant::kernels {

template <class T>
__global__ void sum_of_squares_partial_kernel(const T* x, std::int64_t n, double* partial) {
    double acc = 0.0;
    DEVIANT_GRID_STRIDE(i, n) {
        double v = double(ld(x[i]));
        acc += v * v;
    }
    acc = block_sum<double>(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void sum_partials_kernel(const double* partial, unsigned count, double* out) {
    double acc = 0.0;
    for (unsigned i = threadIdx.x; i < count; i += blockDim.x) acc += partial[i];
    acc = block_sum<double>(acc);
    if (threadIdx.x == 0) *out = acc;
}

void sum_of_squares(const TensorRef& x, double& result) {
    result = 0.0;
    if (!x.contiguous()) ::deviant::fail("sum_of_squares: input must be contiguous");
    std::int64_t n = x.numel();
    if (n == 0) return;
    constexpr int threads = 256;
    unsigned blocks = blocks_for(n, threads);
    if (blocks > 1024) blocks = 1024;
    auto& alloc = CudaCachingAllocator::instance();
    double* scratch = static_cast<double*>(alloc.allocate(sizeof(double) * (blocks + 1)));
    struct Release {
        double* p;
        ~Release() { CudaCachingAllocator::instance().deallocate(p); }
    } release{scratch};
    dispatch_float(x.dtype, [&](auto tag) {
        using T = decltype(tag);
        sum_of_squares_partial_kernel<T><<<blocks, threads>>>(static_cast<const T*>(x.data), n, scratch);
    });
    check_launch("sum_of_squares (partial sums)");
    sum_partials_kernel<<<1, 1024>>>(scratch, blocks, scratch + blocks);
    check_launch("sum_of_squares (final sum)");
    DEVIANT_CUDA_CHECK(cudaMemcpy(&result, scratch + blocks, sizeof(double), cudaMemcpyDeviceToHost));
}

}  // namespace deviant::kernels
