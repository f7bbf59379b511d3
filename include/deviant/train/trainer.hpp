// deviant/train/trainer.hpp — the preference-training loop as a library call.
//
//   Trainer<Model> trainer(model, trainable_parameters, train_pairs, train_reference, options);
//   trainer.set_eval(eval_pairs, eval_reference);
//   TrainingHistory h = trainer.train();
//
// One optimizer step = `grad_accumulation` micro-batches of `batch_size` pairs; each micro-batch
// loss is scaled by its share of the step's pairs, so the update equals one batch that many
// times larger. Reference log-probs are precomputed per pair (the reference is frozen, so this is
// exact and each step needs one forward instead of two). A non-finite loss or gradient norm stops
// the step before the optimizer touches the weights: abort (default) or skip. Metrics use TRL's
// names plus grad_norm, learning_rate and tokens_per_second, one JSON line per step.
#pragma once
#include <filesystem>
#include <fstream>
#include <functional>
#include <numeric>
#include <random>

#include <nlohmann/json.hpp>

#include "deviant/core/content_hash.hpp"
#include "deviant/data/pairs.hpp"
#include "deviant/objectives/registry.hpp"
#include "deviant/optim/adamw.hpp"
#include "deviant/optim/clip.hpp"
#include "deviant/optim/schedule.hpp"
#include "deviant/train/checkpoint.hpp"
#include "deviant/train/pair_rows.hpp"
#include "deviant/train/progress.hpp"

namespace deviant {

struct TrainingOptions {
    std::string objective = "dpo";
    ObjectiveOptions objective_options;
    double learning_rate = 5e-6;
    optim::LrSchedule::Kind schedule = optim::LrSchedule::Kind::linear;
    std::int64_t warmup_steps = 0;
    std::int64_t epochs = 1;
    std::int64_t max_steps = 0;           // 0 = run every epoch
    std::int64_t batch_size = 2;          // pairs per micro-batch
    std::int64_t grad_accumulation = 1;   // micro-batches per optimizer step
    double max_grad_norm = 1.0;           // 0 = no clipping
    optim::AdamWOptions adamw;
    std::int64_t eval_every = 0;          // steps; 0 = only at the end (when eval pairs exist)
    std::int64_t pack_tokens = 0;         // > 0: pack sequences into rows of this many tokens
    bool skip_nonfinite = false;          // false: abort on a NaN/inf loss or gradient
    bool shuffle = true;
    std::uint64_t seed = 0;
    bool progress = true;
    DType dtype = DType::f32;
    std::filesystem::path metrics_file;   // JSON Lines, one object per step; empty = none
};

// Frozen reference log-probs per pair (summed over completion tokens); empty when not needed.
struct ReferenceLogps {
    std::vector<double> chosen, rejected;
    bool empty() const { return chosen.empty(); }
};

struct TrainingHistory {
    std::vector<nlohmann::json> steps;  // one object per optimizer step
    std::vector<nlohmann::json> evals;
    std::int64_t skipped_steps = 0;
};

// Reference log-probs of `pairs` under `reference` (no graph recorded), in batches.
template <class Model>
ReferenceLogps compute_reference_logps(const Model& reference, std::span<const data::TokenPair> pairs, std::int64_t batch_size,
                                       DType dtype = DType::f32) {
    ReferenceLogps out;
    for (std::size_t s = 0; s < pairs.size(); s += std::size_t(batch_size)) {
        auto chunk = pairs.subspan(s, std::min<std::size_t>(std::size_t(batch_size), pairs.size() - s));
        std::pair<Tensor, Tensor> logps = reference_logps(reference, make_rows(chunk, dtype));
        for (double v : logps.first.to_vector<double>()) out.chosen.push_back(v);
        for (double v : logps.second.to_vector<double>()) out.rejected.push_back(v);
    }
    return out;
}

template <class Model>
class Trainer {
public:
    Trainer(Model& model, std::vector<Parameter*> trainable, std::vector<data::TokenPair> train, ReferenceLogps train_ref,
            TrainingOptions options)
        : model_(model), params_(std::move(trainable)), train_(std::move(train)), train_ref_(std::move(train_ref)),
          opt_(std::move(options)), objective_(make_objective(opt_.objective, opt_.objective_options)), adamw_(params_, opt_.adamw) {
        DEVIANT_REQUIRE(!train_.empty(), "no training pairs");
        DEVIANT_REQUIRE(opt_.batch_size > 0 && opt_.grad_accumulation > 0, "batch size and gradient accumulation must be positive");
        DEVIANT_REQUIRE(!objective_.needs_reference || train_ref_.chosen.size() == train_.size(),
                        "objective {} needs reference log-probs for all {} training pairs, got {}", opt_.objective, train_.size(),
                        train_ref_.chosen.size());
        schedule_ = optim::LrSchedule{opt_.schedule, opt_.learning_rate, opt_.warmup_steps, total_steps()};
    }

