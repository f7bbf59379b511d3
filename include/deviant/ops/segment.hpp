// deviant/ops/segment.hpp — segment_sum: the sum of the elements of x that share a segment id.
// Why: a packed batch holds several sequences per row; a sequence's log-prob is the sum of its
// token log-probs wherever they sit, so sums run over a per-token sequence index, not per row.
//
//   segment_sum(x (any shape), ids (int64, x.numel() elements), S) -> (S,)
//   out[s] = sum of x[i] over ids[i] == s; ids[i] == -1 ignores x[i]; an empty segment sums to 0.
//
// Deterministic on both devices: the CPU sums each segment in element order; CUDA runs one block
// per segment over the segment's positions (a stable sort by id, built on the host from the ids)
// with a fixed reduction tree, so two runs agree bit for bit. The ids are read on the host (they
// come from batching, not from the model); they may live on either device.
// Backward: dx[i] = dout[ids[i]] (0 where ids[i] == -1), a gather.
// CPU references are here; the CUDA kernels are in kernels/segment.cuh.
#pragma once
#include <vector>

#include "deviant/ops/elementwise.hpp"

namespace deviant::kernels {
// out (S,) contiguous: out[s] = sum of x[order[j]] for j in [offsets[s], offsets[s+1]); x, order
// (int64, positions of x grouped by segment) and offsets (int64, S+1) contiguous.
DEVIANT_CUDA_LAUNCHER(segment_sum_forward, const TensorRef& x, const TensorRef& order, const TensorRef& offsets, const TensorRef& out)
// dx (contiguous, N elements) = dy[ids[i]], or 0 where ids[i] == -1; ids int64 (N,), dy (S,).
DEVIANT_CUDA_LAUNCHER(segment_sum_backward, const TensorRef& dy, const TensorRef& ids, const TensorRef& dx)
}  // namespace deviant::kernels

