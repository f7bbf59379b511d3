// cli/train_options.hpp — the settings of `deviant train`: its flags, the TOML file keys that
// stand for them, applying a file, and the one range check every number passes whichever way it
// came. Shared by cli/cmd_train.cpp and the TOML fuzz target (tests/fuzz/fuzz_toml.cpp).
#pragma once
#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>
#include <toml++/toml.h>

#include "command.hpp"
#include "deviant/core/error.hpp"

namespace deviant::cli {

struct TrainArgs {
    std::string config;
    // model
    std::string model, init_config, ref, ref_cache, tokenizer, device = "cpu", dtype = "float32";
    std::vector<std::string> adapters;  // merged into the starting model, in order
    std::uint64_t seed = 0;
    // data
    std::string train, eval, format = "auto";
    bool no_chat_template = false, skip_bad_lines = false;
    std::string system_prompt;
    std::int64_t max_length = 0, max_prompt_length = 0;
    // objective
    std::string objective = "dpo";
    double beta = -1, lambda = 0.25, gamma = 0.5, label_smoothing = 0, nll_alpha = 0;
    bool orpo_prompt_nll = false, dorpo_released_code = false, ipo_summed = false;
    // training
    double lr = 5e-6, max_grad_norm = 1.0, weight_decay = 0.0;
    std::string schedule = "linear";
    std::int64_t warmup_steps = 0, epochs = 1, max_steps = 0, batch_size = 2, grad_accumulation = 1, eval_every = 0, pack_tokens = 0;
    bool skip_nonfinite = false, no_shuffle = false, quiet = false, zero1 = false;
    // output
    std::string output, resume = "auto";
    std::int64_t save_every = 0, keep_last = 2;
    // lora
    bool lora = false;
    std::int64_t lora_rank = 128;
    double lora_alpha = 256;
    std::vector<std::string> lora_targets;
};

// Config-file keys ("section.key") and the flag each one stands for.
struct ConfigKey {
    const char* key;
    const char* flag;
};
inline constexpr ConfigKey config_keys[] = {
    {"model.path", "--model"}, {"model.adapters", "--adapters"}, {"model.init_config", "--init-config"}, {"model.reference", "--ref"}, {"model.reference_cache", "--ref-cache"},
    {"model.tokenizer", "--tokenizer"}, {"model.device", "--device"}, {"model.dtype", "--dtype"}, {"model.seed", "--seed"},
    {"data.train", "--train"}, {"data.eval", "--eval"}, {"data.format", "--format"}, {"data.chat_template", "--chat-template"}, {"data.system_prompt", "--system-prompt"},
    {"data.max_length", "--max-length"}, {"data.skip_bad_lines", "--skip-bad-lines"}, {"data.max_prompt_length", "--max-prompt-length"},
    {"objective.name", "--objective"}, {"objective.beta", "--beta"}, {"objective.lambda", "--lambda"}, {"objective.gamma", "--gamma"},
    {"objective.label_smoothing", "--label-smoothing"}, {"objective.nll_alpha", "--nll-alpha"},
    {"objective.orpo_prompt_nll", "--orpo-prompt-nll"}, {"objective.dorpo_released_code", "--dorpo-released-code"},
    {"objective.ipo_summed", "--ipo-summed"},
    {"training.learning_rate", "--lr"}, {"training.schedule", "--schedule"}, {"training.warmup_steps", "--warmup-steps"},
    {"training.epochs", "--epochs"}, {"training.max_steps", "--max-steps"}, {"training.batch_size", "--batch-size"},
    {"training.grad_accumulation", "--grad-accumulation"}, {"training.max_grad_norm", "--max-grad-norm"},
    {"training.weight_decay", "--weight-decay"}, {"training.eval_every", "--eval-every"}, {"training.pack_tokens", "--pack-tokens"},
    {"training.skip_nonfinite", "--skip-nonfinite"}, {"training.shuffle", "--shuffle"}, {"training.zero1", "--zero1"},
    {"output.dir", "--output"}, {"output.save_every", "--save-every"}, {"output.keep_last", "--keep-last"}, {"output.resume", "--resume"},
    {"lora.enabled", "--lora"}, {"lora.rank", "--lora-rank"}, {"lora.alpha", "--lora-alpha"}, {"lora.targets", "--lora-targets"},
};

// TOML allows characters beyond ASCII only inside strings and comments. The TOML library this
// program is built with (toml++ 3.3) meets some of them with undefined behaviour (its Unicode
// whitespace table ends in __builtin_unreachable), and on malformed lines it may look at any
// character of the line. So the library is only ever given ASCII: this rewrites the text, keeping
// its meaning and its line numbers. A character beyond ASCII in a basic string becomes its \uXXXX
// (or \UXXXXXXXX) escape, a literal string holding one becomes the equivalent basic string, one
// in a comment becomes '?', and one anywhere else is refused with its line, as TOML refuses it;
// so is text that is not UTF-8.
inline std::string toml_as_ascii(const std::string& text, const std::string& path) {
    std::string out;
    out.reserve(text.size() + text.size() / 8);
    std::size_t line = 1;
    // the code point of the UTF-8 sequence at i (advancing i past it), or a refusal
    auto decode = [&](std::size_t& i) -> std::uint32_t {
        const auto b = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
        const unsigned char c = b(i);
        const int n = c >= 0xF0 && c < 0xF5 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 0;
        DEVIANT_REQUIRE(n > 0 && i + std::size_t(n) <= text.size(), "{}:{}: invalid TOML: the text is not UTF-8", path, line);
        std::uint32_t cp = c & (0x7F >> n);
        for (int k = 1; k < n; ++k) {
            DEVIANT_REQUIRE((b(i + std::size_t(k)) & 0xC0) == 0x80, "{}:{}: invalid TOML: the text is not UTF-8", path, line);
            cp = (cp << 6) | (b(i + std::size_t(k)) & 0x3F);
        }
        const bool overlong = (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000);
        DEVIANT_REQUIRE(!overlong && cp <= 0x10FFFF && (cp < 0xD800 || cp > 0xDFFF), "{}:{}: invalid TOML: the text is not UTF-8", path, line);
        i += std::size_t(n) - 1;
        return cp;
    };
    auto escape = [&](std::uint32_t cp) { out += cp > 0xFFFF ? fmt::format("\\U{:08X}", cp) : fmt::format("\\u{:04X}", cp); };
    auto at = [&](std::size_t i, std::string_view lit) { return text.compare(i, lit.size(), lit) == 0; };
    // a literal string from i (after its opening quote(s)) to its closing `close`, as a basic string when it holds non-ASCII
    auto literal = [&](std::size_t& i, std::string_view close) {
        const bool multi = close.size() == 3;
        std::size_t end = text.find(close, i);
        if (!multi) end = std::min(end, text.find('\n', i));
        if (end == std::string::npos) end = text.size();
        const bool plain = std::all_of(text.begin() + std::ptrdiff_t(i), text.begin() + std::ptrdiff_t(end),
                                       [](char c) { return static_cast<unsigned char>(c) < 0x80; });
        if (plain) {  // as it was
            out.append(close).append(text, i, end - i);
            line += std::size_t(std::count(text.begin() + std::ptrdiff_t(i), text.begin() + std::ptrdiff_t(end), '\n'));
        } else {
            out += multi ? R"(""")" : "\"";
            for (std::size_t k = i; k < end; ++k) {
                const char c = text[k];
                if (c == '\n') ++line;
                if (c == '\\' || c == '"') out += '\\', out += c;
                else if (static_cast<unsigned char>(c) >= 0x80) escape(decode(k));
                else out += c;
            }
        }
        if (end < text.size() && at(end, close)) out += plain ? std::string(close) : multi ? R"(""")" : "\"", end += close.size();
        i = end - 1;  // the loop's ++i moves past
    };
    enum class State { normal, comment, basic, ml_basic } st = State::normal;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        const bool wide = static_cast<unsigned char>(c) >= 0x80;
        if (c == '\n') ++line;
        switch (st) {
            case State::normal:
                if (wide) fail("{}:{}: invalid TOML: a character beyond ASCII outside a string or comment", path, line);
                if (c == '#') st = State::comment, out += c;
                else if (at(i, R"(""")")) st = State::ml_basic, out += R"(""")", i += 2;
                else if (at(i, "'''")) i += 3, literal(i, "'''");
                else if (c == '"') st = State::basic, out += c;
                else if (c == '\'') i += 1, literal(i, "'");
                else out += c;
                break;
            case State::comment:
                if (wide) decode(i), out += '?';
                else out += c;
                if (c == '\n') st = State::normal;
                break;
            case State::basic:
            case State::ml_basic:
                if (wide) {
                    escape(decode(i));
                } else if (c == '\\' && i + 1 < text.size() && static_cast<unsigned char>(text[i + 1]) >= 0x80) {
                    fail("{}:{}: invalid TOML: a backslash before a character beyond ASCII is not an escape", path, line);
                } else if (c == '\\' && i + 1 < text.size()) {
                    out += c;  // an escape (or a line-ending backslash): its next character goes as it is
                    out += text[++i];
                    if (text[i] == '\n') ++line;
                } else {
                    out += c;
                    if (st == State::basic && (c == '"' || c == '\n')) st = State::normal;
                    else if (st == State::ml_basic && at(i, R"(""")")) out += R"("")", i += 2, st = State::normal;
                }
                break;
        }
    }
    return out;
}

