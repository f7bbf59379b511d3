// generate — times sampling from a model with deviant's KV-cache decoding, the same work as the
// transformers peer (benchmarks/hf_generate.py): B prompts of P random token ids (fixed seed,
// ids from the middle of the vocabulary so no stop id occurs), N new tokens each with no stop,
// greedy or sampled (temperature 1, top-k 50, top-p 0.95). Prints one JSON line per batch size:
// prefill and decode seconds, new tokens per second, peak resident memory.
//
//   generate --model M.gguf|DIR [--batch 4,16] [--prompt-tokens 256] [--new-tokens 128]
//            [--threads N] [--sample] [--repeat 1] [--dtype f32|bf16] [--dense]
// A GGUF model decodes from its packed Q8_0/Q4_0/Q4_1 blocks (models/load.hpp pack_for_decoding)
// unless --dense is given (then from the dequantized float weights).
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <cblas.h>
#include <nlohmann/json.hpp>

#include "deviant/generate/sampler.hpp"
#include "deviant/models/load.hpp"

using namespace deviant;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) try {
    std::string model_path, batches = "4,16", dtype_name_arg = "f32";
    std::int64_t P = 256, N = 128, threads = 0, repeat = 1;
    bool sample = false, dense = false;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto next = [&]() -> std::string {
            DEVIANT_REQUIRE(i + 1 < argc, "{} needs a value", a);
            return argv[++i];
        };
        if (a == "--model") model_path = next();
        else if (a == "--batch") batches = next();
        else if (a == "--prompt-tokens") P = std::stoll(next());
        else if (a == "--new-tokens") N = std::stoll(next());
        else if (a == "--threads") threads = std::stoll(next());
        else if (a == "--repeat") repeat = std::stoll(next());
        else if (a == "--dtype") dtype_name_arg = next();
        else if (a == "--sample") sample = true;
        else if (a == "--dense") dense = true;
        else fail("unknown argument '{}'", a);
    }
    DEVIANT_REQUIRE(!model_path.empty(), "--model is required");
    DEVIANT_REQUIRE(P > 0 && N > 0 && repeat > 0, "--prompt-tokens, --new-tokens and --repeat must be positive");
    DEVIANT_REQUIRE(dtype_name_arg == "f32" || dtype_name_arg == "bf16", "--dtype must be f32 or bf16, got '{}'", dtype_name_arg);
    if (threads > 0) {
        openblas_set_num_threads(int(threads));
        ThreadPool::set_num_threads(int(threads));
    }
    const DType dtype = dtype_name_arg == "bf16" ? DType::bf16 : DType::f32;
    const auto t_load = Clock::now();
    auto run = [&](auto& model, std::int64_t packed) {
        const double load_s = std::chrono::duration<double>(Clock::now() - t_load).count();
        const std::int64_t V = model.config.vocab_size;
        std::stringstream ss(batches);
        for (std::string item; std::getline(ss, item, ',');) {
            const std::int64_t B = std::stoll(item);
            std::mt19937_64 rng(1234);
            std::vector<std::vector<std::int64_t>> prompts(static_cast<std::size_t>(B));
            for (auto& p : prompts)
                for (std::int64_t t = 0; t < P; ++t) p.push_back(V / 4 + std::int64_t(rng() % std::uint64_t(V / 2)));
            SamplingOptions o;
            o.max_new_tokens = N;
            o.batch_size = B;
            o.show_progress = false;
            o.repetition_penalty = 1.0;
            if (sample) {
                o.temperature = 1.0;
                o.top_k = 50;
                o.top_p = 0.95;
            } else {
                o.temperature = 0;
            }
            // prefill alone (one new token), then the whole run: decode = total - prefill
            double prefill = 1e30, total = 1e30;
            for (std::int64_t r = 0; r < repeat; ++r) {
                SamplingOptions one = o;
                one.max_new_tokens = 1;
                auto t0 = Clock::now();
                generate(model, prompts, one, 1);
                prefill = std::min(prefill, std::chrono::duration<double>(Clock::now() - t0).count());
                t0 = Clock::now();
                auto out = generate(model, prompts, o, 1);
                total = std::min(total, std::chrono::duration<double>(Clock::now() - t0).count());
                for (const auto& row : out) DEVIANT_REQUIRE(std::int64_t(row.size()) == N, "a row stopped early ({} tokens)", row.size());
            }
            rusage u{};
            getrusage(RUSAGE_SELF, &u);
            nlohmann::json j{{"impl", "deviant"},
                             {"model", model_path},
                             {"dtype", dtype_name_arg},
                             {"packed_matrices", packed},
                             {"batch", B},
                             {"prompt_tokens", P},
                             {"new_tokens", N},
                             {"sample", sample},
                             {"threads", threads},
                             {"load_s", load_s},
                             {"prefill_s", prefill},
                             {"total_s", total},
                             {"decode_s", total - prefill},
                             {"new_tokens_per_s", double(B * N) / total},
                             {"decode_tokens_per_s", double(B * (N - 1)) / std::max(1e-9, total - prefill)},
                             {"peak_rss_gib", double(u.ru_maxrss) / (1024.0 * 1024.0)}};
            std::cout << j.dump() << std::endl;
        }
        return 0;
    };
    if (io::is_gguf_file(model_path)) {
        auto model = load_gguf(model_path, dtype);
        std::int64_t packed = 0;
        if (!dense) packed = pack_for_decoding(*model, io::GgufFile::open(model_path));
        return run(*model, packed);
    }
    return with_pretrained(model_path, [&](auto& model) { return run(model, std::int64_t(0)); }, dtype);
} catch (const std::exception& e) {
    std::fprintf(stderr, "generate: %s\n", e.what());
    return 1;
}
