// deviant/ops/vector_math.hpp — exp for the CPU loops, written so that compilers vectorise it.
// Why: the standard library's expf is a call per element that no loop around it can vectorise
// (without -ffast-math); softmax-like loops (LM head, attention, SiLU) spend most of their
// non-product time there. cpu_exp<float> is branch-free arithmetic (Cody-Waite range reduction
// and the degree-6 minimax polynomial of Cephes' expf, scaled by 2^n in two halves), about 1 ulp
// from the correctly rounded value on [-87.33, 88.72]; inputs below -87.33 (whose exp is
// subnormal) give 0, above 88.72 +inf, NaN stays NaN. cpu_exp<double> is std::exp (float64
// runs are the gradient-check references and keep the library function).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace deviant::ops::detail {

inline float exp_f32(float x) {
    const float lo = -87.3365402f, hi = 88.7228394f;
    const float xc = std::min(std::max(x, lo), hi);  // NaN passes through both (comparisons are false)
    const float shifter = 12582912.0f;                // 1.5 * 2^23: adding it rounds to an integer
    const float shifted = xc * 1.44269504088896341f + shifter;
    const float nf = shifted - shifter;
    float r = xc - nf * 0.693359375f;
    r = r - nf * -2.12194440e-4f;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    // n = nf read from the low bits of `shifted` (1.5 * 2^23 + n), not by converting nf: a float to
    // int conversion of NaN is undefined behaviour, a bit copy is not (n is then garbage, y stays NaN)
    std::int32_t shifted_bits;
    std::memcpy(&shifted_bits, &shifted, sizeof shifted_bits);
    const std::int32_t n = shifted_bits - 0x4B400000, n1 = n >> 1, n2 = n - n1;  // 2^n as 2^n1 * 2^n2: no overflow at n = 128
    const std::int32_t b1 = (n1 + 127) << 23, b2 = (n2 + 127) << 23;
    float s1, s2;
    std::memcpy(&s1, &b1, sizeof s1);
    std::memcpy(&s2, &b2, sizeof s2);
    y = y * s1 * s2;
    y = x < lo ? 0.0f : y;
    return x > hi ? std::numeric_limits<float>::infinity() : y;
}

template <class C>
inline C cpu_exp(C x) {
    if constexpr (std::is_same_v<C, float>) return exp_f32(x);
    else return std::exp(x);
}

// max over p[0, n) (n >= 1), in 8 independent lanes so that the loop vectorises.
template <class C>
inline C max_of(const C* p, std::int64_t n) {
    C lane[8];
    for (int k = 0; k < 8; ++k) lane[k] = p[0];
    std::int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; ++k) lane[k] = std::max(lane[k], p[j + k]);
    C m = lane[0];
    for (int k = 1; k < 8; ++k) m = std::max(m, lane[k]);
    for (; j < n; ++j) m = std::max(m, p[j]);
    return m;
}

// sum of exp(p[j] - shift) over [0, n), 8 lanes summed in a fixed order (deterministic for a
// given n, whatever the vector width).
template <class C>
inline C sum_exp(const C* p, std::int64_t n, C shift) {
    C lane[8] = {};
    std::int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; ++k) lane[k] += cpu_exp(p[j + k] - shift);
    C s = C(0);
    for (int k = 0; k < 8; ++k) s += lane[k];
    for (; j < n; ++j) s += cpu_exp(p[j] - shift);
    return s;
}

}  // namespace deviant::ops::detail
