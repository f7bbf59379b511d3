// deviant/ops/matmul.hpp — matrix products: matmul and linear, with their differentiable versions.
//   matmul(a, b): a (..., M, K) with b (K, N) (a shared weight) or b (..., K, N) with the same
//                 batch dims -> (..., M, N)
//   linear(x, w): x (..., in) @ w^T for w stored (out, in), as Hugging Face stores Linear weights.
//   Both take an optional bias (N,) / (out,), added in place to the product (one tape node, no
//   separate (..., N) sum kept for backward); its gradient is dy summed over the rows.
// Transposed views (row- or column-major last two dims) go to BLAS with a transpose flag, no copy;
// other layouts are copied first. CPU: oneDNN or OpenBLAS (ops/cpu_gemm.hpp; bfloat16 on oneDNN's bf16 product, widened to float32
// where the CPU has none); CUDA: cuBLASLt
// (kernels/matmul.cuh) with float32 accumulation for float32/bfloat16 and float64 for float64.
#pragma once
#include <cblas.h>

#include <climits>

#include "deviant/ops/cpu_gemm.hpp"
#include "deviant/ops/elementwise.hpp"
#include "deviant/ops/matmul_layout.hpp"
#include "deviant/ops/skinny_matmul.hpp"

namespace deviant::kernels {
// c (batch, M, N) contiguous = a (batch, M, K) @ b (batch, K, N); a and b are rank-3 refs whose last
// two dims are row- or column-major (ops::matrix_layout) and whose batch stride is used as given.
// allow_tf32: let float32 products use TF32 tensor cores (faster, ~1e-3 relative error).
DEVIANT_CUDA_LAUNCHER(matmul_batched, const TensorRef& a, const TensorRef& b, const TensorRef& c, bool allow_tf32)
}  // namespace deviant::kernels

