// tests/op_harness.hpp — table-driven op tests (one table per op family, ggml style).
// Each OpCase names an op, the inputs it takes (shapes and kinds) and a function building it on
// a tape. The same table drives:
//   run_gradchecks   — central-difference gradient check in float64 on the CPU (gradcheck.hpp);
//   run_cpu_vs_cuda  — forward and backward on the CPU and on CUDA from the same random inputs,
//                      with NaN-poisoned CUDA allocations, compared by relative-norm error.
// Without a CUDA device the CUDA tests are skipped through a Boost.Test precondition, which the
// test log reports as skipped.
#pragma once
#include "gradcheck.hpp"

namespace deviant::testing {

struct InputSpec {
    enum class Kind { uniform, index, mask };
    Shape shape;
    Kind kind = Kind::uniform;
    double lo = -1.0, hi = 1.0;      // uniform range
    std::int64_t index_range = 0;     // index: values in [0, index_range)

    static InputSpec uniform(Shape s, double lo = -1.0, double hi = 1.0) { return {s, Kind::uniform, lo, hi, 0}; }
    static InputSpec index(Shape s, std::int64_t range) { return {s, Kind::index, 0, 0, range}; }
    static InputSpec mask(Shape s) { return {s, Kind::mask, 0, 0, 0}; }
    bool differentiable() const { return kind == Kind::uniform; }
};

struct OpCase {
    std::string name;
    std::vector<InputSpec> inputs;
    OpFn f;
    double grad_tol = 1e-6;  // float64 finite differences
    double cuda_tol = 1e-5;  // float32 CPU vs CUDA
};

inline Tensor make_input(const InputSpec& s, std::mt19937& rng, DType float_dtype) {
    switch (s.kind) {
        case InputSpec::Kind::uniform: return random_tensor(s.shape, rng, s.lo, s.hi, float_dtype);
        case InputSpec::Kind::index: {
            std::uniform_int_distribution<std::int64_t> u(0, s.index_range - 1);
            std::vector<std::int64_t> v(std::size_t(s.shape.numel()));
            for (auto& x : v) x = u(rng);
            return Tensor::from(v, s.shape);
        }
        case InputSpec::Kind::mask: {
            std::bernoulli_distribution b(0.4);
            std::vector<std::uint8_t> v(std::size_t(s.shape.numel()));
            for (auto& x : v) x = b(rng);
            return Tensor::from(v, s.shape);
        }
    }
    return {};
}

inline std::vector<Tensor> make_inputs(const OpCase& c, DType float_dtype, unsigned seed = 42) {
    std::mt19937 rng(seed);
    std::vector<Tensor> in;
    for (const auto& s : c.inputs) in.push_back(make_input(s, rng, float_dtype));
    return in;
}

inline void run_gradchecks(const std::vector<OpCase>& table) {
    for (const auto& c : table) {
        std::vector<bool> diff;
        for (const auto& s : c.inputs) diff.push_back(s.differentiable());
        BOOST_TEST_CONTEXT("gradient check of " << c.name) { check_gradient(c.name, c.f, make_inputs(c, DType::f64), diff, c.grad_tol); }
    }
}

// Output and input gradients of one case on one device (inputs copied there first).
inline std::vector<std::vector<double>> run_case_on(const OpCase& c, const std::vector<Tensor>& host_inputs, Device dev) {
    std::vector<Parameter> params(host_inputs.size());
    for (std::size_t i = 0; i < host_inputs.size(); ++i) {
        params[i] = Parameter("x" + std::to_string(i), host_inputs[i].to(dev, host_inputs[i].dtype(), true));
        params[i].trainable = c.inputs[i].differentiable();
    }
    PoisonAllocations poison;
    Tape tape;
    std::vector<Var> vars;
    for (auto& p : params) vars.push_back(tape.param(p));
    Var y = c.f(tape, vars);
    std::mt19937 rng(7);
    Tensor seed = random_tensor(y.shape(), rng, -1, 1, y.dtype()).to(dev);
    std::vector<std::vector<double>> out{y.value().to_vector<double>()};
    if (y.requires_grad()) tape.backward(y, seed);
    for (auto& p : params)
        if (p.trainable) out.push_back(p.grad.defined() ? p.grad.to_vector<double>() : std::vector<double>{});
    return out;
}

inline boost::test_tools::assertion_result cuda_device(boost::unit_test::test_unit_id) {
    boost::test_tools::assertion_result r(cuda::available());
    if (!cuda::available())
        r.message() << (cuda::compiled() ? "no CUDA device on this machine" : "built without CUDA");
    return r;
}

inline void run_cpu_vs_cuda(const std::vector<OpCase>& table, DType dtype = DType::f32, double tol_scale = 1.0) {
    for (const auto& c : table) {
        std::vector<Tensor> in = make_inputs(c, dtype);
        auto cpu = run_case_on(c, in, Device::cpu);
        auto gpu = run_case_on(c, in, Device::cuda);
        BOOST_REQUIRE_EQUAL(cpu.size(), gpu.size());
        for (std::size_t k = 0; k < cpu.size(); ++k) {
            double err = relative_error(gpu[k], cpu[k]);
            BOOST_TEST_INFO(c.name << (k == 0 ? " output" : " gradient " + std::to_string(k - 1)) << " (" << dtype_name(dtype)
                                   << "): relative error " << err);
            BOOST_TEST(err < c.cuda_tol * tol_scale);
        }
    }
}

}  // namespace deviant::testing
