// deviant/kernels/copy.cuh — strided copy with dtype conversion, and fill.
// CPU reference: Tensor::copy_from / Tensor::fill_ in core/tensor.hpp.
#pragma once
#include "deviant/kernels/common.cuh"

namespace deviant::kernels {

template <class D, class S>
__global__ void copy_strided_kernel(D* dst, const S* src, TensorRef s, std::int64_t n) {
    DEVIANT_GRID_STRIDE(i, n) { dst[i] = st<D>(compute_of_t<D>(ld(src[strided_offset(s, i)]))); }
}
template <class D>
__global__ void fill_kernel(D* dst, double v, std::int64_t n) {
    DEVIANT_GRID_STRIDE(i, n) { dst[i] = st<D>(compute_of_t<D>(v)); }
}

void copy_strided(const TensorRef& dst, const TensorRef& src) {
    std::int64_t n = src.numel();
    if (n == 0) return;
    dispatch_any(dst.dtype, [&](auto d) {
        dispatch_any(src.dtype, [&](auto s) {
            using D = decltype(d);
            using S = decltype(s);
            copy_strided_kernel<D, S><<<blocks_for(n, 256), 256>>>(static_cast<D*>(dst.data), static_cast<const S*>(src.data), src, n);
        });
    });
    check_launch("copy_strided");
}

void fill(const TensorRef& dst, double value) {
    std::int64_t n = dst.numel();
    if (n == 0) return;
    dispatch_any(dst.dtype, [&](auto d) {
        using D = decltype(d);
        fill_kernel<D><<<blocks_for(n, 256), 256>>>(static_cast<D*>(dst.data), value, n);
    });
    check_launch("fill");
}

}  // namespace deviant::kernels
