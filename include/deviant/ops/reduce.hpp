// deviant/ops/reduce.hpp — reductions along one axis (sum, mean, max with its argmax) and over
// every element (sum_all, mean_all), with their differentiable versions.
// The reduced axis splits a contiguous tensor into (outer, n, inner): the output is (outer, inner)
// reshaped to the input shape without that axis (or with extent 1 there when keepdim).
// Accumulation runs in float for float32/bfloat16 and in double for float64.
// max ties pick the first index; a NaN counts as larger than any number (it propagates).
// CPU references are here; the CUDA kernels are in kernels/reduce.cuh.
#pragma once
#include "deviant/ops/elementwise.hpp"
#include "deviant/ops/reduce_math.hpp"

namespace deviant::kernels {
// dx (outer, n, inner) = dy (outer, inner) scattered to the argmax position along n, zero elsewhere.
DEVIANT_CUDA_LAUNCHER(reduce_max_backward, const TensorRef& dy, const TensorRef& argmax, const TensorRef& dx,
                      std::int64_t outer, std::int64_t n, std::int64_t inner)
}  // namespace deviant::kernels

namespace deviant::ops {

// The (outer, n, inner) split of `shape` around `axis` (already normalised).
struct AxisSplit {
    std::int64_t outer = 1, n = 1, inner = 1;
};
inline AxisSplit split_at(const Shape& shape, int axis) {
    AxisSplit s;
    for (int i = 0; i < shape.rank(); ++i) {
        if (i < axis) s.outer *= shape[i];
        else if (i == axis) s.n = shape[i];
        else s.inner *= shape[i];
    }
    return s;
}
// `shape` with `axis` removed, or set to 1 when keepdim.
inline Shape reduced_shape(const Shape& shape, int axis, bool keepdim) {
    Shape out = shape;
    if (keepdim) out[axis] = 1;
    else out.erase(axis);
    return out;
}

struct MaxResult {
    Tensor values;   // the maxima
    Tensor indices;  // int64 position of each maximum along the reduced axis (first one on ties)
};

namespace detail {
// Reduces x along `axis`; for max also fills `argmax` (int64, same shape as the result).
inline Tensor reduce(kernels::ReduceOp op, const Tensor& x_in, int axis_in, bool keepdim, Tensor* argmax) {
    require_float(x_in, "reduce");
    int axis = x_in.shape().normalize(axis_in);
    Tensor x = x_in.contiguous();
    AxisSplit s = split_at(x.shape(), axis);
    Shape out_shape = reduced_shape(x.shape(), axis, keepdim);
    DEVIANT_REQUIRE(op != kernels::ReduceOp::max || s.n > 0 || s.outer * s.inner == 0,
                    "max over axis {} of extent 0 in shape {}", axis_in, x.shape().str());
    Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
    Tensor idx = op == kernels::ReduceOp::max ? Tensor::empty(out_shape, DType::i64, x.device()) : Tensor();
    if (argmax) *argmax = idx;
    if (y.numel() == 0) return y;
    if (x.device() == Device::cuda) {
        kernels::reduce_axis(op, x.ref(), y.ref(), idx.defined() ? idx.ref() : TensorRef{}, s.outer, s.n, s.inner);
        return y;
    }
    DEVIANT_DISPATCH_FLOAT(x.dtype(), T, [&] {
        using C = compute_t<T>;
        const T* px = x.data<T>();
        T* py = y.data<T>();
        std::int64_t* pi = idx.defined() ? idx.data<std::int64_t>() : nullptr;
        for (std::int64_t o = 0; o < s.outer; ++o) {
            for (std::int64_t in = 0; in < s.inner; ++in) {
                const T* row = px + o * s.n * s.inner + in;
                std::int64_t out = o * s.inner + in;
                if (op == kernels::ReduceOp::max) {
                    C best = load(row[0]);
                    std::int64_t bi = 0;
                    for (std::int64_t j = 1; j < s.n; ++j) {
                        C v = load(row[j * s.inner]);
                        if (math::max_better(v, j, best, bi)) best = v, bi = j;
                    }
                    py[out] = store<T>(best);
                    pi[out] = bi;
                } else {
                    C acc = C(0);
                    for (std::int64_t j = 0; j < s.n; ++j) acc += load(row[j * s.inner]);
                    if (op == kernels::ReduceOp::mean) acc /= C(s.n);
                    py[out] = store<T>(acc);
                }
            }
        }
    });
    return y;
}
}  // namespace detail

// Sum / mean / max of x along `axis` (negative counts from the end).
inline Tensor sum(const Tensor& x, int axis, bool keepdim = false) { return detail::reduce(kernels::ReduceOp::sum, x, axis, keepdim, nullptr); }
inline Tensor mean(const Tensor& x, int axis, bool keepdim = false) { return detail::reduce(kernels::ReduceOp::mean, x, axis, keepdim, nullptr); }
inline MaxResult max_with_index(const Tensor& x, int axis, bool keepdim = false) {
    MaxResult r;
    r.values = detail::reduce(kernels::ReduceOp::max, x, axis, keepdim, &r.indices);
    return r;
}
inline Tensor max(const Tensor& x, int axis, bool keepdim = false) { return max_with_index(x, axis, keepdim).values; }

// Sum / mean of every element: a rank-0 tensor (shape (), one element).
inline Tensor sum_all(const Tensor& x) {
    detail::require_float(x, "sum_all");
    return sum(x.reshape({x.numel()}), 0, false);
}
inline Tensor mean_all(const Tensor& x) {
    detail::require_float(x, "mean_all");
    return mean(x.reshape({x.numel()}), 0, false);
}

// Gradient of max along `axis`: dy (result shape, keepdim or not) placed at each argmax of x_shape.
inline Tensor max_backward(const Tensor& dy_in, const Tensor& argmax_in, const Shape& x_shape, int axis_in) {
    int axis = x_shape.normalize(axis_in);
    AxisSplit s = split_at(x_shape, axis);
    Tensor dy = dy_in.contiguous(), argmax = argmax_in.contiguous();
    DEVIANT_REQUIRE(dy.numel() == s.outer * s.inner && argmax.numel() == dy.numel() && argmax.dtype() == DType::i64,
                    "max backward: gradient {} / indices {} do not match input {} at axis {}", dy.shape().str(),
                    argmax.shape().str(), x_shape.str(), axis_in);
    Tensor dx = Tensor::empty(x_shape, dy.dtype(), dy.device());
    if (dx.numel() == 0) return dx;
    if (dy.device() == Device::cuda) {
        kernels::reduce_max_backward(dy.ref(), argmax.ref(), dx.ref(), s.outer, s.n, s.inner);
        return dx;
    }
    DEVIANT_DISPATCH_FLOAT(dy.dtype(), T, [&] {
        T* pdx = dx.data<T>();
        const T* pdy = dy.data<T>();
        const std::int64_t* pi = argmax.data<std::int64_t>();
        std::fill_n(pdx, dx.numel(), store<T>(compute_t<T>(0)));
        for (std::int64_t o = 0; o < s.outer; ++o)
            for (std::int64_t in = 0; in < s.inner; ++in) {
                std::int64_t out = o * s.inner + in;
                pdx[(o * s.n + pi[out]) * s.inner + in] = pdy[out];
            }
    });
    return dx;
}

// A fresh contiguous tensor of `x_shape` holding g (the reduced shape) repeated along `axis`.
inline Tensor broadcast_along(const Tensor& g, const Shape& x_shape, int axis_in) {
    int axis = x_shape.normalize(axis_in);
    return g.reshape(reduced_shape(x_shape, axis, true)).expand(x_shape).to(g.device(), g.dtype(), /*force_copy=*/true);
}

}  // namespace deviant::ops

