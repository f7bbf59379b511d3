// deviant/ops/lm_head.hpp — the language-model head fused with log-softmax and the target gather:
//   token_logprobs(hidden (N, C), weight (V, C), targets (N,)) = log_softmax(hidden @ weight^T)[n, targets[n]]
// computed chunk by chunk (rows x vocabulary) so that the (N, V) logits never exist at once:
// each chunk's logits (R, Vc) come from one matmul (OpenBLAS / cuBLASLt), and a running
// log-sum-exp per row (max m, sum s of exp(z - m)) is updated chunk after chunk. Backward
// recomputes each chunk's logits and, with p = exp(z - lse):
//   dz = dy * (onehot(target) - p),   dhidden = sum over chunks of dz @ W,   dweight = sum of dz^T @ hidden
// Work runs in the compute type (float32 for float32/bfloat16, float64 for float64): the running
// state, the log-probabilities and log-sum-exp it returns (float32 for a bfloat16 model, so the
// sequence sums and the loss of mixed-precision training stay float32), and the chunk logits. On
// CUDA and on CPUs with bf16 products (AVX512-BF16, AMX) bfloat16 inputs stay bfloat16 and the chunk
// products run in bf16 with float32 results (the logit gradient is rounded to bf16 for the two
// backward products, as autocast does); other CPUs widen them to float32 once; hidden/weight
// gradients take the input dtype. Chunk order is fixed,
// so results are deterministic and independent of the chunk sizes up to rounding.
// A frozen head (the weight needs no gradient: LoRA, a frozen tied embedding) needs only
//   dhidden[n] = dy[n] * (W[target[n]] - E[n]),   E = softmax(logits) @ W   (N, C)
// so on the CPU the forward accumulates E chunk by chunk beside the log-sum-exp (online, rescaled
// as the running max grows: one more product per chunk) and backward is one element-wise pass:
// two head products per step instead of three (forward, recompute, dz @ W).
// CPU references are here; the CUDA kernels (softmax / gradient parts) are in kernels/lm_head.cuh.
#pragma once
#include <optional>
#include <cmath>
#include <limits>

#include "deviant/ops/index.hpp"
#include "deviant/ops/matmul.hpp"
#include "deviant/ops/vector_math.hpp"

namespace deviant::kernels {
// One vocabulary chunk of logits (rows, cols) (compute type, contiguous) folded into the running
// state (rows, 3) = (max, sum of exp(z - max), target logit); targets (rows,) int64; the chunk
// holds vocabulary entries [v0, v0 + cols).
DEVIANT_CUDA_LAUNCHER(lm_head_update, const TensorRef& logits, const TensorRef& targets, const TensorRef& state, std::int64_t rows,
                      std::int64_t cols, std::int64_t v0)
// logprobs (n,) (output dtype) = (target - max) - log(sum); lse (n,) (compute type) = max + log(sum).
DEVIANT_CUDA_LAUNCHER(lm_head_finish, const TensorRef& state, const TensorRef& logprobs, const TensorRef& lse, std::int64_t n)
// In place: logits (rows, cols) -> dy * (onehot(target - v0) - exp(logits - lse)); dy, lse (rows,) compute type.
DEVIANT_CUDA_LAUNCHER(lm_head_logit_grad, const TensorRef& logits, const TensorRef& targets, const TensorRef& lse, const TensorRef& dy,
                      std::int64_t rows, std::int64_t cols, std::int64_t v0)
}  // namespace deviant::kernels

