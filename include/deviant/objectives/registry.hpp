// deviant/objectives/registry.hpp — choosing an objective by name at run time (the CLI and
// config files): `make_objective("ddpo", options)` returns a type-erased callable over the
// compile-time objectives. Defaults follow method.md (beta 0.1; 2.0 for simpo; lambda 0.25).
#pragma once
#include <functional>
#include <optional>

#include "deviant/objectives/preference_objective.hpp"

namespace deviant {

struct ObjectiveOptions {
    std::optional<double> beta;       // dpo/ipo/hinge 0.1, simpo 2.0
    double lambda = 0.25;             // orpo/dorpo
    double gamma = 0.5;               // simpo
    double label_smoothing = 0.0;     // dpo/ddpo
    double nll_alpha = 0.0;           // RPO-style NLL term added to any objective
    bool orpo_nll_includes_prompt = false;
    losses::WeightPlacement dorpo_placement = losses::WeightPlacement::outside;
    bool ipo_average = true;
};

struct AnyObjective {
    std::string name;
    bool needs_reference = false;
    bool weighted = false;
    std::function<ObjectiveResult(const PairLogps&)> compute;
    ObjectiveResult operator()(const PairLogps& b) const { return compute(b); }
};

inline const std::vector<std::string>& objective_names() {
    static const std::vector<std::string> names{"sft", "dpo", "ddpo", "ipo", "hinge", "simpo", "orpo", "dorpo"};
    return names;
}

inline AnyObjective make_objective(const std::string& name, const ObjectiveOptions& o = {}) {
    auto wrap = [&](auto objective) {
        objective.nll_alpha = o.nll_alpha;
        return AnyObjective{name, objective.needs_reference(), objective.weighted(),
                            [objective](const PairLogps& b) { return objective(b); }};
    };
    double beta = o.beta.value_or(name == "simpo" ? 2.0 : 0.1);
    DEVIANT_REQUIRE(beta > 0, "objective {}: beta must be positive, got {}", name, beta);
    losses::Dpo dpo{beta, o.label_smoothing};
    losses::Orpo orpo{o.lambda, o.orpo_nll_includes_prompt, losses::WeightPlacement::outside};
    if (name == "sft") return wrap(SftObjective{});
    if (name == "dpo") return wrap(DpoObjective{dpo});
    if (name == "ddpo") return wrap(DdpoObjective{dpo});
    if (name == "ipo") return wrap(IpoObjective{losses::Ipo{beta, o.ipo_average}});
    if (name == "hinge") return wrap(HingeObjective{losses::Hinge{beta}});
    if (name == "simpo") return wrap(SimPoObjective{losses::SimPo{beta, o.gamma}});
    if (name == "orpo") return wrap(OrpoObjective{orpo});
    if (name == "dorpo") {
        orpo.placement = o.dorpo_placement;
        return wrap(DorpoObjective{orpo});
    }
    fail("unknown objective '{}' (expected one of sft, dpo, ddpo, ipo, hinge, simpo, orpo, dorpo)", name);
}

}  // namespace deviant
