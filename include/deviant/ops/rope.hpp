// deviant/ops/rope.hpp — rotary position embedding, Hugging Face "rotate half" convention.
// x (B, H, T, D) with D even, positions (B, T) int64 (packed rows restart their positions).
// For i < D/2, angle = pos * inv_freq[i] (plain RoPE: inv_freq[i] = theta^(-2i/D); scaled variants
// in nn/rotary.hpp), and a factor s (1 except for YaRN) on cos and sin:
//   y[i]       = s (x[i] cos - x[i + D/2] sin)
//   y[i + D/2] = s (x[i + D/2] cos + x[i] sin)
// The backward is s times the rotation by -angle. CUDA kernel: kernels/rope.cuh.
#pragma once
#include <algorithm>
#include <cmath>
#include <vector>

#include "deviant/autodiff/tape.hpp"
#include "deviant/ops/elementwise.hpp"

namespace deviant::kernels {
// inv_freq (D/2,) float64 on the device; y = scaling * rotation of x.
DEVIANT_CUDA_LAUNCHER(rope_forward, const TensorRef& x, const TensorRef& positions, const TensorRef& inv_freq, const TensorRef& y,
                      double scaling, bool inverse)
}  // namespace deviant::kernels

namespace deviant::ops {

// Plain RoPE's inverse frequencies theta^(-2i/D), i < D/2, as a float64 tensor.
inline Tensor rope_inverse_frequencies(std::int64_t D, double theta) {
    std::vector<double> f(static_cast<std::size_t>(D / 2));
    for (std::int64_t i = 0; i < D / 2; ++i) f[std::size_t(i)] = std::pow(theta, -double(2 * i) / double(D));
    return Tensor::from(f, {D / 2}, DType::f64);
}

// `inverse` rotates by -angle (the backward); inv_freq (D/2,) float64.
inline Tensor rope(const Tensor& x_in, const Tensor& positions, const Tensor& inv_freq_in, double scaling, bool inverse = false) {
    DEVIANT_REQUIRE(x_in.rank() == 4 && x_in.size(3) % 2 == 0, "rope: expected x (B, H, T, D) with even D, got {}", x_in.shape().str());
    DEVIANT_REQUIRE(positions.dtype() == DType::i64 && positions.rank() == 2 && positions.size(0) == x_in.size(0) &&
                        positions.size(1) == x_in.size(2),
                    "rope: positions {} ({}) do not match x {}", positions.shape().str(), dtype_name(positions.dtype()), x_in.shape().str());
    DEVIANT_REQUIRE(inv_freq_in.dtype() == DType::f64 && inv_freq_in.rank() == 1 && inv_freq_in.size(0) == x_in.size(3) / 2,
                    "rope: inverse frequencies must be (D/2,) = ({},) float64, got {}", x_in.size(3) / 2, inv_freq_in.describe());
    Tensor x = x_in.contiguous();
    Tensor pos = positions.to(x.device()).contiguous();
    Tensor inv_freq = inv_freq_in.to(x.device()).contiguous();
    Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
    if (x.numel() == 0) return y;
    if (x.device() == Device::cuda) {
        kernels::rope_forward(x.ref(), pos.ref(), inv_freq.ref(), y.ref(), scaling, inverse);
        return y;
    }
    std::int64_t B = x.size(0), H = x.size(1), T = x.size(2), D = x.size(3), half = D / 2;
    const double* f = inv_freq.data<double>();
    const std::int64_t* p = pos.data<std::int64_t>();
    DEVIANT_DISPATCH_FLOAT(x.dtype(), T_, [&] {
        using C = compute_t<T_>;
        const T_* px = x.data<T_>();
        T_* py = y.data<T_>();
        // cos / sin per (t, i) of one batch row, computed once and shared by its H heads, and by the
        // next rows as long as their positions are the same (padded rows all count 0, 1, 2, ...);
        // batch rows in parallel
        detail::parallel_range(B, [&](std::int64_t b0, std::int64_t b1) {
            std::vector<C> cos_t(static_cast<std::size_t>(T * half)), sin_t(cos_t.size());
            const std::int64_t* table_positions = nullptr;
            for (std::int64_t b = b0; b < b1; ++b) {
                const std::int64_t* row_positions = p + b * T;
                if (!table_positions || !std::equal(row_positions, row_positions + T, table_positions)) {
                    for (std::int64_t t = 0; t < T; ++t) {
                        const double position = double(row_positions[t]);
                        for (std::int64_t i = 0; i < half; ++i) {
                            const double a = position * f[i];
                            cos_t[std::size_t(t * half + i)] = C(scaling * std::cos(a));
                            sin_t[std::size_t(t * half + i)] = C(scaling * (inverse ? -std::sin(a) : std::sin(a)));
                        }
                    }
                    table_positions = row_positions;
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
        }, H * T * D);
    });
    return y;
}

// Plain RoPE with base theta.
inline Tensor rope(const Tensor& x, const Tensor& positions, double theta, bool inverse = false) {
    return rope(x, positions, rope_inverse_frequencies(x.rank() == 4 ? x.size(3) : 0, theta), 1.0, inverse);
}

}  // namespace deviant::ops

namespace deviant {

namespace detail {
struct RopeAttr { double scaling; };
}  // namespace detail

// Differentiable RoPE with given inverse frequencies (D/2,) float64 and cos/sin scaling.
inline Var rope(Var x, const Tensor& positions, const Tensor& inv_freq, double scaling) {
    return x.tape->record(ops::rope(x.value(), positions, inv_freq, scaling), {x}, [](Tape& t, const Node& n) {
        t.accumulate(n.in[0], ops::rope(output_grad(t, n), n.saved[0], n.saved[1], n.attr<detail::RopeAttr>().scaling, /*inverse=*/true));
    }, {positions, inv_freq}, detail::RopeAttr{scaling});
}

// Plain RoPE with base theta.
inline Var rope(Var x, const Tensor& positions, double theta) {
    return rope(x, positions, ops::rope_inverse_frequencies(x.shape()[3], theta), 1.0);
}

}  // namespace deviant
