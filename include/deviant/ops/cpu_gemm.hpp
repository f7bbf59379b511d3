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
#pragma once
#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <string>

#ifdef DEVIANT_WITH_DNNL
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#endif

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

}  // namespace detail
}  // namespace deviant::ops
