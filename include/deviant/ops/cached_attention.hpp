// deviant/ops/cached_attention.hpp — attention over a key/value cache, for incremental decoding.
// Why: sampling token by token with the full forward pass recomputes every earlier position at
// every step (O(T^2) projections); with the keys and values of earlier positions kept, a step
// computes only its new positions.
//
//   LayerKvCache: k, v (B, Hkv, capacity, D), the model's dtype. Row b holds its tokens at cache
//   positions 0 .. length_b - 1 (its own positions: ragged rows need no left padding).
//   cached_attention(q (B, H, Tn, D), k_new, v_new (B, Hkv, Tn, D), cache, offsets (B,), scale,
//   window): writes the new keys / values of row b at positions offsets[b] .. offsets[b] + Tn - 1,
//   then query t of row b (absolute position p = offsets[b] + t) attends to cache positions
//   j <= p, and with a sliding window W > 0 to j > p - W:
//     out[b, h, t] = sum_j softmax_j(scale q[b, h, t] . k[b, g, j]) v[b, g, j],  g = h / (H / Hkv).
//   Rows shorter than Tn (right padding of a ragged prefill) compute garbage at their padding
//   queries, which the caller ignores; their padding keys land beyond the row's length and are
//   overwritten by the row's next tokens before any real query can see them.
// Inference only (no backward). CPU: one BLAS product for the scores of the new queries of a
// (row, head), the row's softmax, one product with the values; float32 / float64 compute.
#pragma once
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "deviant/core/thread_pool.hpp"
#include "deviant/ops/attention.hpp"
#include "deviant/ops/skinny_matmul.hpp"

