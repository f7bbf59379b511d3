// deviant/io/safetensors.hpp — reading and writing safetensors checkpoints, single or sharded.
// Why: model weights arrive as Hugging Face safetensors files. A file is an 8-byte little-endian
// header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, __metadata__},
// then the data section. The reader memory-maps the file and checks every header field before
// any byte of data is touched, so a truncated or corrupt file is an Error naming the file and the
// tensor, never a crash. Loading converts to the requested dtype, or, when the stored type already
// is that dtype, returns a zero-copy view that keeps the mapping alive. The writer is atomic: it
// writes `path.tmp.<pid>`, fsyncs and renames, so the final name never holds a partial file.
#pragma once
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "deviant/core/error.hpp"
#include "deviant/core/tensor.hpp"
#include "deviant/io/convert.hpp"

namespace deviant::io {

// Safetensors dtype strings and the stored types they name.
inline std::optional<StoredType> safetensors_dtype(std::string_view s) {
    static constexpr std::pair<std::string_view, StoredType> table[] = {
        {"F64", StoredType::f64},      {"F32", StoredType::f32}, {"F16", StoredType::f16},  {"BF16", StoredType::bf16},
        {"F8_E4M3", StoredType::f8_e4m3}, {"F8_E5M2", StoredType::f8_e5m2}, {"I64", StoredType::i64},
        {"I32", StoredType::i32},      {"I16", StoredType::i16}, {"I8", StoredType::i8},    {"U64", StoredType::u64},
        {"U32", StoredType::u32},      {"U16", StoredType::u16}, {"U8", StoredType::u8},    {"BOOL", StoredType::boolean},
    };
    for (const auto& [name, type] : table)
        if (name == s) return type;
    return std::nullopt;
}

constexpr std::string_view safetensors_dtype_name(StoredType t) {
    switch (t) {
        case StoredType::f64: return "F64";
        case StoredType::f32: return "F32";
        case StoredType::f16: return "F16";
        case StoredType::bf16: return "BF16";
        case StoredType::f8_e4m3: return "F8_E4M3";
        case StoredType::f8_e5m2: return "F8_E5M2";
        case StoredType::i64: return "I64";
        case StoredType::i32: return "I32";
        case StoredType::i16: return "I16";
        case StoredType::i8: return "I8";
        case StoredType::u64: return "U64";
        case StoredType::u32: return "U32";
        case StoredType::u16: return "U16";
        case StoredType::u8: return "U8";
        case StoredType::boolean: return "BOOL";
    }
    return "?";
}

// One tensor's header entry. begin/end are byte offsets inside the data section.
struct TensorInfo {
    std::string name;
    std::string dtype;  // as written in the file: "F32", "BF16", ...
    StoredType stored = StoredType::f32;
    Shape shape;
    std::uint64_t begin = 0, end = 0;
    std::uint64_t bytes() const { return end - begin; }
};

namespace detail {

// A read-only file mapped copy-on-write: views handed out may be written to without touching the file.
struct MappedFile {
    void* addr = nullptr;
    std::size_t size = 0;
    MappedFile() = default;
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;
    ~MappedFile() {
        if (addr) ::munmap(addr, size);
    }
    const std::byte* bytes() const { return static_cast<const std::byte*>(addr); }
};

inline std::string errno_text() { return std::strerror(errno); }

inline std::shared_ptr<MappedFile> map_file(const std::filesystem::path& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    DEVIANT_REQUIRE(fd >= 0, "{}: cannot open: {}", path.string(), errno_text());
    struct FdCloser {
        int fd;
        ~FdCloser() { ::close(fd); }
    } closer{fd};
    struct stat st {};
    DEVIANT_REQUIRE(::fstat(fd, &st) == 0, "{}: cannot stat: {}", path.string(), errno_text());
    DEVIANT_REQUIRE(S_ISREG(st.st_mode), "{}: not a regular file", path.string());
    auto file = std::make_shared<MappedFile>();
    file->size = std::size_t(st.st_size);
    DEVIANT_REQUIRE(file->size >= 8, "{}: file is {} bytes, a safetensors file has at least 8 (the header length)",
                    path.string(), file->size);
    void* p = ::mmap(nullptr, file->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    DEVIANT_REQUIRE(p != MAP_FAILED, "{}: cannot map {} bytes: {}", path.string(), file->size, errno_text());
    file->addr = p;
    return file;
}

// A JSON value as a non-negative integer, or nothing when it is not one.
inline std::optional<std::uint64_t> json_u64(const nlohmann::json& j) {
    if (j.is_number_unsigned()) return j.get<std::uint64_t>();
    if (j.is_number_integer() && j.get<std::int64_t>() >= 0) return std::uint64_t(j.get<std::int64_t>());
    return std::nullopt;
}

// Parses JSON text; throws Error naming `where` on bad syntax or a duplicated top-level key.
inline nlohmann::json parse_json(std::string_view text, const std::string& where) {
    std::set<std::string> keys;
    std::string duplicate;
    auto callback = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
        if (depth == 1 && event == nlohmann::json::parse_event_t::key && parsed.is_string()) {
            const auto& k = parsed.get_ref<const std::string&>();
            if (!keys.insert(k).second && duplicate.empty()) duplicate = k;
        }
        return true;
    };
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text.begin(), text.end(), callback);
    } catch (const nlohmann::json::exception& e) {
        fail("{}: not valid JSON: {}", where, e.what());
    }
    DEVIANT_REQUIRE(duplicate.empty(), "{}: key '{}' appears more than once", where, duplicate);
    return j;
}

