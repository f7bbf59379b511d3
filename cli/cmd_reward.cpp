// `deviant reward`: the reward model that judges sample quality (models/reward_model.hpp).
//   deviant reward train --model M --train F --output DIR [--eval F] [--loss l1|bt] [--full]
//                        [--lora-rank 16] [--lora-alpha 32] [--lr 1e-4] [--epochs 1] [--max-steps N]
//                        [--batch-size 8] [--max-length 512] [--logs 2] [--seed S] [--quiet]
//   deviant reward score --model DIR --input F --output F [--batch-size 16]
// train: l1 regresses transformed scores (train/reward_trainer.hpp ScoreTransform) of a
// prompt/responses file (the prepare split); bt fits text pairs {"prompt", "chosen", "rejected"}.
// M is a language model (checkpoint directory or GGUF: a fresh head) or a reward checkpoint.
// DIR gets model.safetensors + config.json (transformers' *ForSequenceClassification layout,
// LoRA merged), tokenizer.json, reward.json (transform, formatting) and metrics.jsonl.
// score: adds "reward" to {"prompt", "response"} and {"ids": [...]} lines, "rewards" to
// {"prompt", "samples": [...]} lines and "reward" to every response of {"prompt", "responses"}.
#include <fmt/core.h>

#include <fstream>

#include "command.hpp"
#include "deviant/nn/lora.hpp"
#include "deviant/tokenizer/gguf_tokenizer.hpp"
#include "deviant/train/reward_data.hpp"

