// matmul / linear: gradient checks and CPU-vs-CUDA over one table (2-D, batched, shared weight,
// transposed operands), forward values against naive loops for every operand layout, the
// no-copy handling of transposed views, and error messages naming both shapes.
#define BOOST_TEST_MODULE ops_matmul
#include "op_harness.hpp"

#include "deviant/ops/matmul.hpp"
#if defined(DEVIANT_WITH_CUDA)
#include "deviant/kernels/cublaslt_api.hpp"
#endif

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
        {"lora linear", {I::uniform({2, 3, 4}), I::uniform({5, 4}), I::uniform({2, 4}), I::uniform({5, 2})},
         [](Tape&, V& v) { return lora_linear(v[0], v[1], v[2], v[3], 1.5); }},
        // the bias added in place to the product (one node); its gradient is dy summed over rows
        {"linear with bias", {I::uniform({2, 3, 4}), I::uniform({5, 4}), I::uniform({5})},
         [](Tape&, V& v) { return linear(v[0], v[1], v[2]); }},
        {"shared weight with bias", {I::uniform({2, 3, 4}), I::uniform({4, 5}), I::uniform({5})},
         [](Tape&, V& v) { return matmul(v[0], v[1], v[2]); }},
        {"batched with bias", {I::uniform({2, 3, 4}), I::uniform({2, 4, 5}), I::uniform({5})},
         [](Tape&, V& v) { return matmul(v[0], v[1], v[2]); }},
        // the activation recomputed in backward instead of kept
        {"gelu then product (in, out) with bias", {I::uniform({2, 3, 4}), I::uniform({4, 5}), I::uniform({5})},
         [](Tape&, V& v) { return activation_matmul(kernels::UnaryOp::gelu_tanh, v[0], v[1], WeightLayout::in_out, v[2]); }},
        {"silu then product (out, in)", {I::uniform({2, 3, 4}), I::uniform({5, 4})},
         [](Tape&, V& v) { return activation_matmul(kernels::UnaryOp::silu, v[0], v[1], WeightLayout::out_in); }},
        {"lora linear with bias", {I::uniform({2, 3, 4}), I::uniform({5, 4}), I::uniform({2, 4}), I::uniform({5, 2}), I::uniform({5})},
         [](Tape&, V& v) { return lora_linear(v[0], v[1], v[2], v[3], 1.5, v[4]); }},
    };
}
std::vector<OpCase> device_table() {
    using V = std::vector<Var>;
    using I = InputSpec;
    auto t = table();
    t.push_back({"larger batched", {I::uniform({3, 33, 65}), I::uniform({3, 65, 17})}, [](Tape&, V& v) { return matmul(v[0], v[1]); }});
    t.push_back({"larger linear", {I::uniform({4, 31, 64}), I::uniform({48, 64})}, [](Tape&, V& v) { return linear(v[0], v[1]); }});
    t.push_back({"larger linear with bias", {I::uniform({4, 31, 64}), I::uniform({48, 64}), I::uniform({48})},
                 [](Tape&, V& v) { return linear(v[0], v[1], v[2]); }});
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

// bfloat16 products on shapes past any kernel's blocking (oneDNN's bf16 matmul where the CPU has
// bf16 instructions, float32 otherwise): float32 results within float32 accumulation error of the
// float64 product of the same bf16 values, bf16 results within one rounding of it.
BOOST_AUTO_TEST_CASE(bf16_products_on_larger_shapes_follow_float64) {
    std::mt19937 rng(23);
    const std::int64_t M = 37, K = 300, N = 129;
    Tensor a = random_tensor({M, K}, rng, -1, 1, DType::bf16), b = random_tensor({K, N}, rng, -1, 1, DType::bf16);
    Tensor a_t = random_tensor({K, M}, rng, -1, 1, DType::bf16).transpose(0, 1);
    Tensor b_t = random_tensor({N, K}, rng, -1, 1, DType::bf16).transpose(0, 1);
    Tensor a_padded = random_tensor({M, K + 11}, rng, -1, 1, DType::bf16).narrow(1, 5, K);
    Tensor a3 = random_tensor({3, M, K}, rng, -1, 1, DType::bf16), b3 = random_tensor({3, K, N}, rng, -1, 1, DType::bf16);
    const std::vector<std::tuple<const char*, Tensor, Tensor>> cases = {
        {"plain", a, b}, {"a transposed", a_t, b}, {"b transposed", a, b_t}, {"both transposed", a_t, b_t},
        {"a padded", a_padded, b_t}, {"batched", a3, b3}, {"shared weight", a3, b_t}};
    for (const auto& [name, x, y] : cases) {
        BOOST_TEST_CONTEXT(name) {
            const std::vector<double> want = naive_matmul(x, y);
            Tensor wide = ops::matmul(x, y, DType::f32), narrow = ops::matmul(x, y);
            BOOST_TEST((wide.dtype() == DType::f32 && narrow.dtype() == DType::bf16));
            check_close(wide.to_vector<double>(), want, 2e-5);
            check_close(narrow.to_vector<double>(), want, 1.0 / 128);
        }
    }
}

// The fused LoRA node against the composition it replaces (linear, linear, scale, add): the same
// values and gradients of x, W, A and B in float64.
BOOST_AUTO_TEST_CASE(lora_linear_equals_its_composition) {
    OpCase fused{"fused", {InputSpec::uniform({2, 5, 6}), InputSpec::uniform({7, 6}), InputSpec::uniform({3, 6}), InputSpec::uniform({7, 3})},
                 [](Tape&, std::vector<Var>& v) { return lora_linear(v[0], v[1], v[2], v[3], 0.75); }};
    OpCase plain = fused;
    plain.f = [](Tape&, std::vector<Var>& v) { return linear(v[0], v[1]) + scale(linear(linear(v[0], v[2]), v[3]), 0.75); };
    const std::vector<Tensor> in = make_inputs(fused, DType::f64);
    const auto got = run_case_on(fused, in, Device::cpu), want = run_case_on(plain, in, Device::cpu);
    BOOST_REQUIRE_EQUAL(got.size(), 5u);
    for (std::size_t k = 0; k < got.size(); ++k) BOOST_TEST_CONTEXT("output or gradient " << k) { check_close(got[k], want[k], 1e-12); }
    Tape tape;
    BOOST_CHECK_EXCEPTION(lora_linear(tape.leaf(Tensor::zeros({2, 6})), tape.leaf(Tensor::zeros({7, 6})), tape.leaf(Tensor::zeros({3, 5})),
                                      tape.leaf(Tensor::zeros({7, 3})), 1.0),
                          Error, [](const Error& e) { return names_both(e, "(7, 6)", "(3, 5)"); });
}

// The bias epilogue (added in place, its gradient summed over rows by bias_grad) against adding
// the bias as a separate broadcast op, in float64, on a shape large enough to split across threads.
BOOST_AUTO_TEST_CASE(bias_epilogue_equals_an_added_bias) {
    using I = InputSpec;
    for (bool conv1d : {false, true}) {
        OpCase fused{"fused", {I::uniform({4, 64, 32}), I::uniform(conv1d ? Shape{32, 192} : Shape{192, 32}), I::uniform({192})},
                     conv1d ? OpFn([](Tape&, std::vector<Var>& v) { return matmul(v[0], v[1], v[2]); })
                            : OpFn([](Tape&, std::vector<Var>& v) { return linear(v[0], v[1], v[2]); })};
        OpCase plain = fused;
        plain.f = conv1d ? OpFn([](Tape&, std::vector<Var>& v) { return matmul(v[0], v[1]) + v[2]; })
                         : OpFn([](Tape&, std::vector<Var>& v) { return linear(v[0], v[1]) + v[2]; });
        const std::vector<Tensor> in = make_inputs(fused, DType::f64);
        const auto got = run_case_on(fused, in, Device::cpu), want = run_case_on(plain, in, Device::cpu);
        BOOST_REQUIRE_EQUAL(got.size(), 4u);
        for (std::size_t k = 0; k < got.size(); ++k) BOOST_TEST_CONTEXT("conv1d " << conv1d << ", output or gradient " << k) {
            check_close(got[k], want[k], 1e-12);
        }
    }
    Tape tape;
    BOOST_CHECK_EXCEPTION(linear(tape.leaf(Tensor::zeros({2, 6})), tape.leaf(Tensor::zeros({7, 6})), tape.leaf(Tensor::zeros({6}))), Error,
                          [](const Error& e) { return names_both(e, "(6,)", "(2, 7)"); });
}

// activation_matmul (keeps h, recomputes act(h) in backward) against the activation op followed
// by the product, in float64: GELU (backward from x) and sigmoid (backward from y), both layouts.
BOOST_AUTO_TEST_CASE(activation_matmul_equals_activation_then_product) {
    using I = InputSpec;
    using kernels::UnaryOp;
    for (UnaryOp act : {UnaryOp::gelu_tanh, UnaryOp::sigmoid})
        for (WeightLayout layout : {WeightLayout::in_out, WeightLayout::out_in}) {
            const bool in_out = layout == WeightLayout::in_out;
            OpCase fused{"fused", {I::uniform({3, 7, 6}), I::uniform(in_out ? Shape{6, 5} : Shape{5, 6}), I::uniform({5})},
                         [act, layout](Tape&, std::vector<Var>& v) { return activation_matmul(act, v[0], v[1], layout, v[2]); }};
            OpCase plain = fused;
            plain.f = [act, in_out](Tape&, std::vector<Var>& v) {
                Var a = unary(act, v[0]);
                return (in_out ? matmul(a, v[1]) : linear(a, v[1])) + v[2];
            };
            const std::vector<Tensor> in = make_inputs(fused, DType::f64);
            const auto got = run_case_on(fused, in, Device::cpu), want = run_case_on(plain, in, Device::cpu);
            BOOST_REQUIRE_EQUAL(got.size(), 4u);
            for (std::size_t k = 0; k < got.size(); ++k) BOOST_TEST_CONTEXT("op " << int(act) << ", in_out " << in_out << ", output or gradient " << k) {
                check_close(got[k], want[k], 1e-12);
            }
        }
    Tape tape;
    BOOST_CHECK_EXCEPTION(activation_matmul(kernels::UnaryOp::silu, tape.leaf(Tensor::zeros({2, 6})), tape.leaf(Tensor::zeros({5, 6})),
                                            WeightLayout::in_out),
                          Error, [](const Error& e) { return names_both(e, "(2, 6)", "(5, 6)"); });
}

// A bf16 weight's gradient is float32 (Parameter::grad_dtype) and comes straight from the bf16
// product's float32 accumulators: it matches the float64 product of the same bf16 values to
// float32 rounding, far inside bf16's spacing (2^-8 relative), for every product with a weight.
BOOST_AUTO_TEST_CASE(bf16_weight_gradients_are_float32_products) {
    std::mt19937 rng(7);
    const Tensor x = random_tensor({3, 16, 24}, rng, -1, 1, DType::bf16), seed = random_tensor({3, 16, 20}, rng, -1, 1, DType::bf16);
    auto wide = [](const Tensor& t) { return t.to(DType::f64).view({-1, t.size(-1)}); };
    auto check = [&](const char* what, Parameter& p, const Tensor& want) {
        BOOST_TEST_CONTEXT(what) {
            BOOST_TEST((p.grad.dtype() == DType::f32));
            check_close(p.grad.to_vector<double>(), want.to_vector<double>(), 2e-6);
        }
    };
    {  // linear: dW (20, 24) = g^T x
        Parameter w("w", random_tensor({20, 24}, rng, -1, 1, DType::bf16));
        Tape t;
        t.backward(linear(t.leaf(x), t.param(w)), seed);
        check("linear", w, ops::matmul(wide(seed).transpose(0, 1), wide(x)));
    }
    {  // matmul with a shared (K, N) weight: dW (24, 20) = x^T g
        Parameter w("w", random_tensor({24, 20}, rng, -1, 1, DType::bf16));
        Tape t;
        t.backward(matmul(t.leaf(x), t.param(w)), seed);
        check("matmul", w, ops::matmul(wide(x).transpose(0, 1), wide(seed)));
    }
    {  // activation_matmul (in, out): dW = act(h)^T g, act(h) in bf16 as the forward used it
        Parameter w("w", random_tensor({24, 20}, rng, -1, 1, DType::bf16));
        Tape t;
        t.backward(activation_matmul(kernels::UnaryOp::gelu_tanh, t.leaf(x), t.param(w), WeightLayout::in_out), seed);
        check("activation_matmul", w, ops::matmul(wide(ops::unary(kernels::UnaryOp::gelu_tanh, x)).transpose(0, 1), wide(seed)));
    }
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

// The skinny decoding products (ops/skinny_matmul.hpp, ops/quantized_matmul.hpp) against naive
// float64 loops: 1..16 rows, widths that are and are not multiples of 16, float32 and bfloat16
// weights, Q8_0 / Q4_0 / Q4_1 blocks; vectorised and portable paths.
#include "deviant/ops/quantized_matmul.hpp"
BOOST_AUTO_TEST_CASE(skinny_and_quantized_products_match_naive_loops) {
    std::mt19937_64 rng(11);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (bool portable : {false, true}) {
        ops::detail::force_portable_kernels() = portable;
        for (std::int64_t M : {1, 3, 8, 9, 16})
            for (std::int64_t K : {64, 96, 100}) {
                const std::int64_t N = 131;
                std::vector<float> x(std::size_t(M * K)), w(std::size_t(N * K));
                for (auto& v : x) v = u(rng);
                for (auto& v : w) v = u(rng);
                // float32 and bfloat16 weights through ops::linear (the skinny path: rows <= 16, N K >= 4096)
                for (DType wt : {DType::f32, DType::bf16}) {
                    Tensor W = Tensor::from(w, {N, K}).to(wt), X = Tensor::from(x, {M, K}).to(wt);
                    Tensor y = ops::matmul(X, W.transpose(0, 1), DType::f32);
                    auto wv = W.to_vector<double>();
                    auto xv = X.to_vector<double>();
                    auto yv = y.to_vector<double>();
                    double worst = 0;
                    for (std::int64_t m = 0; m < M; ++m)
                        for (std::int64_t n = 0; n < N; ++n) {
                            double s = 0;
                            for (std::int64_t k = 0; k < K; ++k) s += xv[std::size_t(m * K + k)] * wv[std::size_t(n * K + k)];
                            worst = std::max(worst, std::abs(yv[std::size_t(m * N + n)] - s));
                        }
                    BOOST_TEST(worst < 1e-4, "M " << M << " K " << K << " " << dtype_name(wt) << " portable "
                                                                              << portable << ": " << worst);
                }
                if (K % 32) continue;
                for (ops::BlockQuant q : {ops::BlockQuant::q8_0, ops::BlockQuant::q4_0, ops::BlockQuant::q4_1}) {
                    ops::QuantizedMatrix Q;
                    Q.type = q;
                    Q.rows = N;
                    Q.cols = K;
                    Q.data.resize(std::size_t(N * Q.row_bytes()));
                    for (auto& b : Q.data) b = static_cast<unsigned char>(rng());
                    for (std::int64_t blk = 0; blk < N * K / 32; ++blk) {  // finite scales
                        unsigned char* p = Q.data.data() + blk * ops::QuantizedMatrix::block_bytes(q);
                        const float d = u(rng) * 0.1f, mn = u(rng);
                        std::memcpy(p, &d, 4);
                        if (q == ops::BlockQuant::q4_1) std::memcpy(p + 4, &mn, 4);
                    }
                    std::vector<float> y(std::size_t(M * N));
                    ops::quantized_skinny_matmul(x.data(), K, M, Q, y.data());
                    double worst = 0;
                    float v[32];
                    for (std::int64_t n = 0; n < N; ++n)
                        for (std::int64_t m = 0; m < M; ++m) {
                            double s = 0;
                            for (std::int64_t blk = 0; blk < K / 32; ++blk) {
                                ops::detail::dequantize_block(q, Q.row(n) + blk * ops::QuantizedMatrix::block_bytes(q), v);
                                for (int j = 0; j < 32; ++j) s += double(x[std::size_t(m * K + blk * 32 + j)]) * v[j];
                            }
                            worst = std::max(worst, std::abs(double(y[std::size_t(m * N + n)]) - s));
                        }
                    BOOST_TEST(worst < 1e-3, "quant " << int(q) << " M " << M << " K " << K << " portable " << portable << ": " << worst);
                }
            }
    }
    ops::detail::force_portable_kernels() = false;
}

#if defined(DEVIANT_WITH_CUDA)
// cuBLASLt is opened on first use rather than linked (kernels/cublaslt_api.hpp): every entry point
// the CUDA matmul calls resolves, and the library answers a call, on a machine without a GPU too.
BOOST_AUTO_TEST_CASE(cublaslt_opens_on_first_use_and_every_entry_point_resolves) {
    const kernels::CublasLtApi& api = kernels::cublaslt();
    BOOST_TEST(api.library.find("libcublasLt.so.") != std::string::npos);
    BOOST_TEST(std::string(api.status_name(CUBLAS_STATUS_SUCCESS)) == "CUBLAS_STATUS_SUCCESS");
    BOOST_TEST(std::string(api.status_name(CUBLAS_STATUS_NOT_SUPPORTED)) == "CUBLAS_STATUS_NOT_SUPPORTED");
    for (const void* fn : {(const void*)api.create, (const void*)api.layout_create, (const void*)api.layout_destroy,
                           (const void*)api.layout_set_attribute, (const void*)api.desc_create, (const void*)api.desc_destroy,
                           (const void*)api.desc_set_attribute, (const void*)api.preference_create, (const void*)api.preference_destroy,
                           (const void*)api.preference_set_attribute, (const void*)api.algo_get_heuristic, (const void*)api.matmul,
                           (const void*)api.status_string})
        BOOST_TEST(fn != nullptr);
    BOOST_TEST(&kernels::cublaslt() == &api);  // loaded once
}
#endif