namespace deviant::ops {

// Chunk sizes; 0 picks them from the sizes and the device.
struct LmHeadChunks {
    std::int64_t rows = 0;
    std::int64_t vocab = 0;
};

struct TokenLogprobsResult {
    Tensor logprobs;  // (N,), compute type (float32 for bf16 hidden)
    Tensor lse;       // (N,) log-sum-exp of each row's logits, compute type (saved for backward)
    Tensor targets;   // (N,) int64 on hidden's device, contiguous
    Tensor expected;  // (N, C) softmax(logits) @ weight, compute type: when asked for, on the CPU
};
struct TokenLogprobsGrads {
    Tensor dhidden, dweight;  // undefined unless asked for
};

namespace detail {
inline DType lm_head_compute_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

// The chunk sizes used for N rows and V vocabulary entries on `dev`: at most 2^18 (CPU, cache
// sized) or 2^24 (CUDA) logits per chunk. CPU chunks are square-ish (512 vocabulary entries x 512
// rows): every chunk product is then a well-shaped BLAS call whose weight slice stays in cache
// across its rows. Wide, short chunks (a few rows against tens of thousands of vocabulary rows)
// stream the whole weight per handful of rows: measured 17x slower for SmolLM2's head (1,024 rows,
// width 576, vocabulary 49,152) and 1.8x slower at width 256, vocabulary 8,192.
inline LmHeadChunks resolve_chunks(LmHeadChunks c, std::int64_t N, std::int64_t V, Device dev) {
    const std::int64_t budget = dev == Device::cuda ? (std::int64_t(1) << 24) : (std::int64_t(1) << 18);
    if (c.vocab <= 0) c.vocab = std::min<std::int64_t>(V, dev == Device::cuda ? 131072 : 512);
    if (c.rows <= 0) c.rows = std::max<std::int64_t>(1, budget / std::max<std::int64_t>(1, c.vocab));
    c.vocab = std::max<std::int64_t>(1, std::min(c.vocab, V));
    c.rows = std::max<std::int64_t>(1, std::min(c.rows, N));
    return c;
}

inline Tensor targets_on(const char* op, const Tensor& targets, std::int64_t N, std::int64_t V, Device dev) {
    require_index_tensor(targets, op);
    DEVIANT_REQUIRE(targets.rank() == 1 && targets.size(0) == N, "{}: targets {} must be (N,) = ({},)", op, targets.shape().str(), N);
    Tensor t = targets.to(dev).contiguous();
    auto [pos, value] = find_out_of_range(t, V);
    DEVIANT_REQUIRE(pos < 0, "{}: target {} at row {} is outside the vocabulary [0, {})", op, value, pos, V);
    return t;
}

inline void check_lm_head_args(const char* op, const Tensor& hidden, const Tensor& weight) {
    require_float(hidden, op);
    require_float(weight, op);
    DEVIANT_REQUIRE(hidden.rank() == 2 && weight.rank() == 2 && hidden.size(1) == weight.size(1),
                    "{}: hidden {} must be (N, C) and weight {} (V, C)", op, hidden.shape().str(), weight.shape().str());
    DEVIANT_REQUIRE(hidden.dtype() == weight.dtype(), "{}: hidden {} and weight {} differ in dtype", op, hidden.describe(), weight.describe());
    require_same_device(hidden, weight, op);
    DEVIANT_REQUIRE(weight.size(0) > 0, "{}: empty vocabulary (weight {})", op, weight.shape().str());
}

// x in the compute type, contiguous (a view of x when it already is); bf16 stays bf16 on CUDA and
// on CPUs with bf16 products (the chunk products take bf16 operands and give float32 results there).
inline bool lm_head_tensor_cores(const Tensor& x) {
    return x.dtype() == DType::bf16 && (x.device() == Device::cuda || cpu_bf16_gemm_available());
}
inline Tensor in_compute_type(const Tensor& x) {
    DType c = lm_head_tensor_cores(x) ? DType::bf16 : lm_head_compute_dtype(x.dtype());
    return x.dtype() == c ? x.contiguous() : x.to(x.device(), c);
}
// a @ b with a compute-type (float32/float64) result.
inline Tensor chunk_product(const Tensor& a, const Tensor& b) {
    return matmul(a, b, a.dtype() == DType::bf16 ? DType::f32 : a.dtype());
}

// CPU: fold a chunk of logits into the running state (see kernels::lm_head_update); rows in
// parallel, each row's sums in a fixed order.
template <class C>
void cpu_lm_head_update(const C* z, const std::int64_t* targets, C* state, std::int64_t rows, std::int64_t cols, std::int64_t v0) {
    parallel_range(rows, [&](std::int64_t r0, std::int64_t r1) {
        for (std::int64_t r = r0; r < r1; ++r) {
            const C* zr = z + r * cols;
            C* s = state + 3 * r;
            const C m = max_of(zr, cols);
            C new_m = std::max(s[0], m);
            if (new_m == -std::numeric_limits<C>::infinity()) continue;  // every logit so far is -inf
            s[1] = s[1] * cpu_exp(s[0] - new_m) + sum_exp(zr, cols, new_m);
            s[0] = new_m;
            std::int64_t t = targets[r] - v0;
            if (t >= 0 && t < cols) s[2] = zr[t];
        }
    }, cols);
}
// CPU, frozen head: as cpu_lm_head_update, and also overwrite the chunk z with exp(z - m) for the
// row's new running max m and rescale the row's running sum of exp(z - m) W, acc (rows, C), to
// that max; the caller then adds z @ W_chunk into acc. Rows whose logits are all -inf so far
// get zero weights.
template <class C>
void cpu_lm_head_update_expected(C* z, const std::int64_t* targets, C* state, C* acc, std::int64_t rows, std::int64_t cols,
                                 std::int64_t width, std::int64_t v0) {
    constexpr C tiny = std::numeric_limits<C>::min();  // flushed to zero, as in the logit gradient
    parallel_range(rows, [&](std::int64_t r0, std::int64_t r1) {
        for (std::int64_t r = r0; r < r1; ++r) {
            C* zr = z + r * cols;
            C* s = state + 3 * r;
            const std::int64_t t = targets[r] - v0;
            if (t >= 0 && t < cols) s[2] = zr[t];
            const C new_m = std::max(s[0], max_of(zr, cols));
            if (new_m == -std::numeric_limits<C>::infinity()) {
                for (std::int64_t j = 0; j < cols; ++j) zr[j] = C(0);
                continue;
            }
            const C scale = cpu_exp(s[0] - new_m);  // 0 on the first chunk (s[0] = -inf)
            C sum = 0;
            for (std::int64_t j = 0; j < cols; ++j) {
                const C p = cpu_exp(zr[j] - new_m);
                zr[j] = p < tiny ? C(0) : p;
                sum += zr[j];
            }
            s[1] = s[1] * scale + sum;
            s[0] = new_m;
            if (scale != C(1)) {
                C* ar = acc + r * width;
                for (std::int64_t c = 0; c < width; ++c) ar[c] *= scale;
            }
        }
    }, cols);
}
// CPU: overwrite a chunk of logits z (rows, cols) with dy * (onehot(target - v0) - exp(z - lse)).
template <class C>
void cpu_lm_head_logit_grad(const Tensor& z, const Tensor& targets, const Tensor& lse, const Tensor& dy, std::int64_t rows,
                            std::int64_t cols, std::int64_t v0) {
    C* pz = z.data<C>();
    const C *pl = lse.data<C>(), *pd = dy.data<C>();
    const std::int64_t* pt = targets.data<std::int64_t>();
    // Probabilities below the smallest normal number are flushed to zero: subnormal operands make
    // x86 matrix products many times slower, and such terms cannot change a float sum of normal values.
    constexpr C tiny = std::numeric_limits<C>::min();
    parallel_range(rows, [&](std::int64_t r0, std::int64_t r1) {
        for (std::int64_t r = r0; r < r1; ++r) {
            C* zr = pz + r * cols;
            const C l = pl[r], d = pd[r];
            for (std::int64_t j = 0; j < cols; ++j) {
                const C p = cpu_exp(zr[j] - l);
                zr[j] = p < tiny ? C(0) : -d * p;
            }
            const std::int64_t t = pt[r] - v0;
            if (t >= 0 && t < cols) zr[t] += d;
        }
    }, cols);
}
}  // namespace detail

// log_softmax(hidden @ weight^T)[n, targets[n]] for hidden (N, C), weight (V, C), targets (N,) int64.
// expected_embedding: also return E = softmax(logits) @ weight (CPU; ignored on CUDA), for the
// backward of a frozen head (token_logprobs_frozen_head_backward).
inline TokenLogprobsResult token_logprobs(const Tensor& hidden_in, const Tensor& weight_in, const Tensor& targets_in,
                                          LmHeadChunks chunks_in = {}, bool expected_embedding = false) {
    const char* op = "token_logprobs";
    detail::check_lm_head_args(op, hidden_in, weight_in);
    const std::int64_t N = hidden_in.size(0), V = weight_in.size(0);
    const Device dev = hidden_in.device();
    const DType ct = detail::lm_head_compute_dtype(hidden_in.dtype());
    TokenLogprobsResult r;
    r.targets = detail::targets_on(op, targets_in, N, V, dev);
    r.logprobs = Tensor::empty({N}, ct, dev);
    r.lse = Tensor::empty({N}, ct, dev);
    if (N == 0) return r;
    const LmHeadChunks chunks = detail::resolve_chunks(chunks_in, N, V, dev);
    Tensor h = detail::in_compute_type(hidden_in), w = detail::in_compute_type(weight_in);
    std::vector<double> init(std::size_t(3 * N), 0.0);  // (max, sum, target logit) per row
    for (std::int64_t n = 0; n < N; ++n) init[std::size_t(3 * n)] = -std::numeric_limits<double>::infinity();
    Tensor state = Tensor::from(init, {N, 3}, ct).to(dev);
    const bool expect = expected_embedding && dev == Device::cpu;
    const std::int64_t width = hidden_in.size(1);
    Tensor acc = expect ? Tensor::zeros({N, width}, ct, dev) : Tensor();  // running sum of exp(z - m) W per row
    for (std::int64_t r0 = 0; r0 < N; r0 += chunks.rows) {
        const std::int64_t R = std::min(chunks.rows, N - r0);
        Tensor hc = h.narrow(0, r0, R), tc = r.targets.narrow(0, r0, R), sc = state.narrow(0, r0, R);
        for (std::int64_t v0 = 0; v0 < V; v0 += chunks.vocab) {
            const std::int64_t Vc = std::min(chunks.vocab, V - v0);
            Tensor z = detail::chunk_product(hc, w.narrow(0, v0, Vc).transpose(0, 1));  // (R, Vc), compute type
            if (expect) {
                Tensor ac = acc.narrow(0, r0, R);
                if (ct == DType::f32)
                    detail::cpu_lm_head_update_expected<float>(z.data<float>(), tc.data<std::int64_t>(), sc.data<float>(), ac.data<float>(), R,
                                                               Vc, width, v0);
                else
                    detail::cpu_lm_head_update_expected<double>(z.data<double>(), tc.data<std::int64_t>(), sc.data<double>(),
                                                                ac.data<double>(), R, Vc, width, v0);
                if (z.dtype() != w.dtype()) z = z.to(w.dtype());  // bf16 operands for a bf16 product
                detail::gemm_accumulate(ac, z, w.narrow(0, v0, Vc));
                continue;
            }
            if (dev == Device::cuda) {
                kernels::lm_head_update(z.ref(), tc.ref(), sc.ref(), R, Vc, v0);
                continue;
            }
            if (ct == DType::f32) detail::cpu_lm_head_update<float>(z.data<float>(), tc.data<std::int64_t>(), sc.data<float>(), R, Vc, v0);
            else detail::cpu_lm_head_update<double>(z.data<double>(), tc.data<std::int64_t>(), sc.data<double>(), R, Vc, v0);
        }
    }
    if (dev == Device::cuda) {
        kernels::lm_head_finish(state.ref(), r.logprobs.ref(), r.lse.ref(), N);
        return r;
    }
    auto finish = [&](auto tag) {
        using C = decltype(tag);
        const C* ps = state.data<C>();
        C* lp = r.logprobs.data<C>();
        C* lse = r.lse.data<C>();
        for (std::int64_t n = 0; n < N; ++n) {
            const C m = ps[3 * n], log_s = std::log(ps[3 * n + 1]);
            lp[n] = (ps[3 * n + 2] - m) - log_s;  // as log_softmax: (z - m) - log(s)
            lse[n] = m + log_s;
        }
        if (expect) {  // E = acc / s
            C* pa = acc.data<C>();
            for (std::int64_t n = 0; n < N; ++n) {
                const C inv = C(1) / ps[3 * n + 1];
                for (std::int64_t c = 0; c < width; ++c) pa[n * width + c] *= inv;
            }
            r.expected = acc;
        }
    };
    if (ct == DType::f32) finish(float{});
    else finish(double{});
    return r;
}

// Gradients of token_logprobs given its saved log-sum-exp and the output gradient dy (N,), in
// the inputs' dtypes; `dweight_dtype` float32 for a bf16 weight keeps the weight's gradient as
// accumulated (a parameter's float32 gradient buffer, Parameter::grad_dtype).
inline TokenLogprobsGrads token_logprobs_backward(const Tensor& hidden_in, const Tensor& weight_in, const Tensor& targets,
                                                  const Tensor& lse_in, const Tensor& dy_in, bool want_dhidden, bool want_dweight,
                                                  LmHeadChunks chunks_in = {}, std::optional<DType> dweight_dtype = std::nullopt) {
    const char* op = "token_logprobs backward";
    detail::check_lm_head_args(op, hidden_in, weight_in);
    const std::int64_t N = hidden_in.size(0), V = weight_in.size(0), Cdim = hidden_in.size(1);
    const Device dev = hidden_in.device();
    const DType ct = detail::lm_head_compute_dtype(hidden_in.dtype());
    DEVIANT_REQUIRE(dy_in.shape() == Shape({N}) && lse_in.shape() == Shape({N}) && targets.shape() == Shape({N}) &&
                        lse_in.dtype() == ct && targets.dtype() == DType::i64,
                    "{}: gradient {}, log-sum-exp {} or targets {} do not match hidden {}", op, dy_in.describe(), lse_in.describe(),
                    targets.describe(), hidden_in.describe());
    TokenLogprobsGrads g;
    Tensor dh = want_dhidden ? Tensor::zeros({N, Cdim}, ct, dev) : Tensor();
    Tensor dw = want_dweight ? Tensor::zeros({V, Cdim}, ct, dev) : Tensor();
    if (N > 0 && (want_dhidden || want_dweight)) {
        const LmHeadChunks chunks = detail::resolve_chunks(chunks_in, N, V, dev);
        Tensor h = detail::in_compute_type(hidden_in), w = detail::in_compute_type(weight_in);
        Tensor dy = dy_in.to(dev, ct).contiguous(), lse = lse_in.contiguous(), tg = targets.to(dev).contiguous();
        for (std::int64_t r0 = 0; r0 < N; r0 += chunks.rows) {
            const std::int64_t R = std::min(chunks.rows, N - r0);
            Tensor hc = h.narrow(0, r0, R), tc = tg.narrow(0, r0, R), lc = lse.narrow(0, r0, R), dc = dy.narrow(0, r0, R);
            for (std::int64_t v0 = 0; v0 < V; v0 += chunks.vocab) {
                const std::int64_t Vc = std::min(chunks.vocab, V - v0);
                Tensor wc = w.narrow(0, v0, Vc);
                Tensor z = detail::chunk_product(hc, wc.transpose(0, 1));  // (R, Vc), compute type; becomes dz in place
                if (dev == Device::cuda) {
                    kernels::lm_head_logit_grad(z.ref(), tc.ref(), lc.ref(), dc.ref(), R, Vc, v0);
                } else {
                    if (ct == DType::f32) detail::cpu_lm_head_logit_grad<float>(z, tc, lc, dc, R, Vc, v0);
                    else detail::cpu_lm_head_logit_grad<double>(z, tc, lc, dc, R, Vc, v0);
                }
                if (z.dtype() != hc.dtype()) z = z.to(hc.dtype());  // bf16 tensor-core operands
                if (want_dhidden) detail::gemm_accumulate(dh.narrow(0, r0, R), z, wc);
                if (want_dweight) detail::gemm_accumulate(dw.narrow(0, v0, Vc), z.transpose(0, 1), hc);
            }
        }
    }
    if (want_dhidden) g.dhidden = dh.dtype() == hidden_in.dtype() ? dh : dh.to(hidden_in.dtype());
    const DType dw_dtype = dweight_dtype.value_or(weight_in.dtype());
    DEVIANT_REQUIRE(dw_dtype == weight_in.dtype() || dw_dtype == ct, "{}: a {} weight's gradient cannot be {}", op,
                    dtype_name(weight_in.dtype()), dtype_name(dw_dtype));
    if (want_dweight) g.dweight = dw.dtype() == dw_dtype ? dw : dw.to(dw_dtype);
    return g;
}

// dhidden of token_logprobs for a frozen head: dy[n] * (weight[targets[n]] - expected[n]), in the
// hidden's dtype; expected (N, C) from token_logprobs(..., expected_embedding = true).
inline Tensor token_logprobs_frozen_head_backward(const Tensor& weight_in, const Tensor& targets, const Tensor& expected,
                                                  const Tensor& dy_in, DType hidden_dtype) {
    const std::int64_t N = expected.size(0), Cdim = expected.size(1);
    DEVIANT_REQUIRE(expected.device() == Device::cpu && weight_in.rank() == 2 && weight_in.size(1) == Cdim && dy_in.shape() == Shape({N}) &&
                        targets.shape() == Shape({N}),
                    "token_logprobs backward (frozen head): weight {}, expected {}, gradient {}, targets {} do not fit",
                    weight_in.describe(), expected.describe(), dy_in.describe(), targets.describe());
    const DType ct = expected.dtype();
    Tensor w = weight_in.contiguous(), dy = dy_in.to(Device::cpu, ct).contiguous(), e = expected.contiguous();
    Tensor dh = Tensor::empty({N, Cdim}, ct, Device::cpu);
    const std::int64_t* pt = targets.data<std::int64_t>();
    DEVIANT_DISPATCH_FLOAT(w.dtype(), W, [&] {
        const W* pw = w.data<W>();
        auto rows = [&](auto tag) {
            using C = decltype(tag);
            const C *pe = e.data<C>(), *pd = dy.data<C>();
            C* po = dh.data<C>();
            detail::parallel_range(N, [&](std::int64_t r0, std::int64_t r1) {
                for (std::int64_t n = r0; n < r1; ++n) {
                    const W* wr = pw + pt[n] * Cdim;
                    const C d = pd[n];
                    for (std::int64_t c = 0; c < Cdim; ++c) po[n * Cdim + c] = d * (C(load(wr[c])) - pe[n * Cdim + c]);
                }
            }, Cdim);
        };
        if (ct == DType::f32) rows(float{});
        else rows(double{});
    });
    return dh.dtype() == hidden_dtype ? dh : dh.to(hidden_dtype);
}

}  // namespace deviant::ops

