// deviant/ops/unary_math.hpp — the formulas of the element-wise ops and their derivatives,
// in one place for the CPU reference (ops/unary.hpp) and the CUDA kernel (kernels/elementwise.cuh).
// C is the compute type (float or double). Numerically stable forms throughout:
//   softplus(x)   = max(x, 0) + log1p(exp(-|x|))
//   logsigmoid(x) = -softplus(-x)
//   log1mexp(a)   = log(1 - exp(a)) for a <= 0:  a < -ln2 ? log1p(-exp(a)) : log(-expm1(a))
#pragma once
#include <cmath>

#include "deviant/core/hd.hpp"
#include "deviant/kernels/api.hpp"

namespace deviant::math {

template <class C> DEVIANT_HD C sigmoid(C x) {
    if (x >= C(0)) return C(1) / (C(1) + std::exp(-x));
    C e = std::exp(x);
    return e / (C(1) + e);
}
template <class C> DEVIANT_HD C softplus(C x) { return (x > C(0) ? x : C(0)) + std::log1p(std::exp(-std::fabs(x))); }
template <class C> DEVIANT_HD C log1mexp(C a) {
    const C ln2 = C(0.693147180559945309417232121458);
    return a < -ln2 ? std::log1p(-std::exp(a)) : std::log(-std::expm1(a));
}
template <class C> constexpr C gelu_k() { return C(0.797884560802865355879892119869); }  // sqrt(2/pi)
template <class C> constexpr C gelu_c() { return C(0.044715); }

// SwiGLU's gated unit y = silu(g) * u and its two partial derivatives, with s = sigmoid(g):
// dy/dg = u * s * (1 + g * (1 - s)), dy/du = g * s.
template <class C> DEVIANT_HD C swiglu(C g, C u) { return g * sigmoid(g) * u; }
template <class C> DEVIANT_HD void swiglu_backward(C g, C u, C dy, C& dg, C& du) {
    const C s = sigmoid(g);
    du = dy * g * s;
    dg = dy * u * s * (C(1) + g * (C(1) - s));
}

// y = f(x)
template <class C> DEVIANT_HD C unary(kernels::UnaryOp op, C x) {
    using kernels::UnaryOp;
    switch (op) {
        case UnaryOp::neg: return -x;
        case UnaryOp::exp: return std::exp(x);
        case UnaryOp::log: return std::log(x);
        case UnaryOp::softplus: return softplus(x);
        case UnaryOp::logsigmoid: return -softplus(-x);
        case UnaryOp::log1mexp: return log1mexp(x);
        case UnaryOp::sigmoid: return sigmoid(x);
        case UnaryOp::tanh: return std::tanh(x);
        case UnaryOp::gelu_tanh: return C(0.5) * x * (C(1) + std::tanh(gelu_k<C>() * (x + gelu_c<C>() * x * x * x)));
        case UnaryOp::silu: return x * sigmoid(x);
        case UnaryOp::relu: return x > C(0) ? x : C(0);
        case UnaryOp::sqrt: return std::sqrt(x);
        case UnaryOp::rsqrt: return C(1) / std::sqrt(x);
        case UnaryOp::square: return x * x;
    }
    return x;
}

// dy/dx, given x and y = f(x)
template <class C> DEVIANT_HD C unary_derivative(kernels::UnaryOp op, C x, C y) {
    using kernels::UnaryOp;
    switch (op) {
        case UnaryOp::neg: return C(-1);
        case UnaryOp::exp: return y;
        case UnaryOp::log: return C(1) / x;
        case UnaryOp::softplus: return sigmoid(x);
        case UnaryOp::logsigmoid: return sigmoid(-x);
        case UnaryOp::log1mexp: return C(-1) / std::expm1(-x);  // d/da log(1 - e^a) = -1 / (e^-a - 1)
        case UnaryOp::sigmoid: return y * (C(1) - y);
        case UnaryOp::tanh: return C(1) - y * y;
        case UnaryOp::gelu_tanh: {
            C t = std::tanh(gelu_k<C>() * (x + gelu_c<C>() * x * x * x));
            return C(0.5) * (C(1) + t) + C(0.5) * x * (C(1) - t * t) * gelu_k<C>() * (C(1) + C(3) * gelu_c<C>() * x * x);
        }
        case UnaryOp::silu: {
            C s = sigmoid(x);
            return s * (C(1) + x * (C(1) - s));
        }
        case UnaryOp::relu: return x > C(0) ? C(1) : C(0);
        case UnaryOp::sqrt: return C(0.5) / y;
        case UnaryOp::rsqrt: return C(-0.5) * y * y * y;
        case UnaryOp::square: return C(2) * x;
    }
    return C(0);
}

template <class C> DEVIANT_HD C binary(kernels::BinaryOp op, C a, C b) {
    using kernels::BinaryOp;
    switch (op) {
        case BinaryOp::add: return a + b;
        case BinaryOp::sub: return a - b;
        case BinaryOp::mul: return a * b;
        case BinaryOp::div: return a / b;
    }
    return a;
}

}  // namespace deviant::math
