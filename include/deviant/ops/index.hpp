// deviant/ops/index.hpp — indexing ops: gather (torch.gather semantics), embedding lookup,
// concat / split, masked_fill and where.
// Index tensors are int64, masks uint8 (nonzero = set). Out-of-range indices are errors that
// name the offending value, its position and the valid range (checked on the host for CPU
// tensors, by a device-side search copied back for CUDA tensors).
// Backward rules are deterministic on both devices: gather's scatter-add runs one sequential
// loop per index row; embedding's CUDA backward sorts (id, position) pairs (stable radix sort,
// CCCL/CUB) and sums each id's rows in position order — the CPU reference uses the same order.
// CPU references are here; the CUDA kernels are in kernels/index.cuh.
#pragma once
#include <optional>
#include <algorithm>
#include <numeric>

#include "deviant/ops/shape.hpp"

namespace deviant::kernels {
// Smallest position p in `index` (contiguous int64) with index[p] outside [0, limit); -1 if none.
DEVIANT_CUDA_LAUNCHER(find_out_of_range, const TensorRef& index, std::int64_t limit, std::int64_t& bad_position,
                      std::int64_t& bad_value)
// out (contiguous, index's shape) = x gathered along `axis` at `index` (contiguous); x any strides.
DEVIANT_CUDA_LAUNCHER(gather_forward, const TensorRef& x, const TensorRef& index, const TensorRef& out, int axis)
// dx (contiguous, zero-filled) += dy scattered along `axis` at `index`; dy, index contiguous, same shape.
DEVIANT_CUDA_LAUNCHER(gather_backward, const TensorRef& dy, const TensorRef& index, const TensorRef& dx, int axis)
// out (N, C) = weight (V, C) rows at ids (N); all contiguous.
DEVIANT_CUDA_LAUNCHER(embedding_forward, const TensorRef& weight, const TensorRef& ids, const TensorRef& out)
// dweight (V, C) = sum of dy (N, C) rows per id; rows of ids that do not occur are written as zero.
DEVIANT_CUDA_LAUNCHER(embedding_backward, const TensorRef& ids, const TensorRef& dy, const TensorRef& dweight)
// out (contiguous) = mask ? a : b; mask (uint8), a and b are strided (broadcast) views of out's shape.
DEVIANT_CUDA_LAUNCHER(where_forward, const TensorRef& mask, const TensorRef& a, const TensorRef& b, const TensorRef& out)
// out (contiguous) = (mask != 0) == fill_where_set ? value : x; x and mask strided views of out's shape.
DEVIANT_CUDA_LAUNCHER(masked_fill, const TensorRef& x, const TensorRef& mask, const TensorRef& out, double value,
                      bool fill_where_set)
}  // namespace deviant::kernels

