// Fused ops — rms_norm, layer_norm (ops/norm.hpp) and token_logprobs (ops/lm_head.hpp):
// gradient checks and CPU-vs-CUDA over one table, forward and gradients against the unfused
// composition of existing ops in float64, hand-worked values, chunk-size independence, large
// logits, and error messages.
#define BOOST_TEST_MODULE ops_fused
#include "op_harness.hpp"

#include "deviant/ops/index.hpp"
#include "deviant/ops/lm_head.hpp"
#include "deviant/ops/matmul.hpp"
#include "deviant/ops/norm.hpp"
#include "deviant/ops/reduce.hpp"
#include "deviant/ops/softmax.hpp"

using namespace deviant;
using namespace deviant::testing;

namespace {
using V = std::vector<Var>;
using Chunks = ops::LmHeadChunks;

// The unfused compositions the fused ops replace (what nn::RmsNorm / nn::LayerNorm /
// CausalLm::next_token_logprobs computed before).
Var unfused_rms_norm(Var x, Var w, double eps) { return (x * rsqrt(mean(square(x), -1, true) + eps)) * w; }
Var unfused_layer_norm(Var x, Var w, Var b, double eps) {
    Var centered = x - mean(x, -1, true);
    return (centered * rsqrt(mean(square(centered), -1, true) + eps)) * w + b;
}
Var unfused_token_logprobs(Var h, Var w, const Tensor& targets) {
    Var lp = log_softmax(linear(h, w), -1);
    return reshape(gather(lp, targets.to(h.device()).view({targets.numel(), 1}), -1), {targets.numel()});
}

InputSpec weight_spec(std::int64_t c) { return InputSpec::uniform({c}, 0.5, 1.5); }

std::vector<OpCase> table() {
    return {
        {"rms_norm (3, 5)", {InputSpec::uniform({3, 5}, -2, 2), weight_spec(5)}, [](Tape&, V& v) { return rms_norm(v[0], v[1], 1e-5); }},
        {"rms_norm (2, 3, 4)", {InputSpec::uniform({2, 3, 4}, -2, 2), weight_spec(4)}, [](Tape&, V& v) { return rms_norm(v[0], v[1], 1e-2); }},
        {"rms_norm one column", {InputSpec::uniform({4, 1}, 0.5, 2), weight_spec(1)}, [](Tape&, V& v) { return rms_norm(v[0], v[1], 0.1); }},
        {"rms_norm 1-D", {InputSpec::uniform({6}, -2, 2), weight_spec(6)}, [](Tape&, V& v) { return rms_norm(v[0], v[1], 1e-6); }},
        {"layer_norm (3, 5)", {InputSpec::uniform({3, 5}, -2, 2), weight_spec(5), InputSpec::uniform({5})},
         [](Tape&, V& v) { return layer_norm(v[0], v[1], v[2], 1e-5); }},
        {"layer_norm (2, 3, 4)", {InputSpec::uniform({2, 3, 4}, -2, 2), weight_spec(4), InputSpec::uniform({4})},
         [](Tape&, V& v) { return layer_norm(v[0], v[1], v[2], 1e-2); }},
        {"rms_norm then layer_norm", {InputSpec::uniform({3, 6}, -2, 2), weight_spec(6), weight_spec(6), InputSpec::uniform({6})},
         [](Tape&, V& v) { return layer_norm(rms_norm(v[0], v[1], 1e-5), v[2], v[3], 1e-5); }},
        {"token_logprobs", {InputSpec::uniform({6, 4}, -2, 2), InputSpec::uniform({7, 4}, -2, 2), InputSpec::index({6}, 7)},
         [](Tape&, V& v) { return token_logprobs(v[0], v[1], v[2].value()); }},
        {"token_logprobs chunked (2 rows, 3 entries)",
         {InputSpec::uniform({5, 3}, -2, 2), InputSpec::uniform({8, 3}, -2, 2), InputSpec::index({5}, 8)},
         [](Tape&, V& v) { return token_logprobs(v[0], v[1], v[2].value(), Chunks{2, 3}); }},
        {"token_logprobs one row per chunk, one entry per chunk",
         {InputSpec::uniform({3, 2}, -2, 2), InputSpec::uniform({4, 2}, -2, 2), InputSpec::index({3}, 4)},
         [](Tape&, V& v) { return token_logprobs(v[0], v[1], v[2].value(), Chunks{1, 1}); }},
        {"token_logprobs of rms_norm",
         {InputSpec::uniform({4, 5}, -2, 2), weight_spec(5), InputSpec::uniform({9, 5}, -1, 1), InputSpec::index({4}, 9)},
         [](Tape&, V& v) { return token_logprobs(rms_norm(v[0], v[1], 1e-5), v[2], v[3].value(), Chunks{3, 4}); }},
    };
}
// Longer rows and more rows for the device: several warps per row, several dweight chunks,
// several row and vocabulary chunks.
std::vector<OpCase> device_table() {
    auto t = table();
    t.push_back({"rms_norm long rows", {InputSpec::uniform({37, 1000}, -2, 2), weight_spec(1000)},
                 [](Tape&, V& v) { return rms_norm(v[0], v[1], 1e-5); }});
    t.push_back({"layer_norm many rows", {InputSpec::uniform({300, 96}, -2, 2), weight_spec(96), InputSpec::uniform({96})},
                 [](Tape&, V& v) { return layer_norm(v[0], v[1], v[2], 1e-5); }});
    t.push_back({"layer_norm 3001 columns", {InputSpec::uniform({70, 3001}, -2, 2), weight_spec(3001), InputSpec::uniform({3001})},
                 [](Tape&, V& v) { return layer_norm(v[0], v[1], v[2], 1e-5); }});
    t.push_back({"token_logprobs 5000 entries",
                 {InputSpec::uniform({300, 64}, -1, 1), InputSpec::uniform({5000, 64}, -1, 1), InputSpec::index({300}, 5000)},
                 [](Tape&, V& v) { return token_logprobs(v[0], v[1], v[2].value()); }});
    t.push_back({"token_logprobs 5000 entries chunked",
                 {InputSpec::uniform({300, 64}, -1, 1), InputSpec::uniform({5000, 64}, -1, 1), InputSpec::index({300}, 5000)},
                 [](Tape&, V& v) { return token_logprobs(v[0], v[1], v[2].value(), Chunks{128, 1536}); }});
    return t;
}

// Values and gradients (seeded with a fixed random output gradient) of f on fresh parameters.
std::vector<std::vector<double>> values_and_grads(const std::function<Var(Tape&, V&)>& f, const std::vector<Tensor>& inputs,
                                                  const std::vector<bool>& differentiable) {
    std::vector<Parameter> params(inputs.size());
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        params[i] = Parameter("x" + std::to_string(i), inputs[i].clone());
        params[i].trainable = differentiable[i];
    }
    Tape tape;
    V vars;
    for (auto& p : params) vars.push_back(tape.param(p));
    Var y = f(tape, vars);
    std::mt19937 rng(3);
    std::vector<std::vector<double>> out{y.value().to_vector<double>()};
    tape.backward(y, random_tensor(y.shape(), rng, -1, 1, y.dtype()));
    for (auto& p : params)
        if (p.trainable) out.push_back(p.grad.to_vector<double>());
    return out;
}

