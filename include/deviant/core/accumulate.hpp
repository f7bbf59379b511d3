// deviant/core/accumulate.hpp — dst += src for same-shaped tensors: the one arithmetic the tape
// itself needs (gradient accumulation), kept here so the tape does not depend on the op library.
#pragma once
#include "deviant/core/tensor.hpp"

namespace deviant {

inline void add_into(Tensor& dst, const Tensor& src) {
    require_same(dst, src, "gradient accumulation");
    DEVIANT_REQUIRE(dst.is_contiguous(), "gradient accumulation into non-contiguous {}", dst.describe());
    if (dst.numel() == 0) return;
    if (dst.device() == Device::cuda) {
        kernels::binary_forward(kernels::BinaryOp::add, dst.ref(), src.contiguous().ref(), dst.ref());
        return;
    }
    Tensor s = src.contiguous();
    DEVIANT_DISPATCH_FLOAT(dst.dtype(), T, [&] {
        T* d = dst.data<T>();
        const T* p = s.data<T>();
        for (std::int64_t i = 0, n = dst.numel(); i < n; ++i) d[i] = store<T>(load(d[i]) + load(p[i]));
    });
}

}  // namespace deviant
