// deviant/kernels/elementwise.cuh — CUDA kernels for ops/elementwise.hpp: unary math and its
// derivative (formulas shared with the CPU through ops/unary_math.hpp), SwiGLU's gated unit and
// its backward in one pass each, scale/shift, broadcast
// binary ops over strided operands, and sum_to_shape for the backward of a broadcast.
#pragma once
#include "deviant/kernels/common.cuh"
#include "deviant/ops/unary_math.hpp"

namespace deviant::kernels {

template <class T>
__global__ void unary_forward_kernel(UnaryOp op, const T* x, T* y, std::int64_t n) {
    using C = compute_of_t<T>;
    DEVIANT_GRID_STRIDE(i, n) { y[i] = st<T>(math::unary<C>(op, ld(x[i]))); }
}
template <class T>
__global__ void unary_backward_kernel(UnaryOp op, const T* x, const T* y, const T* dy, T* dx, std::int64_t n) {
    using C = compute_of_t<T>;
    DEVIANT_GRID_STRIDE(i, n) { dx[i] = st<T>(math::unary_derivative<C>(op, ld(x[i]), ld(y[i])) * ld(dy[i])); }
}
template <class T>
__global__ void swiglu_forward_kernel(const T* g, const T* u, T* y, std::int64_t n) {
    using C = compute_of_t<T>;
    DEVIANT_GRID_STRIDE(i, n) { y[i] = st<T>(math::swiglu<C>(ld(g[i]), ld(u[i]))); }
}
template <class T>
__global__ void swiglu_backward_kernel(const T* g, const T* u, const T* dy, T* dg, T* du, std::int64_t n) {
    using C = compute_of_t<T>;
    DEVIANT_GRID_STRIDE(i, n) {
        C a, b;
        math::swiglu_backward<C>(ld(g[i]), ld(u[i]), ld(dy[i]), a, b);
        dg[i] = st<T>(a);
        du[i] = st<T>(b);
    }
}
template <class T>
__global__ void affine_kernel(const T* x, T* y, double alpha, double beta, std::int64_t n) {
    using C = compute_of_t<T>;
    DEVIANT_GRID_STRIDE(i, n) { y[i] = st<T>(C(alpha) * ld(x[i]) + C(beta)); }
}
template <class T>
__global__ void binary_kernel(BinaryOp op, const T* a, TensorRef ra, const T* b, TensorRef rb, T* out, std::int64_t n) {
    using C = compute_of_t<T>;
    DEVIANT_GRID_STRIDE(i, n) {
        out[i] = st<T>(math::binary<C>(op, ld(a[strided_offset(ra, i)]), ld(b[strided_offset(rb, i)])));
    }
}
// One thread per destination element; loops over the reduced (broadcast) index space.
template <class T>
__global__ void sum_to_shape_kernel(const T* src, TensorRef rs, T* dst, TensorRef rd, std::int64_t n_dst, std::int64_t n_red) {
    using C = compute_of_t<T>;
    DEVIANT_GRID_STRIDE(i, n_dst) {
        // position of this destination element in src's index space
        std::int64_t base = 0, rem = i;
        for (int k = rd.rank - 1; k >= 0; --k) {
            std::int64_t e = rd.shape[k];
            base += (rem % e) * rs.strides[k];
            rem /= e;
        }
        C acc = C(0);
        for (std::int64_t r = 0; r < n_red; ++r) {
            std::int64_t off = base, q = r;
            for (int k = rs.rank - 1; k >= 0; --k) {
                if (rd.shape[k] != 1 || rs.shape[k] == 1) continue;
                off += (q % rs.shape[k]) * rs.strides[k];
                q /= rs.shape[k];
            }
            acc += ld(src[off]);
        }
        dst[i] = st<T>(acc);
    }
}

void unary_forward(UnaryOp op, const TensorRef& x, const TensorRef& y) {
    std::int64_t n = x.numel();
    dispatch_float(x.dtype, [&](auto tag) {
        using T = decltype(tag);
        unary_forward_kernel<T><<<blocks_for(n, 256), 256>>>(op, static_cast<const T*>(x.data), static_cast<T*>(y.data), n);
    });
    check_launch("unary_forward");
}
void unary_backward(UnaryOp op, const TensorRef& x, const TensorRef& y, const TensorRef& dy, const TensorRef& dx) {
    std::int64_t n = x.numel();
    dispatch_float(x.dtype, [&](auto tag) {
        using T = decltype(tag);
        unary_backward_kernel<T><<<blocks_for(n, 256), 256>>>(op, static_cast<const T*>(x.data), static_cast<const T*>(y.data),
                                                              static_cast<const T*>(dy.data), static_cast<T*>(dx.data), n);
    });
    check_launch("unary_backward");
}
void swiglu_forward(const TensorRef& gate, const TensorRef& up, const TensorRef& y) {
    std::int64_t n = gate.numel();
    dispatch_float(gate.dtype, [&](auto tag) {
        using T = decltype(tag);
        swiglu_forward_kernel<T><<<blocks_for(n, 256), 256>>>(static_cast<const T*>(gate.data), static_cast<const T*>(up.data),
                                                              static_cast<T*>(y.data), n);
    });
    check_launch("swiglu_forward");
}
void swiglu_backward(const TensorRef& gate, const TensorRef& up, const TensorRef& dy, const TensorRef& dgate, const TensorRef& dup) {
    std::int64_t n = gate.numel();
    dispatch_float(gate.dtype, [&](auto tag) {
        using T = decltype(tag);
        swiglu_backward_kernel<T><<<blocks_for(n, 256), 256>>>(static_cast<const T*>(gate.data), static_cast<const T*>(up.data),
                                                               static_cast<const T*>(dy.data), static_cast<T*>(dgate.data),
                                                               static_cast<T*>(dup.data), n);
    });
    check_launch("swiglu_backward");
}
void affine(const TensorRef& x, const TensorRef& y, double alpha, double beta) {
    std::int64_t n = x.numel();
    dispatch_float(x.dtype, [&](auto tag) {
        using T = decltype(tag);
        affine_kernel<T><<<blocks_for(n, 256), 256>>>(static_cast<const T*>(x.data), static_cast<T*>(y.data), alpha, beta, n);
    });
    check_launch("affine");
}
void binary_forward(BinaryOp op, const TensorRef& a, const TensorRef& b, const TensorRef& out) {
    std::int64_t n = out.numel();
    dispatch_float(out.dtype, [&](auto tag) {
        using T = decltype(tag);
        binary_kernel<T><<<blocks_for(n, 256), 256>>>(op, static_cast<const T*>(a.data), a, static_cast<const T*>(b.data), b,
                                                      static_cast<T*>(out.data), n);
    });
    check_launch("binary_forward");
}
void sum_to_shape(const TensorRef& src, const TensorRef& dst) {
    std::int64_t n_dst = dst.numel(), n_red = 1;
    for (int k = 0; k < src.rank; ++k)
        if (dst.shape[k] == 1) n_red *= src.shape[k];
    dispatch_float(src.dtype, [&](auto tag) {
        using T = decltype(tag);
        sum_to_shape_kernel<T><<<blocks_for(n_dst, 128), 128>>>(static_cast<const T*>(src.data), src, static_cast<T*>(dst.data), dst,
                                                                n_dst, n_red);
    });
    check_launch("sum_to_shape");
}

}  // namespace deviant::kernels
