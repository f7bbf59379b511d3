// deviant/io/convert.hpp — element types as checkpoint files store them, and their conversion into
// Tensor dtypes. Why: safetensors (and GGUF) files hold types a Tensor cannot (float16, float8, int32,
// bool...); every reader turns raw little-endian bytes into a fresh contiguous tensor through here.
// The half-precision decoders are written out bit by bit so that subnormals, infinities and NaN
// come out exactly as IEEE 754 defines them.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>
#include <utility>

#include "deviant/core/error.hpp"
#include "deviant/core/tensor.hpp"

namespace deviant::io {

static_assert(std::endian::native == std::endian::little, "checkpoint readers assume a little-endian host");

// Element types found in checkpoint files (a superset of DType).
enum class StoredType : std::uint8_t { f64, f32, f16, bf16, f8_e4m3, f8_e5m2, i64, i32, i16, i8, u64, u32, u16, u8, boolean };

constexpr std::size_t stored_size(StoredType t) {
    switch (t) {
        case StoredType::f64: case StoredType::i64: case StoredType::u64: return 8;
        case StoredType::f32: case StoredType::i32: case StoredType::u32: return 4;
        case StoredType::f16: case StoredType::bf16: case StoredType::i16: case StoredType::u16: return 2;
        case StoredType::f8_e4m3: case StoredType::f8_e5m2: case StoredType::i8: case StoredType::u8:
        case StoredType::boolean: return 1;
    }
    return 0;
}

constexpr std::string_view stored_name(StoredType t) {
    switch (t) {
        case StoredType::f64: return "float64";
        case StoredType::f32: return "float32";
        case StoredType::f16: return "float16";
        case StoredType::bf16: return "bfloat16";
        case StoredType::f8_e4m3: return "float8_e4m3fn";
        case StoredType::f8_e5m2: return "float8_e5m2";
        case StoredType::i64: return "int64";
        case StoredType::i32: return "int32";
        case StoredType::i16: return "int16";
        case StoredType::i8: return "int8";
        case StoredType::u64: return "uint64";
        case StoredType::u32: return "uint32";
        case StoredType::u16: return "uint16";
        case StoredType::u8: return "uint8";
        case StoredType::boolean: return "bool";
    }
    return "?";
}

constexpr bool stored_is_floating(StoredType t) {
    return t == StoredType::f64 || t == StoredType::f32 || t == StoredType::f16 || t == StoredType::bf16 ||
           t == StoredType::f8_e4m3 || t == StoredType::f8_e5m2;
}

// The DType whose in-memory layout is byte-for-byte the stored one (a view needs no conversion).
constexpr std::optional<DType> native_dtype(StoredType t) {
    switch (t) {
        case StoredType::f64: return DType::f64;
        case StoredType::f32: return DType::f32;
        case StoredType::bf16: return DType::bf16;
        case StoredType::i64: return DType::i64;
        case StoredType::u8: return DType::u8;
        case StoredType::boolean: return DType::u8;  // one byte, 0 or 1
        default: return std::nullopt;
    }
}

constexpr StoredType stored_type_of(DType t) {
    switch (t) {
        case DType::f32: return StoredType::f32;
        case DType::f64: return StoredType::f64;
        case DType::bf16: return StoredType::bf16;
        case DType::i64: return StoredType::i64;
        case DType::u8: return StoredType::u8;
    }
    return StoredType::f32;
}

// Floating data converts to floating dtypes only; integer data converts to any dtype (range-checked).
constexpr bool can_convert(StoredType from, DType to) { return !stored_is_floating(from) || is_floating(to); }

// IEEE binary16 -> float32, exact for every one of the 65536 inputs.
inline float f16_to_f32(std::uint16_t h) {
    const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
    const std::uint32_t exponent = (h >> 10) & 0x1Fu;
    std::uint32_t mantissa = h & 0x3FFu;
    std::uint32_t bits;
    if (exponent == 0x1F) {
        bits = sign | 0x7F800000u | (mantissa << 13);  // inf, or NaN with its payload kept
    } else if (exponent != 0) {
        bits = sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {
        bits = sign;  // signed zero
    } else {
        // Subnormal: mantissa * 2^-24. Shift until the implicit bit appears; each shift halves the exponent.
        std::uint32_t shifts = 0;
        while ((mantissa & 0x400u) == 0) {
            mantissa <<= 1;
            ++shifts;
        }
        bits = sign | ((127 - 14 - shifts) << 23) | ((mantissa & 0x3FFu) << 13);
    }
    return std::bit_cast<float>(bits);
}

// bfloat16 bits -> float32 (bfloat16 is the top half of a float32).
inline float bf16_to_f32(std::uint16_t b) { return std::bit_cast<float>(std::uint32_t(b) << 16); }

// float8 e5m2 is the top byte of a binary16.
inline float f8_e5m2_to_f32(std::uint8_t b) { return f16_to_f32(std::uint16_t(std::uint16_t(b) << 8)); }

// float8 e4m3fn: bias 7, no infinities, S.1111.111 is NaN.
inline float f8_e4m3_to_f32(std::uint8_t b) {
    const bool negative = b & 0x80u;
    const int exponent = (b >> 3) & 0xF, mantissa = b & 0x7;
    float v;
    if (exponent == 0xF && mantissa == 0x7) v = std::numeric_limits<float>::quiet_NaN();
    else if (exponent == 0) v = std::ldexp(float(mantissa), -9);
    else v = std::ldexp(float(8 + mantissa), exponent - 10);
    return negative ? -v : v;
}

namespace detail {

// Reads element i of a stored array (any alignment) as its natural host value.
template <StoredType S>
inline auto read_stored(const std::byte* p, std::size_t i) {
    constexpr std::size_t n = stored_size(S);
    if constexpr (S == StoredType::f64) { double v; std::memcpy(&v, p + i * n, n); return v; }
    else if constexpr (S == StoredType::f32) { float v; std::memcpy(&v, p + i * n, n); return v; }
    else if constexpr (S == StoredType::f16) { std::uint16_t v; std::memcpy(&v, p + i * n, n); return f16_to_f32(v); }
    else if constexpr (S == StoredType::bf16) { std::uint16_t v; std::memcpy(&v, p + i * n, n); return bf16_to_f32(v); }
    else if constexpr (S == StoredType::f8_e4m3) return f8_e4m3_to_f32(std::uint8_t(p[i]));
    else if constexpr (S == StoredType::f8_e5m2) return f8_e5m2_to_f32(std::uint8_t(p[i]));
    else if constexpr (S == StoredType::i64) { std::int64_t v; std::memcpy(&v, p + i * n, n); return v; }
    else if constexpr (S == StoredType::i32) { std::int32_t v; std::memcpy(&v, p + i * n, n); return v; }
    else if constexpr (S == StoredType::i16) { std::int16_t v; std::memcpy(&v, p + i * n, n); return v; }
    else if constexpr (S == StoredType::i8) return std::int8_t(p[i]);
    else if constexpr (S == StoredType::u64) { std::uint64_t v; std::memcpy(&v, p + i * n, n); return v; }
    else if constexpr (S == StoredType::u32) { std::uint32_t v; std::memcpy(&v, p + i * n, n); return v; }
    else if constexpr (S == StoredType::u16) { std::uint16_t v; std::memcpy(&v, p + i * n, n); return v; }
    else if constexpr (S == StoredType::u8) return std::uint8_t(p[i]);
    else return std::uint8_t(p[i] != std::byte{0});  // boolean: any non-zero byte is true
}

template <StoredType S, class D>
inline void convert_loop(const std::byte* src, D* dst, std::size_t count, std::string_view what) {
    for (std::size_t i = 0; i < count; ++i) {
        auto v = read_stored<S>(src, i);
        using V = decltype(v);
        if constexpr (std::is_same_v<D, bf16>) {
            dst[i] = bf16(float(v));
        } else if constexpr (std::is_floating_point_v<D>) {
            dst[i] = D(v);
        } else if constexpr (!std::is_integral_v<V>) {  // floating into integer: refused by can_convert()
            fail("{}: floating data cannot be converted to {}", what, dtype_name(dtype_of<D>()));
        } else {
            const bool fits = std::in_range<D>(v);
            DEVIANT_REQUIRE(fits, "{}: element {} (value {}) does not fit in {}", what, i, v, dtype_name(dtype_of<D>()));
            dst[i] = D(v);
        }
    }
}

template <class D>
inline void convert_into(const std::byte* src, StoredType from, D* dst, std::size_t count, std::string_view what) {
    switch (from) {
        case StoredType::f64: return convert_loop<StoredType::f64>(src, dst, count, what);
        case StoredType::f32: return convert_loop<StoredType::f32>(src, dst, count, what);
        case StoredType::f16: return convert_loop<StoredType::f16>(src, dst, count, what);
        case StoredType::bf16: return convert_loop<StoredType::bf16>(src, dst, count, what);
        case StoredType::f8_e4m3: return convert_loop<StoredType::f8_e4m3>(src, dst, count, what);
        case StoredType::f8_e5m2: return convert_loop<StoredType::f8_e5m2>(src, dst, count, what);
        case StoredType::i64: return convert_loop<StoredType::i64>(src, dst, count, what);
        case StoredType::i32: return convert_loop<StoredType::i32>(src, dst, count, what);
        case StoredType::i16: return convert_loop<StoredType::i16>(src, dst, count, what);
        case StoredType::i8: return convert_loop<StoredType::i8>(src, dst, count, what);
        case StoredType::u64: return convert_loop<StoredType::u64>(src, dst, count, what);
        case StoredType::u32: return convert_loop<StoredType::u32>(src, dst, count, what);
        case StoredType::u16: return convert_loop<StoredType::u16>(src, dst, count, what);
        case StoredType::u8: return convert_loop<StoredType::u8>(src, dst, count, what);
        case StoredType::boolean: return convert_loop<StoredType::boolean>(src, dst, count, what);
    }
}

}  // namespace detail

// Converts `count` elements stored as `from` at `src` (little-endian, any alignment) into the
// contiguous buffer `dst` of dtype `to`. `what` names the data in error messages.
inline void convert_elements(const void* src, StoredType from, void* dst, DType to, std::size_t count, std::string_view what) {
    DEVIANT_REQUIRE(can_convert(from, to), "{}: {} data cannot be converted to {}", what, stored_name(from), dtype_name(to));
    auto s = static_cast<const std::byte*>(src);
    switch (to) {
        case DType::f32: return detail::convert_into(s, from, static_cast<float*>(dst), count, what);
        case DType::f64: return detail::convert_into(s, from, static_cast<double*>(dst), count, what);
        case DType::bf16: return detail::convert_into(s, from, static_cast<bf16*>(dst), count, what);
        case DType::i64: return detail::convert_into(s, from, static_cast<std::int64_t*>(dst), count, what);
        case DType::u8: return detail::convert_into(s, from, static_cast<std::uint8_t*>(dst), count, what);
    }
}

// A fresh contiguous CPU tensor of dtype `to` holding the stored elements of `shape`.
inline Tensor tensor_from_stored(const void* src, StoredType from, const Shape& shape, DType to, std::string_view what) {
    Tensor out = Tensor::empty(shape, to);
    if (out.numel() > 0) convert_elements(src, from, out.raw_data(), to, std::size_t(out.numel()), what);
    return out;
}

}  // namespace deviant::io