void check_close(const std::vector<double>& got, const std::vector<double>& want, double tol, const std::string& what) {
    BOOST_REQUIRE_EQUAL(got.size(), want.size());
    double worst = 0;
    for (std::size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]) / (1 + std::abs(want[i])));
    BOOST_TEST(worst <= tol, what << ": largest difference " << worst);
}
void check_all_close(const std::vector<std::vector<double>>& got, const std::vector<std::vector<double>>& want, double tol,
                     const std::string& what) {
    BOOST_REQUIRE_EQUAL(got.size(), want.size());
    for (std::size_t k = 0; k < got.size(); ++k)
        check_close(got[k], want[k], tol, what + (k == 0 ? " output" : " gradient " + std::to_string(k - 1)));
}

std::vector<Tensor> random_inputs(std::mt19937& rng, std::initializer_list<std::pair<Shape, std::pair<double, double>>> specs,
                                  DType dt = DType::f64) {
    std::vector<Tensor> v;
    for (const auto& [s, range] : specs) v.push_back(random_tensor(s, rng, range.first, range.second, dt));
    return v;
}
// Inputs stored as bf16, and the same bf16 values widened to float64 (the reference's inputs).
std::pair<std::vector<Tensor>, std::vector<Tensor>> bf16_and_rounded(const std::vector<Tensor>& in) {
    std::vector<Tensor> narrow, rounded;
    for (const Tensor& t : in) {
        narrow.push_back(t.to(DType::bf16));
        rounded.push_back(narrow.back().to(DType::f64));
    }
    return {narrow, rounded};
}
Tensor random_targets(std::mt19937& rng, std::int64_t n, std::int64_t vocab) {
    std::uniform_int_distribution<std::int64_t> u(0, vocab - 1);
    std::vector<std::int64_t> t(static_cast<std::size_t>(n));
    for (auto& x : t) x = u(rng);
    return Tensor::from(t, {n});
}
}  // namespace

