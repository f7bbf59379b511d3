// deviant/kernels/matmul.cuh — the CUDA side of ops/matmul.hpp: batched GEMM through cuBLASLt.
// One cached handle and workspace per process. cuBLASLt is column-major, so the row-major product
// C (M, N) = A (M, K) @ B (K, N) is computed as C^T (N, M) = B^T (N, K) @ A^T (K, M): the operands
// swap and each row-major matrix is read as its column-major transpose. A column-major (transposed
// view) operand becomes a transpose flag instead of a copy.
// Types: float32 with CUBLAS_COMPUTE_32F (TF32 only when asked), bfloat16 in with float32
// accumulation and a bfloat16 or float32 result (c's dtype), float64 with CUBLAS_COMPUTE_64F.
#pragma once
#include <cublasLt.h>

#include "deviant/kernels/common.cuh"
#include "deviant/ops/matmul_layout.hpp"

#define DEVIANT_CUBLAS_CHECK(expr)                                                                          \
    do {                                                                                                    \
        cublasStatus_t deviant_st_ = (expr);                                                                \
        if (deviant_st_ != CUBLAS_STATUS_SUCCESS)                                                           \
            ::deviant::fail("cuBLASLt error {} ({}) in {} ({}:{})", cublasGetStatusName(deviant_st_),       \
                            cublasGetStatusString(deviant_st_), #expr, __FILE__, __LINE__);                 \
    } while (0)

namespace deviant::kernels {

namespace detail {
struct LtContext {
    cublasLtHandle_t handle = nullptr;
    void* workspace = nullptr;
    std::size_t workspace_bytes = 32u << 20;
};
// Created on first use and kept for the life of the process (like the caching allocator).
inline LtContext& lt_context() {
    static LtContext* ctx = [] {
        auto* c = new LtContext();
        DEVIANT_CUBLAS_CHECK(cublasLtCreate(&c->handle));
        DEVIANT_CUDA_CHECK(cudaMalloc(&c->workspace, c->workspace_bytes));
        return c;
    }();
    return *ctx;
}

// Owners of the cuBLASLt descriptors, released on every path out (errors included).
struct LtMatmulDesc {
    cublasLtMatmulDesc_t d = nullptr;
    ~LtMatmulDesc() { if (d) cublasLtMatmulDescDestroy(d); }
};
struct LtLayout {
    cublasLtMatrixLayout_t d = nullptr;
    ~LtLayout() { if (d) cublasLtMatrixLayoutDestroy(d); }
};
struct LtPreference {
    cublasLtMatmulPreference_t d = nullptr;
    ~LtPreference() { if (d) cublasLtMatmulPreferenceDestroy(d); }
};

inline void make_layout(LtLayout& l, cudaDataType_t type, std::int64_t rows, std::int64_t cols, std::int64_t ld,
                        std::int64_t batch, std::int64_t batch_stride) {
    DEVIANT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l.d, type, std::uint64_t(rows), std::uint64_t(cols), ld));
    if (batch > 1) {
        DEVIANT_REQUIRE(batch <= INT32_MAX, "matmul: batch of {} exceeds cuBLASLt's limit", batch);
        std::int32_t count = std::int32_t(batch);
        std::int64_t stride = batch_stride;
        DEVIANT_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l.d, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
        DEVIANT_CUBLAS_CHECK(
            cublasLtMatrixLayoutSetAttribute(l.d, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
    }
}

// Largest power of two (at most 256) dividing the address: the alignment cuBLASLt may assume.
inline std::uint32_t pointer_alignment(const void* p) {
    auto v = reinterpret_cast<std::uintptr_t>(p);
    std::uint32_t a = 256;
    while (a > 1 && v % a) a >>= 1;
    return a;
}
}  // namespace detail

void matmul_batched(const TensorRef& a, const TensorRef& b, const TensorRef& c, bool allow_tf32) {
    const std::int64_t batch = a.shape[0], M = a.shape[1], K = a.shape[2], N = b.shape[2];
    if (batch * M * N == 0) return;
    DEVIANT_REQUIRE(a.rank == 3 && b.rank == 3 && c.rank == 3 && b.shape[1] == K && c.shape[1] == M && c.shape[2] == N,
                    "matmul_batched: operands ({}, {}, {}) @ ({}, {}, {}) -> ({}, {}, {}) do not agree", batch, M, K,
                    b.shape[0], b.shape[1], N, c.shape[0], c.shape[1], c.shape[2]);
    ops::MatrixLayout la = ops::matrix_layout(M, K, a.strides[1], a.strides[2]);
    ops::MatrixLayout lb = ops::matrix_layout(K, N, b.strides[1], b.strides[2]);
    DEVIANT_REQUIRE(la.ok && lb.ok, "matmul_batched: an operand is neither row- nor column-major");

    cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
    cudaDataType_t scale_type = CUDA_R_32F, data_type = CUDA_R_32F;
    switch (a.dtype) {
        case DType::f32: compute = allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F; break;
        case DType::bf16: data_type = CUDA_R_16BF; break;
        case DType::f64: compute = CUBLAS_COMPUTE_64F, scale_type = CUDA_R_64F, data_type = CUDA_R_64F; break;
        default: ::deviant::fail("matmul: expected a floating dtype, got {}", dtype_name(a.dtype));
    }
    detail::LtContext& ctx = detail::lt_context();

    // cuBLASLt's A is our b, its B is our a; both read column-major.
    detail::LtMatmulDesc op;
    DEVIANT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op.d, compute, scale_type));
    cublasOperation_t op_a = lb.transposed ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = la.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
    DEVIANT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op.d, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
    DEVIANT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op.d, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));

    detail::LtLayout lt_a, lt_b, lt_c;
    // b (K, N) row-major == column-major (N, K); column-major b is stored (K, N) and transposed.
    if (lb.transposed) detail::make_layout(lt_a, data_type, K, N, lb.ld, batch, b.strides[0]);
    else detail::make_layout(lt_a, data_type, N, K, lb.ld, batch, b.strides[0]);
    if (la.transposed) detail::make_layout(lt_b, data_type, M, K, la.ld, batch, a.strides[0]);
    else detail::make_layout(lt_b, data_type, K, M, la.ld, batch, a.strides[0]);
    if (c.dtype != a.dtype && !(a.dtype == DType::bf16 && c.dtype == DType::f32))
        ::deviant::fail("matmul: {} operands cannot produce a {} result", dtype_name(a.dtype), dtype_name(c.dtype));
    const cudaDataType_t out_type = c.dtype == DType::f32 ? CUDA_R_32F : data_type;
    detail::make_layout(lt_c, out_type, N, M, N, batch, c.strides[0]);

    detail::LtPreference pref;
    DEVIANT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref.d));
    std::uint64_t ws = ctx.workspace_bytes;
    DEVIANT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.d, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    std::uint32_t align_a = detail::pointer_alignment(b.data), align_b = detail::pointer_alignment(a.data),
                  align_c = detail::pointer_alignment(c.data);
    DEVIANT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.d, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a)));
    DEVIANT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.d, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b)));
    DEVIANT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.d, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c, sizeof(align_c)));
    DEVIANT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.d, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c, sizeof(align_c)));

    cublasLtMatmulHeuristicResult_t heuristic{};
    int found = 0;
    DEVIANT_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(ctx.handle, op.d, lt_a.d, lt_b.d, lt_c.d, lt_c.d, pref.d, 1, &heuristic, &found));
    DEVIANT_REQUIRE(found > 0, "matmul: cuBLASLt has no algorithm for ({}, {}, {}) @ ({}, {}, {}) in {}", batch, M, K, batch, K, N,
                    dtype_name(a.dtype));

    const float alpha_f = 1.0f, beta_f = 0.0f;
    const double alpha_d = 1.0, beta_d = 0.0;
    const void* alpha = scale_type == CUDA_R_64F ? static_cast<const void*>(&alpha_d) : static_cast<const void*>(&alpha_f);
    const void* beta = scale_type == CUDA_R_64F ? static_cast<const void*>(&beta_d) : static_cast<const void*>(&beta_f);
    DEVIANT_CUBLAS_CHECK(cublasLtMatmul(ctx.handle, op.d, alpha, b.data, lt_a.d, a.data, lt_b.d, beta, c.data, lt_c.d, c.data, lt_c.d,
                                        &heuristic.algo, ctx.workspace, ctx.workspace_bytes, /*stream=*/0));
    check_launch("matmul_batched");
}

}  // namespace deviant::kernels
