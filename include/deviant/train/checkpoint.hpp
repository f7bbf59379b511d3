// deviant/train/checkpoint.hpp — resumable training checkpoints, written atomically.
// Why: a preference run must survive being killed at any moment. A checkpoint is the directory
// <out>/checkpoint-<step>/ holding
//   model.safetensors      the tensors the caller names (full parameters or LoRA adapters),
//   optimizer.safetensors  the optimizer state (optim::AdamW::state_tensors()),
//   trainer_state.json     step, epoch, data position, the std::mt19937_64 state as text, the
//                          last metrics and any extra JSON the caller passes.
// Everything is first written into <out>/.checkpoint-<step>.tmp-<pid>/, each file fsynced, then
// the directory is renamed into place (an existing checkpoint of the same step is swapped out
// atomically). A crash at any point leaves earlier checkpoints untouched and never a partial
// directory under a final name; latest_checkpoint() skips the hidden temporary directories.
// A checkpoint holding NaN or inf is refused: resuming from it could only diverge.
#pragma once
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/syscall.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include <charconv>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "deviant/io/safetensors.hpp"

namespace deviant::train {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

struct TrainingCheckpoint {
    std::int64_t step = 0;           // optimizer updates done
    std::int64_t epoch = 0;          // passes over the data completed
    std::int64_t data_position = 0;  // position inside the current epoch (the trainer's unit: rows or batches)
    std::string rng_state;           // std::mt19937_64 written with operator<<
    std::map<std::string, double> metrics;                   // last logged metrics (non-finite ones read back as NaN)
    nlohmann::json extra = nlohmann::json::object();         // anything else the caller wants back
    NamedTensors model;      // -> model.safetensors
    NamedTensors optimizer;  // -> optimizer.safetensors
    std::filesystem::path dir;  // set by load_checkpoint / save_checkpoint

    void set_rng(const std::mt19937_64& rng) {
        std::ostringstream os;
        os << rng;
        rng_state = os.str();
    }
    // Restores the generator saved with set_rng; throws when the text is not a valid state.
    void restore_rng(std::mt19937_64& rng) const {
        std::istringstream is(rng_state);
        std::mt19937_64 r;
        is >> r;
        DEVIANT_REQUIRE(!is.fail(), "{}: field 'rng_state' is not a std::mt19937_64 state",
                        (dir / "trainer_state.json").string());
        rng = r;
    }
};

// Test hook: called with each file's final path inside the temporary directory before it is
// written. Throwing from it simulates a crash in the middle of a save.
struct CheckpointSaveOptions {
    std::function<void(const std::filesystem::path&)> before_write;
};

inline std::filesystem::path checkpoint_dir(const std::filesystem::path& out, std::int64_t step) {
    return out / fmt::format("checkpoint-{}", step);
}

namespace detail {

// The step of a directory named exactly "checkpoint-<digits>", or nothing.
inline std::optional<std::int64_t> checkpoint_step(const std::string& name) {
    constexpr std::string_view prefix = "checkpoint-";
    if (!name.starts_with(prefix) || name.size() == prefix.size()) return std::nullopt;
    std::int64_t v = 0;
    const char* b = name.data() + prefix.size();
    const char* e = name.data() + name.size();
    if (*b < '0' || *b > '9') return std::nullopt;
    auto [p, ec] = std::from_chars(b, e, v);
    if (ec != std::errc() || p != e) return std::nullopt;
    return v;
}

inline void fsync_path(const std::filesystem::path& p, bool directory) {
    int fd = ::open(p.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) return;  // best effort
    ::fsync(fd);
    ::close(fd);
}

inline void write_text_file(const std::filesystem::path& path, const std::string& text) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    DEVIANT_REQUIRE(fd >= 0, "{}: cannot create: {}", path.string(), io::detail::errno_text());
    struct Closer {
        int fd;
        ~Closer() {
            if (fd >= 0) ::close(fd);
        }
    } closer{fd};
    io::detail::write_all(fd, text.data(), text.size(), path);
    DEVIANT_REQUIRE(::fsync(fd) == 0, "{}: fsync failed: {}", path.string(), io::detail::errno_text());
    closer.fd = -1;
    DEVIANT_REQUIRE(::close(fd) == 0, "{}: close failed: {}", path.string(), io::detail::errno_text());
}

// Host copies of `tensors`, refusing any non-finite floating value (the error names the tensor).
inline NamedTensors finite_host_copies(const NamedTensors& tensors, const char* file) {
    NamedTensors out;
    out.reserve(tensors.size());
    for (const auto& [name, t] : tensors) {
        DEVIANT_REQUIRE(t.defined(), "{}: tensor '{}' is undefined", file, name);
        Tensor host = t.to(Device::cpu).contiguous();
        if (is_floating(host.dtype()) && host.numel() > 0) {
            bool finite = DEVIANT_DISPATCH_FLOAT(host.dtype(), T, [&] {
                const T* p = host.data<T>();
                for (std::int64_t i = 0, n = host.numel(); i < n; ++i)
                    if (!std::isfinite(double(load(p[i])))) return false;
                return true;
            });
            DEVIANT_REQUIRE(finite, "refusing to write a checkpoint with non-finite values in {}", name);
        }
        out.emplace_back(name, std::move(host));
    }
    return out;
}

// Removes a directory tree, ignoring errors (cleanup after a failed save).
inline void remove_quietly(const std::filesystem::path& p) {
    std::error_code ec;
    std::filesystem::remove_all(p, ec);
}

// Atomically swaps two existing paths (Linux renameat2 RENAME_EXCHANGE).
inline bool exchange_paths(const std::filesystem::path& a, const std::filesystem::path& b) {
#ifdef SYS_renameat2
    return ::syscall(SYS_renameat2, AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_EXCHANGE) == 0;
#else
    (void)a, (void)b;
    return false;
#endif
}

inline nlohmann::json metrics_json(const std::map<std::string, double>& metrics) {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& [k, v] : metrics) j[k] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
    return j;
}

}  // namespace detail