BOOST_AUTO_TEST_CASE(gradients) { run_gradchecks(table()); }

BOOST_AUTO_TEST_CASE(cuda_matches_cpu_f32, *boost::unit_test::precondition(cuda_device)) { run_cpu_vs_cuda(device_table()); }

BOOST_AUTO_TEST_CASE(cuda_matches_cpu_bf16, *boost::unit_test::precondition(cuda_device)) {
    run_cpu_vs_cuda(device_table(), DType::bf16, 1e3);
}

// dweight / dbias on CUDA come from a fixed reduction order: two runs agree bit for bit.
BOOST_AUTO_TEST_CASE(cuda_gradients_are_deterministic, *boost::unit_test::precondition(cuda_device)) {
    std::mt19937 rng(8);
    Tensor x = random_tensor({4099, 96}, rng, -2, 2, DType::f32).to(Device::cuda);
    Tensor w = random_tensor({96}, rng, 0.5, 1.5, DType::f32).to(Device::cuda);
    Tensor dy = random_tensor({4099, 96}, rng, -1, 1, DType::f32).to(Device::cuda);
    ops::NormResult r = ops::layer_norm(x, w, Tensor::zeros({96}, DType::f32, Device::cuda), 1e-5);
    ops::NormGrads a = ops::layer_norm_backward(x, w, r.stats, dy), b = ops::layer_norm_backward(x, w, r.stats, dy);
    BOOST_TEST(a.dweight.to_vector<float>() == b.dweight.to_vector<float>());
    BOOST_TEST(a.dbias.to_vector<float>() == b.dbias.to_vector<float>());
    Tensor h = random_tensor({700, 32}, rng, -1, 1, DType::f32).to(Device::cuda), hw = random_tensor({3000, 32}, rng, -1, 1, DType::f32).to(Device::cuda);
    Tensor tg = random_targets(rng, 700, 3000).to(Device::cuda), g = random_tensor({700}, rng, -1, 1, DType::f32).to(Device::cuda);
    ops::TokenLogprobsResult lp = ops::token_logprobs(h, hw, tg, Chunks{256, 1024});
    auto ga = ops::token_logprobs_backward(h, hw, lp.targets, lp.lse, g, true, true, Chunks{256, 1024});
    auto gb = ops::token_logprobs_backward(h, hw, lp.targets, lp.lse, g, true, true, Chunks{256, 1024});
    BOOST_TEST(ga.dweight.to_vector<float>() == gb.dweight.to_vector<float>());
    BOOST_TEST(ga.dhidden.to_vector<float>() == gb.dhidden.to_vector<float>());
}

