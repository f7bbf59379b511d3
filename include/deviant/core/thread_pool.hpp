// deviant/core/thread_pool.hpp — a small persistent pool of worker threads for the CPU loops
// that are not BLAS products (the skinny products of decoding, element-wise passes).
// Why: decoding runs a few hundred short parallel loops per token; starting threads for each
// would cost more than the loop, and a sleeping worker takes tens of microseconds to wake. Workers
// here spin for a short while after each job (then sleep), so back-to-back loops start within a
// microsecond or so.
//
//   parallel_for(n, f): calls f(begin, end) on disjoint ranges covering [0, n), one per thread
//   (the caller runs the first), and returns when all are done. Nested calls run serially.
// Threads: DEVIANT_NUM_THREADS if set (>= 1), else the hardware's; set_num_threads() changes it
// before first use. Built with OpenMP (-fopenmp, as with oneDNN), parallel_for runs on OpenMP's
// team instead of its own workers.
#pragma once
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace deviant {

class ThreadPool {
public:
    explicit ThreadPool(int threads) : threads_(std::max(1, threads)) {
#ifndef _OPENMP
        for (int i = 1; i < threads_; ++i) workers_.emplace_back([this, i] { run(i); });
#endif
    }
    ~ThreadPool() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
            ++generation_;
        }
        wake_.notify_all();
        for (std::thread& t : workers_) t.join();
    }
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return threads_; }
    // True on a thread that is running part of a parallel_for (a worker, or the caller's own part).
    static bool inside_job() { return in_job(); }

    template <class F>
    void parallel_for(std::int64_t n, F&& f) {
        if (n <= 0) return;
        if (threads_ == 1 || n == 1 || in_job()) {
            f(std::int64_t(0), n);
            return;
        }
#ifdef _OPENMP
        // Built with OpenMP (it comes with oneDNN, whose products use it): the loops run on the same
        // OpenMP team as the matrix products, so one set of threads serves both (two sets spinning
        // for work on the same cores measured 7% slower). An exception in any part is rethrown here.
        {
            const int parts = int(std::min<std::int64_t>(threads_, n));
            std::exception_ptr error;
            std::mutex error_mutex;
#pragma omp parallel num_threads(parts)
            {
                const int got = omp_get_num_threads();
                in_job() = true;
                for (int part = omp_get_thread_num(); part < parts; part += got) {
                    const std::int64_t begin = n * part / parts, end = n * (part + 1) / parts;
                    try {
                        if (begin < end) f(begin, end);
                    } catch (...) {
                        std::lock_guard<std::mutex> lock(error_mutex);
                        if (!error) error = std::current_exception();
                    }
                }
                in_job() = false;
            }
            if (error) std::rethrow_exception(error);
            return;
        }
#endif
        std::lock_guard<std::mutex> one_job(job_mutex_);  // one job at a time (other caller threads wait)
        const int parts = int(std::min<std::int64_t>(threads_, n));
        job_ = [&](int part) {
            const std::int64_t begin = n * part / parts, end = n * (part + 1) / parts;
            if (begin < end) f(begin, end);
        };
        parts_ = parts;
        pending_.store(parts - 1, std::memory_order_relaxed);
        {
            std::lock_guard<std::mutex> lock(mutex_);
            generation_.fetch_add(1, std::memory_order_release);
        }
        wake_.notify_all();
        in_job() = true;
        job_(0);
        in_job() = false;
        while (pending_.load(std::memory_order_acquire) > 0) std::this_thread::yield();
    }

    static ThreadPool& global() {
        static ThreadPool pool(configured_threads());
        return pool;
    }
    // Threads of the global pool; takes effect only before its first use.
    static void set_num_threads(int n) { configured_threads() = std::max(1, n); }

private:
    static int& configured_threads() {
        static int n = [] {
            if (const char* e = std::getenv("DEVIANT_NUM_THREADS")) {
                const int v = std::atoi(e);
                if (v >= 1) return v;
            }
            return int(std::max(1u, std::thread::hardware_concurrency()));
        }();
        return n;
    }
    // How long an idle worker spins for the next job before sleeping (DEVIANT_POOL_SPIN_US, default 200).
    static int spin_us() {
        static const int us = [] {
            if (const char* e = std::getenv("DEVIANT_POOL_SPIN_US")) return std::max(0, std::atoi(e));
            return 200;
        }();
        return us;
    }
    static bool& in_job() {
        static thread_local bool inside = false;
        return inside;
    }

    void run(int index) {
        std::uint64_t seen = 0;
        in_job() = true;  // a loop inside a job runs serially
        for (;;) {
            // spin a little for the next job, then sleep
            const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us());
            while (generation_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < spin_until)
                std::this_thread::yield();
            if (generation_.load(std::memory_order_acquire) == seen) {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
            }
            seen = generation_.load(std::memory_order_acquire);
            if (stop_) return;
            if (index < parts_) {
                job_(index);
                pending_.fetch_sub(1, std::memory_order_acq_rel);
            }
        }
    }

    int threads_;
    std::vector<std::thread> workers_;
    std::mutex mutex_, job_mutex_;
    std::condition_variable wake_;
    std::atomic<std::uint64_t> generation_{0};
    std::atomic<int> pending_{0};
    std::function<void(int)> job_;
    int parts_ = 0;
    bool stop_ = false;
};

template <class F>
void parallel_for(std::int64_t n, F&& f) {
    ThreadPool::global().parallel_for(n, std::forward<F>(f));
}

}  // namespace deviant
