// The training loop: DDPO with unit weights trains exactly like DPO, gradient accumulation over
// k micro-batches equals one k-times larger batch, training lowers the loss, and a NaN-producing
// batch stops before the optimizer step (weights untouched) or is skipped and counted.
#define BOOST_TEST_MODULE trainer
#include <boost/test/unit_test.hpp>

#include <random>

#include "op_harness.hpp"
#include "deviant/models/families.hpp"
#include "deviant/train/trainer.hpp"

using namespace deviant;

namespace {

io::ModelConfig tiny_llama() {
    io::ModelConfig c;
    c.model_type = "llama";
    c.vocab_size = 32;
    c.hidden_size = 16;
    c.intermediate_size = 24;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 4;
    c.max_position_embeddings = 64;
    c.norm_eps = 1e-5;
    c.rope_theta = 10000;
    return c;
}

std::vector<data::TokenPair> random_pairs(int n, std::uint64_t seed, bool unit_weights = false) {
    std::mt19937_64 rng(seed);
    auto ids = [&](int len) {
        std::vector<std::int64_t> v;
        for (int i = 0; i < len; ++i) v.push_back(std::int64_t(rng() % 30) + 2);
        return v;
    };
    std::vector<data::TokenPair> pairs;
    for (int i = 0; i < n; ++i) {
        data::TokenPair p;
        p.prompt = ids(2 + int(rng() % 4));
        // a learnable preference: chosen completions use even ids, rejected ones odd ids
        p.chosen = ids(2 + int(rng() % 5));
        for (auto& t : p.chosen) t = (t / 2) * 2;
        p.rejected = ids(2 + int(rng() % 5));
        for (auto& t : p.rejected) t = (t / 2) * 2 + 1;
        p.weight = unit_weights ? 1.0 : double(rng() % 200) / 100.0;
        pairs.push_back(p);
    }
    return pairs;
}

std::vector<Parameter*> all_params(Llama& m) {
    std::vector<Parameter*> ps;
    for (auto& p : m.parameters()) ps.push_back(&p);
    return ps;
}

TrainingOptions options(std::string objective, std::int64_t batch, std::int64_t accum, DType dt = DType::f64) {
    TrainingOptions o;
    o.objective = objective;
    o.learning_rate = 1e-2;
    o.batch_size = batch;
    o.grad_accumulation = accum;
    o.max_steps = 3;
    o.progress = false;
    o.dtype = dt;
    o.schedule = optim::LrSchedule::Kind::constant;
    return o;
}

std::vector<double> flat_params(Llama& m) {
    std::vector<double> out;
    for (auto& p : m.parameters())
        for (double v : p.value.to_vector<double>()) out.push_back(v);
    return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(ddpo_with_unit_weights_trains_exactly_like_dpo) {
    auto pairs = random_pairs(8, 1, /*unit_weights=*/true);
    std::vector<std::vector<double>> losses(2), params(2);
    int k = 0;
    for (std::string obj : {"dpo", "ddpo"}) {
        Llama m(tiny_llama(), {}, 3, DType::f64);
        Llama ref(tiny_llama(), {}, 4, DType::f64);
        ReferenceLogps r = compute_reference_logps(ref, pairs, 4, DType::f64);
        Trainer<Llama> t(m, all_params(m), pairs, r, options(obj, 4, 1));
        for (auto& s : t.train().steps) losses[k].push_back(s["loss"]);
        params[k++] = flat_params(m);
    }
    BOOST_TEST(losses[0] == losses[1]);
    BOOST_TEST(params[0] == params[1]);
}

BOOST_AUTO_TEST_CASE(gradient_accumulation_equals_larger_batch) {
    auto pairs = random_pairs(8, 2);
    std::vector<std::vector<double>> params;
    for (auto [batch, accum] : {std::pair{4, 1}, std::pair{2, 2}, std::pair{1, 4}}) {
        Llama m(tiny_llama(), {}, 3, DType::f64);
        Llama ref(tiny_llama(), {}, 4, DType::f64);
        ReferenceLogps r = compute_reference_logps(ref, pairs, 3, DType::f64);
        TrainingOptions o = options("ddpo", batch, accum);
        o.shuffle = false;
        o.max_grad_norm = 0.5;  // clipping sees the whole step's gradient
        Trainer<Llama> t(m, all_params(m), pairs, r, o);
        t.train();
        params.push_back(flat_params(m));
    }
    for (std::size_t i = 1; i < params.size(); ++i) {
        double num = 0, den = 0;
        for (std::size_t j = 0; j < params[0].size(); ++j) num += std::pow(params[i][j] - params[0][j], 2), den += std::pow(params[0][j], 2);
        BOOST_TEST(std::sqrt(num / den) < 1e-12);
    }
    BOOST_TEST(params[0] != flat_params(*std::make_unique<Llama>(tiny_llama(), ParameterSource{}, 3, DType::f64)));  // it trained
}

// SFT reads only the chosen completions, so the trainer lays out the chosen sequences alone: the
// loss and gradients are those of the full layout (padded and packed), with half the sequences.
BOOST_AUTO_TEST_CASE(sft_skips_the_rejected_sequences_exactly) {
    auto pairs = random_pairs(6, 9);
    BOOST_TEST(!make_objective("sft").uses_rejected);
    BOOST_TEST(make_objective("dpo").uses_rejected);
    BOOST_TEST(make_objective("orpo").uses_rejected);
    for (std::int64_t pack : {0, 24}) {
        BOOST_TEST_CONTEXT((pack ? "packed" : "padded")) {
            Llama m(tiny_llama(), {}, 5, DType::f64);
            auto rows_of = [&](bool chosen_only) {
                return pack ? make_packed_rows(pairs, pack, DType::f64, 0, chosen_only) : make_rows(pairs, DType::f64, 0, chosen_only);
            };
            std::vector<double> loss(2);
            std::vector<std::vector<double>> grads(2);
            for (int k = 0; k < 2; ++k) {
                m.store.zero_grad();
                SequenceRows rows = rows_of(k == 1);
                BOOST_TEST(rows.sequences() == (k == 1 ? 6 : 12));
                Tape tape;
                ObjectiveResult r = make_objective("sft")(pair_logps(tape, m, rows));
                tape.backward(r.loss);
                loss[std::size_t(k)] = r.loss.value().item();
                for (auto& p : m.parameters())
                    for (double g : p.grad.to_vector<double>()) grads[std::size_t(k)].push_back(g);
            }
            BOOST_TEST(std::abs(loss[1] - loss[0]) <= 1e-12 * std::abs(loss[0]));
            double num = 0, den = 0;
            for (std::size_t j = 0; j < grads[0].size(); ++j) num += std::pow(grads[1][j] - grads[0][j], 2), den += std::pow(grads[0][j], 2);
            BOOST_TEST(std::sqrt(num / den) < 1e-12);
            BOOST_CHECK_THROW(reference_logps(m, rows_of(true)), Error);  // a reference needs both
        }
    }
}

BOOST_AUTO_TEST_CASE(training_lowers_the_loss_and_raises_heldout_accuracy) {
    auto train = random_pairs(32, 3), eval = random_pairs(16, 4);
    Llama m(tiny_llama(), {}, 5, DType::f32);
    ReferenceLogps rt = compute_reference_logps(m, train, 8), re = compute_reference_logps(m, eval, 8);  // reference = initial policy
    TrainingOptions o = options("ddpo", 8, 1, DType::f32);
    o.max_steps = 0;
    o.epochs = 6;
    o.learning_rate = 3e-3;
    Trainer<Llama> t(m, all_params(m), train, rt, o);
    t.set_eval(eval, re);
    nlohmann::json before = t.evaluate();
    TrainingHistory h = t.train();
    nlohmann::json after = h.evals.back();
    BOOST_TEST(h.steps.size() == 24u);
    BOOST_TEST(double(h.steps.back()["loss"]) < double(h.steps.front()["loss"]));
    BOOST_TEST(double(after["eval/loss"]) < double(before["eval/loss"]));
    BOOST_TEST(double(after["eval/rewards/accuracies"]) > 0.8);
    for (auto key : {"loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
                     "logps/rejected", "grad_norm", "learning_rate", "tokens_per_second"})
        BOOST_TEST(h.steps.back().contains(key), key);
}

BOOST_AUTO_TEST_CASE(nan_batch_stops_before_the_optimizer) {
    auto pairs = random_pairs(4, 5);
    Llama m(tiny_llama(), {}, 6, DType::f64);
    ReferenceLogps r = compute_reference_logps(m, pairs, 4, DType::f64);
    r.chosen[2] = NAN;  // poisons the loss of any step containing pair 2
    auto before = flat_params(m);
    {
        TrainingOptions o = options("dpo", 4, 1);
        Trainer<Llama> t(m, all_params(m), pairs, r, o);
        BOOST_CHECK_EXCEPTION(t.train(), Error, [](const Error& e) {
            std::string s = e.what();
            return s.find("step 1") != std::string::npos && s.find("non-finite") != std::string::npos;
        });
        BOOST_TEST(flat_params(m) == before);  // weights untouched
    }
    {  // with checkpoints: the NaN step writes none, the previous checkpoint stays intact
        auto out = std::filesystem::temp_directory_path() / "deviant_nan_checkpoints";
        std::filesystem::remove_all(out);
        Llama m2(tiny_llama(), {}, 6, DType::f64);
        ReferenceLogps r2 = r;
        TrainingOptions o = options("dpo", 2, 1);
        o.shuffle = false;  // step 1 = pairs 0, 1 (finite); step 2 = pairs 2, 3 (NaN)
        Trainer<Llama> t(m2, all_params(m2), pairs, r2, o);
        BOOST_CHECK_THROW(t.train([&](std::int64_t, const nlohmann::json& metrics) {
            train::save_checkpoint(out, t.checkpoint(t.trainable_tensors(), metrics));
        }), Error);
        BOOST_TEST(t.step() == 1);
        auto latest = train::latest_checkpoint(out);
        BOOST_REQUIRE(latest.has_value());
        BOOST_TEST(latest->filename() == "checkpoint-1");
        train::TrainingCheckpoint c = train::load_checkpoint(*latest);
        for (auto& [name, tensor] : c.model)
            for (double v : tensor.to_vector<double>()) BOOST_TEST(std::isfinite(v));
        std::filesystem::remove_all(out);
    }
    {
        TrainingOptions o = options("dpo", 4, 1);
        o.skip_nonfinite = true;
        Trainer<Llama> t(m, all_params(m), pairs, r, o);
        TrainingHistory h = t.train();
        BOOST_TEST(h.skipped_steps == 3);
        BOOST_TEST(flat_params(m) == before);
    }
}

namespace {

// Mixed precision: bf16 weights with float32 masters, moments, log-probs and losses follow the
// float32 run of the same initialisation (rounded to bf16) step by step; without masters the
// small updates are rounded away and the run falls behind.
std::vector<double> tracked_run(DType dt, bool masters, Device device = Device::cpu) {
    auto pairs = random_pairs(16, 12);
    {
        Llama m(tiny_llama(), {}, 21, DType::f32);
        if (dt == DType::bf16)  // the float32 run's initial weights, rounded
            for (auto& p : m.parameters()) p.value = p.value.to(DType::bf16).to(DType::f32);
        Llama policy(tiny_llama(), [&](const std::string& name) -> std::optional<Tensor> { return m.store.at(name).value; }, 0, dt);
        if (device == Device::cuda) policy.to(device);
        ReferenceLogps r = compute_reference_logps(policy, pairs, 8, dt);
        TrainingOptions o = options("dpo", 8, 1, dt);
        o.max_steps = 20;
        o.learning_rate = 1e-3;
        o.adamw.master_weights = masters;
        Trainer<Llama> t(policy, all_params(policy), pairs, r, o);
        std::vector<double> losses;
        for (auto& s : t.train().steps) losses.push_back(s["loss"]);
        BOOST_TEST((policy.parameters().front().value.dtype() == dt));
        BOOST_TEST((policy.parameters().front().value.device() == device));
        return losses;
    }
}

double worst_relative_difference(const std::vector<double>& a, const std::vector<double>& b) {
    BOOST_REQUIRE_EQUAL(a.size(), b.size());
    double worst = 0;
    for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]) / std::abs(b[i]));
    return worst;
}

}  // namespace

