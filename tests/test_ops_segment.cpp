// segment_sum: gradient checks and CPU-vs-CUDA over one table (ids with -1 holes, empty
// segments, strided inputs), forward values against a naive loop, a hand-worked backward,
// bit-identical repeated CUDA runs, and error messages for bad ids.
#define BOOST_TEST_MODULE ops_segment
#include "expect_error.hpp"
#include "op_harness.hpp"

#include "deviant/ops/segment.hpp"
#include "deviant/ops/shape.hpp"

using namespace deviant;
using namespace deviant::testing;

namespace {
using U = InputSpec;

Tensor ids(std::vector<std::int64_t> v, const Shape& s) { return Tensor::from(v, s); }

// ids over a (3, 5) input: holes (-1), segment 3 empty, segment 0 spread over both rows.
Tensor holes() { return ids({0, 0, 1, -1, 2, -1, -1, 1, 0, 4, 4, 0, -1, 2, 2}, {3, 5}); }

std::vector<OpCase> table() {
    return {
        {"ids from the harness (no holes)", {U::uniform({4, 6}), U::index({4, 6}, 5)},
         [](Tape&, std::vector<Var>& v) { return segment_sum(v[0], v[1].value(), 5); }},
        {"holes and an empty segment", {U::uniform({3, 5})},
         [](Tape&, std::vector<Var>& v) { return segment_sum(v[0], holes(), 5); }},
        {"transposed input", {U::uniform({5, 3})},
         [](Tape&, std::vector<Var>& v) { return segment_sum(transpose(v[0], 0, 1), holes(), 5); }},
        {"one segment of many elements", {U::uniform({700})},
         [](Tape&, std::vector<Var>& v) { return segment_sum(v[0], Tensor::zeros({700}, DType::i64), 1); }},
        {"squared afterwards", {U::uniform({2, 4}), U::index({8}, 3)},
         [](Tape&, std::vector<Var>& v) {
             Var s = segment_sum(v[0], v[1].value(), 3);
             return s * s;
         }},
    };
}

}  // namespace

BOOST_AUTO_TEST_CASE(gradients) { run_gradchecks(table()); }

BOOST_AUTO_TEST_CASE(cuda_matches_cpu_f32, *boost::unit_test::precondition(cuda_device)) { run_cpu_vs_cuda(table()); }

BOOST_AUTO_TEST_CASE(cuda_matches_cpu_bf16, *boost::unit_test::precondition(cuda_device)) { run_cpu_vs_cuda(table(), DType::bf16, 1e3); }

BOOST_AUTO_TEST_CASE(cuda_matches_cpu_f64, *boost::unit_test::precondition(cuda_device)) { run_cpu_vs_cuda(table(), DType::f64, 1e-6); }

BOOST_AUTO_TEST_CASE(forward_matches_naive_loop) {
    std::mt19937 rng(11);
    Tensor x = random_tensor({6, 7}, rng);
    std::uniform_int_distribution<std::int64_t> u(-1, 3);
    std::vector<std::int64_t> iv(42);
    for (auto& v : iv) v = u(rng);
    std::vector<double> xv = x.to_vector<double>(), want(4, 0.0);
    for (std::size_t i = 0; i < iv.size(); ++i)
        if (iv[i] >= 0) want[std::size_t(iv[i])] += xv[i];
    std::vector<double> got = ops::segment_sum(x, ids(iv, {6, 7}), 4).to_vector<double>();
    BOOST_TEST(got == want, boost::test_tools::per_element());
    // ids may have any shape with the right element count
    BOOST_TEST(ops::segment_sum(x, ids(iv, {42}), 4).to_vector<double>() == want, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(backward_by_hand) {
    // x = [1, 2, 3, 4], ids = [1, -1, 1, 0]: out = [4, 4]; seed [10, 20] -> dx = [20, 0, 20, 10]
    Tape tape;
    Var x = tape.leaf(Tensor::from(std::vector<double>{1, 2, 3, 4}, {2, 2}));
    Var y = segment_sum(x, ids({1, -1, 1, 0}, {4}), 2);
    BOOST_TEST((y.shape() == Shape{2}));
    BOOST_TEST(y.value().to_vector<double>() == std::vector<double>({4, 4}), boost::test_tools::per_element());
    tape.backward(y, Tensor::from(std::vector<double>{10, 20}, {2}));
    BOOST_TEST((x.grad().shape() == Shape{2, 2}));
    BOOST_TEST(x.grad().to_vector<double>() == std::vector<double>({20, 0, 20, 10}), boost::test_tools::per_element());
    // zero segments: an empty result
    BOOST_TEST(ops::segment_sum(Tensor::ones({3}), ids({-1, -1, -1}, {3}), 0).numel() == 0);
}

BOOST_AUTO_TEST_CASE(errors_name_the_offending_values) {
    Tensor x = Tensor::zeros({2, 3});
    BOOST_TEST(throws_naming([&] { ops::segment_sum(x, ids({0, 1, 5, 0, 0, 0}, {6}), 3); }, {"segment id 5", "position 2", "[-1, 3)"}));
    BOOST_TEST(throws_naming([&] { ops::segment_sum(x, ids({0, -2, 0, 0, 0, 0}, {6}), 3); }, {"segment id -2", "position 1"}));
    BOOST_TEST(throws_naming([&] { ops::segment_sum(x, ids({0, 1}, {2}), 3); }, {"2 segment ids", "(2, 3)"}));
    BOOST_TEST(throws_naming([&] { ops::segment_sum(x, Tensor::zeros({6}), 3); }, {"int64", "float32"}));
    BOOST_TEST(throws_naming([&] { ops::segment_sum(Tensor::zeros({6}, DType::i64), ids({0, 0, 0, 0, 0, 0}, {6}), 3); }, {"int64"}));
}

BOOST_AUTO_TEST_CASE(cuda_is_deterministic, *boost::unit_test::precondition(cuda_device)) {
    std::mt19937 rng(5);
    std::uniform_int_distribution<std::int64_t> u(-1, 6);
    std::vector<std::int64_t> iv(20000);
    for (auto& v : iv) v = u(rng);
    Tensor x = random_tensor({20000}, rng, -1, 1, DType::f32);
    Tensor gx = x.to(Device::cuda), gi = ids(iv, {20000}).to(Device::cuda);
    auto first = ops::segment_sum(gx, gi, 7).to_vector<float>();
    auto second = ops::segment_sum(gx, gi, 7).to_vector<float>();
    BOOST_TEST(first == second, boost::test_tools::per_element());
    std::vector<double> gpu(first.begin(), first.end());
    BOOST_TEST(relative_error(gpu, ops::segment_sum(x.to(DType::f64), ids(iv, {20000}), 7).to_vector<double>()) < 1e-5);
    BOOST_TEST(throws_naming([&] { ops::segment_sum(gx, ids(iv, {20000}), 6); }, {"segment id 6"}));
}
