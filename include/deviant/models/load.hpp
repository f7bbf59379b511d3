// deviant/models/load.hpp — loading a Hugging Face checkpoint directory (config.json plus
// model.safetensors or a sharded index) into the family its model_type names, or a llama.cpp GGUF
// file of the llama architecture (dequantized), then handing the typed model to a generic
// callable:  with_pretrained(dir_or_gguf, [](auto& model) { ... }).
#pragma once
#include <memory>

#include "deviant/io/gguf.hpp"
#include "deviant/io/hf_config.hpp"
#include "deviant/io/safetensors.hpp"
#include "deviant/models/families.hpp"

namespace deviant {

// Reads tensors from a checkpoint; GPT-2 checkpoints saved without the "transformer." prefix
// (the original release) are found under either spelling.
inline ParameterSource checkpoint_source(const std::filesystem::path& dir) {
    auto reader = std::make_shared<io::CheckpointReader>(io::CheckpointReader::open(dir));
    return [reader](const std::string& name) -> std::optional<Tensor> {
        if (reader->contains(name)) return reader->load(name, DType::f32);
        const std::string prefix = "transformer.";
        if (name.rfind(prefix, 0) == 0 && reader->contains(name.substr(prefix.size())))
            return reader->load(name.substr(prefix.size()), DType::f32);
        return std::nullopt;
    };
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

// Calls f(model) with the model typed by its family (Llama or Gpt2); returns what f returns.
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
    if (cfg.family == io::ModelFamily::gpt2) {
        auto m = std::make_unique<Gpt2>(cfg, checkpoint_source(dir), 0, dtype);
        return f(*m);
    }
    auto m = std::make_unique<Llama>(cfg, checkpoint_source(dir), 0, dtype);
    return f(*m);
}

}  // namespace deviant