BOOST_AUTO_TEST_CASE(bf16_mixed_precision_tracks_float32) {
    auto f32 = tracked_run(DType::f32, true), mixed = tracked_run(DType::bf16, true), no_master = tracked_run(DType::bf16, false);
    BOOST_REQUIRE_EQUAL(f32.size(), 20u);
    BOOST_TEST(f32.back() < f32.front() - 0.05);  // it learned
    double worst = worst_relative_difference(mixed, f32), worst_no_master = worst_relative_difference(no_master, f32);
    BOOST_TEST_MESSAGE("bf16 vs float32 loss, worst relative difference over 20 steps: " << worst << " with masters, "
                                                                                      << worst_no_master << " without");
    BOOST_TEST(worst < 1e-2);
    BOOST_TEST(worst_no_master > 2 * worst);
}

// 20 DPO steps on the GPU (float32, and bf16 mixed precision) follow the CPU float32 run.
BOOST_AUTO_TEST_CASE(cuda_training_tracks_cpu_float32, *boost::unit_test::precondition(testing::cuda_device)) {
    auto cpu = tracked_run(DType::f32, true);
    double f32 = worst_relative_difference(tracked_run(DType::f32, true, Device::cuda), cpu);
    double mixed = worst_relative_difference(tracked_run(DType::bf16, true, Device::cuda), cpu);
    BOOST_TEST_MESSAGE("CUDA vs CPU float32 loss over 20 DPO steps, worst relative difference: float32 " << f32 << ", bf16 mixed " << mixed);
    BOOST_TEST(f32 < 1e-4);
    BOOST_TEST(mixed < 1e-2);
}