namespace deviant {

namespace detail {
struct LmHeadAttr {
    ops::LmHeadChunks chunks;
};
struct FrozenHeadAttr {
    DType hidden_dtype;
};
}  // namespace detail

// log p(targets[n] | hidden[n]) under the head weight (V, C): log_softmax(hidden @ weight^T)[n, targets[n]],
// without materialising the (N, V) logits. targets (N,) int64 are not differentiated.
// Backward reads hidden and weight from the tape (their values stay there until it is cleared).
inline Var token_logprobs(Var hidden, Var weight, const Tensor& targets, ops::LmHeadChunks chunks = {}) {
    // a frozen head on the CPU: E = softmax(logits) W comes out of the forward, backward is element-wise
    if (grad_enabled() && hidden.requires_grad() && !weight.requires_grad() && hidden.device() == Device::cpu) {
        ops::TokenLogprobsResult r = ops::token_logprobs(hidden.value(), weight.value(), targets, chunks, /*expected_embedding=*/true);
        return hidden.tape->record(r.logprobs, {hidden, weight}, [](Tape& t, const Node& n) {
            t.accumulate(n.in[0], ops::token_logprobs_frozen_head_backward(t.value(n.in[1]), n.saved[0], n.saved[1], output_grad(t, n),
                                                                           n.attr<detail::FrozenHeadAttr>().hidden_dtype));
        }, {r.targets, r.expected}, detail::FrozenHeadAttr{hidden.dtype()});
    }
    ops::TokenLogprobsResult r = ops::token_logprobs(hidden.value(), weight.value(), targets, chunks);
    return hidden.tape->record(r.logprobs, {hidden, weight}, [](Tape& t, const Node& n) {
        ops::TokenLogprobsGrads g = ops::token_logprobs_backward(t.value(n.in[0]), t.value(n.in[1]), n.saved[0], n.saved[1],
                                                                 output_grad(t, n), t.needs_grad(n, 0), t.needs_grad(n, 1),
                                                                 n.attr<detail::LmHeadAttr>().chunks, t.grad_dtype(n.in[1]));
        if (t.needs_grad(n, 0)) t.accumulate(n.in[0], std::move(g.dhidden));
        if (t.needs_grad(n, 1)) t.accumulate(n.in[1], std::move(g.dweight));
    }, {r.targets, r.lse}, detail::LmHeadAttr{chunks});
}

}  // namespace deviant
