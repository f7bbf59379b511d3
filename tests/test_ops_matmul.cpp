// matmul / linear: gradient checks and CPU-vs-CUDA over one table (2-D, batched, shared weight,
// transposed operands), forward values against naive loops for every operand layout, the
// no-copy handling of transposed views, and error messages naming both shapes.
#define BOOST_TEST_MODULE ops_matmul
#include "op_harness.hpp"

#include "deviant/ops/matmul.hpp"

using namespace deviant;
using namespace deviant::testing;

namespace {
// A differentiable transpose of the last two dims, local to this test (a view forward; the
// backward transposes the gradient back into a fresh tensor).
Var swap_last(Var x) {
    return x.tape->record(x.value().transpose(-1, -2), {x}, [](Tape& t, const Node& n) {
        const Tensor& g = output_grad(t, n);
        t.accumulate(n.in[0], g.transpose(-1, -2).to(g.device(), g.dtype(), true));
    });
}

std::vector<OpCase> table() {
    using V = std::vector<Var>;
    using I = InputSpec;
    return {
        {"2-D", {I::uniform({3, 4}), I::uniform({4, 5})}, [](Tape&, V& v) { return matmul(v[0], v[1]); }},
        {"batched", {I::uniform({2, 3, 4}), I::uniform({2, 4, 5})}, [](Tape&, V& v) { return matmul(v[0], v[1]); }},
        {"batched 4-D", {I::uniform({2, 2, 3, 4}), I::uniform({2, 2, 4, 2})}, [](Tape&, V& v) { return matmul(v[0], v[1]); }},
        {"shared weight", {I::uniform({2, 3, 4}), I::uniform({4, 5})}, [](Tape&, V& v) { return matmul(v[0], v[1]); }},
        {"shared weight 4-D", {I::uniform({2, 2, 3, 4}), I::uniform({4, 3})}, [](Tape&, V& v) { return matmul(v[0], v[1]); }},
        {"transposed b", {I::uniform({3, 4}), I::uniform({5, 4})}, [](Tape&, V& v) { return matmul(v[0], swap_last(v[1])); }},
        {"transposed a", {I::uniform({4, 3}), I::uniform({4, 5})}, [](Tape&, V& v) { return matmul(swap_last(v[0]), v[1]); }},
        {"both transposed batched", {I::uniform({2, 4, 3}), I::uniform({2, 5, 4})},
         [](Tape&, V& v) { return matmul(swap_last(v[0]), swap_last(v[1])); }},
        {"shared transposed weight", {I::uniform({2, 3, 4}), I::uniform({5, 4})},
         [](Tape&, V& v) { return matmul(v[0], swap_last(v[1])); }},
        {"vector rows", {I::uniform({1, 4}), I::uniform({4, 1})}, [](Tape&, V& v) { return matmul(v[0], v[1]); }},
        {"linear 2-D", {I::uniform({3, 4}), I::uniform({5, 4})}, [](Tape&, V& v) { return linear(v[0], v[1]); }},
        {"linear 3-D", {I::uniform({2, 3, 4}), I::uniform({6, 4})}, [](Tape&, V& v) { return linear(v[0], v[1]); }},
        {"chained", {I::uniform({2, 3}), I::uniform({3, 4}), I::uniform({4, 2})},
         [](Tape&, V& v) { return matmul(matmul(v[0], v[1]), v[2]); }},
    };
}
std::vector<OpCase> device_table() {
    using V = std::vector<Var>;
    using I = InputSpec;
    auto t = table();
    t.push_back({"larger batched", {I::uniform({3, 33, 65}), I::uniform({3, 65, 17})}, [](Tape&, V& v) { return matmul(v[0], v[1]); }});
    t.push_back({"larger linear", {I::uniform({4, 31, 64}), I::uniform({48, 64})}, [](Tape&, V& v) { return linear(v[0], v[1]); }});
    return t;
}

// Naive reference: a (batch, M, K) @ b (batch or 1, K, N) in float64 from row-major copies.
std::vector<double> naive_matmul(const Tensor& a, const Tensor& b) {
    const std::int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
    const std::int64_t batch = a.numel() / (M * K), b_batch = b.numel() / (K * N);
    std::vector<double> av = a.to_vector<double>(), bv = b.to_vector<double>(), out;
    for (std::int64_t p = 0; p < batch; ++p)
        for (std::int64_t i = 0; i < M; ++i)
            for (std::int64_t j = 0; j < N; ++j) {
                double s = 0;
                for (std::int64_t k = 0; k < K; ++k) s += av[(p * M + i) * K + k] * bv[((b_batch == 1 ? 0 : p) * K + k) * N + j];
                out.push_back(s);
            }
    return out;
}
void check_close(const std::vector<double>& got, const std::vector<double>& want, double tol) {
    BOOST_REQUIRE_EQUAL(got.size(), want.size());
    for (std::size_t i = 0; i < got.size(); ++i)
        BOOST_TEST(std::abs(got[i] - want[i]) <= tol * (1 + std::abs(want[i])), i << ": " << got[i] << " vs " << want[i]);
}
bool names_both(const Error& e, const char* s1, const char* s2) {
    std::string m = e.what();
    return m.find(s1) != std::string::npos && m.find(s2) != std::string::npos;
}
}  // namespace

