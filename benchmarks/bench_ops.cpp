// Throughput of the core ops and the fused training kernels, each against what bounds it:
//   FLOP/s  matmul (OpenBLAS / cuBLASLt), causal attention forward and backward (matmul FLOPs of
//           the causal half), the LM-head log-probs forward and backward (the vocabulary products)
//   bytes/s softmax, RMSNorm forward/backward, AdamW (bytes each must read and write once)
// and the two ceilings they are read against on the same device: the bf16 8192^3 matmul and a
// device-to-device copy. CUDA variants time with CUDA events (manual time) and report "no CUDA
// device" when none exists; CPU variants use small shapes so the whole set runs in seconds.
#include <benchmark/benchmark.h>

#include <random>

#include "deviant/ops/attention.hpp"
#include "deviant/ops/lm_head.hpp"
#include "deviant/ops/matmul.hpp"
#include "deviant/ops/norm.hpp"
#include "deviant/ops/softmax.hpp"
#include "deviant/optim/adamw.hpp"

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

void set_flop_count(benchmark::State& state, double flops) {
    state.counters["FLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
}
void set_byte_count(benchmark::State& state, double bytes) {
    state.SetBytesProcessed(std::int64_t(double(state.iterations()) * bytes));
}
DType dtype_arg(std::int64_t v) { return v == 1 ? DType::bf16 : v == 2 ? DType::f64 : DType::f32; }

// Runs `body` timed on the benchmark's device: CUDA events there, wall time on the CPU.
template <class F>
void run_on(benchmark::State& state, Device dev, F&& body) {
    if (dev == Device::cuda) return run_cuda(state, body);
    for (auto _ : state) body();
}

// Args: B, H, T, D, dtype (0 f32, 1 bf16). q, k, v (B, H, T, D); one segment per row.
void attention_inputs(benchmark::State& state, Device dev, Tensor& q, Tensor& k, Tensor& v, Tensor& seg) {
    const std::int64_t B = state.range(0), H = state.range(1), T = state.range(2), D = state.range(3);
    const DType dt = dtype_arg(state.range(4));
    q = random_matrix({B, H, T, D}, dt, dev), k = random_matrix({B, H, T, D}, dt, dev), v = random_matrix({B, H, T, D}, dt, dev);
    seg = Tensor::zeros({B, T}, DType::i64, dev);
}
double attention_flops(benchmark::State& state) {  // QK^T and PV over the causal half
    return 2.0 * double(state.range(0) * state.range(1)) * double(state.range(2)) * double(state.range(2)) * double(state.range(3));
}
void attention_forward(benchmark::State& state, Device dev) {
    if (dev == Device::cuda && !cuda::available()) return run_cuda(state, [] {});
    Tensor q, k, v, seg;
    attention_inputs(state, dev, q, k, v, seg);
    const double scale = 1.0 / std::sqrt(double(state.range(3)));
    run_on(state, dev, [&] { benchmark::DoNotOptimize(ops::causal_attention_forward(q, k, v, seg, scale)); });
    set_flop_count(state, attention_flops(state));
}
void attention_backward(benchmark::State& state, Device dev) {  // recompute of the scores + dV, dP, dQ, dK: 5 causal products
    if (dev == Device::cuda && !cuda::available()) return run_cuda(state, [] {});
    Tensor q, k, v, seg;
    attention_inputs(state, dev, q, k, v, seg);
    const double scale = 1.0 / std::sqrt(double(state.range(3)));
    ops::AttentionOutput fwd = ops::causal_attention_forward(q, k, v, seg, scale);
    Tensor dout = random_matrix(q.shape(), q.dtype(), dev);
    run_on(state, dev, [&] { benchmark::DoNotOptimize(ops::causal_attention_backward(q, k, v, seg, fwd.out, fwd.lse, dout, scale)); });
    set_flop_count(state, 2.5 * attention_flops(state));
}
void BM_attention_forward_cpu(benchmark::State& s) { attention_forward(s, Device::cpu); }
void BM_attention_forward_cuda(benchmark::State& s) { attention_forward(s, Device::cuda); }
void BM_attention_backward_cpu(benchmark::State& s) { attention_backward(s, Device::cpu); }
void BM_attention_backward_cuda(benchmark::State& s) { attention_backward(s, Device::cuda); }

// Args: rows, C, dtype. Forward reads x and writes y; backward reads x and dy, writes dx (weight and stats are small).
void rms_norm(benchmark::State& state, Device dev, bool backward) {
    if (dev == Device::cuda && !cuda::available()) return run_cuda(state, [] {});
    const std::int64_t R = state.range(0), C = state.range(1);
    const DType dt = dtype_arg(state.range(2));
    Tensor x = random_matrix({R, C}, dt, dev), w = random_matrix({C}, dt, dev);
    if (!backward) {
        run_on(state, dev, [&] { benchmark::DoNotOptimize(ops::rms_norm(x, w, 1e-5)); });
        set_byte_count(state, 2.0 * double(R * C) * double(dtype_size(dt)));
        return;
    }
    ops::NormResult f = ops::rms_norm(x, w, 1e-5);
    Tensor dy = random_matrix({R, C}, dt, dev);
    run_on(state, dev, [&] { benchmark::DoNotOptimize(ops::rms_norm_backward(x, w, f.stats, dy)); });
    set_byte_count(state, 3.0 * double(R * C) * double(dtype_size(dt)));
}
void BM_rms_norm_forward_cpu(benchmark::State& s) { rms_norm(s, Device::cpu, false); }
void BM_rms_norm_forward_cuda(benchmark::State& s) { rms_norm(s, Device::cuda, false); }
void BM_rms_norm_backward_cpu(benchmark::State& s) { rms_norm(s, Device::cpu, true); }
void BM_rms_norm_backward_cuda(benchmark::State& s) { rms_norm(s, Device::cuda, true); }

// Args: N rows, C, V, dtype. Forward: N x C x V products; backward: recompute plus the two gradient products.
void token_logprobs(benchmark::State& state, Device dev, bool backward) {
    if (dev == Device::cuda && !cuda::available()) return run_cuda(state, [] {});
    const std::int64_t N = state.range(0), C = state.range(1), V = state.range(2);
    const DType dt = dtype_arg(state.range(3));
    Tensor h = random_matrix({N, C}, dt, dev), w = random_matrix({V, C}, dt, dev);
    std::vector<std::int64_t> t;
    for (std::int64_t i = 0; i < N; ++i) t.push_back((i * 7919) % V);
    Tensor targets = Tensor::from(t, {N}).to(dev);
    const double product = 2.0 * double(N) * double(C) * double(V);
    if (!backward) {
        run_on(state, dev, [&] { benchmark::DoNotOptimize(ops::token_logprobs(h, w, targets)); });
        set_flop_count(state, product);
        return;
    }
    ops::TokenLogprobsResult f = ops::token_logprobs(h, w, targets);
    Tensor dy = Tensor::full({N}, 1.0, f.lse.dtype(), dev);
    run_on(state, dev, [&] {
        benchmark::DoNotOptimize(ops::token_logprobs_backward(h, w, f.targets, f.lse, dy, true, true));
    });
    set_flop_count(state, 3.0 * product);
}
// A frozen head (LoRA): log-probs and the hidden gradient, as recompute (forward, then backward's
// recompute and dz @ W: 3 products) or expected embedding (forward with E = softmax(z) W, then the
// element-wise backward: 2 products). Args: N, C, V, dtype, expected (0/1).
void BM_token_logprobs_frozen_head_cpu(benchmark::State& state) {
    const std::int64_t N = state.range(0), C = state.range(1), V = state.range(2);
    const DType dt = dtype_arg(state.range(3));
    const bool expected = state.range(4) != 0;
    Tensor h = random_matrix({N, C}, dt, Device::cpu), w = random_matrix({V, C}, dt, Device::cpu);
    std::vector<std::int64_t> t;
    for (std::int64_t i = 0; i < N; ++i) t.push_back((i * 7919) % V);
    Tensor targets = Tensor::from(t, {N});
    for (auto _ : state) {
        ops::TokenLogprobsResult f = ops::token_logprobs(h, w, targets, {}, expected);
        Tensor dy = Tensor::full({N}, 1.0, f.lse.dtype());
        if (expected) benchmark::DoNotOptimize(ops::token_logprobs_frozen_head_backward(w, f.targets, f.expected, dy, h.dtype()));
        else benchmark::DoNotOptimize(ops::token_logprobs_backward(h, w, f.targets, f.lse, dy, true, false));
    }
    set_flop_count(state, (expected ? 4.0 : 6.0) * double(N) * double(C) * double(V));
}
void BM_token_logprobs_forward_cpu(benchmark::State& s) { token_logprobs(s, Device::cpu, false); }
void BM_token_logprobs_forward_cuda(benchmark::State& s) { token_logprobs(s, Device::cuda, false); }
void BM_token_logprobs_backward_cpu(benchmark::State& s) { token_logprobs(s, Device::cpu, true); }
void BM_token_logprobs_backward_cuda(benchmark::State& s) { token_logprobs(s, Device::cuda, true); }

// Args: elements, dtype. bf16 with float32 masters: reads grad, param-master, m, v; writes master, param, m, v.
void adamw(benchmark::State& state, Device dev) {
    if (dev == Device::cuda && !cuda::available()) return run_cuda(state, [] {});
    const std::int64_t n = state.range(0);
    const DType dt = dtype_arg(state.range(1));
    Parameter p("w", random_matrix({n}, dt, dev));
    p.grad = random_matrix({n}, dt, dev);
    optim::AdamW opt({&p}, {0.9, 0.999, 1e-8, 0.01});
    run_on(state, dev, [&] { opt.step(1e-5); });
    const double e = double(dtype_size(dt)), s = 4.0;  // state bytes (float32)
    set_byte_count(state, double(n) * (dt == DType::bf16 ? (e + 4 * s + s + e + 2 * s) : (2 * e + 2 * s + e + 2 * s)));
}
void BM_adamw_cpu(benchmark::State& s) { adamw(s, Device::cpu); }
void BM_adamw_cuda(benchmark::State& s) { adamw(s, Device::cuda); }

// The ceilings: a device-to-device copy (bytes read + written) beside the bf16 matmul below.
void BM_copy_ceiling_cuda(benchmark::State& state) {
    if (!cuda::available()) return run_cuda(state, [] {});
    const std::int64_t n = state.range(0);
    Tensor a = Tensor::zeros({n}, DType::f32, Device::cuda), b = Tensor::zeros({n}, DType::f32, Device::cuda);
    run_cuda(state, [&] { b.copy_from(a); });
    set_byte_count(state, 2.0 * double(n) * 4.0);
}

}  // namespace