    void set_eval(std::vector<data::TokenPair> pairs, ReferenceLogps ref) {
        DEVIANT_REQUIRE(!objective_.needs_reference || ref.chosen.size() == pairs.size(),
                        "objective {} needs reference log-probs for all {} evaluation pairs", opt_.objective, pairs.size());
        eval_ = std::move(pairs);
        eval_ref_ = std::move(ref);
    }

    std::int64_t steps_per_epoch() const {
        std::int64_t per_step = opt_.batch_size * opt_.grad_accumulation;
        return (std::int64_t(train_.size()) + per_step - 1) / per_step;
    }
    std::int64_t total_steps() const { return opt_.max_steps > 0 ? opt_.max_steps : steps_per_epoch() * opt_.epochs; }
    std::int64_t step() const { return step_; }
    optim::AdamW& optimizer() { return adamw_; }
    const TrainingOptions& options() const { return opt_; }

    // A checkpoint of where training stands: `weights` (full parameters under checkpoint names,
    // or LoRA adapters), the optimizer state, the step and the data position.
    train::TrainingCheckpoint checkpoint(train::NamedTensors weights, const nlohmann::json& last_metrics = {}) const {
        train::TrainingCheckpoint c;
        c.step = step_;
        c.epoch = epoch_;
        c.data_position = offset_;
        c.set_rng(std::mt19937_64(data::derive_seed(opt_.seed, std::uint64_t(epoch_))));
        c.model = std::move(weights);
        c.optimizer = adamw_.state_tensors();
        c.extra = {{"seed", opt_.seed}, {"total_steps", total_steps()}};
        const nlohmann::json fingerprint = run_fingerprint();  // (items() of a temporary would dangle)
        for (auto& [k, v] : fingerprint.items()) c.extra[k] = v;
        for (auto& [k, v] : last_metrics.items())
            if (v.is_number()) c.metrics[k] = v.template get<double>();
        return c;
    }
    // Continues from a checkpoint: copies its weights into `params` (by name, shapes checked),
    // restores the optimizer state and the data position. The next train() call resumes there.
    // Refuses a checkpoint of a different run: another seed, objective (or its settings), data
    // (token ids, weights, order), batch geometry or set of trainable tensors.
    void resume(const train::TrainingCheckpoint& c) {
        DEVIANT_REQUIRE(c.extra.value("seed", opt_.seed) == opt_.seed, "{}: checkpoint was trained with seed {}, this run uses {}",
                        c.dir.string(), c.extra.value("seed", opt_.seed), opt_.seed);
        const nlohmann::json now = run_fingerprint();
        for (auto& [k, v] : now.items()) {
            if (!c.extra.contains(k)) continue;  // written before this field existed
            DEVIANT_REQUIRE(c.extra[k] == v, "{}: checkpoint belongs to another run: its {} is {}, this run's is {} (use another --output or --resume none)",
                            c.dir.string(), k, c.extra[k].dump(), v.dump());
        }
        std::size_t matched = 0;
        for (const auto& [name, tensor] : c.model) {
            auto it = std::find_if(params_.begin(), params_.end(), [&](Parameter* p) { return p->name == name; });
            DEVIANT_REQUIRE(it != params_.end(), "{}: tensor {} is not a trainable parameter of this model", c.dir.string(), name);
            DEVIANT_REQUIRE(tensor.shape() == (*it)->value.shape(), "{}: tensor {} has shape {}, the model has {}", c.dir.string(), name,
                            tensor.shape().str(), (*it)->value.shape().str());
            (*it)->value.copy_from(tensor);
            ++matched;
        }
        DEVIANT_REQUIRE(matched == params_.size(), "{}: holds {} of the {} trainable parameters", c.dir.string(), matched, params_.size());
        adamw_.load_state(c.optimizer, (c.dir / "optimizer.safetensors").string());
        step_ = c.step;
        epoch_ = c.epoch;
        offset_ = c.data_position;
        order_.clear();
    }
    // What identifies this run for resuming: the objective and its settings, the training data
    // (content hash of token ids, weights and order), the batch geometry and the trainable tensors.
    nlohmann::json run_fingerprint() const {
        ContentHash data;
        data.add_string("deviant.training_pairs.v1");
        data::hash_token_pairs(data, train_, /*with_weights=*/true);
        ContentHash model;
        for (const Parameter* p : params_) {
            model.add_string(p->name);
            for (std::int64_t d : p->value.shape()) model.add(d);
        }
        const ObjectiveOptions& oo = opt_.objective_options;
        return {{"objective", opt_.objective},
                {"objective_settings", fmt::format("beta={} lambda={} gamma={} label_smoothing={} nll_alpha={} orpo_prompt_nll={} ipo_average={} "
                                                   "dorpo_placement={}",
                                                   oo.beta ? *oo.beta : -1.0, oo.lambda, oo.gamma, oo.label_smoothing, oo.nll_alpha,
                                                   oo.orpo_nll_includes_prompt, oo.ipo_average, int(oo.dorpo_placement))},
                {"data_hash", ContentHash::hex(data.digest())},
                {"pairs", train_.size()},
                {"batch_size", opt_.batch_size},
                {"grad_accumulation", opt_.grad_accumulation},
                {"pack_tokens", opt_.pack_tokens},
                {"trainable_hash", ContentHash::hex(model.digest())}};
    }