inline std::string json_type(const nlohmann::json& j) { return j.type_name(); }

}  // namespace detail

class SafetensorsFile {
public:
    // Headers larger than this are rejected as corrupt (the reference implementation's limit).
    static constexpr std::uint64_t max_header_bytes = std::uint64_t(100) << 20;

    // Maps `path` and validates the whole header; throws Error naming the file and field on any defect.
    static SafetensorsFile open(const std::filesystem::path& path) {
        SafetensorsFile f;
        f.path_ = path;
        f.map_ = detail::map_file(path);
        f.parse_header();
        return f;
    }

    const std::filesystem::path& path() const { return path_; }
    std::size_t size() const { return tensors_.size(); }
    // Tensor names, sorted.
    std::vector<std::string> names() const {
        std::vector<std::string> out;
        out.reserve(tensors_.size());
        for (const auto& [name, info] : tensors_) out.push_back(name);
        return out;
    }
    bool contains(std::string_view name) const { return tensors_.find(name) != tensors_.end(); }
    const TensorInfo& info(std::string_view name) const {
        auto it = tensors_.find(name);
        DEVIANT_REQUIRE(it != tensors_.end(), "{}: no tensor named '{}'", path_.string(), name);
        return it->second;
    }
    const std::map<std::string, std::string>& metadata() const { return metadata_; }
    // The stored bytes of one tensor (valid while this file or a view of it is alive).
    std::span<const std::byte> raw(std::string_view name) const {
        const TensorInfo& t = info(name);
        return {data_ + t.begin, std::size_t(t.bytes())};
    }

    // The tensor as a CPU tensor of dtype `to`. When the stored type is `to` (and suitably aligned)
    // this is a zero-copy view into the mapping; otherwise a fresh converted tensor. Writing to a
    // view changes this process's copy only, never the file.
    Tensor load(std::string_view name, DType to = DType::f32) const {
        const TensorInfo& t = info(name);
        DEVIANT_REQUIRE(can_convert(t.stored, to), "{}: tensor '{}' is stored as {} and cannot be loaded as {}",
                        path_.string(), t.name, t.dtype, dtype_name(to));
        const std::byte* src = data_ + t.begin;
        auto native = native_dtype(t.stored);
        if (native && *native == to && reinterpret_cast<std::uintptr_t>(src) % dtype_size(to) == 0)
            return Tensor::borrow(const_cast<std::byte*>(src), t.shape, to, std::shared_ptr<void>(map_));
        return tensor_from_stored(src, t.stored, t.shape, to, fmt::format("{}: tensor '{}'", path_.string(), t.name));
    }

private:
    SafetensorsFile() = default;