// Applies the TOML file's values to every option that was not given on the command line.
inline void apply_config(CLI::App& app, const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    DEVIANT_REQUIRE(in.good(), "{}: cannot open the config file", path);
    const std::string text = toml_as_ascii(std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()), path);
    toml::table table;
    try {
        table = toml::parse(text, path);
    } catch (const toml::parse_error& e) {
        fail("{}:{}: invalid TOML: {}", path, e.source().begin.line, e.description());
    }
    std::vector<std::string> args;
    for (auto& [section, node] : table) {
        DEVIANT_REQUIRE(node.is_table(), "{}: top-level key '{}' must be a [section]", path, std::string(section.str()));
        for (auto& [name, value] : *node.as_table()) {
            std::string key = std::string(section.str()) + "." + std::string(name.str());
            auto it = std::find_if(std::begin(config_keys), std::end(config_keys), [&](const ConfigKey& k) { return key == k.key; });
            DEVIANT_REQUIRE(it != std::end(config_keys), "{}: unknown key '{}'", path, key);
            CLI::Option* opt = app.get_option(it->flag);
            if (opt->count() > 0) continue;  // the command line wins
            std::vector<std::string> values;
            if (auto* arr = value.as_array()) {
                for (auto& v : *arr) values.push_back(v.value_or(std::string()));
            } else if (value.is_string()) {
                values.push_back(*value.value<std::string>());
            } else if (value.is_boolean()) {
                values.push_back(*value.value<bool>() ? "true" : "false");
            } else if (value.is_integer()) {
                values.push_back(std::to_string(*value.value<std::int64_t>()));
            } else if (value.is_floating_point()) {
                values.push_back(fmt::format("{}", *value.value<double>()));
            } else {
                fail("{}: key '{}' has an unsupported value type", path, key);
            }
            try {
                opt->clear();
                for (auto& v : values) opt->add_result(v);
                opt->run_callback();
            } catch (const CLI::Error& e) {
                fail("{}: key '{}': {}", path, key, e.what());
            }
        }
    }
}


