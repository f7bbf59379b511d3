// deviant/kernels/index.cuh — CUDA kernels for ops/index.hpp: index range check, gather and its
// scatter-add backward, embedding lookup and its sorted (deterministic) backward, where and
// masked_fill over broadcast operands.
// CPU references: the matching functions in ops/index.hpp.
#pragma once
#include <cub/device/device_radix_sort.cuh>

#include "deviant/core/allocator.hpp"
#include "deviant/kernels/common.cuh"

namespace deviant::kernels {

namespace detail {
// Scratch device memory from the caching allocator, returned when the launcher ends (kernels on
// the default stream that still use it run before any later reuse).
class DeviceScratch {
public:
    explicit DeviceScratch(std::size_t bytes) : p_(CudaCachingAllocator::instance().allocate(bytes ? bytes : 1)) {}
    ~DeviceScratch() { CudaCachingAllocator::instance().deallocate(p_); }
    DeviceScratch(const DeviceScratch&) = delete;
    DeviceScratch& operator=(const DeviceScratch&) = delete;
    template <class T> T* as() const { return static_cast<T*>(p_); }

private:
    void* p_;
};
}  // namespace detail

// --- index range check: smallest offending position via atomicMin ---
__global__ void find_out_of_range_kernel(const std::int64_t* index, std::int64_t limit, std::int64_t n,
                                         unsigned long long* first_bad) {
    DEVIANT_GRID_STRIDE(i, n) {
        std::int64_t v = index[i];
        if (v < 0 || v >= limit) atomicMin(first_bad, static_cast<unsigned long long>(i));
    }
}

void find_out_of_range(const TensorRef& index, std::int64_t limit, std::int64_t& bad_position, std::int64_t& bad_value) {
    bad_position = -1;
    bad_value = 0;
    std::int64_t n = index.numel();
    if (n == 0) return;
    detail::DeviceScratch flag(sizeof(unsigned long long));
    const unsigned long long none = ~0ull;
    DEVIANT_CUDA_CHECK(cudaMemcpy(flag.as<unsigned long long>(), &none, sizeof(none), cudaMemcpyHostToDevice));
    find_out_of_range_kernel<<<blocks_for(n, 256), 256>>>(static_cast<const std::int64_t*>(index.data), limit, n,
                                                          flag.as<unsigned long long>());
    check_launch("find_out_of_range");
    unsigned long long first = none;
    DEVIANT_CUDA_CHECK(cudaMemcpy(&first, flag.as<unsigned long long>(), sizeof(first), cudaMemcpyDeviceToHost));
    if (first == none) return;
    bad_position = static_cast<std::int64_t>(first);
    DEVIANT_CUDA_CHECK(cudaMemcpy(&bad_value, static_cast<const std::int64_t*>(index.data) + first, sizeof(std::int64_t),
                                  cudaMemcpyDeviceToHost));
}

// --- gather ---
// One thread per output element: its coordinates in index's shape address x on every axis but
// `axis`, where the index value is used.
template <class T>
__global__ void gather_forward_kernel(const T* x, TensorRef rx, const std::int64_t* index, TensorRef ri, T* out, int axis, std::int64_t n) {
    DEVIANT_GRID_STRIDE(i, n) {
        std::int64_t rem = i, off = 0;
        for (int k = ri.rank - 1; k >= 0; --k) {
            std::int64_t c = rem % ri.shape[k];
            rem /= ri.shape[k];
            if (k != axis) off += c * rx.strides[k];
        }
        out[i] = x[off + index[i] * rx.strides[axis]];
    }
}
// One thread per index row (all coordinates but `axis`): walks the row in order, so duplicate
// indices add up in a fixed order and rows never share a destination — no atomics.
template <class T>
__global__ void gather_backward_kernel(const T* dy, const std::int64_t* index, TensorRef ri, T* dx, TensorRef rd, int axis,
                                       std::int64_t n_rows) {
    using C = compute_of_t<T>;
    const std::int64_t row_len = ri.shape[axis], idx_axis_stride = ri.strides[axis], dx_axis_stride = rd.strides[axis];
    DEVIANT_GRID_STRIDE(r, n_rows) {
        std::int64_t rem = r, src = 0, dst = 0;
        for (int k = ri.rank - 1; k >= 0; --k) {
            if (k == axis) continue;
            std::int64_t c = rem % ri.shape[k];
            rem /= ri.shape[k];
            src += c * ri.strides[k];
            dst += c * rd.strides[k];
        }
        for (std::int64_t j = 0; j < row_len; ++j) {
            std::int64_t s = src + j * idx_axis_stride;
            T& d = dx[dst + index[s] * dx_axis_stride];
            d = st<T>(C(ld(d)) + C(ld(dy[s])));
        }
    }
}

void gather_forward(const TensorRef& x, const TensorRef& index, const TensorRef& out, int axis) {
    std::int64_t n = out.numel();
    if (n == 0) return;
    dispatch_float(x.dtype, [&](auto tag) {
        using T = decltype(tag);
        gather_forward_kernel<T><<<blocks_for(n, 256), 256>>>(static_cast<const T*>(x.data), x, static_cast<const std::int64_t*>(index.data),
                                                              index, static_cast<T*>(out.data), axis, n);
    });
    check_launch("gather_forward");
}

void gather_backward(const TensorRef& dy, const TensorRef& index, const TensorRef& dx, int axis) {
    std::int64_t n = index.numel();
    if (n == 0) return;
    std::int64_t n_rows = n / index.shape[axis];
    dispatch_float(dy.dtype, [&](auto tag) {
        using T = decltype(tag);
        gather_backward_kernel<T><<<blocks_for(n_rows, 128), 128>>>(static_cast<const T*>(dy.data),
                                                                    static_cast<const std::int64_t*>(index.data), index,
                                                                    static_cast<T*>(dx.data), dx, axis, n_rows);
    });
    check_launch("gather_backward");
}

// --- embedding ---
template <class T>
__global__ void embedding_forward_kernel(const T* w, const std::int64_t* ids, T* out, std::int64_t n, std::int64_t C) {
    DEVIANT_GRID_STRIDE(i, n * C) {
        std::int64_t row = i / C, c = i - row * C;
        out[i] = w[ids[row] * C + c];
    }
}
__global__ void iota_kernel(std::int64_t* p, std::int64_t n) {
    DEVIANT_GRID_STRIDE(i, n) { p[i] = i; }
}
// One block per run of equal ids in the sorted order (blocks at a non-first element of a run
// skip); threads split the C columns and each sums its column over the run in position order.
template <class T>
__global__ void embedding_backward_kernel(const unsigned long long* sorted_ids, const std::int64_t* positions, const T* dy, T* dw,
                                          std::int64_t n, std::int64_t C) {
    using Acc = compute_of_t<T>;
    for (std::int64_t r = blockIdx.x; r < n; r += gridDim.x) {
        const unsigned long long id = sorted_ids[r];
        if (r > 0 && sorted_ids[r - 1] == id) continue;
        std::int64_t end = r + 1;
        while (end < n && sorted_ids[end] == id) ++end;
        for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) {
            Acc acc = Acc(0);
            for (std::int64_t j = r; j < end; ++j) acc += Acc(ld(dy[positions[j] * C + c]));
            dw[std::int64_t(id) * C + c] = st<T>(acc);
        }
    }
}

