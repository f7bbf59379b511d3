// `deviant train`: preference (or SFT) training of a checkpoint, configured by a TOML file and/or
// flags (a flag overrides the file). Full fine-tuning or LoRA; reference log-probs from --ref,
// from the adapters switched off, or from the initial policy; checkpoints, resume, evaluation,
// a progress bar and per-step metrics as JSON Lines (TRL's names). See docs/cli.md.
#include <fmt/core.h>

#include <cmath>
#include <ctime>
#include <limits>
#include <fmt/ranges.h>

#include <fstream>
#include <map>

#include "command.hpp"
#include "train_options.hpp"
#include "deviant/data/text_pairs.hpp"
#include "deviant/data/writing_prompts.hpp"
#include "deviant/dist/world.hpp"
#include "deviant/models/load.hpp"
#include "deviant/nn/lora.hpp"
#include "deviant/tokenizer/gguf_tokenizer.hpp"
#include "deviant/train/reference_cache.hpp"
#include "deviant/train/trainer.hpp"
#include "deviant/train/truncation.hpp"

namespace {

using namespace deviant;
using namespace deviant::cli;
namespace fs = std::filesystem;
using nlohmann::json;

// Reads pairs as token ids or as text (tokenised with the model's tokenizer).
std::vector<data::TokenPair> read_pairs(const TrainArgs& a, const std::string& file, std::int64_t vocab, const std::string& tokenizer_path) {
    std::string format = a.format;
    if (format == "auto") {
        data::JsonLinesReader reader(file);
        data::JsonLine line;
        DEVIANT_REQUIRE(reader.next(line), "{}: no pairs in the file", file);
        format = line.value.contains("prompt_ids") ? "tokens" : "text";
    }
    DEVIANT_REQUIRE(format == "tokens" || format == "text", "--format must be auto, tokens or text, got '{}'", format);
    // Every line is parsed; a bad one stops with FILE:LINE, or with --skip-bad-lines is counted.
    std::vector<data::TokenPair> token_pairs;
    std::vector<data::TextPair> text;
    std::vector<std::size_t> skipped;
    data::JsonLinesReader reader(file);
    data::JsonLine line;
    for (;;) {
        try {
            if (!reader.next(line)) break;
            if (format == "tokens") token_pairs.push_back(data::parse_token_pair(line.value, vocab));
            else {
                text.push_back(data::parse_text_pair(line.value));
                text.back().origin = reader.where(line);
            }
        } catch (const std::exception& e) {
            std::string what = e.what();
            if (what.rfind(file, 0) != 0) what = fmt::format("{}:{}: {}", file, reader.line_number(), what);
            if (!a.skip_bad_lines) fail("{}", what);
            skipped.push_back(reader.line_number());
        }
    }
    if (!skipped.empty()) fmt::print(stderr, "{}: skipped {} malformed line(s): {}\n", file, skipped.size(), fmt::join(skipped, ", "));
    if (format == "tokens") {
        DEVIANT_REQUIRE(!token_pairs.empty(), "{}: no pairs in the file", file);
        return token_pairs;
    }
    DEVIANT_REQUIRE(!text.empty(), "{}: no pairs in the file", file);
    DEVIANT_REQUIRE(!tokenizer_path.empty() && fs::exists(tokenizer_path), "{}: text pairs need a tokenizer (--tokenizer FILE; {} not found)",
                    file, tokenizer_path.empty() ? "none given" : tokenizer_path);
    BpeTokenizer tok = load_tokenizer(tokenizer_path);
    const data::TokenizeOptions topts = data::tokenize_options_for(tokenizer_path, !a.no_chat_template, a.system_prompt);
    auto pairs = data::tokenize_pairs(tok, text, topts);
    for (std::size_t i = 0; i < pairs.size(); ++i)
        for (auto* seq : {&pairs[i].prompt, &pairs[i].chosen, &pairs[i].rejected})
            for (auto id : *seq)
                DEVIANT_REQUIRE(id < vocab, "{}: token id {} from the tokenizer is outside the model's vocabulary ({})", text[i].origin, id, vocab);
    return pairs;
}

template <class Model>
int run_training(Model& policy, const TrainArgs& a, const io::ModelConfig& config, const fs::path& config_file) {
    Device device = a.device == "cuda" ? Device::cuda : Device::cpu;
    DType dtype = cli::model_dtype(a.dtype);
    if (device == Device::cuda) cuda::require_available();
    // the job: one process, or the ranks mpirun / srun started (NCCL picks each rank's GPU first)
    std::shared_ptr<dist::Communicator> comm = dist::world(device);
    const bool root = comm->is_root();
    if (device == Device::cuda) policy.to(device);
    std::string tok_path = !a.tokenizer.empty() ? a.tokenizer : model_tokenizer_path(a.model).string();
    TruncationOptions trunc;
    trunc.max_length = a.max_length;
    trunc.max_prompt_length = a.max_prompt_length;
    auto load = [&](const std::string& file) {
        auto pairs = read_pairs(a, file, config.vocab_size, tok_path);
        TruncationReport report;
        pairs = truncate_pairs(pairs, trunc, &report);
        require_within_context(pairs, config.max_position_embeddings, file);
        return pairs;
    };
    std::vector<data::TokenPair> train_pairs = load(a.train), eval_pairs;
    if (!a.eval.empty()) eval_pairs = load(a.eval);

    // Objective options.
    TrainingOptions o;
    o.objective = a.objective;
    if (a.beta > 0) o.objective_options.beta = a.beta;
    o.objective_options.lambda = a.lambda;
    o.objective_options.gamma = a.gamma;
    o.objective_options.label_smoothing = a.label_smoothing;
    o.objective_options.nll_alpha = a.nll_alpha;
    o.objective_options.orpo_nll_includes_prompt = a.orpo_prompt_nll;
    o.objective_options.ipo_average = !a.ipo_summed;
    if (a.dorpo_released_code) o.objective_options.dorpo_placement = losses::WeightPlacement::released_code;
    AnyObjective probe = make_objective(a.objective, o.objective_options);

    // Full fine-tuning keeps a gradient and two AdamW moments per weight (and a float32 master
    // copy of bfloat16 weights): refused up front when that cannot fit.
    if (!a.lora)
        io::require_fits_in_memory(config, 4.0, dtype == DType::bf16 ? 4.0 : 3.0,
                                   "full fine-tuning (gradients and AdamW moments beside the weights)");

    // Earlier runs' adapters (an SFT adapter before DPO) become part of the starting model, and so
    // of the reference.
    for (const std::string& dir : a.adapters) nn::LoraAdapters::from_peft(policy, dir).merge_into_base();

    // LoRA: adapters train, the frozen base is the reference.
    nn::LoraAdapters adapters;
    if (a.lora) {
        nn::LoraConfig lc;
        lc.rank = a.lora_rank;
        lc.alpha = a.lora_alpha;
        if (!a.lora_targets.empty()) lc.target_modules = a.lora_targets;
        lc.seed = a.seed;
        adapters.attach(policy, lc);
    }

    // Reference log-probs (frozen), computed before any weight changes.
    ReferenceLogps ref_train, ref_eval;
    if (probe.needs_reference) {
        auto compute = [&](const auto& ref_model, const std::vector<data::TokenPair>& pairs) {
            if (a.ref_cache.empty()) return compute_reference_logps(ref_model, pairs, a.batch_size, dtype, comm.get());
            auto cached = ReferenceCache::load_or_compute(a.ref_cache, pairs, ref_model, a.batch_size, ComputeReferenceLogps{}, comm.get());
            if (!cached.note.empty() && root) fmt::print(stderr, "reference cache: {}\n", cached.note);
            ReferenceLogps r;
            r.chosen = cached.chosen.template to_vector<double>();
            r.rejected = cached.rejected.template to_vector<double>();
            return r;
        };
        auto both = [&](const auto& ref_model) {
            ref_train = compute(ref_model, train_pairs);
            if (!eval_pairs.empty()) ref_eval = compute(ref_model, eval_pairs);
            return 0;
        };
        if (!a.ref.empty()) {
            with_pretrained(a.ref, [&](auto& ref) {
                DEVIANT_REQUIRE(ref.config.vocab_size == config.vocab_size, "reference {} has vocabulary {}, the policy {}", a.ref,
                                ref.config.vocab_size, config.vocab_size);
                if (device == Device::cuda) ref.to(device);
                return both(ref);
            }, dtype);
        } else if (a.lora) {
            nn::AdaptersDisabled off(adapters);
            both(policy);
        } else {
            both(policy);  // the initial policy (the SFT model) is the reference
        }
    }

    std::vector<Parameter*> trainable;
    if (a.lora)
        for (auto& p : adapters.parameters()) trainable.push_back(&p);
    else
        for (auto& p : policy.parameters())
            if (p.trainable) trainable.push_back(&p);

    o.learning_rate = a.lr;
    o.schedule = optim::schedule_kind(a.schedule);
    o.warmup_steps = a.warmup_steps;
    o.epochs = a.epochs;
    o.max_steps = a.max_steps;
    o.batch_size = a.batch_size;
    o.grad_accumulation = a.grad_accumulation;
    o.max_grad_norm = a.max_grad_norm;
    o.adamw.weight_decay = a.weight_decay;
    o.eval_every = a.eval_every;
    o.pack_tokens = a.pack_tokens;
    o.skip_nonfinite = a.skip_nonfinite;
    o.shuffle = !a.no_shuffle;
    o.seed = a.seed;
    o.progress = !a.quiet;
    o.dtype = dtype;
    o.communicator = comm;
    o.zero1 = a.zero1;
    fs::path out = a.output;
    if (!out.empty()) {
        fs::create_directories(out);
        o.metrics_file = out / "metrics.jsonl";
    }
    Trainer<Model> trainer(policy, trainable, train_pairs, ref_train, o);
    if (!eval_pairs.empty()) trainer.set_eval(eval_pairs, ref_eval);

    auto weights = [&]() {
        train::NamedTensors w;
        if (a.lora)
            for (auto& p : adapters.parameters()) w.emplace_back(p.name, p.value);
        else
            w = trainer.trainable_tensors();
        return w;
    };
    if (!out.empty() && root) {
        for (const fs::path& p : train::remove_stale_temporaries(out))
            fmt::print(stderr, "removed {} (a checkpoint save that never finished)\n", p.string());
    }
    comm->barrier();
    if (!out.empty() && a.resume != "none") {
        std::optional<fs::path> from = a.resume == "auto" ? train::latest_checkpoint(out) : std::optional<fs::path>(a.resume);
        if (from) {
            trainer.resume(train::load_checkpoint(*from));
            if (root) fmt::print(stderr, "resuming from {} at step {}\n", from->string(), trainer.step());
            // metrics written after that checkpoint (before the run stopped) are about to be
            // recomputed: drop them so that every step appears once
            if (root && fs::exists(o.metrics_file)) {
                std::vector<std::string> keep;
                std::ifstream in(o.metrics_file);
                for (std::string l; std::getline(in, l);) {
                    json j = json::parse(l, nullptr, /*allow_exceptions=*/false);  // a line cut by the kill is dropped
                    if (j.is_object() && j.value("step", std::int64_t(0)) <= trainer.step()) keep.push_back(l);
                }
                data::AtomicTextFile f(o.metrics_file);
                for (const std::string& l : keep) f.stream() << l << "\n";
                f.commit();
            }
        }
    }
    if (root)
        fmt::print(stderr, "training {} parameters ({}) with {} on {} pairs: {} steps{}\n", [&] {
            std::int64_t n = 0;
            for (auto* p : trainable) n += p->value.numel();
            return n;
        }(), a.lora ? "LoRA adapters" : "full model", a.objective, train_pairs.size(), trainer.total_steps(),
                   comm->size() > 1 ? fmt::format(" on {} ranks ({}{}, {} pairs per step)", comm->size(), comm->name(),
                                                  a.zero1 ? ", ZeRO-1" : "", trainer.global_batch())
                                    : "");

    json before;
    if (!eval_pairs.empty() && trainer.step() == 0) {
        before = trainer.evaluate();
        before["step"] = 0;
        if (!o.metrics_file.empty() && root) std::ofstream(o.metrics_file, std::ios::app) << before.dump() << "\n";
    }
    TrainingHistory h = trainer.train([&](std::int64_t step, const json& m) {
        if (!out.empty() && a.save_every > 0 && step % a.save_every == 0) {
            train::TrainingCheckpoint c = trainer.checkpoint(weights(), m);  // every rank: zero1 gathers the state
            if (root) {
                train::save_checkpoint(out, c);
                train::keep_last(out, std::size_t(std::max<std::int64_t>(1, a.keep_last)));
            }
            comm->barrier();
        }
    });
    if (!root) return 0;  // rank 0 writes the model and the summary
    if (!out.empty()) {
        fs::path final_dir = out / "final";
        fs::create_directories(final_dir);
        if (a.lora) {
            adapters.export_peft(final_dir, a.model);
        } else {
            train::NamedTensors w;
            for (auto& p : policy.parameters()) w.emplace_back(p.name, p.value);
            io::save_safetensors(final_dir / "model.safetensors", w);
            if (io::is_gguf_file(config_file))  // a GGUF start: write the config it describes
                std::ofstream(final_dir / "config.json") << io::llama_config_json(config);
            else
                fs::copy_file(config_file, final_dir / "config.json", fs::copy_options::overwrite_existing);
        }
        if (!tok_path.empty() && io::is_gguf_file(tok_path)) {
            io::GgufFile g = io::GgufFile::open(tok_path);
            try {  // the weights are saved either way; a tokenizer that cannot be converted is reported, not fatal
                if (gguf_has_tokenizer(g)) std::ofstream(final_dir / "tokenizer.json") << gguf_tokenizer_json(g).dump() << "\n";
            } catch (const Error& e) {
                fmt::print(stderr, "{}: no tokenizer.json written: {}\n", final_dir.string(), e.what());
            }
        } else if (!tok_path.empty() && fs::exists(tok_path)) {
            fs::copy_file(tok_path, final_dir / "tokenizer.json", fs::copy_options::overwrite_existing);
        }
    }
    // Summary table.
    fmt::print("{:<28} {:>12} {:>12}\n", "metric", "first step", "last step");
    if (!h.steps.empty())
        for (auto key : {"loss", "rewards/accuracies", "rewards/margins", "logps/chosen", "grad_norm", "tokens_per_second"})
            if (h.steps.front().contains(key))
                fmt::print("{:<28} {:>12.4f} {:>12.4f}\n", key, h.steps.front().value(key, NAN), h.steps.back().value(key, NAN));
    if (!h.evals.empty())
        for (auto& [k, v] : h.evals.back().items())
            if (k != "step" && v.is_number()) fmt::print("{:<28} {:>12.4f} {:>12.4f}\n", k, before.value(k, NAN), double(v));
    if (h.skipped_steps > 0) fmt::print("skipped {} steps with a non-finite loss or gradient\n", h.skipped_steps);
    return 0;
}

deviant::cli::Registration train_command{{"train", "Train a checkpoint with a preference objective (or SFT)", [](CLI::App& app) {
    auto a = std::make_shared<TrainArgs>();
    add_train_options(app, a);
    return std::function<int()>([a, &app] {
        if (!a->config.empty()) apply_config(app, a->config);
        validate_train_args(app, *a);
        // the job (one process, or the ranks of mpirun / srun): created before anything is read
        auto comm = dist::world(a->device == "cuda" ? Device::cuda : Device::cpu);
        if (a->output.empty()) {  // a trained model is never thrown away: a fresh folder, said aloud
            const std::time_t now = std::time(nullptr);
            std::tm tm{};
            localtime_r(&now, &tm);
            char stamp[32];
            std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
            fs::path dir = fs::path("runs") / fmt::format("{}-{}", a->objective, stamp);
            for (int k = 2; fs::exists(dir); ++k) dir = fs::path("runs") / fmt::format("{}-{}-{}", a->objective, stamp, k);
            a->output = dir.string();
            dist::broadcast_string(*comm, a->output, 0);  // rank 0's clock names the folder for every rank
            if (comm->is_root()) fmt::print(stderr, "train: no --output given; writing to {}\n", a->output);
        }
        DEVIANT_REQUIRE(!a->train.empty(), "no training data: give --train FILE (or data.train in the config)");
        DEVIANT_REQUIRE(a->model.empty() != a->init_config.empty(), "give exactly one of --model DIR or --init-config FILE");
        DType dtype = cli::model_dtype(a->dtype);
        if (!a->model.empty()) {
            fs::path cfg = fs::is_directory(a->model) ? fs::path(a->model) / "config.json" : fs::path(a->model);
            return with_pretrained(a->model, [&](auto& model) { return run_training(model, *a, model.config, cfg); }, dtype);
        }
        io::ModelConfig c = io::load_model_config(a->init_config);
        return with_architecture(c, [&]<class Architecture>() {
            CausalLm<Architecture> m(c, {}, a->seed, dtype);
            return run_training(m, *a, c, a->init_config);
        });
    });
}}};

}  // namespace