namespace deviant::ops {

namespace detail {
inline void require_index_tensor(const Tensor& index, const char* op) {
    DEVIANT_REQUIRE(index.defined(), "{}: undefined index tensor", op);
    DEVIANT_REQUIRE(index.dtype() == DType::i64, "{}: indices must be int64, got {}", op, index.describe());
}
inline void require_mask_tensor(const Tensor& mask, const char* op) {
    DEVIANT_REQUIRE(mask.defined(), "{}: undefined mask", op);
    DEVIANT_REQUIRE(mask.dtype() == DType::u8, "{}: mask must be uint8, got {}", op, mask.describe());
}
// First entry of a contiguous int64 tensor outside [0, limit): {position, value}, or {-1, 0}.
inline std::pair<std::int64_t, std::int64_t> find_out_of_range(const Tensor& index, std::int64_t limit) {
    std::int64_t pos = -1, value = 0;
    if (index.numel() == 0) return {pos, value};
    if (index.device() == Device::cuda) {
        kernels::find_out_of_range(index.ref(), limit, pos, value);
        return {pos, value};
    }
    const std::int64_t* p = index.data<std::int64_t>();
    for (std::int64_t i = 0, n = index.numel(); i < n; ++i)
        if (p[i] < 0 || p[i] >= limit) return {i, p[i]};
    return {pos, value};
}
}  // namespace detail

// --- gather: out[..., i, ...] = x[..., index[..., i, ...], ...] along `axis` (torch.gather) ---
// index has x's rank and, on every other axis, an extent no larger than x's; out has index's shape.
inline Tensor gather(const Tensor& x, const Tensor& index_in, int axis) {
    detail::require_float(x, "gather");
    detail::require_index_tensor(index_in, "gather");
    require_same_device(x, index_in, "gather");
    DEVIANT_REQUIRE(index_in.rank() == x.rank(), "gather: index {} must have the rank of input {}", index_in.shape().str(), x.shape().str());
    axis = x.shape().normalize(axis);
    for (int d = 0; d < x.rank(); ++d)
        DEVIANT_REQUIRE(d == axis || index_in.size(d) <= x.size(d), "gather: index {} larger than input {} on axis {}",
                        index_in.shape().str(), x.shape().str(), d);
    Tensor index = index_in.contiguous();
    auto [pos, value] = detail::find_out_of_range(index, x.size(axis));
    DEVIANT_REQUIRE(pos < 0, "gather: index {} at position {} out of range [0, {}) for axis {} of input {}", value, pos, x.size(axis),
                    axis, x.shape().str());
    Tensor out = Tensor::empty(index.shape(), x.dtype(), x.device());
    if (out.numel() == 0) return out;
    if (x.device() == Device::cuda) {
        kernels::gather_forward(x.ref(), index.ref(), out.ref(), axis);
        return out;
    }
    Shape base_strides = x.strides();
    base_strides[axis] = 0;
    std::int64_t axis_stride = x.strides()[axis];
    const std::int64_t* pi = index.data<std::int64_t>();
    DEVIANT_DISPATCH_FLOAT(x.dtype(), T, [&] {
        const T* px = static_cast<const T*>(x.raw_data());
        T* po = out.data<T>();
        ::deviant::ops::detail::walk<1>(index.shape(), {base_strides.begin()},
                                        [&](std::int64_t i, const auto& off) { po[i] = px[off[0] + pi[i] * axis_stride]; });
    });
    return out;
}

// dx (x_shape) with dy (index's shape) added at the gathered positions. Duplicate indices add up
// in row-major order of `index`, identically on CPU and CUDA.
inline Tensor gather_backward(const Tensor& dy_in, const Tensor& index_in, int axis, const Shape& x_shape) {
    Tensor dy = dy_in.contiguous(), index = index_in.contiguous();
    DEVIANT_REQUIRE(dy.shape() == index.shape(), "gather backward: gradient {} vs index {}", dy.shape().str(), index.shape().str());
    require_same_device(dy, index, "gather backward");
    axis = x_shape.normalize(axis);
    Tensor dx = Tensor::zeros(x_shape, dy.dtype(), dy.device());
    if (dy.numel() == 0) return dx;
    if (dy.device() == Device::cuda) {
        kernels::gather_backward(dy.ref(), index.ref(), dx.ref(), axis);
        return dx;
    }
    Shape base_strides = dx.strides();
    base_strides[axis] = 0;
    std::int64_t axis_stride = dx.strides()[axis];
    const std::int64_t* pi = index.data<std::int64_t>();
    DEVIANT_DISPATCH_FLOAT(dy.dtype(), T, [&] {
        const T* pg = dy.data<T>();
        T* pd = dx.data<T>();
        ::deviant::ops::detail::walk<1>(index.shape(), {base_strides.begin()}, [&](std::int64_t i, const auto& off) {
            T& d = pd[off[0] + pi[i] * axis_stride];
            d = store<T>(load(d) + load(pg[i]));
        });
    });
    return dx;
}

// --- embedding: out (ids.shape..., C) = weight (V, C) rows at ids ---
inline Tensor embedding(const Tensor& weight_in, const Tensor& ids_in) {
    detail::require_float(weight_in, "embedding");
    detail::require_index_tensor(ids_in, "embedding");
    DEVIANT_REQUIRE(weight_in.rank() == 2, "embedding: weight must be (V, C), got {}", weight_in.shape().str());
    require_same_device(weight_in, ids_in, "embedding");
    const std::int64_t V = weight_in.size(0), C = weight_in.size(1);
    Tensor ids = ids_in.contiguous(), weight = weight_in.contiguous();
    auto [pos, id] = detail::find_out_of_range(ids, V);
    DEVIANT_REQUIRE(pos < 0, "embedding: id {} at position {} out of range for a vocabulary of {} rows (weight {})", id, pos, V,
                    weight.shape().str());
    Shape out_shape = ids.shape();
    DEVIANT_REQUIRE(out_shape.rank() < Shape::max_dims, "embedding: ids {} have too many dims", ids.shape().str());
    out_shape.push_back(C);
    Tensor out = Tensor::empty(out_shape, weight.dtype(), weight.device());
    if (out.numel() == 0) return out;
    if (weight.device() == Device::cuda) {
        kernels::embedding_forward(weight.ref(), ids.ref(), out.view({ids.numel(), C}).ref());
        return out;
    }
    const std::int64_t* pi = ids.data<std::int64_t>();
    const std::size_t row_bytes = std::size_t(C) * dtype_size(weight.dtype());
    auto* src = static_cast<const char*>(weight.raw_data());
    auto* dst = static_cast<char*>(out.raw_data());
    for (std::int64_t i = 0, n = ids.numel(); i < n; ++i) std::memcpy(dst + i * row_bytes, src + pi[i] * row_bytes, row_bytes);
    return out;
}

// dweight (V, C) += the rows of dy (ids..., C) summed per id in position order, in place. Any
// floating dtypes: each row's sum is formed in the compute type and added to dweight once, so a
// bf16 gradient lands in a float32 buffer unrounded. The tape adds a parameter's embedding
// gradient this way, into its gradient buffer, instead of materialising a second (V, C) table
// (CUDA still sums into a fresh table, then adds it).
inline void embedding_backward_into(Tensor& dweight, const Tensor& dy_in, const Tensor& ids_in) {
    Tensor ids = ids_in.contiguous(), dy = dy_in.contiguous();
    DEVIANT_REQUIRE(dweight.rank() == 2 && dweight.is_contiguous() && dy.numel() == ids.numel() * dweight.size(1),
                    "embedding backward: gradient {} for ids {} and weight gradient {}", dy.shape().str(), ids.shape().str(),
                    dweight.describe());
    const std::int64_t V = dweight.size(0), C = dweight.size(1), n = ids.numel();
    require_same_device(dy, ids, "embedding backward");
    require_same_device(dy, dweight, "embedding backward");
    if (n == 0 || C == 0) return;
    if (dy.device() == Device::cuda) {
        Tensor dw = Tensor::zeros(dweight.shape(), dy.dtype(), dy.device());
        kernels::embedding_backward(ids.ref(), dy.view({n, C}).ref(), dw.ref());
        add_into(dweight, dw);
        return;
    }
    const std::int64_t* pi = ids.data<std::int64_t>();
    std::vector<std::int64_t> order(static_cast<std::size_t>(n));
    std::iota(order.begin(), order.end(), std::int64_t(0));
    std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) { return pi[a] < pi[b]; });
    DEVIANT_DISPATCH_FLOAT(dy.dtype(), T, [&] {
        DEVIANT_DISPATCH_FLOAT(dweight.dtype(), O, [&] {
            using Acc = common_compute_t<T, O>;
            const T* pg = dy.data<T>();
            O* pd = dweight.data<O>();
            std::vector<Acc> acc(static_cast<std::size_t>(C));
            for (std::size_t r = 0; r < order.size();) {
                const std::int64_t id = pi[order[r]];
                DEVIANT_REQUIRE(id >= 0 && id < V, "embedding backward: id {} out of range for {} rows", id, V);
                for (std::int64_t c = 0; c < C; ++c) acc[std::size_t(c)] = Acc(load(pd[id * C + c]));
                for (; r < order.size() && pi[order[r]] == id; ++r)
                    for (std::int64_t c = 0; c < C; ++c) acc[std::size_t(c)] += Acc(load(pg[order[r] * C + c]));
                for (std::int64_t c = 0; c < C; ++c) pd[id * C + c] = store<O>(acc[std::size_t(c)]);
            }
        });
    });
}

