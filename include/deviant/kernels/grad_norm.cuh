// deviant/kernels/grad_norm.cuh — sum of squares of contiguous floating tensors in double, for
// optim/clip.hpp. Deterministic: pass 1 writes one partial sum per block (grid capped at 1024
// blocks), pass 2 sums the partials in one block; no atomics, so the result is reproducible.
// sum_of_squares_many does the same over a list of tensors (a model's gradients) with one
// pass-1 launch per group of up to 64 tensors (each block finds its tensor in a table passed by
// value), one final launch and one copy back: a single host synchronisation per global norm.
#pragma once
#include "deviant/core/allocator.hpp"
#include "deviant/kernels/common.cuh"

#include <algorithm>
#include <vector>

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

// Up to kMaxTensors tensors for one pass-1 launch; blocks [block_begin[t], block_begin[t+1]) cover tensor t.
struct SquaresTable {
    static constexpr int kMaxTensors = 64;
    const void* data[kMaxTensors];
    std::int64_t n[kMaxTensors];
    int dtype[kMaxTensors];
    int block_begin[kMaxTensors + 1];
    int count;
};

template <class T>
__device__ double block_squares(const T* x, std::int64_t n, std::int64_t block, std::int64_t blocks) {
    double acc = 0.0;
    for (std::int64_t i = block * blockDim.x + threadIdx.x; i < n; i += blocks * blockDim.x) {
        double v = double(ld(x[i]));
        acc += v * v;
    }
    return acc;
}

__global__ void sum_of_squares_table_kernel(SquaresTable table, double* partial) {
    int t = 0;
    while (t + 1 < table.count && int(blockIdx.x) >= table.block_begin[t + 1]) ++t;  // uniform per block
    const std::int64_t block = std::int64_t(blockIdx.x) - table.block_begin[t];
    const std::int64_t blocks = table.block_begin[t + 1] - table.block_begin[t];
    double acc = 0.0;
    switch (table.dtype[t]) {
        case int(DType::f32): acc = block_squares(static_cast<const float*>(table.data[t]), table.n[t], block, blocks); break;
        case int(DType::f64): acc = block_squares(static_cast<const double*>(table.data[t]), table.n[t], block, blocks); break;
        case int(DType::bf16): acc = block_squares(static_cast<const __nv_bfloat16*>(table.data[t]), table.n[t], block, blocks); break;
        default: break;
    }
    acc = block_sum<double>(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

void sum_of_squares_many(const TensorRef* xs, std::int64_t count, double& result) {
    result = 0.0;
    constexpr int threads = 256, max_blocks_per_tensor = 256;
    // Blocks per tensor, then the partial-sum layout over all tensors.
    std::vector<int> blocks(static_cast<std::size_t>(count));
    std::int64_t total_blocks = 0;
    for (std::int64_t i = 0; i < count; ++i) {
        if (!xs[i].contiguous()) ::deviant::fail("sum_of_squares_many: tensor {} of {} is not contiguous", i, count);
        if (!is_floating(xs[i].dtype)) ::deviant::fail("sum_of_squares_many: tensor {} of {} is {}", i, count, dtype_name(xs[i].dtype));
        std::int64_t n = xs[i].numel();
        std::int64_t b = n == 0 ? 0 : std::min<std::int64_t>((n + threads - 1) / threads, max_blocks_per_tensor);
        blocks[std::size_t(i)] = int(b);
        total_blocks += b;
    }
    if (total_blocks == 0) return;
    auto& alloc = CudaCachingAllocator::instance();
    double* scratch = static_cast<double*>(alloc.allocate(sizeof(double) * std::size_t(total_blocks + 1)));
    struct Release {
        double* p;
        ~Release() { CudaCachingAllocator::instance().deallocate(p); }
    } release{scratch};
    std::int64_t offset = 0;
    for (std::int64_t i = 0; i < count;) {
        SquaresTable table{};
        int launch_blocks = 0;
        table.count = 0;
        for (; i < count && table.count < SquaresTable::kMaxTensors; ++i) {
            if (blocks[std::size_t(i)] == 0) continue;
            table.data[table.count] = xs[i].data;
            table.n[table.count] = xs[i].numel();
            table.dtype[table.count] = int(xs[i].dtype);
            table.block_begin[table.count] = launch_blocks;
            launch_blocks += blocks[std::size_t(i)];
            ++table.count;
        }
        if (table.count == 0) continue;
        table.block_begin[table.count] = launch_blocks;
        sum_of_squares_table_kernel<<<unsigned(launch_blocks), threads>>>(table, scratch + offset);
        check_launch("sum_of_squares_many (partial sums)");
        offset += launch_blocks;
    }
    sum_partials_kernel<<<1, 1024>>>(scratch, unsigned(total_blocks), scratch + total_blocks);
    check_launch("sum_of_squares_many (final sum)");
    DEVIANT_CUDA_CHECK(cudaMemcpy(&result, scratch + total_blocks, sizeof(double), cudaMemcpyDeviceToHost));
}

}  // namespace deviant::kernels
