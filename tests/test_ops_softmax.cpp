// softmax / log_softmax: gradient checks and CPU-vs-CUDA over one table, forward values against
// a naive float64 loop, numerical stability for large logits, and error messages.
#define BOOST_TEST_MODULE ops_softmax
#include "op_harness.hpp"

#include "deviant/ops/softmax.hpp"

using namespace deviant;
using namespace deviant::testing;

namespace {
std::vector<OpCase> table() {
    using V = std::vector<Var>;
    return {
        {"softmax last axis", {InputSpec::uniform({3, 5}, -3, 3)}, [](Tape&, V& v) { return softmax(v[0]); }},
        {"softmax axis 0", {InputSpec::uniform({4, 3}, -3, 3)}, [](Tape&, V& v) { return softmax(v[0], 0); }},
        {"softmax middle axis", {InputSpec::uniform({2, 3, 4}, -3, 3)}, [](Tape&, V& v) { return softmax(v[0], -2); }},
        {"softmax 1-D", {InputSpec::uniform({6}, -3, 3)}, [](Tape&, V& v) { return softmax(v[0]); }},
        {"log_softmax last axis", {InputSpec::uniform({3, 5}, -3, 3)}, [](Tape&, V& v) { return log_softmax(v[0]); }},
        {"log_softmax axis 0", {InputSpec::uniform({4, 3}, -3, 3)}, [](Tape&, V& v) { return log_softmax(v[0], 0); }},
        {"log_softmax middle axis", {InputSpec::uniform({2, 3, 4}, -3, 3)}, [](Tape&, V& v) { return log_softmax(v[0], 1); }},
        {"log_softmax single column", {InputSpec::uniform({3, 1})}, [](Tape&, V& v) { return log_softmax(v[0]); }},
        {"softmax of log_softmax", {InputSpec::uniform({2, 6}, -2, 2)}, [](Tape&, V& v) { return softmax(log_softmax(v[0])); }},
    };
}
// Longer rows for the device: several warps per row, and more rows than one warp's worth.
std::vector<OpCase> device_table() {
    using V = std::vector<Var>;
    auto t = table();
    t.push_back({"softmax long rows", {InputSpec::uniform({3, 1000}, -5, 5)}, [](Tape&, V& v) { return softmax(v[0]); }});
    t.push_back({"log_softmax long rows", {InputSpec::uniform({5, 3001}, -5, 5)}, [](Tape&, V& v) { return log_softmax(v[0]); }});
    t.push_back({"log_softmax many short rows", {InputSpec::uniform({257, 7}, -5, 5)}, [](Tape&, V& v) { return log_softmax(v[0]); }});
    t.push_back({"softmax 100 columns", {InputSpec::uniform({6, 100}, -5, 5)}, [](Tape&, V& v) { return softmax(v[0]); }});
    return t;
}

// softmax of each row of (rows, cols), naive float64.
std::vector<double> naive_softmax(const std::vector<double>& x, int rows, int cols, bool log) {
    std::vector<double> out(x.size());
    for (int r = 0; r < rows; ++r) {
        double s = 0;
        for (int j = 0; j < cols; ++j) s += std::exp(x[r * cols + j]);
        for (int j = 0; j < cols; ++j) out[r * cols + j] = log ? x[r * cols + j] - std::log(s) : std::exp(x[r * cols + j]) / s;
    }
    return out;
}
void check_close(const std::vector<double>& got, const std::vector<double>& want, double tol) {
    BOOST_REQUIRE_EQUAL(got.size(), want.size());
    for (std::size_t i = 0; i < got.size(); ++i)
        BOOST_TEST(std::abs(got[i] - want[i]) <= tol * (1 + std::abs(want[i])), i << ": " << got[i] << " vs " << want[i]);
}
}  // namespace

BOOST_AUTO_TEST_CASE(gradients) { run_gradchecks(table()); }

BOOST_AUTO_TEST_CASE(cuda_matches_cpu_f32, *boost::unit_test::precondition(cuda_device)) { run_cpu_vs_cuda(device_table()); }

BOOST_AUTO_TEST_CASE(cuda_matches_cpu_bf16, *boost::unit_test::precondition(cuda_device)) {
    run_cpu_vs_cuda(device_table(), DType::bf16, 1e3);
}

BOOST_AUTO_TEST_CASE(forward_matches_naive_loop) {
    std::mt19937 rng(11);
    for (DType dt : {DType::f64, DType::f32, DType::bf16}) {
        Tensor x = random_tensor({4, 7}, rng, -4, 4, dt);
        std::vector<double> xv = x.to_vector<double>();
        double tol = dt == DType::f64 ? 1e-12 : dt == DType::f32 ? 1e-6 : 1e-2;
        BOOST_TEST_CONTEXT(dtype_name(dt)) {
            check_close(ops::softmax(x).to_vector<double>(), naive_softmax(xv, 4, 7, false), tol);
            check_close(ops::log_softmax(x).to_vector<double>(), naive_softmax(xv, 4, 7, true), tol);
            // along axis 0: the same as the last axis of the transpose
            std::vector<double> xt = x.transpose(0, 1).to_vector<double>();
            check_close(ops::softmax(x, 0).transpose(0, 1).to_vector<double>(), naive_softmax(xt, 7, 4, false), tol);
            check_close(ops::log_softmax(x, -2).transpose(0, 1).to_vector<double>(), naive_softmax(xt, 7, 4, true), tol);
        }
    }
}

BOOST_AUTO_TEST_CASE(rows_sum_to_one) {
    std::mt19937 rng(5);
    Tensor y = ops::softmax(random_tensor({3, 4, 5}, rng, -10, 10), 1);
    BOOST_TEST(y.shape() == Shape({3, 4, 5}));
    auto v = y.to_vector<double>();
    for (int a = 0; a < 3; ++a)
        for (int c = 0; c < 5; ++c) {
            double s = 0;
            for (int b = 0; b < 4; ++b) s += v[(a * 4 + b) * 5 + c];
            BOOST_TEST(std::abs(s - 1) < 1e-12);
        }
}

BOOST_AUTO_TEST_CASE(large_logits_stay_finite) {
    // exp(1000) overflows; the max-subtracted form gives softmax([0, 1, 2]).
    Tensor x = Tensor::from(std::vector<float>{1000, 1001, 1002, -1000, 0, -1e30f}, {2, 3});
    auto y = ops::softmax(x).to_vector<double>();
    double e1 = std::exp(-1.0), e2 = std::exp(-2.0), z = 1 + e1 + e2;
    check_close({y[0], y[1], y[2]}, {e2 / z, e1 / z, 1 / z}, 1e-6);
    auto l = ops::log_softmax(x).to_vector<double>();
    for (double v : l) BOOST_TEST(!std::isnan(v));
    check_close({l[0], l[1], l[2]}, {-2 - std::log(z), -1 - std::log(z), -std::log(z)}, 1e-6);
    check_close({l[3], l[4]}, {-1000, 0}, 1e-6);
}

BOOST_AUTO_TEST_CASE(bad_axis_is_an_error) {
    Tensor x = Tensor::zeros({2, 3});
    BOOST_CHECK_EXCEPTION(ops::softmax(x, 2), Error, [](const Error& e) { return std::string(e.what()).find("(2, 3)") != std::string::npos; });
    BOOST_CHECK_THROW(ops::log_softmax(x, -3), Error);
    BOOST_CHECK_THROW(ops::softmax(Tensor::zeros({2, 3}, DType::i64)), Error);
    BOOST_CHECK_THROW(ops::softmax_backward(x, Tensor::zeros({3, 2})), Error);
}
