// deviant/train/reference_cache.hpp — the frozen reference's log-probs, computed once per
// (data, model) and reused across runs.
//
// DPO-style objectives need log pi_ref(y|x) for every pair; the reference never changes, so
// recomputing it each epoch or each run is wasted forward passes. The cache file
//   <cache_dir>/ref-logps-<datahash>-<modelhash>.safetensors
// holds `chosen` and `rejected` (N,) float64 arrays and string metadata (format, format_version,
// hash, data_hash, model_hash, count, values_hash, batch_size). Keys are XXH64 content hashes
// (core/content_hash.hpp):
//   data hash  — every pair's prompt/chosen/rejected token ids, their lengths and the pair order
//                (NOT the weights: they do not enter a reference log-prob);
//   model hash — the config fields that shape the forward (family, sizes, heads, norm eps, RoPE,
//                activation, biases, tying) and every parameter (name, dtype, shape, bytes) in
//                name order. The parameter dtype fixes the compute precision, so a float32 and a
//                float64 reference are different keys.
// The batch size and device are not part of the key: they change results only by rounding.
// A file is used only after every check passes — it parses as safetensors (a truncated file
// does not), the metadata names this format, version and both hashes, the count and shapes
// match the pairs, and values_hash matches the stored values. Otherwise the reason is kept in
// the result's `note` and the values are recomputed and written atomically (save_safetensors
// writes a temporary file and renames it), never silently used.
#pragma once
#include <algorithm>
#include <cmath>
#include <deque>
#include <filesystem>
#include <map>
#include <span>

#include "deviant/core/content_hash.hpp"
#include "deviant/dist/communicator.hpp"
#include "deviant/io/safetensors.hpp"
#include "deviant/train/pair_rows.hpp"

namespace deviant {

// Content hash of token pairs: ids, lengths and order; weights excluded.
inline std::uint64_t token_pairs_hash(std::span<const data::TokenPair> pairs) {
    ContentHash h;
    h.add_string("deviant.token_pairs.v1");
    data::hash_token_pairs(h, pairs, /*with_weights=*/false);
    return h.digest();
}

// Adds the config fields that change a model's log-probs (not its source path or token ids).
inline void hash_model_config(ContentHash& h, const io::ModelConfig& c) {
    h.add_string(c.model_type);
    h.add(int(c.family));
    for (std::int64_t v : {c.vocab_size, c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_attention_heads,
                           c.num_key_value_heads, c.head_dim, c.max_position_embeddings})
        h.add(v);
    h.add(c.norm_eps);
    h.add(c.rope_theta);
    h.add_string(c.rope_type);
    if (c.rope_type != "default" && !c.rope_type.empty()) {
        for (double v : {c.rope.factor, c.rope.low_freq_factor, c.rope.high_freq_factor, c.rope.attention_factor.value_or(-1.0),
                         c.rope.mscale.value_or(-1.0), c.rope.mscale_all_dim.value_or(-1.0), c.rope.beta_fast, c.rope.beta_slow})
            h.add(v);
        h.add(c.rope.original_max_position_embeddings);
        h.add(std::uint8_t(c.rope.truncate));
    }
    for (double d : c.rope.frequency_divisors) h.add(d);
    if (c.sliding_window > 0) h.add(c.sliding_window);
    h.add_string(c.hidden_act);
    h.add(std::uint8_t(c.tie_word_embeddings));
    h.add(std::uint8_t(c.attention_bias));
    h.add(std::uint8_t(c.mlp_bias));
}

// Content hash of a model: config fields, then each parameter (name, dtype, shape, bytes) sorted by name.
inline std::uint64_t model_content_hash(const io::ModelConfig& config, const std::deque<Parameter>& params) {
    ContentHash h;
    h.add_string("deviant.model.v1");
    hash_model_config(h, config);
    std::vector<const Parameter*> order;
    for (const Parameter& p : params) order.push_back(&p);
    std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->name < b->name; });
    h.add(std::uint64_t(order.size()));
    for (const Parameter* p : order) {
        h.add_string(p->name);
        h.add_string(dtype_name(p->value.dtype()));
        h.add(std::int64_t(p->value.rank()));
        for (std::int64_t d : p->value.shape()) h.add(d);
        Tensor host = p->value.to(Device::cpu).contiguous();
        std::size_t bytes = std::size_t(host.numel()) * dtype_size(host.dtype());
        h.add(std::uint64_t(bytes));
        if (bytes) h.update(host.raw_data(), bytes);
    }
    return h.digest();
}

