// deviant/kernels/segment.cuh — CUDA kernels for ops/segment.hpp: segment_sum over positions
// grouped by segment (one block per segment, fixed reduction tree: deterministic) and its
// gather backward. CPU references: ops::segment_sum and ops::segment_sum_backward.
#pragma once
#include "deviant/kernels/common.cuh"

namespace deviant::kernels {

// Block b sums segments b, b + gridDim.x, ...: each thread accumulates a strided share of the
// segment's positions in the compute type, then block_sum combines the shares in a fixed order.
template <class T>
__global__ void segment_sum_forward_kernel(const T* x, const std::int64_t* order, const std::int64_t* offsets, T* out,
                                           std::int64_t num_segments) {
    using C = compute_of_t<T>;
    for (std::int64_t s = blockIdx.x; s < num_segments; s += gridDim.x) {
        const std::int64_t begin = offsets[s], end = offsets[s + 1];
        C acc = C(0);
        for (std::int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) acc += C(ld(x[order[j]]));
        acc = block_sum(acc);
        if (threadIdx.x == 0) out[s] = st<T>(acc);
    }
}

template <class T>
__global__ void segment_sum_backward_kernel(const T* dy, const std::int64_t* ids, T* dx, std::int64_t n) {
    using C = compute_of_t<T>;
    DEVIANT_GRID_STRIDE(i, n) {
        const std::int64_t s = ids[i];
        dx[i] = s >= 0 ? dy[s] : st<T>(C(0));
    }
}

void segment_sum_forward(const TensorRef& x, const TensorRef& order, const TensorRef& offsets, const TensorRef& out) {
    const std::int64_t num_segments = out.numel();
    if (num_segments == 0) return;
    const unsigned blocks = unsigned(num_segments < 65535 * 32 ? num_segments : 65535 * 32);
    dispatch_float(x.dtype, [&](auto tag) {
        using T = decltype(tag);
        segment_sum_forward_kernel<T><<<blocks, 256>>>(static_cast<const T*>(x.data), static_cast<const std::int64_t*>(order.data),
                                                       static_cast<const std::int64_t*>(offsets.data), static_cast<T*>(out.data),
                                                       num_segments);
    });
    check_launch("segment_sum_forward");
}

void segment_sum_backward(const TensorRef& dy, const TensorRef& ids, const TensorRef& dx) {
    const std::int64_t n = dx.numel();
    if (n == 0) return;
    dispatch_float(dy.dtype, [&](auto tag) {
        using T = decltype(tag);
        segment_sum_backward_kernel<T><<<blocks_for(n, 256), 256>>>(static_cast<const T*>(dy.data),
                                                                    static_cast<const std::int64_t*>(ids.data),
                                                                    static_cast<T*>(dx.data), n);
    });
    check_launch("segment_sum_backward");
}

}  // namespace deviant::kernels