    void parse_header() {
        const std::string file = path_.string();
        const std::byte* base = map_->bytes();
        const std::uint64_t file_size = map_->size;
        std::uint64_t header_len;
        std::memcpy(&header_len, base, 8);
        DEVIANT_REQUIRE(header_len <= file_size - 8, "{}: header length {} exceeds the {} bytes after the length field",
                        file, header_len, file_size - 8);
        DEVIANT_REQUIRE(header_len <= max_header_bytes, "{}: header length {} exceeds the limit of {} bytes", file,
                        header_len, max_header_bytes);
        data_ = base + 8 + header_len;
        data_size_ = file_size - 8 - header_len;

        std::string_view text(reinterpret_cast<const char*>(base + 8), std::size_t(header_len));
        nlohmann::json header = detail::parse_json(text, file + ": header");
        DEVIANT_REQUIRE(header.is_object(), "{}: header must be a JSON object, got {}", file, detail::json_type(header));

        for (const auto& [key, value] : header.items()) {
            if (key == "__metadata__") {
                parse_metadata(value);
                continue;
            }
            TensorInfo t = parse_entry(key, value);
            tensors_.emplace(key, std::move(t));
        }
        check_no_overlap();
    }

    void parse_metadata(const nlohmann::json& value) {
        const std::string file = path_.string();
        DEVIANT_REQUIRE(value.is_object(), "{}: '__metadata__' must be an object of strings, got {}", file,
                        detail::json_type(value));
        for (const auto& [k, v] : value.items()) {
            DEVIANT_REQUIRE(v.is_string(), "{}: '__metadata__' field '{}' must be a string, got {}", file, k,
                            detail::json_type(v));
            metadata_[k] = v.get<std::string>();
        }
    }