    // The trainable parameters under their names (what a full-model checkpoint saves).
    train::NamedTensors trainable_tensors() const {
        train::NamedTensors out;
        for (Parameter* p : params_) out.emplace_back(p->name, p->value);
        return out;
    }

    // Runs optimizer steps until total_steps(); `after_step(step, metrics)` runs after each one
    // (checkpointing hooks in here).
    TrainingHistory train(const std::function<void(std::int64_t, const nlohmann::json&)>& after_step = {}) {
        TrainingHistory history;
        std::ofstream metrics_out;
        if (!opt_.metrics_file.empty()) {
            metrics_out.open(opt_.metrics_file, std::ios::app);
            DEVIANT_REQUIRE(metrics_out.is_open(), "{}: cannot open the metrics file for writing", opt_.metrics_file.string());
        }
        ProgressBar bar(opt_.objective, total_steps(), opt_.progress);
        while (step_ < total_steps()) {
            nlohmann::json m = train_step();
            if (m.contains("skipped")) ++history.skipped_steps;
            history.steps.push_back(m);
            if (metrics_out.is_open()) metrics_out << m.dump() << "\n" << std::flush;
            bool eval_now = !eval_.empty() && ((opt_.eval_every > 0 && step_ % opt_.eval_every == 0) || step_ == total_steps());
            if (eval_now) {
                nlohmann::json e = evaluate();
                e["step"] = step_;
                history.evals.push_back(e);
                if (metrics_out.is_open()) metrics_out << e.dump() << "\n" << std::flush;
            }
            bar.update(step_, m.value("tokens", std::int64_t(0)), {{"loss", m.value("loss", NAN)}});
            if (after_step) after_step(step_, m);
        }
        bar.finish();
        return history;
    }

