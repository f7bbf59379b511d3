// deviant/kernels/shape.cuh — CUDA kernel for ops/shape.hpp: copy into a strided destination
// view (the backward of narrow/slice/select and the forward of concat write through it).
// CPU reference: ops::copy_into in ops/shape.hpp.
#pragma once
#include "deviant/kernels/common.cuh"

namespace deviant::kernels {

// One thread per element; both sides strided. U is an unsigned type of the element's size.
template <class U>
__global__ void copy_into_strided_kernel(U* dst, TensorRef d, const U* src, TensorRef s, std::int64_t n) {
    DEVIANT_GRID_STRIDE(i, n) { dst[strided_offset(d, i)] = src[strided_offset(s, i)]; }
}

void copy_into_strided(const TensorRef& dst, const TensorRef& src) {
    std::int64_t n = src.numel();
    if (n == 0) return;
    auto run = [&](auto tag) {
        using U = decltype(tag);
        copy_into_strided_kernel<U><<<blocks_for(n, 256), 256>>>(static_cast<U*>(dst.data), dst, static_cast<const U*>(src.data), src, n);
    };
    switch (dtype_size(src.dtype)) {
        case 1: run(std::uint8_t{}); break;
        case 2: run(std::uint16_t{}); break;
        case 4: run(std::uint32_t{}); break;
        default: run(std::uint64_t{}); break;
    }
    check_launch("copy_into_strided");
}

}  // namespace deviant::kernels
