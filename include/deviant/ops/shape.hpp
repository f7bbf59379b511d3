// deviant/ops/shape.hpp — differentiable view ops on Var: reshape, transpose, permute, narrow,
// slice, select, unsqueeze, squeeze, contiguous, expand.
// Forward passes use Tensor's zero-copy views (reshape copies only when the layout forces it).
// Backward rules turn the output gradient (always a contiguous tensor of the output's shape)
// back into a fresh contiguous gradient of the input's shape; narrow/slice/select write it into
// the matching sub-view of a zero tensor with ops::copy_into (strided destination; CUDA kernel in
// kernels/shape.cuh).
#pragma once
#include <vector>

#include "deviant/ops/elementwise.hpp"

namespace deviant::kernels {
// dst (any non-overlapping strides) = src (any strides); same dtype, same shape.
DEVIANT_CUDA_LAUNCHER(copy_into_strided, const TensorRef& dst, const TensorRef& src)
}  // namespace deviant::kernels

namespace deviant::ops {

// Copies `src` into the (possibly non-contiguous) view `dst_view`, e.g. a slice of a larger
// tensor. Shapes, dtypes and devices must match; `dst_view` must not alias itself (no stride-0
// axes of extent > 1, as an expand() view has).
inline void copy_into(Tensor& dst_view, const Tensor& src) {
    DEVIANT_REQUIRE(dst_view.defined() && src.defined(), "copy_into: undefined tensor");
    DEVIANT_REQUIRE(dst_view.shape() == src.shape(), "copy_into: source shape {} does not match destination shape {}",
                    src.shape().str(), dst_view.shape().str());
    DEVIANT_REQUIRE(dst_view.dtype() == src.dtype(), "copy_into: dtype mismatch, source {} vs destination {}", src.describe(),
                    dst_view.describe());
    require_same_device(dst_view, src, "copy_into");
    for (int i = 0; i < dst_view.rank(); ++i)
        DEVIANT_REQUIRE(dst_view.strides()[i] != 0 || dst_view.size(i) <= 1,
                        "copy_into: destination {} is a broadcast view (stride 0 on axis {})", dst_view.describe(), i);
    if (src.numel() == 0) return;
    if (dst_view.device() == Device::cuda) {
        kernels::copy_into_strided(dst_view.ref(), src.ref());
        return;
    }
    auto run = [&](auto tag) {
        using U = decltype(tag);  // an unsigned type of the element's size: copying bits is exact
        U* d = static_cast<U*>(dst_view.raw_data());
        const U* s = static_cast<const U*>(src.raw_data());
        detail::walk<2>(src.shape(), {dst_view.strides().begin(), src.strides().begin()},
                        [&](std::int64_t, const auto& off) { d[off[0]] = s[off[1]]; });
    };
    switch (dtype_size(src.dtype())) {
        case 1: run(std::uint8_t{}); break;
        case 2: run(std::uint16_t{}); break;
        case 4: run(std::uint32_t{}); break;
        default: run(std::uint64_t{}); break;
    }
}

// A fresh contiguous tensor with the elements of `view_of_grad` (which shares a gradient's storage).
inline Tensor fresh_contiguous(const Tensor& view_of_grad) {
    return view_of_grad.is_contiguous() ? view_of_grad.clone() : view_of_grad.contiguous();
}

}  // namespace deviant::ops

