// deviant/ops/blas_threads.hpp — SingleThreadedBlas: a scope in which OpenBLAS runs every
// product on the calling thread.
// Why: loops that run many small, independent products (attention blocks per head, encoder
// rows) parallelise better over the worker pool, one product per worker, than inside BLAS, whose
// own threads would then oversubscribe the cores.
#pragma once
#include <cblas.h>

#include <mutex>

namespace deviant {

// While alive (and asked to), OpenBLAS runs each product on the calling thread, so that the
// worker pool can run products on separate row blocks in parallel without oversubscribing the
// cores; the previous thread count is restored when the last such scope ends. Without
// OpenBLAS the BLAS library keeps its own threading and single_threaded() is false.
class SingleThreadedBlas {
public:
    explicit SingleThreadedBlas(bool wanted) {
#ifdef OPENBLAS_VERSION
        if (!wanted) return;
        std::lock_guard lock(state().mutex);
        if (state().depth++ == 0) {
            state().saved = openblas_get_num_threads();
            if (state().saved != 1) openblas_set_num_threads(1);
        }
        active_ = true;
#else
        (void)wanted;
#endif
    }
    ~SingleThreadedBlas() {
#ifdef OPENBLAS_VERSION
        if (!active_) return;
        std::lock_guard lock(state().mutex);
        if (--state().depth == 0 && state().saved != 1) openblas_set_num_threads(state().saved);
#endif
    }
    SingleThreadedBlas(const SingleThreadedBlas&) = delete;
    SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;
    bool single_threaded() const { return active_; }

private:
    struct State {
        std::mutex mutex;
        int depth = 0, saved = 1;
    };
    static State& state() {
        static State s;
        return s;
    }
    bool active_ = false;
};

}  // namespace deviant
