// deviant/ops/cpu_gemm.hpp — the CPU matrix-product backend every CPU op calls:
//   gemm_row_major(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
//   C (M, N) = alpha op(A) op(B) + beta C, row-major, float32 or float64.
// float32 runs on oneDNN's sgemm when the build found it (DEVIANT_WITH_DNNL), else OpenBLAS;
// float64 always on OpenBLAS. Why two: measured on the development machine (docs/performance.md),
// OpenBLAS 0.3.21 runs the (tokens, C) x (C, C)^T projection shape of a small model at a quarter
// of its peak on one thread, where oneDNN holds it. DEVIANT_CPU_GEMM=openblas|onednn overrides the
// choice at run time (benchmarks compare both); a oneDNN call that reports an error (an argument
// it does not take) is run by OpenBLAS instead.
// Threads: a product called from inside a worker-pool job runs on the calling thread (the job
// already spreads work over the cores); one called outside uses the pool's thread count.
//   gemm_row_major_bf16(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, accumulate)
//   C (M, N) (float32 or bfloat16) = op(A) op(B) (+ C), A and B bfloat16, float32 accumulation:
// oneDNN's matmul primitive, which runs on AVX512-BF16 or AMX where the CPU has them. It returns
// false (the caller widens to float32 and calls gemm_row_major) when the build has no oneDNN,
// DEVIANT_CPU_GEMM=openblas, or oneDNN has only its reference kernels for this CPU.
#pragma once
#include <cblas.h>

#include <algorithm>
#include <climits>
#include <compare>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>

#ifdef DEVIANT_WITH_DNNL
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#endif

#include "deviant/core/dtype.hpp"
#include "deviant/core/error.hpp"
#include "deviant/core/thread_pool.hpp"

namespace deviant::ops {

enum class CpuGemmLibrary { openblas, onednn };

// The library float32 CPU products use: DEVIANT_CPU_GEMM if set (openblas or onednn; onednn only
// when compiled in), else oneDNN when compiled in, else OpenBLAS.
inline CpuGemmLibrary& cpu_gemm_library() {
    static CpuGemmLibrary lib = [] {
#ifdef DEVIANT_WITH_DNNL
        CpuGemmLibrary chosen = CpuGemmLibrary::onednn;
#else
        CpuGemmLibrary chosen = CpuGemmLibrary::openblas;
#endif
        if (const char* e = std::getenv("DEVIANT_CPU_GEMM")) {
            const std::string v = e;
            if (v == "openblas") chosen = CpuGemmLibrary::openblas;
#ifdef DEVIANT_WITH_DNNL
            else if (v == "onednn") chosen = CpuGemmLibrary::onednn;
#endif
            else
                throw Error("DEVIANT_CPU_GEMM=" + v + ": expected openblas" +
#ifdef DEVIANT_WITH_DNNL
                            std::string(" or onednn")
#else
                            std::string(" (this build has no oneDNN)")
#endif
                );
        }
        return chosen;
    }();
    return lib;
}
inline const char* cpu_gemm_library_name() { return cpu_gemm_library() == CpuGemmLibrary::onednn ? "onednn" : "openblas"; }

namespace detail {

inline int blas_int(std::int64_t v, const char* what) {
    DEVIANT_REQUIRE(v <= INT_MAX, "matmul: {} = {} exceeds the BLAS integer range", what, v);
    return int(v);
}

#ifdef DEVIANT_WITH_DNNL
// oneDNN threads through OpenMP, whose thread count is per calling thread: one inside a pool job,
// the pool's size outside.
inline void onednn_threads_for_this_call() {
    thread_local int current = 0;
    const int want = ThreadPool::inside_job() ? 1 : ThreadPool::global().size();
    if (want != current) {
        omp_set_num_threads(want);
        current = want;
    }
}
#endif

template <class C>
void gemm_row_major(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, C alpha, const C* A, std::int64_t lda,
                    const C* B, std::int64_t ldb, C beta, C* out, std::int64_t ldc) {
    if (M == 0 || N == 0) return;
#ifdef DEVIANT_WITH_DNNL
    if constexpr (std::is_same_v<C, float>) {
        if (K > 0 && cpu_gemm_library() == CpuGemmLibrary::onednn) {
            onednn_threads_for_this_call();
            if (dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, out, ldc) == dnnl_success) return;
        }
    }
#endif
    const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
    const int m = blas_int(M, "M"), n = blas_int(N, "N"), k = blas_int(K, "K");
    const int la = blas_int(std::max<std::int64_t>(lda, 1), "lda"), lb = blas_int(std::max<std::int64_t>(ldb, 1), "ldb"),
              lc = blas_int(std::max<std::int64_t>(ldc, 1), "ldc");
    if constexpr (std::is_same_v<C, float>)
        cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, A, la, B, lb, beta, out, lc);
    else
        cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, alpha, A, la, B, lb, beta, out, lc);
}

