// deviant/ops/rope.hpp — rotary position embedding, Hugging Face "rotate half" convention.
// x (B, H, T, D) with D even, positions (B, T) int64 (packed rows restart their positions).
// For i < D/2, angle = pos * theta^(-2i/D):
//   y[i]       = x[i] cos - x[i + D/2] sin
//   y[i + D/2] = x[i + D/2] cos + x[i] sin
// The backward is the rotation by -angle. CUDA kernel: kernels/rope.cuh.
#pragma once
#include <cmath>
#include <vector>

#include "deviant/autodiff/tape.hpp"

namespace deviant::kernels {
DEVIANT_CUDA_LAUNCHER(rope_forward, const TensorRef& x, const TensorRef& positions, const TensorRef& y, double theta, bool inverse)
}  // namespace deviant::kernels

namespace deviant::ops {

// `inverse` rotates by -angle (the backward).
inline Tensor rope(const Tensor& x_in, const Tensor& positions, double theta, bool inverse = false) {
    DEVIANT_REQUIRE(x_in.rank() == 4 && x_in.size(3) % 2 == 0, "rope: expected x (B, H, T, D) with even D, got {}", x_in.shape().str());
    DEVIANT_REQUIRE(positions.dtype() == DType::i64 && positions.rank() == 2 && positions.size(0) == x_in.size(0) &&
                        positions.size(1) == x_in.size(2),
                    "rope: positions {} ({}) do not match x {}", positions.shape().str(), dtype_name(positions.dtype()), x_in.shape().str());
    Tensor x = x_in.contiguous();
    Tensor pos = positions.to(x.device()).contiguous();
    Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
    if (x.numel() == 0) return y;
    if (x.device() == Device::cuda) {
        kernels::rope_forward(x.ref(), pos.ref(), y.ref(), theta, inverse);
        return y;
    }
    std::int64_t B = x.size(0), H = x.size(1), T = x.size(2), D = x.size(3), half = D / 2;
    std::vector<double> inv_freq(static_cast<std::size_t>(half));
    for (std::int64_t i = 0; i < half; ++i) inv_freq[i] = std::pow(theta, -double(2 * i) / double(D));
    const std::int64_t* p = pos.data<std::int64_t>();
    DEVIANT_DISPATCH_FLOAT(x.dtype(), T_, [&] {
        using C = compute_t<T_>;
        const T_* px = x.data<T_>();
        T_* py = y.data<T_>();
        // cos / sin per (t, i) of one batch row, computed once and shared by its H heads
        std::vector<C> cos_t(static_cast<std::size_t>(T * half)), sin_t(cos_t.size());
        for (std::int64_t b = 0; b < B; ++b) {
            for (std::int64_t t = 0; t < T; ++t) {
                const double position = double(p[b * T + t]);
                for (std::int64_t i = 0; i < half; ++i) {
                    const double a = position * inv_freq[std::size_t(i)];
                    cos_t[std::size_t(t * half + i)] = C(std::cos(a));
                    sin_t[std::size_t(t * half + i)] = C(inverse ? -std::sin(a) : std::sin(a));
                }
            }
            for (std::int64_t h = 0; h < H; ++h)
                for (std::int64_t t = 0; t < T; ++t) {
                    const T_* xr = px + ((b * H + h) * T + t) * D;
                    T_* yr = py + ((b * H + h) * T + t) * D;
                    const C* ct = cos_t.data() + t * half;
                    const C* st = sin_t.data() + t * half;
                    for (std::int64_t i = 0; i < half; ++i) {
                        C x1 = load(xr[i]), x2 = load(xr[i + half]);
                        yr[i] = store<T_>(x1 * ct[i] - x2 * st[i]);
                        yr[i + half] = store<T_>(x2 * ct[i] + x1 * st[i]);
                    }
                }
        }
    });
    return y;
}

}  // namespace deviant::ops

namespace deviant {

namespace detail {
struct RopeAttr { double theta; };
}  // namespace detail

inline Var rope(Var x, const Tensor& positions, double theta) {
    return x.tape->record(ops::rope(x.value(), positions, theta), {x}, [](Tape& t, const Node& n) {
        t.accumulate(n.in[0], ops::rope(output_grad(t, n), n.saved[0], n.attr<detail::RopeAttr>().theta, /*inverse=*/true));
    }, {positions}, detail::RopeAttr{theta});
}

}  // namespace deviant