void embedding_forward(const TensorRef& weight, const TensorRef& ids, const TensorRef& out) {
    std::int64_t n = ids.numel(), C = weight.shape[1];
    if (n * C == 0) return;
    dispatch_float(weight.dtype, [&](auto tag) {
        using T = decltype(tag);
        embedding_forward_kernel<T><<<blocks_for(n * C, 256), 256>>>(static_cast<const T*>(weight.data),
                                                                     static_cast<const std::int64_t*>(ids.data), static_cast<T*>(out.data), n, C);
    });
    check_launch("embedding_forward");
}

void embedding_backward(const TensorRef& ids, const TensorRef& dy, const TensorRef& dweight) {
    const std::int64_t n = ids.numel(), V = dweight.shape[0], C = dweight.shape[1];
    if (n == 0 || C == 0) return;
    detail::DeviceScratch sorted_ids(std::size_t(n) * 8), positions(std::size_t(n) * 8), sorted_positions(std::size_t(n) * 8);
    iota_kernel<<<blocks_for(n, 256), 256>>>(positions.as<std::int64_t>(), n);
    check_launch("embedding_backward iota");
    // Ids were range-checked in the forward pass: only the low bits that can differ are sorted.
    int end_bit = 1;
    while (end_bit < 64 && (static_cast<unsigned long long>(V - 1) >> end_bit) != 0) ++end_bit;
    const auto* keys_in = static_cast<const unsigned long long*>(ids.data);
    std::size_t temp_bytes = 0;
    DEVIANT_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys_in, sorted_ids.as<unsigned long long>(),
                                                       positions.as<std::int64_t>(), sorted_positions.as<std::int64_t>(), n, 0,
                                                       end_bit));
    detail::DeviceScratch temp(temp_bytes);
    DEVIANT_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.as<void>(), temp_bytes, keys_in, sorted_ids.as<unsigned long long>(),
                                                       positions.as<std::int64_t>(), sorted_positions.as<std::int64_t>(), n, 0,
                                                       end_bit));
    const int threads = C >= 256 ? 256 : C > 64 ? 128 : 32;
    const unsigned blocks = unsigned(n < 65535 * 32 ? n : 65535 * 32);
    dispatch_float(dy.dtype, [&](auto tag) {
        using T = decltype(tag);
        embedding_backward_kernel<T><<<blocks, threads>>>(sorted_ids.as<unsigned long long>(), sorted_positions.as<std::int64_t>(),
                                                          static_cast<const T*>(dy.data), static_cast<T*>(dweight.data), n, C);
    });
    check_launch("embedding_backward");
}

