// deviant/ops/attention.hpp — fused causal self-attention with segment ids and grouped key/value
// heads, flash-attention style: no (T, T) score matrix is ever stored.
//   q (B, H, T, D), k and v (B, Hkv, T, D) with H a multiple of Hkv, segments (B, T) int64:
//   out[b, h, i] = sum_j softmax_j(scale * q[b, h, i] . k[b, g, j]) v[b, g, j]   with g = h / (H / Hkv),
//   over the keys j <= i with segments[b, j] == segments[b, i] (packed and right-padded rows,
//   see nn/context.hpp) and, with a sliding window W > 0 (Mistral), i - j < W. K/V heads are
//   shared by index, never repeated in memory.
// The forward runs an online softmax over the keys and keeps only the output and the per-row
// log-sum-exp lse (B, H, T) (compute type: float32 for bf16/f32, float64 for f64). The backward
// recomputes p = exp(scale q.k - lse) key by key:
//   delta_i = dout_i . out_i,  ds_ij = p_ij (dout_i . v_j - delta_i),
//   dq_i = scale sum_j ds_ij k_j,  dk_j = scale sum_i ds_ij q_i,  dv_j = sum_i p_ij dout_i
// (dk, dv summed over the query heads of a group). The CPU reference is here: per (b, h) and per
// block of at most 64 query rows of one segment it forms that block's scores against its
// segment's keys up to the block's end with one BLAS product, masks and normalises them, and
// applies them with another (backward: five products per block), so the (T, T) matrix is never
// held either, only a (64, T) block; blocks start at segment starts, so results do not depend on
// where a sequence sits in a row (padded and packed rows agree bit for bit). The CUDA kernels
// (deterministic, no atomics) are in kernels/attention.cuh.
#pragma once
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "deviant/ops/blas_threads.hpp"
#include "deviant/ops/elementwise.hpp"
#include "deviant/ops/matmul.hpp"
#include "deviant/ops/vector_math.hpp"

namespace deviant::kernels {
// q, out (B, H, T, D), k, v (B, Hkv, T, D) contiguous, same floating dtype; segments (B, T) int64
// contiguous; lse (B, H, T) contiguous in the compute type (f32, or f64 for f64 inputs).
DEVIANT_CUDA_LAUNCHER(attention_forward, const TensorRef& q, const TensorRef& k, const TensorRef& v, const TensorRef& segments,
                      const TensorRef& out, const TensorRef& lse, double scale, std::int64_t window)
// dout like out; delta (B, H, T) like lse, a workspace; dq like q, dk and dv like k (all
// contiguous, fully written).
DEVIANT_CUDA_LAUNCHER(attention_backward, const TensorRef& q, const TensorRef& k, const TensorRef& v, const TensorRef& segments,
                      const TensorRef& out, const TensorRef& lse, const TensorRef& dout, const TensorRef& delta, const TensorRef& dq,
                      const TensorRef& dk, const TensorRef& dv, double scale, std::int64_t window)
}  // namespace deviant::kernels

