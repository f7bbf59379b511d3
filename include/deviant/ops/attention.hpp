// deviant/ops/attention.hpp — fused causal self-attention with segment ids and grouped key/value
// heads, flash-attention style: no (T, T) score matrix is ever stored.
//   q (B, H, T, D), k and v (B, Hkv, T, D) with H a multiple of Hkv, segments (B, T) int64:
//   out[b, h, i] = sum_j softmax_j(scale * q[b, h, i] . k[b, g, j]) v[b, g, j]   with g = h / (H / Hkv),
//   over the keys j <= i with segments[b, j] == segments[b, i] (packed and right-padded rows,
//   see nn/context.hpp). K/V heads are shared by index, never repeated in memory.
// The forward runs an online softmax over the keys and keeps only the output and the per-row
// log-sum-exp lse (B, H, T) (compute type: float32 for bf16/f32, float64 for f64). The backward
// recomputes p = exp(scale q.k - lse) key by key:
//   delta_i = dout_i . out_i,  ds_ij = p_ij (dout_i . v_j - delta_i),
//   dq_i = scale sum_j ds_ij k_j,  dk_j = scale sum_i ds_ij q_i,  dv_j = sum_i p_ij dout_i
// (dk, dv summed over the query heads of a group). CPU reference loops are here; the CUDA
// kernels (deterministic, no atomics) are in kernels/attention.cuh.
#pragma once
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "deviant/ops/elementwise.hpp"

namespace deviant::kernels {
// q, out (B, H, T, D), k, v (B, Hkv, T, D) contiguous, same floating dtype; segments (B, T) int64
// contiguous; lse (B, H, T) contiguous in the compute type (f32, or f64 for f64 inputs).
DEVIANT_CUDA_LAUNCHER(attention_forward, const TensorRef& q, const TensorRef& k, const TensorRef& v, const TensorRef& segments,
                      const TensorRef& out, const TensorRef& lse, double scale)
// dout like out; delta (B, H, T) like lse, a workspace; dq like q, dk and dv like k (all
// contiguous, fully written).
DEVIANT_CUDA_LAUNCHER(attention_backward, const TensorRef& q, const TensorRef& k, const TensorRef& v, const TensorRef& segments,
                      const TensorRef& out, const TensorRef& lse, const TensorRef& dout, const TensorRef& delta, const TensorRef& dq,
                      const TensorRef& dk, const TensorRef& dv, double scale)
}  // namespace deviant::kernels