namespace deviant {

namespace detail {
struct SliceAttr {
    std::int32_t axis;
    std::int64_t start, end, step;
};
struct AxisPairAttr { std::int32_t a, b; };
struct PermuteAttr { std::array<std::int8_t, Shape::max_dims> inverse; };

// Backward shared by the ops whose output holds the input's elements in the same order.
inline void same_order_backward(Tape& t, const Node& n) {
    t.accumulate(n.in[0], ops::fresh_contiguous(output_grad(t, n)).view(t.value(n.in[0]).shape()));
}
}  // namespace detail

// x viewed (or, when its layout does not allow a view, copied) as `shape`; one extent may be -1.
inline Var reshape(Var x, const Shape& shape) {
    return x.tape->record(x.value().reshape(shape), {x}, detail::same_order_backward);
}

// Swaps axes a and b (a view).
inline Var transpose(Var x, int a, int b) {
    a = x.shape().normalize(a), b = x.shape().normalize(b);
    return x.tape->record(x.value().transpose(a, b), {x}, [](Tape& t, const Node& n) {
        const auto& at = n.attr<detail::AxisPairAttr>();
        t.accumulate(n.in[0], ops::fresh_contiguous(output_grad(t, n).transpose(at.a, at.b)));
    }, {}, detail::AxisPairAttr{a, b});
}

// Output axis i is input axis order[i] (a view). `order` must name every axis once.
inline Var permute(Var x, std::span<const int> order) {
    const Shape& s = x.shape();
    std::string listed;
    for (int o : order) listed += (listed.empty() ? "" : ", ") + std::to_string(o);
    DEVIANT_REQUIRE(int(order.size()) == s.rank(), "permute: order ({}) has {} axes for shape {}", listed, order.size(), s.str());
    detail::PermuteAttr attr{};
    std::array<bool, Shape::max_dims> seen{};
    for (int i = 0; i < s.rank(); ++i) {
        int a = order[i] < 0 ? order[i] + s.rank() : order[i];
        DEVIANT_REQUIRE(a >= 0 && a < s.rank() && !seen[a], "permute: order ({}) is not a permutation of the axes of {}", listed, s.str());
        seen[a] = true;
        attr.inverse[a] = std::int8_t(i);
    }
    return x.tape->record(x.value().permute(order), {x}, [](Tape& t, const Node& n) {
        const Tensor& g = output_grad(t, n);
        const auto& inv = n.attr<detail::PermuteAttr>().inverse;
        std::vector<int> back(inv.begin(), inv.begin() + g.rank());
        t.accumulate(n.in[0], ops::fresh_contiguous(g.permute(back)));
    }, {}, attr);
}
inline Var permute(Var x, std::initializer_list<int> order) { return permute(x, std::span<const int>(order.begin(), order.size())); }

// Elements [start, end) along `axis`, every `step`-th (a view). Negative start/end count from the end.
inline Var slice(Var x, int axis, std::int64_t start, std::int64_t end, std::int64_t step = 1) {
    axis = x.shape().normalize(axis);
    return x.tape->record(x.value().slice(axis, start, end, step), {x}, [](Tape& t, const Node& n) {
        const auto& a = n.attr<detail::SliceAttr>();
        const Tensor& xv = t.value(n.in[0]);
        Tensor dx = Tensor::zeros(xv.shape(), xv.dtype(), xv.device());
        Tensor part = dx.slice(a.axis, a.start, a.end, a.step);
        ops::copy_into(part, output_grad(t, n));
        t.accumulate(n.in[0], std::move(dx));
    }, {}, detail::SliceAttr{axis, start, end, step});
}

// `length` elements along `axis` from `start` (negative start counts from the end).
inline Var narrow(Var x, int axis, std::int64_t start, std::int64_t length) {
    axis = x.shape().normalize(axis);
    if (start < 0) start += x.shape()[axis];
    DEVIANT_REQUIRE(start >= 0 && length >= 0 && start + length <= x.shape()[axis],
                    "narrow: start {} length {} out of range for axis {} of {}", start, length, axis, x.shape().str());
    return slice(x, axis, start, start + length);
}

// The sub-tensor at `index` along `axis`, which is removed (a view).
inline Var select(Var x, int axis, std::int64_t index) {
    axis = x.shape().normalize(axis);
    const std::int64_t extent = x.shape()[axis];
    DEVIANT_REQUIRE(index >= -extent && index < extent, "select: index {} out of range for axis {} of {}", index, axis, x.shape().str());
    if (index < 0) index += extent;
    return x.tape->record(x.value().select(axis, index), {x}, [](Tape& t, const Node& n) {
        const auto& a = n.attr<detail::SliceAttr>();
        const Tensor& xv = t.value(n.in[0]);
        Tensor dx = Tensor::zeros(xv.shape(), xv.dtype(), xv.device());
        Tensor part = dx.select(a.axis, a.start);
        ops::copy_into(part, output_grad(t, n));
        t.accumulate(n.in[0], std::move(dx));
    }, {}, detail::SliceAttr{axis, index, index + 1, 1});
}

// Inserts an axis of extent 1 at `axis` (negative counts from the end of the result).
inline Var unsqueeze(Var x, int axis) { return x.tape->record(x.value().unsqueeze(axis), {x}, detail::same_order_backward); }

// Removes `axis`, which must have extent 1.
inline Var squeeze(Var x, int axis) { return x.tape->record(x.value().squeeze(axis), {x}, detail::same_order_backward); }

// x itself when already contiguous, otherwise a contiguous copy.
inline Var contiguous(Var x) {
    if (x.value().is_contiguous()) return x;
    return x.tape->record(x.value().contiguous(), {x}, detail::same_order_backward);
}

// Broadcast view of x to `shape` (numpy rules); backward sums over the broadcast axes.
inline Var expand(Var x, const Shape& shape) {
    return x.tape->record(x.value().expand(shape), {x}, [](Tape& t, const Node& n) {
        const Tensor& g = output_grad(t, n);
        Tensor dx = ops::sum_to_shape(g, t.value(n.in[0]).shape());
        t.accumulate(n.in[0], dx.same_storage(g) ? ops::fresh_contiguous(dx) : std::move(dx));
    });
}

}  // namespace deviant
