// deviant/kernels/attention.cuh — CUDA kernels for ops/attention.hpp: fused causal attention
// with segment ids and grouped key/value heads, flash-attention style (no (T, T) matrix).
//   forward:  one block (4 warps) per (b, h, tile of 16 query rows); a warp owns 4 query rows.
//             Keys stream through shared memory 32 at a time; lane j scores key j, the warp
//             updates its rows' running max / sum (online softmax), and each lane accumulates
//             the output dims d = lane + 32 c in registers. Writes out and lse.
//   backward: delta = rowsum(dout * out) (one warp per row), then
//             dq:    one block per (b, h, query tile), looping over key tiles (like the forward);
//             dk/dv: one block per (b, kv head, tile of 16 keys), looping over the query heads
//                    of its group and over query tiles (lane i scores query i).
//             Every output element is written by exactly one thread: deterministic, no atomics.
// Storage bf16 / f32 / f64, accumulation in the compute type (f32, or f64 for f64). Head size
// up to 256 (up to 8 dims per lane). Shared-memory tiles are padded to D + 1 where lanes walk
// rows, so those reads do not collide in banks.
#pragma once
#include <type_traits>

#include "deviant/kernels/common.cuh"

namespace deviant::kernels {

namespace attention_detail {
constexpr int warps = 4;
constexpr int threads = warps * 32;
constexpr int rows_per_warp = 4;                  // query rows (forward, dq) or key rows (dk/dv) per warp
constexpr int row_tile = warps * rows_per_warp;   // 16 rows per block
constexpr int chunk = 32;                         // keys (forward, dq) or queries (dk/dv) per shared tile: one per lane

__device__ __forceinline__ std::int64_t imin(std::int64_t a, std::int64_t b) { return a < b ? a : b; }

template <class C> __device__ __forceinline__ C neg_inf() {
    if constexpr (std::is_same_v<C, double>) return __longlong_as_double((long long)0xfff0000000000000ULL);
    else return __int_as_float(int(0xff800000u));
}
template <class C> __device__ __forceinline__ C warp_max(C v) {
    for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}
template <class C> __device__ __forceinline__ C warp_sum(C v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}

// dst[r * stride + d] = src[(r0 + r) * D + d] for r < rows (zero past the sequence end).
template <class T, class C>
__device__ void load_rows(C* dst, const T* src, std::int64_t r0, int rows, std::int64_t Tn, int D, int stride) {
    for (int e = threadIdx.x; e < rows * D; e += blockDim.x) {
        int r = e / D, d = e % D;
        std::int64_t t = r0 + r;
        dst[r * stride + d] = t < Tn ? ld(src[t * D + d]) : C(0);
    }
}

// Shared-memory layout helper: int64 segment ids first (8-byte aligned), then compute-type arrays.
template <class C>
struct SmemCursor {
    unsigned char* base;
    std::size_t offset = 0;
    __device__ std::int64_t* ints(int n) {
        auto* p = reinterpret_cast<std::int64_t*>(base + offset);
        offset += std::size_t(n) * sizeof(std::int64_t);
        return p;
    }
    __device__ C* reals(int n) {
        C* p = reinterpret_cast<C*>(base + offset);
        offset += std::size_t(n) * sizeof(C);
        return p;
    }
};

template <class C> constexpr std::size_t forward_smem(int D) {
    return chunk * sizeof(std::int64_t) + sizeof(C) * (std::size_t(row_tile) * D + 2 * std::size_t(chunk) * (D + 1) + warps * chunk);
}
template <class C> constexpr std::size_t dq_smem(int D) {
    return chunk * sizeof(std::int64_t) + sizeof(C) * (2 * std::size_t(row_tile) * D + 2 * std::size_t(chunk) * (D + 1) + warps * chunk);
}
template <class C> constexpr std::size_t dkdv_smem(int D) {
    return chunk * sizeof(std::int64_t) +
           sizeof(C) * (2 * std::size_t(chunk) + 2 * std::size_t(row_tile) * D + 2 * std::size_t(chunk) * (D + 1) + 2 * warps * chunk);
}
}  // namespace attention_detail

template <class T, int DPL>
__global__ void __launch_bounds__(attention_detail::threads)
    attention_forward_kernel(const T* q, const T* k, const T* v, const std::int64_t* seg, T* out, compute_of_t<T>* lse, std::int64_t B,
                             std::int64_t H, std::int64_t Hkv, std::int64_t Tn, int D, compute_of_t<T> scale, std::int64_t window) {
    using namespace attention_detail;
    using C = compute_of_t<T>;
    constexpr int R = rows_per_warp;
    extern __shared__ __align__(16) unsigned char attention_smem[];
    SmemCursor<C> cur{attention_smem};
    std::int64_t* segk_s = cur.ints(chunk);
    C* q_s = cur.reals(row_tile * D);
    C* k_s = cur.reals(chunk * (D + 1));
    C* v_s = cur.reals(chunk * (D + 1));
    C* p_s = cur.reals(warps * chunk);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const std::int64_t group = H / Hkv, q0 = std::int64_t(blockIdx.x) * row_tile;
    for (std::int64_t bh = blockIdx.y; bh < B * H; bh += gridDim.y) {
        const std::int64_t b = bh / H, h = bh % H;
        const T* qb = q + bh * Tn * D;
        const T* kb = k + (b * Hkv + h / group) * Tn * D;
        const T* vb = v + (b * Hkv + h / group) * Tn * D;
        const std::int64_t* sb = seg + b * Tn;
        __syncthreads();  // the previous (b, h) is done with q_s
        load_rows(q_s, qb, q0, row_tile, Tn, D, D);
        C m[R], l[R], acc[R][DPL];
        std::int64_t segq[R];
#pragma unroll
        for (int r = 0; r < R; ++r) {
            std::int64_t i = q0 + warp * R + r;
            m[r] = neg_inf<C>();
            l[r] = C(0);
            segq[r] = i < Tn ? sb[i] : 0;
#pragma unroll
            for (int c = 0; c < DPL; ++c) acc[r][c] = C(0);
        }
        const std::int64_t k_end = imin(Tn, q0 + row_tile);
        for (std::int64_t k0 = 0; k0 < k_end; k0 += chunk) {
            __syncthreads();  // the previous key tile is consumed (and q_s is loaded)
            load_rows(k_s, kb, k0, chunk, Tn, D, D + 1);
            load_rows(v_s, vb, k0, chunk, Tn, D, D + 1);
            if (threadIdx.x < chunk) segk_s[threadIdx.x] = k0 + threadIdx.x < Tn ? sb[k0 + threadIdx.x] : 0;
            __syncthreads();
            const std::int64_t j = k0 + lane;
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const int qr = warp * R + r;
                const std::int64_t i = q0 + qr;
                if (i >= Tn || k0 > i) continue;  // uniform across the warp
                const bool allowed = j <= i && (window <= 0 || i - j < window) && segk_s[lane] == segq[r];
                C sc = neg_inf<C>();
                if (allowed) {
                    C dot = C(0);
                    const C* qrow = q_s + qr * D;
                    const C* krow = k_s + lane * (D + 1);
                    for (int d = 0; d < D; ++d) dot += qrow[d] * krow[d];
                    sc = scale * dot;
                }
                const C m_new = max(m[r], warp_max(sc));
                if (m_new == neg_inf<C>()) continue;  // no allowed key yet for this row
                const C p = allowed ? exp(sc - m_new) : C(0);
                const C corr = exp(m[r] - m_new);  // 0 while m was -inf
                l[r] = l[r] * corr + warp_sum(p);
                m[r] = m_new;
                p_s[warp * chunk + lane] = p;
                __syncwarp();
                const int jn = int(imin(chunk, i - k0 + 1));
#pragma unroll
                for (int c = 0; c < DPL; ++c) acc[r][c] *= corr;
                for (int jj = 0; jj < jn; ++jj) {
                    const C pj = p_s[warp * chunk + jj];
                    const C* vrow = v_s + jj * (D + 1);
#pragma unroll
                    for (int c = 0; c < DPL; ++c) {
                        int d = lane + 32 * c;
                        if (d < D) acc[r][c] += pj * vrow[d];
                    }
                }
                __syncwarp();
            }
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const std::int64_t i = q0 + warp * R + r;
            if (i >= Tn) break;
            const C inv = C(1) / l[r];  // l >= 1: the diagonal is always allowed
            T* orow = out + (bh * Tn + i) * D;
#pragma unroll
            for (int c = 0; c < DPL; ++c) {
                int d = lane + 32 * c;
                if (d < D) orow[d] = st<T>(acc[r][c] * inv);
            }
            if (lane == 0) lse[bh * Tn + i] = m[r] + log(l[r]);
        }
    }
}