namespace deviant::ops {

// Process-wide switch for TF32 in float32 CUDA products; off by default (exact float32).
inline bool& matmul_allow_tf32() {
    static bool allow = false;
    return allow;
}

namespace detail {
// t (..., R, C) as (prod(...) * R, C): a view when t is contiguous, a copy otherwise.
inline Tensor fold_rows(const Tensor& t) {
    std::int64_t rows = 1;
    for (int i = 0; i + 1 < t.rank(); ++i) rows *= t.size(i);
    return t.reshape({rows, t.size(-1)});
}

// t (..., R, C) viewed as a rank-3 ref (batch, R, C) that BLAS can read, copying t when its
// layout does not allow that. `keep` holds the copy alive.
inline TensorRef batched_operand(const Tensor& t, std::int64_t batch, Tensor& keep) {
    keep = t;
    auto try_ref = [&](const Tensor& x, TensorRef& out) {
        int r = x.rank();
        std::int64_t batch_stride = 0, expected = -1;
        for (int i = r - 3; i >= 0; --i) {  // the batch dims must collapse into one stride
            if (x.size(i) == 1) continue;
            if (expected < 0) batch_stride = x.strides()[i];
            else if (x.strides()[i] != expected) return false;
            expected = x.strides()[i] * x.size(i);
        }
        if (batch > 1 && batch_stride <= 0) return false;
        MatrixLayout l = matrix_layout(x.size(-2), x.size(-1), x.strides()[r - 2], x.strides()[r - 1]);
        if (!l.ok) return false;
        out = TensorRef{};
        out.data = x.raw_data();
        out.dtype = x.dtype();
        out.rank = 3;
        out.shape[0] = batch, out.shape[1] = x.size(-2), out.shape[2] = x.size(-1);
        out.strides[0] = batch_stride, out.strides[1] = x.strides()[r - 2], out.strides[2] = x.strides()[r - 1];
        return true;
    };
    TensorRef ref;
    if (try_ref(t, ref)) return ref;
    keep = t.clone();  // a fresh row-major copy always fits
    bool ok = try_ref(keep, ref);
    DEVIANT_REQUIRE(ok, "matmul: cannot lay out operand {} for BLAS", t.describe());
    return ref;
}

// CPU: c (contiguous) = a @ b, batch by batch, float32 or float64 (ops/cpu_gemm.hpp).
template <class T>
void cpu_gemm(const TensorRef& a, const TensorRef& b, T* c) {
    const std::int64_t batch = a.shape[0], M = a.shape[1], K = a.shape[2], N = b.shape[2];
    MatrixLayout la = matrix_layout(M, K, a.strides[1], a.strides[2]);
    MatrixLayout lb = matrix_layout(K, N, b.strides[1], b.strides[2]);
    for (std::int64_t i = 0; i < batch; ++i) {
        const T* pa = static_cast<const T*>(a.data) + i * a.strides[0];
        const T* pb = static_cast<const T*>(b.data) + i * b.strides[0];
        gemm_row_major<T>(la.transposed, lb.transposed, M, N, K, T(1), pa, la.ld, pb, lb.ld, T(0), c + i * M * N, N);
    }
}

// CPU bfloat16: out (..., M, N) (float32 or bf16, contiguous) = a @ b on oneDNN's bf16 product
// (ops/cpu_gemm.hpp); false, with out untouched, when this CPU or build has none.
inline bool cpu_bf16_matmul(const Tensor& a, const Tensor& b, Tensor& out) {
    const std::int64_t M = a.size(-2), N = b.size(-1), K = a.size(-1);
    const bool shared_weight = b.rank() == 2;
    Tensor a_eff = shared_weight && a.rank() > 2 ? fold_rows(a) : a;
    const std::int64_t batch = shared_weight ? 1 : out.numel() / (M * N);
    Tensor keep_a, keep_b;
    const TensorRef ra = batched_operand(a_eff, batch, keep_a), rb = batched_operand(b, batch, keep_b);
    const std::int64_t rows = ra.shape[1];
    const MatrixLayout la = matrix_layout(rows, K, ra.strides[1], ra.strides[2]), lb = matrix_layout(K, N, rb.strides[1], rb.strides[2]);
    for (std::int64_t i = 0; i < batch; ++i) {
        const bf16* pa = static_cast<const bf16*>(ra.data) + i * ra.strides[0];
        const bf16* pb = static_cast<const bf16*>(rb.data) + i * rb.strides[0];
        const bool ran = out.dtype() == DType::f32
                             ? gemm_row_major_bf16<float>(la.transposed, lb.transposed, rows, N, K, pa, la.ld, pb, lb.ld,
                                                          out.data<float>() + i * rows * N, N, false)
                             : gemm_row_major_bf16<bf16>(la.transposed, lb.transposed, rows, N, K, pa, la.ld, pb, lb.ld,
                                                         static_cast<bf16*>(out.raw_data()) + i * rows * N, N, false);
        if (!ran) return false;  // the first product decides: same shape and layout for every batch
    }
    return true;
}
}  // namespace detail

// a (..., M, K) @ b (K, N) or (..., K, N) -> (..., M, N), in a's dtype or, for bfloat16 operands,
// optionally float32 (`out_dtype`): the float32-accumulated product without rounding it to bf16
// (what mixed-precision log-softmax and loss code wants from a bf16 tensor-core product).
inline Tensor matmul(const Tensor& a, const Tensor& b, DType out_dtype) {
    detail::require_float(a, "matmul");
    detail::require_float(b, "matmul");
    DEVIANT_REQUIRE(a.rank() >= 2 && b.rank() >= 2, "matmul: needs matrices, got {} @ {}", a.shape().str(), b.shape().str());
    DEVIANT_REQUIRE(a.dtype() == b.dtype(), "matmul: dtype mismatch, {} @ {}", a.describe(), b.describe());
    require_same_device(a, b, "matmul");
    const std::int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
    DEVIANT_REQUIRE(b.size(-2) == K, "matmul: inner dimensions differ, {} @ {}", a.shape().str(), b.shape().str());
    const bool shared_weight = b.rank() == 2;
    if (!shared_weight) {
        bool same_batch = a.rank() == b.rank();
        for (int i = 0; same_batch && i < a.rank() - 2; ++i) same_batch = a.size(i) == b.size(i);
        DEVIANT_REQUIRE(same_batch, "matmul: batch dims differ, {} @ {} (b must be (K, N) or share a's batch dims)",
                        a.shape().str(), b.shape().str());
    }
    DEVIANT_REQUIRE(out_dtype == a.dtype() || (a.dtype() == DType::bf16 && out_dtype == DType::f32),
                    "matmul: {} operands cannot produce a {} result", dtype_name(a.dtype()), dtype_name(out_dtype));
    // A few rows times a Hugging Face (out, in) weight (decoding): the skinny kernel streams the
    // weight once, in its own dtype (ops/skinny_matmul.hpp).
    if (a.device() == Device::cpu && shared_weight && a.dtype() != DType::f64 && b.strides()[0] == 1 && b.strides()[1] == K &&
        a.numel() / K <= detail::skinny_max_rows && N * K >= 4096) {
        const std::int64_t rows = a.numel() / K;
        Tensor x = detail::fold_rows(a.contiguous());
        if (x.dtype() != DType::f32) x = x.to(DType::f32);
        Shape out_shape = a.shape();
        out_shape[-1] = N;
        Tensor y = Tensor::empty(out_shape, DType::f32);
        if (b.dtype() == DType::f32) detail::skinny_matmul(x.data<float>(), K, rows, static_cast<const float*>(b.raw_data()), N, K, y.data<float>());
        else detail::skinny_matmul(x.data<float>(), K, rows, static_cast<const bf16*>(b.raw_data()), N, K, y.data<float>());
        return out_dtype == DType::f32 ? y : y.to(out_dtype);
    }
    Shape out_shape = a.shape();
    out_shape[-1] = N;
    Tensor out = Tensor::empty(out_shape, out_dtype, a.device());
    if (out.numel() == 0) return out;
    if (K == 0) {
        out.fill_(0.0);
        return out;
    }
    if (a.device() == Device::cpu && a.dtype() == DType::bf16) {
        if (detail::cpu_bf16_matmul(a, b, out)) return out;
        Tensor wide = matmul(a.to(DType::f32), b.to(DType::f32), DType::f32);  // no bf16 product here: widen
        return out_dtype == DType::f32 ? wide : wide.to(DType::bf16);
    }

    // A shared weight folds a's batch into M: one GEMM of (batch * M, K) @ (K, N).
    Tensor a_eff = shared_weight && a.rank() > 2 ? detail::fold_rows(a) : a;
    std::int64_t batch = shared_weight ? 1 : out.numel() / (M * N);
    Tensor keep_a, keep_b;
    TensorRef ra = detail::batched_operand(a_eff, batch, keep_a), rb = detail::batched_operand(b, batch, keep_b);
    TensorRef rc = out.ref();
    rc.rank = 3;
    rc.shape[0] = batch, rc.shape[1] = ra.shape[1], rc.shape[2] = N;
    rc.strides[0] = ra.shape[1] * N, rc.strides[1] = N, rc.strides[2] = 1;
    if (a.device() == Device::cuda) {
        kernels::matmul_batched(ra, rb, rc, matmul_allow_tf32());
        return out;
    }
    if (a.dtype() == DType::f32) detail::cpu_gemm<float>(ra, rb, out.data<float>());
    else detail::cpu_gemm<double>(ra, rb, out.data<double>());
    return out;
}
inline Tensor matmul(const Tensor& a, const Tensor& b) { return matmul(a, b, a.dtype()); }

// x (..., in) @ w^T for w (out, in) -> (..., out); w's transpose is a view, never copied.
inline Tensor linear(const Tensor& x, const Tensor& w) {
    DEVIANT_REQUIRE(w.rank() == 2, "linear: weight must be (out, in), got {} for input {}", w.shape().str(), x.shape().str());
    DEVIANT_REQUIRE(x.rank() >= 1 && x.size(-1) == w.size(1), "linear: input {} does not match weight {} (out, in)",
                    x.shape().str(), w.shape().str());
    if (x.rank() == 1) return matmul(x.unsqueeze(0), w.transpose(0, 1)).squeeze(0);
    return matmul(x, w.transpose(0, 1));
}

namespace detail {
// dst (contiguous view) += a @ b. CPU float32/float64 operands, or bf16 operands into float32 on a
// CPU with bf16 products: one product that accumulates; else a product and an add.
inline void gemm_accumulate(const Tensor& dst, const Tensor& a, const Tensor& b) {
    if (dst.device() == Device::cpu && a.dtype() == b.dtype()) {
        MatrixLayout la = matrix_layout(a.size(0), a.size(1), a.strides()[0], a.strides()[1]);
        MatrixLayout lb = matrix_layout(b.size(0), b.size(1), b.strides()[0], b.strides()[1]);
        if (la.ok && lb.ok && a.size(1) > 0) {
            if (dst.dtype() == DType::f32 && a.dtype() == DType::bf16 &&
                gemm_row_major_bf16<float>(la.transposed, lb.transposed, a.size(0), b.size(1), a.size(1),
                                           static_cast<const bf16*>(a.raw_data()), la.ld, static_cast<const bf16*>(b.raw_data()), lb.ld,
                                           dst.data<float>(), b.size(1), true))
                return;
            if (dst.dtype() == DType::f32 && a.dtype() == DType::f32) {
                gemm_row_major<float>(la.transposed, lb.transposed, a.size(0), b.size(1), a.size(1), 1.0f,
                                      static_cast<const float*>(a.raw_data()), la.ld, static_cast<const float*>(b.raw_data()), lb.ld, 1.0f,
                                      dst.data<float>(), b.size(1));
                return;
            }
            if (dst.dtype() == DType::f64 && a.dtype() == DType::f64) {
                gemm_row_major<double>(la.transposed, lb.transposed, a.size(0), b.size(1), a.size(1), 1.0,
                                       static_cast<const double*>(a.raw_data()), la.ld, static_cast<const double*>(b.raw_data()), lb.ld, 1.0,
                                       dst.data<double>(), b.size(1));
                return;
            }
        }
    }
    Tensor d = dst;
    add_into(d, matmul(a, b, a.dtype() == DType::bf16 && dst.dtype() == DType::f32 ? DType::f32 : a.dtype()));
}
}  // namespace detail

// y (..., N) += bias (N), in place: the bias epilogue of a product.
inline void add_bias_(Tensor& y, const Tensor& bias) {
    DEVIANT_REQUIRE(bias.rank() == 1 && y.rank() >= 1 && y.size(-1) == bias.size(0),
                    "bias {} does not fit a product of shape {} (its last dimension)", bias.shape().str(), y.shape().str());
    DEVIANT_REQUIRE(bias.dtype() == y.dtype(), "bias {} and product {} differ in dtype", bias.describe(), y.describe());
    require_same_device(y, bias, "bias");
    DEVIANT_REQUIRE(y.is_contiguous(), "bias added into a non-contiguous product {}", y.describe());
    if (y.numel() == 0) return;
    if (y.device() == Device::cuda) {  // element-wise, so the output may be the first operand
        kernels::binary_forward(kernels::BinaryOp::add, y.ref(), bias.expand(y.shape()).ref(), y.ref());
        return;
    }
    Tensor b = bias.contiguous();
    const std::int64_t cols = y.size(-1), rows = y.numel() / cols;
    DEVIANT_DISPATCH_FLOAT(y.dtype(), T, [&] {
        T* py = y.data<T>();
        const T* pb = b.data<T>();
        detail::parallel_range(rows, [&](std::int64_t r0, std::int64_t r1) {
            for (std::int64_t r = r0; r < r1; ++r) {
                T* row = py + r * cols;
                for (std::int64_t c = 0; c < cols; ++c) row[c] = store<T>(load(row[c]) + load(pb[c]));
            }
        }, cols);
    });
}

// The gradient of a bias added to every row: g (..., N) summed over all leading axes -> (N).
inline Tensor bias_grad(const Tensor& g) {
    DEVIANT_REQUIRE(g.rank() >= 1, "bias gradient of a scalar");
    return sum_to_shape(g, Shape{g.size(-1)});
}

}  // namespace deviant::ops