// The gradient of embedding: a (V, C) table of dy's rows summed per id, in dy's dtype or
// `out_dtype` (float32 for a bf16 gradient).
inline Tensor embedding_backward(const Tensor& dy, const Tensor& ids, const Shape& weight_shape,
                                 std::optional<DType> out_dtype = std::nullopt) {
    DEVIANT_REQUIRE(weight_shape.rank() == 2, "embedding backward: weight shape {} is not (V, C)", weight_shape.str());
    const DType od = out_dtype.value_or(dy.dtype());
    DEVIANT_REQUIRE(od == dy.dtype() || (dy.dtype() == DType::bf16 && od == DType::f32),
                    "embedding backward: a {} gradient cannot be summed into {}", dy.describe(), dtype_name(od));
    Tensor dw = Tensor::zeros(weight_shape, od, dy.device());
    embedding_backward_into(dw, dy, ids);
    return dw;
}

// --- concat / split ---
// Joins tensors along `axis`; all other extents, the dtype and the device must agree.
inline Tensor concat(std::span<const Tensor> xs, int axis) {
    DEVIANT_REQUIRE(!xs.empty(), "concat: no inputs");
    const Tensor& first = xs[0];
    DEVIANT_REQUIRE(first.defined(), "concat: input 0 is undefined");
    axis = first.shape().normalize(axis);
    Shape out_shape = first.shape();
    out_shape[axis] = 0;
    for (std::size_t i = 0; i < xs.size(); ++i) {
        const Tensor& x = xs[i];
        DEVIANT_REQUIRE(x.defined(), "concat: input {} is undefined", i);
        bool same = x.rank() == first.rank();
        for (int d = 0; same && d < x.rank(); ++d) same = d == axis || x.size(d) == first.size(d);
        DEVIANT_REQUIRE(same, "concat: input {} has shape {}, input 0 has {}: they must agree except on axis {}", i, x.shape().str(),
                        first.shape().str(), axis);
        DEVIANT_REQUIRE(x.dtype() == first.dtype(), "concat: input {} is {}, input 0 is {}", i, x.describe(), first.describe());
        require_same_device(x, first, "concat");
        out_shape[axis] += x.size(axis);
    }
    Tensor out = Tensor::empty(out_shape, first.dtype(), first.device());
    std::int64_t offset = 0;
    for (const Tensor& x : xs) {
        Tensor part = out.narrow(axis, offset, x.size(axis));
        copy_into(part, x);
        offset += x.size(axis);
    }
    return out;
}