namespace deviant::ops {

namespace detail {
// Host copy of the ids, checked: int64, `n` elements, every value in [-1, num_segments).
inline Tensor checked_segment_ids(const Tensor& ids_in, std::int64_t n, std::int64_t num_segments, const Shape& x_shape) {
    DEVIANT_REQUIRE(ids_in.defined(), "segment_sum: undefined segment ids");
    DEVIANT_REQUIRE(ids_in.dtype() == DType::i64, "segment_sum: segment ids must be int64, got {}", ids_in.describe());
    DEVIANT_REQUIRE(ids_in.numel() == n, "segment_sum: {} segment ids {} for {} elements of input {}", ids_in.numel(),
                    ids_in.shape().str(), n, x_shape.str());
    DEVIANT_REQUIRE(num_segments >= 0, "segment_sum: negative number of segments {}", num_segments);
    Tensor ids = ids_in.to(Device::cpu).contiguous();
    const std::int64_t* p = ids.data<std::int64_t>();
    for (std::int64_t i = 0; i < n; ++i)
        DEVIANT_REQUIRE(p[i] >= -1 && p[i] < num_segments, "segment_sum: segment id {} at position {} outside [-1, {})", p[i], i,
                        num_segments);
    return ids;
}
}  // namespace detail

// (num_segments,) sums of x's elements per segment id; see the header comment.
inline Tensor segment_sum(const Tensor& x_in, const Tensor& segment_ids, std::int64_t num_segments) {
    detail::require_float(x_in, "segment_sum");
    Tensor x = x_in.contiguous();
    const std::int64_t n = x.numel();
    Tensor ids = detail::checked_segment_ids(segment_ids, n, num_segments, x.shape());
    const std::int64_t* pi = ids.data<std::int64_t>();
    if (x.device() == Device::cuda) {
        // Counting sort by segment (stable: positions keep their order inside a segment).
        std::vector<std::int64_t> offsets(std::size_t(num_segments + 1), 0), order;
        for (std::int64_t i = 0; i < n; ++i)
            if (pi[i] >= 0) ++offsets[std::size_t(pi[i] + 1)];
        for (std::int64_t s = 0; s < num_segments; ++s) offsets[std::size_t(s + 1)] += offsets[std::size_t(s)];
        order.resize(std::size_t(offsets.back()));
        std::vector<std::int64_t> fill(offsets.begin(), offsets.end() - 1);
        for (std::int64_t i = 0; i < n; ++i)
            if (pi[i] >= 0) order[std::size_t(fill[std::size_t(pi[i])]++)] = i;
        Tensor out = Tensor::empty({num_segments}, x.dtype(), Device::cuda);
        if (num_segments == 0) return out;
        Tensor d_order = Tensor::from(order, {std::int64_t(order.size())}).to(Device::cuda);
        Tensor d_offsets = Tensor::from(offsets, {num_segments + 1}).to(Device::cuda);
        kernels::segment_sum_forward(x.ref(), d_order.ref(), d_offsets.ref(), out.ref());
        return out;
    }
    Tensor out = Tensor::empty({num_segments}, x.dtype());
    DEVIANT_DISPATCH_FLOAT(x.dtype(), T, [&] {
        using C = compute_t<T>;
        const T* px = x.data<T>();
        std::vector<C> acc(std::size_t(num_segments), C(0));
        for (std::int64_t i = 0; i < n; ++i)
            if (pi[i] >= 0) acc[std::size_t(pi[i])] += load(px[i]);
        T* po = out.data<T>();
        for (std::int64_t s = 0; s < num_segments; ++s) po[s] = store<T>(acc[std::size_t(s)]);
    });
    return out;
}

// dx (x_shape) = dy (S,) gathered at the segment ids, 0 where the id is -1.
inline Tensor segment_sum_backward(const Tensor& dy_in, const Tensor& segment_ids, const Shape& x_shape) {
    Tensor dy = dy_in.contiguous();
    DEVIANT_REQUIRE(dy.rank() == 1, "segment_sum backward: gradient must be (S,), got {}", dy.shape().str());
    const std::int64_t n = x_shape.numel(), S = dy.size(0);
    Tensor dx = Tensor::empty(x_shape, dy.dtype(), dy.device());
    if (n == 0) return dx;
    if (dy.device() == Device::cuda) {
        Tensor ids = segment_ids.to(Device::cuda).contiguous();
        DEVIANT_REQUIRE(ids.numel() == n && ids.dtype() == DType::i64, "segment_sum backward: ids {} for input {}", ids.describe(),
                        x_shape.str());
        kernels::segment_sum_backward(dy.ref(), ids.ref(), dx.ref());
        return dx;
    }
    Tensor ids = detail::checked_segment_ids(segment_ids, n, S, x_shape);
    const std::int64_t* pi = ids.data<std::int64_t>();
    DEVIANT_DISPATCH_FLOAT(dy.dtype(), T, [&] {
        const T* pg = dy.data<T>();
        T* pd = dx.data<T>();
        for (std::int64_t i = 0; i < n; ++i) pd[i] = pi[i] >= 0 ? pg[pi[i]] : store<T>(compute_t<T>(0));
    });
    return dx;
}

}  // namespace deviant::ops

namespace deviant {

// Differentiable segment_sum; the ids are not differentiated (see ops::segment_sum).
inline Var segment_sum(Var x, const Tensor& segment_ids, std::int64_t num_segments) {
    Tensor out = ops::segment_sum(x.value(), segment_ids, num_segments);
    // Saved on x's device so that the backward gathers there without another copy.
    Tensor ids = segment_ids.to(x.device()).contiguous();
    return x.tape->record(out, {x}, [](Tape& t, const Node& n) {
        t.accumulate(n.in[0], ops::segment_sum_backward(output_grad(t, n), n.saved[0], t.value(n.in[0]).shape()));
    }, {ids});
}

}  // namespace deviant
