// Reductions (sum, mean, max, sum_all, mean_all): gradient checks and CPU-vs-CUDA over one table,
// forward values against naive loops, argmax ties, bfloat16 accumulation and error messages.
#define BOOST_TEST_MODULE ops_reduce
#include "op_harness.hpp"

#include "deviant/ops/reduce.hpp"

using namespace deviant;
using namespace deviant::testing;

namespace {
std::vector<OpCase> table() {
    using V = std::vector<Var>;
    return {
        {"sum axis 0", {InputSpec::uniform({3, 4})}, [](Tape&, V& v) { return sum(v[0], 0); }},
        {"sum axis -1 keepdim", {InputSpec::uniform({3, 4})}, [](Tape&, V& v) { return sum(v[0], -1, true); }},
        {"sum middle axis", {InputSpec::uniform({2, 3, 4})}, [](Tape&, V& v) { return sum(v[0], 1); }},
        {"sum 1-D", {InputSpec::uniform({7})}, [](Tape&, V& v) { return sum(v[0], 0); }},
        {"mean axis 1", {InputSpec::uniform({2, 5, 3})}, [](Tape&, V& v) { return mean(v[0], 1); }},
        {"mean axis -1 keepdim", {InputSpec::uniform({4, 6})}, [](Tape&, V& v) { return mean(v[0], -1, true); }},
        {"max axis -1", {InputSpec::uniform({3, 5})}, [](Tape&, V& v) { return max(v[0], -1); }},
        {"max axis 0 keepdim", {InputSpec::uniform({4, 3})}, [](Tape&, V& v) { return max(v[0], 0, true); }},
        {"max middle axis", {InputSpec::uniform({2, 4, 3})}, [](Tape&, V& v) { return max(v[0], -2); }},
        {"sum_all", {InputSpec::uniform({3, 4})}, [](Tape&, V& v) { return sum_all(v[0]); }},
        {"mean_all", {InputSpec::uniform({2, 3, 2})}, [](Tape&, V& v) { return mean_all(v[0]); }},
        {"sum then max", {InputSpec::uniform({2, 3, 4})}, [](Tape&, V& v) { return max(sum(v[0], 0), 1); }},
    };
}
// Larger shapes for the device: long rows use the block-per-row kernel with several warps.
std::vector<OpCase> device_table() {
    using V = std::vector<Var>;
    auto t = table();
    t.push_back({"sum long rows", {InputSpec::uniform({5, 1000})}, [](Tape&, V& v) { return sum(v[0], -1); }});
    t.push_back({"mean long rows", {InputSpec::uniform({3, 777})}, [](Tape&, V& v) { return mean(v[0], 1); }});
    t.push_back({"max long rows", {InputSpec::uniform({4, 2049})}, [](Tape&, V& v) { return max(v[0], -1); }});
    t.push_back({"max long inner", {InputSpec::uniform({3, 300, 5})}, [](Tape&, V& v) { return max(v[0], 1); }});
    t.push_back({"sum_all large", {InputSpec::uniform({64, 129})}, [](Tape&, V& v) { return sum_all(v[0]); }});
    return t;
}

// Naive reference: reduce a (A, B, C) tensor along `axis` with explicit index loops.
std::vector<double> naive_reduce(const std::vector<double>& x, int A, int B, int C, int axis, char op,
                                 std::vector<std::int64_t>* argmax = nullptr) {
    std::vector<double> out;
    int dims[3] = {A, B, C};
    int o1 = axis == 0 ? 1 : 0, o2 = axis == 2 ? 1 : 2;
    for (int i = 0; i < dims[o1]; ++i)
        for (int j = 0; j < dims[o2]; ++j) {
            double acc = op == 'M' ? -INFINITY : 0;
            std::int64_t best = -1;
            for (int r = 0; r < dims[axis]; ++r) {
                int idx[3];
                idx[axis] = r, idx[o1] = i, idx[o2] = j;
                double v = x[(idx[0] * B + idx[1]) * C + idx[2]];
                if (op == 'M') {
                    if (v > acc) acc = v, best = r;
                } else acc += v;
            }
            if (op == 'm') acc /= dims[axis];
            out.push_back(acc);
            if (argmax) argmax->push_back(best);
        }
    return out;
}

void check_close(const std::vector<double>& got, const std::vector<double>& want, double tol) {
    BOOST_REQUIRE_EQUAL(got.size(), want.size());
    for (std::size_t i = 0; i < got.size(); ++i) BOOST_TEST(std::abs(got[i] - want[i]) <= tol * (1 + std::abs(want[i])), i << ": " << got[i] << " vs " << want[i]);
}
}  // namespace

BOOST_AUTO_TEST_CASE(gradients) { run_gradchecks(table()); }

BOOST_AUTO_TEST_CASE(cuda_matches_cpu_f32, *boost::unit_test::precondition(cuda_device)) { run_cpu_vs_cuda(device_table()); }

BOOST_AUTO_TEST_CASE(cuda_matches_cpu_bf16, *boost::unit_test::precondition(cuda_device)) {
    run_cpu_vs_cuda(device_table(), DType::bf16, 1e3);
}