// delta[row] = sum_d dout[row, d] * out[row, d]; one warp per row.
template <class T>
__global__ void attention_delta_kernel(const T* out, const T* dout, compute_of_t<T>* delta, std::int64_t rows, int D) {
    using C = compute_of_t<T>;
    const int lane = threadIdx.x % 32;
    const std::int64_t warps_total = std::int64_t(gridDim.x) * (blockDim.x / 32);
    for (std::int64_t row = std::int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; row < rows; row += warps_total) {
        C s = C(0);
        for (int d = lane; d < D; d += 32) s += ld(dout[row * D + d]) * ld(out[row * D + d]);
        s = attention_detail::warp_sum(s);
        if (lane == 0) delta[row] = s;
    }
}

template <class T, int DPL>
__global__ void __launch_bounds__(attention_detail::threads)
    attention_dq_kernel(const T* q, const T* k, const T* v, const std::int64_t* seg, const compute_of_t<T>* lse,
                        const compute_of_t<T>* delta, const T* dout, T* dq, std::int64_t B, std::int64_t H, std::int64_t Hkv,
                        std::int64_t Tn, int D, compute_of_t<T> scale, std::int64_t window) {
    using namespace attention_detail;
    using C = compute_of_t<T>;
    constexpr int R = rows_per_warp;
    extern __shared__ __align__(16) unsigned char attention_smem[];
    SmemCursor<C> cur{attention_smem};
    std::int64_t* segk_s = cur.ints(chunk);
    C* q_s = cur.reals(row_tile * D);
    C* g_s = cur.reals(row_tile * D);
    C* k_s = cur.reals(chunk * (D + 1));
    C* v_s = cur.reals(chunk * (D + 1));
    C* ds_s = cur.reals(warps * chunk);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const std::int64_t group = H / Hkv, q0 = std::int64_t(blockIdx.x) * row_tile;
    for (std::int64_t bh = blockIdx.y; bh < B * H; bh += gridDim.y) {
        const std::int64_t b = bh / H, h = bh % H;
        const T* kb = k + (b * Hkv + h / group) * Tn * D;
        const T* vb = v + (b * Hkv + h / group) * Tn * D;
        const std::int64_t* sb = seg + b * Tn;
        __syncthreads();
        load_rows(q_s, q + bh * Tn * D, q0, row_tile, Tn, D, D);
        load_rows(g_s, dout + bh * Tn * D, q0, row_tile, Tn, D, D);
        C lse_r[R], delta_r[R], acc[R][DPL];
        std::int64_t segq[R];
#pragma unroll
        for (int r = 0; r < R; ++r) {
            std::int64_t i = q0 + warp * R + r;
            bool in = i < Tn;
            lse_r[r] = in ? lse[bh * Tn + i] : C(0);
            delta_r[r] = in ? delta[bh * Tn + i] : C(0);
            segq[r] = in ? sb[i] : 0;
#pragma unroll
            for (int c = 0; c < DPL; ++c) acc[r][c] = C(0);
        }
        const std::int64_t k_end = imin(Tn, q0 + row_tile);
        for (std::int64_t k0 = 0; k0 < k_end; k0 += chunk) {
            __syncthreads();
            load_rows(k_s, kb, k0, chunk, Tn, D, D + 1);
            load_rows(v_s, vb, k0, chunk, Tn, D, D + 1);
            if (threadIdx.x < chunk) segk_s[threadIdx.x] = k0 + threadIdx.x < Tn ? sb[k0 + threadIdx.x] : 0;
            __syncthreads();
            const std::int64_t j = k0 + lane;
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const int qr = warp * R + r;
                const std::int64_t i = q0 + qr;
                if (i >= Tn || k0 > i) continue;
                C ds = C(0);
                if (j <= i && (window <= 0 || i - j < window) && segk_s[lane] == segq[r]) {
                    const C* qrow = q_s + qr * D;
                    const C* grow = g_s + qr * D;
                    const C* krow = k_s + lane * (D + 1);
                    const C* vrow = v_s + lane * (D + 1);
                    C dot = C(0), dp = C(0);
                    for (int d = 0; d < D; ++d) {
                        dot += qrow[d] * krow[d];
                        dp += grow[d] * vrow[d];
                    }
                    const C p = exp(scale * dot - lse_r[r]);
                    ds = p * (dp - delta_r[r]);
                }
                ds_s[warp * chunk + lane] = ds;
                __syncwarp();
                const int jn = int(imin(chunk, i - k0 + 1));
                for (int jj = 0; jj < jn; ++jj) {
                    const C dsj = ds_s[warp * chunk + jj];
                    const C* krow = k_s + jj * (D + 1);
#pragma unroll
                    for (int c = 0; c < DPL; ++c) {
                        int d = lane + 32 * c;
                        if (d < D) acc[r][c] += dsj * krow[d];
                    }
                }
                __syncwarp();
            }
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const std::int64_t i = q0 + warp * R + r;
            if (i >= Tn) break;
            T* row = dq + (bh * Tn + i) * D;
#pragma unroll
            for (int c = 0; c < DPL; ++c) {
                int d = lane + 32 * c;
                if (d < D) row[d] = st<T>(acc[r][c] * scale);
            }
        }
    }
}

