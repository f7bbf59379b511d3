// deviant/io/gguf.hpp — reading GGUF files (llama.cpp's single-file checkpoints), versions 2 and 3.
// Why: many released models exist only as GGUF, often quantized; training starts from their
// weights dequantized to float32 (or bf16).
//
// Layout: "GGUF", version (u32), tensor count (u64), metadata count (u64); metadata entries
// (key string, value type u32, value); tensor infos (name, n_dims u32, dims u64[n_dims] fastest
// first, GGML type u32, offset u64); then, aligned to general.alignment (default 32), the data.
// Strings are u64 length + bytes. Everything is little-endian.
// Tensor types read: F32, F16, BF16; Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (blocks of 32 values with float16
// scales); Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (super-blocks of 256 values with 4-, 6- or 8-bit sub-block
// scales), which covers llama.cpp's Q2_K to Q8_0 files; other types (the IQ family, Q8_K, ...)
// are refused with an error naming the type. A llama-architecture file maps onto the
// Hugging Face Llama layout (names, rotary row order, config) with the helpers at the bottom. Shapes come back in row-major order
// (a GGUF matrix with ne = [in, out] is (out, in)). Every count, length, offset and size is checked
// against the file before use: a truncated or corrupt file gives a deviant::Error naming the file
// and the field, never a read past the mapping.
#pragma once
#include <cstring>
#include <map>
#include <variant>

#include <fstream>

#include "deviant/io/convert.hpp"
#include "deviant/io/hf_config.hpp"
#include "deviant/io/safetensors.hpp"

namespace deviant::io {

enum class GgmlType : std::uint32_t { f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q2_k = 10, q3_k = 11, q4_k = 12, q5_k = 13, q6_k = 14, bf16 = 30 };

// The name llama.cpp gives a GGML type id (also for the ones not read here).
inline std::string ggml_type_name(std::uint32_t t) {
    static const char* names[] = {"F32",  "F16",  "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1",
                                  "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS",
                                  "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64",
                                  "IQ1_M", "BF16"};
    return t < sizeof(names) / sizeof(names[0]) ? names[t] : fmt::format("type {}", t);
}

// A metadata value: integers (signed or not), floats, bools, strings, or arrays of them.
struct GgufValue {
    std::variant<std::uint64_t, std::int64_t, double, bool, std::string, std::vector<GgufValue>> v;
    std::uint32_t type = 0;  // GGUF value type id as stored

    std::optional<std::int64_t> as_int() const {
        if (auto* u = std::get_if<std::uint64_t>(&v)) return *u <= std::uint64_t(INT64_MAX) ? std::optional<std::int64_t>(std::int64_t(*u)) : std::nullopt;
        if (auto* i = std::get_if<std::int64_t>(&v)) return *i;
        return std::nullopt;
    }
    std::optional<double> as_number() const {
        if (auto* d = std::get_if<double>(&v)) return *d;
        if (auto i = as_int()) return double(*i);
        return std::nullopt;
    }
    const std::string* as_string() const { return std::get_if<std::string>(&v); }
    const std::vector<GgufValue>* as_array() const { return std::get_if<std::vector<GgufValue>>(&v); }
};

struct GgufTensorInfo {
    std::string name;
    std::vector<std::int64_t> dims;  // as stored: fastest first
    std::uint32_t type = 0;
    std::uint64_t offset = 0;        // from the start of the data section
    std::uint64_t bytes = 0;

