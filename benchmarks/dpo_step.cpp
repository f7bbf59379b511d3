// dpo_step — times one full preference-training step of a randomly initialised Llama-architecture
// model, the same step as the PyTorch peer (torch_dpo_baseline.py on CUDA, given to scripts/gpu-bundle.sh;
// benchmarks/torch_cpu_dpo_step.py on the CPU), and prints one JSON line per (config, objective)
// with the peer's keys so the two lines can be compared directly.
//
//   dpo  : policy forward on chosen+rejected (one batch of 2P rows, (2P, T)) + backward + AdamW,
//          plus a frozen reference forward each step (no graph recorded), sigmoid DPO, beta 0.1
//   orpo : policy only, ORPO (lambda 0.1, as the peer)
//
// Prompt = first quarter of every sequence (masked out of the summed log-probs). FLOPs are counted
// as the peer counts them: 6 x params x tokens (policy) + 2 x params x tokens (reference) + the
// attention matmuls (QK^T and PV, causal not discounted). On the CPU, peak memory is the
// process's peak resident set (getrusage) and MFU is against a float32 1024^3 product (ops/cpu_gemm.hpp)
// timed in the same run; on CUDA, times come from cudaDeviceSynchronize around each step and
// peak memory is the most the caching allocator held (an upper bound of the live bytes).
//
//   dpo_step --config tiny|small|gpt2s|host|all --objective dpo|orpo|all --device cpu|cuda
//            [--steps 20] [--warmup 5] [--threads N] [--dtype f32|bf16]
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include <cblas.h>
#include <nlohmann/json.hpp>

#include "deviant/models/families.hpp"
#include "deviant/objectives/registry.hpp"
#include "deviant/optim/adamw.hpp"
#include "deviant/train/pair_rows.hpp"

using namespace deviant;
using Clock = std::chrono::steady_clock;

namespace {

struct BenchConfig {
    const char* name;
    std::int64_t layers, d_model, heads, kv, ffn, vocab, seq, pairs;
};

// The peer's config table.
constexpr BenchConfig kConfigs[] = {
    {"tiny", 4, 256, 4, 4, 688, 8192, 256, 8},
    {"small", 8, 512, 8, 8, 1376, 32000, 512, 8},
    {"gpt2s", 12, 768, 12, 12, 2048, 32000, 1024, 8},
    // tiny's graph (4 layers, same ops and parameter count of tensors) on negligible shapes: the
    // step time is what the host spends per step (tape, allocations, launches). Not part of "all".
    {"host", 4, 32, 4, 4, 64, 256, 16, 1},
};

ModelConfig model_config(const BenchConfig& c) {
    ModelConfig m;
    m.model_type = "llama";
    m.family = io::ModelFamily::llama;
    m.vocab_size = c.vocab;
    m.hidden_size = c.d_model;
    m.intermediate_size = c.ffn;
    m.num_hidden_layers = c.layers;
    m.num_attention_heads = c.heads;
    m.num_key_value_heads = c.kv;
    m.head_dim = c.d_model / c.heads;
    m.max_position_embeddings = c.seq;
    m.norm_eps = 1e-6;  // LlamaConfig's rms_norm_eps default
    m.hidden_act = "silu";
    m.tie_word_embeddings = false;
    return m;
}

// P pairs of random tokens: prompt = first T/4 tokens, chosen and rejected the remaining 3T/4.
std::vector<data::TokenPair> random_pairs(const BenchConfig& c, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<std::int64_t> tok(0, c.vocab - 1);
    const std::int64_t prompt = c.seq / 4, completion = c.seq - prompt;
    std::vector<data::TokenPair> pairs(std::size_t(c.pairs));
    for (auto& p : pairs) {
        for (std::int64_t i = 0; i < prompt; ++i) p.prompt.push_back(tok(rng));
        for (std::int64_t i = 0; i < completion; ++i) p.chosen.push_back(tok(rng));
        for (std::int64_t i = 0; i < completion; ++i) p.rejected.push_back(tok(rng));
    }
    return pairs;
}

double peak_rss_gib() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return double(u.ru_maxrss) * 1024.0 / double(1ull << 30);  // ru_maxrss is in KiB on Linux
}

void sync(Device d) {
    if (d == Device::cuda) cuda::synchronize();
}

// float32 sgemm ceiling of this CPU: best of 5 timed 1024^3 products, in TFLOP/s.
double cpu_sgemm_tflops() {
    const int n = 1024;
    std::vector<float> a(std::size_t(n) * n, 0.5f), b(std::size_t(n) * n, 0.25f), c(std::size_t(n) * n);
    auto gemm = [&] { ops::detail::gemm_row_major<float>(false, false, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n); };
    gemm();
    double best = 1e30;
    for (int i = 0; i < 5; ++i) {
        auto s = Clock::now();
        gemm();
        best = std::min(best, std::chrono::duration<double>(Clock::now() - s).count());
    }
    return 2.0 * double(n) * n * n / best / 1e12;
}

