// deviant/ops/softmax.hpp — softmax and log_softmax along one axis (default the last), and their
// differentiable versions. Numerically stable: the row maximum is subtracted before exp.
//   softmax:     y = exp(x - m) / sum(exp(x - m)),     dx = y * (dy - sum(dy * y))
//   log_softmax: y = (x - m) - log(sum(exp(x - m))),     dx = dy - exp(y) * sum(dy)
// An axis other than the last is transposed to the end (one contiguous copy) and back.
// CPU references are here; the CUDA kernels (one block per row) are in kernels/softmax.cuh.
#pragma once
#include <cmath>

#include "deviant/ops/elementwise.hpp"

namespace deviant::kernels {
// x, y contiguous (rows, cols); y = softmax or log_softmax of each row.
DEVIANT_CUDA_LAUNCHER(softmax_forward, const TensorRef& x, const TensorRef& y, std::int64_t rows, std::int64_t cols, bool log)
// y is the forward output (softmax or log_softmax); dy, dx contiguous (rows, cols).
DEVIANT_CUDA_LAUNCHER(softmax_backward, const TensorRef& y, const TensorRef& dy, const TensorRef& dx, std::int64_t rows,
                      std::int64_t cols, bool log)
}  // namespace deviant::kernels

namespace deviant::ops {

namespace detail {
// x with `axis` moved to the end, contiguous.
inline Tensor axis_last(const Tensor& x, int axis) {
    return axis == x.rank() - 1 ? x.contiguous() : x.transpose(axis, -1).contiguous();
}
// Undoes axis_last on a result (a fresh contiguous tensor either way).
inline Tensor axis_back(const Tensor& y, int axis) { return axis == y.rank() - 1 ? y : y.transpose(axis, -1).contiguous(); }

inline Tensor softmax_forward(const Tensor& x_in, int axis_in, bool log) {
    require_float(x_in, log ? "log_softmax" : "softmax");
    int axis = x_in.shape().normalize(axis_in);
    Tensor x = axis_last(x_in, axis);
    Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
    std::int64_t cols = x.shape().back(), rows = cols ? x.numel() / cols : 0;
    if (x.numel() == 0) return axis_back(y, axis);
    if (x.device() == Device::cuda) {
        kernels::softmax_forward(x.ref(), y.ref(), rows, cols, log);
        return axis_back(y, axis);
    }
    DEVIANT_DISPATCH_FLOAT(x.dtype(), T, [&] {
        using C = compute_t<T>;
        for (std::int64_t r = 0; r < rows; ++r) {
            const T* px = x.data<T>() + r * cols;
            T* py = y.data<T>() + r * cols;
            C m = load(px[0]);
            for (std::int64_t j = 1; j < cols; ++j) m = std::max(m, load(px[j]));
            C s = C(0);
            for (std::int64_t j = 0; j < cols; ++j) s += cpu_exp(load(px[j]) - m);
            if (log) {
                C log_s = std::log(s);  // (x - m) - log(s): x - (m + log(s)) would round at the scale of m
                for (std::int64_t j = 0; j < cols; ++j) py[j] = store<T>((load(px[j]) - m) - log_s);
            } else {
                C inv = C(1) / s;
                for (std::int64_t j = 0; j < cols; ++j) py[j] = store<T>(cpu_exp(load(px[j]) - m) * inv);
            }
        }
    });
    return axis_back(y, axis);
}

inline Tensor softmax_backward(const Tensor& y_in, const Tensor& dy_in, int axis_in, bool log) {
    require_same(y_in, dy_in, log ? "log_softmax backward" : "softmax backward");
    int axis = y_in.shape().normalize(axis_in);
    Tensor y = axis_last(y_in, axis), dy = axis_last(dy_in, axis);
    Tensor dx = Tensor::empty(y.shape(), y.dtype(), y.device());
    std::int64_t cols = y.shape().back(), rows = cols ? y.numel() / cols : 0;
    if (y.numel() == 0) return axis_back(dx, axis);
    if (y.device() == Device::cuda) {
        kernels::softmax_backward(y.ref(), dy.ref(), dx.ref(), rows, cols, log);
        return axis_back(dx, axis);
    }
    DEVIANT_DISPATCH_FLOAT(y.dtype(), T, [&] {
        using C = compute_t<T>;
        for (std::int64_t r = 0; r < rows; ++r) {
            const T* py = y.data<T>() + r * cols;
            const T* pg = dy.data<T>() + r * cols;
            T* pd = dx.data<T>() + r * cols;
            C s = C(0);
            for (std::int64_t j = 0; j < cols; ++j) s += log ? load(pg[j]) : load(pg[j]) * load(py[j]);
            for (std::int64_t j = 0; j < cols; ++j) {
                C yj = load(py[j]), gj = load(pg[j]);
                pd[j] = store<T>(log ? gj - cpu_exp(yj) * s : yj * (gj - s));
            }
        }
    });
    return axis_back(dx, axis);
}
}  // namespace detail

inline Tensor softmax(const Tensor& x, int axis = -1) { return detail::softmax_forward(x, axis, false); }
inline Tensor log_softmax(const Tensor& x, int axis = -1) { return detail::softmax_forward(x, axis, true); }
// dx from the softmax output y and the output gradient dy.
inline Tensor softmax_backward(const Tensor& y, const Tensor& dy, int axis = -1) { return detail::softmax_backward(y, dy, axis, false); }
// dx from the log_softmax output y and the output gradient dy.
inline Tensor log_softmax_backward(const Tensor& y, const Tensor& dy, int axis = -1) {
    return detail::softmax_backward(y, dy, axis, true);
}

}  // namespace deviant::ops

namespace deviant {

namespace detail {
struct SoftmaxAttr {
    int axis;
    bool log;
};
}  // namespace detail

inline Var softmax(Var x, int axis = -1) {
    int a = x.shape().normalize(axis);
    Tensor y = ops::softmax(x.value(), a);
    return x.tape->record(y, {x}, [](Tape& t, const Node& n) {
        t.accumulate(n.in[0], ops::softmax_backward(n.saved[0], output_grad(t, n), n.attr<detail::SoftmaxAttr>().axis));
    }, {y}, detail::SoftmaxAttr{a, false});
}
inline Var log_softmax(Var x, int axis = -1) {
    int a = x.shape().normalize(axis);
    Tensor y = ops::log_softmax(x.value(), a);
    return x.tape->record(y, {x}, [](Tape& t, const Node& n) {
        t.accumulate(n.in[0], ops::log_softmax_backward(n.saved[0], output_grad(t, n), n.attr<detail::SoftmaxAttr>().axis));
    }, {y}, detail::SoftmaxAttr{a, true});
}

}  // namespace deviant
