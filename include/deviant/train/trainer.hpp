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
//
// Data parallel (TrainingOptions::communicator, dist/): with N ranks a step covers
// batch_size * grad_accumulation * N pairs; every rank draws the same global batch from the same
// shuffled order and takes its own slice, so the data position, and with it resuming, is global.
// Each micro-batch loss is scaled by its share of the *global* batch, so summing the ranks'
// gradients gives the one-process gradient of that batch. Gradients are all-reduced in one flat
// bucket per dtype (or reduce-scattered with zero1); the norm, clipping, the skip decision,
// metrics and evaluation are global; only rank 0 writes metrics and shows progress. zero1 shards
// the AdamW state (and bf16 master weights) by parameter over the ranks: each rank updates its
// own parameters and the new values are all-gathered; checkpoint() gathers the full state, so a
// checkpoint resumes at any rank count (with the same global batch).
#pragma once
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <set>

#include <nlohmann/json.hpp>

#include "deviant/core/content_hash.hpp"
#include "deviant/data/pairs.hpp"
#include "deviant/dist/communicator.hpp"
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
    std::filesystem::path metrics_file;   // JSON Lines, one object per step; empty = none (rank 0 writes)
    std::shared_ptr<dist::Communicator> communicator;  // the job's ranks; null = one process (see dist/world.hpp)
    bool zero1 = false;                   // shard AdamW state over the ranks (ZeRO stage 1)
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

// Reference log-probs of `pairs` under `reference` (no graph recorded), in batches. With a
// communicator of several ranks each rank computes a contiguous slice and the slices are
// gathered, so every rank returns all of them.
template <class Model>
ReferenceLogps compute_reference_logps(const Model& reference, std::span<const data::TokenPair> pairs, std::int64_t batch_size,
                                       DType dtype = DType::f32, dist::Communicator* comm = nullptr) {
    const std::size_t n = pairs.size(), W = comm ? std::size_t(comm->size()) : 1, R = comm ? std::size_t(comm->rank()) : 0;
    const std::size_t lo = n * R / W, hi = n * (R + 1) / W;
    std::vector<double> both(2 * n, 0.0);  // chosen then rejected; other ranks' slices stay 0 until the sum
    for (std::size_t s = lo; s < hi; s += std::size_t(batch_size)) {
        auto chunk = pairs.subspan(s, std::min<std::size_t>(std::size_t(batch_size), hi - s));
        std::pair<Tensor, Tensor> logps = reference_logps(reference, make_rows(chunk, dtype));
        std::size_t i = s;
        for (double v : logps.first.to_vector<double>()) both[i++] = v;
        i = s;
        for (double v : logps.second.to_vector<double>()) both[n + i++] = v;
    }
    if (W > 1) comm->all_reduce_sum(std::span<double>(both));
    ReferenceLogps out;
    out.chosen.assign(both.begin(), both.begin() + std::ptrdiff_t(n));
    out.rejected.assign(both.begin() + std::ptrdiff_t(n), both.end());
    return out;
}