template <class T, int DPL>
__global__ void __launch_bounds__(attention_detail::threads)
    attention_dkdv_kernel(const T* q, const T* k, const T* v, const std::int64_t* seg, const compute_of_t<T>* lse,
                          const compute_of_t<T>* delta, const T* dout, T* dk, T* dv, std::int64_t B, std::int64_t H,
                          std::int64_t Hkv, std::int64_t Tn, int D, compute_of_t<T> scale, std::int64_t window) {
    using namespace attention_detail;
    using C = compute_of_t<T>;
    constexpr int R = rows_per_warp;
    extern __shared__ __align__(16) unsigned char attention_smem[];
    SmemCursor<C> cur{attention_smem};
    std::int64_t* segq_s = cur.ints(chunk);
    C* lse_s = cur.reals(chunk);
    C* delta_s = cur.reals(chunk);
    C* k_s = cur.reals(row_tile * D);
    C* v_s = cur.reals(row_tile * D);
    C* q_s = cur.reals(chunk * (D + 1));
    C* g_s = cur.reals(chunk * (D + 1));
    C* p_s = cur.reals(warps * chunk);
    C* ds_s = cur.reals(warps * chunk);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const std::int64_t group = H / Hkv, k0 = std::int64_t(blockIdx.x) * row_tile;
    for (std::int64_t bkv = blockIdx.y; bkv < B * Hkv; bkv += gridDim.y) {
        const std::int64_t b = bkv / Hkv, hk = bkv % Hkv;
        const std::int64_t* sb = seg + b * Tn;
        __syncthreads();
        load_rows(k_s, k + bkv * Tn * D, k0, row_tile, Tn, D, D);
        load_rows(v_s, v + bkv * Tn * D, k0, row_tile, Tn, D, D);
        C dk_acc[R][DPL], dv_acc[R][DPL];
        std::int64_t segk[R];
#pragma unroll
        for (int r = 0; r < R; ++r) {
            std::int64_t j = k0 + warp * R + r;
            segk[r] = j < Tn ? sb[j] : 0;
#pragma unroll
            for (int c = 0; c < DPL; ++c) dk_acc[r][c] = dv_acc[r][c] = C(0);
        }
        for (std::int64_t g = 0; g < group; ++g) {
            const std::int64_t bh = b * H + hk * group + g;
            for (std::int64_t qs = k0; qs < Tn; qs += chunk) {  // queries before k0 see none of these keys
                __syncthreads();
                load_rows(q_s, q + bh * Tn * D, qs, chunk, Tn, D, D + 1);
                load_rows(g_s, dout + bh * Tn * D, qs, chunk, Tn, D, D + 1);
                if (threadIdx.x < chunk) {
                    std::int64_t i = qs + threadIdx.x;
                    bool in = i < Tn;
                    segq_s[threadIdx.x] = in ? sb[i] : 0;
                    lse_s[threadIdx.x] = in ? lse[bh * Tn + i] : C(0);
                    delta_s[threadIdx.x] = in ? delta[bh * Tn + i] : C(0);
                }
                __syncthreads();
                const std::int64_t i = qs + lane;
                const int in_chunk = int(imin(chunk, Tn - qs));
#pragma unroll
                for (int r = 0; r < R; ++r) {
                    const int kr = warp * R + r;
                    const std::int64_t j = k0 + kr;
                    if (j >= Tn) break;  // uniform across the warp
                    C p = C(0), ds = C(0);
                    if (i < Tn && j <= i && (window <= 0 || i - j < window) && segq_s[lane] == segk[r]) {
                        const C* qrow = q_s + lane * (D + 1);
                        const C* grow = g_s + lane * (D + 1);
                        const C* krow = k_s + kr * D;
                        const C* vrow = v_s + kr * D;
                        C dot = C(0), dp = C(0);
                        for (int d = 0; d < D; ++d) {
                            dot += qrow[d] * krow[d];
                            dp += grow[d] * vrow[d];
                        }
                        p = exp(scale * dot - lse_s[lane]);
                        ds = p * (dp - delta_s[lane]);
                    }
                    p_s[warp * chunk + lane] = p;
                    ds_s[warp * chunk + lane] = ds;
                    __syncwarp();
                    for (int ii = 0; ii < in_chunk; ++ii) {
                        const C pi = p_s[warp * chunk + ii], dsi = ds_s[warp * chunk + ii];
                        const C* qrow = q_s + ii * (D + 1);
                        const C* grow = g_s + ii * (D + 1);
#pragma unroll
                        for (int c = 0; c < DPL; ++c) {
                            int d = lane + 32 * c;
                            if (d < D) {
                                dv_acc[r][c] += pi * grow[d];
                                dk_acc[r][c] += dsi * qrow[d];
                            }
                        }
                    }
                    __syncwarp();
                }
            }
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const std::int64_t j = k0 + warp * R + r;
            if (j >= Tn) break;
            T* krow = dk + (bkv * Tn + j) * D;
            T* vrow = dv + (bkv * Tn + j) * D;
#pragma unroll
            for (int c = 0; c < DPL; ++c) {
                int d = lane + 32 * c;
                if (d < D) {
                    krow[d] = st<T>(dk_acc[r][c] * scale);
                    vrow[d] = st<T>(dv_acc[r][c]);
                }
            }
        }
    }
}

