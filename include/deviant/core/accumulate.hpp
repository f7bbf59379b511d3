// deviant/core/accumulate.hpp — dst += src for same-shaped tensors: the one arithmetic the tape
// itself needs (gradient accumulation), kept here so the tape does not depend on the op library.
// The dtypes may differ (a bf16 gradient added into a parameter's float32 gradient): the sum is
// formed in float32 (float64 if either is) and rounded once, to dst's dtype.
#pragma once
#include "deviant/core/tensor.hpp"

namespace deviant {

inline void add_into(Tensor& dst, const Tensor& src) {
    DEVIANT_REQUIRE(dst.shape() == src.shape(), "gradient accumulation: shape mismatch {} vs {}", dst.shape().str(), src.shape().str());
    require_same_device(dst, src, "gradient accumulation");
    DEVIANT_REQUIRE(is_floating(dst.dtype()) && is_floating(src.dtype()), "gradient accumulation of {} into {}", src.describe(),
                    dst.describe());
    DEVIANT_REQUIRE(dst.is_contiguous(), "gradient accumulation into non-contiguous {}", dst.describe());
    if (dst.numel() == 0) return;
    if (dst.device() == Device::cuda) {
        const Tensor s = src.dtype() == dst.dtype() ? src.contiguous() : src.to(dst.dtype());
        kernels::binary_forward(kernels::BinaryOp::add, dst.ref(), s.ref(), dst.ref());
        return;
    }
    Tensor s = src.contiguous();
    DEVIANT_DISPATCH_FLOAT(dst.dtype(), T, [&] {
        DEVIANT_DISPATCH_FLOAT(s.dtype(), U, [&] {
            using Sum = common_compute_t<T, U>;
            T* d = dst.data<T>();
            const U* p = s.data<U>();
            for (std::int64_t i = 0, n = dst.numel(); i < n; ++i) d[i] = store<T>(Sum(load(d[i])) + Sum(load(p[i])));
        });
    });
}

}  // namespace deviant