BENCHMARK(BM_copy_ceiling_cuda)->Arg(std::int64_t(1) << 28)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_attention_forward_cpu)->Args({1, 4, 256, 64, 0})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_attention_backward_cpu)->Args({1, 4, 256, 64, 0})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_attention_forward_cuda)->Args({16, 12, 1024, 64, 1})->Args({16, 12, 1024, 64, 0})->Args({16, 4, 256, 64, 1})
    ->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_attention_backward_cuda)->Args({16, 12, 1024, 64, 1})->Args({16, 4, 256, 64, 1})->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_rms_norm_forward_cpu)->Args({4096, 768, 0})->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_rms_norm_backward_cpu)->Args({4096, 768, 0})->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_rms_norm_forward_cuda)->Args({16384, 768, 1})->Args({16384, 768, 0})->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_rms_norm_backward_cuda)->Args({16384, 768, 1})->Args({16384, 768, 0})->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_token_logprobs_forward_cpu)->Args({256, 256, 8192, 0})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_token_logprobs_backward_cpu)->Args({256, 256, 8192, 0})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_token_logprobs_frozen_head_cpu)->Args({1536, 576, 49152, 0, 0})->Args({1536, 576, 49152, 0, 1})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_token_logprobs_forward_cuda)->Args({16384, 768, 32000, 1})->Args({16384, 768, 32000, 0})
    ->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_token_logprobs_backward_cuda)->Args({16384, 768, 32000, 1})->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_adamw_cpu)->Args({1 << 20, 0})->Args({1 << 20, 1})->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_adamw_cuda)->Args({1 << 24, 0})->Args({1 << 24, 1})->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_matmul_cpu)->Args({512, 512, 512})->Args({4096, 768, 768})->Unit(benchmark::kMillisecond)->MinTime(0.2)->UseRealTime();
BENCHMARK(BM_linear_cpu)->Args({4096, 768, 768})->Unit(benchmark::kMillisecond)->MinTime(0.2)->UseRealTime();
BENCHMARK(BM_matmul_cuda)->Args({512, 512, 512, 0})->Args({4096, 768, 768, 0})->Args({4096, 768, 768, 1})->Args({8192, 8192, 8192, 1})
    ->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_softmax_cpu)->Args({4096, 32000})->Unit(benchmark::kMillisecond)->Iterations(2)->UseRealTime();
BENCHMARK(BM_softmax_cuda)->Args({4096, 32000, 0})->Args({4096, 32000, 1})->UseManualTime()->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
