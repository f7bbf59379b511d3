// deviant/ops/elementwise.hpp — element-wise ops: unary math (exp, log, softplus, logsigmoid,
// log1mexp, sigmoid, tanh, gelu_tanh, silu, relu, sqrt, rsqrt, square, neg), SwiGLU's fused
// silu(gate) * up, scale/shift, and add/sub/mul/div with numpy broadcasting; sum_to_shape undoes
// a broadcast in backward.
// Tensor-level functions live in deviant::ops; the recorded (differentiable) ones take Var.
// CPU references are here; the CUDA kernels are in kernels/elementwise.cuh.
#pragma once
#include "deviant/autodiff/tape.hpp"
#include "deviant/core/thread_pool.hpp"
#include "deviant/ops/unary_math.hpp"
#include "deviant/ops/vector_math.hpp"

namespace deviant::ops {

namespace detail {
// f(i0, i1) over [0, n): on the thread pool when the work (n items of `cost` elements each) is
// large enough to pay for it, else inline. Element-wise results do not depend on the split.
template <class F>
void parallel_range(std::int64_t n, F&& f, std::int64_t cost = 1) {
    if (n * cost < (std::int64_t(1) << 15) || n < 2) {
        f(std::int64_t(0), n);
        return;
    }
    parallel_for(n, f);
}

// Walks the elements of `shape` in row-major order, tracking the offsets of up to three strided refs.
template <int N, class F>
void walk(const Shape& shape, const std::array<const std::int64_t*, N>& strides, F&& f) {
    std::int64_t n = shape.numel();
    std::int64_t idx[Shape::max_dims] = {};
    std::array<std::int64_t, N> off{};
    for (std::int64_t i = 0; i < n; ++i) {
        f(i, off);
        for (int k = shape.rank() - 1; k >= 0; --k) {
            for (int j = 0; j < N; ++j) off[j] += strides[j][k];
            if (++idx[k] < shape[k]) break;
            for (int j = 0; j < N; ++j) off[j] -= strides[j][k] * shape[k];
            idx[k] = 0;
        }
    }
}
// Vectorisable float32 loops for the unary ops whose scalar form calls std::exp (exp, sigmoid,
// SiLU and their derivatives): false when op/T has none (the caller runs the generic loop).
// sigmoid(x) = 1 / (1 + exp(-x)) needs no branch: exp(-x) = +inf gives 0, 0 gives 1.
// bfloat16 runs the float32 loops on blocks widened on the stack (the generic loop would call
// std::exp per element).
inline bool has_fast_exp_loop(kernels::UnaryOp op) {
    return op == kernels::UnaryOp::exp || op == kernels::UnaryOp::sigmoid || op == kernels::UnaryOp::silu ||
           op == kernels::UnaryOp::gelu_tanh;
}
inline constexpr std::int64_t bf16_widen_block = 256;
template <class T>
bool cpu_unary_fast(kernels::UnaryOp op, const T* x, T* y, std::int64_t n);
template <class T>
bool cpu_unary_backward_fast(kernels::UnaryOp op, const T* x, const T* y, const T* dy, T* dx, std::int64_t n);
template <>
inline bool cpu_unary_fast<bf16>(kernels::UnaryOp op, const bf16* x, bf16* y, std::int64_t n) {
    if (!has_fast_exp_loop(op)) return false;
    float xb[bf16_widen_block], yb[bf16_widen_block];
    for (std::int64_t i0 = 0; i0 < n; i0 += bf16_widen_block) {
        const std::int64_t m = std::min(bf16_widen_block, n - i0);
        for (std::int64_t j = 0; j < m; ++j) xb[j] = float(x[i0 + j]);
        cpu_unary_fast<float>(op, xb, yb, m);
        for (std::int64_t j = 0; j < m; ++j) y[i0 + j] = bf16(yb[j]);
    }
    return true;
}
template <>
inline bool cpu_unary_backward_fast<bf16>(kernels::UnaryOp op, const bf16* x, const bf16* y, const bf16* dy, bf16* dx, std::int64_t n) {
    if (!has_fast_exp_loop(op)) return false;
    float xb[bf16_widen_block], yb[bf16_widen_block], gb[bf16_widen_block], db[bf16_widen_block];
    for (std::int64_t i0 = 0; i0 < n; i0 += bf16_widen_block) {
        const std::int64_t m = std::min(bf16_widen_block, n - i0);
        for (std::int64_t j = 0; j < m; ++j) xb[j] = float(x[i0 + j]), yb[j] = float(y[i0 + j]), gb[j] = float(dy[i0 + j]);
        cpu_unary_backward_fast<float>(op, xb, yb, gb, db, m);
        for (std::int64_t j = 0; j < m; ++j) dx[i0 + j] = bf16(db[j]);
    }
    return true;
}
template <class T>
bool cpu_unary_fast(kernels::UnaryOp op, const T* x, T* y, std::int64_t n) {
    if constexpr (!std::is_same_v<T, float>) {
        return false;
    } else {
        switch (op) {
            case kernels::UnaryOp::exp:
                for (std::int64_t i = 0; i < n; ++i) y[i] = cpu_exp(x[i]);
                return true;
            case kernels::UnaryOp::sigmoid:
                for (std::int64_t i = 0; i < n; ++i) y[i] = 1.0f / (1.0f + cpu_exp(-x[i]));
                return true;
            case kernels::UnaryOp::silu:
                for (std::int64_t i = 0; i < n; ++i) y[i] = x[i] / (1.0f + cpu_exp(-x[i]));
                return true;
            case kernels::UnaryOp::gelu_tanh:  // (1 + tanh(u)) / 2 = sigmoid(2u): no cancellation for u << 0
                for (std::int64_t i = 0; i < n; ++i) {
                    const float u = math::gelu_k<float>() * (x[i] + math::gelu_c<float>() * x[i] * x[i] * x[i]);
                    y[i] = x[i] / (1.0f + cpu_exp(-2.0f * u));
                }
                return true;
            default: return false;
        }
    }
}
template <class T>
bool cpu_unary_backward_fast(kernels::UnaryOp op, const T* x, const T* y, const T* dy, T* dx, std::int64_t n) {
    if constexpr (!std::is_same_v<T, float>) {
        return false;
    } else {
        switch (op) {
            case kernels::UnaryOp::exp:
                for (std::int64_t i = 0; i < n; ++i) dx[i] = y[i] * dy[i];
                return true;
            case kernels::UnaryOp::sigmoid:
                for (std::int64_t i = 0; i < n; ++i) dx[i] = y[i] * (1.0f - y[i]) * dy[i];
                return true;
            case kernels::UnaryOp::silu:
                for (std::int64_t i = 0; i < n; ++i) {
                    const float s = 1.0f / (1.0f + cpu_exp(-x[i]));
                    dx[i] = s * (1.0f + x[i] * (1.0f - s)) * dy[i];
                }
                return true;
            case kernels::UnaryOp::gelu_tanh:
                for (std::int64_t i = 0; i < n; ++i) {
                    // with s = sigmoid(2u): (1 + t) / 2 = s and (1 - t^2) / 2 = 2 s (1 - s), t = tanh(u)
                    const float xi = x[i], u = math::gelu_k<float>() * (xi + math::gelu_c<float>() * xi * xi * xi);
                    const float sg = 1.0f / (1.0f + cpu_exp(-2.0f * u));
                    dx[i] = (sg + 2.0f * xi * sg * (1.0f - sg) * math::gelu_k<float>() * (1.0f + 3.0f * math::gelu_c<float>() * xi * xi)) * dy[i];
                }
                return true;
            default: return false;
        }
    }
}
inline void require_float(const Tensor& t, const char* op) {
    DEVIANT_REQUIRE(t.defined(), "{}: undefined tensor", op);
    DEVIANT_REQUIRE(is_floating(t.dtype()), "{}: expected a floating tensor, got {}", op, t.describe());
}
}  // namespace detail

// y = f(x)
inline Tensor unary(kernels::UnaryOp op, const Tensor& x_in) {
    detail::require_float(x_in, "unary op");
    Tensor x = x_in.contiguous();
    Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
    if (x.numel() == 0) return y;
    if (x.device() == Device::cuda) {
        kernels::unary_forward(op, x.ref(), y.ref());
        return y;
    }
    DEVIANT_DISPATCH_FLOAT(x.dtype(), T, [&] {
        const T* px = x.data<T>();
        T* py = y.data<T>();
        detail::parallel_range(x.numel(), [&](std::int64_t i0, std::int64_t i1) {
            if (!detail::cpu_unary_fast(op, px + i0, py + i0, i1 - i0))
                for (std::int64_t i = i0; i < i1; ++i) py[i] = store<T>(math::unary(op, load(px[i])));
        });
    });
    return y;
}

// dx = f'(x) * dy
inline Tensor unary_backward(kernels::UnaryOp op, const Tensor& x_in, const Tensor& y_in, const Tensor& dy_in) {
    Tensor x = x_in.contiguous(), y = y_in.contiguous(), dy = dy_in.contiguous();
    require_same(x, dy, "unary backward");
    Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
    if (x.numel() == 0) return dx;
    if (x.device() == Device::cuda) {
        kernels::unary_backward(op, x.ref(), y.ref(), dy.ref(), dx.ref());
        return dx;
    }
    DEVIANT_DISPATCH_FLOAT(x.dtype(), T, [&] {
        const T *px = x.data<T>(), *py = y.data<T>(), *pg = dy.data<T>();
        T* pd = dx.data<T>();
        detail::parallel_range(x.numel(), [&](std::int64_t i0, std::int64_t i1) {
            if (!detail::cpu_unary_backward_fast(op, px + i0, py + i0, pg + i0, pd + i0, i1 - i0))
                for (std::int64_t i = i0; i < i1; ++i)
                    pd[i] = store<T>(math::unary_derivative(op, load(px[i]), load(py[i])) * load(pg[i]));
        });
    });
    return dx;
}

namespace detail {
// SwiGLU's gated unit over float32 arrays, written to vectorise (the float32 exp of vector_math.hpp;
// sigmoid(g) = 1 / (1 + exp(-g)) needs no branch). bf16 runs them on blocks widened on the stack.
inline void cpu_swiglu_f32(const float* g, const float* u, float* y, std::int64_t n) {
    for (std::int64_t i = 0; i < n; ++i) y[i] = g[i] / (1.0f + cpu_exp(-g[i])) * u[i];
}
inline void cpu_swiglu_backward_f32(const float* g, const float* u, const float* dy, float* dg, float* du, std::int64_t n) {
    for (std::int64_t i = 0; i < n; ++i) {
        const float s = 1.0f / (1.0f + cpu_exp(-g[i]));
        du[i] = dy[i] * g[i] * s;
        dg[i] = dy[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
    }
}
template <class T>
void cpu_swiglu(const T* g, const T* u, T* y, std::int64_t n) {
    if constexpr (std::is_same_v<T, float>) {
        cpu_swiglu_f32(g, u, y, n);
    } else if constexpr (std::is_same_v<T, bf16>) {
        float gb[bf16_widen_block], ub[bf16_widen_block], yb[bf16_widen_block];
        for (std::int64_t i0 = 0; i0 < n; i0 += bf16_widen_block) {
            const std::int64_t m = std::min(bf16_widen_block, n - i0);
            for (std::int64_t j = 0; j < m; ++j) gb[j] = float(g[i0 + j]), ub[j] = float(u[i0 + j]);
            cpu_swiglu_f32(gb, ub, yb, m);
            for (std::int64_t j = 0; j < m; ++j) y[i0 + j] = bf16(yb[j]);
        }
    } else {
        for (std::int64_t i = 0; i < n; ++i) y[i] = store<T>(math::swiglu(load(g[i]), load(u[i])));
    }
}
template <class T>
void cpu_swiglu_backward(const T* g, const T* u, const T* dy, T* dg, T* du, std::int64_t n) {
    if constexpr (std::is_same_v<T, float>) {
        cpu_swiglu_backward_f32(g, u, dy, dg, du, n);
    } else if constexpr (std::is_same_v<T, bf16>) {
        float gb[bf16_widen_block], ub[bf16_widen_block], yb[bf16_widen_block], db[bf16_widen_block], eb[bf16_widen_block];
        for (std::int64_t i0 = 0; i0 < n; i0 += bf16_widen_block) {
            const std::int64_t m = std::min(bf16_widen_block, n - i0);
            for (std::int64_t j = 0; j < m; ++j) gb[j] = float(g[i0 + j]), ub[j] = float(u[i0 + j]), yb[j] = float(dy[i0 + j]);
            cpu_swiglu_backward_f32(gb, ub, yb, db, eb, m);
            for (std::int64_t j = 0; j < m; ++j) dg[i0 + j] = bf16(db[j]), du[i0 + j] = bf16(eb[j]);
        }
    } else {
        for (std::int64_t i = 0; i < n; ++i) {
            compute_t<T> a, b;
            math::swiglu_backward(load(g[i]), load(u[i]), load(dy[i]), a, b);
            dg[i] = store<T>(a);
            du[i] = store<T>(b);
        }
    }
}
}  // namespace detail

// y = silu(gate) * up (SwiGLU's gated unit), gate and up of one shape and dtype: one pass, and no
// silu(gate) tensor.
inline Tensor swiglu(const Tensor& gate_in, const Tensor& up_in) {
    detail::require_float(gate_in, "swiglu");
    detail::require_float(up_in, "swiglu");
    DEVIANT_REQUIRE(gate_in.shape() == up_in.shape() && gate_in.dtype() == up_in.dtype(), "swiglu: gate {} and up {} differ",
                    gate_in.describe(), up_in.describe());
    require_same_device(gate_in, up_in, "swiglu");
    Tensor g = gate_in.contiguous(), u = up_in.contiguous();
    Tensor y = Tensor::empty(g.shape(), g.dtype(), g.device());
    if (g.numel() == 0) return y;
    if (g.device() == Device::cuda) {
        kernels::swiglu_forward(g.ref(), u.ref(), y.ref());
        return y;
    }
    DEVIANT_DISPATCH_FLOAT(g.dtype(), T, [&] {
        const T *pg = g.data<T>(), *pu = u.data<T>();
        T* py = y.data<T>();
        detail::parallel_range(g.numel(), [&](std::int64_t i0, std::int64_t i1) { detail::cpu_swiglu(pg + i0, pu + i0, py + i0, i1 - i0); });
    });
    return y;
}

// The gradients of swiglu for upstream gradient dy: {dgate, dup}, recomputing silu(gate).
inline std::pair<Tensor, Tensor> swiglu_backward(const Tensor& gate_in, const Tensor& up_in, const Tensor& dy_in) {
    Tensor g = gate_in.contiguous(), u = up_in.contiguous(), dy = dy_in.contiguous();
    require_same(g, u, "swiglu backward");
    require_same(g, dy, "swiglu backward");
    Tensor dg = Tensor::empty(g.shape(), g.dtype(), g.device()), du = Tensor::empty(g.shape(), g.dtype(), g.device());
    if (g.numel() == 0) return {dg, du};
    if (g.device() == Device::cuda) {
        kernels::swiglu_backward(g.ref(), u.ref(), dy.ref(), dg.ref(), du.ref());
        return {dg, du};
    }
    DEVIANT_DISPATCH_FLOAT(g.dtype(), T, [&] {
        const T *pg = g.data<T>(), *pu = u.data<T>(), *py = dy.data<T>();
        T *pdg = dg.data<T>(), *pdu = du.data<T>();
        detail::parallel_range(g.numel(), [&](std::int64_t i0, std::int64_t i1) {
            detail::cpu_swiglu_backward(pg + i0, pu + i0, py + i0, pdg + i0, pdu + i0, i1 - i0);
        });
    });
    return {dg, du};
}

// y = alpha * x + beta
inline Tensor affine(const Tensor& x_in, double alpha, double beta = 0.0) {
    detail::require_float(x_in, "scale");
    Tensor x = x_in.contiguous();
    Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
    if (x.numel() == 0) return y;
    if (x.device() == Device::cuda) {
        kernels::affine(x.ref(), y.ref(), alpha, beta);
        return y;
    }
    DEVIANT_DISPATCH_FLOAT(x.dtype(), T, [&] {
        using C = compute_t<T>;
        const T* px = x.data<T>();
        T* py = y.data<T>();
        for (std::int64_t i = 0, n = x.numel(); i < n; ++i) py[i] = store<T>(C(alpha) * load(px[i]) + C(beta));
    });
    return y;
}

// out = a (op) b, broadcasting a and b to a common shape.
inline Tensor binary(kernels::BinaryOp op, const Tensor& a, const Tensor& b) {
    detail::require_float(a, "binary op");
    detail::require_float(b, "binary op");
    DEVIANT_REQUIRE(a.dtype() == b.dtype(), "binary op: dtype mismatch {} vs {}", a.describe(), b.describe());
    require_same_device(a, b, "binary op");
    Shape shape = broadcast_shapes(a.shape(), b.shape());
    Tensor ea = a.expand(shape), eb = b.expand(shape);
    Tensor out = Tensor::empty(shape, a.dtype(), a.device());
    if (out.numel() == 0) return out;
    if (out.device() == Device::cuda) {
        kernels::binary_forward(op, ea.ref(), eb.ref(), out.ref());
        return out;
    }
    // rows of the last dimension: a and b each either contiguous over the whole shape or one
    // contiguous row broadcast to every row (a bias); then a flat loop per row, rows in parallel
    const std::int64_t cols = shape.rank() ? shape[shape.rank() - 1] : 1, rows = out.numel() / std::max<std::int64_t>(cols, 1);
    auto row_stride = [&](const Tensor& e) -> std::int64_t {  // cols: whole contiguous; 0: one broadcast row; -1: other
        if (e.is_contiguous()) return cols;
        if (shape.rank() == 0 || e.strides()[shape.rank() - 1] != 1) return -1;
        for (int k = 0; k + 1 < shape.rank(); ++k)
            if (e.strides()[k] != 0 && shape[k] != 1) return -1;
        return 0;
    };
    const std::int64_t sa = row_stride(ea), sb = row_stride(eb);
    DEVIANT_DISPATCH_FLOAT(a.dtype(), T, [&] {
        const T *pa = static_cast<const T*>(ea.raw_data()), *pb = static_cast<const T*>(eb.raw_data());
        T* po = out.data<T>();
        if (sa >= 0 && sb >= 0 && cols > 0) {
            // the op chosen outside the loop, so each loop body is one vectorisable expression
            auto rows_with = [&](auto f) {
                detail::parallel_range(rows, [&](std::int64_t r0, std::int64_t r1) {
                    for (std::int64_t r = r0; r < r1; ++r) {
                        const T *ra = pa + r * sa, *rb = pb + r * sb;
                        T* ro = po + r * cols;
                        for (std::int64_t c = 0; c < cols; ++c) ro[c] = store<T>(f(load(ra[c]), load(rb[c])));
                    }
                }, cols);
            };
            using kernels::BinaryOp;
            switch (op) {
                case BinaryOp::add: rows_with([](auto x, auto y) { return math::binary(BinaryOp::add, x, y); }); break;
                case BinaryOp::sub: rows_with([](auto x, auto y) { return math::binary(BinaryOp::sub, x, y); }); break;
                case BinaryOp::mul: rows_with([](auto x, auto y) { return math::binary(BinaryOp::mul, x, y); }); break;
                case BinaryOp::div: rows_with([](auto x, auto y) { return math::binary(BinaryOp::div, x, y); }); break;
            }
            return;
        }
        detail::walk<2>(shape, {ea.strides().begin(), eb.strides().begin()}, [&](std::int64_t i, const auto& off) {
            po[i] = store<T>(math::binary(op, load(pa[off[0]]), load(pb[off[1]])));
        });
    });
    return out;
}

// Sums `src` over the axes that were broadcast to reach its shape from `shape` (same or lower rank).
inline Tensor sum_to_shape(const Tensor& src_in, const Shape& shape) {
    if (src_in.shape() == shape) return src_in;
    DEVIANT_REQUIRE(shape.rank() <= src_in.rank(), "sum_to_shape: cannot reduce {} to {}", src_in.shape().str(), shape.str());
    Tensor src = src_in.contiguous();
    Shape padded;  // `shape` with leading ones up to src's rank
    for (int i = 0; i < src.rank() - shape.rank(); ++i) padded.push_back(1);
    for (auto d : shape) padded.push_back(d);
    for (int i = 0; i < src.rank(); ++i)
        DEVIANT_REQUIRE(padded[i] == src.size(i) || padded[i] == 1, "sum_to_shape: cannot reduce {} to {}", src.shape().str(), shape.str());
    Tensor dst = Tensor::empty(padded, src.dtype(), src.device());
    if (dst.numel() == 0) return dst.view(shape);
    if (src.device() == Device::cuda) {
        kernels::sum_to_shape(src.ref(), dst.ref());
        return dst.view(shape);
    }
    // only leading axes summed (a bias, a row broadcast): rows x cols, columns in blocks across
    // threads, each block walking the rows in order (the order of the general walk below)
    int lead = 0;
    while (lead < src.rank() && padded[lead] == 1 && src.size(lead) != 1) ++lead;
    bool leading_only = true;
    for (int i = lead; i < src.rank(); ++i) leading_only = leading_only && padded[i] == src.size(i);
    if (leading_only) {
        const std::int64_t cols = dst.numel(), rows = src.numel() / cols;
        DEVIANT_DISPATCH_FLOAT(src.dtype(), T, [&] {
            using C = compute_t<T>;
            const T* ps = src.data<T>();
            T* pd = dst.data<T>();
            detail::parallel_range(cols, [&](std::int64_t c0, std::int64_t c1) {
                std::vector<C> acc(std::size_t(c1 - c0), C(0));
                for (std::int64_t r = 0; r < rows; ++r) {
                    const T* row = ps + r * cols + c0;
                    for (std::int64_t c = 0; c < c1 - c0; ++c) acc[std::size_t(c)] += load(row[c]);
                }
                for (std::int64_t c = c0; c < c1; ++c) pd[c] = store<T>(acc[std::size_t(c - c0)]);
            }, rows);
        });
        return dst.view(shape);
    }
    DEVIANT_DISPATCH_FLOAT(src.dtype(), T, [&] {
        using C = compute_t<T>;
        std::vector<C> acc(std::size_t(dst.numel()), C(0));
        Shape dst_strides = padded.contiguous_strides();
        for (int i = 0; i < padded.rank(); ++i)
            if (padded[i] == 1) dst_strides[i] = 0;
        const T* ps = src.data<T>();
        detail::walk<1>(src.shape(), {dst_strides.begin()}, [&](std::int64_t i, const auto& off) { acc[off[0]] += load(ps[i]); });
        T* pd = dst.data<T>();
        for (std::size_t i = 0; i < acc.size(); ++i) pd[i] = store<T>(acc[i]);
    });
    return dst.view(shape);
}

inline Tensor add(const Tensor& a, const Tensor& b) { return binary(kernels::BinaryOp::add, a, b); }
inline Tensor sub(const Tensor& a, const Tensor& b) { return binary(kernels::BinaryOp::sub, a, b); }
inline Tensor mul(const Tensor& a, const Tensor& b) { return binary(kernels::BinaryOp::mul, a, b); }
inline Tensor div(const Tensor& a, const Tensor& b) { return binary(kernels::BinaryOp::div, a, b); }
inline Tensor neg(const Tensor& x) { return affine(x, -1.0); }

}  // namespace deviant::ops

namespace deviant {

namespace detail {
struct UnaryAttr { kernels::UnaryOp op; };
struct AffineAttr { double alpha; };
struct BinaryAttr { kernels::BinaryOp op; };
}  // namespace detail

// --- differentiable element-wise ops ---
inline Var unary(kernels::UnaryOp op, Var x) {
    Tensor y = ops::unary(op, x.value());
    return x.tape->record(y, {x}, [](Tape& t, const Node& n) {
        t.accumulate(n.in[0], ops::unary_backward(n.attr<detail::UnaryAttr>().op, n.saved[0], n.saved[1], output_grad(t, n)));
    }, {x.value(), y}, detail::UnaryAttr{op});
}
inline Var neg(Var x) { return unary(kernels::UnaryOp::neg, x); }
inline Var exp(Var x) { return unary(kernels::UnaryOp::exp, x); }
inline Var log(Var x) { return unary(kernels::UnaryOp::log, x); }
inline Var softplus(Var x) { return unary(kernels::UnaryOp::softplus, x); }
inline Var logsigmoid(Var x) { return unary(kernels::UnaryOp::logsigmoid, x); }
inline Var log1mexp(Var x) { return unary(kernels::UnaryOp::log1mexp, x); }
inline Var sigmoid(Var x) { return unary(kernels::UnaryOp::sigmoid, x); }
inline Var tanh(Var x) { return unary(kernels::UnaryOp::tanh, x); }
inline Var gelu_tanh(Var x) { return unary(kernels::UnaryOp::gelu_tanh, x); }
inline Var silu(Var x) { return unary(kernels::UnaryOp::silu, x); }
inline Var relu(Var x) { return unary(kernels::UnaryOp::relu, x); }
// silu(gate) * up as one node (SwiGLU's gated unit): it keeps gate and up for backward, where the
// unfused pair kept silu(gate) as well, a (tokens, intermediate) tensor per layer.
inline Var swiglu(Var gate, Var up) {
    return gate.tape->record(ops::swiglu(gate.value(), up.value()), {gate, up}, [](Tape& t, const Node& n) {
        auto [dgate, dup] = ops::swiglu_backward(n.saved[0], n.saved[1], output_grad(t, n));
        if (t.needs_grad(n, 0)) t.accumulate(n.in[0], std::move(dgate));
        if (t.needs_grad(n, 1)) t.accumulate(n.in[1], std::move(dup));
    }, {gate.value(), up.value()});
}
inline Var sqrt(Var x) { return unary(kernels::UnaryOp::sqrt, x); }
inline Var rsqrt(Var x) { return unary(kernels::UnaryOp::rsqrt, x); }
inline Var square(Var x) { return unary(kernels::UnaryOp::square, x); }

// alpha * x + beta
inline Var affine(Var x, double alpha, double beta = 0.0) {
    return x.tape->record(ops::affine(x.value(), alpha, beta), {x}, [](Tape& t, const Node& n) {
        t.accumulate(n.in[0], ops::affine(output_grad(t, n), n.attr<detail::AffineAttr>().alpha));
    }, {}, detail::AffineAttr{alpha});
}
inline Var scale(Var x, double alpha) { return affine(x, alpha, 0.0); }

inline Var binary(kernels::BinaryOp op, Var a, Var b) {
    return a.tape->record(ops::binary(op, a.value(), b.value()), {a, b}, [](Tape& t, const Node& n) {
        using kernels::BinaryOp;
        const Tensor& g = output_grad(t, n);
        const Tensor &a = n.saved[0], &b = n.saved[1];
        BinaryOp op = n.attr<detail::BinaryAttr>().op;
        if (t.needs_grad(n, 0)) {
            Tensor ga = op == BinaryOp::mul ? ops::mul(g, b) : op == BinaryOp::div ? ops::div(g, b) : g.clone();
            t.accumulate(n.in[0], ops::sum_to_shape(ga, a.shape()));
        }
        if (t.needs_grad(n, 1)) {
            Tensor gb = op == BinaryOp::add   ? g.clone()
                        : op == BinaryOp::sub ? ops::neg(g)
                        : op == BinaryOp::mul ? ops::mul(g, a)
                                              : ops::neg(ops::div(ops::mul(g, a), ops::mul(b, b)));
            t.accumulate(n.in[1], ops::sum_to_shape(gb, b.shape()));
        }
    }, {a.value(), b.value()}, detail::BinaryAttr{op});
}
inline Var add(Var a, Var b) { return binary(kernels::BinaryOp::add, a, b); }
inline Var sub(Var a, Var b) { return binary(kernels::BinaryOp::sub, a, b); }
inline Var mul(Var a, Var b) { return binary(kernels::BinaryOp::mul, a, b); }
inline Var div(Var a, Var b) { return binary(kernels::BinaryOp::div, a, b); }
inline Var operator+(Var a, Var b) { return add(a, b); }
inline Var operator-(Var a, Var b) { return sub(a, b); }
inline Var operator*(Var a, Var b) { return mul(a, b); }
inline Var operator/(Var a, Var b) { return div(a, b); }
inline Var operator-(Var a) { return neg(a); }
inline Var operator*(double s, Var a) { return scale(a, s); }
inline Var operator*(Var a, double s) { return scale(a, s); }
inline Var operator+(Var a, double s) { return affine(a, 1.0, s); }
inline Var operator-(Var a, double s) { return affine(a, 1.0, -s); }

}  // namespace deviant
