// deviant/ops/norm.hpp — fused RMS and layer normalisation over the last axis, with a fused
// backward. x (..., C) is treated as (rows, C); weight and bias are (C,).
//   rms_norm:   y = x * r * w,                 r = 1 / sqrt(mean(x^2) + eps)
//   layer_norm: y = (x - mu) * r * w + b,       r = 1 / sqrt(mean((x - mu)^2) + eps)
// The forward makes one pass over each row and saves per-row statistics `stats` (rows, 2) =
// (mu, r) (mu = 0 for RMS) in the compute type: float32 for float32/bfloat16, float64 for float64.
// Backward, with xhat = (x - mu) * r and g = dy * w:
//   dx = r * (g - mean(g) - xhat * mean(g * xhat))     (the mean(g) term only for layer_norm)
//   dw = sum over rows of dy * xhat,  db = sum over rows of dy
// dw / db are reduced in a fixed order on both devices (CUDA: per-chunk partial sums of rows,
// then a second pass over the chunks), so results are deterministic.
// CPU references are here; the CUDA kernels are in kernels/norm.cuh.
#pragma once
#include <cmath>

#include "deviant/ops/elementwise.hpp"

namespace deviant::kernels {
// x, y contiguous (rows, cols); weight, bias (cols,) (bias.data null: none); stats (rows, 2) in the
// compute type. centered: layer norm (subtract the row mean), else RMS norm.
DEVIANT_CUDA_LAUNCHER(norm_forward, const TensorRef& x, const TensorRef& weight, const TensorRef& bias, const TensorRef& y,
                      const TensorRef& stats, std::int64_t rows, std::int64_t cols, double eps, bool centered)
// dx (rows, cols) from x, weight, stats and dy; dweight / dbias (cols,) when their data is non-null
// (bias gradient only when centered). `partial` is compute-type scratch of (chunks, 2 * cols).
DEVIANT_CUDA_LAUNCHER(norm_backward, const TensorRef& x, const TensorRef& weight, const TensorRef& stats, const TensorRef& dy,
                      const TensorRef& dx, const TensorRef& dweight, const TensorRef& dbias, const TensorRef& partial,
                      std::int64_t rows, std::int64_t cols, bool centered)
}  // namespace deviant::kernels