    // One optimizer step over the next batch_size * grad_accumulation pairs.
    nlohmann::json train_step() {
        auto start = std::chrono::steady_clock::now();
        std::vector<std::size_t> idx = next_indices(opt_.batch_size * opt_.grad_accumulation);
        double lr = schedule_.at(step_);
        adamw_.zero_grad();
        std::vector<std::pair<std::string, double>> sums;
        std::int64_t tokens = 0;
        bool finite = true;
        for (std::size_t s = 0; s < idx.size(); s += std::size_t(opt_.batch_size)) {
            std::vector<std::size_t> micro(idx.begin() + std::ptrdiff_t(s), idx.begin() + std::ptrdiff_t(std::min(idx.size(), s + std::size_t(opt_.batch_size))));
            double share = double(micro.size()) / double(idx.size());
            Tape tape;
            auto [lp, n_tokens] = batch_logps(tape, train_, train_ref_, micro);
            tokens += n_tokens;
            ObjectiveResult r = objective_(lp);
            double loss = r.loss.value().item();
            for (auto& [k, v] : r.metrics.items()) accumulate(sums, k, v * share);
            if (!std::isfinite(loss)) {
                finite = false;
                break;
            }
            tape.backward(scale(r.loss, share));
        }
        nlohmann::json m{{"step", step_ + 1}, {"epoch", double(step_ + 1) / double(steps_per_epoch())}};
        for (auto& [k, v] : sums) m[k] = v;
        double norm = finite ? (opt_.max_grad_norm > 0 ? optim::clip_grad_norm(params_, opt_.max_grad_norm) : optim::global_grad_norm(params_)) : NAN;
        if (!finite || !std::isfinite(norm)) {
            adamw_.zero_grad();
            std::string what = !finite ? fmt::format("loss is {}", m.value("loss", NAN)) : fmt::format("gradient norm is {}", norm);
            DEVIANT_REQUIRE(opt_.skip_nonfinite, "step {}: {} (non-finite); stopped before the optimizer step, weights untouched", step_ + 1, what);
            m["skipped"] = what;
        } else {
            adamw_.step(lr);
        }
        ++step_;
        double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        m["grad_norm"] = norm;
        m["learning_rate"] = lr;
        m["tokens"] = tokens;
        m["tokens_per_second"] = secs > 0 ? double(tokens) / secs : 0.0;
        return m;
    }

    // Objective and metrics on the evaluation pairs, no graph recorded; keys prefixed "eval/".
    // Besides the objective's metrics: ranking_accuracy (share of pairs whose chosen response has
    // the higher per-token log-prob under the policy) and chosen_nll (mean per-token NLL of chosen).
    nlohmann::json evaluate() {
        DEVIANT_REQUIRE(!eval_.empty(), "no evaluation pairs");
        NoGradGuard no_grad;
        std::vector<std::pair<std::string, double>> sums;
        for (std::size_t s = 0; s < eval_.size(); s += std::size_t(opt_.batch_size)) {
            std::vector<std::size_t> micro;
            for (std::size_t i = s; i < std::min(eval_.size(), s + std::size_t(opt_.batch_size)); ++i) micro.push_back(i);
            Tape tape;
            auto [lp, n_tokens] = batch_logps(tape, eval_, eval_ref_, micro);
            ObjectiveResult r = objective_(lp);
            double share = double(micro.size()) / double(eval_.size());
            for (auto& [k, v] : r.metrics.items()) accumulate(sums, k, v * share);
            // Reference-free quality: does the policy itself rank the chosen response higher
            // (per-token log-prob), and how well does it fit held-out chosen responses.
            auto c = lp.chosen_logp.value().template to_vector<double>(), rj = lp.rejected_logp.value().template to_vector<double>();
            auto ct = lp.chosen_tokens.template to_vector<double>(), rt = lp.rejected_tokens.template to_vector<double>();
            double ranked = 0, nll = 0;
            for (std::size_t i = 0; i < c.size(); ++i) {
                ranked += c[i] / ct[i] > rj[i] / rt[i] ? 1.0 : 0.0;
                nll -= c[i] / ct[i];
            }
            accumulate(sums, "ranking_accuracy", ranked / double(eval_.size()));
            accumulate(sums, "chosen_nll", nll / double(eval_.size()));
        }
        nlohmann::json e = nlohmann::json::object();
        for (auto& [k, v] : sums) e["eval/" + k] = v;
        return e;
    }

private:
    static void accumulate(std::vector<std::pair<std::string, double>>& sums, const std::string& k, double v) {
        for (auto& [name, s] : sums)
            if (name == k) {
                s += v;
                return;
            }
        sums.emplace_back(k, v);
    }

