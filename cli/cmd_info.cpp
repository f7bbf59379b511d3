// `deviant info`: what this build of deviant can do (CUDA compiled in, devices present).
#include <fmt/core.h>

#include "command.hpp"
#include "deviant/core/cuda_runtime.hpp"

namespace {
deviant::cli::Registration reg{{"info", "Show build features and devices", [](CLI::App&) {
    return std::function<int()>([] {
        fmt::print("deviant 0.1.0\nCUDA kernels compiled: {}\nCUDA device available: {}\n", deviant::cuda::compiled() ? "yes" : "no",
                   deviant::cuda::available() ? "yes" : "no");
        return 0;
    });
}}};
}  // namespace
