// Throughput of the core ops: matmul (OpenBLAS on the CPU, cuBLASLt on CUDA) in FLOP/s and
// softmax over (rows, vocab) logits in bytes/s (one read and one write of every element).
// CUDA variants time with CUDA events (manual time) and report "no CUDA device" when none exists.
#include <benchmark/benchmark.h>

#include <random>

#include "deviant/ops/matmul.hpp"
#include "deviant/ops/softmax.hpp"

using namespace deviant;

namespace {

Tensor random_matrix(const Shape& s, DType dt, Device dev) {
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    std::vector<float> v(std::size_t(s.numel()));
    for (auto& x : v) x = u(rng);
    return Tensor::from(v, s, dt).to(dev);
}

// Times `body` per iteration with CUDA events; skips when no device is present.
template <class F>
void run_cuda(benchmark::State& state, F&& body) {
#ifdef DEVIANT_WITH_CUDA
    if (!cuda::available()) {
        state.SkipWithError("no CUDA device");
        return;
    }
    body();  // warm-up (handle creation, first-launch costs)
    cuda::synchronize();
    cudaEvent_t start, stop;
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
    for (auto _ : state) {
        cudaEventRecord(start);
        body();
        cudaEventRecord(stop);
        cudaEventSynchronize(stop);
        float ms = 0;
        cudaEventElapsedTime(&ms, start, stop);
        state.SetIterationTime(double(ms) / 1e3);
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
#else
    (void)body;
    state.SkipWithError("no CUDA device (built without CUDA)");
#endif
}

void set_flops(benchmark::State& state, std::int64_t M, std::int64_t K, std::int64_t N) {
    state.counters["FLOP/s"] = benchmark::Counter(2.0 * double(M) * double(K) * double(N), benchmark::Counter::kIsIterationInvariantRate);
}
void set_bytes(benchmark::State& state, std::int64_t elements, DType dt) {
    state.SetBytesProcessed(state.iterations() * 2 * elements * std::int64_t(dtype_size(dt)));
}

// Args: M, K, N — (M, K) @ (K, N) in float32.
void BM_matmul_cpu(benchmark::State& state) {
    std::int64_t M = state.range(0), K = state.range(1), N = state.range(2);
    Tensor a = random_matrix({M, K}, DType::f32, Device::cpu), b = random_matrix({K, N}, DType::f32, Device::cpu);
    for (auto _ : state) benchmark::DoNotOptimize(ops::matmul(a, b));
    set_flops(state, M, K, N);
}
// Linear layer: x (M, K) @ w^T with w stored (N, K), the transpose read in place.
void BM_linear_cpu(benchmark::State& state) {
    std::int64_t M = state.range(0), K = state.range(1), N = state.range(2);
    Tensor x = random_matrix({M, K}, DType::f32, Device::cpu), w = random_matrix({N, K}, DType::f32, Device::cpu);
    for (auto _ : state) benchmark::DoNotOptimize(ops::linear(x, w));
    set_flops(state, M, K, N);
}
// Args: M, K, N, dtype (0 float32, 1 bfloat16).
void BM_matmul_cuda(benchmark::State& state) {
    std::int64_t M = state.range(0), K = state.range(1), N = state.range(2);
    DType dt = state.range(3) ? DType::bf16 : DType::f32;
    if (!cuda::available()) return run_cuda(state, [] {});
    Tensor a = random_matrix({M, K}, dt, Device::cuda), b = random_matrix({K, N}, dt, Device::cuda);
    run_cuda(state, [&] { benchmark::DoNotOptimize(ops::matmul(a, b)); });
    set_flops(state, M, K, N);
}

// Args: rows, cols — softmax of float32 logits along the last axis.
void BM_softmax_cpu(benchmark::State& state) {
    std::int64_t R = state.range(0), C = state.range(1);
    Tensor x = random_matrix({R, C}, DType::f32, Device::cpu);
    for (auto _ : state) benchmark::DoNotOptimize(ops::softmax(x));
    set_bytes(state, R * C, DType::f32);
}
// Args: rows, cols, dtype (0 float32, 1 bfloat16).
void BM_softmax_cuda(benchmark::State& state) {
    std::int64_t R = state.range(0), C = state.range(1);
    DType dt = state.range(2) ? DType::bf16 : DType::f32;
    if (!cuda::available()) return run_cuda(state, [] {});
    Tensor x = random_matrix({R, C}, dt, Device::cuda);
    run_cuda(state, [&] { benchmark::DoNotOptimize(ops::softmax(x)); });
    set_bytes(state, R * C, dt);
}

}  // namespace

BENCHMARK(BM_matmul_cpu)->Args({512, 512, 512})->Args({4096, 768, 768})->Unit(benchmark::kMillisecond)->MinTime(0.2)->UseRealTime();
BENCHMARK(BM_linear_cpu)->Args({4096, 768, 768})->Unit(benchmark::kMillisecond)->MinTime(0.2)->UseRealTime();
BENCHMARK(BM_matmul_cuda)->Args({512, 512, 512, 0})->Args({4096, 768, 768, 0})->Args({4096, 768, 768, 1})
    ->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_softmax_cpu)->Args({4096, 32000})->Unit(benchmark::kMillisecond)->Iterations(2)->UseRealTime();
BENCHMARK(BM_softmax_cuda)->Args({4096, 32000, 0})->Args({4096, 32000, 1})->UseManualTime()->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
