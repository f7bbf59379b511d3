// deviant/models/load.hpp — loading a Hugging Face checkpoint directory (config.json plus
// model.safetensors or a sharded index) into the family its model_type names, or a llama.cpp GGUF
// file of the llama architecture (dequantized), then handing the typed model to a generic
// callable:  with_pretrained(dir_or_gguf, [](auto& model) { ... }).
#pragma once
#include <algorithm>
#include <functional>
#include <memory>
#include <set>

#include "deviant/io/gguf.hpp"
#include "deviant/io/hf_config.hpp"
#include "deviant/io/safetensors.hpp"
#include "deviant/models/families.hpp"
#include "deviant/models/registered_family.hpp"

namespace deviant {

// Reads tensors from a checkpoint; GPT-2 checkpoints saved without the "transformer." prefix
// (the original release) are found under either spelling. With `read`, the names read are
// recorded (see require_every_tensor_read).
inline ParameterSource checkpoint_source(const std::filesystem::path& dir, std::shared_ptr<std::set<std::string>> read = nullptr) {
    auto reader = std::make_shared<io::CheckpointReader>(io::CheckpointReader::open(dir));
    return [reader, read](const std::string& name) -> std::optional<Tensor> {
        std::string stored = name;
        const std::string prefix = "transformer.";
        if (!reader->contains(stored) && name.rfind(prefix, 0) == 0 && reader->contains(name.substr(prefix.size())))
            stored = name.substr(prefix.size());
        if (!reader->contains(stored)) return std::nullopt;
        if (read) read->insert(stored);
        return reader->load(stored, DType::f32);
    };
}

// A checkpoint whose weights the config does not account for (more layers than
// num_hidden_layers, another architecture's tensors) is refused rather than loaded in part.
// Tensors no model reads are allowed: rotary inverse frequencies, an LM head or a score head the
// loaded kind of model has no use for (`ignorable`).
inline void require_every_tensor_read(const std::filesystem::path& dir, const io::ModelConfig& cfg, const std::set<std::string>& read,
                                      const std::function<bool(const std::string&)>& ignorable = {}) {
    const io::CheckpointReader reader = io::CheckpointReader::open(dir);
    std::vector<std::string> unused;
    for (const std::string& name : reader.names()) {
        if (read.count(name) || name.ends_with("rotary_emb.inv_freq") || name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias"))
            continue;
        if (ignorable && ignorable(name)) continue;
        unused.push_back(name);
    }
    if (unused.empty()) return;
    std::sort(unused.begin(), unused.end());
    fail("{}: the checkpoint holds {} tensor(s) its config.json ({} layers, model type {}) does not describe, e.g. {}; the config and the "
         "weights do not belong together",
         dir.string(), unused.size(), cfg.num_hidden_layers, cfg.model_type, unused.front());
}

// Reads Hugging Face-named tensors from a llama- or qwen2-architecture GGUF file: renamed,
// dequantized, and (llama) q/k rows put back in rotate-half order.
inline ParameterSource gguf_source(std::shared_ptr<const io::GgufFile> file, const io::ModelConfig& cfg) {
    return [file, cfg](const std::string& name) -> std::optional<Tensor> {
        std::optional<std::string> g = io::gguf_llama_name(name);
        if (!g || !file->contains(*g)) return std::nullopt;
        Tensor t = file->load(*g, DType::f32);
        const std::string what = file->path().string() + ": " + *g;
        if (cfg.model_type != "llama" || !name.ends_with(".weight")) return t;
        if (name.find("self_attn.q_proj") != std::string::npos) return io::unpermute_rotary_rows(t, cfg.num_attention_heads, what);
        if (name.find("self_attn.k_proj") != std::string::npos) return io::unpermute_rotary_rows(t, cfg.num_key_value_heads, what);
        return t;
    };
}

template <class Model>
std::unique_ptr<Model> load_pretrained_as(const std::filesystem::path& dir, DType dtype = DType::f32) {
    io::ModelConfig cfg = io::load_model_config(dir);
    return std::make_unique<Model>(cfg, checkpoint_source(dir), 0, dtype);
}

// A llama- or qwen2-architecture GGUF file as a Llama (dequantized to `dtype`).
inline std::unique_ptr<Llama> load_gguf(const std::filesystem::path& path, DType dtype = DType::f32) {
    auto file = std::make_shared<const io::GgufFile>(io::GgufFile::open(path));
    io::ModelConfig cfg = io::gguf_model_config(*file);
    nn::divisors_as_llama3(cfg);
    return std::make_unique<Llama>(cfg, gguf_source(file, cfg), 0, dtype);
}

// A GGUF matrix (rows N, cols K) of type Q8_0, Q4_0 or Q4_1 repacked for the decoding kernels
// (ops/quantized_matmul.hpp); row_of[n] = the stored row holding output row n (llama's q/k rows
// are stored permuted). nullopt for other types.
inline std::optional<ops::QuantizedMatrix> pack_gguf_matrix(const io::GgufFile& f, const std::string& name,
                                                            const std::vector<std::int64_t>& row_of = {}) {
    const io::GgufTensorInfo& t = f.info(name);
    ops::QuantizedMatrix q;
    std::int64_t src_block = 0;
    switch (io::GgmlType(t.type)) {
        case io::GgmlType::q8_0: q.type = ops::BlockQuant::q8_0, src_block = 34; break;
        case io::GgmlType::q4_0: q.type = ops::BlockQuant::q4_0, src_block = 18; break;
        case io::GgmlType::q4_1: q.type = ops::BlockQuant::q4_1, src_block = 20; break;
        default: return std::nullopt;
    }
    if (t.dims.size() != 2 || t.dims[0] % 32 != 0) return std::nullopt;
    q.cols = t.dims[0];
    q.rows = t.dims[1];
    DEVIANT_REQUIRE(row_of.empty() || std::int64_t(row_of.size()) == q.rows, "{}: {} row indices for {} rows of {}", f.path().string(),
                    row_of.size(), q.rows, name);
    const std::int64_t blocks = q.cols / 32, dst_block = ops::QuantizedMatrix::block_bytes(q.type);
    DEVIANT_REQUIRE(std::uint64_t(q.rows * blocks * src_block) == t.bytes, "{}: tensor {} has {} bytes, expected {}", f.path().string(), name,
                    t.bytes, q.rows * blocks * src_block);
    q.data.resize(std::size_t(q.rows * blocks * dst_block));
    const std::byte* src = f.raw(name);
    for (std::int64_t n = 0; n < q.rows; ++n) {
        const std::int64_t from = row_of.empty() ? n : row_of[std::size_t(n)];
        for (std::int64_t b = 0; b < blocks; ++b) {
            const std::byte* s = src + (from * blocks + b) * src_block;
            unsigned char* d = q.data.data() + (n * blocks + b) * dst_block;
            std::uint16_t h;
            std::memcpy(&h, s, 2);
            const float scale = io::f16_to_f32(h);
            std::memcpy(d, &scale, 4);
            if (q.type == ops::BlockQuant::q4_1) {
                std::memcpy(&h, s + 2, 2);
                const float minimum = io::f16_to_f32(h);
                std::memcpy(d + 4, &minimum, 4);
                std::memcpy(d + 8, s + 4, 16);
            } else {
                std::memcpy(d + 4, s + 2, std::size_t(q.type == ops::BlockQuant::q8_0 ? 32 : 16));
            }
        }
    }
    return q;
}

// For sampling from a GGUF model: keeps the file's Q8_0 / Q4_0 / Q4_1 matrices packed beside the
// float weights, so that decoding reads the blocks (4-8x fewer bytes per token) instead of the
// dequantized floats; the results are those of the float weights up to the order of additions.
// The packed weights (and every other weight) are frozen: training afterwards would leave the
// blocks stale. Returns the number of matrices packed.
inline std::int64_t pack_for_decoding(Llama& m, const io::GgufFile& f) {
    for (Parameter& p : m.parameters()) p.trainable = false;
    std::int64_t packed = 0;
    const io::ModelConfig& c = m.config;
    // llama stores q/k rows in interleaved order: output row h*D + s*half + i is stored row h*D + 2i + s
    auto rotary_rows = [](std::int64_t rows, std::int64_t heads) {
        std::vector<std::int64_t> r(static_cast<std::size_t>(rows));
        const std::int64_t D = rows / heads, half = D / 2;
        for (std::int64_t h = 0; h < heads; ++h)
            for (std::int64_t s = 0; s < 2; ++s)
                for (std::int64_t i = 0; i < half; ++i) r[std::size_t(h * D + s * half + i)] = h * D + 2 * i + s;
        return r;
    };
    m.for_each_projection([&](const std::string& module, auto& proj) {
        if constexpr (std::is_same_v<std::decay_t<decltype(proj)>, nn::Linear>) {
            std::optional<std::string> g = io::gguf_llama_name(module + ".weight");
            if (!g || !f.contains(*g)) return;
            std::vector<std::int64_t> rows;
            if (c.model_type == "llama" && module.ends_with("self_attn.q_proj")) rows = rotary_rows(c.num_attention_heads * c.head_dim, c.num_attention_heads);
            if (c.model_type == "llama" && module.ends_with("self_attn.k_proj")) rows = rotary_rows(c.num_key_value_heads * c.head_dim, c.num_key_value_heads);
            if (auto q = pack_gguf_matrix(f, *g, rows); q && q->rows == proj.weight->value.size(0) && q->cols == proj.weight->value.size(1)) {
                proj.packed = std::make_shared<const ops::QuantizedMatrix>(std::move(*q));
                ++packed;
            }
        }
    });
    const std::string head = f.contains("output.weight") ? "output.weight" : "token_embd.weight";
    if (auto q = pack_gguf_matrix(f, head); q && q->rows == c.vocab_size && q->cols == c.hidden_size) {
        m.packed_head = std::make_shared<const ops::QuantizedMatrix>(std::move(*q));
        ++packed;
    }
    return packed;
}

// Calls f.template operator()<Architecture>() with the architecture of `cfg`'s family: Llama's,
// GPT-2's or, for a model type registered by user code, RegisteredArchitecture.
template <class F>
decltype(auto) with_architecture(const io::ModelConfig& cfg, F&& f) {
    if (is_registered_family(cfg)) return f.template operator()<RegisteredArchitecture>();
    if (cfg.family == io::ModelFamily::gpt2) return f.template operator()<Gpt2Architecture>();
    return f.template operator()<LlamaArchitecture>();
}

// Calls f(model) with the model typed by its family (Llama, Gpt2 or a registered family's
// RegisteredLm); returns what f returns.
template <class F>
decltype(auto) with_pretrained(const std::filesystem::path& dir, F&& f, DType dtype = DType::f32) {
    if (io::is_gguf_file(dir)) {
        auto m = load_gguf(dir, dtype);
        return f(*m);
    }
    std::error_code ec;
    DEVIANT_REQUIRE(std::filesystem::exists(dir, ec), "{}: no such model directory or file", dir.string());
    DEVIANT_REQUIRE(std::filesystem::is_directory(dir, ec), "{}: not a model: give a checkpoint directory (config.json + safetensors) or a GGUF file",
                    dir.string());
    io::ModelConfig cfg = io::load_model_config(dir);
    auto read = std::make_shared<std::set<std::string>>();
    // a tied model never reads lm_head; a reward checkpoint's score head is not a language model's
    auto ignorable = [](const std::string& n) { return n == "lm_head.weight" || n == "score.weight"; };
    return with_architecture(cfg, [&]<class Architecture>() -> decltype(auto) {
        auto m = std::make_unique<CausalLm<Architecture>>(cfg, checkpoint_source(dir, read), 0, dtype);
        require_every_tensor_read(dir, cfg, *read, ignorable);
        return f(*m);
    });
}

}  // namespace deviant
