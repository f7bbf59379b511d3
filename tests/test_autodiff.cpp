// Tape-level tests: negative controls proving the gradient checker catches a wrong backward
// rule and an unwritten gradient entry, gradient accumulation, NoGradGuard, backward()
// preconditions, graph release and Parameter::grad accumulation, and Tensor view semantics.
#define BOOST_TEST_MODULE autodiff
#include "expect_error.hpp"
#include "op_harness.hpp"

#include "deviant/ops/index.hpp"
#include "deviant/ops/reduce.hpp"
#include "deviant/ops/shape.hpp"

using namespace deviant;
using namespace deviant::testing;

namespace {

// x^2 with a backward rule that uses `slope` * x * dy (correct for slope = 2).
struct SlopeAttr { double slope; };
Var square_with_rule(Var x, double slope) {
    return x.tape->record(ops::unary(kernels::UnaryOp::square, x.value()), {x}, [](Tape& t, const Node& n) {
        t.accumulate(n.in[0], ops::mul(ops::affine(n.saved[0], n.attr<SlopeAttr>().slope), output_grad(t, n)));
    }, {x.value()}, SlopeAttr{slope});
}

// x^2 whose backward allocates its result with Tensor::empty and writes all entries but
// the last one (or all of them, for the control).
struct SkipAttr { bool skip_last; };
Var square_writing_entries(Var x, bool skip_last) {
    return x.tape->record(ops::unary(kernels::UnaryOp::square, x.value()), {x}, [](Tape& t, const Node& n) {
        Tensor xv = n.saved[0].contiguous(), g = output_grad(t, n).contiguous();
        Tensor dx = Tensor::empty(xv.shape(), xv.dtype(), xv.device());
        const double *px = xv.data<double>(), *pg = g.data<double>();
        double* pd = dx.data<double>();
        std::int64_t count = dx.numel() - (n.attr<SkipAttr>().skip_last ? 1 : 0);
        for (std::int64_t i = 0; i < count; ++i) pd[i] = 2 * px[i] * pg[i];
        t.accumulate(n.in[0], dx);
    }, {x.value()}, SkipAttr{skip_last});
}

Tensor values(std::vector<double> v, const Shape& s) { return Tensor::from(v, s); }

std::vector<Tensor> one_random_input() {
    std::mt19937 rng(11);
    return {random_tensor({3, 4}, rng, 0.5, 2.0)};
}

}  // namespace

// --- (a) negative controls: the checker must see these bugs ---
BOOST_AUTO_TEST_CASE(gradient_checker_reports_a_wrong_backward_rule) {
    auto right = gradient_errors([](Tape&, std::vector<Var>& v) { return square_with_rule(v[0], 2.0); }, one_random_input());
    auto wrong = gradient_errors([](Tape&, std::vector<Var>& v) { return square_with_rule(v[0], 3.0); }, one_random_input());
    BOOST_TEST(right[0] < 1e-6);
    BOOST_TEST(wrong[0] > 0.4);  // 3x vs 2x: relative error 0.5
}

BOOST_AUTO_TEST_CASE(gradient_checker_catches_an_unwritten_entry) {
    auto complete = gradient_errors([](Tape&, std::vector<Var>& v) { return square_writing_entries(v[0], false); }, one_random_input());
    auto partial = gradient_errors([](Tape&, std::vector<Var>& v) { return square_writing_entries(v[0], true); }, one_random_input());
    BOOST_TEST(complete[0] < 1e-6);
    BOOST_TEST(!std::isfinite(partial[0]));  // the poisoned (NaN) entry reaches the parameter gradient
}

BOOST_AUTO_TEST_CASE(poisoned_allocations_are_nan) {
    PoisonAllocations poison;
    for (DType dt : {DType::f32, DType::f64, DType::bf16}) {
        Tensor t = Tensor::empty({4}, dt);
        for (double v : t.to_vector<double>()) BOOST_TEST(std::isnan(v));
    }
}

