// deviant/kernels/matmul.cuh — the CUDA side of ops/matmul.hpp: batched GEMM through cuBLASLt.
// One cached handle and workspace per process, and a cache of ready plans (descriptors, layouts
// and the heuristic's algorithm) keyed by everything that decides them. cuBLASLt is column-major, so the row-major product
// C (M, N) = A (M, K) @ B (K, N) is computed as C^T (N, M) = B^T (N, K) @ A^T (K, M): the operands
// swap and each row-major matrix is read as its column-major transpose. A column-major (transposed
// view) operand becomes a transpose flag instead of a copy. cuBLASLt itself is opened on first
// use (kernels/cublaslt_api.hpp), not linked.
// Types: float32 with CUBLAS_COMPUTE_32F (TF32 only when asked), bfloat16 in with float32
// accumulation and a bfloat16 or float32 result (c's dtype), float64 with CUBLAS_COMPUTE_64F.
#pragma once

#include <algorithm>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "deviant/kernels/common.cuh"
#include "deviant/kernels/cublaslt_api.hpp"
#include "deviant/ops/matmul_layout.hpp"

#define DEVIANT_CUBLAS_CHECK(expr)                                                                          \
    do {                                                                                                    \
        cublasStatus_t deviant_st_ = (expr);                                                                \
        if (deviant_st_ != CUBLAS_STATUS_SUCCESS)                                                           \
            ::deviant::fail("cuBLASLt error {} ({}) in {} ({}:{})", ::deviant::kernels::cublaslt().status_name(deviant_st_),       \
                            ::deviant::kernels::cublaslt().status_string(deviant_st_), #expr, __FILE__, __LINE__);                 \
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
        DEVIANT_CUBLAS_CHECK(cublaslt().create(&c->handle));
        DEVIANT_CUDA_CHECK(cudaMalloc(&c->workspace, c->workspace_bytes));
        return c;
    }();
    return *ctx;
}

// Owners of the cuBLASLt descriptors, released on every path out (errors included).
struct LtMatmulDesc {
    cublasLtMatmulDesc_t d = nullptr;
    ~LtMatmulDesc() { if (d) cublaslt().desc_destroy(d); }
};
struct LtLayout {
    cublasLtMatrixLayout_t d = nullptr;
    ~LtLayout() { if (d) cublaslt().layout_destroy(d); }
};
struct LtPreference {
    cublasLtMatmulPreference_t d = nullptr;
    ~LtPreference() { if (d) cublaslt().preference_destroy(d); }
};

