// deviant/core/cuda_runtime.hpp — the thin layer between plain C++ and the CUDA runtime.
// Compiled by any C++ compiler: with DEVIANT_WITH_CUDA it calls the runtime API (no kernels
// here), without it every CUDA request throws a clear "built without CUDA" error.
#pragma once
#include <cstddef>

#include "deviant/core/error.hpp"

#ifdef DEVIANT_WITH_CUDA
#include <cuda_runtime_api.h>
#define DEVIANT_CUDA_CHECK(expr)                                                           \
    do {                                                                                   \
        cudaError_t deviant_err_ = (expr);                                                 \
        if (deviant_err_ != cudaSuccess)                                                   \
            ::deviant::fail("CUDA error {} in {} ({}:{})", cudaGetErrorString(deviant_err_), #expr, \
                            __FILE__, __LINE__);                                           \
    } while (0)
#endif

namespace deviant::cuda {

// True when the library was compiled with CUDA support.
constexpr bool compiled() {
#ifdef DEVIANT_WITH_CUDA
    return true;
#else
    return false;
#endif
}

// True when CUDA support is compiled in and at least one device is usable right now.
inline bool available() {
#ifdef DEVIANT_WITH_CUDA
    static const bool ok = [] {
        int n = 0;
        if (cudaGetDeviceCount(&n) != cudaSuccess) {
            cudaGetLastError();
            return false;
        }
        return n > 0;
    }();
    return ok;
#else
    return false;
#endif
}

inline void require_available() {
    DEVIANT_REQUIRE(compiled(), "this build of deviant has no CUDA support (configure with DEVIANT_CUDA=ON)");
    DEVIANT_REQUIRE(available(), "no CUDA device is available");
}

inline void* raw_malloc(std::size_t bytes) {
#ifdef DEVIANT_WITH_CUDA
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
        cudaGetLastError();  // clear the sticky "last error": the caller may free its cache and retry successfully
        fail("CUDA error {} in cudaMalloc({} bytes)", cudaGetErrorString(e), bytes);
    }
    return p;
#else
    (void)bytes;
    require_available();
    return nullptr;
#endif
}

inline void raw_free(void* p) {
#ifdef DEVIANT_WITH_CUDA
    cudaFree(p);
#else
    (void)p;
#endif
}

enum class CopyKind { host_to_device, device_to_host, device_to_device };

inline void memcpy(void* dst, const void* src, std::size_t bytes, CopyKind kind) {
#ifdef DEVIANT_WITH_CUDA
    cudaMemcpyKind k = kind == CopyKind::host_to_device   ? cudaMemcpyHostToDevice
                       : kind == CopyKind::device_to_host ? cudaMemcpyDeviceToHost
                                                          : cudaMemcpyDeviceToDevice;
    DEVIANT_CUDA_CHECK(cudaMemcpy(dst, src, bytes, k));
#else
    (void)dst, (void)src, (void)bytes, (void)kind;
    require_available();
#endif
}

inline void memset(void* dst, int value, std::size_t bytes) {
#ifdef DEVIANT_WITH_CUDA
    DEVIANT_CUDA_CHECK(cudaMemset(dst, value, bytes));
#else
    (void)dst, (void)value, (void)bytes;
    require_available();
#endif
}

inline void synchronize() {
#ifdef DEVIANT_WITH_CUDA
    DEVIANT_CUDA_CHECK(cudaDeviceSynchronize());
#endif
}

}  // namespace deviant::cuda