template <class Model>
class Trainer {
public:
    Trainer(Model& model, std::vector<Parameter*> trainable, std::vector<data::TokenPair> train, ReferenceLogps train_ref,
            TrainingOptions options)
        : model_(model), params_(std::move(trainable)), train_(std::move(train)), train_ref_(std::move(train_ref)),
          opt_(std::move(options)), comm_(opt_.communicator ? opt_.communicator : dist::single_process()),
          shard_(make_sharding(params_, *comm_, opt_.zero1)), objective_(make_objective(opt_.objective, opt_.objective_options)),
          adamw_(shard_.active ? shard_.mine : params_, opt_.adamw) {
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

    // Pairs per optimizer step over all ranks.
    std::int64_t global_batch() const { return opt_.batch_size * opt_.grad_accumulation * comm_->size(); }
    std::int64_t steps_per_epoch() const {
        std::int64_t per_step = global_batch();
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
        c.optimizer = full_optimizer_state();
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
            auto it = std::find_if(params_.begin(), params_.end(), [&name = name](Parameter* p) { return p->name == name; });  // a named capture: clang < 16 cannot capture a binding
            DEVIANT_REQUIRE(it != params_.end(), "{}: tensor {} is not a trainable parameter of this model", c.dir.string(), name);
            DEVIANT_REQUIRE(tensor.shape() == (*it)->value.shape(), "{}: tensor {} has shape {}, the model has {}", c.dir.string(), name,
                            tensor.shape().str(), (*it)->value.shape().str());
            (*it)->value.copy_from(tensor);
            ++matched;
        }
        DEVIANT_REQUIRE(matched == params_.size(), "{}: holds {} of the {} trainable parameters", c.dir.string(), matched, params_.size());
        if (shard_.active) {  // the full state: keep this rank's parameters' part
            std::set<std::string> mine{"step"};
            for (const Parameter* p : shard_.mine)
                for (const char* part : {".exp_avg", ".exp_avg_sq", ".step", ".master"}) mine.insert(p->name + part);
            train::NamedTensors own;
            for (const auto& [name, t] : c.optimizer)
                if (mine.count(name)) own.emplace_back(name, t);
            adamw_.load_state(own, (c.dir / "optimizer.safetensors").string());
        } else {
            adamw_.load_state(c.optimizer, (c.dir / "optimizer.safetensors").string());
        }
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
                {"global_batch", global_batch()},  // per step over all ranks: any rank count resumes
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
        if (!opt_.metrics_file.empty() && comm_->is_root()) {
            metrics_out.open(opt_.metrics_file, std::ios::app);
            DEVIANT_REQUIRE(metrics_out.is_open(), "{}: cannot open the metrics file for writing", opt_.metrics_file.string());
        }
        ProgressBar bar(opt_.objective, total_steps(), opt_.progress && comm_->is_root());
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

    // One optimizer step over the next global_batch() pairs (this rank's slice of them).
    nlohmann::json train_step() {
        auto start = std::chrono::steady_clock::now();
        std::vector<std::size_t> idx = next_indices(global_batch());
        double lr = schedule_.at(step_);
        zero_all_grads();
        std::vector<std::pair<std::string, double>> sums;
        std::int64_t tokens = 0;
        bool finite = true;
        // this rank's slice; rounded up, so that rank 0 has pairs whenever the step has any (the
        // last step of an epoch may hold fewer pairs than ranks)
        const std::size_t W = std::size_t(comm_->size()), R = std::size_t(comm_->rank());
        const std::size_t lo = (idx.size() * R + W - 1) / W, hi = (idx.size() * (R + 1) + W - 1) / W;
        for (std::size_t s = lo; s < hi; s += std::size_t(opt_.batch_size)) {
            std::vector<std::size_t> micro(idx.begin() + std::ptrdiff_t(s), idx.begin() + std::ptrdiff_t(std::min(hi, s + std::size_t(opt_.batch_size))));
            double share = double(micro.size()) / double(idx.size());
            Tape tape;
            auto [lp, n_tokens] = batch_logps(tape, train_, train_ref_, micro, !objective_.uses_rejected);
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
        if (W > 1) {  // the step's numbers over all ranks: metrics, tokens, whether every loss was finite
            sums.emplace_back("\x01tokens", double(tokens));
            sums.emplace_back("\x01nonfinite", finite ? 0.0 : 1.0);
            reduce_metrics(sums);
            tokens = std::int64_t(std::llround(take(sums, "\x01tokens")));
            finite = take(sums, "\x01nonfinite") == 0.0;
        }
        nlohmann::json m{{"step", step_ + 1}, {"epoch", double(step_ + 1) / double(steps_per_epoch())}};
        for (auto& [k, v] : sums) m[k] = v;
        double norm = NAN;
        if (finite) {
            if (W > 1) reduce_gradients();
            norm = clip_or_measure();
        }
        if (!finite || !std::isfinite(norm)) {
            zero_all_grads();
            std::string what = !finite ? fmt::format("loss is {}", m.value("loss", NAN)) : fmt::format("gradient norm is {}", norm);
            DEVIANT_REQUIRE(opt_.skip_nonfinite, "step {}: {} (non-finite); stopped before the optimizer step, weights untouched", step_ + 1, what);
            m["skipped"] = what;
        } else {
            adamw_.step(lr);
            if (shard_.active) gather_parameters();
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
        const std::size_t W = std::size_t(comm_->size()), R = std::size_t(comm_->rank());
        for (std::size_t s = 0; s < eval_.size(); s += std::size_t(opt_.batch_size)) {
            if ((s / std::size_t(opt_.batch_size)) % W != R) continue;  // micro-batches dealt round the ranks
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
        if (W > 1) reduce_metrics(sums);
        nlohmann::json e = nlohmann::json::object();
        for (auto& [k, v] : sums) e["eval/" + k] = v;
        return e;
    }

    const dist::Communicator& communicator() const { return *comm_; }

private:
    // ZeRO-1 ownership: each trainable parameter belongs to one rank (largest first, to the least
    // loaded rank), and has a place in a flat buffer of size() equal ranges, range r holding rank
    // r's parameters.
    struct Sharding {
        bool active = false;
        std::vector<int> owner;             // per params_ index (-1: not trainable)
        std::vector<std::int64_t> offset;   // per params_ index, in the flat buffer
        std::int64_t range = 0;             // elements per rank (padded to the largest share)
        std::vector<Parameter*> mine;       // this rank's parameters, in params_ order
    };
    static Sharding make_sharding(const std::vector<Parameter*>& params, const dist::Communicator& comm, bool zero1) {
        Sharding sh;
        const int W = comm.size();
        if (!zero1 || W == 1) return sh;
        sh.active = true;
        sh.owner.assign(params.size(), -1);
        sh.offset.assign(params.size(), 0);
        std::vector<std::size_t> order;
        for (std::size_t i = 0; i < params.size(); ++i)
            if (params[i]->trainable) order.push_back(i);
        std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return params[a]->value.numel() > params[b]->value.numel(); });
        std::vector<std::int64_t> load(std::size_t(W), 0);
        for (std::size_t i : order) {
            const int r = int(std::min_element(load.begin(), load.end()) - load.begin());
            sh.owner[i] = r;
            load[std::size_t(r)] += params[i]->value.numel();
        }
        sh.range = *std::max_element(load.begin(), load.end());
        std::vector<std::int64_t> fill(std::size_t(W), 0);
        for (std::size_t i = 0; i < params.size(); ++i) {
            if (sh.owner[i] < 0) continue;
            const auto r = std::size_t(sh.owner[i]);
            sh.offset[i] = std::int64_t(r) * sh.range + fill[r];
            fill[r] += params[i]->value.numel();
            if (sh.owner[i] == comm.rank()) sh.mine.push_back(params[i]);
        }
        return sh;
    }

    // Gradients are dropped, not zeroed: backward adopts the first gradient of each parameter, so
    // the forward pass and the start of backward run without last step's gradient buffers.
    void zero_all_grads() {
        for (Parameter* p : params_) p->release_grad();
    }

    // Sums named numbers over the ranks. Names follow rank 0's list (rank 0 always has pairs);
    // a rank without a name contributes 0.
    void reduce_metrics(std::vector<std::pair<std::string, double>>& sums) {
        std::string keys;
        for (const auto& [k, v] : sums) keys += k + '\n';
        dist::broadcast_string(*comm_, keys, 0);
        std::vector<std::string> names(1);
        for (char c : keys) {
            if (c == '\n') names.emplace_back();
            else names.back() += c;
        }
        names.pop_back();
        std::vector<double> values(names.size(), 0.0);
        for (std::size_t i = 0; i < names.size(); ++i)
            for (const auto& [k, v] : sums)
                if (k == names[i]) values[i] = v;
        comm_->all_reduce_sum(std::span<double>(values));
        sums.clear();
        for (std::size_t i = 0; i < names.size(); ++i) sums.emplace_back(names[i], values[i]);
    }
    static double take(std::vector<std::pair<std::string, double>>& sums, const std::string& k) {
        for (auto it = sums.begin(); it != sums.end(); ++it)
            if (it->first == k) {
                double v = it->second;
                sums.erase(it);
                return v;
            }
        return 0.0;
    }

    // The gradient dtype of the flat buffers: float64 for float64 parameters, float32 otherwise.
    DType flat_dtype() const {
        for (const Parameter* p : params_)
            if (p->trainable && p->value.dtype() == DType::f64) return DType::f64;
        return DType::f32;
    }

    // Sums every rank's gradients: one flat buffer, all-reduced (or, with zero1, reduce-scattered
    // so that each rank holds the sum for its own parameters). A parameter no rank has a gradient
    // for stays without one (AdamW skips it, as in one process); one that some rank lacks gets zeros.
    void reduce_gradients() {
        std::vector<double> has(params_.size(), 0.0);
        for (std::size_t i = 0; i < params_.size(); ++i) has[i] = params_[i]->trainable && params_[i]->grad.defined() ? 1.0 : 0.0;
        comm_->all_reduce_sum(std::span<double>(has));
        const Device dev = params_.empty() ? Device::cpu : params_.front()->value.device();
        std::vector<std::int64_t> offset(params_.size(), 0);
        std::int64_t total = 0;
        for (std::size_t i = 0; i < params_.size(); ++i) {
            if (!params_[i]->trainable) continue;
            offset[i] = shard_.active ? shard_.offset[i] : total;
            total += params_[i]->value.numel();
        }
        const std::int64_t size = shard_.active ? shard_.range * comm_->size() : total;
        Tensor flat = Tensor::zeros({std::max<std::int64_t>(size, 1)}, flat_dtype(), dev);
        if (size == 0) return;
        for (std::size_t i = 0; i < params_.size(); ++i) {
            Parameter* p = params_[i];
            if (has[i] == 0.0 || !p->grad.defined()) continue;
            flat.narrow(0, offset[i], p->value.numel()).copy_from(p->grad.contiguous().view({p->value.numel()}));
        }
        if (shard_.active) comm_->reduce_scatter_sum(flat);
        else comm_->all_reduce_sum(flat);
        for (std::size_t i = 0; i < params_.size(); ++i) {
            Parameter* p = params_[i];
            if (has[i] == 0.0) continue;
            if (shard_.active && shard_.owner[i] != comm_->rank()) continue;  // another rank's sum
            if (!p->grad.defined()) p->grad = Tensor::zeros(p->value.shape(), p->grad_dtype(), p->value.device());
            p->grad.copy_from(flat.narrow(0, offset[i], p->value.numel()).view(p->value.shape()));
        }
    }

    // The global gradient norm (before clipping), clipping to max_grad_norm when set. With zero1
    // each rank holds the summed gradients of its own parameters only: their squares are summed
    // over the ranks.
    double clip_or_measure() {
        if (!shard_.active) return opt_.max_grad_norm > 0 ? optim::clip_grad_norm(params_, opt_.max_grad_norm) : optim::global_grad_norm(params_);
        std::vector<Parameter*> mine;
        for (Parameter* p : shard_.mine)
            if (p->grad.defined()) mine.push_back(p);
        const double norm = std::sqrt(comm_->sum(mine.empty() ? 0.0 : optim::detail::gradient_squares(mine)));
        if (opt_.max_grad_norm > 0 && std::isfinite(norm) && norm > opt_.max_grad_norm) {
            const double factor = opt_.max_grad_norm / (norm + 1e-6);
            for (Parameter* p : mine) optim::detail::scale_in_place(p->grad, factor);
        }
        return norm;
    }

    // zero1: every rank updated its own parameters; all-gather the new values.
    void gather_parameters() {
        if (params_.empty()) return;
        const DType dt = params_.front()->value.dtype();
        for (const Parameter* p : params_)
            DEVIANT_REQUIRE(!p->trainable || p->value.dtype() == dt, "zero1: trainable parameters of one dtype expected, {} is {} and {} is {}",
                            params_.front()->name, dtype_name(dt), p->name, dtype_name(p->value.dtype()));
        Tensor flat = Tensor::zeros({shard_.range * comm_->size()}, dt, params_.front()->value.device());
        for (std::size_t i = 0; i < params_.size(); ++i)
            if (shard_.owner[i] == comm_->rank())
                flat.narrow(0, shard_.offset[i], params_[i]->value.numel()).copy_from(params_[i]->value.contiguous().view({params_[i]->value.numel()}));
        comm_->all_gather(flat);
        for (std::size_t i = 0; i < params_.size(); ++i)
            if (shard_.owner[i] >= 0 && shard_.owner[i] != comm_->rank())
                params_[i]->value.copy_from(flat.narrow(0, shard_.offset[i], params_[i]->value.numel()).view(params_[i]->value.shape()));
    }

    // The optimizer state of every trainable parameter (with zero1, each parameter's state is
    // broadcast from its owner: every rank must call this, rank 0 writes it).
    train::NamedTensors full_optimizer_state() const {
        if (!shard_.active) return adamw_.state_tensors();
        std::map<std::string, Tensor> own;
        for (auto& [name, t] : adamw_.state_tensors()) own.emplace(name, t);
        train::NamedTensors out;
        for (std::size_t i = 0; i < params_.size(); ++i) {
            const Parameter* p = params_[i];
            if (shard_.owner[i] < 0) continue;
            const bool master = p->value.dtype() == DType::bf16 && opt_.adamw.master_weights;
            const DType sd = optim::adamw_state_dtype(p->value.dtype());
            std::vector<std::pair<std::string, Tensor>> parts{
                {p->name + ".exp_avg", Tensor::zeros(p->value.shape(), sd, p->value.device())},
                {p->name + ".exp_avg_sq", Tensor::zeros(p->value.shape(), sd, p->value.device())},
                {p->name + ".step", Tensor::zeros({1}, DType::i64)}};
            if (master) parts.emplace_back(p->name + ".master", Tensor::zeros(p->value.shape(), DType::f32, p->value.device()));
            for (auto& [name, t] : parts) {
                if (shard_.owner[i] == comm_->rank()) t.copy_from(own.at(name));
                comm_->broadcast(t, shard_.owner[i]);
                out.emplace_back(name, t);
            }
        }
        out.emplace_back("step", own.at("step"));
        return out;
    }

    static void accumulate(std::vector<std::pair<std::string, double>>& sums, const std::string& k, double v) {
        for (auto& [name, s] : sums)
            if (name == k) {
                s += v;
                return;
            }
        sums.emplace_back(k, v);
    }

    // Log-probs of the pairs `idx` of `set` on the tape, with reference log-probs attached.
    // chosen_only: lay out the chosen sequences alone (training an objective that never reads the
    // rejected ones); evaluation keeps both for its ranking accuracy.
    std::pair<PairLogps, std::int64_t> batch_logps(Tape& tape, const std::vector<data::TokenPair>& set, const ReferenceLogps& ref,
                                                   const std::vector<std::size_t>& idx, bool chosen_only = false) {
        std::vector<data::TokenPair> pairs;
        std::vector<double> rc, rr;
        std::int64_t tokens = 0;
        for (std::size_t i : idx) {
            pairs.push_back(set[i]);
            tokens += chosen_only ? std::int64_t(set[i].prompt.size() + set[i].chosen.size())
                                  : std::int64_t(2 * set[i].prompt.size() + set[i].chosen.size() + set[i].rejected.size());
            if (!ref.empty()) rc.push_back(ref.chosen[i]), rr.push_back(ref.rejected[i]);
        }
        SequenceRows rows = opt_.pack_tokens > 0 ? make_packed_rows(pairs, opt_.pack_tokens, opt_.dtype, 0, chosen_only)
                                                 : make_rows(pairs, opt_.dtype, 0, chosen_only);
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
    std::shared_ptr<dist::Communicator> comm_;
    Sharding shard_;
    AnyObjective objective_;
    optim::AdamW adamw_;
    optim::LrSchedule schedule_;
    std::int64_t step_ = 0, epoch_ = 0, offset_ = 0;
    std::vector<std::size_t> order_;
};

}  // namespace deviant