// --- where / masked_fill ---
// out = mask ? a : b, with mask (uint8), a and b broadcast to a common shape.
inline Tensor where(const Tensor& mask, const Tensor& a, const Tensor& b) {
    detail::require_mask_tensor(mask, "where");
    detail::require_float(a, "where");
    detail::require_float(b, "where");
    DEVIANT_REQUIRE(a.dtype() == b.dtype(), "where: dtype mismatch {} vs {}", a.describe(), b.describe());
    require_same_device(a, b, "where");
    require_same_device(mask, a, "where");
    Shape shape = broadcast_shapes(broadcast_shapes(mask.shape(), a.shape()), b.shape());
    Tensor em = mask.expand(shape), ea = a.expand(shape), eb = b.expand(shape);
    Tensor out = Tensor::empty(shape, a.dtype(), a.device());
    if (out.numel() == 0) return out;
    if (out.device() == Device::cuda) {
        kernels::where_forward(em.ref(), ea.ref(), eb.ref(), out.ref());
        return out;
    }
    const auto* pm = static_cast<const std::uint8_t*>(em.raw_data());
    DEVIANT_DISPATCH_FLOAT(a.dtype(), T, [&] {
        const T *pa = static_cast<const T*>(ea.raw_data()), *pb = static_cast<const T*>(eb.raw_data());
        T* po = out.data<T>();
        ::deviant::ops::detail::walk<3>(shape, {em.strides().begin(), ea.strides().begin(), eb.strides().begin()},
                                        [&](std::int64_t i, const auto& off) { po[i] = pm[off[0]] ? pa[off[1]] : pb[off[2]]; });
    });
    return out;
}

