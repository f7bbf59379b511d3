// deviant/ops/skinny_matmul.hpp — CPU products of a few rows with a weight, y = x W^T, for
// decoding (one new token per sequence: M = batch rows).
// Why: a general GEMM packs the whole weight before multiplying; with a handful of rows the
// packing costs as much as the product, and the product itself is bound by reading the weight
// once. Here each weight row is streamed once and multiplied into every input row, in parallel
// over weight rows (core/thread_pool.hpp), with AVX-512 when the CPU has it (checked at run
// time) and a portable loop otherwise. bfloat16 weights are read as they are stored (half the
// bytes) and widened in registers; accumulation is float32.
//   x (M, K) float32 row-major (row stride lda), W (N, K) float32 or bfloat16 row-major,
//   y (M, N) float32 row-major.
#pragma once
#include <cstdint>
#include <cstring>

#include "deviant/core/dtype.hpp"
#include "deviant/core/thread_pool.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define DEVIANT_SKINNY_AVX512 1
#endif

namespace deviant::ops::detail {

// Largest M the skinny path takes (beyond it the GEMM's packing pays off).
inline constexpr std::int64_t skinny_max_rows = 16;

inline float widen(float v) { return v; }
inline float widen(bf16 v) {
    std::uint32_t u = std::uint32_t(v.bits) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

template <class W>
void skinny_rows_portable(const float* x, std::int64_t lda, std::int64_t M, const W* w, std::int64_t K, float* y, std::int64_t ldy,
                          std::int64_t n0, std::int64_t n1) {
    for (std::int64_t n = n0; n < n1; ++n) {
        const W* wr = w + n * K;
        for (std::int64_t m = 0; m < M; ++m) {
            const float* xr = x + m * lda;
            float acc = 0;
            for (std::int64_t k = 0; k < K; ++k) acc += xr[k] * widen(wr[k]);
            y[m * ldy + n] = acc;
        }
    }
}

#ifdef DEVIANT_SKINNY_AVX512
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512 skinny_load16(const float* p, __mmask16 k) { return _mm512_maskz_loadu_ps(k, p); }
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512 skinny_load16(const bf16* p, __mmask16 k) {
    const __m256i h = _mm256_maskz_loadu_epi16(k, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// Rows n0..n1 of W against up to skinny_max_rows input rows: 4 weight rows at a time, every
// input row's 16-wide partial sums in registers.
template <class W, int MB>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void skinny_block_avx512(const float* x, std::int64_t lda, const W* w, std::int64_t K,
                                                                            float* y, std::int64_t ldy, std::int64_t n0, std::int64_t n1) {
    std::int64_t n = n0;
    for (; n + 2 <= n1; n += 2) {
        __m512 acc0[MB], acc1[MB];
        for (int m = 0; m < MB; ++m) acc0[m] = acc1[m] = _mm512_setzero_ps();
        const W* w0 = w + n * K;
        const W* w1 = w0 + K;
        for (std::int64_t k = 0; k < K; k += 16) {
            const __mmask16 mask = K - k >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (K - k)) - 1);
            const __m512 a = skinny_load16(w0 + k, mask), b = skinny_load16(w1 + k, mask);
            for (int m = 0; m < MB; ++m) {
                const __m512 xv = _mm512_maskz_loadu_ps(mask, x + m * lda + k);
                acc0[m] = _mm512_fmadd_ps(xv, a, acc0[m]);
                acc1[m] = _mm512_fmadd_ps(xv, b, acc1[m]);
            }
        }
        for (int m = 0; m < MB; ++m) {
            y[m * ldy + n] = _mm512_reduce_add_ps(acc0[m]);
            y[m * ldy + n + 1] = _mm512_reduce_add_ps(acc1[m]);
        }
    }
    for (; n < n1; ++n) {
        __m512 acc[MB];
        for (int m = 0; m < MB; ++m) acc[m] = _mm512_setzero_ps();
        const W* w0 = w + n * K;
        for (std::int64_t k = 0; k < K; k += 16) {
            const __mmask16 mask = K - k >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (K - k)) - 1);
            const __m512 a = skinny_load16(w0 + k, mask);
            for (int m = 0; m < MB; ++m) acc[m] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, x + m * lda + k), a, acc[m]);
        }
        for (int m = 0; m < MB; ++m) y[m * ldy + n] = _mm512_reduce_add_ps(acc[m]);
    }
}

template <class W, int MB = 1>
void skinny_dispatch_avx512(const float* x, std::int64_t lda, std::int64_t M, const W* w, std::int64_t K, float* y, std::int64_t ldy,
                            std::int64_t n0, std::int64_t n1) {
    if constexpr (MB <= 8) {
        if (M == MB) return skinny_block_avx512<W, MB>(x, lda, w, K, y, ldy, n0, n1);
        if (M > MB) return skinny_dispatch_avx512<W, MB + 1>(x, lda, M, w, K, y, ldy, n0, n1);
    } else {
        // more than 8 rows: two passes of at most 8 (the weight rows come from cache the second time)
        skinny_dispatch_avx512<W, 1>(x, lda, 8, w, K, y, ldy, n0, n1);
        skinny_dispatch_avx512<W, 1>(x + 8 * lda, lda, M - 8, w, K, y + 8 * ldy, ldy, n0, n1);
    }
}

#endif

// Tests set this to run the portable loops on machines with AVX-512 too.
inline bool& force_portable_kernels() {
    static bool force = false;
    return force;
}

#ifdef DEVIANT_SKINNY_AVX512
inline bool cpu_has_avx512() {
    static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    return has && !force_portable_kernels();
}
#endif

// y (M, ldy) rows [n0, n1) = x (M, K) W^T for W (N, K) row-major, on the calling thread.
template <class W>
void skinny_matmul_serial(const float* x, std::int64_t lda, std::int64_t M, const W* w, std::int64_t K, float* y, std::int64_t ldy,
                          std::int64_t n0, std::int64_t n1) {
#ifdef DEVIANT_SKINNY_AVX512
    if (cpu_has_avx512()) return skinny_dispatch_avx512<W>(x, lda, M, w, K, y, ldy, n0, n1);
#endif
    skinny_rows_portable(x, lda, M, w, K, y, ldy, n0, n1);
}

// y (M, N) = x (M, K) W^T, W (N, K) row-major; parallel over blocks of weight rows.
template <class W>
void skinny_matmul(const float* x, std::int64_t lda, std::int64_t M, const W* w, std::int64_t N, std::int64_t K, float* y) {
    constexpr std::int64_t block = 64;  // weight rows per work item
    const std::int64_t blocks = (N + block - 1) / block;
    parallel_for(blocks, [&](std::int64_t b0, std::int64_t b1) {
        const std::int64_t n0 = b0 * block, n1 = std::min(N, b1 * block);
#ifdef DEVIANT_SKINNY_AVX512
        if (cpu_has_avx512()) {
            // the 8-row register blocks: within a work item, weight rows stay in cache for the second pass
            skinny_dispatch_avx512<W>(x, lda, M, w, K, y, N, n0, n1);
            return;
        }
#endif
        skinny_rows_portable(x, lda, M, w, K, y, N, n0, n1);
    });
}

}  // namespace deviant::ops::detail