namespace deviant::ops {

namespace detail {
inline DType attention_lse_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

// Query rows per block of the CPU reference: its scores are one (64, T) matrix.
inline constexpr std::int64_t attention_block = 64;

// BLAS wants leading dimensions of at least 1, also for empty (head size 0) operands.
inline int blas_ld(std::int64_t ld) { return blas_int(std::max<std::int64_t>(ld, 1), "leading dimension"); }

// The CPU reference's work items for one row of segment ids s (T,): query blocks of at most
// attention_block rows inside one run of equal ids, each with the first key its queries may see
// (the first occurrence of their id). Blocks start at each run's start, so a sequence is cut the
// same way wherever it sits in a row: padded and packed layouts give bit-identical results.
struct AttentionBlock {
    std::int64_t q0, rows, k0, id;
};
inline std::vector<AttentionBlock> attention_blocks(const std::int64_t* s, std::int64_t T) {
    std::vector<AttentionBlock> out;
    std::vector<std::pair<std::int64_t, std::int64_t>> first;  // (id, first index), few entries per row
    for (std::int64_t i = 0; i < T;) {
        const std::int64_t id = s[i];
        std::int64_t e = i;
        while (e < T && s[e] == id) ++e;
        auto it = std::find_if(first.begin(), first.end(), [&](const auto& f) { return f.first == id; });
        if (it == first.end()) it = first.insert(first.end(), {id, i});
        for (std::int64_t q0 = i; q0 < e; q0 += attention_block) out.push_back({q0, std::min(attention_block, e - q0), it->second, id});
        i = e;
    }
    return out;
}

// Row-major C (M, N) = alpha op(A) op(B) + beta C (float32 or float64, ops/cpu_gemm.hpp).
template <class C>
void gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, C alpha, const C* A, std::int64_t lda, const C* B,
          std::int64_t ldb, C beta, C* out, std::int64_t ldc) {
    gemm_row_major<C>(trans_a, trans_b, M, N, K, alpha, A, std::max<std::int64_t>(lda, 1), B, std::max<std::int64_t>(ldb, 1), beta, out,
                      std::max<std::int64_t>(ldc, 1));
}

// A contiguous CPU tensor as a compute-type array: the tensor's own memory when it already is
// (float32, float64), a widened copy for bfloat16.
template <class T>
struct ComputeCopy {
    using C = compute_t<T>;
    std::vector<C> wide;
    const C* p = nullptr;
    explicit ComputeCopy(const Tensor& t) {
        if constexpr (std::is_same_v<T, C>) {
            p = t.template data<C>();
        } else {
            const T* src = t.template data<T>();
            wide.resize(static_cast<std::size_t>(t.numel()));
            for (std::size_t n = 0; n < wide.size(); ++n) wide[n] = load(src[n]);
            p = wide.data();
        }
    }
};

// bias[j] = 0 for the keys k0 + j (j < keys) of segment `id`, -inf for the others: the same-segment
// part of the mask, shared by every query row of a block.
template <class C>
void segment_bias(const std::int64_t* sb, std::int64_t k0, std::int64_t keys, std::int64_t id, C* bias) {
    for (std::int64_t j = 0; j < keys; ++j) bias[j] = sb[k0 + j] == id ? C(0) : -std::numeric_limits<C>::infinity();
}

// One query row of scores sr (keys,): keys [first, last] (with their bias) stay, the rest are 0;
// kept entries become exp(sr + bias - shift) (below the smallest normal number: 0, which changes
// no sum of normal values but slows x86 products). Returns the sum of the kept entries (8 lanes,
// a fixed order). shift = +inf asks for the row's maximum as the shift, written to *max_out.
template <class C>
C exp_row(C* sr, std::int64_t keys, std::int64_t first, std::int64_t last, const C* bias, C shift, C* max_out) {
    for (std::int64_t j = 0; j < first; ++j) sr[j] = C(0);
    for (std::int64_t j = last + 1; j < keys; ++j) sr[j] = C(0);
    C* x = sr + first;
    const C* bx = bias + first;
    const std::int64_t n = last - first + 1;
    for (std::int64_t j = 0; j < n; ++j) x[j] += bx[j];
    if (max_out) *max_out = shift = max_of(x, n);
    C lane[8] = {};
    constexpr C tiny = std::numeric_limits<C>::min();
    std::int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; ++k) {
            C p = cpu_exp(x[j + k] - shift);
            p = p < tiny ? C(0) : p;
            x[j + k] = p;
            lane[k] += p;
        }
    C sum = C(0);
    for (int k = 0; k < 8; ++k) sum += lane[k];
    for (; j < n; ++j) {
        C p = cpu_exp(x[j] - shift);
        p = p < tiny ? C(0) : p;
        x[j] = p;
        sum += p;
    }
    return sum;
}

inline void check_attention_inputs(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& segments) {
    require_float(q, "causal_attention");
    DEVIANT_REQUIRE(q.rank() == 4 && k.rank() == 4 && v.rank() == 4,
                    "causal_attention: expected q (B, H, T, D), k and v (B, Hkv, T, D), got q {}, k {}, v {}", q.shape().str(),
                    k.shape().str(), v.shape().str());
    DEVIANT_REQUIRE(k.shape() == v.shape(), "causal_attention: k {} and v {} differ in shape", k.shape().str(), v.shape().str());
    DEVIANT_REQUIRE(q.dtype() == k.dtype() && q.dtype() == v.dtype(), "causal_attention: q, k, v dtypes differ ({}, {}, {})",
                    dtype_name(q.dtype()), dtype_name(k.dtype()), dtype_name(v.dtype()));
    DEVIANT_REQUIRE(q.device() == k.device() && q.device() == v.device(), "causal_attention: q, k, v are on different devices");
    std::int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3), Hkv = k.size(1);
    DEVIANT_REQUIRE(k.size(0) == B && k.size(2) == T && k.size(3) == D,
                    "causal_attention: k {} does not match q {} in batch, length or head size", k.shape().str(), q.shape().str());
    DEVIANT_REQUIRE(Hkv > 0 && H % Hkv == 0, "causal_attention: {} query heads are not a multiple of {} key/value heads", H, Hkv);
    DEVIANT_REQUIRE(segments.dtype() == DType::i64 && segments.rank() == 2 && segments.size(0) == B && segments.size(1) == T,
                    "causal_attention: segment ids must be (B, T) = ({}, {}) int64, got {}", B, T, segments.describe());
    if (q.device() == Device::cuda)
        DEVIANT_REQUIRE(D <= 256, "causal_attention: CUDA kernels support head size up to 256, got {}", D);
}
}  // namespace detail