    TensorInfo parse_entry(const std::string& name, const nlohmann::json& value) const {
        const std::string file = path_.string();
        DEVIANT_REQUIRE(value.is_object(), "{}: tensor '{}': entry must be an object, got {}", file, name,
                        detail::json_type(value));
        TensorInfo t;
        t.name = name;

        auto dtype = value.find("dtype");
        DEVIANT_REQUIRE(dtype != value.end(), "{}: tensor '{}': missing field 'dtype'", file, name);
        DEVIANT_REQUIRE(dtype->is_string(), "{}: tensor '{}': field 'dtype' must be a string, got {}", file, name,
                        detail::json_type(*dtype));
        t.dtype = dtype->get<std::string>();
        auto stored = safetensors_dtype(t.dtype);
        DEVIANT_REQUIRE(stored.has_value(),
                        "{}: tensor '{}': field 'dtype' has unknown value '{}' (known: F64 F32 F16 BF16 F8_E4M3 F8_E5M2 "
                        "I64 I32 I16 I8 U64 U32 U16 U8 BOOL)",
                        file, name, t.dtype);
        t.stored = *stored;

        auto shape = value.find("shape");
        DEVIANT_REQUIRE(shape != value.end(), "{}: tensor '{}': missing field 'shape'", file, name);
        DEVIANT_REQUIRE(shape->is_array(), "{}: tensor '{}': field 'shape' must be an array, got {}", file, name,
                        detail::json_type(*shape));
        DEVIANT_REQUIRE(shape->size() <= std::size_t(Shape::max_dims), "{}: tensor '{}': field 'shape' has {} dims, at most {} supported",
                        file, name, shape->size(), Shape::max_dims);
        std::uint64_t numel = 1;
        bool overflow = false;
        for (const auto& d : *shape) {
            auto extent = detail::json_u64(d);
            DEVIANT_REQUIRE(extent.has_value(), "{}: tensor '{}': field 'shape' holds {}, extents must be non-negative integers",
                            file, name, d.dump());
            DEVIANT_REQUIRE(*extent <= std::uint64_t(std::numeric_limits<std::int64_t>::max()),
                            "{}: tensor '{}': field 'shape' extent {} is too large", file, name, *extent);
            overflow = overflow || __builtin_mul_overflow(numel, *extent, &numel);
            t.shape.push_back(std::int64_t(*extent));
        }
        std::uint64_t expected_bytes = 0;
        overflow = overflow || __builtin_mul_overflow(numel, std::uint64_t(stored_size(t.stored)), &expected_bytes);
        DEVIANT_REQUIRE(!overflow && numel <= std::uint64_t(std::numeric_limits<std::int64_t>::max()),
                        "{}: tensor '{}': field 'shape' {} has too many elements", file, name, shape->dump());

        auto offsets = value.find("data_offsets");
        DEVIANT_REQUIRE(offsets != value.end(), "{}: tensor '{}': missing field 'data_offsets'", file, name);
        DEVIANT_REQUIRE(offsets->is_array() && offsets->size() == 2,
                        "{}: tensor '{}': field 'data_offsets' must be an array [begin, end], got {}", file, name,
                        offsets->dump());
        auto begin = detail::json_u64((*offsets)[0]), end = detail::json_u64((*offsets)[1]);
        DEVIANT_REQUIRE(begin && end, "{}: tensor '{}': field 'data_offsets' {} must hold non-negative integers", file, name,
                        offsets->dump());
        DEVIANT_REQUIRE(*begin <= *end, "{}: tensor '{}': field 'data_offsets' begins at {} after its end {}", file, name,
                        *begin, *end);
        DEVIANT_REQUIRE(*end <= data_size_, "{}: tensor '{}': field 'data_offsets' ends at {}, past the {}-byte data section",
                        file, name, *end, data_size_);
        DEVIANT_REQUIRE(*end - *begin == expected_bytes,
                        "{}: tensor '{}': field 'data_offsets' spans {} bytes but shape {} of {} needs {}", file, name,
                        *end - *begin, t.shape.str(), t.dtype, expected_bytes);
        t.begin = *begin;
        t.end = *end;
        return t;
    }

    void check_no_overlap() const {
        std::vector<const TensorInfo*> order;
        for (const auto& [name, t] : tensors_)
            if (t.bytes() > 0) order.push_back(&t);
        std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
        for (std::size_t i = 1; i < order.size(); ++i)
            DEVIANT_REQUIRE(order[i]->begin >= order[i - 1]->end,
                            "{}: tensor '{}': field 'data_offsets' [{}, {}] overlaps tensor '{}' [{}, {}]", path_.string(),
                            order[i]->name, order[i]->begin, order[i]->end, order[i - 1]->name, order[i - 1]->begin,
                            order[i - 1]->end);
    }

    std::filesystem::path path_;
    std::shared_ptr<detail::MappedFile> map_;
    const std::byte* data_ = nullptr;
    std::uint64_t data_size_ = 0;
    std::map<std::string, TensorInfo, std::less<>> tensors_;
    std::map<std::string, std::string> metadata_;
};

namespace detail {

inline void write_all(int fd, const void* data, std::size_t bytes, const std::filesystem::path& where) {
    auto p = static_cast<const char*>(data);
    while (bytes > 0) {
        ssize_t n = ::write(fd, p, std::min<std::size_t>(bytes, std::size_t(1) << 30));
        if (n < 0 && errno == EINTR) continue;
        DEVIANT_REQUIRE(n > 0, "{}: write failed: {}", where.string(), n < 0 ? errno_text() : std::string("no progress"));
        p += n;
        bytes -= std::size_t(n);
    }
}

// The temporary file of an atomic write: removed on destruction unless committed.
struct PendingFile {
    std::filesystem::path path;
    int fd = -1;
    bool committed = false;
    ~PendingFile() {
        if (fd >= 0) ::close(fd);
        if (!committed) ::unlink(path.c_str());
    }
};

}  // namespace detail