// Writes `ckpt` as <out>/checkpoint-<ckpt.step>/ atomically and returns that directory.
inline std::filesystem::path save_checkpoint(const std::filesystem::path& out, const TrainingCheckpoint& ckpt,
                                             const CheckpointSaveOptions& options = {}) {
    namespace fs = std::filesystem;
    DEVIANT_REQUIRE(ckpt.step >= 0, "checkpoint step {} is negative", ckpt.step);
    DEVIANT_REQUIRE(ckpt.epoch >= 0 && ckpt.data_position >= 0, "checkpoint epoch {} / data position {} must be >= 0", ckpt.epoch,
                    ckpt.data_position);
    DEVIANT_REQUIRE(ckpt.extra.is_object(), "checkpoint extra data must be a JSON object, got {}", ckpt.extra.type_name());
    if (!ckpt.rng_state.empty()) {  // refuse to write a state that could not be restored
        std::istringstream is(ckpt.rng_state);
        std::mt19937_64 r;
        is >> r;
        DEVIANT_REQUIRE(!is.fail(), "checkpoint rng_state is not a std::mt19937_64 state");
    }
    NamedTensors model = detail::finite_host_copies(ckpt.model, "model.safetensors");
    NamedTensors optimizer = detail::finite_host_copies(ckpt.optimizer, "optimizer.safetensors");

    std::error_code ec;
    fs::create_directories(out, ec);
    DEVIANT_REQUIRE(!ec && fs::is_directory(out), "{}: cannot create the output directory: {}", out.string(), ec.message());
    const fs::path final_dir = checkpoint_dir(out, ckpt.step);
    const fs::path tmp = out / fmt::format(".checkpoint-{}.tmp-{}", ckpt.step, ::getpid());
    detail::remove_quietly(tmp);  // a leftover of an earlier failed save by this process id
    fs::create_directory(tmp, ec);
    DEVIANT_REQUIRE(!ec, "{}: cannot create the temporary checkpoint directory: {}", tmp.string(), ec.message());

    try {
        auto before = [&](const fs::path& p) {
            if (options.before_write) options.before_write(p);
        };
        before(tmp / "model.safetensors");
        io::save_safetensors(tmp / "model.safetensors", model, {{"format", "pt"}});
        before(tmp / "optimizer.safetensors");
        io::save_safetensors(tmp / "optimizer.safetensors", optimizer, {{"format", "pt"}});
        nlohmann::json state = {
            {"format", "deviant-training-checkpoint"},
            {"version", 1},
            {"step", ckpt.step},
            {"epoch", ckpt.epoch},
            {"data_position", ckpt.data_position},
            {"rng_state", ckpt.rng_state},
            {"metrics", detail::metrics_json(ckpt.metrics)},
            {"extra", ckpt.extra},
        };
        before(tmp / "trainer_state.json");
        detail::write_text_file(tmp / "trainer_state.json", state.dump(2) + "\n");
        detail::fsync_path(tmp, /*directory=*/true);

        if (fs::exists(final_dir, ec)) {
            // Same step saved before (e.g. after a resume): swap atomically, then drop the old one.
            DEVIANT_REQUIRE(detail::exchange_paths(tmp, final_dir), "{}: cannot replace the existing checkpoint: {}",
                            final_dir.string(), io::detail::errno_text());
        } else {
            DEVIANT_REQUIRE(::rename(tmp.c_str(), final_dir.c_str()) == 0, "{}: cannot rename {} into place: {}",
                            final_dir.string(), tmp.string(), io::detail::errno_text());
        }
    } catch (...) {
        detail::remove_quietly(tmp);
        throw;
    }
    detail::remove_quietly(tmp);  // holds the replaced checkpoint after an exchange; absent otherwise
    detail::fsync_path(out, /*directory=*/true);
    return final_dir;
}

