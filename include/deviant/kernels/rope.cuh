// deviant/kernels/rope.cuh — rotary embedding kernel; CPU reference in ops/rope.hpp.
// One thread per (row, i < D/2) pair; the angle is computed in float64 for accuracy at long
// positions, then applied in the compute type.
#pragma once
#include "deviant/kernels/common.cuh"

namespace deviant::kernels {

template <class T>
__global__ void rope_kernel(const T* x, const std::int64_t* pos, const double* inv_freq, T* y, std::int64_t B, std::int64_t H,
                            std::int64_t Tn, std::int64_t D, double scaling, bool inverse) {
    using C = compute_of_t<T>;
    std::int64_t half = D / 2, n = B * H * Tn * half;
    DEVIANT_GRID_STRIDE(k, n) {
        std::int64_t i = k % half, row = k / half;  // row = (b * H + h) * T + t
        std::int64_t t = row % Tn, b = row / (H * Tn);
        double a = double(pos[b * Tn + t]) * inv_freq[i];
        C c = C(scaling * cos(a)), s = C(scaling * (inverse ? -sin(a) : sin(a)));
        const T* xr = x + row * D;
        C x1 = ld(xr[i]), x2 = ld(xr[i + half]);
        y[row * D + i] = st<T>(x1 * c - x2 * s);
        y[row * D + i + half] = st<T>(x2 * c + x1 * s);
    }
}

void rope_forward(const TensorRef& x, const TensorRef& positions, const TensorRef& inv_freq, const TensorRef& y, double scaling,
                  bool inverse) {
    std::int64_t B = x.shape[0], H = x.shape[1], Tn = x.shape[2], D = x.shape[3];
    std::int64_t n = B * H * Tn * (D / 2);
    dispatch_float(x.dtype, [&](auto tag) {
        using T = decltype(tag);
        rope_kernel<T><<<blocks_for(n, 256), 256>>>(static_cast<const T*>(x.data), static_cast<const std::int64_t*>(positions.data),
                                                    static_cast<const double*>(inv_freq.data), static_cast<T*>(y.data), B, H, Tn, D,
                                                    scaling, inverse);
    });
    check_launch("rope_forward");
}

}  // namespace deviant::kernels