namespace deviant::ops {

namespace detail {
inline DType attention_lse_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

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

inline AttentionOutput causal_attention_forward(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& segments_in,
                                                double scale) {
    detail::check_attention_inputs(q_in, k_in, v_in, segments_in);
    Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
    Tensor seg = segments_in.to(q.device()).contiguous();
    std::int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3), Hkv = k.size(1), group = H / Hkv;
    AttentionOutput r{Tensor::empty(q.shape(), q.dtype(), q.device()),
                      Tensor::empty({B, H, T}, detail::attention_lse_dtype(q.dtype()), q.device())};
    if (q.numel() == 0 && r.lse.numel() == 0) return r;
    if (q.device() == Device::cuda) {
        kernels::attention_forward(q.ref(), k.ref(), v.ref(), seg.ref(), r.out.ref(), r.lse.ref(), scale);
        return r;
    }
    const std::int64_t* s = seg.data<std::int64_t>();
    DEVIANT_DISPATCH_FLOAT(q.dtype(), T_, [&] {
        using C = compute_t<T_>;
        const T_ *pq = q.data<T_>(), *pk = k.data<T_>(), *pv = v.data<T_>();
        T_* po = r.out.data<T_>();
        C* pl = r.lse.data<C>();
        std::vector<C> qi(static_cast<std::size_t>(D)), acc(static_cast<std::size_t>(D));
        for (std::int64_t b = 0; b < B; ++b)
            for (std::int64_t h = 0; h < H; ++h) {
                std::int64_t kv = (b * Hkv + h / group) * T * D;
                for (std::int64_t i = 0; i < T; ++i) {
                    std::int64_t row = (b * H + h) * T + i;
                    for (std::int64_t d = 0; d < D; ++d) qi[d] = load(pq[row * D + d]);
                    std::fill(acc.begin(), acc.end(), C(0));
                    C m = -std::numeric_limits<C>::infinity(), l = C(0);
                    for (std::int64_t j = 0; j <= i; ++j) {  // online softmax: rescale when the maximum grows
                        if (s[b * T + j] != s[b * T + i]) continue;
                        const T_* kj = pk + kv + j * D;
                        const T_* vj = pv + kv + j * D;
                        C dot = C(0);
                        for (std::int64_t d = 0; d < D; ++d) dot += qi[d] * load(kj[d]);
                        C sc = C(scale) * dot;
                        if (sc > m) {
                            C corr = std::exp(m - sc);  // 0 on the first key
                            l *= corr;
                            for (auto& a : acc) a *= corr;
                            m = sc;
                        }
                        C p = std::exp(sc - m);
                        if (p < std::numeric_limits<C>::min()) continue;  // subnormal: no effect on l or acc, but slow
                        l += p;
                        for (std::int64_t d = 0; d < D; ++d) acc[d] += p * load(vj[d]);
                    }
                    C inv = C(1) / l;  // l >= 1: the diagonal is always allowed
                    for (std::int64_t d = 0; d < D; ++d) po[row * D + d] = store<T_>(acc[d] * inv);
                    pl[row] = m + std::log(l);
                }
            }
    });
    return r;
}

struct AttentionGrads {
    Tensor dq, dk, dv;
};

inline AttentionGrads causal_attention_backward(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& segments_in,
                                                const Tensor& out_in, const Tensor& lse_in, const Tensor& dout_in, double scale) {
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
                                        g.dk.ref(), g.dv.ref(), scale);
        }
        return g;
    }
    const std::int64_t* s = seg.data<std::int64_t>();
    DEVIANT_DISPATCH_FLOAT(q.dtype(), T_, [&] {
        using C = compute_t<T_>;
        const T_ *pq = q.data<T_>(), *pk = k.data<T_>(), *pv = v.data<T_>(), *po = out.data<T_>(), *pg = dout.data<T_>();
        const C* pl = lse.data<C>();
        // Accumulate in the compute type, store once at the end.
        std::vector<C> dq(std::size_t(q.numel()), C(0)), dk(std::size_t(k.numel()), C(0)), dv(std::size_t(v.numel()), C(0));
        std::vector<C> qi(static_cast<std::size_t>(D)), gi(static_cast<std::size_t>(D));
        for (std::int64_t b = 0; b < B; ++b)
            for (std::int64_t h = 0; h < H; ++h) {
                std::int64_t kv = (b * Hkv + h / group) * T * D;
                for (std::int64_t i = 0; i < T; ++i) {
                    std::int64_t row = (b * H + h) * T + i;
                    C delta = C(0);
                    for (std::int64_t d = 0; d < D; ++d) {
                        qi[d] = load(pq[row * D + d]);
                        gi[d] = load(pg[row * D + d]);
                        delta += gi[d] * load(po[row * D + d]);
                    }
                    C* dqi = dq.data() + row * D;
                    for (std::int64_t j = 0; j <= i; ++j) {
                        if (s[b * T + j] != s[b * T + i]) continue;
                        const T_* kj = pk + kv + j * D;
                        const T_* vj = pv + kv + j * D;
                        C dot = C(0), dp = C(0);
                        for (std::int64_t d = 0; d < D; ++d) {
                            dot += qi[d] * load(kj[d]);
                            dp += gi[d] * load(vj[d]);
                        }
                        C p = std::exp(C(scale) * dot - pl[row]);
                        if (p < std::numeric_limits<C>::min()) continue;  // subnormal weight: no effect, but slow
                        C ds = p * (dp - delta) * C(scale);
                        C* dkj = dk.data() + kv + j * D;
                        C* dvj = dv.data() + kv + j * D;
                        for (std::int64_t d = 0; d < D; ++d) {
                            dqi[d] += ds * load(kj[d]);
                            dkj[d] += ds * qi[d];
                            dvj[d] += p * gi[d];
                        }
                    }
                }
            }
        auto put = [](const std::vector<C>& src, Tensor& dst) {
            T_* p = dst.data<T_>();
            for (std::size_t n = 0; n < src.size(); ++n) p[n] = store<T_>(src[n]);
        };
        put(dq, g.dq);
        put(dk, g.dk);
        put(dv, g.dv);
    });
    return g;
}

// Fused causal attention output (B, H, T, D); see the top of this file.
inline Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& segments, double scale) {
    return causal_attention_forward(q, k, v, segments, scale).out;
}

}  // namespace deviant::ops

namespace deviant {

namespace detail {
struct AttentionAttr {
    double scale;
};
}  // namespace detail

// Differentiable fused causal attention: q (B, H, T, D), k and v (B, Hkv, T, D), segments (B, T)
// int64 (a constant). Saves the output and the log-sum-exp; q, k, v are read back from the tape.
inline Var causal_attention(Var q, Var k, Var v, const Tensor& segments, double scale) {
    Tensor seg = segments.to(q.device()).contiguous();
    ops::AttentionOutput r = ops::causal_attention_forward(q.value(), k.value(), v.value(), seg, scale);
    return q.tape->record(r.out, {q, k, v}, [](Tape& t, const Node& n) {
        ops::AttentionGrads g = ops::causal_attention_backward(t.value(n.in[0]), t.value(n.in[1]), t.value(n.in[2]), n.saved[2], n.saved[0],
                                                               n.saved[1], output_grad(t, n), n.attr<detail::AttentionAttr>().scale);
        t.accumulate(n.in[0], std::move(g.dq));
        t.accumulate(n.in[1], std::move(g.dk));
        t.accumulate(n.in[2], std::move(g.dv));
    }, {r.out, r.lse, seg}, detail::AttentionAttr{scale});
}

}  // namespace deviant