namespace attention_detail {
// Runs f(std::integral_constant<int, DPL>) with DPL = dims per lane for head size D (<= 256).
template <class F>
void with_dims_per_lane(int D, F&& f) {
    if (D <= 32) f(std::integral_constant<int, 1>{});
    else if (D <= 64) f(std::integral_constant<int, 2>{});
    else if (D <= 128) f(std::integral_constant<int, 4>{});
    else if (D <= 256) f(std::integral_constant<int, 8>{});
    else ::deviant::fail("attention kernels: head size {} exceeds 256", D);
}
// Allows `bytes` of dynamic shared memory for `kernel` when that is above the default 48 KiB.
template <class K>
void allow_smem(K kernel, std::size_t bytes, const char* what) {
    if (bytes <= 48 * 1024) return;
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
    if (e != cudaSuccess) ::deviant::fail("CUDA kernel {}: cannot use {} bytes of shared memory: {}", what, bytes, cudaGetErrorString(e));
}
inline dim3 attention_grid(std::int64_t tiles, std::int64_t heads) {
    return dim3(unsigned(tiles), unsigned(heads < 65535 ? heads : 65535));
}
}  // namespace attention_detail

void attention_forward(const TensorRef& q, const TensorRef& k, const TensorRef& v, const TensorRef& segments, const TensorRef& out,
                       const TensorRef& lse, double scale, std::int64_t window) {
    using namespace attention_detail;
    const std::int64_t B = q.shape[0], H = q.shape[1], Tn = q.shape[2], Hkv = k.shape[1];
    const int D = int(q.shape[3]);
    if (B * H * Tn == 0) return;
    dispatch_float(q.dtype, [&](auto tag) {
        using T = decltype(tag);
        using C = compute_of_t<T>;
        with_dims_per_lane(D, [&](auto dpl) {
            auto kernel = attention_forward_kernel<T, decltype(dpl)::value>;
            std::size_t bytes = forward_smem<C>(D);
            allow_smem(kernel, bytes, "attention_forward");
            kernel<<<attention_grid((Tn + row_tile - 1) / row_tile, B * H), threads, bytes>>>(
                static_cast<const T*>(q.data), static_cast<const T*>(k.data), static_cast<const T*>(v.data),
                static_cast<const std::int64_t*>(segments.data), static_cast<T*>(out.data), static_cast<C*>(lse.data), B, H, Hkv, Tn, D,
                C(scale), window);
        });
    });
    check_launch("attention_forward");
}