namespace deviant::ops {

struct NormResult {
    Tensor y;      // x's shape and dtype
    Tensor stats;  // (rows, 2): row mean (0 for RMS) and inverse std, float32 or float64
};
struct NormGrads {
    Tensor dx, dweight, dbias;  // dweight / dbias undefined unless asked for
};

namespace detail {
inline DType norm_stats_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

// Rows of CUDA dweight partial sums: each chunk of rows gives one partial row.
inline std::int64_t norm_grad_chunks(std::int64_t rows) {
    std::int64_t chunks = (rows + 31) / 32;
    return chunks < 1 ? 1 : chunks > 512 ? 512 : chunks;
}

inline void check_norm_args(const char* op, const Tensor& x, const Tensor& weight, const Tensor* bias) {
    require_float(x, op);
    require_float(weight, op);
    DEVIANT_REQUIRE(x.rank() >= 1, "{}: input must be (..., C), got {}", op, x.shape().str());
    DEVIANT_REQUIRE(weight.rank() == 1 && weight.size(0) == x.size(-1), "{}: weight {} does not match input {} (needs (C,))", op,
                    weight.shape().str(), x.shape().str());
    DEVIANT_REQUIRE(weight.dtype() == x.dtype(), "{}: weight {} and input {} differ in dtype", op, weight.describe(), x.describe());
    require_same_device(x, weight, op);
    if (bias) {
        require_float(*bias, op);
        DEVIANT_REQUIRE(bias->shape() == weight.shape() && bias->dtype() == x.dtype(), "{}: bias {} does not match weight {}", op,
                        bias->describe(), weight.describe());
        require_same_device(x, *bias, op);
    }
}

inline NormResult norm_forward(const char* op, const Tensor& x_in, const Tensor& weight_in, const Tensor* bias_in, double eps,
                               bool centered) {
    check_norm_args(op, x_in, weight_in, bias_in);
    DEVIANT_REQUIRE(eps >= 0 && std::isfinite(eps), "{}: eps must be finite and non-negative, got {}", op, eps);
    Tensor x = x_in.contiguous(), w = weight_in.contiguous(), b = bias_in ? bias_in->contiguous() : Tensor();
    const std::int64_t cols = x.size(-1), rows = cols ? x.numel() / cols : 0;
    NormResult r{Tensor::empty(x.shape(), x.dtype(), x.device()), Tensor::empty({rows, 2}, norm_stats_dtype(x.dtype()), x.device())};
    if (x.numel() == 0) return r;
    if (x.device() == Device::cuda) {
        kernels::norm_forward(x.ref(), w.ref(), b.defined() ? b.ref() : TensorRef{}, r.y.ref(), r.stats.ref(), rows, cols, eps, centered);
        return r;
    }
    DEVIANT_DISPATCH_FLOAT(x.dtype(), T, [&] {
        using C = compute_t<T>;
        const T *px = x.data<T>(), *pw = w.data<T>(), *pb = b.defined() ? b.data<T>() : nullptr;
        T* py = r.y.data<T>();
        C* ps = r.stats.data<C>();
        for (std::int64_t i = 0; i < rows; ++i) {
            const T* xr = px + i * cols;
            T* yr = py + i * cols;
            C mu = C(0);
            if (centered) {
                for (std::int64_t j = 0; j < cols; ++j) mu += load(xr[j]);
                mu /= C(cols);
            }
            C ss = C(0);
            for (std::int64_t j = 0; j < cols; ++j) {
                C d = load(xr[j]) - mu;
                ss += d * d;
            }
            C inv = C(1) / std::sqrt(ss / C(cols) + C(eps));
            for (std::int64_t j = 0; j < cols; ++j) {
                C v = (load(xr[j]) - mu) * inv * load(pw[j]);
                yr[j] = store<T>(pb ? v + load(pb[j]) : v);
            }
            ps[2 * i] = mu;
            ps[2 * i + 1] = inv;
        }
    });
    return r;
}

inline NormGrads norm_backward(const Tensor& x_in, const Tensor& weight_in, const Tensor& stats_in, const Tensor& dy_in,
                               bool want_dweight, bool want_dbias, bool centered) {
    Tensor x = x_in.contiguous(), w = weight_in.contiguous(), stats = stats_in.contiguous(), dy = dy_in.contiguous();
    require_same(x, dy, "norm backward");
    const std::int64_t cols = x.size(-1), rows = cols ? x.numel() / cols : 0;
    DEVIANT_REQUIRE(stats.numel() == 2 * rows && stats.dtype() == norm_stats_dtype(x.dtype()),
                    "norm backward: statistics {} do not match input {}", stats.describe(), x.describe());
    want_dbias = want_dbias && centered;
    NormGrads g;
    g.dx = Tensor::empty(x.shape(), x.dtype(), x.device());
    if (want_dweight) g.dweight = Tensor::empty({cols}, x.dtype(), x.device());
    if (want_dbias) g.dbias = Tensor::empty({cols}, x.dtype(), x.device());
    if (x.numel() == 0) {
        if (want_dweight) g.dweight.fill_(0.0);
        if (want_dbias) g.dbias.fill_(0.0);
        return g;
    }
    if (x.device() == Device::cuda) {
        Tensor partial;
        if (want_dweight || want_dbias)
            partial = Tensor::empty({norm_grad_chunks(rows), 2 * cols}, stats.dtype(), x.device());
        kernels::norm_backward(x.ref(), w.ref(), stats.ref(), dy.ref(), g.dx.ref(), want_dweight ? g.dweight.ref() : TensorRef{},
                               want_dbias ? g.dbias.ref() : TensorRef{}, partial.defined() ? partial.ref() : TensorRef{}, rows, cols,
                               centered);
        return g;
    }
    DEVIANT_DISPATCH_FLOAT(x.dtype(), T, [&] {
        using C = compute_t<T>;
        const T *px = x.data<T>(), *pw = w.data<T>(), *pg = dy.data<T>();
        const C* ps = stats.data<C>();
        T* pd = g.dx.data<T>();
        std::vector<C> dw(std::size_t(want_dweight ? cols : 0), C(0)), db(std::size_t(want_dbias ? cols : 0), C(0));
        for (std::int64_t i = 0; i < rows; ++i) {
            const T *xr = px + i * cols, *gr = pg + i * cols;
            T* dr = pd + i * cols;
            const C mu = ps[2 * i], inv = ps[2 * i + 1];
            C sum_g = C(0), sum_gx = C(0);
            for (std::int64_t j = 0; j < cols; ++j) {
                C gj = load(gr[j]) * load(pw[j]), xh = (load(xr[j]) - mu) * inv;
                sum_g += gj;
                sum_gx += gj * xh;
            }
            const C mean_g = centered ? sum_g / C(cols) : C(0), mean_gx = sum_gx / C(cols);
            for (std::int64_t j = 0; j < cols; ++j) {
                C dyj = load(gr[j]), xh = (load(xr[j]) - mu) * inv;
                dr[j] = store<T>(inv * (dyj * load(pw[j]) - mean_g - xh * mean_gx));
                if (want_dweight) dw[std::size_t(j)] += dyj * xh;
                if (want_dbias) db[std::size_t(j)] += dyj;
            }
        }
        for (std::int64_t j = 0; j < cols; ++j) {
            if (want_dweight) g.dweight.data<T>()[j] = store<T>(dw[std::size_t(j)]);
            if (want_dbias) g.dbias.data<T>()[j] = store<T>(db[std::size_t(j)]);
        }
    });
    return g;
}
}  // namespace detail

// y and per-row statistics of RMS normalisation of x (..., C) with weight (C,).
inline NormResult rms_norm(const Tensor& x, const Tensor& weight, double eps) {
    return detail::norm_forward("rms_norm", x, weight, nullptr, eps, false);
}
// y and per-row statistics of layer normalisation of x (..., C) with weight and bias (C,).
inline NormResult layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
    return detail::norm_forward("layer_norm", x, weight, &bias, eps, true);
}
// Gradients of rms_norm from its saved statistics.
inline NormGrads rms_norm_backward(const Tensor& x, const Tensor& weight, const Tensor& stats, const Tensor& dy, bool want_dweight = true) {
    return detail::norm_backward(x, weight, stats, dy, want_dweight, false, false);
}
// Gradients of layer_norm from its saved statistics.
inline NormGrads layer_norm_backward(const Tensor& x, const Tensor& weight, const Tensor& stats, const Tensor& dy,
                                     bool want_dweight = true, bool want_dbias = true) {
    return detail::norm_backward(x, weight, stats, dy, want_dweight, want_dbias, true);
}

}  // namespace deviant::ops