BOOST_AUTO_TEST_CASE(cuda_matches_cpu_f64, *boost::unit_test::precondition(cuda_device)) {
    run_cpu_vs_cuda(device_table(), DType::f64, 1e-5);  // same order of accumulation up to rounding
}

BOOST_AUTO_TEST_CASE(forward_matches_naive_loops) {
    std::mt19937 rng(3);
    const int A = 2, B = 3, C = 4;
    for (DType dt : {DType::f64, DType::f32}) {
        Tensor x = random_tensor({A, B, C}, rng, -2, 2, dt);
        std::vector<double> xv = x.to_vector<double>();
        double tol = dt == DType::f64 ? 1e-12 : 1e-6;
        for (int axis = 0; axis < 3; ++axis) {
            BOOST_TEST_CONTEXT("axis " << axis << " " << dtype_name(dt)) {
                check_close(ops::sum(x, axis).to_vector<double>(), naive_reduce(xv, A, B, C, axis, 's'), tol);
                check_close(ops::mean(x, axis - 3).to_vector<double>(), naive_reduce(xv, A, B, C, axis, 'm'), tol);
                std::vector<std::int64_t> idx;
                auto mx = ops::max_with_index(x, axis);
                check_close(mx.values.to_vector<double>(), naive_reduce(xv, A, B, C, axis, 'M', &idx), 0);
                auto got_idx = mx.indices.to_vector<std::int64_t>();
                BOOST_TEST(got_idx == idx, boost::test_tools::per_element());
            }
        }
    }
    // Non-contiguous input: the reduction reads the view, not the storage order.
    Tensor m = Tensor::from(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3});
    check_close(ops::sum(m.transpose(0, 1), 1).to_vector<double>(), {5, 7, 9}, 0);
}

BOOST_AUTO_TEST_CASE(shapes_and_keepdim) {
    Tensor x = Tensor::zeros({2, 3, 4});
    BOOST_TEST(ops::sum(x, 1).shape() == Shape({2, 4}));
    BOOST_TEST(ops::sum(x, 1, true).shape() == Shape({2, 1, 4}));
    BOOST_TEST(ops::max(x, -1, true).shape() == Shape({2, 3, 1}));
    BOOST_TEST(ops::mean(x, 0).shape() == Shape({3, 4}));
    Tensor s = ops::sum_all(Tensor::from(std::vector<float>{1, 2, 3, 4.5f}, {2, 2}));
    BOOST_TEST(s.rank() == 0);
    BOOST_TEST(s.numel() == 1);
    BOOST_TEST(s.item() == 10.5);
    BOOST_TEST(ops::mean_all(Tensor::from(std::vector<float>{1, 2, 3, 6}, {4})).item() == 3.0);
    BOOST_TEST(ops::sum(Tensor::zeros({3, 0}), 1).to_vector<double>() == std::vector<double>({0, 0, 0}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(max_ties_pick_first_index_and_route_gradient_there) {
    Tensor x = Tensor::from(std::vector<double>{1, 3, 3, 2, 2, 1}, {2, 3});
    auto r = ops::max_with_index(x, 1);
    BOOST_TEST(r.values.to_vector<double>() == std::vector<double>({3, 2}), boost::test_tools::per_element());
    BOOST_TEST(r.indices.to_vector<std::int64_t>() == std::vector<std::int64_t>({1, 0}), boost::test_tools::per_element());
    Tape tape;
    Var v = tape.leaf(x);
    Var y = sum_all(max(v, 1));
    tape.backward(y);
    BOOST_TEST(v.grad().to_vector<double>() == std::vector<double>({0, 1, 0, 1, 0, 0}), boost::test_tools::per_element());
    // NaN propagates as the maximum
    Tensor n = Tensor::from(std::vector<float>{1, NAN, 5}, {3});
    BOOST_TEST(std::isnan(ops::max(n, 0).item()));
    BOOST_TEST(ops::max_with_index(n, 0).indices.item() == 1);
}

BOOST_AUTO_TEST_CASE(bf16_accumulates_in_float) {
    // 1000 ones: a bfloat16 running sum would stall at 256 (256 + 1 rounds back to 256).
    Tensor x = Tensor::ones({1000}, DType::bf16);
    BOOST_TEST(ops::sum(x, 0).item() == 1000.0);
    BOOST_TEST(ops::sum_all(Tensor::ones({10, 100}, DType::bf16)).item() == 1000.0);
    BOOST_TEST(ops::sum(Tensor::ones({1000, 2}, DType::bf16), 0).to_vector<double>() == std::vector<double>({1000, 1000}),
               boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(bad_axis_and_dtype_are_errors) {
    Tensor x = Tensor::zeros({2, 3});
    BOOST_CHECK_EXCEPTION(ops::sum(x, 2), Error, [](const Error& e) { return std::string(e.what()).find("(2, 3)") != std::string::npos; });
    BOOST_CHECK_THROW(ops::max(x, -3), Error);
    BOOST_CHECK_THROW(ops::max(Tensor::zeros({2, 0}), 1), Error);  // max of nothing
    BOOST_CHECK_THROW(ops::sum(Tensor::zeros({2, 3}, DType::i64), 0), Error);
}
