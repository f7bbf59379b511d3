// deviant/core/dtype.hpp — element types a Tensor can store and the host bfloat16 type.
// bf16 is storage only: arithmetic converts to float32 (round-to-nearest-even on the way back).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>

#include "deviant/core/error.hpp"

namespace deviant {

enum class DType : std::uint8_t { f32, f64, bf16, i64, u8 };

// Host-side bfloat16: the top 16 bits of an IEEE float32. Same layout as CUDA's __nv_bfloat16.
struct bf16 {
    std::uint16_t bits = 0;
    bf16() = default;
    explicit bf16(float f) : bits(from_float(f)) {}
    explicit operator float() const {
        std::uint32_t u = std::uint32_t(bits) << 16;
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    }
    static std::uint16_t from_float(float f) {
        std::uint32_t u;
        std::memcpy(&u, &f, 4);
        if (std::isnan(f)) return std::uint16_t((u >> 16) | 0x40);  // keep NaN quiet
        u += 0x7FFF + ((u >> 16) & 1);                               // round to nearest even
        return std::uint16_t(u >> 16);
    }
};

constexpr std::size_t dtype_size(DType t) {
    switch (t) {
        case DType::f32: return 4;
        case DType::f64: return 8;
        case DType::bf16: return 2;
        case DType::i64: return 8;
        case DType::u8: return 1;
    }
    return 0;
}

constexpr std::string_view dtype_name(DType t) {
    switch (t) {
        case DType::f32: return "float32";
        case DType::f64: return "float64";
        case DType::bf16: return "bfloat16";
        case DType::i64: return "int64";
        case DType::u8: return "uint8";
    }
    return "?";
}

constexpr bool is_floating(DType t) { return t == DType::f32 || t == DType::f64 || t == DType::bf16; }

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<bf16>() { return DType::bf16; }
template <> constexpr DType dtype_of<std::int64_t>() { return DType::i64; }
template <> constexpr DType dtype_of<std::uint8_t>() { return DType::u8; }

// The type arithmetic runs in for a storage type: float for bf16 and float, double for double.
template <class T> struct compute_type { using type = T; };
template <> struct compute_type<bf16> { using type = float; };
template <class T> using compute_t = typename compute_type<T>::type;
// The type a sum mixing two storage types is formed in: double if either is, float otherwise
// (a bf16 gradient added into a float32 one).
template <class T, class U> using common_compute_t = std::conditional_t<std::is_same_v<T, double> || std::is_same_v<U, double>, double, float>;

// The runtime counterpart: the dtype arithmetic on `t` runs in (float32 for bf16). Mixed-precision
// code keeps log-probabilities, masks and losses of a bf16 model in this dtype.
inline DType compute_dtype(DType t) { return t == DType::bf16 ? DType::f32 : t; }

template <class T> inline compute_t<T> load(T v) { return static_cast<compute_t<T>>(v); }
template <class T, class C> inline T store(C v) { return static_cast<T>(v); }
template <> inline bf16 store<bf16, float>(float v) { return bf16(v); }
template <> inline bf16 store<bf16, double>(double v) { return bf16(float(v)); }

}  // namespace deviant

// DEVIANT_DISPATCH_FLOAT(dtype, T, body): runs body with T bound to the floating storage type.
#define DEVIANT_DISPATCH_FLOAT(dtype, T, ...)                                             \
    [&] {                                                                                 \
        switch (dtype) {                                                                  \
            case ::deviant::DType::f32: { using T = float; return __VA_ARGS__(); }        \
            case ::deviant::DType::f64: { using T = double; return __VA_ARGS__(); }       \
            case ::deviant::DType::bf16: { using T = ::deviant::bf16; return __VA_ARGS__(); } \
            default: ::deviant::fail("expected a floating dtype, got {}", ::deviant::dtype_name(dtype)); \
        }                                                                                 \
    }()