    // Log-probs of the pairs `idx` of `set` on the tape, with reference log-probs attached.
    std::pair<PairLogps, std::int64_t> batch_logps(Tape& tape, const std::vector<data::TokenPair>& set, const ReferenceLogps& ref,
                                                   const std::vector<std::size_t>& idx) {
        std::vector<data::TokenPair> pairs;
        std::vector<double> rc, rr;
        std::int64_t tokens = 0;
        for (std::size_t i : idx) {
            pairs.push_back(set[i]);
            tokens += std::int64_t(2 * set[i].prompt.size() + set[i].chosen.size() + set[i].rejected.size());
            if (!ref.empty()) rc.push_back(ref.chosen[i]), rr.push_back(ref.rejected[i]);
        }
        SequenceRows rows = opt_.pack_tokens > 0 ? make_packed_rows(pairs, opt_.pack_tokens, opt_.dtype) : make_rows(pairs, opt_.dtype);
        PairLogps lp = pair_logps(tape, model_, rows, opt_.objective_options.orpo_nll_includes_prompt);
        if (!ref.empty()) {
            std::int64_t n = std::int64_t(idx.size());
            lp.ref_chosen_logp = Tensor::from(rc, {n}, compute_dtype(opt_.dtype));
            lp.ref_rejected_logp = Tensor::from(rr, {n}, compute_dtype(opt_.dtype));
        }
        return {lp, tokens};
    }

    // The next `count` pair indices in the shuffled order, crossing epoch boundaries.
    std::vector<std::size_t> next_indices(std::int64_t count) {
        std::vector<std::size_t> out;
        while (std::int64_t(out.size()) < count) {
            if (order_.empty()) order_ = epoch_order(epoch_);
            if (offset_ >= std::int64_t(order_.size())) {
                ++epoch_;
                offset_ = 0;
                order_ = epoch_order(epoch_);
                if (!out.empty()) break;  // a step never mixes two epochs
            }
            out.push_back(order_[std::size_t(offset_++)]);
        }
        return out;
    }
    std::vector<std::size_t> epoch_order(std::int64_t epoch) const {
        std::vector<std::size_t> order(train_.size());
        std::iota(order.begin(), order.end(), 0);
        if (opt_.shuffle) {
            std::mt19937_64 rng(data::derive_seed(opt_.seed, std::uint64_t(epoch)));
            data::shuffle(order, rng);
        }
        return order;
    }

    Model& model_;
    std::vector<Parameter*> params_;
    std::vector<data::TokenPair> train_, eval_;
    ReferenceLogps train_ref_, eval_ref_;
    TrainingOptions opt_;
    AnyObjective objective_;
    optim::AdamW adamw_;
    optim::LrSchedule schedule_;
    std::int64_t step_ = 0, epoch_ = 0, offset_ = 0;
    std::vector<std::size_t> order_;
};

}  // namespace deviant
