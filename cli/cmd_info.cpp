// `deviant info`: what this build of deviant can do (CUDA compiled in, devices present), and with
// --model, what a checkpoint directory or GGUF file holds (architecture, sizes, parameter count,
// tensor storage types, tokenizer) without loading its weights.
#include <fmt/core.h>

#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "command.hpp"
#include "deviant/core/cuda_runtime.hpp"
#include "deviant/io/gguf.hpp"
#include "deviant/io/hf_config.hpp"
#include "deviant/io/safetensors.hpp"

namespace {

using namespace deviant;

void print_config(const io::ModelConfig& c) {
    fmt::print("model type: {}\nlayers: {}\nhidden size: {}\nintermediate size: {}\nattention heads: {} (key/value heads: {}, head size: {})\n"
               "vocabulary: {}\ncontext: {}\nnorm eps: {}\nrope theta: {} ({})\ntied embeddings: {}\nattention bias: {}\n",
               c.model_type, c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_key_value_heads,
               c.head_dim, c.vocab_size, c.max_position_embeddings, c.norm_eps, c.rope_theta, c.rope_type,
               c.tie_word_embeddings ? "yes" : "no", c.attention_bias ? "yes" : "no");
}

int describe_model(const std::string& path) {
    if (io::is_gguf_file(path)) {
        io::GgufFile f = io::GgufFile::open(path);
        fmt::print("{}: GGUF version {}, {} tensors, {} metadata entries\n", path, f.version(), f.tensors().size(), f.metadata().size());
        print_config(io::gguf_model_config(f));
        std::map<std::string, std::pair<std::int64_t, std::int64_t>> by_type;  // type -> (tensors, values)
        std::int64_t params = 0;
        for (const auto& t : f.tensors()) {
            auto& e = by_type[io::ggml_type_name(t.type)];
            e.first += 1, e.second += t.numel(), params += t.numel();
        }
        fmt::print("parameters: {}\n", params);
        for (const auto& [type, e] : by_type) fmt::print("  {:>6}: {} tensors, {} values\n", type, e.first, e.second);
        const io::GgufValue* model = f.find("tokenizer.ggml.model");
        const io::GgufValue* pre = f.find("tokenizer.ggml.pre");
        fmt::print("tokenizer: {}{}\n", model && model->as_string() ? *model->as_string() : "none",
                   pre && pre->as_string() ? " (pre-tokenizer " + *pre->as_string() + ")" : "");
        return 0;
    }
    std::error_code ec;
    DEVIANT_REQUIRE(std::filesystem::is_directory(path, ec), "{}: not a model: give a checkpoint directory or a GGUF file", path);
    fmt::print("{}: Hugging Face checkpoint\n", path);
    const io::ModelConfig c = io::load_model_config(path);
    print_config(c);
    fmt::print("family: {}\n", io::registered_model_types().count(c.model_type) ? "registered by this program" : c.family == io::ModelFamily::gpt2 ? "gpt2" : "llama");
    // what the safetensors hold: headers only, no weight is read
    if (std::filesystem::exists(std::filesystem::path(path) / "model.safetensors", ec) ||
        std::filesystem::exists(std::filesystem::path(path) / "model.safetensors.index.json", ec)) {
        const io::CheckpointReader r = io::CheckpointReader::open(path);
        std::map<std::string, std::pair<std::int64_t, std::int64_t>> by_type;  // dtype -> (tensors, values)
        std::int64_t params = 0;
        for (const std::string& name : r.names()) {
            const io::TensorInfo& t = r.info(name);
            auto& e = by_type[t.dtype];
            e.first += 1, e.second += t.shape.numel(), params += t.shape.numel();
        }
        fmt::print("parameters: {} in {} tensors, {} file(s)\n", params, r.names().size(), r.shards().size());
        for (const auto& [type, e] : by_type) fmt::print("  {:>6}: {} tensors, {} values\n", type, e.first, e.second);
    } else {
        fmt::print("parameters: no model.safetensors (config only)\n");
    }
    const std::filesystem::path tok = std::filesystem::path(path) / "tokenizer.json";
    if (std::filesystem::exists(tok, ec)) {
        std::ifstream in(tok, std::ios::binary);
        const nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
        const nlohmann::json* m = j.is_object() && j.contains("model") && j["model"].is_object() ? &j["model"] : nullptr;
        const std::string type = m && m->contains("type") && (*m)["type"].is_string() ? (*m)["type"].get<std::string>() : "unknown type";
        const std::size_t vocab = m && m->contains("vocab") && ((*m)["vocab"].is_object() || (*m)["vocab"].is_array()) ? (*m)["vocab"].size() : 0;
        fmt::print("tokenizer: tokenizer.json, {} ({} tokens)\n", type, vocab);
    } else {
        fmt::print("tokenizer: none (no tokenizer.json)\n");
    }
    return 0;
}

deviant::cli::Registration info_command{{"info", "Show build features and devices, or what a model holds (--model)", [](CLI::App& app) {
    auto model = std::make_shared<std::string>();
    app.add_option("--model", *model, "a checkpoint directory or GGUF file to describe (weights are not loaded)");
    return std::function<int()>([model] {
        if (!model->empty()) return describe_model(*model);
        fmt::print("deviant 0.1.0\nCUDA kernels compiled: {}\nCUDA device available: {}\n", deviant::cuda::compiled() ? "yes" : "no",
                   deviant::cuda::available() ? "yes" : "no");
        return 0;
    });
}}};

}  // namespace