// Writes `tensors` (in order; F32, F64, BF16, I64 or U8, from the CPU or CUDA, any layout) and the
// string `metadata` to `path` atomically. Names must be unique and non-empty.
inline void save_safetensors(const std::filesystem::path& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                             const std::map<std::string, std::string>& metadata = {}) {
    const std::string file = path.string();
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata.empty()) header["__metadata__"] = metadata;
    std::set<std::string_view> seen;
    std::uint64_t offset = 0;
    for (const auto& [name, t] : tensors) {
        DEVIANT_REQUIRE(!name.empty(), "{}: cannot save a tensor with an empty name", file);
        DEVIANT_REQUIRE(name != "__metadata__", "{}: '__metadata__' is reserved and cannot name a tensor", file);
        DEVIANT_REQUIRE(seen.insert(name).second, "{}: tensor name '{}' given twice", file, name);
        DEVIANT_REQUIRE(t.defined(), "{}: tensor '{}' is undefined", file, name);
        std::uint64_t bytes = std::uint64_t(t.numel()) * dtype_size(t.dtype());
        std::vector<std::int64_t> dims(t.shape().begin(), t.shape().end());
        header[name] = {{"dtype", std::string(safetensors_dtype_name(stored_type_of(t.dtype())))},
                        {"shape", dims},
                        {"data_offsets", {offset, offset + bytes}}};
        offset += bytes;
    }
    std::string text;
    try {
        text = header.dump();
    } catch (const nlohmann::json::exception& e) {
        fail("{}: cannot encode the header (tensor names and metadata must be UTF-8): {}", file, e.what());
    }
    text.append((8 - text.size() % 8) % 8, ' ');  // the data section starts 8-byte aligned

    detail::PendingFile tmp;
    tmp.path = path;
    tmp.path += fmt::format(".tmp.{}", ::getpid());
    tmp.fd = ::open(tmp.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    DEVIANT_REQUIRE(tmp.fd >= 0, "{}: cannot create {}: {}", file, tmp.path.string(), detail::errno_text());

    const std::uint64_t header_len = text.size();
    detail::write_all(tmp.fd, &header_len, 8, tmp.path);
    detail::write_all(tmp.fd, text.data(), text.size(), tmp.path);
    for (const auto& [name, t] : tensors) {
        if (t.numel() == 0) continue;
        Tensor host = t.to(Device::cpu).contiguous();
        detail::write_all(tmp.fd, host.raw_data(), std::size_t(host.numel()) * dtype_size(host.dtype()), tmp.path);
    }
    DEVIANT_REQUIRE(::fsync(tmp.fd) == 0, "{}: fsync failed: {}", tmp.path.string(), detail::errno_text());
    int fd = tmp.fd;
    tmp.fd = -1;
    DEVIANT_REQUIRE(::close(fd) == 0, "{}: close failed: {}", tmp.path.string(), detail::errno_text());
    DEVIANT_REQUIRE(::rename(tmp.path.c_str(), path.c_str()) == 0, "{}: cannot rename {} into place: {}", file,
                    tmp.path.string(), detail::errno_text());
    tmp.committed = true;
    // Make the rename itself durable (best effort: some file systems refuse fsync on directories).
    auto dir = path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
}

// A checkpoint directory: `model.safetensors`, or `model.safetensors.index.json` whose weight_map
// sends each tensor name to a shard file in the same directory. Every shard is opened (and its
// header validated) up front, and every mapped tensor is checked to exist in its shard.
class CheckpointReader {
public:
    // `dir_or_file`: a directory holding one of the two layouts, a .safetensors file, or an index file.
    static CheckpointReader open(const std::filesystem::path& dir_or_file) {
        namespace fs = std::filesystem;
        CheckpointReader r;
        fs::path index, single;
        std::error_code ec;
        if (fs::is_directory(dir_or_file, ec)) {
            if (fs::exists(dir_or_file / "model.safetensors.index.json", ec)) index = dir_or_file / "model.safetensors.index.json";
            else if (fs::exists(dir_or_file / "model.safetensors", ec)) single = dir_or_file / "model.safetensors";
            else
                fail("{}: no model.safetensors or model.safetensors.index.json in this directory", dir_or_file.string());
        } else if (dir_or_file.string().ends_with(".json")) {
            index = dir_or_file;
        } else {
            single = dir_or_file;
        }
        if (!single.empty()) {
            r.shards_.push_back(SafetensorsFile::open(single));
            for (const auto& name : r.shards_[0].names()) r.where_.emplace(name, 0);
        } else {
            r.open_index(index);
        }
        return r;
    }

