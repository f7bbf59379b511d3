// examples/custom_trainer/custom_trainer.cpp — a trainer program of your own: every `deviant`
// subcommand (train, score, generate, ... with their flags and TOML config files), plus an
// objective and a model family defined here, each registered in one line. Build: the
// `example_custom_trainer` target (it links the CLI's command objects, `deviant_cli_commands`,
// beside this file).
//
//   example_custom_trainer train --config run.toml      # [objective] name = "dslic"
//   example_custom_trainer score --model M --pairs P --objective dslic
//   example_custom_trainer train --init-config C ...    # C: "model_type": "parallel-llama"
//
// The objective: SLiC's calibration loss (Zhao et al. 2023, "SLiC-HF"), a reference-free hinge on
// the summed log-probs, max(0, delta - (logp(chosen) - logp(rejected))), weighted per pair by the
// chosen response's deviation, as DDPO weights DPO: "dslic".
//
// The family: Llama's layers and tensor names with GPT-J's parallel block, where attention and
// MLP both read one normed input and add to the residual together (x + attn(n(x)) + mlp(n(x))),
// one norm per layer: "parallel-llama".
#include "app.hpp"
#include "deviant/models/families.hpp"
#include "deviant/models/registered_family.hpp"
#include "deviant/objectives/registry.hpp"

using namespace deviant;

// The block: a layer type as in nn/layers.hpp (bind, forward, for_each_projection for LoRA).
template <class Names, class Norm, class Attention, class Mlp>
struct ParallelBlock {
    Norm norm;
    Attention attn;
    Mlp mlp;
    void bind(ParameterStore& s, const std::string& prefix, const ModelConfig& c) {
        norm.bind(s, nn::join(prefix, Names::norm1), c);
        attn.bind(s, nn::join(prefix, Names::attn), c);
        mlp.bind(s, nn::join(prefix, Names::mlp), c);
    }
    Var forward(Tape& t, Var x, const ForwardContext& ctx) const {  // x (B, T, C)
        Var h = norm.forward(t, x);
        return x + attn.forward(t, h, ctx) + mlp.forward(t, h, ctx);
    }
    template <class F>
    void for_each_projection(F&& f) {
        attn.for_each_projection(f);
        mlp.for_each_projection(f);
    }
};

// The architecture is a type; registering it under a model_type is the one line.
using ParallelLlama =
    DecoderOnly<LlamaNames, nn::NoPositionEmbedding,
                ParallelBlock<LlamaNames, nn::RmsNorm, nn::SelfAttention<nn::SeparateQkv<LlamaNames>, nn::RotaryPositions>,
                              nn::SwiGlu<LlamaNames>>,
                nn::RmsNorm>;
static const bool parallel_llama_registered = register_model_family<ParallelLlama>("parallel-llama");

// The loss policy: per-pair losses (B,) on the tape (see docs/adding-an-objective.md).
struct SlicLoss {
    static constexpr std::string_view name = "slic";
    double delta = 1.0;  // the margin the chosen sequence must win by, in nats

    bool needs_reference() const { return false; }
    bool applies_weights() const { return false; }  // PreferenceObjective multiplies by the weight

    Var per_pair(const PairLogps& b, const Var* /*weight*/, Metrics& m) const {
        Var margin = b.chosen_logp - b.rejected_logp;
        m.set("rewards/margins", mean_of(margin.value()));
        return relu(-(margin - delta));  // max(0, delta - margin)
    }
};

// The objective is a type: the loss times the library's deviation weighting.
using DeviationWeightedSlic = PreferenceObjective<SlicLoss, DeviationWeighted>;

// The one line that makes "dslic" a name every lookup knows (the margin comes from --gamma /
// objective.gamma here, for want of a flag of its own).
static const bool dslic_registered =
    register_objective("dslic", [](const ObjectiveOptions& o) { return DeviationWeightedSlic{SlicLoss{o.gamma}}; });

int main(int argc, char** argv) { return deviant::cli::run(argc, argv); }
