// examples/custom_trainer/custom_trainer.cpp — a trainer program of your own: every `deviant`
// subcommand (train, score, generate, ... with their flags and TOML config files), plus an
// objective defined here and registered in one line. Build: the `example_custom_trainer` target
// (it links the CLI's command objects, `deviant_cli_commands`, beside this file).
//
//   example_custom_trainer train --config run.toml      # [objective] name = "dslic"
//   example_custom_trainer score --model M --pairs P --objective dslic
//
// The objective: SLiC's calibration loss (Zhao et al. 2023, "SLiC-HF"), a reference-free hinge on
// the summed log-probs, max(0, delta - (logp(chosen) - logp(rejected))), weighted per pair by the
// chosen response's deviation, as DDPO weights DPO: "dslic".
#include "app.hpp"
#include "deviant/objectives/registry.hpp"

using namespace deviant;

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