// Any model with a public `config` and `store` (CausalLm and its families).
template <class Model>
std::uint64_t model_content_hash(const Model& model) {
    return model_content_hash(model.config, model.store.parameters());
}

// Per-pair reference log-probs for all N pairs, on the CPU in float64.
struct CachedReferenceLogps {
    enum class Source { loaded, computed, recomputed };
    Tensor chosen;    // (N,) float64
    Tensor rejected;  // (N,) float64
    std::filesystem::path file;
    Source source = Source::computed;  // recomputed: a file existed but failed a check (see note)
    std::string note;                  // why an existing file was not used; empty otherwise
    std::uint64_t data_hash = 0, model_hash = 0;

    std::int64_t size() const { return chosen.numel(); }
    // The slice for pairs [start, start + n) — the reference fields of a PairLogps batch.
    std::pair<Tensor, Tensor> batch(std::int64_t start, std::int64_t n) const {
        DEVIANT_REQUIRE(start >= 0 && n > 0 && start + n <= size(), "reference batch [{}, {}) outside the {} cached pairs", start,
                        start + n, size());
        return {chosen.narrow(0, start, n).contiguous(), rejected.narrow(0, start, n).contiguous()};
    }
};

// The default way to compute one batch: pair_rows.hpp's reference_logps.
struct ComputeReferenceLogps {
    template <class Model>
    std::pair<Tensor, Tensor> operator()(const Model& model, const SequenceRows& rows) const {
        return reference_logps(model, rows);
    }
};

class ReferenceCache {
public:
    static constexpr std::string_view format = "deviant.reference_logps";
    static constexpr int format_version = 1;

    static std::filesystem::path file_for(const std::filesystem::path& cache_dir, std::uint64_t data_hash, std::uint64_t model_hash) {
        return cache_dir / fmt::format("ref-logps-{}-{}.safetensors", ContentHash::hex(data_hash), ContentHash::hex(model_hash));
    }

    // Loads the cached log-probs of `pairs` under `ref`, or computes them with `compute(ref, rows)`
    // over batches of `batch_size` pairs (<= 0: all at once) and writes the cache file.
    // With a communicator of several ranks, every rank must call this: a file every rank can read
    // is used by all; otherwise each rank computes a contiguous slice of the pairs, the slices are
    // gathered, and rank 0 writes the file.
    template <class Model, class ComputeFn = ComputeReferenceLogps>
    static CachedReferenceLogps load_or_compute(const std::filesystem::path& cache_dir, std::span<const data::TokenPair> pairs,
                                                const Model& ref, std::int64_t batch_size, ComputeFn&& compute = {},
                                                dist::Communicator* comm = nullptr) {
        DEVIANT_REQUIRE(!pairs.empty(), "reference cache: no pairs");
        CachedReferenceLogps out;
        out.data_hash = token_pairs_hash(pairs);
        out.model_hash = model_content_hash(ref);
        out.file = file_for(cache_dir, out.data_hash, out.model_hash);
        const std::int64_t n = std::int64_t(pairs.size());
        const std::int64_t W = comm ? comm->size() : 1, R = comm ? comm->rank() : 0;

        std::error_code ec;
        bool loaded = false;
        if (std::filesystem::exists(out.file, ec)) {
            try {
                std::tie(out.chosen, out.rejected) = load_verified(out.file, out.data_hash, out.model_hash, n);
                out.source = CachedReferenceLogps::Source::loaded;
                loaded = true;
            } catch (const Error& e) {
                out.note = fmt::format("discarded cached reference log-probs: {}", e.what());
                out.source = CachedReferenceLogps::Source::recomputed;
            }
        }
        if (W > 1) loaded = comm->sum(loaded ? 1.0 : 0.0) == double(W);  // all ranks read it, or all compute
        if (loaded) return out;

        std::int64_t chunk = batch_size > 0 ? batch_size : n;
        std::vector<double> chosen(std::size_t(n), 0.0), rejected(std::size_t(n), 0.0);
        const std::int64_t lo = n * R / W, hi = n * (R + 1) / W;
        for (std::int64_t s = lo; s < hi; s += chunk) {
            std::int64_t m = std::min(chunk, hi - s);
            SequenceRows rows = make_rows(pairs.subspan(std::size_t(s), std::size_t(m)), ref.store.dtype());
            std::pair<Tensor, Tensor> batch = compute(ref, rows);
            const Tensor &c = batch.first, &r = batch.second;
            DEVIANT_REQUIRE(c.defined() && r.defined() && c.numel() == m && r.numel() == m,
                            "reference cache: batch of pairs [{}, {}) gave {} chosen and {} rejected log-probs, expected {} each", s,
                            s + m, c.defined() ? c.numel() : 0, r.defined() ? r.numel() : 0, m);
            std::size_t i = std::size_t(s);
            for (double v : c.to_vector<double>()) chosen[i++] = v;
            i = std::size_t(s);
            for (double v : r.to_vector<double>()) rejected[i++] = v;
        }
        if (W > 1) {
            comm->all_reduce_sum(std::span<double>(chosen));
            comm->all_reduce_sum(std::span<double>(rejected));
        }
        out.chosen = Tensor::from(chosen, {n});
        out.rejected = Tensor::from(rejected, {n});
        for (std::int64_t i = 0; i < n; ++i)
            DEVIANT_REQUIRE(std::isfinite(chosen[std::size_t(i)]) && std::isfinite(rejected[std::size_t(i)]),
                            "reference cache: pair {} has a non-finite reference log-prob ({}, {})", i, chosen[std::size_t(i)],
                            rejected[std::size_t(i)]);

        std::filesystem::create_directories(cache_dir, ec);
        DEVIANT_REQUIRE(std::filesystem::is_directory(cache_dir), "reference cache: cannot create directory {}: {}", cache_dir.string(),
                        ec.message());
        std::map<std::string, std::string> meta{
            {"format", std::string(format)},
            {"format_version", std::to_string(format_version)},
            {"hash", "xxh64"},
            {"data_hash", ContentHash::hex(out.data_hash)},
            {"model_hash", ContentHash::hex(out.model_hash)},
            {"count", std::to_string(n)},
            {"values_hash", ContentHash::hex(values_hash(out.chosen, out.rejected))},
            {"batch_size", std::to_string(chunk)},
        };
        if (R == 0) io::save_safetensors(out.file, {{"chosen", out.chosen}, {"rejected", out.rejected}}, meta);
        if (W > 1) comm->barrier();  // the file exists for every rank once this returns
        return out;
    }