// Complete checkpoints under `out` (directories named checkpoint-<step> holding all three
// files), sorted by step. Hidden temporary directories and other names are ignored.
inline std::vector<std::pair<std::int64_t, std::filesystem::path>> list_checkpoints(const std::filesystem::path& out) {
    namespace fs = std::filesystem;
    std::vector<std::pair<std::int64_t, fs::path>> found;
    std::error_code ec;
    if (!fs::is_directory(out, ec)) return found;
    for (const auto& entry : fs::directory_iterator(out, ec)) {
        if (!entry.is_directory(ec)) continue;
        auto step = detail::checkpoint_step(entry.path().filename().string());
        if (!step) continue;
        const fs::path& d = entry.path();
        if (!fs::is_regular_file(d / "trainer_state.json", ec) || !fs::is_regular_file(d / "model.safetensors", ec) ||
            !fs::is_regular_file(d / "optimizer.safetensors", ec))
            continue;
        found.emplace_back(*step, d);
    }
    std::sort(found.begin(), found.end());
    return found;
}

// The complete checkpoint with the highest step, or nothing.
inline std::optional<std::filesystem::path> latest_checkpoint(const std::filesystem::path& out) {
    auto all = list_checkpoints(out);
    if (all.empty()) return std::nullopt;
    return all.back().second;
}

// Removes temporary checkpoint folders (".checkpoint-N.tmp-PID") left by processes that no
// longer run (a save killed half way); another live process's save in progress is left alone.
// Returns the folders removed.
inline std::vector<std::filesystem::path> remove_stale_temporaries(const std::filesystem::path& out) {
    namespace fs = std::filesystem;
    std::vector<fs::path> removed;
    std::error_code ec;
    if (!fs::is_directory(out, ec)) return removed;
    for (const auto& entry : fs::directory_iterator(out, ec)) {
        const std::string name = entry.path().filename().string();
        if (name.rfind(".checkpoint-", 0) != 0) continue;
        const auto tmp = name.rfind(".tmp-");
        if (tmp == std::string::npos) continue;
        char* end = nullptr;
        const long pid = std::strtol(name.c_str() + tmp + 5, &end, 10);
        if (pid <= 0 || *end != '\0') continue;
        if (pid != long(::getpid()) && ::kill(pid_t(pid), 0) == 0) continue;  // its writer still runs
        if (pid != long(::getpid()) && errno != ESRCH) continue;              // cannot tell: keep it
        fs::remove_all(entry.path(), ec);
        if (!ec) removed.push_back(entry.path());
    }
    return removed;
}

// Deletes all but the `k` newest complete checkpoints (k >= 1: the newest always stays).
// Directories that are not complete checkpoints are left alone, except temporaries of dead
// processes (remove_stale_temporaries). Returns the directories removed.
inline std::vector<std::filesystem::path> keep_last(const std::filesystem::path& out, std::size_t k) {
    namespace fs = std::filesystem;
    DEVIANT_REQUIRE(k >= 1, "keep_last: k must be at least 1 (the newest checkpoint is never deleted)");
    auto all = list_checkpoints(out);
    std::vector<fs::path> removed = remove_stale_temporaries(out);
    for (std::size_t i = 0; i + k < all.size(); ++i) {
        std::error_code ec;
        fs::remove_all(all[i].second, ec);
        DEVIANT_REQUIRE(!ec, "{}: cannot remove an old checkpoint: {}", all[i].second.string(), ec.message());
        removed.push_back(all[i].second);
    }
    return removed;
}