namespace {

using namespace deviant;
namespace fs = std::filesystem;
using nlohmann::json;

struct RewardArgs {
    std::string model, tokenizer, train, eval, output, loss = "l1", device = "cpu", dtype = "float32", system_prompt, schedule = "linear";
    bool full = false, no_chat_template = false, quiet = false;
    std::int64_t lora_rank = 16, epochs = 1, max_steps = 0, batch_size = 8, max_length = 512, logs = 2, warmup_steps = 0, eval_every = 0;
    double lora_alpha = 32, lr = 1e-4, max_grad_norm = 1.0, weight_decay = 0.0;
    std::uint64_t seed = 0;
    // score
    std::string input;
};

void check_vocab(const RewardData& d, std::int64_t vocab, const std::string& file) {
    for (const auto& s : d.sequences)
        for (std::int64_t id : s.ids)
            DEVIANT_REQUIRE(id >= 0 && id < vocab, "{}: token id {} from the tokenizer is outside the model's vocabulary ({})", file, id, vocab);
}

template <class Model>
int run_train(Model& model, const RewardArgs& a) {
    const fs::path tok_path = !a.tokenizer.empty() ? fs::path(a.tokenizer) : model_tokenizer_path(a.model);
    DEVIANT_REQUIRE(!tok_path.empty() && fs::exists(tok_path), "reward training needs a tokenizer (--tokenizer FILE; {} not found)", tok_path.string());
    const BpeTokenizer tok = load_tokenizer(tok_path);
    const data::TokenizeOptions topts = data::tokenize_options_for(tok_path, !a.no_chat_template, a.system_prompt);
    const RewardLoss loss = reward_loss(a.loss);

    ScoreTransform transform;
    RewardData train, eval;
    if (loss == RewardLoss::l1) {
        auto prompts = read_scored_prompts(a.train);
        transform = ScoreTransform::fit(all_scores(prompts), a.logs);
        train = reward_sequences(tok, prompts, transform, topts, a.max_length);
        if (!a.eval.empty()) eval = reward_sequences(tok, read_scored_prompts(a.eval), transform, topts, a.max_length);
    } else {
        auto pairs = data::read_text_pairs(a.train);
        DEVIANT_REQUIRE(!pairs.empty(), "{}: no pairs in the file", a.train);
        train = reward_pair_data(tok, pairs, topts, a.max_length);
        if (!a.eval.empty()) eval = reward_pair_data(tok, data::read_text_pairs(a.eval), topts, a.max_length);
    }
    check_vocab(train, model.config.vocab_size, a.train);
    if (!a.eval.empty()) check_vocab(eval, model.config.vocab_size, a.eval);
    for (const auto& s : train.sequences)
        DEVIANT_REQUIRE(std::int64_t(s.ids.size()) <= model.config.max_position_embeddings,
                        "{}: a sequence of {} tokens exceeds the model's {} positions (lower --max-length)", a.train, s.ids.size(),
                        model.config.max_position_embeddings);

    if (a.device == "cuda") {
        cuda::require_available();
        model.to(Device::cuda);
    }
    nn::LoraAdapters adapters;
    std::vector<Parameter*> trainable;
    if (!a.full) {
        nn::LoraConfig lc;
        lc.rank = a.lora_rank;
        lc.alpha = a.lora_alpha;
        lc.seed = a.seed;
        adapters.attach(model, lc);
        if (a.device == "cuda") adapters.to(Device::cuda);
        model.score_parameter().trainable = true;  // the new head trains in full (PEFT's modules_to_save)
        for (auto& p : adapters.parameters()) trainable.push_back(&p);
        trainable.push_back(&model.score_parameter());
    } else {
        for (auto& p : model.parameters())
            if (p.trainable) trainable.push_back(&p);
    }

    RewardTrainingOptions o;
    o.loss = loss;
    o.learning_rate = a.lr;
    o.schedule = optim::schedule_kind(a.schedule);
    o.warmup_steps = a.warmup_steps;
    o.epochs = a.epochs;
    o.max_steps = a.max_steps;
    o.batch_size = a.batch_size;
    o.max_grad_norm = a.max_grad_norm;
    o.adamw.weight_decay = a.weight_decay;
    o.eval_every = a.eval_every;
    o.seed = a.seed;
    o.progress = !a.quiet;
    const fs::path out = a.output;
    fs::create_directories(out);
    o.metrics_file = out / "metrics.jsonl";
    { std::ofstream(o.metrics_file, std::ios::trunc); }  // a rerun starts its metrics afresh
    RewardTrainer<Model> trainer(model, trainable, train, o);
    if (!eval.sequences.empty()) trainer.set_eval(eval);
    std::int64_t n_trainable = 0;
    for (auto* p : trainable) n_trainable += p->value.numel();
    fmt::print(stderr, "reward training: {} parameters ({}), {} loss on {} {} ({} tokens): {} steps\n", n_trainable,
               a.full ? "full model" : "LoRA + score head", a.loss, loss == RewardLoss::l1 ? train.sequences.size() : train.pairs.size(),
               loss == RewardLoss::l1 ? "responses" : "pairs", train.tokens(), trainer.total_steps());
    json before;
    if (!eval.sequences.empty()) before = trainer.evaluate();
    auto history = trainer.train();

    if (adapters.attached()) adapters.merge_into_base();
    if (a.device == "cuda") model.to(Device::cpu);
    json meta{{"format", "deviant-reward-model"},
              {"loss", a.loss},
              {"chat_template", !a.no_chat_template},
              {"system_prompt", a.system_prompt},
              {"max_length", a.max_length},
              {"base_model", a.model}};
    if (loss == RewardLoss::l1) meta["transform"] = transform.to_json();
    if (!trainer.last_eval().is_null()) meta["eval"] = trainer.last_eval();
    save_reward_model(out, model, {{"reward.json", meta}});
    if (io::is_gguf_file(tok_path)) {
        std::ofstream(out / "tokenizer.json") << gguf_tokenizer_json(io::GgufFile::open(tok_path)).dump() << "\n";
    } else {
        fs::copy_file(tok_path, out / "tokenizer.json", fs::copy_options::overwrite_existing);
        for (const char* extra : {"tokenizer_config.json", "special_tokens_map.json"})
            if (fs::exists(tok_path.parent_path() / extra)) fs::copy_file(tok_path.parent_path() / extra, out / extra, fs::copy_options::overwrite_existing);
    }
    fmt::print("{:<24} {:>12} {:>12}\n", "metric", "before", "after");
    if (!history.empty()) fmt::print("{:<24} {:>12.4f} {:>12.4f}\n", "loss", double(history.front()["loss"]), double(history.back()["loss"]));
    for (auto& [k, v] : trainer.last_eval().items())
        if (k != "step" && v.is_number()) fmt::print("{:<24} {:>12.4f} {:>12.4f}\n", k, before.value(k, NAN), double(v));
    fmt::print(stderr, "reward model -> {}\n", out.string());
    return 0;
}

// One text (or id list) to score and where its reward goes.
struct Slot {
    std::size_t line;
    std::string field;  // "reward" (the line), "rewards" (samples index), "responses" (response index)
    std::size_t index;
};

template <class Model>
int run_score(Model& model, const RewardArgs& a) {
    data::require_distinct_paths(a.input, a.output);
    DEVIANT_REQUIRE(model.head_from_checkpoint(), "{}: not a reward model (no score.weight); train one with `deviant reward train`", a.model);
    const fs::path meta_path = fs::path(a.model) / "reward.json";
    json meta = json::object();
    if (fs::exists(meta_path)) {
        meta = json::parse(std::ifstream(meta_path), nullptr, /*allow_exceptions=*/false);
        DEVIANT_REQUIRE(meta.is_object(), "{}: not a JSON object", meta_path.string());
    }
    const bool chat = meta.value("chat_template", true);
    const std::string system_prompt = meta.value("system_prompt", std::string());
    const std::int64_t max_length = meta.value("max_length", std::int64_t(0));
    const fs::path tok_path = !a.tokenizer.empty() ? fs::path(a.tokenizer) : model_tokenizer_path(a.model);
    std::optional<BpeTokenizer> tok;
    data::TokenizeOptions topts;
    auto tokenizer = [&]() -> const BpeTokenizer& {
        if (!tok) {
            DEVIANT_REQUIRE(fs::exists(tok_path), "text lines need the model's tokenizer ({} not found; give --tokenizer)", tok_path.string());
            tok = load_tokenizer(tok_path);
            topts = data::tokenize_options_for(tok_path, chat, system_prompt);
        }
        return *tok;
    };

    std::vector<json> lines;
    std::vector<RewardSequence> seqs;
    std::vector<Slot> slots;
    data::for_each_json_line(a.input, [&](data::JsonLine& line) {
        const json& j = line.value;
        DEVIANT_REQUIRE(j.is_object(), "expected a JSON object, got {}", j.type_name());
        const std::size_t li = lines.size();
        const std::string where = fmt::format("{}:{}", a.input, line.number);
        auto text_seq = [&](const json& prompt, const json& text, const std::string& what) {
            DEVIANT_REQUIRE(prompt.is_string(), "field 'prompt' missing or not a string");
            DEVIANT_REQUIRE(text.is_string(), "{} is not a string", what);
            const BpeTokenizer& t = tokenizer();  // also sets topts
            return reward_sequence_ids(t, prompt.get<std::string>(), text.get<std::string>(), topts, max_length, where + ": " + what);
        };
        const json prompt = j.value("prompt", json());
        if (j.contains("ids")) {
            std::vector<std::int64_t> ids = data::detail::id_list(j, "ids", model.config.vocab_size, /*allow_empty=*/false);
            seqs.push_back({std::move(ids)});
            slots.push_back({li, "reward", 0});
        } else if (j.contains("samples")) {
            DEVIANT_REQUIRE(j["samples"].is_array(), "field 'samples' is not an array");
            for (std::size_t i = 0; i < j["samples"].size(); ++i) {
                seqs.push_back({text_seq(prompt, j["samples"][i], fmt::format("sample {}", i))});
                slots.push_back({li, "rewards", i});
            }
        } else if (j.contains("responses")) {
            DEVIANT_REQUIRE(j["responses"].is_array(), "field 'responses' is not an array");
            for (std::size_t i = 0; i < j["responses"].size(); ++i) {
                const json& r = j["responses"][i];
                DEVIANT_REQUIRE(r.is_object() && r.contains("text"), "response {}: expected an object with field 'text'", i);
                seqs.push_back({text_seq(prompt, r["text"], fmt::format("response {}", i))});
                slots.push_back({li, "responses", i});
            }
        } else {
            DEVIANT_REQUIRE(j.contains("response"), "needs 'ids', 'response', 'samples' or 'responses'");
            seqs.push_back({text_seq(prompt, j["response"], "field 'response'")});
            slots.push_back({li, "reward", 0});
        }
        for (std::size_t k = seqs.size(); k-- > 0 && slots[k].line == li;) {
            for (std::int64_t id : seqs[k].ids)
                DEVIANT_REQUIRE(id < model.config.vocab_size, "token id {} is outside the model's vocabulary ({})", id, model.config.vocab_size);
            DEVIANT_REQUIRE(std::int64_t(seqs[k].ids.size()) <= model.config.max_position_embeddings,
                            "a sequence of {} tokens exceeds the model's {} positions", seqs[k].ids.size(), model.config.max_position_embeddings);
        }
        lines.push_back(j);
    });
    DEVIANT_REQUIRE(!seqs.empty(), "{}: nothing to score", a.input);
    if (a.device == "cuda") {
        cuda::require_available();
        model.to(Device::cuda);
    }
    const std::vector<double> r = score_sequences(model, seqs, a.batch_size, a.quiet ? "" : "reward score");
    for (std::size_t k = 0; k < seqs.size(); ++k) {
        DEVIANT_REQUIRE(std::isfinite(r[k]), "{}: line {}: the reward is {} (non-finite weights?); nothing written", a.input, slots[k].line + 1, r[k]);
        json& j = lines[slots[k].line];
        if (slots[k].field == "reward") j["reward"] = r[k];
        else if (slots[k].field == "rewards") {
            if (!j.contains("rewards")) j["rewards"] = json::array();
            j["rewards"].push_back(r[k]);
        } else {
            j["responses"][slots[k].index]["reward"] = r[k];
        }
    }
    data::AtomicTextFile out(a.output);
    for (const json& j : lines) out.write_line(j);
    out.commit();
    double mean = 0;
    for (double v : r) mean += v / double(r.size());
    fmt::print(stderr, "reward score: {} texts, mean reward {:.4f} -> {}\n", r.size(), mean, a.output);
    return 0;
}

void common_model_options(CLI::App& app, RewardArgs* a) {
    app.add_option("--model", a->model, "Reward checkpoint, or a language model (checkpoint directory or GGUF) to start from")->required();
    app.add_option("--tokenizer", a->tokenizer, "tokenizer.json or GGUF (default: the model's)");
    app.add_option("--device", a->device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
    app.add_option("--dtype", a->dtype, cli::model_dtype_help)->capture_default_str();
    app.add_option("--batch-size", a->batch_size, "Sequences (l1) or pairs (bt) per step; sequences per forward pass when scoring")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_flag("--quiet", a->quiet, "No progress bar");
}

deviant::cli::Registration reward_command{{"reward", "Train a reward model on scored responses or pairs, and score texts with it", [](CLI::App& app) {
    auto a = std::make_shared<RewardArgs>();
    app.require_subcommand(1);
    CLI::App* train = app.add_subcommand("train", "Train a reward model (L1 regression on transformed scores, or Bradley-Terry on pairs)");
    common_model_options(*train, a.get());
    train->add_option("--train", a->train, "l1: prompt/responses JSON Lines with scores; bt: text pairs")->required();
    train->add_option("--eval", a->eval, "Held-out data of the same kind (MAE, pair accuracy)");
    train->add_option("--output", a->output, "Output folder (reward checkpoint)")->required();
    train->add_option("--loss", a->loss, "l1 or bt")->check(CLI::IsMember({"l1", "bt"}))->capture_default_str();
    train->add_flag("--full", a->full, "Train every weight (default: LoRA adapters + the score head)");
    train->add_option("--lora-rank", a->lora_rank, "LoRA rank r")->capture_default_str()->check(CLI::PositiveNumber);
    train->add_option("--lora-alpha", a->lora_alpha, "LoRA alpha")->capture_default_str();
    train->add_option("--lr", a->lr, "Peak learning rate")->capture_default_str();
    train->add_option("--schedule", a->schedule, "constant, linear or cosine")->check(CLI::IsMember({"constant", "linear", "cosine"}))->capture_default_str();
    train->add_option("--warmup-steps", a->warmup_steps, "Linear warm-up steps")->capture_default_str()->check(CLI::NonNegativeNumber);
    train->add_option("--epochs", a->epochs, "Passes over the data")->capture_default_str()->check(CLI::PositiveNumber);
    train->add_option("--max-steps", a->max_steps, "Stop after this many steps (overrides --epochs)")->check(CLI::NonNegativeNumber);
    train->add_option("--max-grad-norm", a->max_grad_norm, "Clip the gradient norm (0 = off)")->capture_default_str()->check(CLI::NonNegativeNumber);
    train->add_option("--weight-decay", a->weight_decay, "AdamW weight decay")->capture_default_str()->check(CLI::NonNegativeNumber);
    train->add_option("--eval-every", a->eval_every, "Evaluate every N steps (0: at the end)")->check(CLI::NonNegativeNumber);
    train->add_option("--max-length", a->max_length, "Tokens per prompt + response at most (0: no limit)")->capture_default_str()->check(CLI::NonNegativeNumber);
    train->add_option("--logs", a->logs, "l1: times log(x + 1) is applied to the shifted score")->capture_default_str()->check(CLI::Range(0, 8));
    train->add_option("--seed", a->seed, "Seed of the head and the adapters")->capture_default_str();
    train->add_option("--system-prompt", a->system_prompt, "A system turn before each prompt (kept for scoring)");
    train->add_flag("--chat-template,!--no-chat-template", [a](std::int64_t n) { a->no_chat_template = n < 0; }, "Format prompts with the chat template (default on)");
    CLI::App* score = app.add_subcommand("score", "Add rewards to responses, samples or token-id lines");
    common_model_options(*score, a.get());
    score->add_option("--input", a->input, "JSON Lines: {prompt, response} | {ids} | {prompt, samples} | {prompt, responses}")->required();
    score->add_option("--output", a->output, "Output JSON Lines (written atomically; never the input)")->required();
    return std::function<int()>([a, train] {
        const DType dtype = cli::model_dtype(a->dtype);
        if (train->parsed()) {
            DEVIANT_REQUIRE(std::isfinite(a->lr) && a->lr > 0, "--lr {} must be a positive number", a->lr);
            DEVIANT_REQUIRE(std::isfinite(a->lora_alpha) && a->lora_alpha > 0, "--lora-alpha {} must be a positive number", a->lora_alpha);
            DEVIANT_REQUIRE(std::isfinite(a->max_grad_norm), "--max-grad-norm {} must be a number", a->max_grad_norm);
            data::require_distinct_paths(a->train, fs::path(a->output) / "metrics.jsonl", "--train", "--output");
            data::require_distinct_paths(a->model, a->output, "--model", "--output");  // a reward model retrained in place would be lost on failure
            return with_reward_model(a->model, [&](auto& m) { return run_train(m, *a); }, a->seed, dtype);
        }
        return with_reward_model(a->model, [&](auto& m) { return run_score(m, *a); }, a->seed, dtype);
    });
}}};

}  // namespace