// out = x with `value` where mask is set (fill_where_set) or where it is clear (!fill_where_set);
// mask (uint8) must broadcast to x's shape.
inline Tensor masked_fill(const Tensor& x, const Tensor& mask, double value, bool fill_where_set = true) {
    detail::require_float(x, "masked_fill");
    detail::require_mask_tensor(mask, "masked_fill");
    require_same_device(x, mask, "masked_fill");
    DEVIANT_REQUIRE(broadcast_shapes(mask.shape(), x.shape()) == x.shape(), "masked_fill: mask {} does not broadcast to input {}",
                    mask.shape().str(), x.shape().str());
    Tensor em = mask.expand(x.shape());
    Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
    if (out.numel() == 0) return out;
    if (out.device() == Device::cuda) {
        kernels::masked_fill(x.ref(), em.ref(), out.ref(), value, fill_where_set);
        return out;
    }
    const auto* pm = static_cast<const std::uint8_t*>(em.raw_data());
    DEVIANT_DISPATCH_FLOAT(x.dtype(), T, [&] {
        const T* px = static_cast<const T*>(x.raw_data());
        const T fill = store<T>(compute_t<T>(value));
        T* po = out.data<T>();
        ::deviant::ops::detail::walk<2>(x.shape(), {x.strides().begin(), em.strides().begin()}, [&](std::int64_t i, const auto& off) {
            po[i] = (pm[off[1]] != 0) == fill_where_set ? fill : px[off[0]];
        });
    });
    return out;
}

}  // namespace deviant::ops