    bool contains(std::string_view name) const { return where_.find(name) != where_.end(); }
    std::vector<std::string> names() const {
        std::vector<std::string> out;
        out.reserve(where_.size());
        for (const auto& [name, shard] : where_) out.push_back(name);
        return out;
    }
    const TensorInfo& info(std::string_view name) const { return shard_of(name).info(name); }
    Tensor load(std::string_view name, DType to = DType::f32) const { return shard_of(name).load(name, to); }
    const std::vector<SafetensorsFile>& shards() const { return shards_; }
    // The file holding `name`.
    const std::filesystem::path& file_of(std::string_view name) const { return shard_of(name).path(); }

private:
    CheckpointReader() = default;

    const SafetensorsFile& shard_of(std::string_view name) const {
        auto it = where_.find(name);
        DEVIANT_REQUIRE(it != where_.end(), "checkpoint {}: no tensor named '{}'", describe(), name);
        return shards_[it->second];
    }
    std::string describe() const {
        return shards_.size() == 1 ? shards_[0].path().string() : source_.string();
    }

    void open_index(const std::filesystem::path& index) {
        source_ = index;
        const std::string file = index.string();
        std::ifstream in(index, std::ios::binary);
        DEVIANT_REQUIRE(in.good(), "{}: cannot open the checkpoint index", file);
        std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        nlohmann::json j = detail::parse_json(text, file);
        DEVIANT_REQUIRE(j.is_object(), "{}: index must be a JSON object, got {}", file, detail::json_type(j));
        auto map = j.find("weight_map");
        DEVIANT_REQUIRE(map != j.end(), "{}: missing field 'weight_map'", file);
        DEVIANT_REQUIRE(map->is_object(), "{}: field 'weight_map' must be an object, got {}", file, detail::json_type(*map));
        std::map<std::string, std::size_t> shard_index;
        for (const auto& [name, shard] : map->items()) {
            DEVIANT_REQUIRE(shard.is_string(), "{}: weight_map entry '{}' must be a shard file name, got {}", file, name,
                            detail::json_type(shard));
            const std::string shard_name = shard.get<std::string>();
            std::filesystem::path rel(shard_name);
            bool plain = !shard_name.empty() && rel.is_relative();
            for (const auto& part : rel) plain = plain && part != "..";
            DEVIANT_REQUIRE(plain, "{}: tensor '{}' maps to shard '{}', which is not a file name inside the checkpoint directory",
                            file, name, shard_name);
            auto it = shard_index.find(shard_name);
            if (it == shard_index.end()) {
                std::filesystem::path shard_path = index.parent_path() / rel;
                try {
                    shards_.push_back(SafetensorsFile::open(shard_path));
                } catch (const Error& e) {
                    fail("{}: shard '{}' (holding tensor '{}') cannot be read: {}", file, shard_name, name, e.what());
                }
                it = shard_index.emplace(shard_name, shards_.size() - 1).first;
            }
            DEVIANT_REQUIRE(shards_[it->second].contains(name), "{}: tensor '{}' is mapped to shard '{}', which does not contain it",
                            file, name, shard_name);
            where_.emplace(name, it->second);
        }
    }

    std::filesystem::path source_;
    std::vector<SafetensorsFile> shards_;
    std::map<std::string, std::size_t, std::less<>> where_;
};

}  // namespace deviant::io