#ifdef DEVIANT_WITH_CUDA
// bf16 matmul ceiling on the device (8192^3 through ops::matmul), TFLOP/s; the peer measures the same.
double cuda_matmul_tflops() {
    const std::int64_t n = 8192;
    Tensor a = Tensor::full({n, n}, 0.5, DType::bf16, Device::cuda), b = Tensor::full({n, n}, 0.25, DType::bf16, Device::cuda);
    for (int i = 0; i < 3; ++i) (void)ops::matmul(a, b);
    cuda::synchronize();
    auto s = Clock::now();
    for (int i = 0; i < 10; ++i) (void)ops::matmul(a, b);
    cuda::synchronize();
    return 2.0 * double(n) * n * n * 10 / std::chrono::duration<double>(Clock::now() - s).count() / 1e12;
}
#endif

struct Result {
    nlohmann::json line;
    double tflops = 0;
};

Result run(const BenchConfig& c, const std::string& objective_name, Device device, DType dtype, int steps, int warmup) {
    const ModelConfig mc = model_config(c);
    Llama policy(mc, {}, /*seed=*/0, dtype);
    policy.to(device);
    std::unique_ptr<Llama> reference;
    if (objective_name == "dpo") {
        reference = std::make_unique<Llama>(mc, ParameterSource{}, /*seed=*/0, dtype);  // same seed: the same weights
        reference->to(device);
        for (Parameter& p : reference->parameters()) p.trainable = false;
    }
    std::vector<Parameter*> params;
    for (Parameter& p : policy.parameters()) params.push_back(&p);
    const std::int64_t n_params = policy.num_parameters();
    optim::AdamWOptions ao;
    ao.weight_decay = 0.01;  // torch.optim.AdamW's default
    optim::AdamW adamw(params, ao);
    ObjectiveOptions oo;
    oo.beta = 0.1;
    oo.lambda = 0.1;  // the peer's ORPO lambda
    AnyObjective objective = make_objective(objective_name, oo);

    const std::vector<data::TokenPair> pairs = random_pairs(c, 1);
    const SequenceRows rows = make_rows(pairs, dtype);  // (2P, T): chosen rows, then rejected rows
    const double lr = 1e-5;
    double loss_value = 0;

    auto step = [&] {
        // The reference forward first: its values are released before the policy's graph exists.
        std::pair<Tensor, Tensor> ref_logps;
        if (reference) ref_logps = reference_logps(*reference, rows);
        Tape tape;
        PairLogps lp = pair_logps(tape, policy, rows);
        if (reference) std::tie(lp.ref_chosen_logp, lp.ref_rejected_logp) = ref_logps;
        ObjectiveResult r = objective(lp);
        tape.backward(r.loss);
        adamw.step(lr);
        adamw.zero_grad();
        loss_value = r.loss.value().item();
    };

    // CUDA memory: the peak of live blocks over the run (torch's max_memory_allocated counts the same),
    // and what the caching allocator holds from the device at the end (live + cached).
    if (device == Device::cuda) CudaCachingAllocator::instance().reset_peak();
    double peak_cuda_bytes = 0, reserved_cuda_bytes = 0;
    auto note_memory = [&] {
        if (device != Device::cuda) return;
        peak_cuda_bytes = double(CudaCachingAllocator::instance().peak_live_bytes());
        reserved_cuda_bytes = double(CudaCachingAllocator::instance().allocated_bytes());
    };
    for (int i = 0; i < warmup; ++i) step(), note_memory();
    sync(device);
    std::vector<double> times;
    for (int i = 0; i < steps; ++i) {
        auto s = Clock::now();
        step();
        sync(device);
        times.push_back(std::chrono::duration<double>(Clock::now() - s).count());
        note_memory();
    }
    std::vector<double> sorted = times;
    std::sort(sorted.begin(), sorted.end());
    const std::size_t n = sorted.size();
    const double med = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);

    const std::int64_t B = 2 * c.pairs, T = c.seq, tokens = B * T;
    const double attn = 2.0 * 2.0 * double(c.layers) * double(T) * double(T) * double(c.d_model);
    const double fwd_flops = double(B) * (2.0 * double(n_params) * double(T) + attn);
    const double flops = 3 * fwd_flops + (objective_name == "dpo" ? fwd_flops : 0.0);

    Result r;
    r.tflops = flops / med / 1e12;
    r.line = {{"impl", "deviant"},
              {"device", device == Device::cpu ? "cpu" : "cuda"},
              {"config", c.name},
              {"objective", objective_name},
              {"compiled", false},
              {"dtype", dtype == DType::bf16 ? "bf16" : "f32"},
              {"params", n_params},
              {"tokens_per_step", tokens},
              {"step_s_median", med},
              {"step_s_min", sorted.front()},
              {"tokens_per_s", double(tokens) / med},
              {"tflops", r.tflops},
              {"peak_mem_gib", device == Device::cpu ? peak_rss_gib() : peak_cuda_bytes / double(1ull << 30)},
              {"peak_mem_kind", device == Device::cpu ? "process peak RSS" : "peak live CUDA blocks"},
              {"reserved_mem_gib", device == Device::cpu ? 0.0 : reserved_cuda_bytes / double(1ull << 30)},
              {"loss", loss_value}};
    return r;
}

