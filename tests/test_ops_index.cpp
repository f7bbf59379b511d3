// Indexing ops (gather, embedding, concat, split, masked_fill, where): gradient checks and
// CPU-vs-CUDA over one table, forward values against naive loops, hand-worked backward values
// with duplicate indices, and error messages (out-of-range ids, shape mismatch, wrong dtypes).
#define BOOST_TEST_MODULE ops_index
#include "expect_error.hpp"
#include "op_harness.hpp"

#include "deviant/ops/index.hpp"

using namespace deviant;
using namespace deviant::testing;

namespace {
using U = InputSpec;

std::vector<OpCase> table() {
    return {
        {"gather last axis", {U::uniform({3, 5}), U::index({3, 4}, 5)},
         [](Tape&, std::vector<Var>& v) { return gather(v[0], v[1].value(), -1); }},
        {"gather axis 0, longer than the input", {U::uniform({4, 3}), U::index({6, 2}, 4)},
         [](Tape&, std::vector<Var>& v) { return gather(v[0], v[1].value(), 0); }},
        {"gather middle axis", {U::uniform({2, 4, 3}), U::index({2, 5, 3}, 4)},
         [](Tape&, std::vector<Var>& v) { return gather(v[0], v[1].value(), 1); }},
        {"gather from a transposed view", {U::uniform({5, 3}), U::index({3, 2}, 5)},
         [](Tape&, std::vector<Var>& v) {
             Tensor index = v[1].value();  // a copy of the handle: recording transpose may move the tape's values
             return gather(transpose(v[0], 0, 1), index, 1);
         }},
        {"embedding", {U::uniform({6, 4}), U::index({2, 5}, 6)},
         [](Tape&, std::vector<Var>& v) { return embedding(v[0], v[1].value()); }},
        {"embedding many duplicates", {U::uniform({3, 40}), U::index({50}, 3)},
         [](Tape&, std::vector<Var>& v) { return embedding(v[0], v[1].value()); }},
        {"concat two on axis 1", {U::uniform({2, 3}), U::uniform({2, 2})},
         [](Tape&, std::vector<Var>& v) { return concat({v[0], v[1]}, 1); }},
        {"concat three on axis 0", {U::uniform({1, 3}), U::uniform({2, 3}), U::uniform({3, 3})},
         [](Tape&, std::vector<Var>& v) { return concat({v[0], v[1], v[2]}, 0); }},
        {"concat six (a tree of nodes)", {U::uniform({2, 1}), U::uniform({2, 2}), U::uniform({2, 1})},
         [](Tape&, std::vector<Var>& v) { return concat({v[0], v[1], v[2], v[1], v[0], v[2]}, -1); }},
        {"split and rejoin in another order", {U::uniform({3, 6})},
         [](Tape&, std::vector<Var>& v) {
             auto p = split(v[0], {1, 3, 2}, 1);
             return concat({p[2], p[0] * p[0], p[1]}, 1);
         }},
        {"split into equal parts multiplied", {U::uniform({4, 2})},
         [](Tape&, std::vector<Var>& v) {
             auto p = split(v[0], {2, 2}, 0);
             return p[0] * p[1];
         }},
        {"masked_fill", {U::uniform({3, 4}), U::mask({3, 4})},
         [](Tape&, std::vector<Var>& v) { return masked_fill(v[0], v[1].value(), -3.0); }},
        {"masked_fill broadcast mask", {U::uniform({2, 3, 4}), U::mask({3, 1})},
         [](Tape&, std::vector<Var>& v) { return masked_fill(v[0], v[1].value(), 0.5); }},
        {"where", {U::mask({3, 4}), U::uniform({3, 4}), U::uniform({3, 4})},
         [](Tape&, std::vector<Var>& v) { return where(v[0].value(), v[1], v[2]); }},
        {"where broadcast", {U::mask({3, 1}), U::uniform({2, 3, 4}), U::uniform({4})},
         [](Tape&, std::vector<Var>& v) { return where(v[0].value(), v[1], v[2]); }},
        {"where broadcast a and mask", {U::mask({2, 1, 4}), U::uniform({3, 1}), U::uniform({2, 3, 4})},
         [](Tape&, std::vector<Var>& v) { return where(v[0].value(), v[1], v[2]); }},
    };
}

Tensor ids(std::vector<std::int64_t> v, const Shape& s) { return Tensor::from(v, s); }
Tensor mask(std::vector<std::uint8_t> v, const Shape& s) { return Tensor::from(v, s); }
Tensor values(std::vector<double> v, const Shape& s) { return Tensor::from(v, s); }
}  // namespace

BOOST_AUTO_TEST_CASE(gradients) { run_gradchecks(table()); }

BOOST_AUTO_TEST_CASE(cuda_matches_cpu_f32, *boost::unit_test::precondition(cuda_device)) { run_cpu_vs_cuda(table()); }

BOOST_AUTO_TEST_CASE(cuda_matches_cpu_bf16, *boost::unit_test::precondition(cuda_device)) { run_cpu_vs_cuda(table(), DType::bf16, 1e3); }

