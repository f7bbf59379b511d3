// deviant/core/allocator.hpp — where tensor bytes come from.
// CPU: 64-byte aligned blocks from the C heap, which is told once (glibc) to keep blocks up to
// 256 MiB in its arenas rather than mapping each one afresh, and never to trim freed memory back
// to the system: a forward pass frees and reallocates the same activation sizes again and again,
// and freshly mapped pages cost a page fault and a zeroing each (a tenth of a prefill's time, a
// third of a training step's before this). CUDA: a caching allocator that keeps freed blocks in
// size-rounded free lists so a training step reuses memory instead of calling cudaMalloc.
// Testing hook: PoisonAllocations fills every new block with NaN bytes so that a kernel that
// leaves part of its output unwritten is caught by the tests.
#pragma once
#include <atomic>
#include <cstdlib>
#include <cstring>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "deviant/core/cuda_runtime.hpp"

namespace deviant {

enum class Device : std::uint8_t { cpu, cuda };
inline const char* device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }

namespace detail {
inline bool& poison_flag() {
    static thread_local bool on = false;
    return on;
}
}  // namespace detail

// While alive, fresh tensor allocations are filled with 0xFF bytes (NaN for every float type).
class PoisonAllocations {
public:
    PoisonAllocations() : prev_(detail::poison_flag()) { detail::poison_flag() = true; }
    ~PoisonAllocations() { detail::poison_flag() = prev_; }
    PoisonAllocations(const PoisonAllocations&) = delete;
    PoisonAllocations& operator=(const PoisonAllocations&) = delete;

private:
    bool prev_;
};

class CudaCachingAllocator {
public:
    static CudaCachingAllocator& instance() {
        static CudaCachingAllocator* a = new CudaCachingAllocator();  // never destroyed: outlives static tensors
        return *a;
    }
    void* allocate(std::size_t bytes) {
        std::size_t size = round(bytes);
        {
            std::lock_guard<std::mutex> lock(mu_);
            auto it = free_.lower_bound(size);
            if (it != free_.end() && it->first <= size * 2) {  // reuse a block no more than twice as big
                void* p = it->second;
                live_[p] = it->first;
                cached_bytes_ -= it->first;
                note_live(it->first);
                free_.erase(it);
                return p;
            }
        }
        void* p = nullptr;
        try {
            p = cuda::raw_malloc(size);
        } catch (const Error&) {
            release_cached();  // out of memory: give the cache back and try once more
            p = cuda::raw_malloc(size);
        }
        std::lock_guard<std::mutex> lock(mu_);
        live_[p] = size;
        allocated_bytes_ += size;
        note_live(size);
        return p;
    }
    void deallocate(void* p) {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = live_.find(p);
        if (it == live_.end()) return;
        free_.emplace(it->second, p);
        cached_bytes_ += it->second;
        live_bytes_ -= it->second;
        live_.erase(it);
    }
    void release_cached() {
        std::lock_guard<std::mutex> lock(mu_);
        for (auto& [size, p] : free_) {
            cuda::raw_free(p);
            allocated_bytes_ -= size;
        }
        free_.clear();
        cached_bytes_ = 0;
    }
    // Bytes held from the device (live blocks plus the cache), and bytes in live blocks (rounded
    // sizes: torch's max_memory_allocated counts the same way) with their peak since reset_peak().
    std::size_t allocated_bytes() const { return allocated_bytes_; }
    std::size_t cached_bytes() const { return cached_bytes_; }
    std::size_t live_bytes() const { return live_bytes_; }
    std::size_t peak_live_bytes() const { return peak_live_bytes_; }
    void reset_peak() {
        std::lock_guard<std::mutex> lock(mu_);
        peak_live_bytes_ = live_bytes_;
    }

private:
    static std::size_t round(std::size_t b) {
        if (b < 512) return 512;
        if (b < (1u << 20)) return (b + 511) & ~std::size_t(511);
        return (b + (1u << 20) - 1) & ~std::size_t((1u << 20) - 1);
    }
    std::mutex mu_;
    std::multimap<std::size_t, void*> free_;
    std::map<void*, std::size_t> live_;
    void note_live(std::size_t size) {
        live_bytes_ += size;
        if (live_bytes_ > peak_live_bytes_) peak_live_bytes_ = live_bytes_;
    }
    std::size_t allocated_bytes_ = 0, cached_bytes_ = 0, live_bytes_ = 0, peak_live_bytes_ = 0;
};

// Bytes of host tensor memory in live blocks and their peak since reset: what a step holds,
// whatever the C heap keeps cached. Tests use it to check that the tape releases what backward
// no longer needs.
class HostMemoryStats {
public:
    static HostMemoryStats& instance() {
        static HostMemoryStats s;
        return s;
    }
    std::size_t live_bytes() const { return live_.load(std::memory_order_relaxed); }
    std::size_t peak_live_bytes() const { return peak_.load(std::memory_order_relaxed); }
    void reset_peak() { peak_.store(live_bytes(), std::memory_order_relaxed); }
    void note_allocated(std::size_t bytes) {
        std::size_t now = live_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
        std::size_t peak = peak_.load(std::memory_order_relaxed);
        while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
        }
    }
    void note_freed(std::size_t bytes) { live_.fetch_sub(bytes, std::memory_order_relaxed); }

private:
    std::atomic<std::size_t> live_{0}, peak_{0};
};

// One block of tensor memory on one device; freed (or returned to the cache) on destruction.
class Storage {
public:
    Storage(std::size_t bytes, Device device) : bytes_(bytes), device_(device) {
        std::size_t n = bytes ? bytes : 1;
        if (device == Device::cpu) {
#if defined(__GLIBC__)
            static const bool heap_tuned = [] {
                mallopt(M_MMAP_THRESHOLD, 256 << 20);
                mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
                return true;
            }();
            (void)heap_tuned;
#endif
            data_ = std::aligned_alloc(64, (n + 63) & ~std::size_t(63));
            DEVIANT_REQUIRE(data_ != nullptr, "out of host memory allocating {} bytes", bytes);
            HostMemoryStats::instance().note_allocated(n);
            if (detail::poison_flag()) std::memset(data_, 0xFF, n);
        } else {
            data_ = CudaCachingAllocator::instance().allocate(n);
            if (detail::poison_flag()) cuda::memset(data_, 0xFF, n);
        }
    }
    // Wraps memory owned elsewhere (a memory-mapped file); `keep_alive` holds its owner.
    Storage(void* data, std::size_t bytes, std::shared_ptr<void> keep_alive)
        : data_(data), bytes_(bytes), device_(Device::cpu), external_(std::move(keep_alive)), borrowed_(true) {}
    ~Storage() {
        if (borrowed_) return;
        if (device_ == Device::cpu) {
            std::free(data_);
            HostMemoryStats::instance().note_freed(bytes_ ? bytes_ : 1);
        } else CudaCachingAllocator::instance().deallocate(data_);
    }
    Storage(const Storage&) = delete;
    Storage& operator=(const Storage&) = delete;

    void* data() const { return data_; }
    std::size_t bytes() const { return bytes_; }
    Device device() const { return device_; }

private:
    void* data_ = nullptr;
    std::size_t bytes_ = 0;
    Device device_ = Device::cpu;
    std::shared_ptr<void> external_;
    bool borrowed_ = false;
};

}  // namespace deviant