// --- (b) a value used twice receives the sum of its gradients ---
BOOST_AUTO_TEST_CASE(gradient_accumulates_over_uses) {
    Tape tape;
    Var x = tape.leaf(values({1, 2, 3}, {3}));
    Var y = x * x + x;  // dy/dx = 2x + 1
    tape.backward(y, Tensor::ones({3}, DType::f64));
    BOOST_TEST(x.grad().to_vector<double>() == std::vector<double>({3, 5, 7}), boost::test_tools::per_element());

    // The same parameter bound twice is one value; both uses add into its gradient.
    Parameter p("w", values({1, 2, 3}, {3}));
    Tape tape2;
    Var a = tape2.param(p), b = tape2.param(p);
    BOOST_TEST(a.id == b.id);
    Var z = concat({a, b}, 0);  // each element used twice: gradient 2 * seed
    tape2.backward(z, values({1, 2, 3, 10, 20, 30}, {6}));
    BOOST_TEST(p.grad.to_vector<double>() == std::vector<double>({11, 22, 33}), boost::test_tools::per_element());
}

// --- (c) NoGradGuard records nothing ---
BOOST_AUTO_TEST_CASE(no_grad_guard_records_no_nodes) {
    Parameter p("w", values({1, 2}, {2}));
    {
        Tape tape;
        NoGradGuard guard;
        BOOST_TEST(!grad_enabled());
        Var w = tape.param(p);
        Var y = exp(w) * w + narrow(w, 0, 0, 2);
        BOOST_TEST(tape.num_nodes() == 0u);
        BOOST_TEST(!y.requires_grad());
        BOOST_TEST(std::abs(y.value().to_vector<double>()[1] - (std::exp(2.0) * 2 + 2)) < 1e-12);
        BOOST_CHECK_THROW(tape.backward(y, Tensor::ones({2}, DType::f64)), Error);
    }
    BOOST_TEST(grad_enabled());
    Tape tape;
    Var y = exp(tape.param(p));
    BOOST_TEST(tape.num_nodes() == 1u);
    BOOST_TEST(y.requires_grad());
}

// --- (d) backward() needs a scalar ---
BOOST_AUTO_TEST_CASE(backward_from_a_non_scalar_throws) {
    Tape tape;
    Var x = tape.leaf(Tensor::ones({2, 3}, DType::f64));
    Var y = x * x;
    BOOST_TEST(throws_naming([&] { tape.backward(y); }, {"scalar", "(2, 3)"}));
    BOOST_TEST(throws_naming([&] { tape.backward(y, Tensor::ones({3, 2}, DType::f64)); }, {"(3, 2)", "(2, 3)"}));
}

// --- (e) the graph is released after backward; Parameter::grad persists and accumulates ---
BOOST_AUTO_TEST_CASE(graph_released_and_parameter_grad_accumulates) {
    Parameter p("w", values({3, 5}, {2}));
    for (int pass = 1; pass <= 2; ++pass) {
        Tape tape;
        Var w = tape.param(p);
        Var loss = select(w, 0, 0) * select(w, 0, 1);  // d/dw = (w1, w0) = (5, 3)
        BOOST_TEST(tape.num_nodes() > 0u);
        tape.backward(loss);
        BOOST_TEST(tape.num_nodes() == 0u);
        BOOST_TEST(p.grad.to_vector<double>() == std::vector<double>({5.0 * pass, 3.0 * pass}), boost::test_tools::per_element());
    }
    p.zero_grad();
    BOOST_TEST(p.grad.to_vector<double>() == std::vector<double>({0, 0}), boost::test_tools::per_element());
    // The same tape can record again after clear().
    Tape tape;
    Var w = tape.param(p);
    tape.backward(select(w, 0, 1) * select(w, 0, 1));
    tape.clear();
    BOOST_TEST(tape.num_values() == 0u);
    w = tape.param(p);
    tape.backward(select(w, 0, 1) * select(w, 0, 1));
    BOOST_TEST(p.grad.to_vector<double>() == std::vector<double>({0, 20}), boost::test_tools::per_element());
}

