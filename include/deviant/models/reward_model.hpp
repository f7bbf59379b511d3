// deviant/models/reward_model.hpp — a decoder with a scalar head: the reward model that judges
// sample quality in the evaluation, in Hugging Face's *ForSequenceClassification layout with one
// label, so that checkpoints move to and from transformers.
//
//   RewardModel<Architecture>        a CausalLm backbone (its LM head unused) + score.weight (1, C)
//   rewards(tape, ids (B, T), lengths) -> (B,) the score of each row's hidden state at its last
//                                    real token (lengths[b] - 1), as transformers reads it at the
//                                    last non-padding token; rows are right-padded
//   with_reward_model(path, f, seed) a reward checkpoint, or any LM checkpoint / GGUF file with a
//                                    fresh head (normal(0, 0.02), as transformers initialises it)
//   save_reward_model(dir, model)    model.safetensors + config.json (architectures
//                                    LlamaForSequenceClassification, num_labels 1)
#pragma once
#include <filesystem>
#include <fstream>
#include <span>

#include <nlohmann/json.hpp>

#include "deviant/data/jsonl.hpp"
#include "deviant/models/load.hpp"

namespace deviant {

template <class Architecture>
class RewardModel {
public:
    using Backbone = CausalLm<Architecture>;

    ModelConfig config;  // the checkpoint's own configuration (tie_word_embeddings as given)
    Backbone backbone;

    // Builds the backbone from `source` (its LM head is never read, so the backbone is built with
    // tied embeddings and an untied checkpoint's lm_head, absent from reward checkpoints, is not
    // needed) and takes score.weight from the source when it has one, else initialises it.
    RewardModel(ModelConfig c, ParameterSource source, std::uint64_t seed = 0, DType dtype = DType::f32)
        : config(c), backbone(backbone_config(c), source, seed, dtype) {
        std::optional<Tensor> head = source ? source("score.weight") : std::nullopt;
        const Shape shape{1, config.hidden_size};
        if (head) {
            DEVIANT_REQUIRE(head->shape() == shape, "{}: score.weight has shape {}, a one-label reward head is {}", config.source.string(),
                            head->shape().str(), shape.str());
            score_ = &backbone.store.add("score.weight", *head);
            head_from_checkpoint_ = true;
        } else {
            score_ = &backbone.store.add("score.weight", backbone.store.fresh(shape, Init::normal));
        }
    }

    // Rewards (B,) of right-padded rows ids (B, T): row b's real tokens are ids[b, 0 .. lengths[b]).
    Var rewards(Tape& t, const Tensor& ids, std::span<const std::int64_t> lengths) const {
        DEVIANT_REQUIRE(ids.rank() == 2, "reward model: token ids must be (B, T), got {}", ids.shape().str());
        const std::int64_t B = ids.size(0), T = ids.size(1), C = config.hidden_size;
        DEVIANT_REQUIRE(std::int64_t(lengths.size()) == B, "reward model: {} lengths for {} rows", lengths.size(), B);
        std::vector<std::int64_t> last(static_cast<std::size_t>(B), 0);
        for (std::int64_t b = 0; b < B; ++b) {
            DEVIANT_REQUIRE(lengths[std::size_t(b)] >= 1 && lengths[std::size_t(b)] <= T, "reward model: row {} has length {}, outside [1, {}]", b,
                            lengths[std::size_t(b)], T);
            last[std::size_t(b)] = b * T + lengths[std::size_t(b)] - 1;
        }
        Var h = backbone.hidden(t, TokenBatch{ids, {}});                                               // (B, T, C)
        Var rows = embedding(reshape(h, {B * T, C}), Tensor::from(last, {B}).to(backbone.device()));  // (B, C)
        return reshape(linear(rows, t.param(*score_)), {B});                                          // (B,)
    }

