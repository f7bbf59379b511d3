// deviant/ops/quantized_matmul.hpp — decoding products straight from llama.cpp's block-quantized
// weights (Q8_0, Q4_0, Q4_1), y = x W^T for a few rows x.
// Why: decoding a token reads every weight once; a 4-bit file dequantized to float32 is read at
// 8x its size. Keeping the blocks and widening them in registers reads 0.6-1.1 bytes per weight.
// The widened values are the very float32 numbers the loader produces (same formulas, no fused
// multiply-add in the dequantization), so results equal the float32 product up to the order of
// the additions.
//
//   QuantizedMatrix: N rows of K values (K a multiple of 32) in blocks of 32, repacked for the
//   kernel: float32 scale d (and minimum m for Q4_1) then the quantized bytes.
//     Q8_0  x = d q            (q int8)
//     Q4_0  x = d (q - 8)      (q the low nibbles for values 0..15, high nibbles for 16..31)
//     Q4_1  x = d q + m
//   quantized_skinny_matmul(x (M, K) float32, W) -> y (M, N) float32, M <= skinny_max_rows.
// AVX-512 when the CPU has it (checked at run time), a portable loop otherwise; parallel over
// blocks of weight rows (core/thread_pool.hpp).
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>

#include "deviant/core/error.hpp"
#include "deviant/ops/skinny_matmul.hpp"

namespace deviant::ops {

enum class BlockQuant : std::uint8_t { q8_0, q4_0, q4_1 };

struct QuantizedMatrix {
    BlockQuant type = BlockQuant::q8_0;
    std::int64_t rows = 0, cols = 0;  // N, K
    std::vector<unsigned char> data;  // rows * (cols / 32) packed blocks

    static constexpr std::int64_t block_bytes(BlockQuant t) { return t == BlockQuant::q8_0 ? 36 : t == BlockQuant::q4_0 ? 20 : 24; }
    std::int64_t row_bytes() const { return (cols / 32) * block_bytes(type); }
    const unsigned char* row(std::int64_t n) const { return data.data() + std::size_t(n * row_bytes()); }
};

namespace detail {

inline float packed_float(const unsigned char* p) {
    float f;
    std::memcpy(&f, p, sizeof f);
    return f;
}

// The 32 values of one packed block, as the loader computes them.
inline void dequantize_block(BlockQuant t, const unsigned char* blk, float* out) {
    const float d = packed_float(blk);
    if (t == BlockQuant::q8_0) {
        for (int j = 0; j < 32; ++j) out[j] = d * float(std::int8_t(blk[4 + j]));
    } else if (t == BlockQuant::q4_0) {
        for (int j = 0; j < 16; ++j) {
            out[j] = d * float(int(blk[4 + j] & 0x0F) - 8);
            out[j + 16] = d * float(int(blk[4 + j] >> 4) - 8);
        }
    } else {
        const float m = packed_float(blk + 4);
        for (int j = 0; j < 16; ++j) {
            out[j] = d * float(blk[8 + j] & 0x0F) + m;
            out[j + 16] = d * float(blk[8 + j] >> 4) + m;
        }
    }
}

inline void quantized_rows_portable(const float* x, std::int64_t lda, std::int64_t M, const QuantizedMatrix& w, float* y, std::int64_t n0,
                                    std::int64_t n1) {
    const std::int64_t K = w.cols, bb = QuantizedMatrix::block_bytes(w.type);
    float v[32];
    std::vector<float> acc(static_cast<std::size_t>(M));
    for (std::int64_t n = n0; n < n1; ++n) {
        std::fill(acc.begin(), acc.end(), 0.0f);
        const unsigned char* r = w.row(n);
        for (std::int64_t b = 0; b < K / 32; ++b) {
            dequantize_block(w.type, r + b * bb, v);
            for (std::int64_t m = 0; m < M; ++m) {
                const float* xr = x + m * lda + b * 32;
                float s = 0;
                for (int j = 0; j < 32; ++j) s += xr[j] * v[j];
                acc[std::size_t(m)] += s;
            }
        }
        for (std::int64_t m = 0; m < M; ++m) y[m * w.rows + n] = acc[std::size_t(m)];
    }
}

#ifdef DEVIANT_SKINNY_AVX512
// One packed block as two 16-wide float32 vectors (values 0..15 and 16..31); mul then add, as the loader.
template <BlockQuant Q>
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline void widen_block(const unsigned char* blk, __m512& lo, __m512& hi) {
    const __m512 d = _mm512_set1_ps(packed_float(blk));
    if constexpr (Q == BlockQuant::q8_0) {
        const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 4));
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 20));
        lo = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(a)));
        hi = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)));
    } else {
        const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + (Q == BlockQuant::q4_1 ? 8 : 4)));
        const __m128i nib = _mm_set1_epi8(0x0F);
        __m512i ql = _mm512_cvtepu8_epi32(_mm_and_si128(q, nib));
        __m512i qh = _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(q, 4), nib));
        if constexpr (Q == BlockQuant::q4_0) {
            const __m512i eight = _mm512_set1_epi32(8);
            lo = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(ql, eight)));
            hi = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(qh, eight)));
        } else {
            const __m512 m = _mm512_set1_ps(packed_float(blk + 4));
            lo = _mm512_add_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(ql)), m);
            hi = _mm512_add_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(qh)), m);
        }
    }
}