namespace deviant::ops {

struct LayerKvCache {
    Tensor k, v;  // (B, Hkv, capacity, D)
};

inline LayerKvCache make_layer_kv_cache(std::int64_t B, std::int64_t Hkv, std::int64_t capacity, std::int64_t D, DType dtype, Device device) {
    DEVIANT_REQUIRE(B >= 0 && Hkv > 0 && capacity > 0 && D > 0, "KV cache: invalid size (B {}, kv heads {}, capacity {}, head size {})", B,
                    Hkv, capacity, D);
    return {Tensor::zeros({B, Hkv, capacity, D}, dtype, device), Tensor::zeros({B, Hkv, capacity, D}, dtype, device)};
}

// Keeps rows `rows` of the cache (in that order), dropping the others (finished sequences).
inline void keep_cache_rows(LayerKvCache& c, const std::vector<std::int64_t>& rows) {
    const std::int64_t B = c.k.size(0), Hkv = c.k.size(1), L = c.k.size(2), D = c.k.size(3);
    const std::int64_t per_row = Hkv * L * D;
    const std::size_t bytes = std::size_t(per_row) * dtype_size(c.k.dtype());
    DEVIANT_REQUIRE(c.k.device() == Device::cpu, "KV cache: row selection runs on the CPU");
    for (Tensor* t : {&c.k, &c.v}) {
        Tensor out = Tensor::empty({std::int64_t(rows.size()), Hkv, L, D}, t->dtype());
        const auto* src = static_cast<const unsigned char*>(t->raw_data());
        auto* dst = static_cast<unsigned char*>(out.raw_data());
        for (std::size_t i = 0; i < rows.size(); ++i) {
            DEVIANT_REQUIRE(rows[i] >= 0 && rows[i] < B, "KV cache: row {} outside [0, {})", rows[i], B);
            std::copy(src + std::size_t(rows[i]) * bytes, src + std::size_t(rows[i] + 1) * bytes, dst + i * bytes);
        }
        *t = std::move(out);
    }
}

// A decoding step (few new queries per (row, key/value head)): no BLAS calls (thousands of tiny
// products per token would cost more in calls than in arithmetic); the scores of a group's queries
// against its keys come from the skinny kernel, the softmax and the weighted sum of values from
// plain loops; (row, head group) pairs run in parallel on the thread pool.
template <class T_>
void cached_attention_decode(const Tensor& q, const Tensor& k_new, const Tensor& v_new, LayerKvCache& cache,
                             const std::vector<std::int64_t>& offsets, double scale, std::int64_t window, Tensor& out) {
    const std::int64_t B = q.size(0), H = q.size(1), Tn = q.size(2), D = q.size(3), Hkv = k_new.size(1), group = H / Hkv;
    const std::int64_t L = cache.k.size(2), rows = group * Tn;
    T_* ck = cache.k.template data<T_>();
    T_* cv = cache.v.template data<T_>();
    const T_* kn = k_new.template data<T_>();
    const T_* vn = v_new.template data<T_>();
    const T_* pq = q.template data<T_>();
    T_* po = out.template data<T_>();
    parallel_for(B * Hkv, [&](std::int64_t i0, std::int64_t i1) {
        std::vector<float> xq(std::size_t(rows * D)), S, O(std::size_t(rows * D));
        for (std::int64_t item = i0; item < i1; ++item) {
            const std::int64_t b = item / Hkv, g = item % Hkv, off = offsets[std::size_t(b)];
            const std::int64_t src = (b * Hkv + g) * Tn * D, dst = ((b * Hkv + g) * L + off) * D;
            std::copy(kn + src, kn + src + Tn * D, ck + dst);
            std::copy(vn + src, vn + src + Tn * D, cv + dst);
            const std::int64_t keys = off + Tn, first_key = window > 0 ? std::max<std::int64_t>(0, off - window + 1) : 0;
            const std::int64_t nk = keys - first_key;
            const T_* kg = ck + ((b * Hkv + g) * L + first_key) * D;
            const T_* vg = cv + ((b * Hkv + g) * L + first_key) * D;
            const T_* qg = pq + (b * H + g * group) * Tn * D;
            for (std::int64_t n = 0; n < rows * D; ++n) xq[std::size_t(n)] = float(load(qg[n]));
            S.resize(std::size_t(rows * nk));
            detail::skinny_matmul_serial(xq.data(), D, rows, kg, D, S.data(), nk, 0, nk);
            std::fill(O.begin(), O.end(), 0.0f);
            for (std::int64_t r = 0; r < rows; ++r) {
                const std::int64_t p = off + r % Tn;
                const std::int64_t lo = window > 0 ? std::max<std::int64_t>(0, p - window + 1) - first_key : 0, hi = p - first_key;
                float* sr = S.data() + r * nk;
                float m = -std::numeric_limits<float>::infinity();
                for (std::int64_t j = lo; j <= hi; ++j) m = std::max(m, sr[j] * float(scale));
                float l = 0;
                for (std::int64_t j = lo; j <= hi; ++j) l += (sr[j] = std::exp(sr[j] * float(scale) - m));
                const float inv = 1.0f / l;
                float* orow = O.data() + r * D;
                for (std::int64_t j = lo; j <= hi; ++j) {
                    const float pj = sr[j] * inv;
                    const T_* vrow = vg + j * D;
                    for (std::int64_t d = 0; d < D; ++d) orow[d] += pj * float(load(vrow[d]));
                }
            }
            T_* og = po + (b * H + g * group) * Tn * D;
            for (std::int64_t n = 0; n < rows * D; ++n) og[n] = store<T_>(O[std::size_t(n)]);
        }
    });
}

inline Tensor cached_attention(const Tensor& q_in, const Tensor& k_new_in, const Tensor& v_new_in, LayerKvCache& cache,
                               const std::vector<std::int64_t>& offsets, double scale, std::int64_t window = 0) {
    detail::require_float(q_in, "cached_attention");
    DEVIANT_REQUIRE(q_in.rank() == 4 && k_new_in.rank() == 4 && k_new_in.shape() == v_new_in.shape(),
                    "cached_attention: expected q (B, H, Tn, D), k and v (B, Hkv, Tn, D), got q {}, k {}, v {}", q_in.shape().str(),
                    k_new_in.shape().str(), v_new_in.shape().str());
    const std::int64_t B = q_in.size(0), H = q_in.size(1), Tn = q_in.size(2), D = q_in.size(3), Hkv = k_new_in.size(1);
    DEVIANT_REQUIRE(cache.k.defined() && cache.k.rank() == 4 && cache.k.size(0) == B && cache.k.size(1) == Hkv && cache.k.size(3) == D &&
                        cache.k.dtype() == q_in.dtype() && cache.v.shape() == cache.k.shape(),
                    "cached_attention: cache {} does not fit q {} / k {}", cache.k.defined() ? cache.k.describe() : std::string("none"),
                    q_in.shape().str(), k_new_in.shape().str());
    DEVIANT_REQUIRE(k_new_in.size(0) == B && k_new_in.size(2) == Tn && k_new_in.size(3) == D && Hkv > 0 && H % Hkv == 0,
                    "cached_attention: k {} does not match q {}", k_new_in.shape().str(), q_in.shape().str());
    DEVIANT_REQUIRE(std::int64_t(offsets.size()) == B, "cached_attention: {} offsets for {} rows", offsets.size(), B);
    DEVIANT_REQUIRE(q_in.device() == Device::cpu, "cached_attention: the KV cache runs on the CPU");
    const std::int64_t L = cache.k.size(2), group = H / Hkv;
    for (std::int64_t b = 0; b < B; ++b)
        DEVIANT_REQUIRE(offsets[std::size_t(b)] >= 0 && offsets[std::size_t(b)] + Tn <= L,
                        "cached_attention: row {} writes positions {} .. {} of a cache of {}", b, offsets[std::size_t(b)],
                        offsets[std::size_t(b)] + Tn - 1, L);
    Tensor q = q_in.contiguous(), k_new = k_new_in.contiguous(), v_new = v_new_in.contiguous();
    Tensor out = Tensor::empty(q.shape(), q.dtype());
    const bool decode_step = group * Tn <= detail::skinny_max_rows && q.dtype() != DType::f64;
    DEVIANT_DISPATCH_FLOAT(q.dtype(), T_, [&] {
        using C = compute_t<T_>;
        if constexpr (!std::is_same_v<T_, double>) {
            if (decode_step) {
                cached_attention_decode<T_>(q, k_new, v_new, cache, offsets, scale, window, out);
                return;
            }
        }
        // write the new keys / values into the cache
        T_* ck = cache.k.template data<T_>();
        T_* cv = cache.v.template data<T_>();
        const T_* kn = k_new.template data<T_>();
        const T_* vn = v_new.template data<T_>();
        for (std::int64_t b = 0; b < B; ++b)
            for (std::int64_t g = 0; g < Hkv; ++g) {
                const std::int64_t src = (b * Hkv + g) * Tn * D, dst = ((b * Hkv + g) * L + offsets[std::size_t(b)]) * D;
                std::copy(kn + src, kn + src + Tn * D, ck + dst);
                std::copy(vn + src, vn + src + Tn * D, cv + dst);
            }
        const T_* pq = q.template data<T_>();
        T_* po = out.template data<T_>();
        std::vector<C> qc, kc, vc, S, O;
        for (std::int64_t b = 0; b < B; ++b) {
            const std::int64_t off = offsets[std::size_t(b)], keys = off + Tn;  // keys 0 .. off + Tn - 1
            const std::int64_t first_key = window > 0 ? std::max<std::int64_t>(0, off - window + 1) : 0;
            const std::int64_t nk = keys - first_key;
            for (std::int64_t g = 0; g < Hkv; ++g) {
                // this group's keys and values (nk, D) and its query heads' queries (group * Tn, D), in the compute type
                const T_* kg = ck + ((b * Hkv + g) * L + first_key) * D;
                const T_* vg = cv + ((b * Hkv + g) * L + first_key) * D;
                const T_* qg = pq + (b * H + g * group) * Tn * D;
                const std::int64_t rows = group * Tn;
                const C *kp, *vp, *qp;  // compute-type views: the tensors themselves for float32 / float64
                if constexpr (std::is_same_v<T_, C>) {
                    kp = reinterpret_cast<const C*>(kg);
                    vp = reinterpret_cast<const C*>(vg);
                    qp = reinterpret_cast<const C*>(qg);
                } else {
                    kc.resize(std::size_t(nk * D));
                    vc.resize(kc.size());
                    qc.resize(std::size_t(rows * D));
                    for (std::int64_t n = 0; n < nk * D; ++n) {
                        kc[std::size_t(n)] = load(kg[n]);
                        vc[std::size_t(n)] = load(vg[n]);
                    }
                    for (std::int64_t n = 0; n < rows * D; ++n) qc[std::size_t(n)] = load(qg[n]);
                    kp = kc.data();
                    vp = vc.data();
                    qp = qc.data();
                }
                S.resize(std::size_t(rows * nk));
                O.resize(std::size_t(rows * D));
                detail::gemm<C>(false, true, rows, nk, D, C(scale), qp, D, kp, D, C(0), S.data(), nk);
                for (std::int64_t r = 0; r < rows; ++r) {
                    const std::int64_t p = off + r % Tn;  // absolute position of this query
                    const std::int64_t lo = window > 0 ? std::max<std::int64_t>(0, p - window + 1) - first_key : 0;
                    const std::int64_t hi = p - first_key;  // inclusive
                    C* sr = S.data() + r * nk;
                    C m = -std::numeric_limits<C>::infinity();
                    for (std::int64_t j = lo; j <= hi; ++j) m = std::max(m, sr[j]);
                    C l = C(0);
                    for (std::int64_t j = 0; j < nk; ++j) {
                        const C e = j >= lo && j <= hi ? std::exp(sr[j] - m) : C(0);
                        sr[j] = e;
                        l += e;
                    }
                    const C inv = C(1) / l;
                    for (std::int64_t j = lo; j <= hi; ++j) sr[j] *= inv;
                }
                detail::gemm<C>(false, false, rows, D, nk, C(1), S.data(), nk, vp, D, C(0), O.data(), D);
                T_* og = po + (b * H + g * group) * Tn * D;
                for (std::int64_t n = 0; n < rows * D; ++n) og[n] = store<T_>(O[std::size_t(n)]);
            }
        }
    });
    return out;
}

}  // namespace deviant::ops