namespace deviant {

namespace detail {
// Records the product y of `first, rest...`; with a bias, y += bias in place first and the bias
// takes the next input slot (its gradient: accumulate_bias_grad with that slot).
template <class Attr, class... Rest>
Var record_with_bias(Tensor y, Var bias, BackwardFn rule, std::initializer_list<Tensor> saved, const Attr& attr, Var first, Rest... rest) {
    Tape& t = *first.tape;
    if (!bias.defined()) return t.record(std::move(y), {first, rest...}, rule, saved, attr);
    ops::add_bias_(y, bias.value());
    return t.record(std::move(y), {first, rest..., bias}, rule, saved, attr);
}
// In a backward rule: dbias = g summed over the rows, when the node has a bias in input slot `slot`.
inline void accumulate_bias_grad(Tape& t, const Node& n, int slot, const Tensor& g) {
    if (n.n_in > slot && t.needs_grad(n, slot)) t.accumulate(n.in[slot], ops::bias_grad(g));
}
}  // namespace detail

// --- differentiable products ---
// dA = dC @ B^T; dB = A^T @ dC (summed over the batch when b is a shared (K, N) weight); with a
// bias (N,) added to every row, dbias = dC summed over the rows.
inline Var matmul(Var a, Var b, Var bias = {}) {
    auto rule = [](Tape& t, const Node& n) {
        const Tensor& g = output_grad(t, n);
        const Tensor &a = n.saved[0], &b = n.saved[1];
        if (t.needs_grad(n, 0)) t.accumulate(n.in[0], ops::matmul(g, b.transpose(-1, -2)));
        if (t.needs_grad(n, 1)) {
            if (b.rank() == 2) {
                Tensor a2 = a.rank() == 2 ? a : ops::detail::fold_rows(a);
                Tensor g2 = g.rank() == 2 ? g : ops::detail::fold_rows(g);
                t.accumulate(n.in[1], ops::matmul(a2.transpose(0, 1), g2, t.grad_dtype(n.in[1])));
            } else {
                t.accumulate(n.in[1], ops::matmul(a.transpose(-1, -2), g));
            }
        }
        detail::accumulate_bias_grad(t, n, 2, g);
    };
    return detail::record_with_bias(ops::matmul(a.value(), b.value()), bias, rule, {a.value(), b.value()}, NoAttrs{}, a, b);
}

// x (..., in) @ w^T (+ bias) for w (out, in), bias (out,) or undefined: dx = dy @ w,
// dw = dy^T @ x (summed over all leading dims), dbias = dy summed over the rows.
inline Var linear(Var x, Var w, Var bias = {}) {
    DEVIANT_REQUIRE(x.value().rank() >= 2, "linear: input must be (..., in), got {} with weight {}", x.shape().str(),
                    w.shape().str());
    auto rule = [](Tape& t, const Node& n) {
        const Tensor& g = output_grad(t, n);
        const Tensor &x = n.saved[0], &w = n.saved[1];
        if (t.needs_grad(n, 0)) t.accumulate(n.in[0], ops::matmul(g, w));
        if (t.needs_grad(n, 1)) {
            Tensor x2 = x.rank() == 2 ? x : ops::detail::fold_rows(x);
            Tensor g2 = g.rank() == 2 ? g : ops::detail::fold_rows(g);
            t.accumulate(n.in[1], ops::matmul(g2.transpose(0, 1), x2, t.grad_dtype(n.in[1])));
        }
        detail::accumulate_bias_grad(t, n, 2, g);
    };
    return detail::record_with_bias(ops::linear(x.value(), w.value()), bias, rule, {x.value(), w.value()}, NoAttrs{}, x, w);
}

// How a weight matrix is stored: (in, out) as GPT-2's Conv1D, or (out, in) as torch's Linear.
enum class WeightLayout : std::uint8_t { in_out, out_in };

namespace detail {
struct ActivationMatmulAttr {
    kernels::UnaryOp act;
    WeightLayout layout;
};
}  // namespace detail

// y = act(h) W (+ bias) as one node that keeps h, not act(h): the activation is recomputed in
// backward (one element-wise pass) instead of holding the MLP's (tokens, intermediate) activation
// from forward to backward. W is (in, out) or (out, in) per `layout`. With a = act(h), g = dy:
//   dh = act'(h) * (g W^T or g W),   dW = a^T g or g^T a,   dbias = g summed over the rows
inline Var activation_matmul(kernels::UnaryOp act, Var h, Var w, WeightLayout layout, Var bias = {}) {
    DEVIANT_REQUIRE(h.value().rank() >= 2 && w.value().rank() == 2 &&
                        h.value().size(-1) == (layout == WeightLayout::in_out ? w.value().size(0) : w.value().size(1)),
                    "activation_matmul: input {} does not fit weight {} stored {}", h.shape().str(), w.shape().str(),
                    layout == WeightLayout::in_out ? "(in, out)" : "(out, in)");
    auto rule = [](Tape& t, const Node& n) {
        const auto& at = n.attr<detail::ActivationMatmulAttr>();
        const Tensor& g = output_grad(t, n);
        const Tensor &h = n.saved[0], &w = n.saved[1];
        const Tensor a = ops::unary(at.act, h);  // recomputed
        const Tensor g2 = ops::detail::fold_rows(g);
        if (t.needs_grad(n, 0)) {
            Tensor da = at.layout == WeightLayout::in_out ? ops::matmul(g2, w.transpose(0, 1)) : ops::matmul(g2, w);
            t.accumulate(n.in[0], ops::unary_backward(at.act, h, a, da.view(h.shape())));
        }
        if (t.needs_grad(n, 1)) {
            const Tensor a2 = ops::detail::fold_rows(a);
            const DType gd = t.grad_dtype(n.in[1]);
            t.accumulate(n.in[1], at.layout == WeightLayout::in_out ? ops::matmul(a2.transpose(0, 1), g2, gd)
                                                                    : ops::matmul(g2.transpose(0, 1), a2, gd));
        }
        detail::accumulate_bias_grad(t, n, 2, g);
    };
    const Tensor a = ops::unary(act, h.value());  // lives only for the product
    Tensor y = layout == WeightLayout::in_out ? ops::matmul(a, w.value()) : ops::linear(a, w.value());
    return detail::record_with_bias(std::move(y), bias, rule, {h.value(), w.value()}, detail::ActivationMatmulAttr{act, layout}, h, w);
}

namespace detail {
struct LoraLinearAttr {
    double scaling;
};
}  // namespace detail

// LoRA on a Hugging Face (out, in) weight as one tape node:
//   y (..., out) = x W^T + scaling (x A^T) B^T,   W (out, in), A (r, in), B (out, r)
// It keeps x and u = x A^T (..., r) for backward, not the three (..., out) tensors (base output,
// update, scaled update) that composing linear / scale / add leaves on the tape. With g = dy:
//   dx = g W + s (g B) A,   dW = g^T x,   dA = s (g B)^T x,   dB = s g^T u
// A bias (out,), when given, is added in place as for linear (dbias = g summed over the rows).
inline Var lora_linear(Var x, Var w, Var a, Var b, double scaling, Var bias = {}) {
    const Tensor &xv = x.value(), &wv = w.value(), &av = a.value(), &bv = b.value();
    DEVIANT_REQUIRE(wv.rank() == 2 && av.rank() == 2 && bv.rank() == 2 && av.size(1) == wv.size(1) && bv.size(0) == wv.size(0) &&
                        bv.size(1) == av.size(0),
                    "lora_linear: weight {} (out, in), A {} (r, in) and B {} (out, r) do not fit together", wv.shape().str(),
                    av.shape().str(), bv.shape().str());
    DEVIANT_REQUIRE(xv.rank() >= 2, "lora_linear: input must be (..., in), got {} with weight {}", xv.shape().str(), wv.shape().str());
    Tensor u = ops::linear(xv, av);  // (..., r)
    Tensor y = ops::linear(xv, wv);  // (..., out)
    // y += (s u) B^T, accumulated by the product itself (no (..., out) temporary)
    ops::detail::gemm_accumulate(ops::detail::fold_rows(y), ops::detail::fold_rows(ops::affine(u, scaling)), bv.transpose(0, 1));
    auto rule = [](Tape& t, const Node& n) {
        const Tensor& g = output_grad(t, n);
        const Tensor &x = n.saved[0], &u = n.saved[1];
        const Tensor &w = t.value(n.in[1]), &a = t.value(n.in[2]), &b = t.value(n.in[3]);
        const double s = n.attr<detail::LoraLinearAttr>().scaling;
        const Tensor g2 = ops::detail::fold_rows(g);
        const Tensor gbs = ops::affine(ops::matmul(g2, b), s);  // s (g B), (rows, r)
        if (t.needs_grad(n, 0)) {
            Tensor dx = ops::matmul(g2, w);
            ops::detail::gemm_accumulate(dx, gbs, a);
            t.accumulate(n.in[0], dx.view(x.shape()));
        }
        const Tensor x2 = ops::detail::fold_rows(x);
        if (t.needs_grad(n, 1)) t.accumulate(n.in[1], ops::matmul(g2.transpose(0, 1), x2, t.grad_dtype(n.in[1])));
        if (t.needs_grad(n, 2)) t.accumulate(n.in[2], ops::matmul(gbs.transpose(0, 1), x2, t.grad_dtype(n.in[2])));
        if (t.needs_grad(n, 3))
            t.accumulate(n.in[3], ops::affine(ops::matmul(g2.transpose(0, 1), ops::detail::fold_rows(u), t.grad_dtype(n.in[3])), s));
        detail::accumulate_bias_grad(t, n, 4, g);
    };
    return detail::record_with_bias(std::move(y), bias, rule, {xv, u}, detail::LoraLinearAttr{scaling}, x, w, a, b);
}

}  // namespace deviant