double round5(double v) { return std::round(v * 1e5) / 1e5; }

int usage(const char* msg) {
    std::cerr << "dpo_step: " << msg
              << "\nusage: dpo_step [--config tiny|small|gpt2s|host|all] [--objective dpo|orpo|all] [--device cpu|cuda]"
                 " [--steps N] [--warmup N] [--threads N] [--dtype f32|bf16]\n";
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    std::string config = "tiny", objective = "all", device_name = "cpu", dtype_name;
    int steps = 20, warmup = 5, threads = 0;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw Error("option " + a + " needs a value");
            return argv[++i];
        };
        try {
            if (a == "--config") config = value();
            else if (a == "--objective") objective = value();
            else if (a == "--device") device_name = value();
            else if (a == "--steps") steps = std::stoi(value());
            else if (a == "--warmup") warmup = std::stoi(value());
            else if (a == "--threads") threads = std::stoi(value());
            else if (a == "--dtype") dtype_name = value();
            else if (a == "-h" || a == "--help") return usage("help"), 0;
            else return usage(("unknown option " + a).c_str());
        } catch (const std::exception& e) {
            return usage(e.what());
        }
    }
    if (steps < 1 || warmup < 0) return usage("--steps must be >= 1 and --warmup >= 0");
    if (device_name != "cpu" && device_name != "cuda") return usage("--device must be cpu or cuda");
    const Device device = device_name == "cuda" ? Device::cuda : Device::cpu;
    // The peer runs bf16 autocast on CUDA and float32 on the CPU.
    if (dtype_name.empty()) dtype_name = device == Device::cuda ? "bf16" : "f32";
    if (dtype_name != "f32" && dtype_name != "bf16") return usage("--dtype must be f32 or bf16");
    const DType dtype = dtype_name == "bf16" ? DType::bf16 : DType::f32;

    std::vector<BenchConfig> configs;
    for (const auto& c : kConfigs)
        if ((config == "all" && std::string(c.name) != "host") || config == c.name) configs.push_back(c);
    if (configs.empty()) return usage("--config must be tiny, small, gpt2s, host or all");
    std::vector<std::string> objectives;
    if (objective == "all") objectives = {"dpo", "orpo"};
    else if (objective == "dpo" || objective == "orpo") objectives = {objective};
    else return usage("--objective must be dpo, orpo or all");

    try {
        if (threads > 0) {
            openblas_set_num_threads(threads);
            ThreadPool::set_num_threads(threads);  // deviant's own parallel loops use the same count
        }
        nlohmann::json header{{"impl", "deviant"}, {"device", device_name}, {"dtype", dtype_name}};
        double ceiling = 0;
        if (device == Device::cpu) {
            ceiling = cpu_sgemm_tflops();
            header["cpu_threads"] = threads > 0 ? threads : openblas_get_num_threads();
            header["f32_sgemm_tflops"] = round5(ceiling);
            header["note"] = "CPU run: peak_mem_gib is the process peak RSS, mfu is against the measured 1024^3 float32 product";
            header["cpu_gemm"] = ops::cpu_gemm_library_name();
        } else {
#ifdef DEVIANT_WITH_CUDA
            cuda::require_available();
            ceiling = cuda_matmul_tflops();
            header["bf16_matmul_tflops"] = std::round(ceiling * 10) / 10;
#else
            throw Error("built without CUDA: --device cuda is unavailable");
#endif
        }
        std::cout << header.dump() << std::endl;
        for (const auto& c : configs)
            for (const auto& o : objectives) {
                Result r = run(c, o, device, dtype, steps, warmup);
                r.line["mfu"] = r.tflops / ceiling;
                for (auto& [k, v] : r.line.items())
                    if (v.is_number_float()) v = round5(v.get<double>());
                std::cout << r.line.dump() << std::endl;
            }
    } catch (const std::exception& e) {
        std::cerr << "dpo_step: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