namespace deviant {

// RMS normalisation over the last axis: x (..., C), weight (C,) -> (..., C).
inline Var rms_norm(Var x, Var weight, double eps) {
    ops::NormResult r = ops::rms_norm(x.value(), weight.value(), eps);
    return x.tape->record(r.y, {x, weight}, [](Tape& t, const Node& n) {
        ops::NormGrads g = ops::rms_norm_backward(n.saved[0], n.saved[1], n.saved[2], output_grad(t, n), t.needs_grad(n, 1));
        t.accumulate(n.in[0], std::move(g.dx));
        if (t.needs_grad(n, 1)) t.accumulate(n.in[1], std::move(g.dweight));
    }, {x.value(), weight.value(), r.stats});
}

// Layer normalisation over the last axis: x (..., C), weight and bias (C,) -> (..., C).
inline Var layer_norm(Var x, Var weight, Var bias, double eps) {
    ops::NormResult r = ops::layer_norm(x.value(), weight.value(), bias.value(), eps);
    return x.tape->record(r.y, {x, weight, bias}, [](Tape& t, const Node& n) {
        ops::NormGrads g = ops::layer_norm_backward(n.saved[0], n.saved[1], n.saved[2], output_grad(t, n), t.needs_grad(n, 1),
                                                    t.needs_grad(n, 2));
        t.accumulate(n.in[0], std::move(g.dx));
        if (t.needs_grad(n, 1)) t.accumulate(n.in[1], std::move(g.dweight));
        if (t.needs_grad(n, 2)) t.accumulate(n.in[2], std::move(g.dbias));
    }, {x.value(), weight.value(), r.stats});
}

}  // namespace deviant
