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