#ifdef DEVIANT_WITH_DNNL
// One bfloat16 product's shape and layout: A (M, K) and B (K, N) by their two strides each, C
// row-major with leading dimension ldc, float32 or bfloat16, overwritten or accumulated into.
struct OnednnMatmulKey {
    std::int64_t M, N, K, a_rows, a_cols, b_rows, b_cols, ldc;
    bool out_f32, accumulate;
    auto operator<=>(const OnednnMatmulKey&) const = default;
};

// oneDNN matmul primitives for bfloat16 products, made once per key and kept (at most 256; a full
// cache is emptied, primitives still running stay alive through their shared_ptr). A key oneDNN
// can only run on its reference kernels maps to null: the caller widens to float32 instead.
class OnednnBf16Matmuls {
  public:
    using Primitive = std::shared_ptr<std::remove_pointer_t<dnnl_primitive_t>>;
    static OnednnBf16Matmuls& instance() {
        static OnednnBf16Matmuls m;
        return m;
    }
    dnnl_engine_t engine() const { return engine_; }
    Primitive get(const OnednnMatmulKey& k) {
        if (!engine_) return nullptr;
        std::lock_guard<std::mutex> lock(mutex_);
        if (auto it = cache_.find(k); it != cache_.end()) return it->second;
        if (cache_.size() >= 256) cache_.clear();
        return cache_[k] = create(k);
    }
    // A (M, K), B (K, N), C (M, N) as oneDNN memory descriptors.
    static void describe(const OnednnMatmulKey& k, dnnl_memory_desc_t& a, dnnl_memory_desc_t& b, dnnl_memory_desc_t& c) {
        const dnnl_dims_t ad = {k.M, k.K}, as = {k.a_rows, k.a_cols}, bd = {k.K, k.N}, bs = {k.b_rows, k.b_cols}, cd = {k.M, k.N},
                          cs = {k.ldc, 1};
        dnnl_memory_desc_init_by_strides(&a, 2, ad, dnnl_bf16, as);
        dnnl_memory_desc_init_by_strides(&b, 2, bd, dnnl_bf16, bs);
        dnnl_memory_desc_init_by_strides(&c, 2, cd, k.out_f32 ? dnnl_f32 : dnnl_bf16, cs);
    }
    ~OnednnBf16Matmuls() {
        cache_.clear();
        if (engine_) dnnl_engine_destroy(engine_);
    }

  private:
    OnednnBf16Matmuls() {
        if (dnnl_engine_create(&engine_, dnnl_cpu, 0) != dnnl_success) engine_ = nullptr;
    }
    Primitive create(const OnednnMatmulKey& k) const {
        dnnl_memory_desc_t a, b, c;
        describe(k, a, b, c);
        dnnl_matmul_desc_t desc;
        if (dnnl_matmul_desc_init(&desc, &a, &b, nullptr, &c) != dnnl_success) return nullptr;
        dnnl_primitive_attr_t attr = nullptr;
        dnnl_post_ops_t post = nullptr;
        if (k.accumulate) {  // C += A B: a sum post-op reads C before writing it
            if (dnnl_primitive_attr_create(&attr) != dnnl_success) return nullptr;
            dnnl_post_ops_create(&post);
            dnnl_post_ops_append_sum(post, 1.0f);
            dnnl_primitive_attr_set_post_ops(attr, post);
        }
        dnnl_primitive_desc_t pd = nullptr;
        const bool made = dnnl_primitive_desc_create(&pd, &desc, attr, engine_, nullptr) == dnnl_success;
        if (post) dnnl_post_ops_destroy(post);
        if (attr) dnnl_primitive_attr_destroy(attr);
        if (!made) return nullptr;
        const char* impl = nullptr;
        dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
        dnnl_primitive_t p = nullptr;
        const bool fast = impl && !std::string_view(impl).starts_with("ref");
        if (fast && dnnl_primitive_create(&p, pd) != dnnl_success) p = nullptr;
        dnnl_primitive_desc_destroy(pd);
        return p ? Primitive(p, dnnl_primitive_destroy) : nullptr;
    }
    dnnl_engine_t engine_ = nullptr;
    std::mutex mutex_;
    std::map<OnednnMatmulKey, Primitive> cache_;
};
#endif

