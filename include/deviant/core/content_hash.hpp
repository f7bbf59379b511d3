// deviant/core/content_hash.hpp — XXH64 (xxHash, 64-bit, Yann Collet's published algorithm),
// streaming, for content-addressed caches.
// Why: cached artefacts (reference log-probs) are keyed by what they were computed from — token
// ids, model weights — so a changed input can never pick up a stale file. XXH64 reads several
// GB/s, so hashing a multi-GB checkpoint costs seconds, not minutes. Not a cryptographic hash:
// it detects change and corruption, not tampering.
//
//   ContentHash h;                 // seed 0
//   h.update(bytes, n);            // any number of times; same result as one call on the concatenation
//   h.add(std::int64_t{42});       // fixed-width values, little-endian as in memory
//   h.add_string("name");          // length-prefixed, so ("ab","c") and ("a","bc") differ
//   std::uint64_t key = h.digest();   // does not end the stream
#pragma once
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include <fmt/format.h>

namespace deviant {

class ContentHash {
public:
    explicit ContentHash(std::uint64_t seed = 0) : seed_(seed) {
        acc_[0] = seed + p1 + p2;
        acc_[1] = seed + p2;
        acc_[2] = seed;
        acc_[3] = seed - p1;
    }

    void update(const void* data, std::size_t bytes) {
        auto p = static_cast<const unsigned char*>(data);
        total_ += bytes;
        if (buffered_ + bytes < stripe) {
            if (bytes) std::memcpy(buffer_ + buffered_, p, bytes);
            buffered_ += bytes;
            return;
        }
        if (buffered_ > 0) {  // complete the pending stripe
            std::size_t take = stripe - buffered_;
            std::memcpy(buffer_ + buffered_, p, take);
            consume_stripe(buffer_);
            p += take;
            bytes -= take;
            buffered_ = 0;
        }
        for (; bytes >= stripe; p += stripe, bytes -= stripe) consume_stripe(p);
        if (bytes) std::memcpy(buffer_, p, bytes);
        buffered_ = bytes;
    }
    void update(std::span<const std::byte> bytes) { update(bytes.data(), bytes.size()); }

    // A fixed-width arithmetic value, as its in-memory bytes.
    template <class V>
        requires std::is_arithmetic_v<V>
    void add(V value) {
        update(&value, sizeof(V));
    }
    void add_string(std::string_view s) {
        add(std::uint64_t(s.size()));
        update(s.data(), s.size());
    }

    std::uint64_t digest() const {
        std::uint64_t h;
        if (total_ >= stripe) {
            h = rotl(acc_[0], 1) + rotl(acc_[1], 7) + rotl(acc_[2], 12) + rotl(acc_[3], 18);
            for (std::uint64_t a : acc_) h = merge(h, a);
        } else {
            h = seed_ + p5;
        }
        h += total_;
        const unsigned char* p = buffer_;
        std::size_t n = buffered_;
        for (; n >= 8; p += 8, n -= 8) {
            h ^= round(0, read64(p));
            h = rotl(h, 27) * p1 + p4;
        }
        if (n >= 4) {
            h ^= std::uint64_t(read32(p)) * p1;
            h = rotl(h, 23) * p2 + p3;
            p += 4;
            n -= 4;
        }
        for (; n > 0; ++p, --n) {
            h ^= std::uint64_t(*p) * p5;
            h = rotl(h, 11) * p1;
        }
        h ^= h >> 33;
        h *= p2;
        h ^= h >> 29;
        h *= p3;
        h ^= h >> 32;
        return h;
    }

    static std::uint64_t of(const void* data, std::size_t bytes, std::uint64_t seed = 0) {
        ContentHash h(seed);
        h.update(data, bytes);
        return h.digest();
    }
    // 16 lower-case hex digits, the form used in file names and metadata.
    static std::string hex(std::uint64_t h) { return fmt::format("{:016x}", h); }

private:
    static constexpr std::uint64_t p1 = 11400714785074694791ULL, p2 = 14029467366897019727ULL, p3 = 1609587929392839161ULL,
                                   p4 = 9650029242287828579ULL, p5 = 2870177450012600261ULL;
    static constexpr std::size_t stripe = 32;

    static std::uint64_t rotl(std::uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
    static std::uint64_t read64(const unsigned char* p) {
        std::uint64_t v;
        std::memcpy(&v, p, 8);
        return v;  // little-endian hosts (x86-64, aarch64)
    }
    static std::uint32_t read32(const unsigned char* p) {
        std::uint32_t v;
        std::memcpy(&v, p, 4);
        return v;
    }
    static std::uint64_t round(std::uint64_t acc, std::uint64_t input) {
        acc += input * p2;
        return rotl(acc, 31) * p1;
    }
    static std::uint64_t merge(std::uint64_t h, std::uint64_t acc) {
        h ^= round(0, acc);
        return h * p1 + p4;
    }
    void consume_stripe(const unsigned char* p) {
        for (int i = 0; i < 4; ++i) acc_[i] = round(acc_[i], read64(p + 8 * i));
    }

    std::uint64_t seed_;
    std::uint64_t acc_[4];
    unsigned char buffer_[stripe] = {};
    std::size_t buffered_ = 0;
    std::uint64_t total_ = 0;
};

}  // namespace deviant