struct AttentionOutput {
    Tensor out;  // (B, H, T, D)
    Tensor lse;  // (B, H, T), log-sum-exp of each row's scaled, masked scores
};

// window > 0: each query sees at most its last `window` keys (itself included); 0: no limit.
inline AttentionOutput causal_attention_forward(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& segments_in,
                                                double scale, std::int64_t window = 0) {
    detail::check_attention_inputs(q_in, k_in, v_in, segments_in);
    Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
    Tensor seg = segments_in.to(q.device()).contiguous();
    std::int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3), Hkv = k.size(1), group = H / Hkv;
    AttentionOutput r{Tensor::empty(q.shape(), q.dtype(), q.device()),
                      Tensor::empty({B, H, T}, detail::attention_lse_dtype(q.dtype()), q.device())};
    if (q.numel() == 0 && r.lse.numel() == 0) return r;
    if (q.device() == Device::cuda) {
        kernels::attention_forward(q.ref(), k.ref(), v.ref(), seg.ref(), r.out.ref(), r.lse.ref(), scale, window);
        return r;
    }
    const std::int64_t* s = seg.data<std::int64_t>();
    DEVIANT_DISPATCH_FLOAT(q.dtype(), T_, [&] {
        using C = compute_t<T_>;
        const detail::ComputeCopy<T_> cq(q), ck(k), cv(v);
        std::vector<C> out(static_cast<std::size_t>(q.numel()));
        C* pl = r.lse.template data<C>();
        std::vector<std::vector<detail::AttentionBlock>> row_blocks(static_cast<std::size_t>(B));
        for (std::int64_t b = 0; b < B; ++b) row_blocks[std::size_t(b)] = detail::attention_blocks(s + b * T, T);
        // (b, h) pairs in parallel, each product on its worker's thread; every pair writes its own
        // output rows, so results do not depend on the number of threads.
        const SingleThreadedBlas blas_scope(ThreadPool::global().size() > 1 && B * H > 1);
        detail::parallel_range(B * H, [&](std::int64_t p0, std::int64_t p1) {
            std::vector<C> S(static_cast<std::size_t>(detail::attention_block * T)), bias(static_cast<std::size_t>(T));
            for (std::int64_t bh = p0; bh < p1; ++bh) {
                const std::int64_t b = bh / H, h = bh % H;
                const std::int64_t* sb = s + b * T;
                const std::int64_t kv = (b * Hkv + h / group) * T * D, qo = (b * H + h) * T * D;
                for (const detail::AttentionBlock& blk : row_blocks[std::size_t(b)]) {
                    const std::int64_t rows = blk.rows, k0 = blk.k0, keys = blk.q0 + rows - k0;
                    detail::segment_bias(sb, k0, keys, blk.id, bias.data());
                    // S (rows, keys) = scale * Q_blk K[k0:]^T, then masked, exponentiated and normalised row by row
                    detail::gemm<C>(false, true, rows, keys, D, C(scale), cq.p + qo + blk.q0 * D, D, ck.p + kv + k0 * D, D, C(0), S.data(), keys);
                    for (std::int64_t r0 = 0; r0 < rows; ++r0) {
                        const std::int64_t i = blk.q0 + r0, last = i - k0;  // keys k0 .. i, those of the same id
                        const std::int64_t first = window > 0 ? std::max<std::int64_t>(0, last - window + 1) : 0;  // sliding window
                        C* sr = S.data() + r0 * keys;
                        C m;
                        const C l = detail::exp_row(sr, keys, first, last, bias.data(), C(0), &m);
                        const C inv = C(1) / l;  // l >= 1: the diagonal is always allowed
                        for (std::int64_t j = first; j <= last; ++j) sr[j] *= inv;
                        pl[(b * H + h) * T + i] = m + std::log(l);
                    }
                    // O_blk = P V[k0:]
                    detail::gemm<C>(false, false, rows, D, keys, C(1), S.data(), keys, cv.p + kv + k0 * D, D, C(0), out.data() + qo + blk.q0 * D, D);
                }
            }
        }, 1 << 15);
        T_* po = r.out.template data<T_>();
        for (std::size_t n = 0; n < out.size(); ++n) po[n] = store<T_>(out[n]);
    });
    return r;
}

