// deviant/objectives/registry.hpp — choosing an objective by name at run time (the Trainer, the
// CLI and config files): `make_objective("ddpo", options)` returns a type-erased callable over
// the compile-time objectives. Defaults follow docs/method.md (beta 0.1; 2.0 for simpo; lambda
// 0.25). The set is open: user code adds an objective in one line,
//   static const bool added = deviant::register_objective("robust_ddpo",
//       [](const deviant::ObjectiveOptions& o) { return MyObjective{...}; });
// and every by-name lookup of a program linking that line (`deviant train --objective`, TOML
// `objective.name`, `deviant score`) finds it (examples/custom_trainer/).
#pragma once
#include <algorithm>
#include <functional>
#include <map>
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
    bool uses_rejected = true;  // false: the objective reads only chosen completions (SFT)
    std::function<ObjectiveResult(const PairLogps&)> compute;
    ObjectiveResult operator()(const PairLogps& b) const { return compute(b); }
};

// A compile-time objective (PreferenceObjective<Loss, Weighting> or a type with the same
// members: operator()(const PairLogps&), needs_reference(), weighted(), nll_alpha) as an
// AnyObjective under `name`; the options' nll_alpha is applied.
template <class Objective>
AnyObjective erase_objective(const std::string& name, Objective objective, const ObjectiveOptions& o) {
    objective.nll_alpha = o.nll_alpha;
    bool uses_rejected = true;
    if constexpr (requires { objective.uses_rejected(); }) uses_rejected = objective.uses_rejected();
    return AnyObjective{name, objective.needs_reference(), objective.weighted(), uses_rejected,
                        [objective](const PairLogps& b) { return objective(b); }};
}

using ObjectiveFactory = std::function<AnyObjective(const std::string& name, const ObjectiveOptions&)>;

namespace detail {
inline std::map<std::string, ObjectiveFactory, std::less<>>& registered_objectives() {
    static std::map<std::string, ObjectiveFactory, std::less<>> objectives;
    return objectives;
}
inline const std::vector<std::string>& builtin_objective_names() {
    static const std::vector<std::string> names{"sft", "dpo", "ddpo", "ipo", "hinge", "simpo", "orpo", "dorpo"};
    return names;
}
}  // namespace detail

// Adds an objective that by-name lookups find. `make(options)` builds the compile-time objective
// from the run's options (beta is optional there: give your own default). Returns true, so that
// a namespace-scope `static const bool` registers it before main(). A built-in or already
// registered name is refused.
template <class Make>
bool register_objective(const std::string& name, Make make) {
    DEVIANT_REQUIRE(!name.empty(), "register_objective: empty name");
    const auto& builtin = detail::builtin_objective_names();
    DEVIANT_REQUIRE(std::find(builtin.begin(), builtin.end(), name) == builtin.end() && !detail::registered_objectives().count(name),
                    "register_objective: an objective named '{}' exists already", name);
    detail::registered_objectives().emplace(name, [make](const std::string& n, const ObjectiveOptions& o) {
        return erase_objective(n, make(o), o);
    });
    return true;
}

// Every name make_objective accepts: the built-ins, then the registered ones (sorted).
inline std::vector<std::string> objective_names() {
    std::vector<std::string> names = detail::builtin_objective_names();
    for (const auto& [n, f] : detail::registered_objectives()) names.push_back(n);
    return names;
}

inline AnyObjective make_objective(const std::string& name, const ObjectiveOptions& o = {}) {
    auto wrap = [&](auto objective) { return erase_objective(name, objective, o); };
    if (auto it = detail::registered_objectives().find(name); it != detail::registered_objectives().end()) return it->second(name, o);
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
    std::string known;
    for (const std::string& n : objective_names()) known += (known.empty() ? "" : ", ") + n;
    fail("unknown objective '{}' (expected one of {})", name, known);
}

}  // namespace deviant