namespace deviant {

namespace detail {
struct GatherAttr { std::int32_t axis; };
struct ConcatAttr {
    std::int32_t axis;
    std::array<std::int64_t, Node::max_inputs> lengths;
};
}  // namespace detail

// torch.gather along `axis`; index (int64, x's rank) is not differentiated.
inline Var gather(Var x, const Tensor& index, int axis) {
    axis = x.shape().normalize(axis);
    Tensor idx = index.contiguous();
    return x.tape->record(ops::gather(x.value(), idx, axis), {x}, [](Tape& t, const Node& n) {
        t.accumulate(n.in[0], ops::gather_backward(output_grad(t, n), n.saved[0], n.attr<detail::GatherAttr>().axis, t.value(n.in[0]).shape()));
    }, {idx}, detail::GatherAttr{axis});
}

// weight (V, C) rows at ids (any shape, int64) -> (ids.shape..., C).
inline Var embedding(Var weight, const Tensor& ids) {
    Tensor idx = ids.contiguous();
    return weight.tape->record(ops::embedding(weight.value(), idx), {weight}, [](Tape& t, const Node& n) {
        // added in place into the (V, C) gradient: a table's worth of zeros is made at most once
        t.accumulate_in_place(n.in[0], [&](Tensor& dw) { ops::embedding_backward_into(dw, output_grad(t, n), n.saved[0]); });
    }, {idx});
}

// Joins xs along `axis` (more than four inputs are joined as a tree of concats).
inline Var concat(std::span<const Var> xs, int axis) {
    DEVIANT_REQUIRE(!xs.empty(), "concat: no inputs");
    axis = xs[0].shape().normalize(axis);
    if (xs.size() == 1) return xs[0];
    if (xs.size() > std::size_t(Node::max_inputs)) {
        std::vector<Var> groups;
        for (std::size_t i = 0; i < xs.size(); i += Node::max_inputs)
            groups.push_back(concat(xs.subspan(i, std::min<std::size_t>(Node::max_inputs, xs.size() - i)), axis));
        return concat(std::span<const Var>(groups), axis);
    }
    std::vector<Tensor> values;
    detail::ConcatAttr attr{axis, {}};
    for (std::size_t i = 0; i < xs.size(); ++i) {
        DEVIANT_REQUIRE(xs[i].tape == xs[0].tape, "concat: inputs from different tapes");
        values.push_back(xs[i].value());
        attr.lengths[i] = xs[i].shape().rank() > axis ? xs[i].shape()[axis] : 0;
    }
    Tensor out = ops::concat(values, axis);
    BackwardFn fn = [](Tape& t, const Node& n) {
        const Tensor& g = output_grad(t, n);
        const auto& a = n.attr<detail::ConcatAttr>();
        std::int64_t offset = 0;
        for (int i = 0; i < n.n_in; ++i) {
            if (t.needs_grad(n, i)) t.accumulate(n.in[i], ops::fresh_contiguous(g.narrow(a.axis, offset, a.lengths[i])));
            offset += a.lengths[i];
        }
    };
    Tape& tape = *xs[0].tape;
    switch (xs.size()) {
        case 2: return tape.record(out, {xs[0], xs[1]}, fn, {}, attr);
        case 3: return tape.record(out, {xs[0], xs[1], xs[2]}, fn, {}, attr);
        case 4: return tape.record(out, {xs[0], xs[1], xs[2], xs[3]}, fn, {}, attr);
        default: static_assert(Node::max_inputs == 5, "concat records up to Node::max_inputs inputs");
                 return tape.record(out, {xs[0], xs[1], xs[2], xs[3], xs[4]}, fn, {}, attr);
    }
}
inline Var concat(std::initializer_list<Var> xs, int axis) { return concat(std::span<const Var>(xs.begin(), xs.size()), axis); }

// Pieces of x along `axis` with the given extents (which must sum to x's extent); views.
inline std::vector<Var> split(Var x, std::span<const std::int64_t> sizes, int axis) {
    axis = x.shape().normalize(axis);
    std::int64_t total = 0;
    std::string listed;
    for (auto s : sizes) {
        DEVIANT_REQUIRE(s >= 0, "split: negative size {} for {}", s, x.shape().str());
        total += s;
        listed += (listed.empty() ? "" : ", ") + std::to_string(s);
    }
    DEVIANT_REQUIRE(total == x.shape()[axis], "split: sizes ({}) sum to {} but axis {} of {} has extent {}", listed, total, axis,
                    x.shape().str(), x.shape()[axis]);
    std::vector<Var> parts;
    std::int64_t offset = 0;
    for (auto s : sizes) {
        parts.push_back(narrow(x, axis, offset, s));
        offset += s;
    }
    return parts;
}
inline std::vector<Var> split(Var x, std::initializer_list<std::int64_t> sizes, int axis) {
    return split(x, std::span<const std::int64_t>(sizes.begin(), sizes.size()), axis);
}

// x with `value` wherever mask (uint8, broadcastable to x) is set; no gradient flows there.
inline Var masked_fill(Var x, const Tensor& mask, double value) {
    return x.tape->record(ops::masked_fill(x.value(), mask, value), {x}, [](Tape& t, const Node& n) {
        t.accumulate(n.in[0], ops::masked_fill(output_grad(t, n), n.saved[0], 0.0));
    }, {mask});
}

// mask ? a : b with broadcasting; gradient flows to a where mask is set and to b elsewhere.
inline Var where(const Tensor& mask, Var a, Var b) {
    return a.tape->record(ops::where(mask, a.value(), b.value()), {a, b}, [](Tape& t, const Node& n) {
        const Tensor& g = output_grad(t, n);
        const Tensor& m = n.saved[0];
        if (t.needs_grad(n, 0))  // a receives g where the mask is set
            t.accumulate(n.in[0], ops::sum_to_shape(ops::masked_fill(g, m, 0.0, /*fill_where_set=*/false), t.value(n.in[0]).shape()));
        if (t.needs_grad(n, 1))  // b receives g where it is clear
            t.accumulate(n.in[1], ops::sum_to_shape(ops::masked_fill(g, m, 0.0, /*fill_where_set=*/true), t.value(n.in[1]).shape()));
    }, {mask});
}

}  // namespace deviant