// --- (e2) backward hands memory back as it goes: op outputs are released once their node has
// run, a parameter's gradient lives only in Parameter::grad; a released value reads as an error ---
BOOST_AUTO_TEST_CASE(backward_releases_values_and_holds_parameter_grads_once) {
    const std::int64_t n = 1 << 16;  // 512 KiB of float64 per value
    const std::size_t bytes = std::size_t(n) * sizeof(double);
    Parameter p("w", Tensor::full({n}, 0.5, DType::f64));
    HostMemoryStats& mem = HostMemoryStats::instance();
    const std::size_t base = mem.live_bytes();
    Tape tape;
    Var w = tape.param(p);
    Var h = w, first;
    for (int k = 0; k < 8; ++k) {
        h = affine(h, 1.5, 0.25);  // keeps no saved tensor: only the tape's value table holds it
        if (k == 0) first = h;
    }
    Var kept = affine(h, 2.0);
    tape.retain(kept);
    Var loss = sum_all(kept);
    const std::size_t after_forward = mem.live_bytes();
    BOOST_TEST(after_forward - base >= 9 * bytes);  // nine (n) values recorded
    mem.reset_peak();
    tape.backward(loss);
    // the peak is at the start of backward: the values in flight plus a gradient or two
    BOOST_TEST(mem.peak_live_bytes() <= after_forward + 2 * bytes + 4096);
    // left: the retained value and the parameter's gradient (once), not the eight intermediates
    BOOST_TEST(mem.live_bytes() - base <= 2 * bytes + 4096);
    BOOST_TEST(p.grad.numel() == n);
    BOOST_TEST(p.grad.to_vector<double>()[0] == 2.0 * std::pow(1.5, 8), boost::test_tools::tolerance(1e-12));
    BOOST_TEST(w.grad().same_storage(p.grad));
    BOOST_TEST(kept.value().numel() == n);
    BOOST_TEST(loss.value().item() == double(n) * kept.value().to_vector<double>()[0], boost::test_tools::tolerance(1e-12));
    BOOST_TEST(throws_naming([&] { (void)first.value(); }, {"released", "retain"}));
}

// --- (e3) a bf16 parameter's gradient is float32: contributions are summed without bf16 rounding ---
BOOST_AUTO_TEST_CASE(bf16_parameter_gradient_is_float32) {
    Parameter p("w", Tensor::full({3}, 0.5, DType::bf16));
    BOOST_TEST((p.grad_dtype() == DType::f32));
    Tape tape;
    Var w = tape.param(p);
    // d/dw = 256 + 1 = 257: exact in float32, 256 in bf16 (8 bits of mantissa)
    Var loss = sum_all(affine(w, 256.0)) + sum_all(w);
    tape.backward(loss);
    BOOST_TEST((p.grad.dtype() == DType::f32));
    BOOST_TEST(p.grad.to_vector<double>() == std::vector<double>(3, 257.0), boost::test_tools::per_element());
    // a second backward adds into the float32 buffer: 514, not bf16's 512
    Tape again;
    Var w2 = again.param(p);
    again.backward(sum_all(affine(w2, 256.0)) + sum_all(w2));
    BOOST_TEST(p.grad.to_vector<double>() == std::vector<double>(3, 514.0), boost::test_tools::per_element());
    // float32 and float64 parameters keep their own dtype
    BOOST_TEST((Parameter("f", Tensor::zeros({1})).grad_dtype() == DType::f32));
    BOOST_TEST((Parameter("d", Tensor::zeros({1}, DType::f64)).grad_dtype() == DType::f64));
}

// --- (e4) the compiler keeps vector constants: GCC 12 with AVX-512 built {1, 1, 1, 0} of four
// 64-bit lanes as four ones (CMakeLists.txt switches its basic-block vectoriser off) ---
namespace {
__attribute__((noinline)) std::vector<double> four_doubles() { return {1, 1, 1, 0}; }
__attribute__((noinline)) Tensor four_ids() { return Tensor::from(std::vector<std::int64_t>{1, 1, 1, 0}, {4}); }
}  // namespace
BOOST_AUTO_TEST_CASE(vector_constants_survive_the_compiler) {
    BOOST_TEST(four_doubles() == std::vector<double>({1, 1, 1, 0}), boost::test_tools::per_element());
    BOOST_TEST(four_ids().to_vector<double>() == std::vector<double>({1, 1, 1, 0}), boost::test_tools::per_element());
    const std::vector<std::int64_t> ids{1, 1, 1, 0};
    BOOST_TEST(ids.back() == 0);
}

// --- (f) tensor views ---
BOOST_AUTO_TEST_CASE(views_share_storage_without_copying) {
    Tensor t = Tensor::zeros({3, 4});
    Tensor s = t.slice(1, 1, 3), tr = t.transpose(0, 1), nr = t.narrow(0, 1, 2);
    for (const Tensor* v : {&s, &tr, &nr}) BOOST_TEST(v->same_storage(t));
    BOOST_TEST(s.raw_data() == static_cast<void*>(t.data<float>() + 1));
    BOOST_TEST(nr.raw_data() == static_cast<void*>(t.data<float>() + 4));
    BOOST_TEST(!s.is_contiguous());
    BOOST_TEST(!tr.is_contiguous());
    BOOST_TEST(nr.is_contiguous());
    // Writing through a view is seen by the base: nothing was copied.
    ops::copy_into(s, Tensor::ones({3, 2}));
    BOOST_TEST(t.to_vector<double>() == std::vector<double>({0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0}), boost::test_tools::per_element());
    BOOST_TEST(tr.to_vector<double>()[4] == 1.0);  // tr[1][0] = t[0][1]
}

