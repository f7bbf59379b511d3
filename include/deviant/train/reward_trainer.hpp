// deviant/train/reward_trainer.hpp — training and running the reward model that judges sample
// quality (models/reward_model.hpp).
//
//   ScoreTransform        the evaluation's target: upvotes shifted to >= 1, log(x + 1) applied
//                         `logs` times, min-max scaled to [-1, 1] over the training responses
//   RewardData            token sequences (prompt + completion, EOS-terminated) with targets
//                         (regression) and/or index pairs (chosen, rejected) (Bradley-Terry)
//   RewardTrainer<Model>  AdamW steps on the L1 loss |r - y| (the evaluation's choice) or on
//                         -log sigmoid(r_chosen - r_rejected); evaluate() gives MAE and the
//                         within-prompt pair accuracy
//   score_sequences       rewards of many sequences, batched by length, nothing recorded
#pragma once
#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

#include <nlohmann/json.hpp>

#include "deviant/data/pairs.hpp"
#include "deviant/models/reward_model.hpp"
#include "deviant/optim/adamw.hpp"
#include "deviant/optim/clip.hpp"
#include "deviant/optim/schedule.hpp"
#include "deviant/train/progress.hpp"

namespace deviant {

// y = minmax_[-1, 1]( log1p^logs( s + shift ) ), shift = 1 - min(train scores); fitted on the
// training scores, then applied unchanged to held-out ones (which may fall outside [-1, 1]).
struct ScoreTransform {
    double shift = 0, lo = 0, hi = 1;
    std::int64_t logs = 2;

    double squash(double s) const {
        double x = std::max(0.0, s + shift);
        for (std::int64_t k = 0; k < logs; ++k) x = std::log1p(x);
        return x;
    }
    double operator()(double s) const { return hi > lo ? 2.0 * (squash(s) - lo) / (hi - lo) - 1.0 : 0.0; }

    static ScoreTransform fit(std::span<const double> scores, std::int64_t logs = 2) {
        DEVIANT_REQUIRE(!scores.empty(), "score transform: no scores to fit");
        DEVIANT_REQUIRE(logs >= 0 && logs <= 8, "score transform: {} repeated logs (0..8)", logs);
        ScoreTransform t;
        t.logs = logs;
        t.shift = 1.0 - *std::min_element(scores.begin(), scores.end());
        t.lo = t.hi = t.squash(scores[0]);
        for (double s : scores) t.lo = std::min(t.lo, t.squash(s)), t.hi = std::max(t.hi, t.squash(s));
        return t;
    }
    nlohmann::json to_json() const { return {{"shift", shift}, {"logs", logs}, {"min", lo}, {"max", hi}}; }
    static ScoreTransform from_json(const nlohmann::json& j, const std::string& where) {
        ScoreTransform t;
        for (const char* k : {"shift", "logs", "min", "max"})
            DEVIANT_REQUIRE(j.contains(k) && j[k].is_number(), "{}: field '{}' missing or not a number", where, k);
        t.shift = j["shift"].get<double>();
        t.logs = j["logs"].get<std::int64_t>();
        t.lo = j["min"].get<double>();
        t.hi = j["max"].get<double>();
        return t;
    }
};

struct RewardSequence {
    std::vector<std::int64_t> ids;  // prompt + completion; the reward is read at the last token
    double target = 0;              // regression target (transformed score)
    std::int64_t group = 0;         // the prompt it answers (within-prompt pair accuracy)
};

struct RewardData {
    std::vector<RewardSequence> sequences;
    std::vector<std::pair<std::size_t, std::size_t>> pairs;  // (chosen, rejected) indices into sequences
    std::int64_t tokens() const {
        std::int64_t n = 0;
        for (const auto& s : sequences) n += std::int64_t(s.ids.size());
        return n;
    }
};

enum class RewardLoss { l1, bradley_terry };
inline RewardLoss reward_loss(std::string_view name) {
    if (name == "l1") return RewardLoss::l1;
    if (name == "bt" || name == "bradley-terry") return RewardLoss::bradley_terry;
    fail("unknown reward loss '{}' (known: l1, bt)", name);
}

struct RewardTrainingOptions {
    RewardLoss loss = RewardLoss::l1;
    double learning_rate = 1e-4;
    optim::LrSchedule::Kind schedule = optim::LrSchedule::Kind::linear;
    std::int64_t warmup_steps = 0, epochs = 1, max_steps = 0;
    std::int64_t batch_size = 8;  // sequences (l1) or pairs (bt) per step
    double max_grad_norm = 1.0;
    optim::AdamWOptions adamw;
    std::int64_t eval_every = 0;
    std::uint64_t seed = 0;
    bool progress = true;
    std::filesystem::path metrics_file;
};

namespace detail {
// Right-padded (B, T) ids of `seqs[idx]` (padding id 0, never read) and their lengths.
inline std::pair<Tensor, std::vector<std::int64_t>> padded_rows(const std::vector<RewardSequence>& seqs, std::span<const std::size_t> idx) {
    std::int64_t T = 1;
    for (std::size_t i : idx) T = std::max(T, std::int64_t(seqs[i].ids.size()));
    std::vector<std::int64_t> ids(idx.size() * std::size_t(T), 0), lengths;
    for (std::size_t r = 0; r < idx.size(); ++r) {
        const auto& s = seqs[idx[r]].ids;
        DEVIANT_REQUIRE(!s.empty(), "reward model: sequence {} has no tokens", idx[r]);
        std::copy(s.begin(), s.end(), ids.begin() + std::ptrdiff_t(r * std::size_t(T)));
        lengths.push_back(std::int64_t(s.size()));
    }
    return {Tensor::from(ids, {std::int64_t(idx.size()), T}), lengths};
}
}  // namespace detail

// Rewards of every sequence under `model`, in batches of about `batch_size` sequences of similar
// length; `progress` names a progress bar (empty: none).
template <class Model>
std::vector<double> score_sequences(const Model& model, const std::vector<RewardSequence>& seqs, std::int64_t batch_size,
                                    const std::string& progress = "") {
    NoGradGuard no_grad;
    std::vector<std::size_t> order(seqs.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return seqs[a].ids.size() < seqs[b].ids.size(); });
    std::vector<double> out(seqs.size(), 0.0);
    const std::size_t bs = std::size_t(std::max<std::int64_t>(1, batch_size));
    ProgressBar bar(progress, std::int64_t(seqs.size()), !progress.empty());
    for (std::size_t s = 0; s < order.size(); s += bs) {
        std::span<const std::size_t> idx(order.data() + s, std::min(bs, order.size() - s));
        auto [ids, lengths] = detail::padded_rows(seqs, idx);
        Tape t;
        std::vector<double> r = model.rewards(t, ids, lengths).value().template to_vector<double>();
        std::int64_t tokens = 0;
        for (std::size_t k = 0; k < idx.size(); ++k) out[idx[k]] = r[k], tokens += lengths[k];
        bar.update(std::int64_t(s + idx.size()), tokens);
    }
    bar.finish();
    return out;
}

