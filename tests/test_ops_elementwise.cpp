// Element-wise ops: gradient checks and CPU-vs-CUDA over one table.
#define BOOST_TEST_MODULE ops_elementwise
#include "op_harness.hpp"

using namespace deviant;
using namespace deviant::testing;
using K = kernels::UnaryOp;

namespace {
OpCase unary_case(const char* name, K op, double lo, double hi) {
    return {name, {InputSpec::uniform({3, 5}, lo, hi)}, [op](Tape&, std::vector<Var>& v) { return unary(op, v[0]); }};
}
std::vector<OpCase> table() {
    return {
        unary_case("neg", K::neg, -2, 2),
        unary_case("exp", K::exp, -2, 2),
        unary_case("log", K::log, 0.2, 3),
        unary_case("softplus", K::softplus, -8, 8),
        unary_case("logsigmoid", K::logsigmoid, -8, 8),
        unary_case("log1mexp", K::log1mexp, -3, -0.05),
        unary_case("sigmoid", K::sigmoid, -6, 6),
        unary_case("tanh", K::tanh, -3, 3),
        unary_case("gelu_tanh", K::gelu_tanh, -3, 3),
        unary_case("silu", K::silu, -4, 4),
        unary_case("relu", K::relu, -2, 2),
        unary_case("sqrt", K::sqrt, 0.2, 3),
        unary_case("rsqrt", K::rsqrt, 0.2, 3),
        unary_case("square", K::square, -2, 2),
        {"affine", {InputSpec::uniform({4, 3})}, [](Tape&, std::vector<Var>& v) { return affine(v[0], -1.5, 0.25); }},
        {"add broadcast", {InputSpec::uniform({2, 3, 4}), InputSpec::uniform({3, 1})}, [](Tape&, std::vector<Var>& v) { return v[0] + v[1]; }},
        {"sub broadcast", {InputSpec::uniform({4}), InputSpec::uniform({2, 3, 4})}, [](Tape&, std::vector<Var>& v) { return v[0] - v[1]; }},
        {"mul broadcast", {InputSpec::uniform({2, 1, 4}), InputSpec::uniform({1, 3, 4})}, [](Tape&, std::vector<Var>& v) { return v[0] * v[1]; }},
        {"div broadcast", {InputSpec::uniform({2, 3}), InputSpec::uniform({3}, 0.5, 2)}, [](Tape&, std::vector<Var>& v) { return v[0] / v[1]; }},
        {"swiglu", {InputSpec::uniform({3, 6}, -4, 4), InputSpec::uniform({3, 6})}, [](Tape&, std::vector<Var>& v) { return swiglu(v[0], v[1]); }},
        {"swiglu, one input twice", {InputSpec::uniform({7}, -3, 3)}, [](Tape&, std::vector<Var>& v) { return swiglu(v[0], v[0]); }},
        {"value used twice", {InputSpec::uniform({5})}, [](Tape&, std::vector<Var>& v) { return v[0] * v[0] + exp(v[0]); }},
    };
}
}  // namespace

BOOST_AUTO_TEST_CASE(gradients) { run_gradchecks(table()); }

BOOST_AUTO_TEST_CASE(cuda_matches_cpu_f32, *boost::unit_test::precondition(cuda_device)) { run_cpu_vs_cuda(table()); }

BOOST_AUTO_TEST_CASE(cuda_matches_cpu_bf16, *boost::unit_test::precondition(cuda_device)) {
    run_cpu_vs_cuda(table(), DType::bf16, 1e3);  // bf16 storage: ~1e-2 relative
}

BOOST_AUTO_TEST_CASE(log1mexp_is_finite_near_zero) {
    // The naive log1p(-exp(a)) returns -inf for a -> 0-; the stable form stays finite.
    for (double a : {-1e-8, -1e-6, -1e-3, -0.6931, -0.7, -30.0}) {
        Tensor x = Tensor::from(std::vector<float>{float(a)}, {1});
        double y = ops::unary(K::log1mexp, x).item();
        double ref = a < -0.7 ? std::log1p(-std::exp(a)) : std::log(-std::expm1(a));  // float64, each form where it is exact
        BOOST_TEST(std::isfinite(y));
        BOOST_TEST(std::abs(y - ref) <= 1e-5 * std::abs(ref));
    }
}

BOOST_AUTO_TEST_CASE(broadcast_errors_name_both_shapes) {
    Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4});
    BOOST_CHECK_EXCEPTION(ops::add(a, b), Error, [](const Error& e) {
        return std::string(e.what()).find("(2, 3)") != std::string::npos && std::string(e.what()).find("(4,)") != std::string::npos;
    });
    Tensor c = Tensor::zeros({2, 3}, DType::f64);
    BOOST_CHECK_THROW(ops::add(a, c), Error);               // dtype mismatch
    BOOST_CHECK_THROW(ops::add(a, Tensor::zeros({2, 3}, DType::i64)), Error);  // not floating
}

