// deviant/optim/clip.hpp — the global L2 norm of all gradients and clipping by it, as
// torch.nn.utils.clip_grad_norm_. Why: preference losses spike on hard pairs; clipping keeps one
// bad batch from wrecking the weights, and the pre-clip norm is the trainer's health metric.
// Squares are summed in double on every device (CUDA: a deterministic two-pass block reduction
// over all gradients at once in kernels/grad_norm.cuh, one host synchronisation per norm).
// Parameters without a gradient contribute nothing.
#pragma once
#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

#include "deviant/autodiff/tape.hpp"
#include "deviant/core/thread_pool.hpp"

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

// Elements per block of the CPU sum of squares: blocks are summed on the thread pool and their
// partial sums added in block order, so the result does not depend on the thread count.
inline constexpr std::int64_t kSquaresBlock = std::int64_t(1) << 16;

// Sum of squares of one tensor in double. On the CPU each block sums in 8 independent lanes (a
// single running sum would be one chain of dependent double additions, 4 cycles per element).
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
        const std::int64_t n = t.numel(), blocks = (n + kSquaresBlock - 1) / kSquaresBlock;
        std::vector<double> partial(static_cast<std::size_t>(blocks));
        auto sum_blocks = [&](std::int64_t b0, std::int64_t b1) {
            for (std::int64_t b = b0; b < b1; ++b) {
                const std::int64_t i0 = b * kSquaresBlock, i1 = std::min(n, i0 + kSquaresBlock);
                double lane[8] = {};
                std::int64_t i = i0;
                for (; i + 8 <= i1; i += 8)
                    for (int k = 0; k < 8; ++k) {
                        const double x = double(load(p[i + k]));
                        lane[k] += x * x;
                    }
                for (; i < i1; ++i) {
                    const double x = double(load(p[i]));
                    lane[0] += x * x;
                }
                partial[std::size_t(b)] = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
            }
        };
        if (blocks > 1) parallel_for(blocks, sum_blocks);
        else sum_blocks(0, blocks);
        double acc = 0.0;
        for (double v : partial) acc += v;
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
        auto scale_range = [&](std::int64_t i0, std::int64_t i1) {
            for (std::int64_t i = i0; i < i1; ++i) p[i] = store<T>(load(p[i]) * C(scale));
        };
        if (t.numel() >= kSquaresBlock) parallel_for(t.numel(), scale_range);
        else scale_range(0, t.numel());
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