// Held-out quality of rewards r for `data`: mae (|r - target|, regression), pair_accuracy (share
// of same-prompt response pairs with different targets that r orders the same way), and for
// Bradley-Terry pairs the share with r_chosen > r_rejected.
inline nlohmann::json reward_metrics(const RewardData& data, const std::vector<double>& r) {
    nlohmann::json m = nlohmann::json::object();
    if (data.pairs.empty()) {
        double mae = 0;
        for (std::size_t i = 0; i < r.size(); ++i) mae += std::abs(r[i] - data.sequences[i].target);
        m["mae"] = r.empty() ? NAN : mae / double(r.size());
        std::int64_t agree = 0, total = 0;
        for (std::size_t i = 0; i < r.size(); ++i)
            for (std::size_t j = i + 1; j < r.size() && data.sequences[j].group == data.sequences[i].group; ++j) {
                const double dt = data.sequences[i].target - data.sequences[j].target;
                if (dt == 0) continue;
                ++total;
                agree += (dt > 0) == (r[i] - r[j] > 0) ? 1 : 0;
            }
        m["pair_accuracy"] = total ? double(agree) / double(total) : NAN;
        m["pairs"] = total;
    } else {
        std::int64_t agree = 0;
        for (auto [c, j] : data.pairs) agree += r[c] > r[j] ? 1 : 0;
        m["pair_accuracy"] = double(agree) / double(data.pairs.size());
        m["pairs"] = data.pairs.size();
    }
    double mean = 0;
    for (double v : r) mean += v / double(r.size());
    m["mean_reward"] = mean;
    return m;
}

template <class Model>
class RewardTrainer {
public:
    RewardTrainer(Model& model, std::vector<Parameter*> trainable, RewardData train, RewardTrainingOptions options)
        : model_(model), params_(std::move(trainable)), train_(std::move(train)), opt_(std::move(options)), adamw_(params_, opt_.adamw) {
        DEVIANT_REQUIRE(units() > 0, "reward training: no training {}", bt() ? "pairs" : "responses");
        DEVIANT_REQUIRE(opt_.batch_size > 0 && opt_.epochs > 0, "reward training: batch size {} and epochs {} must be positive",
                        opt_.batch_size, opt_.epochs);
        schedule_ = optim::LrSchedule{opt_.schedule, opt_.learning_rate, opt_.warmup_steps, total_steps()};
        schedule_.validate();
    }
    void set_eval(RewardData eval) { eval_ = std::move(eval); }

    std::int64_t steps_per_epoch() const { return (units() + opt_.batch_size - 1) / opt_.batch_size; }
    std::int64_t total_steps() const { return opt_.max_steps > 0 ? opt_.max_steps : steps_per_epoch() * opt_.epochs; }
    std::int64_t step() const { return step_; }

