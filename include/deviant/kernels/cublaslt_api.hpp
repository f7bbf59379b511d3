// deviant/kernels/cublaslt_api.hpp — cuBLASLt opened on first use, not linked.
// Linking libcublasLt makes every process pay for its load-time relocations (about 200 MiB
// resident, CPU-only runs included: a third of a small model's training footprint). The CUDA
// matmul (kernels/matmul.cuh) calls cuBLASLt through this table instead, which dlopen()s
// libcublasLt.so.<major of the headers compiled against> the first time a GPU product runs:
// first by name (LD_LIBRARY_PATH, the program's run path, the system cache), then from the
// directory the CUDA runtime was loaded from. Every entry point is typed from cublasLt.h itself
// (decltype), so a signature change is a compile error, not a crash.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <string>
#include <type_traits>

#include "deviant/core/error.hpp"

namespace deviant::kernels {

struct CublasLtApi {
    decltype(&::cublasLtCreate) create = nullptr;
    decltype(&::cublasLtGetStatusName) status_name = nullptr;
    decltype(&::cublasLtGetStatusString) status_string = nullptr;
    decltype(&::cublasLtMatrixLayoutCreate) layout_create = nullptr;
    decltype(&::cublasLtMatrixLayoutDestroy) layout_destroy = nullptr;
    decltype(&::cublasLtMatrixLayoutSetAttribute) layout_set_attribute = nullptr;
    decltype(&::cublasLtMatmulDescCreate) desc_create = nullptr;
    decltype(&::cublasLtMatmulDescDestroy) desc_destroy = nullptr;
    decltype(&::cublasLtMatmulDescSetAttribute) desc_set_attribute = nullptr;
    decltype(&::cublasLtMatmulPreferenceCreate) preference_create = nullptr;
    decltype(&::cublasLtMatmulPreferenceDestroy) preference_destroy = nullptr;
    decltype(&::cublasLtMatmulPreferenceSetAttribute) preference_set_attribute = nullptr;
    decltype(&::cublasLtMatmulAlgoGetHeuristic) algo_get_heuristic = nullptr;
    decltype(&::cublasLtMatmul) matmul = nullptr;
    std::string library;  // the file that was opened
};

namespace detail {
inline std::string cublaslt_soname() { return "libcublasLt.so." + std::to_string(CUBLAS_VER_MAJOR); }

// The directory holding the CUDA runtime this process loaded ("" when it cannot be told).
inline std::string cuda_runtime_directory() {
    Dl_info info{};
    if (dladdr(reinterpret_cast<const void*>(&::cudaGetDeviceCount), &info) == 0 || info.dli_fname == nullptr) return {};
    std::string path = info.dli_fname;
    auto slash = path.rfind('/');
    return slash == std::string::npos ? std::string{} : path.substr(0, slash + 1);
}

inline CublasLtApi load_cublaslt() {
    const std::string name = cublaslt_soname();
    CublasLtApi api;
    void* lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    api.library = name;
    if (lib == nullptr) {
        const char* first = dlerror();
        std::string why = first ? first : "not found";
        if (std::string dir = cuda_runtime_directory(); !dir.empty()) {
            api.library = dir + name;
            lib = dlopen(api.library.c_str(), RTLD_NOW | RTLD_LOCAL);
            if (lib == nullptr) {
                const char* second = dlerror();
                if (second) why += std::string("; ") + second;
            }
        }
        if (lib == nullptr)
            fail("cuBLASLt ({}) could not be loaded for a CUDA matrix product: {} (install the CUDA toolkit's cuBLAS or add its "
                 "directory to LD_LIBRARY_PATH)",
                 name, why);
    }
    auto bind = [&](auto& fn, const char* symbol) {
        void* p = dlsym(lib, symbol);
        if (p == nullptr) fail("cuBLASLt: {} has no entry point {}", api.library, symbol);
        fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(p);
    };
    bind(api.create, "cublasLtCreate");
    bind(api.status_name, "cublasLtGetStatusName");
    bind(api.status_string, "cublasLtGetStatusString");
    bind(api.layout_create, "cublasLtMatrixLayoutCreate");
    bind(api.layout_destroy, "cublasLtMatrixLayoutDestroy");
    bind(api.layout_set_attribute, "cublasLtMatrixLayoutSetAttribute");
    bind(api.desc_create, "cublasLtMatmulDescCreate");
    bind(api.desc_destroy, "cublasLtMatmulDescDestroy");
    bind(api.desc_set_attribute, "cublasLtMatmulDescSetAttribute");
    bind(api.preference_create, "cublasLtMatmulPreferenceCreate");
    bind(api.preference_destroy, "cublasLtMatmulPreferenceDestroy");
    bind(api.preference_set_attribute, "cublasLtMatmulPreferenceSetAttribute");
    bind(api.algo_get_heuristic, "cublasLtMatmulAlgoGetHeuristic");
    bind(api.matmul, "cublasLtMatmul");
    return api;  // the library stays open for the life of the process
}
}  // namespace detail

// The process's cuBLASLt entry points, loaded on the first call (thread-safe).
inline const CublasLtApi& cublaslt() {
    static const CublasLtApi api = detail::load_cublaslt();
    return api;
}

}  // namespace deviant::kernels