    std::int64_t numel() const {
        std::int64_t n = 1;
        for (auto d : dims) n *= d;
        return n;
    }
    Shape shape() const {  // row-major: slowest first
        Shape s;
        for (auto it = dims.rbegin(); it != dims.rend(); ++it) s.push_back(*it);
        return s;
    }
};

namespace detail {
// Values per block and bytes per block of a GGML type read here; nullopt for the others.
inline std::optional<std::pair<std::int64_t, std::int64_t>> ggml_block(std::uint32_t t) {
    switch (GgmlType(t)) {
        case GgmlType::f32: return std::pair<std::int64_t, std::int64_t>{1, 4};
        case GgmlType::f16: return std::pair<std::int64_t, std::int64_t>{1, 2};
        case GgmlType::bf16: return std::pair<std::int64_t, std::int64_t>{1, 2};
        case GgmlType::q8_0: return std::pair<std::int64_t, std::int64_t>{32, 34};
        case GgmlType::q4_0: return std::pair<std::int64_t, std::int64_t>{32, 18};
        case GgmlType::q4_1: return std::pair<std::int64_t, std::int64_t>{32, 20};
        case GgmlType::q5_0: return std::pair<std::int64_t, std::int64_t>{32, 22};
        case GgmlType::q5_1: return std::pair<std::int64_t, std::int64_t>{32, 24};
        case GgmlType::q2_k: return std::pair<std::int64_t, std::int64_t>{256, 84};
        case GgmlType::q3_k: return std::pair<std::int64_t, std::int64_t>{256, 110};
        case GgmlType::q4_k: return std::pair<std::int64_t, std::int64_t>{256, 144};
        case GgmlType::q5_k: return std::pair<std::int64_t, std::int64_t>{256, 176};
        case GgmlType::q6_k: return std::pair<std::int64_t, std::int64_t>{256, 210};
    }
    return std::nullopt;
}

// Bounds-checked little-endian reader over the mapped header.
class GgufCursor {
public:
    GgufCursor(const std::byte* data, std::size_t size, std::string file) : p_(data), size_(size), file_(std::move(file)) {}
    std::size_t pos() const { return pos_; }
    std::size_t remaining() const { return size_ - pos_; }
    const std::string& file() const { return file_; }