    // Runs every step; returns the per-step metrics. Eval lines (keys "eval/...") go to the
    // metrics file every eval_every steps and at the end.
    std::vector<nlohmann::json> train() {
        std::vector<nlohmann::json> history;
        std::ofstream metrics;
        if (!opt_.metrics_file.empty()) {
            metrics.open(opt_.metrics_file, std::ios::app);
            DEVIANT_REQUIRE(metrics.is_open(), "{}: cannot open the metrics file for writing", opt_.metrics_file.string());
        }
        ProgressBar bar(bt() ? "reward (bt)" : "reward (l1)", total_steps(), opt_.progress);
        while (step_ < total_steps()) {
            nlohmann::json m = train_step();
            history.push_back(m);
            if (metrics.is_open()) metrics << m.dump() << "\n" << std::flush;
            const bool eval_now = !eval_.sequences.empty() && ((opt_.eval_every > 0 && step_ % opt_.eval_every == 0) || step_ == total_steps());
            if (eval_now) {
                nlohmann::json e = evaluate();
                e["step"] = step_;
                if (metrics.is_open()) metrics << e.dump() << "\n" << std::flush;
                last_eval_ = e;
            }
            bar.update(step_, m["tokens"].get<std::int64_t>(), {{"loss", m["loss"].get<double>()}});
        }
        bar.finish();
        return history;
    }

    nlohmann::json train_step() {
        const auto start = std::chrono::steady_clock::now();
        std::vector<std::size_t> units = next_units();
        std::vector<std::size_t> rows;
        if (bt()) {
            for (std::size_t u : units) rows.push_back(train_.pairs[u].first);
            for (std::size_t u : units) rows.push_back(train_.pairs[u].second);
        } else {
            rows = units;
        }
        auto [ids, lengths] = detail::padded_rows(train_.sequences, rows);
        const double lr = schedule_.at(step_);
        adamw_.zero_grad();
        Tape t;
        Var r = model_.rewards(t, ids, lengths);
        const std::int64_t n = std::int64_t(units.size());
        Var loss;
        if (bt()) {
            loss = -mean_all(logsigmoid(narrow(r, 0, 0, n) - narrow(r, 0, n, n)));
        } else {
            std::vector<double> y;
            for (std::size_t u : units) y.push_back(train_.sequences[u].target);
            Var target = t.constant(Tensor::from(y, {n}, r.value().dtype()).to(r.value().device()));
            loss = mean_all(relu(r - target) + relu(target - r));  // |r - y|, gradient sign(r - y)
        }
        const double loss_value = loss.value().item();
        DEVIANT_REQUIRE(std::isfinite(loss_value), "reward training step {}: loss is {} (non-finite); stopped before the optimizer step",
                        step_ + 1, loss_value);
        t.backward(loss);
        const double norm = opt_.max_grad_norm > 0 ? optim::clip_grad_norm(params_, opt_.max_grad_norm) : optim::global_grad_norm(params_);
        DEVIANT_REQUIRE(std::isfinite(norm), "reward training step {}: gradient norm is {} (non-finite); weights untouched", step_ + 1, norm);
        adamw_.step(lr);
        ++step_;
        std::int64_t tokens = 0;
        for (std::int64_t l : lengths) tokens += l;
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        return {{"step", step_}, {"loss", loss_value}, {"grad_norm", norm}, {"learning_rate", lr},
                {"tokens", tokens}, {"tokens_per_second", secs > 0 ? double(tokens) / secs : 0.0}};
    }

    // Metrics of the evaluation set, keys prefixed "eval/".
    nlohmann::json evaluate() const {
        DEVIANT_REQUIRE(!eval_.sequences.empty(), "reward training: no evaluation data");
        nlohmann::json m = reward_metrics(eval_, score_sequences(model_, eval_.sequences, 2 * opt_.batch_size));
        nlohmann::json e = nlohmann::json::object();
        for (auto& [k, v] : m.items()) e["eval/" + k] = v;
        return e;
    }
    const nlohmann::json& last_eval() const { return last_eval_; }

private:
    bool bt() const { return opt_.loss == RewardLoss::bradley_terry; }
    std::int64_t units() const { return std::int64_t(bt() ? train_.pairs.size() : train_.sequences.size()); }

    // The next batch of units in a per-epoch shuffled order; a batch never spans two epochs.
    std::vector<std::size_t> next_units() {
        if (order_.empty() || offset_ >= order_.size()) {
            if (!order_.empty()) ++epoch_;
            order_.resize(std::size_t(units()));
            std::iota(order_.begin(), order_.end(), 0);
            std::mt19937_64 rng(data::derive_seed(opt_.seed, std::uint64_t(epoch_)));
            data::shuffle(order_, rng);
            offset_ = 0;
        }
        const std::size_t end = std::min(order_.size(), offset_ + std::size_t(opt_.batch_size));
        std::vector<std::size_t> out(order_.begin() + std::ptrdiff_t(offset_), order_.begin() + std::ptrdiff_t(end));
        offset_ = end;
        return out;
    }

    Model& model_;
    std::vector<Parameter*> params_;
    RewardData train_, eval_;
    RewardTrainingOptions opt_;
    optim::AdamW adamw_;
    optim::LrSchedule schedule_;
    std::int64_t step_ = 0, epoch_ = 0;
    std::size_t offset_ = 0;
    std::vector<std::size_t> order_;
    nlohmann::json last_eval_;
};

}  // namespace deviant