inline void make_layout(LtLayout& l, cudaDataType_t type, std::int64_t rows, std::int64_t cols, std::int64_t ld,
                        std::int64_t batch, std::int64_t batch_stride) {
    DEVIANT_CUBLAS_CHECK(cublaslt().layout_create(&l.d, type, std::uint64_t(rows), std::uint64_t(cols), ld));
    if (batch > 1) {
        DEVIANT_REQUIRE(batch <= INT32_MAX, "matmul: batch of {} exceeds cuBLASLt's limit", batch);
        std::int32_t count = std::int32_t(batch);
        std::int64_t stride = batch_stride;
        DEVIANT_CUBLAS_CHECK(cublaslt().layout_set_attribute(l.d, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
        DEVIANT_CUBLAS_CHECK(
            cublaslt().layout_set_attribute(l.d, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
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

namespace detail {
// Everything that decides a cuBLASLt plan: types, sizes, leading dimensions, batch strides,
// transposes and pointer alignments.
struct LtPlanKey {
    int a_dtype = 0, c_dtype = 0;
    bool tf32 = false, ta = false, tb = false;
    std::int64_t M = 0, N = 0, K = 0, batch = 0, lda = 0, ldb = 0, stride_a = 0, stride_b = 0, stride_c = 0;
    std::uint32_t align_a = 0, align_b = 0, align_c = 0;
    bool operator==(const LtPlanKey& o) const {  // C++17 here: nvcc compiles this unit as C++17
        return a_dtype == o.a_dtype && c_dtype == o.c_dtype && tf32 == o.tf32 && ta == o.ta && tb == o.tb && M == o.M && N == o.N &&
               K == o.K && batch == o.batch && lda == o.lda && ldb == o.ldb && stride_a == o.stride_a && stride_b == o.stride_b &&
               stride_c == o.stride_c && align_a == o.align_a && align_b == o.align_b && align_c == o.align_c;
    }
};
struct LtPlanKeyHash {
    std::size_t operator()(const LtPlanKey& k) const {
        std::size_t h = 1469598103934665603ull;
        auto mix = [&h](std::uint64_t v) { h = (h ^ v) * 1099511628211ull; };
        mix(std::uint64_t(k.a_dtype) | std::uint64_t(k.c_dtype) << 8 | std::uint64_t(k.tf32) << 16 | std::uint64_t(k.ta) << 17 |
            std::uint64_t(k.tb) << 18);
        for (std::int64_t v : {k.M, k.N, k.K, k.batch, k.lda, k.ldb, k.stride_a, k.stride_b, k.stride_c}) mix(std::uint64_t(v));
        mix(std::uint64_t(k.align_a) | std::uint64_t(k.align_b) << 16 | std::uint64_t(k.align_c) << 32);
        return h;
    }
};
// A ready cuBLASLt call: descriptors and the heuristic's algorithm, built once per key.
struct LtPlan {
    LtMatmulDesc op;
    LtLayout a, b, c;
    cublasLtMatmulAlgo_t algo{};
    bool scale_double = false;
};
// Plans by key (a training step repeats the same few dozen shapes, and building a plan — the
// heuristic query above all — costs far more host time than launching it). Bounded: cleared when
// it grows past 4096 entries.
struct LtPlanCache {
    std::mutex mutex;
    std::unordered_map<LtPlanKey, std::shared_ptr<const LtPlan>, LtPlanKeyHash> plans;  // shared: a plan in use survives a clear
};
inline LtPlanCache& lt_plan_cache() {
    static LtPlanCache* cache = new LtPlanCache();  // lives for the process, like the handle
    return *cache;
}

inline std::shared_ptr<const LtPlan> make_plan(const LtPlanKey& k, DType a_dtype, DType c_dtype) {
    cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
    cudaDataType_t scale_type = CUDA_R_32F, data_type = CUDA_R_32F;
    switch (a_dtype) {
        case DType::f32: compute = k.tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F; break;
        case DType::bf16: data_type = CUDA_R_16BF; break;
        case DType::f64: compute = CUBLAS_COMPUTE_64F, scale_type = CUDA_R_64F, data_type = CUDA_R_64F; break;
        default: ::deviant::fail("matmul: expected a floating dtype, got {}", dtype_name(a_dtype));
    }
    if (c_dtype != a_dtype && !(a_dtype == DType::bf16 && c_dtype == DType::f32))
        ::deviant::fail("matmul: {} operands cannot produce a {} result", dtype_name(a_dtype), dtype_name(c_dtype));
    const cudaDataType_t out_type = c_dtype == DType::f32 ? CUDA_R_32F : data_type;
    auto plan = std::make_shared<LtPlan>();
    plan->scale_double = scale_type == CUDA_R_64F;

    // cuBLASLt's A is our b, its B is our a; both read column-major.
    DEVIANT_CUBLAS_CHECK(cublaslt().desc_create(&plan->op.d, compute, scale_type));
    cublasOperation_t op_a = k.tb ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = k.ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    DEVIANT_CUBLAS_CHECK(cublaslt().desc_set_attribute(plan->op.d, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
    DEVIANT_CUBLAS_CHECK(cublaslt().desc_set_attribute(plan->op.d, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
    // b (K, N) row-major == column-major (N, K); column-major b is stored (K, N) and transposed.
    if (k.tb) make_layout(plan->a, data_type, k.K, k.N, k.ldb, k.batch, k.stride_b);
    else make_layout(plan->a, data_type, k.N, k.K, k.ldb, k.batch, k.stride_b);
    if (k.ta) make_layout(plan->b, data_type, k.M, k.K, k.lda, k.batch, k.stride_a);
    else make_layout(plan->b, data_type, k.K, k.M, k.lda, k.batch, k.stride_a);
    make_layout(plan->c, out_type, k.N, k.M, k.N, k.batch, k.stride_c);

    LtContext& ctx = lt_context();
    LtPreference pref;
    DEVIANT_CUBLAS_CHECK(cublaslt().preference_create(&pref.d));
    std::uint64_t ws = ctx.workspace_bytes;
    DEVIANT_CUBLAS_CHECK(cublaslt().preference_set_attribute(pref.d, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    DEVIANT_CUBLAS_CHECK(
        cublaslt().preference_set_attribute(pref.d, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &k.align_b, sizeof(k.align_b)));
    DEVIANT_CUBLAS_CHECK(
        cublaslt().preference_set_attribute(pref.d, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &k.align_a, sizeof(k.align_a)));
    DEVIANT_CUBLAS_CHECK(
        cublaslt().preference_set_attribute(pref.d, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &k.align_c, sizeof(k.align_c)));
    DEVIANT_CUBLAS_CHECK(
        cublaslt().preference_set_attribute(pref.d, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &k.align_c, sizeof(k.align_c)));
    cublasLtMatmulHeuristicResult_t heuristic{};
    int found = 0;
    DEVIANT_CUBLAS_CHECK(
        cublaslt().algo_get_heuristic(ctx.handle, plan->op.d, plan->a.d, plan->b.d, plan->c.d, plan->c.d, pref.d, 1, &heuristic, &found));
    DEVIANT_REQUIRE(found > 0, "matmul: cuBLASLt has no algorithm for ({}, {}, {}) @ ({}, {}, {}) in {}", k.batch, k.M, k.K, k.batch, k.K,
                    k.N, dtype_name(a_dtype));
    plan->algo = heuristic.algo;
    return plan;
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

    detail::LtPlanKey key;
    key.a_dtype = int(a.dtype), key.c_dtype = int(c.dtype);
    key.tf32 = a.dtype == DType::f32 && allow_tf32;
    key.ta = la.transposed, key.tb = lb.transposed;
    key.M = M, key.N = N, key.K = K, key.batch = batch, key.lda = la.ld, key.ldb = lb.ld;
    key.stride_a = batch > 1 ? a.strides[0] : 0, key.stride_b = batch > 1 ? b.strides[0] : 0, key.stride_c = batch > 1 ? c.strides[0] : 0;
    // Every batch's matrix must meet the alignment promised to cuBLASLt, not only the first.
    auto alignment = [batch](const TensorRef& r) {
        std::uint32_t al = detail::pointer_alignment(r.data);
        if (batch > 1) {
            const auto stride_bytes = std::uintptr_t(r.strides[0]) * std::uintptr_t(dtype_size(r.dtype));
            al = std::min(al, detail::pointer_alignment(reinterpret_cast<const void*>(stride_bytes == 0 ? 256 : stride_bytes)));
        }
        return al;
    };
    key.align_a = alignment(a), key.align_b = alignment(b), key.align_c = alignment(c);

    detail::LtPlanCache& cache = detail::lt_plan_cache();
    std::shared_ptr<const detail::LtPlan> plan;
    {
        std::lock_guard<std::mutex> lock(cache.mutex);
        auto it = cache.plans.find(key);
        if (it == cache.plans.end()) {
            if (cache.plans.size() >= 4096) cache.plans.clear();
            it = cache.plans.emplace(key, detail::make_plan(key, a.dtype, c.dtype)).first;
        }
        plan = it->second;
    }
    detail::LtContext& ctx = detail::lt_context();
    const float alpha_f = 1.0f, beta_f = 0.0f;
    const double alpha_d = 1.0, beta_d = 0.0;
    const void* alpha = plan->scale_double ? static_cast<const void*>(&alpha_d) : static_cast<const void*>(&alpha_f);
    const void* beta = plan->scale_double ? static_cast<const void*>(&beta_d) : static_cast<const void*>(&beta_f);
    DEVIANT_CUBLAS_CHECK(cublaslt().matmul(ctx.handle, plan->op.d, alpha, b.data, plan->a.d, a.data, plan->b.d, beta, c.data, plan->c.d,
                                        c.data, plan->c.d, &plan->algo, ctx.workspace, ctx.workspace_bytes, /*stream=*/0));
    check_launch("matmul_batched");
}

}  // namespace deviant::kernels