    Parameter& score_parameter() { return *score_; }
    // Whether score.weight came from the checkpoint (a trained reward model) or is fresh.
    bool head_from_checkpoint() const { return head_from_checkpoint_; }
    template <class F>
    void for_each_projection(F&& f) {
        backbone.for_each_projection(std::forward<F>(f));
    }
    std::deque<Parameter>& parameters() { return backbone.parameters(); }
    std::int64_t num_parameters() const { return backbone.num_parameters(); }
    Device device() const { return backbone.device(); }
    void to(Device d) { backbone.to(d); }

private:
    static ModelConfig backbone_config(ModelConfig c) {
        c.tie_word_embeddings = true;  // the LM head is not part of a reward model
        return c;
    }
    Parameter* score_ = nullptr;
    bool head_from_checkpoint_ = false;
};

using LlamaRewardModel = RewardModel<LlamaArchitecture>;
using Gpt2RewardModel = RewardModel<Gpt2Architecture>;

// Calls f(reward_model) typed by the checkpoint's family. `path`: a reward checkpoint (has
// score.weight), or a language model's checkpoint directory or GGUF file (fresh head from `seed`).
template <class F>
decltype(auto) with_reward_model(const std::filesystem::path& path, F&& f, std::uint64_t seed = 0, DType dtype = DType::f32) {
    if (io::is_gguf_file(path)) {
        auto file = std::make_shared<const io::GgufFile>(io::GgufFile::open(path));
        io::ModelConfig cfg = io::gguf_model_config(*file);
        nn::divisors_as_llama3(cfg);
        auto m = std::make_unique<LlamaRewardModel>(cfg, gguf_source(file, cfg), seed, dtype);
        return f(*m);
    }
    std::error_code ec;
    DEVIANT_REQUIRE(std::filesystem::is_directory(path, ec), "{}: no such model directory or GGUF file", path.string());
    io::ModelConfig cfg = io::load_model_config(path);
    auto read = std::make_shared<std::set<std::string>>();
    ParameterSource src = checkpoint_source(path, read);
    auto ignorable = [](const std::string& n) { return n == "lm_head.weight"; };  // a language model's head, unused here
    return with_architecture(cfg, [&]<class Architecture>() -> decltype(auto) {
        auto m = std::make_unique<RewardModel<Architecture>>(cfg, src, seed, dtype);
        require_every_tensor_read(path, cfg, *read, ignorable);
        return f(*m);
    });
}

// The config.json of a reward model: the backbone's configuration with transformers'
// sequence-classification head (one label).
inline nlohmann::json reward_config_json(const ModelConfig& c) {
    nlohmann::json j;
    std::error_code ec;
    if (!c.source.empty() && c.source.filename() == "config.json" && std::filesystem::is_regular_file(c.source, ec))
        j = nlohmann::json::parse(std::ifstream(c.source), nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) j = nlohmann::json::parse(io::llama_config_json(c));
    std::string arch = c.model_type == "qwen2"   ? "Qwen2ForSequenceClassification"
                       : c.model_type == "gpt2"  ? "GPT2ForSequenceClassification"
                       : c.model_type == "mistral" ? "MistralForSequenceClassification"
                                                 : "LlamaForSequenceClassification";
    j["architectures"] = {arch};
    j["id2label"] = {{"0", "LABEL_0"}};
    j["label2id"] = {{"LABEL_0", 0}};
    j["torch_dtype"] = "float32";
    return j;
}

// Writes a reward model as a checkpoint directory: model.safetensors (the backbone's weights
// without an LM head, plus score.weight) and config.json, each file atomically. `extra` files
// (name -> JSON) are written beside them (the target transform of reward training).
template <class Architecture>
void save_reward_model(const std::filesystem::path& dir, RewardModel<Architecture>& m,
                       const std::vector<std::pair<std::string, nlohmann::json>>& extra = {}) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    DEVIANT_REQUIRE(!ec && std::filesystem::is_directory(dir), "{}: cannot create the output directory: {}", dir.string(), ec.message());
    std::vector<std::pair<std::string, Tensor>> w;
    for (Parameter& p : m.parameters()) w.emplace_back(p.name, p.value.to(Device::cpu, DType::f32));
    io::save_safetensors(dir / "model.safetensors", w, {{"format", "pt"}});
    nlohmann::json cfg = reward_config_json(m.config);
    {
        data::AtomicTextFile out(dir / "config.json");
        out.stream() << cfg.dump(2) << "\n";
        out.commit();
    }
    for (const auto& [name, j] : extra) {
        data::AtomicTextFile out(dir / name);
        out.stream() << j.dump(2) << "\n";
        out.commit();
    }
}

}  // namespace deviant