BOOST_AUTO_TEST_CASE(gradients) { run_gradchecks(table()); }

BOOST_AUTO_TEST_CASE(cuda_matches_cpu_f32, *boost::unit_test::precondition(cuda_device)) { run_cpu_vs_cuda(device_table()); }

BOOST_AUTO_TEST_CASE(cuda_matches_cpu_bf16, *boost::unit_test::precondition(cuda_device)) {
    run_cpu_vs_cuda(device_table(), DType::bf16, 1e3);
}

BOOST_AUTO_TEST_CASE(cuda_matches_cpu_f64, *boost::unit_test::precondition(cuda_device)) {
    run_cpu_vs_cuda(device_table(), DType::f64, 1e-5);
}

BOOST_AUTO_TEST_CASE(forward_matches_naive_loops_for_every_layout) {
    std::mt19937 rng(21);
    for (DType dt : {DType::f64, DType::f32, DType::bf16}) {
        const double tol = dt == DType::f64 ? 1e-12 : dt == DType::f32 ? 1e-5 : 2e-2;
        Tensor a = random_tensor({2, 3, 4}, rng, -1, 1, dt), b = random_tensor({2, 4, 5}, rng, -1, 1, dt);
        Tensor a_t = random_tensor({2, 4, 3}, rng, -1, 1, dt).transpose(1, 2);  // column-major (2, 3, 4)
        Tensor b_t = random_tensor({2, 5, 4}, rng, -1, 1, dt).transpose(1, 2);  // column-major (2, 4, 5)
        Tensor w = random_tensor({4, 5}, rng, -1, 1, dt), w_t = random_tensor({5, 4}, rng, -1, 1, dt).transpose(0, 1);
        Tensor wide = random_tensor({2, 3, 9}, rng, -1, 1, dt);
        Tensor a_strided = wide.slice(2, 0, 8, 2);   // (2, 3, 4) with column stride 2: needs a copy
        Tensor a_padded = wide.narrow(2, 1, 4);      // (2, 3, 4) rows 9 apart: a leading dimension > K
        BOOST_TEST_CONTEXT(dtype_name(dt)) {
            check_close(ops::matmul(a, b).to_vector<double>(), naive_matmul(a, b), tol);
            check_close(ops::matmul(a_t, b).to_vector<double>(), naive_matmul(a_t, b), tol);
            check_close(ops::matmul(a, b_t).to_vector<double>(), naive_matmul(a, b_t), tol);
            check_close(ops::matmul(a_t, b_t).to_vector<double>(), naive_matmul(a_t, b_t), tol);
            check_close(ops::matmul(a, w).to_vector<double>(), naive_matmul(a, w), tol);
            check_close(ops::matmul(a, w_t).to_vector<double>(), naive_matmul(a, w_t), tol);
            check_close(ops::matmul(a_t, w_t).to_vector<double>(), naive_matmul(a_t, w_t), tol);
            check_close(ops::matmul(a_strided, b).to_vector<double>(), naive_matmul(a_strided, b), tol);
            check_close(ops::matmul(a_padded, b_t).to_vector<double>(), naive_matmul(a_padded, b_t), tol);
            check_close(ops::matmul(a.select(0, 1), w).to_vector<double>(), naive_matmul(a.select(0, 1), w), tol);
            // linear(x, w) == x @ w^T with w stored (out, in)
            Tensor lw = random_tensor({6, 4}, rng, -1, 1, dt);
            check_close(ops::linear(a, lw).to_vector<double>(), naive_matmul(a, lw.transpose(0, 1)), tol);
            check_close(ops::linear(a.select(0, 0).select(0, 2), lw).to_vector<double>(),
                        naive_matmul(a.select(0, 0).narrow(0, 2, 1), lw.transpose(0, 1)), tol);
        }
    }
    // A hand-worked product.
    Tensor a = Tensor::from(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3});
    Tensor b = Tensor::from(std::vector<double>{7, 8, 9, 10, 11, 12}, {3, 2});
    BOOST_TEST(ops::matmul(a, b).to_vector<double>() == std::vector<double>({58, 64, 139, 154}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(transposed_views_are_read_in_place) {
    BOOST_TEST(ops::matrix_layout(3, 4, 4, 1).ok);
    BOOST_TEST(!ops::matrix_layout(3, 4, 4, 1).transposed);
    BOOST_TEST(ops::matrix_layout(3, 4, 1, 3).transposed);
    BOOST_TEST(ops::matrix_layout(3, 4, 1, 3).ld == 3);
    BOOST_TEST(ops::matrix_layout(3, 4, 9, 1).ld == 9);      // padded rows
    BOOST_TEST(!ops::matrix_layout(3, 4, 8, 2).ok);          // strided columns: copy
    BOOST_TEST(!ops::matrix_layout(3, 4, 0, 1).ok);          // broadcast rows: copy
    Tensor w = Tensor::zeros({5, 4});
    Tensor keep;
    TensorRef r = ops::detail::batched_operand(w.transpose(0, 1), 1, keep);
    BOOST_TEST(r.data == w.raw_data());  // no copy was made
    BOOST_TEST(keep.same_storage(w));
    Tensor x = Tensor::zeros({2, 5, 4});
    r = ops::detail::batched_operand(x.transpose(1, 2), 2, keep);
    BOOST_TEST(r.data == x.raw_data());
    BOOST_TEST(r.strides[0] == 20);
    r = ops::detail::batched_operand(x.slice(2, 0, 4, 2), 2, keep);  // strided columns are copied
    BOOST_TEST(!keep.same_storage(x));
}

BOOST_AUTO_TEST_CASE(empty_inner_dimension_gives_zeros) {
    Tensor y = ops::matmul(Tensor::zeros({2, 0}), Tensor::zeros({0, 3}));
    BOOST_TEST(y.shape() == Shape({2, 3}));
    BOOST_TEST(y.to_vector<double>() == std::vector<double>(6, 0.0), boost::test_tools::per_element());
    BOOST_TEST(ops::matmul(Tensor::zeros({0, 4}), Tensor::zeros({4, 3})).shape() == Shape({0, 3}));
}

BOOST_AUTO_TEST_CASE(bad_shapes_name_both_operands) {
    BOOST_CHECK_EXCEPTION(ops::matmul(Tensor::zeros({2, 3}), Tensor::zeros({4, 5})), Error,
                          [](const Error& e) { return names_both(e, "(2, 3)", "(4, 5)"); });
    BOOST_CHECK_EXCEPTION(ops::matmul(Tensor::zeros({2, 3, 4}), Tensor::zeros({3, 4, 5})), Error,
                          [](const Error& e) { return names_both(e, "(2, 3, 4)", "(3, 4, 5)"); });
    BOOST_CHECK_EXCEPTION(ops::matmul(Tensor::zeros({2, 3, 4}), Tensor::zeros({2, 2, 4, 5})), Error,
                          [](const Error& e) { return names_both(e, "(2, 3, 4)", "(2, 2, 4, 5)"); });
    BOOST_CHECK_EXCEPTION(ops::matmul(Tensor::zeros({4}), Tensor::zeros({4, 5})), Error,
                          [](const Error& e) { return names_both(e, "(4,)", "(4, 5)"); });
    BOOST_CHECK_EXCEPTION(ops::linear(Tensor::zeros({2, 3}), Tensor::zeros({4, 5})), Error,
                          [](const Error& e) { return names_both(e, "(2, 3)", "(4, 5)"); });
    BOOST_CHECK_THROW(ops::matmul(Tensor::zeros({2, 3}), Tensor::zeros({3, 2}, DType::f64)), Error);
}
