// deviant/kernels/norm.cuh — CUDA kernels for ops/norm.hpp: fused RMS / layer normalisation of
// contiguous (rows, cols) data and its backward. One block per row for the forward and for dx
// (block reductions from common.cuh, accumulation in the compute type). dweight / dbias are
// reduced deterministically: each block of columns x chunk of rows writes one partial sum in a
// fixed row order, then a second kernel adds the chunks in order.
#pragma once
#include "deviant/kernels/common.cuh"

namespace deviant::kernels {

template <class T>
__global__ void norm_forward_kernel(const T* x, const T* w, const T* b, T* y, compute_of_t<T>* stats, std::int64_t rows,
                                    std::int64_t cols, double eps, bool centered) {
    using C = compute_of_t<T>;
    for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* xr = x + r * cols;
        T* yr = y + r * cols;
        C mu = C(0);
        if (centered) {
            C s = C(0);
            for (std::int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += ld(xr[j]);
            mu = block_sum(s) / C(cols);
        }
        C ss = C(0);
        for (std::int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
            C d = ld(xr[j]) - mu;
            ss += d * d;
        }
        ss = block_sum(ss);
        C inv = C(1) / sqrt(ss / C(cols) + C(eps));
        for (std::int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
            C v = (ld(xr[j]) - mu) * inv * ld(w[j]);
            yr[j] = st<T>(b ? v + ld(b[j]) : v);
        }
        if (threadIdx.x == 0) {
            stats[2 * r] = mu;
            stats[2 * r + 1] = inv;
        }
    }
}

template <class T>
__global__ void norm_backward_dx_kernel(const T* x, const T* w, const compute_of_t<T>* stats, const T* dy, T* dx, std::int64_t rows,
                                        std::int64_t cols, bool centered) {
    using C = compute_of_t<T>;
    for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *xr = x + r * cols, *gr = dy + r * cols;
        T* dr = dx + r * cols;
        const C mu = stats[2 * r], inv = stats[2 * r + 1];
        C sum_g = C(0), sum_gx = C(0);
        for (std::int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
            C gj = ld(gr[j]) * ld(w[j]);
            sum_g += gj;
            sum_gx += gj * (ld(xr[j]) - mu) * inv;
        }
        sum_gx = block_sum(sum_gx);
        C mean_g = centered ? block_sum(sum_g) / C(cols) : C(0), mean_gx = sum_gx / C(cols);
        for (std::int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
            C xh = (ld(xr[j]) - mu) * inv;
            dr[j] = st<T>(inv * (ld(gr[j]) * ld(w[j]) - mean_g - xh * mean_gx));
        }
    }
}

// partial (chunks, 2 * cols): [c, j] = sum of dy * xhat, [c, cols + j] = sum of dy over chunk c's rows.
template <class T>
__global__ void norm_backward_partial_kernel(const T* x, const compute_of_t<T>* stats, const T* dy, compute_of_t<T>* partial,
                                             std::int64_t rows, std::int64_t cols, std::int64_t rows_per_chunk) {
    using C = compute_of_t<T>;
    const std::int64_t chunk = blockIdx.y;
    const std::int64_t begin = chunk * rows_per_chunk, end = min(rows, begin + rows_per_chunk);
    for (std::int64_t j = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < cols; j += std::int64_t(gridDim.x) * blockDim.x) {
        C dw = C(0), db = C(0);
        for (std::int64_t r = begin; r < end; ++r) {
            C g = ld(dy[r * cols + j]);
            dw += g * (ld(x[r * cols + j]) - stats[2 * r]) * stats[2 * r + 1];
            db += g;
        }
        partial[chunk * 2 * cols + j] = dw;
        partial[chunk * 2 * cols + cols + j] = db;
    }
}

template <class T>
__global__ void norm_backward_finish_kernel(const compute_of_t<T>* partial, T* dweight, T* dbias, std::int64_t chunks, std::int64_t cols) {
    using C = compute_of_t<T>;
    DEVIANT_GRID_STRIDE(j, cols) {
        C dw = C(0), db = C(0);
        for (std::int64_t c = 0; c < chunks; ++c) {
            dw += partial[c * 2 * cols + j];
            db += partial[c * 2 * cols + cols + j];
        }
        if (dweight) dweight[j] = st<T>(dw);
        if (dbias) dbias[j] = st<T>(db);
    }
}

inline void norm_launch_shape(std::int64_t rows, std::int64_t cols, unsigned& blocks, int& threads) {
    threads = cols <= 32 ? 32 : cols >= 2048 ? 1024 : int((cols + 63) / 64 * 32);  // about two elements per thread
    blocks = unsigned(rows < (1 << 20) ? rows : (1 << 20));
}

void norm_forward(const TensorRef& x, const TensorRef& weight, const TensorRef& bias, const TensorRef& y, const TensorRef& stats,
                  std::int64_t rows, std::int64_t cols, double eps, bool centered) {
    if (rows == 0 || cols == 0) return;
    unsigned blocks;
    int threads;
    norm_launch_shape(rows, cols, blocks, threads);
    dispatch_float(x.dtype, [&](auto tag) {
        using T = decltype(tag);
        norm_forward_kernel<T><<<blocks, threads>>>(static_cast<const T*>(x.data), static_cast<const T*>(weight.data),
                                                    static_cast<const T*>(bias.data), static_cast<T*>(y.data),
                                                    static_cast<compute_of_t<T>*>(stats.data), rows, cols, eps, centered);
    });
    check_launch("norm_forward");
}

void norm_backward(const TensorRef& x, const TensorRef& weight, const TensorRef& stats, const TensorRef& dy, const TensorRef& dx,
                   const TensorRef& dweight, const TensorRef& dbias, const TensorRef& partial, std::int64_t rows, std::int64_t cols,
                   bool centered) {
    if (rows == 0 || cols == 0) return;
    unsigned blocks;
    int threads;
    norm_launch_shape(rows, cols, blocks, threads);
    dispatch_float(x.dtype, [&](auto tag) {
        using T = decltype(tag);
        using C = compute_of_t<T>;
        const T *px = static_cast<const T*>(x.data), *pg = static_cast<const T*>(dy.data);
        const C* ps = static_cast<const C*>(stats.data);
        norm_backward_dx_kernel<T><<<blocks, threads>>>(px, static_cast<const T*>(weight.data), ps, pg, static_cast<T*>(dx.data), rows,
                                                        cols, centered);
        check_launch("norm_backward_dx");
        if (!dweight.data && !dbias.data) return;
        DEVIANT_REQUIRE(partial.data && partial.rank == 2 && partial.shape[1] == 2 * cols && partial.shape[0] >= 1 &&
                            partial.shape[0] <= 65535,
                        "norm backward: bad scratch for {} columns", cols);
        const std::int64_t chunks = partial.shape[0], rows_per_chunk = (rows + chunks - 1) / chunks;
        const int col_threads = 128;
        dim3 grid(unsigned((cols + col_threads - 1) / col_threads < 65535 ? (cols + col_threads - 1) / col_threads : 65535),
                  unsigned(chunks));
        C* pp = static_cast<C*>(partial.data);
        norm_backward_partial_kernel<T><<<grid, col_threads>>>(px, ps, pg, pp, rows, cols, rows_per_chunk);
        check_launch("norm_backward_partial");
        norm_backward_finish_kernel<T><<<blocks_for(cols, 256), 256>>>(pp, static_cast<T*>(dweight.data), static_cast<T*>(dbias.data),
                                                                         chunks, cols);
        check_launch("norm_backward_finish");
    });
}

}  // namespace deviant::kernels
