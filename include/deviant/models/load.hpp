// deviant/models/load.hpp — loading a Hugging Face checkpoint directory (config.json plus
// model.safetensors or a sharded index) into the family its model_type names, then handing the
// typed model to a generic callable:  with_pretrained(dir, [](auto& model) { ... }).
#pragma once
#include <memory>

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

template <class Model>
std::unique_ptr<Model> load_pretrained_as(const std::filesystem::path& dir, DType dtype = DType::f32) {
    io::ModelConfig cfg = io::load_model_config(dir);
    return std::make_unique<Model>(cfg, checkpoint_source(dir), 0, dtype);
}

// Calls f(model) with the model typed by its family (Llama or Gpt2); returns what f returns.
template <class F>
decltype(auto) with_pretrained(const std::filesystem::path& dir, F&& f, DType dtype = DType::f32) {
    io::ModelConfig cfg = io::load_model_config(dir);
    if (cfg.family == io::ModelFamily::gpt2) {
        auto m = std::make_unique<Gpt2>(cfg, checkpoint_source(dir), 0, dtype);
        return f(*m);
    }
    auto m = std::make_unique<Llama>(cfg, checkpoint_source(dir), 0, dtype);
    return f(*m);
}

}  // namespace deviant
