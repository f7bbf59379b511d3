// deviant/tokenizer/utf8.hpp — UTF-8 validation/repair, code point helpers and the GPT-2
// byte-to-unicode mapping.
// Why: the BPE tokenizer runs PCRE2 with PCRE2_NO_UTF_CHECK, which is only safe on valid UTF-8,
// so input is validated once and invalid bytes are replaced exactly like Python's
// bytes.decode("utf-8", "replace") / Rust's String::from_utf8_lossy (one U+FFFD per maximal
// invalid subpart). Byte-level BPE maps every byte to a printable code point (bytes_to_unicode);
// SentencePiece vocabularies are split and stripped by code point.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace deviant::text {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// Length of the well-formed UTF-8 sequence starting at s[i], or 0 when it is ill-formed; on 0,
// *invalid_len receives the length of the maximal subpart to replace (at least 1).
inline std::size_t utf8_sequence_length(std::string_view s, std::size_t i, std::size_t* invalid_len = nullptr) {
    const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned char b0 = byte(i);
    std::size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (b0 < 0x80) return 1;
    if (b0 >= 0xC2 && b0 <= 0xDF) need = 1;
    else if (b0 == 0xE0) { need = 2; lo = 0xA0; }
    else if (b0 >= 0xE1 && b0 <= 0xEC) need = 2;
    else if (b0 == 0xED) { need = 2; hi = 0x9F; }
    else if (b0 >= 0xEE && b0 <= 0xEF) need = 2;
    else if (b0 == 0xF0) { need = 3; lo = 0x90; }
    else if (b0 >= 0xF1 && b0 <= 0xF3) need = 3;
    else if (b0 == 0xF4) { need = 3; hi = 0x8F; }
    else {
        if (invalid_len) *invalid_len = 1;
        return 0;
    }
    for (std::size_t k = 1; k <= need; ++k) {
        const unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
        if (i + k >= s.size() || byte(i + k) < l || byte(i + k) > h) {
            if (invalid_len) *invalid_len = k;
            return 0;
        }
    }
    return need + 1;
}

inline bool is_valid_utf8(std::string_view s) {
    for (std::size_t i = 0; i < s.size();) {
        const std::size_t n = utf8_sequence_length(s, i);
        if (n == 0) return false;
        i += n;
    }
    return true;
}

// Replaces each maximal invalid subpart by U+FFFD (same result as Python's errors="replace").
inline std::string utf8_make_valid(std::string_view s) {
    std::string out;
    out.reserve(s.size() + 8);
    for (std::size_t i = 0; i < s.size();) {
        std::size_t bad = 0;
        const std::size_t n = utf8_sequence_length(s, i, &bad);
        if (n) {
            out.append(s.substr(i, n));
            i += n;
        } else {
            out.append(kReplacementChar);
            i += bad;
        }
    }
    return out;
}

// Decodes the code point of a well-formed sequence of length n at s[i].
inline char32_t utf8_decode(std::string_view s, std::size_t i, std::size_t n) {
    const auto b = [&](std::size_t k) { return static_cast<char32_t>(static_cast<unsigned char>(s[i + k])); };
    switch (n) {
        case 1: return b(0);
        case 2: return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
        case 3: return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
        default: return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
    }
}

inline void utf8_append(std::string& out, char32_t cp) {
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

// Number of code points of valid UTF-8.
inline std::size_t utf8_length(std::string_view s) {
    std::size_t n = 0;
    for (unsigned char c : s) n += (c & 0xC0) != 0x80;
    return n;
}

// Byte offsets where each code point of valid UTF-8 starts, plus s.size() at the end.
inline std::vector<std::size_t> utf8_boundaries(std::string_view s) {
    std::vector<std::size_t> out;
    for (std::size_t i = 0; i < s.size(); ++i)
        if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) out.push_back(i);
    out.push_back(s.size());
    return out;
}

// Unicode White_Space (what Rust's char::is_whitespace accepts).
inline bool is_white_space(char32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Valid UTF-8 without its leading and/or trailing white space.
inline std::string strip_white_space(std::string_view s, bool left, bool right) {
    std::size_t b = 0, e = s.size();
    while (left && b < e) {
        const std::size_t n = utf8_sequence_length(s, b);
        if (n == 0 || !is_white_space(utf8_decode(s, b, n))) break;
        b += n;
    }
    while (right && e > b) {
        std::size_t start = e - 1;
        while (start > b && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
        const std::size_t n = utf8_sequence_length(s, start);
        if (n == 0 || start + n != e || !is_white_space(utf8_decode(s, start, n))) break;
        e = start;
    }
    return std::string(s.substr(b, e - b));
}

// GPT-2 bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes to
// U+0100.. in byte order. Every mapped code point is below U+0144 (two UTF-8 bytes at most).
struct ByteLevelMap {
    std::array<char32_t, 256> byte_to_cp{};
    std::array<int, 0x144> cp_to_byte{};  // -1 where the code point is not a byte's image
    std::array<std::string, 256> byte_to_utf8{};

    ByteLevelMap() {
        cp_to_byte.fill(-1);
        char32_t next = 256;
        for (int b = 0; b < 256; ++b) {
            const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            byte_to_cp[b] = printable ? static_cast<char32_t>(b) : next++;
            cp_to_byte[byte_to_cp[b]] = b;
            utf8_append(byte_to_utf8[b], byte_to_cp[b]);
        }
    }
    static const ByteLevelMap& get() {
        static const ByteLevelMap map;
        return map;
    }
    // Maps raw bytes to their byte-level string.
    std::string encode(std::string_view bytes) const {
        std::string out;
        out.reserve(bytes.size() * 2);
        for (unsigned char c : bytes) out += byte_to_utf8[c];
        return out;
    }
    // Maps a byte-level token back to bytes; false (out untouched) when some char is not a byte image.
    bool decode(std::string_view token, std::string& out) const {
        std::string bytes;
        for (std::size_t i = 0; i < token.size();) {
            const std::size_t n = utf8_sequence_length(token, i);
            if (n == 0) return false;
            const char32_t cp = utf8_decode(token, i, n);
            if (cp >= cp_to_byte.size() || cp_to_byte[cp] < 0) return false;
            bytes.push_back(static_cast<char>(cp_to_byte[cp]));
            i += n;
        }
        out += bytes;
        return true;
    }
};

}  // namespace deviant::text