    template <class T>
    T read(const char* what) {
        need(sizeof(T), what);
        T v;
        std::memcpy(&v, p_ + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }
    std::string string(const std::string& what) {
        const auto n = read<std::uint64_t>(what.c_str());
        DEVIANT_REQUIRE(n <= remaining(), "{}: {} is a string of {} bytes at offset {}, past the end of the file ({} bytes left)", file_,
                        what, n, pos_ - 8, remaining());
        std::string s(reinterpret_cast<const char*>(p_ + pos_), std::size_t(n));
        pos_ += std::size_t(n);
        return s;
    }
    void need(std::size_t n, const char* what) const {
        DEVIANT_REQUIRE(n <= remaining(), "{}: truncated: {} needs {} bytes at offset {}, the file has {}", file_, what, n, pos_, size_);
    }

private:
    const std::byte* p_;
    std::size_t size_, pos_ = 0;
    std::string file_;
};

inline GgufValue read_gguf_value(GgufCursor& c, std::uint32_t type, const std::string& key, int depth = 0) {
    GgufValue out;
    out.type = type;
    switch (type) {
        case 0: out.v = std::uint64_t(c.read<std::uint8_t>(key.c_str())); break;
        case 1: out.v = std::int64_t(c.read<std::int8_t>(key.c_str())); break;
        case 2: out.v = std::uint64_t(c.read<std::uint16_t>(key.c_str())); break;
        case 3: out.v = std::int64_t(c.read<std::int16_t>(key.c_str())); break;
        case 4: out.v = std::uint64_t(c.read<std::uint32_t>(key.c_str())); break;
        case 5: out.v = std::int64_t(c.read<std::int32_t>(key.c_str())); break;
        case 6: out.v = double(c.read<float>(key.c_str())); break;
        case 7: {
            auto b = c.read<std::uint8_t>(key.c_str());
            DEVIANT_REQUIRE(b <= 1, "{}: metadata '{}' is a bool holding {}", c.file(), key, b);
            out.v = b == 1;
            break;
        }
        case 8: out.v = c.string("metadata '" + key + "'"); break;
        case 9: {
            DEVIANT_REQUIRE(depth == 0, "{}: metadata '{}' nests arrays", c.file(), key);
            const auto elem = c.read<std::uint32_t>(key.c_str());
            const auto n = c.read<std::uint64_t>(key.c_str());
            // every element takes at least one byte: a count beyond the bytes left is corrupt
            DEVIANT_REQUIRE(n <= c.remaining(), "{}: metadata '{}' claims {} array elements, the file has {} bytes left", c.file(), key,
                            n, c.remaining());
            std::vector<GgufValue> items;
            items.reserve(std::size_t(n));
            for (std::uint64_t i = 0; i < n; ++i) items.push_back(read_gguf_value(c, elem, key, depth + 1));
            out.v = std::move(items);
            break;
        }
        case 10: out.v = c.read<std::uint64_t>(key.c_str()); break;
        case 11: out.v = c.read<std::int64_t>(key.c_str()); break;
        case 12: out.v = c.read<double>(key.c_str()); break;
        default: fail("{}: metadata '{}' has unknown value type {}", c.file(), key, type);
    }
    return out;
}
}  // namespace detail

class GgufFile {
public:
    static GgufFile open(const std::filesystem::path& path) {
        GgufFile f;
        f.path_ = path;
        const std::string file = path.string();
        std::error_code ec;
        DEVIANT_REQUIRE(std::filesystem::exists(path, ec), "{}: no such file", file);
        const auto size = std::filesystem::file_size(path, ec);
        DEVIANT_REQUIRE(!ec, "{}: cannot read its size: {}", file, ec.message());
        DEVIANT_REQUIRE(size >= 24, "{}: file is {} bytes, a GGUF file has at least 24 (magic, version, counts)", file, size);
        f.map_ = io::detail::map_file(path);
        detail::GgufCursor c(f.map_->bytes(), f.map_->size, file);
        char magic[4];
        for (char& m : magic) m = char(c.read<std::uint8_t>("magic"));
        DEVIANT_REQUIRE(std::memcmp(magic, "GGUF", 4) == 0, "{}: not a GGUF file (its first bytes are {:02x} {:02x} {:02x} {:02x}, not 'GGUF')",
                        file, std::uint8_t(magic[0]), std::uint8_t(magic[1]), std::uint8_t(magic[2]), std::uint8_t(magic[3]));
        f.version_ = c.read<std::uint32_t>("version");
        DEVIANT_REQUIRE(f.version_ == 2 || f.version_ == 3, "{}: GGUF version {} is not supported (2 or 3)", file, f.version_);
        const auto n_tensors = c.read<std::uint64_t>("tensor count");
        const auto n_kv = c.read<std::uint64_t>("metadata count");
        DEVIANT_REQUIRE(n_kv <= c.remaining() / 13, "{}: metadata count {} cannot fit in the file", file, n_kv);  // key len 8 + 1 + type 4
        for (std::uint64_t i = 0; i < n_kv; ++i) {
            std::string key = c.string(fmt::format("metadata key {}", i));
            const auto type = c.read<std::uint32_t>("metadata value type");
            GgufValue v = detail::read_gguf_value(c, type, key);
            DEVIANT_REQUIRE(f.metadata_.emplace(key, std::move(v)).second, "{}: metadata key '{}' appears twice", file, key);
        }
        DEVIANT_REQUIRE(n_tensors <= c.remaining() / 24, "{}: tensor count {} cannot fit in the file", file, n_tensors);
        std::vector<GgufTensorInfo> infos;
        for (std::uint64_t i = 0; i < n_tensors; ++i) {
            GgufTensorInfo t;
            t.name = c.string(fmt::format("tensor {} name", i));
            const auto n_dims = c.read<std::uint32_t>("tensor dimension count");
            DEVIANT_REQUIRE(n_dims >= 1 && n_dims <= 4, "{}: tensor '{}' has {} dimensions (1 to 4)", file, t.name, n_dims);
            std::int64_t numel = 1;
            for (std::uint32_t d = 0; d < n_dims; ++d) {
                const auto dim = c.read<std::uint64_t>("tensor dimension");
                DEVIANT_REQUIRE(dim >= 1 && dim <= (std::uint64_t(1) << 40), "{}: tensor '{}' dimension {} is {}", file, t.name, d, dim);
                DEVIANT_REQUIRE(numel <= (std::int64_t(1) << 50) / std::int64_t(dim), "{}: tensor '{}' has too many elements", file, t.name);
                numel *= std::int64_t(dim);
                t.dims.push_back(std::int64_t(dim));
            }
            t.type = c.read<std::uint32_t>("tensor type");
            t.offset = c.read<std::uint64_t>("tensor offset");
            if (auto block = detail::ggml_block(t.type)) {
                DEVIANT_REQUIRE(t.dims[0] % block->first == 0, "{}: tensor '{}' ({}) has rows of {} values, not a multiple of its block of {}",
                                file, t.name, ggml_type_name(t.type), t.dims[0], block->first);
                t.bytes = std::uint64_t(numel / block->first * block->second);
            }
            DEVIANT_REQUIRE(f.index_.emplace(t.name, infos.size()).second, "{}: tensor '{}' appears twice", file, t.name);
            infos.push_back(std::move(t));
        }
        f.alignment_ = 32;
        if (auto it = f.metadata_.find("general.alignment"); it != f.metadata_.end()) {
            auto a = it->second.as_int();
            DEVIANT_REQUIRE(a && *a > 0 && (*a & (*a - 1)) == 0, "{}: general.alignment must be a power of two", file);
            f.alignment_ = std::uint64_t(*a);
        }
        f.data_start_ = (std::uint64_t(c.pos()) + f.alignment_ - 1) / f.alignment_ * f.alignment_;
        DEVIANT_REQUIRE(f.data_start_ <= f.map_->size, "{}: truncated: the data section would start at {}, the file has {} bytes", file,
                        f.data_start_, f.map_->size);
        const std::uint64_t data_size = f.map_->size - f.data_start_;
        for (const auto& t : infos) {
            DEVIANT_REQUIRE(t.offset % f.alignment_ == 0, "{}: tensor '{}' offset {} is not aligned to {}", file, t.name, t.offset,
                            f.alignment_);
            if (t.bytes)
                DEVIANT_REQUIRE(t.offset <= data_size && t.bytes <= data_size - t.offset,
                                "{}: truncated: tensor '{}' needs bytes [{}, {}) of the data section, which has {}", file, t.name, t.offset,
                                t.offset + t.bytes, data_size);
        }
        f.tensors_ = std::move(infos);
        return f;
    }

