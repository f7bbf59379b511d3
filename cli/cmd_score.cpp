// `deviant score`: log-probs, loss and gradient norms of a checkpoint on token-id pairs.
//   deviant score --model DIR [--ref DIR] --pairs FILE --objective NAME
//                 [--beta X] [--lambda X] [--gamma X] [--label-smoothing X] [--ipo-summed] [--grad-norms]
//                 [--device cpu|cuda] [--dtype float32|float64|bfloat16] [--batch-size N]
// Prints one JSON object: per-pair log-probs, the batch loss, TRL-named metrics and (with
// --grad-norms) the L2 norm of d(loss)/d(parameter) keyed by checkpoint tensor name.
#include <fmt/core.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "command.hpp"
#include "deviant/models/load.hpp"
#include "deviant/objectives/registry.hpp"
#include "deviant/train/pair_rows.hpp"
#include "deviant/train/truncation.hpp"

namespace {

using namespace deviant;
using nlohmann::json;

struct ScoreOptions {
    std::string model, ref, pairs, objective = "sft", device = "cpu", dtype = "float32";
    ObjectiveOptions objective_options;
    double beta = -1;
    bool grad_norms = false;
    bool ipo_summed = false;
    std::int64_t batch_size = 8;
};

template <class Policy>
int score(Policy& policy, const ScoreOptions& o) {
    DType dtype = cli::model_dtype(o.dtype);
    Device device = o.device == "cuda" ? Device::cuda : Device::cpu;
    if (device == Device::cuda) {
        cuda::require_available();
        policy.to(device);
    }
    auto pairs = data::read_token_pairs(o.pairs, policy.config.vocab_size);
    require_within_context(pairs, policy.config.max_position_embeddings, o.pairs);
    ObjectiveOptions oo = o.objective_options;
    if (o.beta > 0) oo.beta = o.beta;
    if (o.ipo_summed) oo.ipo_average = false;
    AnyObjective objective = make_objective(o.objective, oo);
    std::int64_t B = std::int64_t(pairs.size());
    std::int64_t chunk = o.batch_size > 0 ? o.batch_size : B;  // a bounded batch: memory does not grow with the file

    // Reference log-probs: the --ref model, or (as TRL does without a reference model) the policy itself.
    std::vector<std::pair<Tensor, Tensor>> refs;
    bool report_ref = !o.ref.empty();
    if (!o.ref.empty()) {
        with_pretrained(o.ref, [&](auto& ref) {
            DEVIANT_REQUIRE(ref.config.vocab_size == policy.config.vocab_size, "reference vocabulary {} differs from the policy's {}",
                            ref.config.vocab_size, policy.config.vocab_size);
            if (device == Device::cuda) ref.to(device);
            for (std::int64_t s = 0; s < B; s += chunk) {
                auto rows = make_rows(std::span(pairs).subspan(std::size_t(s), std::size_t(std::min(chunk, B - s))), dtype);
                refs.push_back(reference_logps(ref, rows));
            }
            return 0;
        }, dtype);
    } else if (objective.needs_reference) {
        for (std::int64_t s = 0; s < B; s += chunk) {
            auto rows = make_rows(std::span(pairs).subspan(std::size_t(s), std::size_t(std::min(chunk, B - s))), dtype);
            refs.push_back(reference_logps(policy, rows));
        }
    }

    policy.store.zero_grad();
    json out_pairs = json::array();
    double total_loss = 0;
    std::vector<std::pair<std::string, double>> metric_sums;
    for (std::int64_t s = 0, k = 0; s < B; s += chunk, ++k) {
        std::int64_t n = std::min(chunk, B - s);
        auto rows = make_rows(std::span(pairs).subspan(std::size_t(s), std::size_t(n)), dtype);
        Tape tape;
        PairLogps lp = pair_logps(tape, policy, rows, oo.orpo_nll_includes_prompt);
        if (!refs.empty()) std::tie(lp.ref_chosen_logp, lp.ref_rejected_logp) = refs[std::size_t(k)];
        ObjectiveResult r = objective(lp);
        double share = double(n) / double(B);
        total_loss += r.loss.value().item() * share;
        for (auto& [name, v] : r.metrics.items()) {
            auto it = std::find_if(metric_sums.begin(), metric_sums.end(), [&name = name](auto& e) { return e.first == name; });
            if (it == metric_sums.end()) metric_sums.emplace_back(name, v * share);
            else it->second += v * share;
        }
        auto c = lp.chosen_logp.value().to_vector<double>(), rj = lp.rejected_logp.value().to_vector<double>();
        auto ct = lp.chosen_tokens.to_vector<double>(), rt = lp.rejected_tokens.to_vector<double>();
        for (std::int64_t i = 0; i < n; ++i) {
            json p{{"chosen_logp", c[i]}, {"rejected_logp", rj[i]}};
            if (report_ref) {
                p["ref_chosen_logp"] = lp.ref_chosen_logp.to_vector<double>()[i];
                p["ref_rejected_logp"] = lp.ref_rejected_logp.to_vector<double>()[i];
            }
            p["chosen_logp_mean"] = c[i] / ct[i];
            p["rejected_logp_mean"] = rj[i] / rt[i];
            out_pairs.push_back(p);
        }
        if (o.grad_norms) tape.backward(scale(r.loss, share));
    }
    DEVIANT_REQUIRE(std::isfinite(total_loss), "the loss is not finite ({}); check the inputs", total_loss);
    json out{{"pairs", out_pairs}, {"loss", total_loss}};
    json metrics = json::object();
    for (auto& [name, v] : metric_sums) metrics[name] = v;
    out["metrics"] = metrics;
    if (o.grad_norms) {
        json norms = json::object();
        for (const Parameter& p : policy.parameters()) {
            double sq = 0;
            if (p.grad.defined())
                for (double g : p.grad.to_vector<double>()) sq += g * g;
            norms[p.name] = std::sqrt(sq);
        }
        out["grad_norms"] = norms;
    }
    fmt::print("{}\n", out.dump());
    return 0;
}

deviant::cli::Registration score_command{{"score", "Log-probs, loss and gradient norms of a checkpoint on token-id pairs", [](CLI::App& app) {
    auto o = std::make_shared<ScoreOptions>();
    app.add_option("--model", o->model, "Policy checkpoint directory (config.json + safetensors)")->required();
    app.add_option("--ref", o->ref, "Reference checkpoint directory (default: the policy itself, frozen)");
    app.add_option("--pairs", o->pairs, "JSON Lines of {prompt_ids, chosen_ids, rejected_ids, weight?}")->required();
    app.add_option("--objective", o->objective, "sft, dpo, ddpo, ipo, hinge, simpo, orpo, dorpo")->capture_default_str();
    app.add_option("--beta", o->beta, "beta (default 0.1; 2.0 for simpo)");
    app.add_option("--lambda", o->objective_options.lambda, "ORPO/DORPO odds-ratio weight")->capture_default_str();
    app.add_option("--gamma", o->objective_options.gamma, "SimPO margin")->capture_default_str();
    app.add_option("--label-smoothing", o->objective_options.label_smoothing, "DPO label smoothing")->capture_default_str();
    app.add_option("--nll-alpha", o->objective_options.nll_alpha, "weight of an added NLL term (RPO)")->capture_default_str();
    app.add_flag("--orpo-prompt-nll", o->objective_options.orpo_nll_includes_prompt, "ORPO NLL over prompt and completion (TRL)");
    app.add_flag("--ipo-summed", o->ipo_summed, "IPO on summed log-ratios (OpenRLHF) instead of length-averaged (TRL)");
    app.add_flag("--grad-norms", o->grad_norms, "Report per-parameter gradient norms");
    app.add_option("--device", o->device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
    app.add_option("--dtype", o->dtype, cli::model_dtype_help)->capture_default_str();
    app.add_option("--batch-size", o->batch_size, "Pairs per forward pass (0: all at once)")->capture_default_str()->check(CLI::NonNegativeNumber);
    return std::function<int()>([o] {
        return with_pretrained(o->model, [&](auto& policy) { return score(policy, *o); }, cli::model_dtype(o->dtype));
    });
}}};

}  // namespace