template <BlockQuant Q, int MB>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void quantized_block_avx512(const float* x, std::int64_t lda, const QuantizedMatrix& w,
                                                                               float* y, std::int64_t n0, std::int64_t n1) {
    const std::int64_t blocks = w.cols / 32, bb = QuantizedMatrix::block_bytes(Q);
    for (std::int64_t n = n0; n < n1; ++n) {
        __m512 acc[MB];
        for (int m = 0; m < MB; ++m) acc[m] = _mm512_setzero_ps();
        const unsigned char* r = w.row(n);
        for (std::int64_t b = 0; b < blocks; ++b) {
            __m512 lo, hi;
            widen_block<Q>(r + b * bb, lo, hi);
            for (int m = 0; m < MB; ++m) {
                const float* xr = x + m * lda + b * 32;
                acc[m] = _mm512_fmadd_ps(_mm512_loadu_ps(xr), lo, acc[m]);
                acc[m] = _mm512_fmadd_ps(_mm512_loadu_ps(xr + 16), hi, acc[m]);
            }
        }
        for (int m = 0; m < MB; ++m) y[m * w.rows + n] = _mm512_reduce_add_ps(acc[m]);
    }
}

template <BlockQuant Q, int MB = 1>
void quantized_dispatch_avx512(const float* x, std::int64_t lda, std::int64_t M, const QuantizedMatrix& w, float* y, std::int64_t n0,
                               std::int64_t n1) {
    // up to 16 rows in one pass (16 accumulators + the widened block fit the 32 vector registers),
    // so every block is widened once per weight row
    if constexpr (MB <= 16) {
        if (M == MB) return quantized_block_avx512<Q, MB>(x, lda, w, y, n0, n1);
        if (M > MB) return quantized_dispatch_avx512<Q, MB + 1>(x, lda, M, w, y, n0, n1);
    }
}
#endif

}  // namespace detail

// y (M, N) = x (M, K) W^T with W block-quantized; x float32 row-major (row stride lda).
inline void quantized_skinny_matmul(const float* x, std::int64_t lda, std::int64_t M, const QuantizedMatrix& w, float* y) {
    DEVIANT_REQUIRE(M >= 0 && M <= detail::skinny_max_rows && w.cols % 32 == 0 &&
                        std::int64_t(w.data.size()) == w.rows * w.row_bytes(),
                    "quantized product: {} rows (at most {}) with a {} x {} matrix of {} bytes", M, detail::skinny_max_rows, w.rows, w.cols,
                    w.data.size());
    if (M == 0) return;
    constexpr std::int64_t block = 32;
    parallel_for((w.rows + block - 1) / block, [&](std::int64_t b0, std::int64_t b1) {
        const std::int64_t n0 = b0 * block, n1 = std::min(w.rows, b1 * block);
#ifdef DEVIANT_SKINNY_AVX512
        if (detail::cpu_has_avx512()) {
            switch (w.type) {
                case BlockQuant::q8_0: return detail::quantized_dispatch_avx512<BlockQuant::q8_0>(x, lda, M, w, y, n0, n1);
                case BlockQuant::q4_0: return detail::quantized_dispatch_avx512<BlockQuant::q4_0>(x, lda, M, w, y, n0, n1);
                case BlockQuant::q4_1: return detail::quantized_dispatch_avx512<BlockQuant::q4_1>(x, lda, M, w, y, n0, n1);
            }
        }
#endif
        detail::quantized_rows_portable(x, lda, M, w, y, n0, n1);
    });
}

// x (..., K) any float dtype with at most skinny_max_rows rows -> (..., N) float32.
inline Tensor quantized_linear(const Tensor& x_in, const QuantizedMatrix& w) {
    DEVIANT_REQUIRE(x_in.device() == Device::cpu && x_in.rank() >= 1 && x_in.size(-1) == w.cols,
                    "quantized product: input {} does not match a ({}, {}) weight", x_in.describe(), w.rows, w.cols);
    Tensor x = x_in.contiguous();
    if (x.dtype() != DType::f32) x = x.to(DType::f32);
    Shape out_shape = x.shape();
    out_shape[-1] = w.rows;
    Tensor y = Tensor::empty(out_shape, DType::f32);
    quantized_skinny_matmul(x.data<float>(), w.cols, x.numel() / std::max<std::int64_t>(w.cols, 1), w, y.data<float>());
    return y;
}

}  // namespace deviant::ops