    const std::filesystem::path& path() const { return path_; }
    std::uint32_t version() const { return version_; }
    const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
    bool contains(const std::string& name) const { return index_.count(name) > 0; }
    const GgufTensorInfo& info(const std::string& name) const {
        auto it = index_.find(name);
        DEVIANT_REQUIRE(it != index_.end(), "{}: no tensor named '{}'", path_.string(), name);
        return tensors_[it->second];
    }

    const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
    const GgufValue* find(const std::string& key) const {
        auto it = metadata_.find(key);
        return it == metadata_.end() ? nullptr : &it->second;
    }
    std::int64_t get_int(const std::string& key) const {
        const GgufValue* v = find(key);
        DEVIANT_REQUIRE(v, "{}: metadata '{}' is missing", path_.string(), key);
        auto i = v->as_int();
        DEVIANT_REQUIRE(i, "{}: metadata '{}' is not an integer", path_.string(), key);
        return *i;
    }
    double get_number(const std::string& key, std::optional<double> fallback = std::nullopt) const {
        const GgufValue* v = find(key);
        if (!v && fallback) return *fallback;
        DEVIANT_REQUIRE(v, "{}: metadata '{}' is missing", path_.string(), key);
        auto d = v->as_number();
        DEVIANT_REQUIRE(d, "{}: metadata '{}' is not a number", path_.string(), key);
        return *d;
    }
    std::string get_string(const std::string& key) const {
        const GgufValue* v = find(key);
        DEVIANT_REQUIRE(v && v->as_string(), "{}: metadata '{}' is missing or not a string", path_.string(), key);
        return *v->as_string();
    }

    // The tensor dequantized to float32 (then converted to `dtype`), in row-major shape.
    // The stored bytes of tensor `name` (t.bytes of them), as the file lays them out.
    const std::byte* raw(const std::string& name) const { return map_->bytes() + data_start_ + info(name).offset; }