// C (M, N) (float32 or bf16, row-major, ldc) = op(A) op(B) (+ C when `accumulate`), A and B bfloat16
// (see the top of this file). False: not run here, the caller widens to float32.
template <class Out>
bool gemm_row_major_bf16([[maybe_unused]] bool trans_a, [[maybe_unused]] bool trans_b, [[maybe_unused]] std::int64_t M,
                         [[maybe_unused]] std::int64_t N, [[maybe_unused]] std::int64_t K, [[maybe_unused]] const bf16* A,
                         [[maybe_unused]] std::int64_t lda, [[maybe_unused]] const bf16* B, [[maybe_unused]] std::int64_t ldb,
                         [[maybe_unused]] Out* C, [[maybe_unused]] std::int64_t ldc, [[maybe_unused]] bool accumulate) {
    static_assert(std::is_same_v<Out, float> || std::is_same_v<Out, bf16>, "bf16 products give float32 or bf16");
#ifdef DEVIANT_WITH_DNNL
    if (M == 0 || N == 0 || K == 0 || cpu_gemm_library() != CpuGemmLibrary::onednn) return false;
    const OnednnMatmulKey key{M, N, K, trans_a ? 1 : lda, trans_a ? lda : 1, trans_b ? 1 : ldb, trans_b ? ldb : 1, ldc,
                              std::is_same_v<Out, float>, accumulate};
    OnednnBf16Matmuls& lib = OnednnBf16Matmuls::instance();
    const OnednnBf16Matmuls::Primitive p = lib.get(key);
    if (!p) return false;
    onednn_threads_for_this_call();
    dnnl_memory_desc_t ad, bd, cd;
    OnednnBf16Matmuls::describe(key, ad, bd, cd);
    dnnl_memory_t am = nullptr, bm = nullptr, cm = nullptr;
    dnnl_stream_t stream = nullptr;
    bool ok = dnnl_memory_create(&am, &ad, lib.engine(), const_cast<bf16*>(A)) == dnnl_success &&
              dnnl_memory_create(&bm, &bd, lib.engine(), const_cast<bf16*>(B)) == dnnl_success &&
              dnnl_memory_create(&cm, &cd, lib.engine(), C) == dnnl_success &&
              dnnl_stream_create(&stream, lib.engine(), dnnl_stream_default_flags) == dnnl_success;
    if (ok) {
        const dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}};
        ok = dnnl_primitive_execute(p.get(), stream, 3, args) == dnnl_success && dnnl_stream_wait(stream) == dnnl_success;
    }
    if (stream) dnnl_stream_destroy(stream);
    for (dnnl_memory_t m : {am, bm, cm})
        if (m) dnnl_memory_destroy(m);
    DEVIANT_REQUIRE(ok, "bf16 matmul ({}, {}) x ({}, {}): oneDNN failed to run it", M, K, K, N);
    return true;
#else
    return false;
#endif
}

// Whether this process runs bfloat16 products as bf16 (gemm_row_major_bf16 runs them), probed
// once on a small product.
inline bool cpu_bf16_gemm_available() {
    static const bool available = [] {
        bf16 a[16 * 16] = {}, b[16 * 16] = {};
        float c[16 * 16];
        return gemm_row_major_bf16<float>(false, false, 16, 16, 16, a, 16, b, 16, c, 16, false);
    }();
    return available;
}

}  // namespace detail
}  // namespace deviant::ops