BOOST_AUTO_TEST_CASE(gather_forward_matches_loop) {
    std::mt19937 rng(3);
    Tensor x = random_tensor({3, 4, 5}, rng);
    std::uniform_int_distribution<std::int64_t> u(0, 3);
    std::vector<std::int64_t> iv(3 * 6 * 2);
    for (auto& v : iv) v = u(rng);
    Tensor index = ids(iv, {3, 6, 2});
    std::vector<double> out = ops::gather(x, index, 1).to_vector<double>(), xv = x.to_vector<double>();
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 6; ++j)
            for (int k = 0; k < 2; ++k) {
                std::int64_t q = iv[std::size_t((i * 6 + j) * 2 + k)];
                BOOST_TEST(out[std::size_t((i * 6 + j) * 2 + k)] == xv[std::size_t((i * 4 + q) * 5 + k)]);
            }
}

BOOST_AUTO_TEST_CASE(gather_backward_adds_duplicates) {
    // y = x[0, [0, 0, 2, 0]] with seed [1, 2, 3, 4]: dx = [1 + 2 + 4, 0, 3]
    Tape tape;
    Var x = tape.leaf(values({9, 8, 7}, {1, 3}));
    Var y = gather(x, ids({0, 0, 2, 0}, {1, 4}), 1);
    BOOST_TEST(y.value().to_vector<double>() == std::vector<double>({9, 9, 7, 9}), boost::test_tools::per_element());
    tape.backward(y, values({1, 2, 3, 4}, {1, 4}));
    BOOST_TEST(x.grad().to_vector<double>() == std::vector<double>({7, 0, 3}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(embedding_forward_and_backward_by_hand) {
    Tape tape;
    Var w = tape.leaf(values({0, 1, 10, 11, 20, 21, 30, 31}, {4, 2}));
    Var y = embedding(w, ids({2, 0, 2, 3, 2, 0}, {2, 3}));
    BOOST_TEST((y.shape() == Shape{2, 3, 2}));
    BOOST_TEST(y.value().to_vector<double>() == std::vector<double>({20, 21, 0, 1, 20, 21, 30, 31, 20, 21, 0, 1}),
               boost::test_tools::per_element());
    tape.backward(y, values({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {2, 3, 2}));
    // row 0: positions 1, 5; row 1: none; row 2: positions 0, 2, 4; row 3: position 3
    BOOST_TEST(w.grad().to_vector<double>() == std::vector<double>({3 + 11, 4 + 12, 0, 0, 1 + 5 + 9, 2 + 6 + 10, 7, 8}),
               boost::test_tools::per_element());
}

// A bf16 embedding's gradient is float32: each row's sum is rounded once, to float32, not to bf16
// (256 + 1 + 1 is 258 in float32, 256 in bf16).
BOOST_AUTO_TEST_CASE(bf16_embedding_gradient_sums_rows_in_float32) {
    Parameter p("w", Tensor::zeros({3, 2}, DType::bf16));
    Tape tape;
    Var y = embedding(tape.param(p), ids({1, 1, 1, 0}, {4}));
    tape.backward(y, values({256, 512, 1, 1, 1, 1, 3, 4}, {4, 2}).to(DType::bf16));
    BOOST_TEST((p.grad.dtype() == DType::f32));
    BOOST_TEST(p.grad.to_vector<double>() == std::vector<double>({3, 4, 258, 514, 0, 0}), boost::test_tools::per_element());
    // the op itself keeps the gradient's dtype unless asked
    BOOST_TEST((ops::embedding_backward(values({1, 2}, {1, 2}).to(DType::bf16), ids({0}, {1}), {2, 2}).dtype() == DType::bf16));
}

BOOST_AUTO_TEST_CASE(concat_split_where_masked_fill_forward) {
    Tape tape;
    Var a = tape.leaf(values({1, 2, 3, 4}, {2, 2}));
    Var b = tape.leaf(values({5, 6}, {2, 1}));
    BOOST_TEST(concat({a, b}, 1).value().to_vector<double>() == std::vector<double>({1, 2, 5, 3, 4, 6}), boost::test_tools::per_element());
    BOOST_TEST(concat({a, transpose(b, 0, 1)}, 0).value().to_vector<double>() == std::vector<double>({1, 2, 3, 4, 5, 6}),
               boost::test_tools::per_element());
    auto parts = split(a, {1, 1}, 0);
    BOOST_TEST(parts.size() == 2u);
    BOOST_TEST(parts[1].value().to_vector<double>() == std::vector<double>({3, 4}), boost::test_tools::per_element());
    Tensor m = mask({1, 0}, {2, 1});
    BOOST_TEST(masked_fill(a, m, -7).value().to_vector<double>() == std::vector<double>({-7, -7, 3, 4}), boost::test_tools::per_element());
    Tensor m2 = mask({0, 1}, {2});
    BOOST_TEST(where(m2, a, b).value().to_vector<double>() == std::vector<double>({5, 2, 6, 4}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(errors_name_the_offending_values) {
    Tape tape;
    Var w = tape.leaf(Tensor::zeros({6, 4}));
    BOOST_TEST(throws_naming([&] { embedding(w, ids({1, 7, 2}, {3})); }, {"id 7", "position 1", "6 rows"}));
    BOOST_TEST(throws_naming([&] { embedding(w, ids({-1}, {1})); }, {"id -1"}));
    BOOST_TEST(throws_naming([&] { embedding(w, Tensor::zeros({3})); }, {"int64", "float32"}));
    Var x = tape.leaf(Tensor::zeros({2, 3}));
    BOOST_TEST(throws_naming([&] { gather(x, ids({0, 3}, {2, 1}), 1); }, {"index 3", "position 1", "[0, 3)", "(2, 3)"}));
    BOOST_TEST(throws_naming([&] { gather(x, ids({0, 1, 0, 1, 0, 1}, {3, 2}), 1); }, {"(3, 2)", "(2, 3)"}));
    BOOST_TEST(throws_naming([&] { gather(x, ids({0, 1}, {2}), 1); }, {"(2,)", "(2, 3)"}));
    BOOST_TEST(throws_naming([&] { gather(x, Tensor::zeros({2, 1}, DType::u8), 1); }, {"int64", "uint8"}));
    Var y = tape.leaf(Tensor::zeros({3, 2}));
    BOOST_TEST(throws_naming([&] { concat({x, y}, 1); }, {"(3, 2)", "(2, 3)"}));
    BOOST_TEST(throws_naming([&] { concat({x, tape.leaf(Tensor::zeros({2, 1}, DType::f64))}, 1); }, {"float64", "float32"}));
    BOOST_TEST(throws_naming([&] { split(x, {1, 1}, 1); }, {"1, 1", "(2, 3)"}));
    BOOST_TEST(throws_naming([&] { masked_fill(x, mask({1, 0}, {2}), 0.0); }, {"(2,)", "(2, 3)"}));
    BOOST_TEST(throws_naming([&] { masked_fill(x, Tensor::zeros({2, 3}), 0.0); }, {"uint8", "float32"}));
    BOOST_TEST(throws_naming([&] { where(Tensor::zeros({2, 3}, DType::i64), x, x); }, {"uint8", "int64"}));
    BOOST_TEST(throws_naming([&] { where(mask({1, 0}, {2}), x, y); }, {"cannot be broadcast"}));
}

BOOST_AUTO_TEST_CASE(cuda_range_errors_and_deterministic_embedding, *boost::unit_test::precondition(cuda_device)) {
    Tensor w = Tensor::zeros({6, 4}, DType::f32, Device::cuda);
    BOOST_TEST(throws_naming([&] { ops::embedding(w, ids({1, 2, 9, 8}, {4}).to(Device::cuda)); }, {"id 9", "position 2", "6 rows"}));
    BOOST_TEST(throws_naming([&] { ops::gather(w, ids({0, 6}, {2, 1}).to(Device::cuda), 0); }, {"index 6", "position 1"}));
    // Many positions per id: two CUDA backward passes agree bit for bit and match the CPU.
    std::mt19937 rng(5);
    std::uniform_int_distribution<std::int64_t> u(0, 9);
    std::vector<std::int64_t> iv(4000);
    for (auto& v : iv) v = u(rng);
    Tensor id_cpu = ids(iv, {4000});
    Tensor dy = random_tensor({4000, 33}, rng, -1, 1, DType::f32);
    Tensor id_gpu = id_cpu.to(Device::cuda), dy_gpu = dy.to(Device::cuda);
    auto first = ops::embedding_backward(dy_gpu, id_gpu, {10, 33}).to_vector<float>();
    auto second = ops::embedding_backward(dy_gpu, id_gpu, {10, 33}).to_vector<float>();
    auto cpu = ops::embedding_backward(dy, id_cpu, {10, 33}).to_vector<double>();
    BOOST_TEST(first == second, boost::test_tools::per_element());
    std::vector<double> gpu(first.begin(), first.end());
    BOOST_TEST(relative_error(gpu, cpu) < 1e-6);
    Tensor dy_rows = random_tensor({500, 8}, rng, -1, 1, DType::f32);
    Tensor id_rows = id_cpu.view({500, 8});
    auto g1 = ops::gather_backward(dy_rows.to(Device::cuda), id_rows.to(Device::cuda), 0, {10, 8}).to_vector<float>();
    auto g2 = ops::gather_backward(dy_rows.to(Device::cuda), id_rows.to(Device::cuda), 0, {10, 8}).to_vector<float>();
    auto g_cpu = ops::gather_backward(dy_rows, id_rows, 0, {10, 8}).to_vector<float>();
    BOOST_TEST(g1 == g2, boost::test_tools::per_element());
    BOOST_TEST(g1 == g_cpu, boost::test_tools::per_element());  // same summation order on both devices
}