// Resuming from a checkpoint reproduces the uninterrupted run's losses bit for bit (CPU).
BOOST_AUTO_TEST_CASE(resume_is_bit_exact) {
  for (DType dtype : {DType::f32, DType::bf16}) {  // bf16: the float32 masters come back from the checkpoint
    BOOST_TEST_CONTEXT(dtype_name(dtype)) {
    auto pairs = random_pairs(12, 7);
    auto out = std::filesystem::temp_directory_path() / "deviant_resume_test";
    std::filesystem::remove_all(out);
    auto run_options = [&] {
        TrainingOptions o = options("ddpo", 2, 2, dtype);
        o.max_steps = 6;  // crosses an epoch boundary (3 steps per epoch)
        o.learning_rate = 1e-3;
        o.adamw.weight_decay = 0.01;
        o.schedule = optim::LrSchedule::Kind::cosine;
        o.warmup_steps = 2;
        o.seed = 11;
        return o;
    };
    std::vector<double> full;
    {
        Llama m(tiny_llama(), {}, 8, dtype);
        ReferenceLogps r = compute_reference_logps(m, pairs, 4, dtype);
        Trainer<Llama> t(m, all_params(m), pairs, r, run_options());
        for (auto& s : t.train().steps) full.push_back(s["loss"]);
    }
    ReferenceLogps r;
    try {  // interrupted after 3 steps
        Llama m(tiny_llama(), {}, 8, dtype);
        r = compute_reference_logps(m, pairs, 4, dtype);
        TrainingOptions o = run_options();
        Trainer<Llama> t(m, all_params(m), pairs, r, o);
        t.train([&](std::int64_t step, const nlohmann::json& metrics) {
            if (step == 3) {
                train::save_checkpoint(out, t.checkpoint(t.trainable_tensors(), metrics));
                throw std::runtime_error("killed");
            }
        });
    } catch (const std::runtime_error&) {
    }
    auto latest = train::latest_checkpoint(out);
    BOOST_REQUIRE(latest.has_value());
    Llama m(tiny_llama(), {}, 99, dtype);  // a different initialisation: everything must come from the checkpoint
    Trainer<Llama> t(m, all_params(m), pairs, r, run_options());
    t.resume(train::load_checkpoint(*latest));
    std::vector<double> resumed;
    for (auto& s : t.train().steps) resumed.push_back(s["loss"]);
    BOOST_REQUIRE_EQUAL(resumed.size(), 3u);
    for (int i = 0; i < 3; ++i) BOOST_TEST(resumed[i] == full[3 + i]);  // bit-exact
    std::filesystem::remove_all(out);
    }
  }
}