// The CPU loops' float32 exp (ops/vector_math.hpp) against the float64 library exp: within 2 ulp
// over its whole finite range, its edges as documented, and the float32 exp / sigmoid / SiLU ops
// built on it against float64 formulas.
BOOST_AUTO_TEST_CASE(vectorised_float32_exp_is_within_two_ulp) {
    double worst = 0;
    for (float x = -87.3f; x < 88.7f; x += 0.000731f) {
        const double want = std::exp(double(x));
        const float got = ops::detail::exp_f32(x);
        const double ulp = std::nextafter(float(want), std::numeric_limits<float>::infinity()) - float(want);
        worst = std::max(worst, std::abs(double(got) - want) / ulp);
    }
    BOOST_TEST(worst <= 2.0, "max error " << worst << " ulp");
    BOOST_TEST(ops::detail::exp_f32(-std::numeric_limits<float>::infinity()) == 0.0f);
    BOOST_TEST(ops::detail::exp_f32(-100.0f) == 0.0f);  // subnormal results are flushed
    BOOST_TEST(ops::detail::exp_f32(0.0f) == 1.0f);
    BOOST_TEST(std::isinf(ops::detail::exp_f32(89.0f)));
    BOOST_TEST(std::isfinite(ops::detail::exp_f32(88.72f)));
    BOOST_TEST(std::isnan(ops::detail::exp_f32(std::numeric_limits<float>::quiet_NaN())));
    std::vector<double> xs;
    for (int i = 0; i < 1001; ++i) xs.push_back(-30.0 + 0.06 * i);
    const Tensor x32 = Tensor::from(xs, {std::int64_t(xs.size())}, DType::f64).to(DType::f32);
    for (K op : {K::exp, K::sigmoid, K::silu}) {
        const std::vector<double> got = ops::unary(op, x32).to_vector<double>();
        const std::vector<double> want = ops::unary(op, x32.to(DType::f64)).to_vector<double>();
        for (std::size_t i = 0; i < xs.size(); ++i)
            BOOST_TEST(std::abs(got[i] - want[i]) <= 1e-6 * std::abs(want[i]) + 1e-30, "op " << int(op) << " at " << xs[i]);
    }
    // GELU (tanh form) on the same exp, as x sigmoid(2u), and its derivative, float32 and bf16
    // storage, against the formula in float64 written the same cancellation-free way
    // ((1 + tanh u) / 2 = 1 / (1 + e^(-2u)); std::tanh loses the tail below u = -19 in float64)
    auto gelu_ref = [](double x, bool derivative) {
        const double k = 0.797884560802865355879892119869, c = 0.044715, u = k * (x + c * x * x * x);
        const double s = 1.0 / (1.0 + std::exp(-2.0 * u));
        return derivative ? s + 2.0 * x * s * (1.0 - s) * k * (1.0 + 3.0 * c * x * x) : x * s;
    };
    for (auto [dt, tol] : {std::pair{DType::f32, 2e-6}, std::pair{DType::bf16, 1e-2}}) {
        const Tensor xd = x32.to(dt);
        const std::vector<double> held = xd.to_vector<double>();  // the values the narrow type holds
        const Tensor ones = Tensor::full({std::int64_t(xs.size())}, 1.0, dt);
        const std::vector<double> got_y = ops::unary(K::gelu_tanh, xd).to_vector<double>();
        const std::vector<double> got_d = ops::unary_backward(K::gelu_tanh, xd, ops::unary(K::gelu_tanh, xd), ones).to_vector<double>();
        for (std::size_t i = 0; i < xs.size(); ++i) {
            const double ref_y = gelu_ref(held[i], false), ref_d = gelu_ref(held[i], true);
            // exp(-2u) turns u's rounding (relative 2^-24) into a relative error of about |2u| times that
            const double h = held[i], cond = 1.0 + 2.0 * std::abs(0.7978845608 * (h + 0.044715 * h * h * h));
            BOOST_TEST(std::abs(got_y[i] - ref_y) <= tol * cond * std::abs(ref_y) + 1e-30, dtype_name(dt) << " gelu at " << xs[i]);
            BOOST_TEST(std::abs(got_d[i] - ref_d) <= tol * cond * (std::abs(ref_d) + 1e-6), dtype_name(dt) << " gelu' at " << xs[i]);
        }
    }
}

BOOST_AUTO_TEST_CASE(swiglu_matches_the_unfused_composition) {
    // silu(g) * u from the separate ops, in float64 (value and both gradients), and the fused float32
    // and bf16 forms against it; long enough for the vectorised loops and the bf16 blocks.
    std::mt19937 rng(7);
    const Tensor g64 = random_tensor({5, 301}, rng, -9, 9, DType::f64), u64 = random_tensor({5, 301}, rng, -2, 2, DType::f64);
    const Tensor dy64 = random_tensor({5, 301}, rng, -1, 1, DType::f64);
    auto run = [&](DType dt, bool fused) {
        Parameter pg("g", g64.to(dt)), pu("u", u64.to(dt));
        Tape t;
        Var g = t.param(pg), u = t.param(pu);
        Var y = fused ? swiglu(g, u) : silu(g) * u;
        std::vector<double> value = y.value().to_vector<double>();
        t.backward(y, dy64.to(dt));
        return std::array<std::vector<double>, 3>{value, pg.grad.to_vector<double>(), pu.grad.to_vector<double>()};
    };
    const auto ref = run(DType::f64, false);
    for (auto [dt, tol] : {std::pair{DType::f64, 1e-14}, std::pair{DType::f32, 2e-6}, std::pair{DType::bf16, 2e-2}}) {
        const auto got = run(dt, true);
        for (int k = 0; k < 3; ++k) {
            double worst = 0;
            for (std::size_t i = 0; i < ref[k].size(); ++i)
                worst = std::max(worst, std::abs(got[k][i] - ref[k][i]) / (1.0 + std::abs(ref[k][i])));
            BOOST_TEST_CONTEXT("dtype " << dtype_name(dt) << ", output " << k) { BOOST_TEST(worst <= tol); }
        }
    }
    BOOST_CHECK_EXCEPTION(ops::swiglu(Tensor::zeros({2, 3}), Tensor::zeros({3, 2})), Error,
                          [](const Error& e) { return std::string(e.what()).find("swiglu: gate") != std::string::npos; });
}