BOOST_AUTO_TEST_CASE(norms_match_unfused_composition_f64) {
    std::mt19937 rng(21);
    for (Shape xs : {Shape{5, 7}, Shape{2, 3, 16}, Shape{4, 1}}) {
        std::int64_t c = xs.back();
        auto in = random_inputs(rng, {{xs, {-3, 3}}, {{c}, {-1.5, 1.5}}, {{c}, {-1, 1}}});
        for (double eps : {1e-6, 1e-2}) {
            BOOST_TEST_CONTEXT("x " << xs.str() << ", eps " << eps) {
                auto fused = values_and_grads([eps](Tape&, V& v) { return rms_norm(v[0], v[1], eps); }, {in[0], in[1]}, {true, true});
                auto plain = values_and_grads([eps](Tape&, V& v) { return unfused_rms_norm(v[0], v[1], eps); }, {in[0], in[1]}, {true, true});
                check_all_close(fused, plain, 1e-12, "rms_norm");
                auto lf = values_and_grads([eps](Tape&, V& v) { return layer_norm(v[0], v[1], v[2], eps); }, in, {true, true, true});
                auto lu = values_and_grads([eps](Tape&, V& v) { return unfused_layer_norm(v[0], v[1], v[2], eps); }, in, {true, true, true});
                check_all_close(lf, lu, 1e-12, "layer_norm");
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(norm_hand_worked_values) {
    // rms_norm([3, 4]) with w = (1, 2), eps 0: mean of squares 12.5.
    Tensor x = Tensor::from(std::vector<double>{3, 4}, {1, 2}), w = Tensor::from(std::vector<double>{1, 2}, {2});
    ops::NormResult r = ops::rms_norm(x, w, 0.0);
    double inv = 1 / std::sqrt(12.5);
    check_close(r.y.to_vector<double>(), {3 * inv, 8 * inv}, 1e-15, "rms_norm");
    check_close(r.stats.to_vector<double>(), {0, inv}, 1e-15, "rms_norm stats");
    // layer_norm([1, 2, 3, 6]): mean 3, variance (4 + 1 + 0 + 9) / 4 = 3.5; eps 0.5 -> inverse std 1/2.
    Tensor x2 = Tensor::from(std::vector<float>{1, 2, 3, 6}, {1, 4}), w2 = Tensor::from(std::vector<float>{1, 1, 2, 1}, {4});
    Tensor b2 = Tensor::from(std::vector<float>{0, 1, 0, -1}, {4});
    ops::NormResult l = ops::layer_norm(x2, w2, b2, 0.5);
    check_close(l.y.to_vector<double>(), {-1, 0.5, 0, 0.5}, 1e-7, "layer_norm");
    check_close(l.stats.to_vector<double>(), {3, 0.5}, 1e-7, "layer_norm stats");
    BOOST_TEST((l.stats.dtype() == DType::f32));
    BOOST_TEST((ops::rms_norm(x2.to(DType::bf16), w2.to(DType::bf16), 0.5).stats.dtype() == DType::f32));
}

BOOST_AUTO_TEST_CASE(norms_in_bf16_and_f32_follow_f64) {
    std::mt19937 rng(4);
    auto in = random_inputs(rng, {{{6, 40}, {-3, 3}}, {{40}, {0.5, 1.5}}, {{40}, {-1, 1}}});
    auto ref_r = ops::rms_norm(in[0], in[1], 1e-5).y.to_vector<double>();
    auto ref_l = ops::layer_norm(in[0], in[1], in[2], 1e-5).y.to_vector<double>();
    for (auto [dt, tol] : {std::pair{DType::f32, 1e-6}, std::pair{DType::bf16, 2e-2}}) {
        BOOST_TEST_CONTEXT(dtype_name(dt)) {
            check_close(ops::rms_norm(in[0].to(dt), in[1].to(dt), 1e-5).y.to_vector<double>(), ref_r, tol, "rms_norm");
            check_close(ops::layer_norm(in[0].to(dt), in[1].to(dt), in[2].to(dt), 1e-5).y.to_vector<double>(), ref_l, tol, "layer_norm");
        }
    }
}

BOOST_AUTO_TEST_CASE(token_logprobs_match_unfused_composition_f64) {
    std::mt19937 rng(31);
    for (auto [n, c, vocab] : {std::tuple{9, 6, 11}, std::tuple{1, 3, 2}, std::tuple{40, 8, 300}}) {
        auto in = random_inputs(rng, {{{n, c}, {-2, 2}}, {{vocab, c}, {-2, 2}}});
        Tensor targets = random_targets(rng, n, vocab);
        BOOST_TEST_CONTEXT("N " << n << ", C " << c << ", V " << vocab) {
            auto fused = values_and_grads([&](Tape&, V& v) { return token_logprobs(v[0], v[1], targets); }, in, {true, true});
            auto plain = values_and_grads([&](Tape&, V& v) { return unfused_token_logprobs(v[0], v[1], targets); }, in, {true, true});
            check_all_close(fused, plain, 1e-12, "token_logprobs");
        }
    }
}

BOOST_AUTO_TEST_CASE(token_logprobs_do_not_depend_on_chunk_sizes) {
    std::mt19937 rng(41);
    const std::int64_t n = 37, c = 5, vocab = 53;
    auto in64 = random_inputs(rng, {{{n, c}, {-2, 2}}, {{vocab, c}, {-2, 2}}});
    Tensor targets = random_targets(rng, n, vocab);
    for (auto [dt, tol] : {std::pair{DType::f64, 1e-12}, std::pair{DType::f32, 1e-5}}) {
        std::vector<Tensor> in{in64[0].to(dt), in64[1].to(dt)};
        auto whole = values_and_grads([&](Tape&, V& v) { return token_logprobs(v[0], v[1], targets, Chunks{n, vocab}); }, in, {true, true});
        for (Chunks ch : {Chunks{1, 1}, Chunks{4, 7}, Chunks{36, 52}, Chunks{100, 1000}, Chunks{0, 0}, Chunks{5, 0}, Chunks{0, 10}}) {
            BOOST_TEST_CONTEXT(dtype_name(dt) << " chunks of " << ch.rows << " rows, " << ch.vocab << " entries") {
                auto part = values_and_grads([&](Tape&, V& v) { return token_logprobs(v[0], v[1], targets, ch); }, in, {true, true});
                check_all_close(part, whole, tol, "token_logprobs");
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(token_logprobs_in_bf16_follow_f64) {
    std::mt19937 rng(51);
    auto in = random_inputs(rng, {{{20, 16}, {-1, 1}}, {{100, 16}, {-1, 1}}});
    Tensor targets = random_targets(rng, 20, 100);
    // reference from the bf16-rounded inputs, in float64
    auto ref = ops::token_logprobs(in[0].to(DType::bf16).to(DType::f64), in[1].to(DType::bf16).to(DType::f64), targets).logprobs;
    auto got = ops::token_logprobs(in[0].to(DType::bf16), in[1].to(DType::bf16), targets);
    // mixed precision: bf16 operands, float32 log-probs (never rounded to bf16)
    BOOST_TEST((got.logprobs.dtype() == DType::f32));
    BOOST_TEST((got.lse.dtype() == DType::f32));
    check_close(got.logprobs.to_vector<double>(), ref.to_vector<double>(), 1e-5, "bf16 token_logprobs");
}

// The bf16 backward (bf16 chunk products where the CPU has them, the logit gradient rounded to bf16
// for them, float32 accumulation over chunks) against float64 on the same bf16 values.
BOOST_AUTO_TEST_CASE(token_logprobs_gradients_in_bf16_follow_f64) {
    std::mt19937 rng(52);
    const std::int64_t n = 45, c = 40, vocab = 300;
    auto in = random_inputs(rng, {{{n, c}, {-1, 1}}, {{vocab, c}, {-1, 1}}});
    Tensor targets = random_targets(rng, n, vocab);
    auto [narrow, rounded] = bf16_and_rounded(in);
    auto want = values_and_grads([&](Tape&, V& v) { return token_logprobs(v[0], v[1], targets); }, rounded, {true, true});
    for (Chunks ch : {Chunks{}, Chunks{7, 13}}) {
        BOOST_TEST_CONTEXT("chunks of " << ch.rows << " rows, " << ch.vocab << " entries") {
            auto got = values_and_grads([&](Tape&, V& v) { return token_logprobs(v[0], v[1], targets, ch); }, narrow, {true, true});
            check_all_close(got, want, 5e-3, "bf16 token_logprobs");
        }
    }
}

// A frozen head (weight without gradient, as under LoRA): the CPU forward accumulates
// E = softmax(logits) W beside the log-sum-exp and backward is dy * (W[target] - E). Its values and
// hidden gradient against the unfused composition, over chunk sizes that make the running max
// rescale E many times, large logits included; float64, float32 and bf16.
BOOST_AUTO_TEST_CASE(token_logprobs_frozen_head_matches_unfused) {
    std::mt19937 rng(61);
    for (double spread : {2.0, 300.0}) {
        const std::int64_t n = 23, c = 6, vocab = 41;
        auto in = random_inputs(rng, {{{n, c}, {-1, 1}}, {{vocab, c}, {-spread, spread}}});
        Tensor targets = random_targets(rng, n, vocab);
        auto want = values_and_grads([&](Tape&, V& v) { return unfused_token_logprobs(v[0], v[1], targets); }, in, {true, false});
        for (Chunks ch : {Chunks{}, Chunks{1, 1}, Chunks{4, 7}, Chunks{5, 40}}) {
            BOOST_TEST_CONTEXT("spread " << spread << ", chunks of " << ch.rows << " rows, " << ch.vocab << " entries") {
                auto got = values_and_grads([&](Tape&, V& v) { return token_logprobs(v[0], v[1], targets, ch); }, in, {true, false});
                check_all_close(got, want, 1e-11, "frozen head f64");
                std::vector<Tensor> in32{in[0].to(DType::f32), in[1].to(DType::f32)};
                auto got32 = values_and_grads([&](Tape&, V& v) { return token_logprobs(v[0], v[1], targets, ch); }, in32, {true, false});
                check_all_close(got32, want, spread > 10 ? 1e-3 : 1e-5, "frozen head f32");
            }
        }
    }
    // bf16 operands: against float64 on the same rounded values
    const std::int64_t n = 45, c = 40, vocab = 300;
    auto in = random_inputs(rng, {{{n, c}, {-1, 1}}, {{vocab, c}, {-1, 1}}});
    Tensor targets = random_targets(rng, n, vocab);
    auto [narrow, rounded] = bf16_and_rounded(in);
    auto want = values_and_grads([&](Tape&, V& v) { return unfused_token_logprobs(v[0], v[1], targets); }, rounded, {true, false});
    auto got = values_and_grads([&](Tape&, V& v) { return token_logprobs(v[0], v[1], targets, Chunks{7, 13}); }, narrow, {true, false});
    check_all_close(got, want, 5e-3, "frozen head bf16");
}

BOOST_AUTO_TEST_CASE(large_logits_stay_finite) {
    // logits row 0 = (1000, 1001, 0), row 1 = (0, 0, -1000), row 2 = (-3e4, -3.003e4, -2e4): exp over/underflows without the max.
    Tensor h = Tensor::from(std::vector<float>{1000, 0, 0, -1000, -30000, -20000}, {3, 2});
    Tensor w = Tensor::from(std::vector<float>{1, 0, 1.001f, 0, 0, 1}, {3, 2});
    Tensor targets = Tensor::from(std::vector<std::int64_t>{0, 2, 1}, {3});
    auto naive = [&](std::vector<double> z, int t) {  // log-softmax in double, shifted by the max
        double m = *std::max_element(z.begin(), z.end()), s = 0;
        for (double v : z) s += std::exp(v - m);
        return (z[std::size_t(t)] - m) - std::log(s);
    };
    double w1 = double(1.001f);
    std::vector<double> want{naive({1000, 1000 * w1, 0}, 0), naive({0, 0, -1000}, 2), naive({-30000, -30000 * w1, -20000}, 1)};
    for (Chunks ch : {Chunks{}, Chunks{1, 1}, Chunks{2, 2}}) {
        Tape tape;
        Parameter ph("h", h.clone()), pw("w", w.clone());
        Var y = token_logprobs(tape.param(ph), tape.param(pw), targets, ch);
        auto got = y.value().to_vector<double>();
        for (double v : got) BOOST_TEST(std::isfinite(v));
        check_close(got, want, 1e-4, "large logits");  // float32 logits round at 1e-4 of 1000
        tape.backward(y, Tensor::ones({3}));
        for (double g : ph.grad.to_vector<double>()) BOOST_TEST(std::isfinite(g));
        for (double g : pw.grad.to_vector<double>()) BOOST_TEST(std::isfinite(g));
    }
}

BOOST_AUTO_TEST_CASE(bad_inputs_are_errors) {
    Tensor h = Tensor::zeros({3, 4}), w = Tensor::zeros({5, 4});
    auto message_has = [](std::string text) { return [text](const Error& e) { return std::string(e.what()).find(text) != std::string::npos; }; };
    BOOST_CHECK_EXCEPTION(ops::token_logprobs(h, w, Tensor::from(std::vector<std::int64_t>{0, 5, 1}, {3})), Error, message_has("target 5"));
    BOOST_CHECK_EXCEPTION(ops::token_logprobs(h, w, Tensor::from(std::vector<std::int64_t>{0, 1, -2}, {3})), Error, message_has("target -2"));
    BOOST_CHECK_EXCEPTION(ops::token_logprobs(h, Tensor::zeros({5, 3}), Tensor::zeros({3}, DType::i64)), Error, message_has("(5, 3)"));
    BOOST_CHECK_THROW(ops::token_logprobs(h, w, Tensor::zeros({4}, DType::i64)), Error);
    BOOST_CHECK_THROW(ops::token_logprobs(h, w, Tensor::zeros({3})), Error);  // float targets
    BOOST_CHECK_THROW(ops::token_logprobs(h, w.to(DType::f64), Tensor::zeros({3}, DType::i64)), Error);
    BOOST_CHECK_EXCEPTION(ops::rms_norm(h, Tensor::ones({3}), 1e-5), Error, message_has("(3, 4)"));
    BOOST_CHECK_THROW(ops::layer_norm(h, Tensor::ones({4}), Tensor::ones({3}), 1e-5), Error);
    BOOST_CHECK_THROW(ops::rms_norm(h, Tensor::ones({4}), -1.0), Error);
    BOOST_CHECK_THROW(ops::rms_norm(h, Tensor::ones({4}, DType::f64), 1e-5), Error);
}