// Every numeric setting checked once, whether it came from a flag or the TOML file: a value out of
// range is an error naming the flag and its config key, never replaced by a default or ignored.
inline void validate_train_args(const CLI::App& app, const TrainArgs& a) {
    auto given = [&](const char* flag) { return app.get_option(flag)->count() > 0; };
    auto name = [](const char* flag) {
        for (const ConfigKey& k : config_keys)
            if (std::string_view(k.flag) == flag) return fmt::format("{} (config key {})", flag, k.key);
        return std::string(flag);
    };
    auto real = [&](const char* flag, double v, double lo, bool lo_open, double hi, bool hi_open, const char* what) {
        const bool ok = std::isfinite(v) && (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
        DEVIANT_REQUIRE(ok, "{} must be {}, got {}", name(flag), what, v);
    };
    auto integer = [&](const char* flag, std::int64_t v, std::int64_t lo, const char* what) {
        DEVIANT_REQUIRE(v >= lo, "{} must be {}, got {}", name(flag), what, v);
    };
    constexpr double inf = std::numeric_limits<double>::infinity();
    if (given("--beta")) real("--beta", a.beta, 0, true, inf, true, "a positive number");
    real("--lambda", a.lambda, 0, false, inf, true, "a finite number >= 0");
    real("--gamma", a.gamma, -inf, true, inf, true, "a finite number");
    real("--label-smoothing", a.label_smoothing, 0, false, 0.5, true, "in [0, 0.5)");
    real("--nll-alpha", a.nll_alpha, 0, false, inf, true, "a finite number >= 0");
    real("--lr", a.lr, 0, true, inf, true, "a positive number");
    real("--max-grad-norm", a.max_grad_norm, 0, false, inf, true, "a finite number >= 0 (0 = no clipping)");
    real("--weight-decay", a.weight_decay, 0, false, inf, true, "a finite number >= 0");
    integer("--epochs", a.epochs, 1, "at least 1");
    integer("--max-steps", a.max_steps, 0, ">= 0 (0 = run --epochs)");
    integer("--batch-size", a.batch_size, 1, "at least 1");
    integer("--grad-accumulation", a.grad_accumulation, 1, "at least 1");
    integer("--warmup-steps", a.warmup_steps, 0, ">= 0");
    integer("--eval-every", a.eval_every, 0, ">= 0 (0 = only at the end)");
    integer("--pack-tokens", a.pack_tokens, 0, ">= 0 (0 = padded rows)");
    integer("--max-length", a.max_length, 0, ">= 0 (0 = no truncation)");
    integer("--max-prompt-length", a.max_prompt_length, 0, ">= 0 (0 = no truncation)");
    integer("--save-every", a.save_every, 0, ">= 0 (0 = only the final model)");
    integer("--keep-last", a.keep_last, 1, "at least 1 (the newest checkpoint is always kept)");
    if (a.lora) {
        integer("--lora-rank", a.lora_rank, 1, "at least 1");
        real("--lora-alpha", a.lora_alpha, 0, true, inf, true, "a positive number");
    }
}

// Adds every option of `deviant train` to `app`, bound to *a.
inline void add_train_options(CLI::App& app, const std::shared_ptr<TrainArgs>& a) {
    app.add_option("--config", a->config, "TOML file with [model], [data], [objective], [training], [output], [lora] sections");
    app.add_option("--model", a->model, "Checkpoint directory to start from (config.json + safetensors)");
    app.add_option("--init-config", a->init_config, "config.json of a freshly initialised model (instead of --model)");
    app.add_option("--adapters", a->adapters, "LoRA adapter directory (PEFT) merged into --model before training (repeatable, in order)");
    app.add_option("--ref", a->ref, "Reference checkpoint (default: adapters off with --lora, else the initial policy)");
    app.add_option("--ref-cache", a->ref_cache, "Folder caching reference log-probs by data and model hash");
    app.add_option("--tokenizer", a->tokenizer, "tokenizer.json (or a GGUF file) for text pairs (default: the model's)");
    app.add_option("--device", a->device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
    app.add_option("--dtype", a->dtype, model_dtype_help);
    app.add_option("--seed", a->seed, "Seed for initialisation, shuffling and LoRA");
    app.add_option("--train", a->train, "Training pairs: token ids or text (JSON Lines)");
    app.add_option("--eval", a->eval, "Held-out pairs, evaluated every --eval-every steps and at the end");
    app.add_option("--format", a->format, "auto, tokens or text");
    app.add_flag("--chat-template,!--no-chat-template", [a](std::int64_t n) { a->no_chat_template = n < 0; }, "Format prompts with the chat template (default on)");
    app.add_option("--system-prompt", a->system_prompt, "A system turn before each prompt (with the chat template; as generate's)");
    app.add_flag("--skip-bad-lines", a->skip_bad_lines, "Skip malformed data lines (counted and listed) instead of stopping");
    app.add_option("--max-length", a->max_length, "Truncate prompt+completion to this many tokens");
    app.add_option("--max-prompt-length", a->max_prompt_length, "Truncate prompts (keeping their end)");
    app.add_option("--objective", a->objective, "sft, dpo, ddpo, ipo, hinge, simpo, orpo, dorpo (DivPO: dpo on divpo pairs)");
    app.add_option("--beta", a->beta, "beta (default 0.1; 2.0 for simpo)");
    app.add_option("--lambda", a->lambda, "ORPO odds-ratio weight");
    app.add_option("--gamma", a->gamma, "SimPO margin");
    app.add_option("--label-smoothing", a->label_smoothing, "DPO label smoothing");
    app.add_option("--nll-alpha", a->nll_alpha, "Weight of an added NLL term (RPO)");
    app.add_flag("--orpo-prompt-nll", a->orpo_prompt_nll, "ORPO NLL over prompt and completion (TRL's convention)");
    app.add_flag("--dorpo-released-code", a->dorpo_released_code, "DORPO weight placement of the paper's released code");
    app.add_flag("--ipo-summed", a->ipo_summed, "IPO on summed log-probs (OpenRLHF)");
    app.add_option("--lr", a->lr, "Peak learning rate");
    app.add_option("--schedule", a->schedule, "constant, linear or cosine");
    app.add_option("--warmup-steps", a->warmup_steps, "Linear warm-up steps");
    app.add_option("--epochs", a->epochs, "Passes over the training pairs");
    app.add_option("--max-steps", a->max_steps, "Stop after this many optimizer steps (overrides --epochs)");
    app.add_option("--batch-size", a->batch_size, "Pairs per micro-batch");
    app.add_option("--grad-accumulation", a->grad_accumulation, "Micro-batches per optimizer step");
    app.add_option("--max-grad-norm", a->max_grad_norm, "Clip the global gradient norm (0 = off)");
    app.add_option("--weight-decay", a->weight_decay, "AdamW decoupled weight decay");
    app.add_option("--eval-every", a->eval_every, "Evaluate every N steps");
    app.add_option("--pack-tokens", a->pack_tokens, "Pack sequences into rows of this many tokens (0 = pad)");
    app.add_flag("--skip-nonfinite", a->skip_nonfinite, "Skip steps with a NaN/inf loss or gradient instead of stopping");
    app.add_flag("--shuffle,!--no-shuffle", [a](std::int64_t n) { a->no_shuffle = n < 0; }, "Shuffle pairs every epoch (default on)");
    app.add_flag("--zero1", a->zero1, "Under mpirun/srun: shard the AdamW state over the ranks (ZeRO stage 1)");
    app.add_flag("--quiet", a->quiet, "No progress bar");
    app.add_option("--output", a->output, "Output folder: metrics.jsonl, checkpoint-N/, final/");
    app.add_option("--save-every", a->save_every, "Checkpoint every N steps (0 = only the final model)");
    app.add_option("--keep-last", a->keep_last, "Checkpoints to keep");
    app.add_option("--resume", a->resume, "auto (latest checkpoint in --output), none, or a checkpoint folder");
    app.add_flag("--lora", a->lora, "Train LoRA adapters instead of the full model");
    app.add_option("--lora-rank", a->lora_rank, "LoRA rank r");
    app.add_option("--lora-alpha", a->lora_alpha, "LoRA alpha (scaling alpha / r)");
    app.add_option("--lora-targets", a->lora_targets, "Projection names to adapt")->delimiter(',');
}

}  // namespace deviant::cli
