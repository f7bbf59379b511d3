// deviant/models/registered_family.hpp — model families added by user code, in one line, and
// usable by programs compiled without them.
//
//   static const bool added = deviant::register_model_family<MyArchitecture>("my-llama");
//
// After that line, config.json files with "model_type": "my-llama" load (their fields read as the
// Llama family's, or as GPT-2's when registered with io::ModelFamily::gpt2), and with_pretrained
// builds a RegisteredLm = CausalLm<RegisteredArchitecture>: the one CausalLm, whose position
// embedding, blocks and final norm are the registered architecture's own types behind one virtual
// call per layer and pass. Everything written against a model (Trainer, LoRA, the sampler, every
// subcommand of the CLI) runs it unchanged: that is how a program built on the CLI's command
// objects trains a family it was never compiled with (examples/custom_trainer/).
//
// A family known at compile time needs none of this: CausalLm<MyArchitecture> is a model
// (examples/custom_family.cpp).
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "deviant/models/causal_lm.hpp"

namespace deviant {

namespace detail {

// f(module_path, projection) with the two projection kinds of the layer set, type-erased.
struct ProjectionVisitor {
    std::function<void(const std::string&, nn::Linear&)> linear;
    std::function<void(const std::string&, nn::Conv1D&)> conv1d;
    void operator()(const std::string& module, nn::Linear& p) const { linear(module, p); }
    void operator()(const std::string& module, nn::Conv1D& p) const { conv1d(module, p); }
};

struct ErasedPositions {
    virtual ~ErasedPositions() = default;
    virtual void bind(ParameterStore& s, const ModelConfig& c) = 0;
    virtual Var forward(Tape& t, Var x, const ForwardContext& ctx) const = 0;  // x (B, T, C)
};
struct ErasedBlock {
    virtual ~ErasedBlock() = default;
    virtual void bind(ParameterStore& s, const std::string& prefix, const ModelConfig& c) = 0;
    virtual Var forward(Tape& t, Var x, const ForwardContext& ctx) const = 0;  // x (B, T, C)
    virtual void for_each_projection(const ProjectionVisitor& f) = 0;
};
struct ErasedNorm {
    virtual ~ErasedNorm() = default;
    virtual void bind(ParameterStore& s, const std::string& prefix, const ModelConfig& c) = 0;
    virtual Var forward(Tape& t, Var x) const = 0;  // x (B, T, C)
};

template <class Positions, class Names>
struct PositionsOf final : ErasedPositions {
    Positions layer;
    void bind(ParameterStore& s, const ModelConfig& c) override { layer.template bind<Names>(s, c); }
    Var forward(Tape& t, Var x, const ForwardContext& ctx) const override { return layer.forward(t, x, ctx); }
};
template <class Block>
struct BlockOf final : ErasedBlock {
    Block layer;
    void bind(ParameterStore& s, const std::string& prefix, const ModelConfig& c) override { layer.bind(s, prefix, c); }
    Var forward(Tape& t, Var x, const ForwardContext& ctx) const override { return layer.forward(t, x, ctx); }
    void for_each_projection(const ProjectionVisitor& f) override {
        if constexpr (requires { layer.for_each_projection(f); }) layer.for_each_projection(f);
    }
};
template <class Norm>
struct NormOf final : ErasedNorm {
    Norm layer;
    void bind(ParameterStore& s, const std::string& prefix, const ModelConfig& c) override { layer.bind(s, prefix, c); }
    Var forward(Tape& t, Var x) const override { return layer.forward(t, x); }
};

// What a registration keeps: how config.json is read, the top-level tensor names, and a factory
// per layer kind.
struct RegisteredFamily {
    io::ModelFamily config_layout = io::ModelFamily::llama;
    std::string token_embedding, layers, final_norm, lm_head;
    std::function<std::unique_ptr<ErasedPositions>()> make_positions;
    std::function<std::unique_ptr<ErasedBlock>()> make_block;
    std::function<std::unique_ptr<ErasedNorm>()> make_final_norm;
};

inline std::map<std::string, RegisteredFamily>& registered_families() {
    static std::map<std::string, RegisteredFamily> families;  // node-based: entries never move
    return families;
}

inline const RegisteredFamily& registered_family(const ModelConfig& c) {
    auto it = registered_families().find(c.model_type);
    DEVIANT_REQUIRE(it != registered_families().end(), "{}: model type '{}' is not a registered family (known: {})",
                    c.source.string(), c.model_type, io::supported_model_types());
    return it->second;
}

}  // namespace detail

// The layers of RegisteredArchitecture: each binds the registered family's own layer, chosen by
// the config's model_type, and forwards to it.
class AnyPositionEmbedding {
public:
    template <class Names>
    void bind(ParameterStore& s, const ModelConfig& c) {
        impl_ = detail::registered_family(c).make_positions();
        impl_->bind(s, c);
    }
    Var forward(Tape& t, Var x, const ForwardContext& ctx) const { return impl_->forward(t, x, ctx); }

private:
    std::unique_ptr<detail::ErasedPositions> impl_;
};

class AnyBlock {
public:
    void bind(ParameterStore& s, const std::string& prefix, const ModelConfig& c) {
        impl_ = detail::registered_family(c).make_block();
        impl_->bind(s, prefix, c);
    }
    Var forward(Tape& t, Var x, const ForwardContext& ctx) const { return impl_->forward(t, x, ctx); }
    template <class F>
    void for_each_projection(F&& f) {
        impl_->for_each_projection(detail::ProjectionVisitor{[&](const std::string& m, nn::Linear& p) { f(m, p); },
                                                             [&](const std::string& m, nn::Conv1D& p) { f(m, p); }});
    }

private:
    std::unique_ptr<detail::ErasedBlock> impl_;
};

class AnyNorm {
public:
    void bind(ParameterStore& s, const std::string& prefix, const ModelConfig& c) {
        impl_ = detail::registered_family(c).make_final_norm();
        impl_->bind(s, prefix, c);
    }
    Var forward(Tape& t, Var x) const { return impl_->forward(t, x); }

private:
    std::unique_ptr<detail::ErasedNorm> impl_;
};

// The architecture of every registered family: its names and layers come from the registration
// of the config's model_type.
struct RegisteredArchitecture {
    struct Names {};  // unused: names(config) supplies the top-level names, the layers their own
    using PositionEmbedding = AnyPositionEmbedding;
    using Block = AnyBlock;
    using FinalNorm = AnyNorm;
    static ArchitectureNames names(const ModelConfig& c) {
        const detail::RegisteredFamily& f = detail::registered_family(c);
        return {f.token_embedding, f.layers, f.final_norm, f.lm_head};
    }
};

using RegisteredLm = CausalLm<RegisteredArchitecture>;

inline bool is_registered_family(const ModelConfig& c) { return detail::registered_families().count(c.model_type) > 0; }

// Registers `Architecture` (a DecoderOnly<Names, PositionEmbedding, Block, FinalNorm>) under
// `model_type`; `config_layout` says which built-in family's config.json fields the type's configs
// have. Returns true, so that a namespace-scope `static const bool` registers it before main().
// Built-in and already registered types are refused.
template <class Architecture>
bool register_model_family(const std::string& model_type, io::ModelFamily config_layout = io::ModelFamily::llama) {
    DEVIANT_REQUIRE(!model_type.empty(), "register_model_family: empty model type");
    DEVIANT_REQUIRE(model_type != "llama" && model_type != "mistral" && model_type != "qwen2" && model_type != "gpt2" &&
                        !detail::registered_families().count(model_type),
                    "register_model_family: model type '{}' exists already", model_type);
    using Names = typename Architecture::Names;
    detail::RegisteredFamily f;
    f.config_layout = config_layout;
    f.token_embedding = std::string(Names::token_embedding);
    f.layers = std::string(Names::layers);
    f.final_norm = std::string(Names::final_norm);
    f.lm_head = std::string(Names::lm_head);
    f.make_positions = [] { return std::make_unique<detail::PositionsOf<typename Architecture::PositionEmbedding, Names>>(); };
    f.make_block = [] { return std::make_unique<detail::BlockOf<typename Architecture::Block>>(); };
    f.make_final_norm = [] { return std::make_unique<detail::NormOf<typename Architecture::FinalNorm>>(); };
    detail::registered_families().emplace(model_type, std::move(f));
    io::registered_model_types().emplace(model_type, config_layout);
    return true;
}

}  // namespace deviant
