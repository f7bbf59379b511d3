// tests/gradcheck.hpp — the generic finite-difference gradient checker used for every op.
// In float64 on the CPU: builds Parameters from the inputs, projects the op's output onto a
// fixed random tensor R (loss = sum(R * f(x))), runs backward with freshly allocated buffers
// poisoned with NaN (unwritten gradient entries show up), into gradient buffers pre-seeded
// with a known value (proving that gradients are added, not assigned), and compares against
// central differences.
#pragma once
#include <boost/test/unit_test.hpp>

#include <functional>
#include <random>

#include "deviant/ops/elementwise.hpp"

namespace deviant::testing {

using OpFn = std::function<Var(Tape&, std::vector<Var>&)>;

inline Tensor random_tensor(const Shape& s, std::mt19937& rng, double lo = -1.0, double hi = 1.0, DType dt = DType::f64) {
    std::uniform_real_distribution<double> u(lo, hi);
    std::vector<double> v(std::size_t(s.numel()));
    for (auto& x : v) x = u(rng);
    return Tensor::from(v, s, dt);
}

inline double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
    BOOST_REQUIRE_EQUAL(a.size(), b.size());
    double num = 0, den = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return INFINITY;
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return std::sqrt(num) / std::max(std::sqrt(den), 1e-12);
}

// Returns, per input, the relative error of the analytic gradient against central differences
// (-1 for inputs that take no gradient). Never asserts: check_gradient and the negative
// controls in test_autodiff.cpp build on it.
inline std::vector<double> gradient_errors(const OpFn& f, std::vector<Tensor> inputs, std::vector<bool> differentiable = {},
                                           double eps = 1e-6) {
    if (differentiable.empty()) differentiable.assign(inputs.size(), true);
    std::mt19937 rng(1234);
    std::vector<Parameter> params(inputs.size());
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        params[i] = Parameter("x" + std::to_string(i), inputs[i].clone());
        params[i].trainable = differentiable[i];
    }
    Tensor projection;  // fixed random R: loss = sum(R * f(x))
    auto evaluate = [&](Tape& tape) -> Var {
        std::vector<Var> vars;
        for (auto& p : params) vars.push_back(tape.param(p));
        Var y = f(tape, vars);
        if (!projection.defined()) projection = random_tensor(y.shape(), rng);
        return mul(y, tape.constant(projection.to(y.dtype())));
    };
    auto loss_value = [&]() {
        NoGradGuard ng;
        Tape tape;
        double s = 0;
        for (double v : evaluate(tape).value().to_vector<double>()) s += v;
        return s;
    };
    loss_value();  // fixes the projection
    const double seed = 0.25;
    for (auto& p : params) p.grad = Tensor::full(p.value.shape(), seed, p.value.dtype());
    {
        PoisonAllocations poison;  // any gradient entry a backward rule forgets to write is NaN
        Tape tape;
        Var prod = evaluate(tape);
        tape.backward(prod, Tensor::ones(prod.shape(), prod.dtype()));
    }
    std::vector<double> errors(inputs.size(), -1.0);
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        if (!differentiable[i]) continue;
        Parameter& p = params[i];
        std::vector<double> analytic = p.grad.to_vector<double>();
        for (double& g : analytic) g -= seed;  // the pre-seeded value must still be there
        std::vector<double> numeric(analytic.size());
        double* x = p.value.data<double>();
        for (std::size_t k = 0; k < numeric.size(); ++k) {
            double keep = x[k];
            x[k] = keep + eps;
            double up = loss_value();
            x[k] = keep - eps;
            double down = loss_value();
            x[k] = keep;
            numeric[k] = (up - down) / (2 * eps);
        }
        errors[i] = relative_error(analytic, numeric);
    }
    return errors;
}

// Asserts that every differentiable input's gradient matches central differences within `tol`.
inline void check_gradient(const std::string& name, const OpFn& f, std::vector<Tensor> inputs,
                           std::vector<bool> differentiable = {}, double tol = 1e-6) {
    auto errors = gradient_errors(f, inputs, differentiable);
    for (std::size_t i = 0; i < errors.size(); ++i) {
        if (errors[i] < 0) continue;
        BOOST_TEST_INFO("op " << name << ", input " << i << " " << inputs[i].shape().str() << ": relative error " << errors[i]);
        BOOST_TEST(errors[i] < tol);
    }
}

// Central differences on every element of `params` (float64) against the backward pass of the
// scalar `loss`, run with NaN-poisoned fresh allocations; used for layers and whole models.
template <class Params>
void check_parameter_gradients(Params& params, const std::function<Var(Tape&)>& loss, double tol = 1e-6) {
    for (Parameter& p : params) p.zero_grad();
    {
        PoisonAllocations poison;
        Tape t;
        t.backward(loss(t));
    }
    for (Parameter& p : params) {
        BOOST_TEST_INFO("parameter " << p.name);
        BOOST_REQUIRE(p.grad.defined());
        auto analytic = p.grad.to_vector<double>();
        std::vector<double> numeric(analytic.size());
        double* x = p.value.data<double>();
        for (std::size_t k = 0; k < numeric.size(); ++k) {
            double keep = x[k], eps = 1e-6;
            NoGradGuard ng;
            Tape t1, t2;
            x[k] = keep + eps;
            double up = loss(t1).value().item();
            x[k] = keep - eps;
            double down = loss(t2).value().item();
            x[k] = keep;
            numeric[k] = (up - down) / (2 * eps);
        }
        BOOST_TEST_INFO("parameter " << p.name);
        BOOST_TEST(relative_error(analytic, numeric) < tol);
    }
}

}  // namespace deviant::testing