BOOST_AUTO_TEST_CASE(reshape_copies_only_a_non_contiguous_tensor) {
    std::vector<float> v(12);
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = float(i);
    Tensor t = Tensor::from(v, {3, 4});
    Tensor same = t.reshape({2, 6});
    BOOST_TEST(same.same_storage(t));
    Tensor copied = t.transpose(0, 1).reshape({12});
    BOOST_TEST(!copied.same_storage(t));
    BOOST_TEST(copied.is_contiguous());
    BOOST_TEST(copied.to_vector<float>() == std::vector<float>({0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}), boost::test_tools::per_element());
    BOOST_TEST(throws_naming([&] { t.transpose(0, 1).view({12}); }, {"non-contiguous", "(4, 3)"}));
}

BOOST_AUTO_TEST_CASE(tensor_errors_name_shapes_dtypes_and_devices) {
    Tensor t = Tensor::zeros({3, 4});
    BOOST_TEST(throws_naming([&] { t.view({5, 2}); }, {"(3, 4)", "(5, 2)"}));
    BOOST_TEST(throws_naming([&] { Tensor::zeros({2, 2}).copy_from(t); }, {"(3, 4)", "(2, 2)"}));
    BOOST_TEST(throws_naming([&] { t.data<double>(); }, {"float32", "float64"}));
    BOOST_TEST(throws_naming([&] { ops::add(t, Tensor::zeros({3, 4}, DType::f64)); }, {"float32", "float64"}));
    BOOST_TEST(throws_naming([&] { t.slice(1, 2, 6); }, {"(3, 4)"}));
    if (!cuda::available()) {
        // No device: asking for CUDA memory is an error, not a crash.
        BOOST_TEST(throws_naming([&] { Tensor::zeros({2}, DType::f32, Device::cuda); }, {"CUDA"}));
    }
}

BOOST_AUTO_TEST_CASE(device_mismatch_errors, *boost::unit_test::precondition(cuda_device)) {
    Tensor cpu = Tensor::zeros({2, 3}), gpu = Tensor::zeros({2, 3}, DType::f32, Device::cuda);
    BOOST_TEST(throws_naming([&] { ops::add(cpu, gpu); }, {"cpu", "cuda"}));
    Tensor view = gpu.narrow(1, 0, 2);
    BOOST_TEST(throws_naming([&] { ops::copy_into(view, cpu.narrow(1, 0, 2)); }, {"cpu", "cuda"}));
    BOOST_TEST(throws_naming([&] { ops::embedding(gpu, Tensor::zeros({2}, DType::i64)); }, {"cpu", "cuda"}));
    Tensor m = Tensor::zeros({2, 3}, DType::u8);
    BOOST_TEST(throws_naming([&] { ops::masked_fill(gpu, m, 0.0); }, {"cpu", "cuda"}));
}

// The caching allocator's counters: live bytes and their peak follow allocations and frees
// (rounded block sizes), freed blocks stay cached and are reused, reset_peak() restarts the peak.
BOOST_AUTO_TEST_CASE(cuda_allocator_counts_live_and_peak_bytes, *boost::unit_test::precondition(cuda_device)) {
    auto& a = CudaCachingAllocator::instance();
    const std::size_t live0 = a.live_bytes();
    a.reset_peak();
    BOOST_TEST(a.peak_live_bytes() == live0);
    {
        Tensor x = Tensor::zeros({1 << 20}, DType::f32, Device::cuda);  // 4 MiB
        BOOST_TEST(a.live_bytes() == live0 + (4u << 20));
        Tensor y = Tensor::zeros({1 << 19}, DType::f32, Device::cuda);  // 2 MiB
        BOOST_TEST(a.peak_live_bytes() == live0 + (6u << 20));
    }
    BOOST_TEST(a.live_bytes() == live0);
    BOOST_TEST(a.peak_live_bytes() == live0 + (6u << 20));
    const std::size_t held = a.allocated_bytes();
    { Tensor z = Tensor::zeros({1 << 20}, DType::f32, Device::cuda); }  // served from the cache
    BOOST_TEST(a.allocated_bytes() == held);
    a.reset_peak();
    BOOST_TEST(a.peak_live_bytes() == live0);
}