struct AttentionGrads {
    Tensor dq, dk, dv;
};

inline AttentionGrads causal_attention_backward(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& segments_in,
                                                const Tensor& out_in, const Tensor& lse_in, const Tensor& dout_in, double scale,
                                                std::int64_t window = 0) {
    detail::check_attention_inputs(q_in, k_in, v_in, segments_in);
    require_same(out_in, dout_in, "causal_attention backward");
    DEVIANT_REQUIRE(out_in.shape() == q_in.shape(), "causal_attention backward: output {} does not match q {}", out_in.shape().str(),
                    q_in.shape().str());
    Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous(), out = out_in.contiguous(), dout = dout_in.contiguous();
    Tensor lse = lse_in.contiguous(), seg = segments_in.to(q.device()).contiguous();
    std::int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3), Hkv = k.size(1), group = H / Hkv;
    DEVIANT_REQUIRE(lse.shape() == Shape({B, H, T}) && lse.dtype() == detail::attention_lse_dtype(q.dtype()),
                    "causal_attention backward: log-sum-exp {} does not match q {}", lse.describe(), q.shape().str());
    AttentionGrads g{Tensor::empty(q.shape(), q.dtype(), q.device()), Tensor::empty(k.shape(), k.dtype(), k.device()),
                     Tensor::empty(v.shape(), v.dtype(), v.device())};
    if (q.device() == Device::cuda) {
        if (q.numel() + k.numel() > 0) {
            Tensor delta = Tensor::empty(lse.shape(), lse.dtype(), q.device());
            kernels::attention_backward(q.ref(), k.ref(), v.ref(), seg.ref(), out.ref(), lse.ref(), dout.ref(), delta.ref(), g.dq.ref(),
                                        g.dk.ref(), g.dv.ref(), scale, window);
        }
        return g;
    }
    const std::int64_t* s = seg.data<std::int64_t>();
    DEVIANT_DISPATCH_FLOAT(q.dtype(), T_, [&] {
        using C = compute_t<T_>;
        const detail::ComputeCopy<T_> cq(q), ck(k), cv(v), co(out), cg(dout);
        const C* pl = lse.template data<C>();
        // Accumulate in the compute type, store once at the end.
        std::vector<C> dq(std::size_t(q.numel()), C(0)), dk(std::size_t(k.numel()), C(0)), dv(std::size_t(v.numel()), C(0));
        std::vector<std::vector<detail::AttentionBlock>> row_blocks(static_cast<std::size_t>(B));
        for (std::int64_t b = 0; b < B; ++b) row_blocks[std::size_t(b)] = detail::attention_blocks(s + b * T, T);
        // (b, key/value head) pairs in parallel: the query heads of a group add into the same dK and
        // dV rows, so each pair runs its group's heads in order on one worker (results do not depend
        // on the number of threads).
        const SingleThreadedBlas blas_scope(ThreadPool::global().size() > 1 && B * Hkv > 1);
        detail::parallel_range(B * Hkv, [&](std::int64_t p0, std::int64_t p1) {
            std::vector<C> P(static_cast<std::size_t>(detail::attention_block * T)), dS(P.size()), delta(static_cast<std::size_t>(T)),
                bias(static_cast<std::size_t>(T));
            for (std::int64_t bg = p0; bg < p1; ++bg) {
                const std::int64_t b = bg / Hkv, kvh = bg % Hkv;
                const std::int64_t* sb = s + b * T;
                for (std::int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
                    const std::int64_t kv = (b * Hkv + kvh) * T * D, qo = (b * H + h) * T * D;
                    for (std::int64_t i = 0; i < T; ++i) {  // delta_i = dout_i . out_i
                        C acc = C(0);
                        for (std::int64_t d = 0; d < D; ++d) acc += cg.p[qo + i * D + d] * co.p[qo + i * D + d];
                        delta[std::size_t(i)] = acc;
                    }
                    for (const detail::AttentionBlock& blk : row_blocks[std::size_t(b)]) {
                        const std::int64_t rows = blk.rows, k0 = blk.k0, keys = blk.q0 + rows - k0;
                        const C* q_blk = cq.p + qo + blk.q0 * D;
                        const C* g_blk = cg.p + qo + blk.q0 * D;
                        const C* k_seg = ck.p + kv + k0 * D;
                        const C* v_seg = cv.p + kv + k0 * D;
                        detail::segment_bias(sb, k0, keys, blk.id, bias.data());
                        // P = exp(scale Q_blk K[k0:]^T - lse) on the allowed keys, 0 elsewhere
                        detail::gemm<C>(false, true, rows, keys, D, C(scale), q_blk, D, k_seg, D, C(0), P.data(), keys);
                        for (std::int64_t r0 = 0; r0 < rows; ++r0) {
                            const std::int64_t i = blk.q0 + r0, last = i - k0;
                            const std::int64_t first = window > 0 ? std::max<std::int64_t>(0, last - window + 1) : 0;
                            detail::exp_row(P.data() + r0 * keys, keys, first, last, bias.data(), pl[(b * H + h) * T + i], static_cast<C*>(nullptr));
                        }
                        // dV[k0:] += P^T dO_blk;  dP = dO_blk V[k0:]^T
                        detail::gemm<C>(true, false, keys, D, rows, C(1), P.data(), keys, g_blk, D, C(1), dv.data() + kv + k0 * D, D);
                        detail::gemm<C>(false, true, rows, keys, D, C(1), g_blk, D, v_seg, D, C(0), dS.data(), keys);
                        for (std::int64_t r0 = 0; r0 < rows; ++r0) {  // dS = P (dP - delta) scale
                            const C di = delta[std::size_t(blk.q0 + r0)];
                            C* dr = dS.data() + r0 * keys;
                            const C* pr = P.data() + r0 * keys;
                            for (std::int64_t j = 0; j < keys; ++j) dr[j] = pr[j] * (dr[j] - di) * C(scale);
                        }
                        // dQ_blk = dS K[k0:];  dK[k0:] += dS^T Q_blk
                        detail::gemm<C>(false, false, rows, D, keys, C(1), dS.data(), keys, k_seg, D, C(0), dq.data() + qo + blk.q0 * D, D);
                        detail::gemm<C>(true, false, keys, D, rows, C(1), dS.data(), keys, q_blk, D, C(1), dk.data() + kv + k0 * D, D);
                    }
                }
            }
        }, 1 << 15);
        auto put = [](const std::vector<C>& src, Tensor& dst) {
            T_* p = dst.template data<T_>();
            for (std::size_t n = 0; n < src.size(); ++n) p[n] = store<T_>(src[n]);
        };
        put(dq, g.dq);
        put(dk, g.dk);
        put(dv, g.dv);
    });
    return g;
}