namespace deviant {

namespace detail {
struct ReduceAttr {
    int axis;
    kernels::ReduceOp op;
};
}  // namespace detail

// --- differentiable reductions ---
inline Var sum(Var x, int axis, bool keepdim = false) {
    int a = x.shape().normalize(axis);
    return x.tape->record(ops::sum(x.value(), a, keepdim), {x}, [](Tape& t, const Node& n) {
        const Shape& xs = t.value(n.in[0]).shape();
        t.accumulate(n.in[0], ops::broadcast_along(output_grad(t, n), xs, n.attr<detail::ReduceAttr>().axis));
    }, {}, detail::ReduceAttr{a, kernels::ReduceOp::sum});
}
inline Var mean(Var x, int axis, bool keepdim = false) {
    int a = x.shape().normalize(axis);
    return x.tape->record(ops::mean(x.value(), a, keepdim), {x}, [](Tape& t, const Node& n) {
        const Shape& xs = t.value(n.in[0]).shape();
        int axis = n.attr<detail::ReduceAttr>().axis;
        std::int64_t count = xs[axis];
        Tensor g = ops::affine(output_grad(t, n), count > 0 ? 1.0 / double(count) : 0.0);
        t.accumulate(n.in[0], ops::broadcast_along(g, xs, axis));
    }, {}, detail::ReduceAttr{a, kernels::ReduceOp::mean});
}
// Maximum along `axis`; the gradient flows to the first position holding each maximum.
inline Var max(Var x, int axis, bool keepdim = false) {
    int a = x.shape().normalize(axis);
    ops::MaxResult r = ops::max_with_index(x.value(), a, keepdim);
    return x.tape->record(r.values, {x}, [](Tape& t, const Node& n) {
        const Shape& xs = t.value(n.in[0]).shape();
        t.accumulate(n.in[0], ops::max_backward(output_grad(t, n), n.saved[0], xs, n.attr<detail::ReduceAttr>().axis));
    }, {r.indices}, detail::ReduceAttr{a, kernels::ReduceOp::max});
}
// Sum / mean of every element: rank-0 result.
inline Var sum_all(Var x) {
    return x.tape->record(ops::sum_all(x.value()), {x}, [](Tape& t, const Node& n) {
        const Tensor& g = output_grad(t, n);
        const Shape& xs = t.value(n.in[0]).shape();
        t.accumulate(n.in[0], g.reshape(Shape{}).expand(xs).to(g.device(), g.dtype(), true));
    });
}
inline Var mean_all(Var x) {
    return x.tape->record(ops::mean_all(x.value()), {x}, [](Tape& t, const Node& n) {
        const Shape& xs = t.value(n.in[0]).shape();
        std::int64_t count = xs.numel();
        Tensor g = ops::affine(output_grad(t, n), count > 0 ? 1.0 / double(count) : 0.0);
        t.accumulate(n.in[0], g.reshape(Shape{}).expand(xs).to(g.device(), g.dtype(), true));
    });
}

}  // namespace deviant
