// deviant/optim/clip.hpp — the global L2 norm of all gradients and clipping by it, as
// torch.nn.utils.clip_grad_norm_. Why: preference losses spike on hard pairs; clipping keeps one
// bad batch from wrecking the weights, and the pre-clip norm is the trainer's health metric.
// Squares are summed in double on every device (CUDA: a deterministic two-pass block reduction
// over all gradients at once in kernels/grad_norm.cuh, one host synchronisation per norm).
// Parameters without a gradient contribute nothing.
#pragma once
#include <cmath>
#include <set>
#include <vector>

#include "deviant/autodiff/tape.hpp"

namespace deviant::kernels {
// result = sum of x[i]^2 over a contiguous floating tensor, accumulated in double.
DEVIANT_CUDA_LAUNCHER(sum_of_squares, const TensorRef& x, double& result)
// result = the sum of squares over `count` contiguous floating tensors (any mix of dtypes), one host sync.
DEVIANT_CUDA_LAUNCHER(sum_of_squares_many, const TensorRef* xs, std::int64_t count, double& result)
}  // namespace deviant::kernels

namespace deviant::optim {

namespace detail {
// The distinct parameters of `params` that hold a gradient (null entries are an error).
inline std::vector<Parameter*> with_gradients(const std::vector<Parameter*>& params, const char* op) {
    std::vector<Parameter*> out;
    std::set<const Parameter*> seen;
    for (std::size_t i = 0; i < params.size(); ++i) {
        DEVIANT_REQUIRE(params[i] != nullptr, "{}: parameter {} of {} is null", op, i, params.size());
        if (!params[i]->grad.defined() || !seen.insert(params[i]).second) continue;
        DEVIANT_REQUIRE(is_floating(params[i]->grad.dtype()), "{}: gradient of '{}' is not floating ({})", op, params[i]->name,
                        params[i]->grad.describe());
        out.push_back(params[i]);
    }
    return out;
}

// Sum of squares of one tensor in double.
inline double sum_of_squares(const Tensor& t_in) {
    if (t_in.numel() == 0) return 0.0;
    Tensor t = t_in.contiguous();
    if (t.device() == Device::cuda) {
        double r = 0.0;
        kernels::sum_of_squares(t.ref(), r);
        return r;
    }
    return DEVIANT_DISPATCH_FLOAT(t.dtype(), T, [&] {
        const T* p = t.data<T>();
        double acc = 0.0;
        for (std::int64_t i = 0, n = t.numel(); i < n; ++i) {
            double x = double(load(p[i]));
            acc += x * x;
        }
        return acc;
    });
}

// t *= scale in place (t contiguous).
inline void scale_in_place(Tensor& t, double scale) {
    if (t.numel() == 0) return;
    if (!t.is_contiguous()) t = t.contiguous();  // a fresh copy replaces the strided gradient
    if (t.device() == Device::cuda) {
        kernels::affine(t.ref(), t.ref(), scale, 0.0);
        return;
    }
    DEVIANT_DISPATCH_FLOAT(t.dtype(), T, [&] {
        T* p = t.data<T>();
        using C = compute_t<T>;
        for (std::int64_t i = 0, n = t.numel(); i < n; ++i) p[i] = store<T>(load(p[i]) * C(scale));
    });
}

// Sum of squares over the gradients of `ps`: CPU ones one by one, CUDA ones in one batched reduction.
inline double gradient_squares(std::vector<Parameter*>& ps) {
    double total = 0.0;
    std::vector<TensorRef> on_cuda;
    for (Parameter* p : ps) {
        if (p->grad.device() != Device::cuda) {
            total += sum_of_squares(p->grad);
            continue;
        }
        if (!p->grad.is_contiguous()) p->grad = p->grad.contiguous();
        if (p->grad.numel() > 0) on_cuda.push_back(p->grad.ref());
    }
    if (!on_cuda.empty()) {
        double r = 0.0;
        kernels::sum_of_squares_many(on_cuda.data(), std::int64_t(on_cuda.size()), r);
        total += r;
    }
    return total;
}
}  // namespace detail

// sqrt(sum over every gradient element of g^2); 0 when no parameter has a gradient.
inline double global_grad_norm(const std::vector<Parameter*>& params) {
    std::vector<Parameter*> ps = detail::with_gradients(params, "global_grad_norm");
    return std::sqrt(detail::gradient_squares(ps));
}

// Scales every gradient by max_norm / (norm + 1e-6) when the global norm exceeds max_norm.
// Returns the norm before clipping; a non-finite norm is returned without touching any gradient.
inline double clip_grad_norm(const std::vector<Parameter*>& params, double max_norm) {
    DEVIANT_REQUIRE(max_norm > 0 && !std::isnan(max_norm), "clip_grad_norm: max_norm {} must be > 0", max_norm);
    std::vector<Parameter*> ps = detail::with_gradients(params, "clip_grad_norm");
    double norm = std::sqrt(detail::gradient_squares(ps));
    if (!std::isfinite(norm) || norm <= max_norm) return norm;
    double scale = max_norm / (norm + 1e-6);
    for (Parameter* p : ps) detail::scale_in_place(p->grad, scale);
    return norm;
}

}  // namespace deviant::optim