// Fused causal attention output (B, H, T, D); see the top of this file.
inline Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& segments, double scale,
                               std::int64_t window = 0) {
    return causal_attention_forward(q, k, v, segments, scale, window).out;
}

}  // namespace deviant::ops

namespace deviant {

namespace detail {
struct AttentionAttr {
    double scale;
    std::int64_t window;
};
}  // namespace detail

// Differentiable fused causal attention: q (B, H, T, D), k and v (B, Hkv, T, D), segments (B, T)
// int64 (a constant). Saves the output and the log-sum-exp; q, k, v are read back from the tape.
// window > 0: sliding-window attention (each query sees its last `window` keys).
inline Var causal_attention(Var q, Var k, Var v, const Tensor& segments, double scale, std::int64_t window = 0) {
    DEVIANT_REQUIRE(window >= 0, "causal_attention: sliding window must be >= 0, got {}", window);
    Tensor seg = segments.to(q.device()).contiguous();
    ops::AttentionOutput r = ops::causal_attention_forward(q.value(), k.value(), v.value(), seg, scale, window);
    return q.tape->record(r.out, {q, k, v}, [](Tape& t, const Node& n) {
        ops::AttentionGrads g = ops::causal_attention_backward(t.value(n.in[0]), t.value(n.in[1]), t.value(n.in[2]), n.saved[2], n.saved[0],
                                                               n.saved[1], output_grad(t, n), n.attr<detail::AttentionAttr>().scale,
                                                               n.attr<detail::AttentionAttr>().window);
        t.accumulate(n.in[0], std::move(g.dq));
        t.accumulate(n.in[1], std::move(g.dk));
        t.accumulate(n.in[2], std::move(g.dv));
    }, {r.out, r.lse, seg}, detail::AttentionAttr{scale, window});
}

}  // namespace deviant