void attention_backward(const TensorRef& q, const TensorRef& k, const TensorRef& v, const TensorRef& segments, const TensorRef& out,
                        const TensorRef& lse, const TensorRef& dout, const TensorRef& delta_ref, const TensorRef& dq, const TensorRef& dk,
                        const TensorRef& dv, double scale, std::int64_t window) {
    using namespace attention_detail;
    const std::int64_t B = q.shape[0], H = q.shape[1], Tn = q.shape[2], Hkv = k.shape[1];
    const int D = int(q.shape[3]);
    if (B * H * Tn == 0) return;
    dispatch_float(q.dtype, [&](auto tag) {
        using T = decltype(tag);
        using C = compute_of_t<T>;
        const std::int64_t rows = B * H * Tn;
        C* delta = static_cast<C*>(delta_ref.data);
        attention_delta_kernel<T><<<blocks_for(rows * 32, 256), 256>>>(static_cast<const T*>(out.data), static_cast<const T*>(dout.data),
                                                                      delta, rows, D);
        check_launch("attention_delta");
        const std::int64_t tiles = (Tn + row_tile - 1) / row_tile;
        with_dims_per_lane(D, [&](auto dpl) {
            constexpr int P = decltype(dpl)::value;
            auto dq_kernel = attention_dq_kernel<T, P>;
            std::size_t dq_bytes = dq_smem<C>(D);
            allow_smem(dq_kernel, dq_bytes, "attention_dq");
            dq_kernel<<<attention_grid(tiles, B * H), threads, dq_bytes>>>(
                static_cast<const T*>(q.data), static_cast<const T*>(k.data), static_cast<const T*>(v.data),
                static_cast<const std::int64_t*>(segments.data), static_cast<const C*>(lse.data), delta, static_cast<const T*>(dout.data),
                static_cast<T*>(dq.data), B, H, Hkv, Tn, D, C(scale), window);
            check_launch("attention_dq");
            auto dkdv_kernel = attention_dkdv_kernel<T, P>;
            std::size_t dkdv_bytes = dkdv_smem<C>(D);
            allow_smem(dkdv_kernel, dkdv_bytes, "attention_dkdv");
            dkdv_kernel<<<attention_grid(tiles, B * Hkv), threads, dkdv_bytes>>>(
                static_cast<const T*>(q.data), static_cast<const T*>(k.data), static_cast<const T*>(v.data),
                static_cast<const std::int64_t*>(segments.data), static_cast<const C*>(lse.data), delta, static_cast<const T*>(dout.data),
                static_cast<T*>(dk.data), static_cast<T*>(dv.data), B, H, Hkv, Tn, D, C(scale), window);
            check_launch("attention_dkdv");
        });
    });
}

}  // namespace deviant::kernels