    // Reads a cache file and checks everything against the expected key and count; throws Error
    // naming the file and the first check that failed.
    static std::pair<Tensor, Tensor> load_verified(const std::filesystem::path& file, std::uint64_t data_hash, std::uint64_t model_hash,
                                                   std::int64_t count) {
        const std::string where = file.string();
        io::SafetensorsFile f = io::SafetensorsFile::open(file);
        const auto& meta = f.metadata();
        auto field = [&](const std::string& key) -> const std::string& {
            auto it = meta.find(key);
            DEVIANT_REQUIRE(it != meta.end(), "{}: metadata field '{}' is missing", where, key);
            return it->second;
        };
        auto expect = [&](const std::string& key, const std::string& want) {
            const std::string& got = field(key);
            DEVIANT_REQUIRE(got == want, "{}: metadata field '{}' is '{}', expected '{}'", where, key, got, want);
        };
        expect("format", std::string(format));
        expect("format_version", std::to_string(format_version));
        expect("hash", "xxh64");
        expect("data_hash", ContentHash::hex(data_hash));
        expect("model_hash", ContentHash::hex(model_hash));
        expect("count", std::to_string(count));
        std::pair<Tensor, Tensor> out;
        for (auto [name, dst] : {std::pair{"chosen", &out.first}, std::pair{"rejected", &out.second}}) {
            DEVIANT_REQUIRE(f.contains(name), "{}: tensor '{}' is missing", where, name);
            const io::TensorInfo& info = f.info(name);
            DEVIANT_REQUIRE(info.dtype == "F64" && info.shape == Shape{count}, "{}: tensor '{}' is {} {}, expected F64 ({})", where, name,
                            info.dtype, info.shape.str(), count);
            *dst = f.load(name, DType::f64).clone();  // own the values: the file may be replaced later
        }
        expect("values_hash", ContentHash::hex(values_hash(out.first, out.second)));
        return out;
    }

private:
    static std::uint64_t values_hash(const Tensor& chosen, const Tensor& rejected) {
        ContentHash h;
        for (const Tensor* t : {&chosen, &rejected}) {
            Tensor c = t->contiguous();
            h.update(c.raw_data(), std::size_t(c.numel()) * dtype_size(c.dtype()));
        }
        return h.digest();
    }
};

}  // namespace deviant