// --- where / masked_fill ---
template <class T>
__global__ void where_kernel(const std::uint8_t* m, TensorRef rm, const T* a, TensorRef ra, const T* b, TensorRef rb, T* out,
                             std::int64_t n) {
    DEVIANT_GRID_STRIDE(i, n) {
        out[i] = m[strided_offset(rm, i)] ? a[strided_offset(ra, i)] : b[strided_offset(rb, i)];
    }
}
template <class T>
__global__ void masked_fill_kernel(const T* x, TensorRef rx, const std::uint8_t* m, TensorRef rm, T* out, T fill, bool fill_where_set,
                                   std::int64_t n) {
    DEVIANT_GRID_STRIDE(i, n) {
        out[i] = (m[strided_offset(rm, i)] != 0) == fill_where_set ? fill : x[strided_offset(rx, i)];
    }
}

void where_forward(const TensorRef& mask, const TensorRef& a, const TensorRef& b, const TensorRef& out) {
    std::int64_t n = out.numel();
    if (n == 0) return;
    dispatch_float(out.dtype, [&](auto tag) {
        using T = decltype(tag);
        where_kernel<T><<<blocks_for(n, 256), 256>>>(static_cast<const std::uint8_t*>(mask.data), mask, static_cast<const T*>(a.data), a,
                                                     static_cast<const T*>(b.data), b, static_cast<T*>(out.data), n);
    });
    check_launch("where_forward");
}

void masked_fill(const TensorRef& x, const TensorRef& mask, const TensorRef& out, double value, bool fill_where_set) {
    std::int64_t n = out.numel();
    if (n == 0) return;
    dispatch_float(out.dtype, [&](auto tag) {
        using T = decltype(tag);
        const T fill = st<T>(compute_of_t<T>(value));
        masked_fill_kernel<T><<<blocks_for(n, 256), 256>>>(static_cast<const T*>(x.data), x, static_cast<const std::uint8_t*>(mask.data),
                                                           mask, static_cast<T*>(out.data), fill, fill_where_set, n);
    });
    check_launch("masked_fill");
}

}  // namespace deviant::kernels