    Tensor load(const std::string& name, DType dtype = DType::f32) const {
        const GgufTensorInfo& t = info(name);
        DEVIANT_REQUIRE(detail::ggml_block(t.type).has_value(), "{}: tensor '{}' is stored as {}, which this reader does not decode "
                        "(F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)", path_.string(), name, ggml_type_name(t.type));
        Tensor out = Tensor::empty(t.shape(), DType::f32);
        float* dst = out.data<float>();
        const std::byte* src = map_->bytes() + data_start_ + t.offset;
        const std::int64_t n = t.numel();
        auto u16 = [](const std::byte* p) {
            std::uint16_t v;
            std::memcpy(&v, p, 2);
            return v;
        };
        switch (GgmlType(t.type)) {
            case GgmlType::f32: std::memcpy(dst, src, std::size_t(n) * 4); break;
            case GgmlType::f16:
                for (std::int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(u16(src + 2 * i));
                break;
            case GgmlType::bf16:
                for (std::int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(u16(src + 2 * i));
                break;
            case GgmlType::q8_0:  // {f16 d; int8 q[32]}: x = d q
                for (std::int64_t b = 0; b < n / 32; ++b) {
                    const std::byte* blk = src + b * 34;
                    const float d = f16_to_f32(u16(blk));
                    for (int j = 0; j < 32; ++j) dst[b * 32 + j] = d * float(std::int8_t(blk[2 + j]));
                }
                break;
            case GgmlType::q4_0:  // {f16 d; u8 q[16]}: low nibbles are values 0..15, high nibbles 16..31; x = d (q - 8)
                for (std::int64_t b = 0; b < n / 32; ++b) {
                    const std::byte* blk = src + b * 18;
                    const float d = f16_to_f32(u16(blk));
                    for (int j = 0; j < 16; ++j) {
                        const auto q = std::uint8_t(blk[2 + j]);
                        dst[b * 32 + j] = d * float(int(q & 0x0F) - 8);
                        dst[b * 32 + j + 16] = d * float(int(q >> 4) - 8);
                    }
                }
                break;
            case GgmlType::q4_1:  // {f16 d; f16 m; u8 q[16]}: x = d q + m
                for (std::int64_t b = 0; b < n / 32; ++b) {
                    const std::byte* blk = src + b * 20;
                    const float d = f16_to_f32(u16(blk)), m = f16_to_f32(u16(blk + 2));
                    for (int j = 0; j < 16; ++j) {
                        const auto q = std::uint8_t(blk[4 + j]);
                        dst[b * 32 + j] = d * float(q & 0x0F) + m;
                        dst[b * 32 + j + 16] = d * float(q >> 4) + m;
                    }
                }
                break;
            case GgmlType::q5_0:  // {f16 d; u32 qh; u8 q[16]}: 5-bit q = nibble | bit e of qh << 4; x = d (q - 16)
            case GgmlType::q5_1:  // {f16 d; f16 m; u32 qh; u8 q[16]}: x = d q + m
                for (std::int64_t b = 0, bytes = GgmlType(t.type) == GgmlType::q5_0 ? 22 : 24; b < n / 32; ++b) {
                    const std::byte* blk = src + b * bytes;
                    const bool with_min = bytes == 24;
                    const float d = f16_to_f32(u16(blk)), m = with_min ? f16_to_f32(u16(blk + 2)) : 0.0f;
                    std::uint32_t qh;
                    std::memcpy(&qh, blk + (with_min ? 4 : 2), 4);
                    const std::byte* qs = blk + (with_min ? 8 : 6);
                    for (int e = 0; e < 32; ++e) {
                        const auto nib = std::uint8_t(qs[e % 16]) >> (e < 16 ? 0 : 4) & 0x0F;
                        const int q = int(nib | (((qh >> e) & 1u) << 4));
                        dst[b * 32 + e] = with_min ? d * float(q) + m : d * float(q - 16);
                    }
                }
                break;
            case GgmlType::q4_k:  // {f16 d; f16 dmin; u8 scales[12]; u8 q[128]}
            case GgmlType::q5_k:  // {f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 q[128]}
                for (std::int64_t b = 0, bytes = GgmlType(t.type) == GgmlType::q4_k ? 144 : 176; b < n / 256; ++b) {
                    const std::byte* blk = src + b * bytes;
                    const bool five = bytes == 176;
                    const float d = f16_to_f32(u16(blk)), dmin = f16_to_f32(u16(blk + 2));
                    const auto* sc = reinterpret_cast<const std::uint8_t*>(blk + 4);  // 8 six-bit scales and mins
                    const auto* qh = reinterpret_cast<const std::uint8_t*>(blk + 16);
                    const auto* qs = reinterpret_cast<const std::uint8_t*>(blk + (five ? 48 : 16));
                    for (int j = 0; j < 8; ++j) {  // sub-block j: 32 values, nibbles of bytes 32 (j / 2) .. +31
                        const int scale = j < 4 ? sc[j] & 0x3F : (sc[j + 4] & 0x0F) | ((sc[j - 4] >> 2) & 0x30);
                        const int min = j < 4 ? sc[j + 4] & 0x3F : (sc[j + 4] >> 4) | ((sc[j] >> 2) & 0x30);
                        const float ds = d * float(scale), dm = dmin * float(min);
                        for (int l = 0; l < 32; ++l) {
                            int q = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0x0F;
                            if (five) q |= ((qh[l] >> j) & 1) << 4;
                            dst[b * 256 + 32 * j + l] = ds * float(q) - dm;
                        }
                    }
                }
                break;
            case GgmlType::q2_k:  // {u8 scales[16]; u8 q[64]; f16 d; f16 dmin}: 2-bit q, per 16 values a 4-bit scale and min
                for (std::int64_t b = 0; b < n / 256; ++b) {
                    const auto* blk = reinterpret_cast<const std::uint8_t*>(src + b * 84);
                    const std::uint8_t *scales = blk, *qs = blk + 16;
                    const float d = f16_to_f32(u16(src + b * 84 + 80)), dmin = f16_to_f32(u16(src + b * 84 + 82));
                    for (int e = 0; e < 256; ++e) {
                        const int half = e / 128, r = e % 128;  // q: [half][shift][32]
                        const int q = (qs[32 * half + r % 32] >> (2 * (r / 32))) & 0x03;
                        const int g = e / 16;
                        dst[b * 256 + e] = (d * float(scales[g] & 0x0F)) * float(q) - dmin * float(scales[g] >> 4);
                    }
                }
                break;
            case GgmlType::q3_k:  // {u8 hmask[32]; u8 q[64]; u8 scales[12]; f16 d}: 3-bit q - 4 when its hmask bit is clear
                for (std::int64_t b = 0; b < n / 256; ++b) {
                    const auto* blk = reinterpret_cast<const std::uint8_t*>(src + b * 110);
                    const std::uint8_t *hmask = blk, *qs = blk + 32, *sc = blk + 96;
                    const float d = f16_to_f32(u16(src + b * 110 + 108));
                    int scale[16];  // 6-bit: low nibbles of bytes 0-7 (then their high nibbles), top 2 bits from bytes 8-11
                    for (int k = 0; k < 16; ++k) scale[k] = int(((sc[k % 8] >> (4 * (k / 8))) & 0x0F) | (((sc[8 + k % 4] >> (2 * (k / 4))) & 0x03) << 4)) - 32;
                    for (int e = 0; e < 256; ++e) {
                        const int half = e / 128, r = e % 128;
                        const int low = (qs[32 * half + r % 32] >> (2 * (r / 32))) & 0x03;
                        const int high = (hmask[e % 32] >> (e / 32)) & 0x01;
                        dst[b * 256 + e] = (d * float(scale[e / 16])) * float(low - (high ? 0 : 4));
                    }
                }
                break;
            case GgmlType::q6_k:  // {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}: 6-bit q - 32, one scale per 16 values
                for (std::int64_t b = 0; b < n / 256; ++b) {
                    const auto* blk = reinterpret_cast<const std::uint8_t*>(src + b * 210);
                    const std::uint8_t *ql = blk, *qh = blk + 128;
                    const auto* scales = reinterpret_cast<const std::int8_t*>(blk + 192);
                    const float d = f16_to_f32(u16(src + b * 210 + 208));
                    for (int e = 0; e < 256; ++e) {
                        const int half = e / 128, r = e % 128;  // ql: [half][nibble][64], qh: [half][shift][32]
                        const int low = (ql[64 * half + r % 64] >> (4 * (r / 64))) & 0x0F;
                        const int high = (qh[32 * half + r % 32] >> (2 * (r / 32))) & 0x03;
                        dst[b * 256 + e] = (d * float(scales[e / 16])) * float((low | (high << 4)) - 32);
                    }
                }
                break;
        }
        return dtype == DType::f32 ? out : out.to(dtype);
    }

private:
    std::filesystem::path path_;
    std::shared_ptr<io::detail::MappedFile> map_;
    std::uint32_t version_ = 0;
    std::map<std::string, GgufValue> metadata_;
    std::vector<GgufTensorInfo> tensors_;
    std::map<std::string, std::size_t> index_;
    std::uint64_t alignment_ = 32, data_start_ = 0;
};

// Whether `path` is a GGUF file (a regular file starting with the magic "GGUF").
inline bool is_gguf_file(const std::filesystem::path& path) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) return false;
    std::ifstream in(path, std::ios::binary);
    char magic[4] = {};
    in.read(magic, 4);
    return in.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0;
}

// ------------------------------------------------- llama- and qwen2-architecture GGUF files

// The llama.cpp tensor name of a Hugging Face Llama / Qwen2 tensor name:
//   token_embd <-> model.embed_tokens, output_norm <-> model.norm, output <-> lm_head,
//   blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down}
//   <-> model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj, post_attention_layernorm, mlp.{gate,up,down}_proj};
//   the q/k/v biases of Qwen2 are blk.N.attn_{q,k,v}.bias.
inline std::optional<std::string> gguf_llama_name(const std::string& hf) {
    if (hf == "model.embed_tokens.weight") return "token_embd.weight";
    if (hf == "model.norm.weight") return "output_norm.weight";
    if (hf == "lm_head.weight") return "output.weight";
    const std::string prefix = "model.layers.";
    if (hf.rfind(prefix, 0) != 0) return std::nullopt;
    const auto dot = hf.find('.', prefix.size());
    if (dot == std::string::npos) return std::nullopt;
    const std::string n = hf.substr(prefix.size(), dot - prefix.size()), rest = hf.substr(dot + 1);
    static const std::pair<const char*, const char*> table[] = {
        {"input_layernorm.weight", "attn_norm"}, {"post_attention_layernorm.weight", "ffn_norm"}, {"self_attn.q_proj.weight", "attn_q"},
        {"self_attn.k_proj.weight", "attn_k"},    {"self_attn.v_proj.weight", "attn_v"},          {"self_attn.o_proj.weight", "attn_output"},
        {"mlp.gate_proj.weight", "ffn_gate"},     {"mlp.up_proj.weight", "ffn_up"},               {"mlp.down_proj.weight", "ffn_down"},
        {"self_attn.q_proj.bias", "attn_q"},      {"self_attn.k_proj.bias", "attn_k"},            {"self_attn.v_proj.bias", "attn_v"}};
    for (const auto& [h, g] : table)
        if (rest == h) return "blk." + n + "." + g + (rest.ends_with(".bias") ? ".bias" : ".weight");
    return std::nullopt;
}

// llama.cpp stores q and k rows of each head interleaved (its rotary pairs are adjacent), Hugging
// Face in rotate-half order: the converter maps HF row h*D + s*D/2 + i to GGUF row h*D + 2i + s.
// This undoes it for w (rows = n_head * D, cols).
inline Tensor unpermute_rotary_rows(const Tensor& w, std::int64_t n_head, const std::string& what) {
    DEVIANT_REQUIRE(w.rank() == 2 && n_head > 0 && w.size(0) % (2 * n_head) == 0, "{}: shape {} cannot hold {} heads of even size", what,
                    w.shape().str(), n_head);
    const std::int64_t rows = w.size(0), cols = w.size(1), D = rows / n_head, half = D / 2;
    Tensor src = w.to(Device::cpu, DType::f32).contiguous(), out = Tensor::empty(w.shape(), DType::f32);
    const float* a = src.data<float>();
    float* b = out.data<float>();
    for (std::int64_t h = 0; h < n_head; ++h)
        for (std::int64_t sidx = 0; sidx < 2; ++sidx)
            for (std::int64_t i = 0; i < half; ++i)
                std::memcpy(b + (h * D + sidx * half + i) * cols, a + (h * D + 2 * i + sidx) * cols, std::size_t(cols) * sizeof(float));
    return out;
}

// The model configuration a llama- or qwen2-architecture GGUF file describes (its metadata
// "<arch>.*"). llama.cpp stores Llama and Mistral as "llama" (q/k rows permuted) and Qwen2 /
// Qwen2.5 as "qwen2" (rows as Hugging Face has them; q/k/v biases).
inline ModelConfig gguf_model_config(const GgufFile& f) {
    const std::string file = f.path().string();
    const std::string arch = f.get_string("general.architecture");
    DEVIANT_REQUIRE(arch == "llama" || arch == "qwen2",
                    "{}: general.architecture is '{}'; GGUF files of the 'llama' and 'qwen2' architectures are supported", file, arch);
    const std::string k = arch + ".";
    ModelConfig c;
    c.source = f.path();
    c.model_type = arch;
    c.family = ModelFamily::llama;
    c.attention_bias = arch == "qwen2";
    c.hidden_size = f.get_int(k + "embedding_length");
    c.num_hidden_layers = f.get_int(k + "block_count");
    c.intermediate_size = f.get_int(k + "feed_forward_length");
    c.num_attention_heads = f.get_int(k + "attention.head_count");
    c.num_key_value_heads = f.find(k + "attention.head_count_kv") ? f.get_int(k + "attention.head_count_kv") : c.num_attention_heads;
    DEVIANT_REQUIRE(c.hidden_size > 0 && c.num_hidden_layers > 0 && c.intermediate_size > 0 && c.num_attention_heads > 0 &&
                        c.num_key_value_heads > 0 && c.num_attention_heads % c.num_key_value_heads == 0,
                    "{}: inconsistent {} metadata (embedding {}, blocks {}, feed-forward {}, heads {}, kv heads {})", file, arch, c.hidden_size,
                    c.num_hidden_layers, c.intermediate_size, c.num_attention_heads, c.num_key_value_heads);
    c.head_dim = f.find(k + "rope.dimension_count") ? f.get_int(k + "rope.dimension_count") : c.hidden_size / c.num_attention_heads;
    c.max_position_embeddings = f.find(k + "context_length") ? f.get_int(k + "context_length") : 2048;
    c.norm_eps = f.get_number(k + "attention.layer_norm_rms_epsilon", 1e-5);
    c.rope_theta = f.get_number(k + "rope.freq_base", 10000.0);
    // RoPE scaling: rope.scaling.{type, factor, original_context_length}; Llama 3.1 files instead
    // carry the llama3 divisors of each frequency as the tensor rope_freqs.weight (D/2 float32).
    if (const GgufValue* scaling = f.find(k + "rope.scaling.type"); scaling && scaling->as_string() && *scaling->as_string() != "none") {
        c.rope_type = *scaling->as_string();
        DEVIANT_REQUIRE(is_supported_rope_type(c.rope_type), "{}: {}rope.scaling.type is '{}', which is not supported (supported: {})", file, k,
                        c.rope_type, kSupportedRopeTypes);
        c.rope.factor = f.get_number(k + "rope.scaling.factor", 1.0);
        DEVIANT_REQUIRE(std::isfinite(c.rope.factor) && c.rope.factor > 0, "{}: {}rope.scaling.factor must be positive, got {}", file, k,
                        c.rope.factor);
        if (f.find(k + "rope.scaling.original_context_length"))
            c.rope.original_max_position_embeddings = f.get_int(k + "rope.scaling.original_context_length");
    }
    c.rope.type = c.rope_type;
    if (!c.rope.original_max_position_embeddings) c.rope.original_max_position_embeddings = c.max_position_embeddings;
    if (f.contains("rope_freqs.weight")) {
        Tensor d = f.load("rope_freqs.weight", DType::f64);
        DEVIANT_REQUIRE(d.numel() * 2 == c.head_dim, "{}: rope_freqs.weight has {} values for a head size of {} (need {})", file, d.numel(),
                        c.head_dim, c.head_dim / 2);
        c.rope.frequency_divisors = d.contiguous().to_vector<double>();
    }
    if (f.find(k + "attention.sliding_window")) c.sliding_window = f.get_int(k + "attention.sliding_window");
    const GgufTensorInfo& embd = f.info("token_embd.weight");
    DEVIANT_REQUIRE(embd.dims.size() == 2 && embd.dims[0] == c.hidden_size, "{}: token_embd.weight has dimensions {} for an embedding length of {}",
                    file, fmt::join(embd.dims, " x "), c.hidden_size);
    c.vocab_size = embd.dims[1];
    c.tie_word_embeddings = !f.contains("output.weight");
    c.hidden_act = "silu";
    if (f.find("tokenizer.ggml.bos_token_id")) c.bos_token_ids = {f.get_int("tokenizer.ggml.bos_token_id")};
    if (f.find("tokenizer.ggml.eos_token_id")) c.eos_token_ids = {f.get_int("tokenizer.ggml.eos_token_id")};
    c.dtype = "float32";
    return c;
}

}  // namespace deviant::io
