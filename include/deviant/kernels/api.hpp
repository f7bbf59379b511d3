// deviant/kernels/api.hpp — how CUDA launchers are declared so that plain C++ can call them.
// Each ops/*.hpp declares its launchers with DEVIANT_CUDA_LAUNCHER; the definitions live in the kernels/*.cuh headers and are compiled once per program through
// <deviant/cuda_impl.cu> (the deviant::cuda CMake target adds it). Without DEVIANT_WITH_CUDA
// each launcher is an inline function that throws "no CUDA support", so code that only runs
// on the CPU links without the CUDA toolkit.
#pragma once
#include <cstdint>

#include "deviant/core/cuda_runtime.hpp"
#include "deviant/core/tensor_ref.hpp"

#ifdef DEVIANT_WITH_CUDA
#define DEVIANT_CUDA_LAUNCHER(name, ...) void name(__VA_ARGS__);
#else
#define DEVIANT_CUDA_LAUNCHER(name, ...) \
    template <class... A> inline void name(A&&...) { ::deviant::cuda::require_available(); }
#endif

namespace deviant::kernels {

// Element-wise unary math shared by the CPU reference and the CUDA kernels (ops/unary_math.hpp).
enum class UnaryOp : std::uint8_t { neg, exp, log, softplus, logsigmoid, log1mexp, sigmoid, tanh, gelu_tanh, silu, relu, sqrt, rsqrt, square };
enum class BinaryOp : std::uint8_t { add, sub, mul, div };
enum class ReduceOp : std::uint8_t { sum, mean, max };

// --- core copies (kernels/copy.cuh) ---
// dst (contiguous) = src (any strides), converting between any two dtypes.
DEVIANT_CUDA_LAUNCHER(copy_strided, const TensorRef& dst, const TensorRef& src)
DEVIANT_CUDA_LAUNCHER(fill, const TensorRef& dst, double value)

// --- element-wise (kernels/elementwise.cuh) ---
// y = f(alpha * x) * 1 ... see ops/unary.hpp for the exact contract of each op.
DEVIANT_CUDA_LAUNCHER(unary_forward, UnaryOp op, const TensorRef& x, const TensorRef& y)
// dx = f'(x) * dy (y = f(x) is supplied for ops whose derivative is cheaper from y).
DEVIANT_CUDA_LAUNCHER(unary_backward, UnaryOp op, const TensorRef& x, const TensorRef& y, const TensorRef& dy,
                      const TensorRef& dx)
// y = alpha * x + beta (scale and shift)
DEVIANT_CUDA_LAUNCHER(affine, const TensorRef& x, const TensorRef& y, double alpha, double beta)
// out = a (op) b with numpy broadcasting; a and b carry stride-0 broadcast views of out's shape.
DEVIANT_CUDA_LAUNCHER(binary_forward, BinaryOp op, const TensorRef& a, const TensorRef& b, const TensorRef& out)

// y = silu(gate) * up, SwiGLU's gated unit (gate, up, y contiguous, one shape and dtype)
DEVIANT_CUDA_LAUNCHER(swiglu_forward, const TensorRef& gate, const TensorRef& up, const TensorRef& y)
// dgate = dy * up * silu'(gate), dup = dy * silu(gate) (all contiguous, one shape and dtype)
DEVIANT_CUDA_LAUNCHER(swiglu_backward, const TensorRef& gate, const TensorRef& up, const TensorRef& dy, const TensorRef& dgate,
                      const TensorRef& dup)

// --- reductions (kernels/reduce.cuh) ---
// x viewed as (outer, n, inner) contiguous; y (outer, inner); argmax (outer, inner) int64 for max.
DEVIANT_CUDA_LAUNCHER(reduce_axis, ReduceOp op, const TensorRef& x, const TensorRef& y, const TensorRef& argmax,
                      std::int64_t outer, std::int64_t n, std::int64_t inner)
// dst (contiguous, shape of `dst`) = sum of src over the dims where dst has extent 1 (src contiguous, same rank)
DEVIANT_CUDA_LAUNCHER(sum_to_shape, const TensorRef& src, const TensorRef& dst)

}  // namespace deviant::kernels