namespace detail {
inline NamedTensors read_tensors(const std::filesystem::path& file) {
    io::SafetensorsFile f = io::SafetensorsFile::open(file);
    NamedTensors out;
    for (const auto& name : f.names()) {
        auto native = io::native_dtype(f.info(name).stored);
        DEVIANT_REQUIRE(native.has_value(), "{}: tensor '{}' is stored as {}, which a checkpoint never holds", file.string(), name,
                        f.info(name).dtype);
        out.emplace_back(name, f.load(name, *native));
    }
    return out;
}
}  // namespace detail

// Reads and validates a checkpoint directory. Tensors come back on the CPU in their stored dtype.
inline TrainingCheckpoint load_checkpoint(const std::filesystem::path& dir) {
    namespace fs = std::filesystem;
    std::error_code ec;
    DEVIANT_REQUIRE(fs::is_directory(dir, ec), "{}: not a checkpoint directory", dir.string());
    const fs::path state_path = dir / "trainer_state.json";
    const std::string file = state_path.string();
    std::ifstream in(state_path, std::ios::binary);
    DEVIANT_REQUIRE(in.good(), "{}: cannot open", file);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    nlohmann::json j = io::detail::parse_json(text, file);
    DEVIANT_REQUIRE(j.is_object(), "{}: must be a JSON object, got {}", file, j.type_name());

    auto field = [&](const char* key) -> const nlohmann::json& {
        auto it = j.find(key);
        DEVIANT_REQUIRE(it != j.end(), "{}: missing field '{}'", file, key);
        return *it;
    };
    auto count = [&](const char* key) -> std::int64_t {
        const auto& v = field(key);
        DEVIANT_REQUIRE(v.is_number_integer() && v.get<std::int64_t>() >= 0, "{}: field '{}' must be a non-negative integer, got {}",
                        file, key, v.dump());
        return v.get<std::int64_t>();
    };
    DEVIANT_REQUIRE(field("format") == "deviant-training-checkpoint", "{}: field 'format' is {}, expected \"deviant-training-checkpoint\"",
                    file, field("format").dump());
    DEVIANT_REQUIRE(field("version") == 1, "{}: field 'version' is {}, this build reads version 1", file, field("version").dump());

    TrainingCheckpoint c;
    c.dir = dir;
    c.step = count("step");
    c.epoch = count("epoch");
    c.data_position = count("data_position");
    const auto& rng = field("rng_state");
    DEVIANT_REQUIRE(rng.is_string(), "{}: field 'rng_state' must be a string, got {}", file, rng.type_name());
    c.rng_state = rng.get<std::string>();
    if (!c.rng_state.empty()) {
        std::mt19937_64 probe;
        c.restore_rng(probe);  // validates
    }
    const auto& metrics = field("metrics");
    DEVIANT_REQUIRE(metrics.is_object(), "{}: field 'metrics' must be an object, got {}", file, metrics.type_name());
    for (const auto& [k, v] : metrics.items()) {
        DEVIANT_REQUIRE(v.is_number() || v.is_null(), "{}: metric '{}' must be a number, got {}", file, k, v.dump());
        c.metrics[k] = v.is_null() ? std::nan("") : v.get<double>();
    }
    const auto& extra = field("extra");
    DEVIANT_REQUIRE(extra.is_object(), "{}: field 'extra' must be an object, got {}", file, extra.type_name());
    c.extra = extra;

    fs::path normal = fs::absolute(dir).lexically_normal();
    if (normal.filename().empty()) normal = normal.parent_path();  // "checkpoint-5/" names checkpoint-5
    auto name_step = detail::checkpoint_step(normal.filename().string());
    if (name_step.has_value())
        DEVIANT_REQUIRE(*name_step == c.step, "{}: field 'step' is {} but the directory is named for step {}", file, c.step, *name_step);

    c.model = detail::read_tensors(dir / "model.safetensors");
    c.optimizer = detail::read_tensors(dir / "optimizer.safetensors");
    return c;
}

}  // namespace deviant::train
