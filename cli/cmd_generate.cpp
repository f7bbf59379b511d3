// `deviant generate`: k sampled completions per prompt (the evaluation protocol's sampling).
//   deviant generate --model DIR [--adapters DIR ...] --tokenizer FILE --prompts FILE --output FILE
//                    [--samples 4] [--temperature 1.0] [--top-p 0.95] [--top-k 50]
//                    [--repetition-penalty 1.1] [--max-new-tokens 128] [--seed S]
//                    [--chat-template|--no-chat-template] [--eos-token TEXT] [--batch-size N]
//                    [--system-prompt TEXT] [--stop TEXT ...] [--device cpu|cuda]
// Prompts: JSON Lines with "prompt" (text), formatted and tokenised exactly as training formats
// prompts (data::tokenize_prompt): through the model's own chat template when it ships one (GGUF
// tokenizer.chat_template, tokenizer_config.json), else a fixed format. On the CPU sampling uses
// a KV cache; a GGUF model decodes from its quantized blocks (models/load.hpp pack_for_decoding). Output: JSON Lines {"prompt": ..., "samples": [...]} in the
// prompts' order, written atomically. A sample ends at the tokenizer's EOS, the model's EOS ids,
// the chat format's end-of-turn token or --eos-token; the stop token is not part of its text.
#include <fmt/core.h>

#include "command.hpp"
#include "deviant/data/text_pairs.hpp"
#include "deviant/eval/samples_file.hpp"
#include "deviant/generate/sampler.hpp"
#include "deviant/models/load.hpp"
#include "deviant/nn/lora.hpp"
#include "deviant/tokenizer/gguf_tokenizer.hpp"

namespace {

using namespace deviant;

struct GenerateOptions {
    std::string model, tokenizer, prompts, output, device = "cpu", eos_token, system_prompt;
    std::vector<std::string> adapters, stop_strings;
    std::int64_t samples = 4;
    bool chat_template = true;
    SamplingOptions sampling;
};

struct PromptLine {
    std::string text;
    std::size_t line = 0;
};

std::vector<PromptLine> read_prompts(const std::string& path) {
    std::vector<PromptLine> out;
    data::for_each_json_line(path, [&](data::JsonLine& line) {
        DEVIANT_REQUIRE(line.value.is_object(), "expected a JSON object with field 'prompt'");
        DEVIANT_REQUIRE(line.value.contains("prompt"), "missing field 'prompt'");
        DEVIANT_REQUIRE(line.value["prompt"].is_string(), "field 'prompt' must be a string, got {}", line.value["prompt"].type_name());
        out.push_back({line.value["prompt"].get<std::string>(), line.number});
    });
    DEVIANT_REQUIRE(!out.empty(), "{}: no prompts (the file is empty)", path);
    return out;
}

std::vector<std::int64_t> stop_ids(const BpeTokenizer& tok, const ModelConfig& cfg, const GenerateOptions& o) {
    std::vector<std::int64_t> ids;
    auto add = [&](std::int64_t id) {
        if (id >= 0 && id < cfg.vocab_size && std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
    };
    if (!o.eos_token.empty()) {
        auto id = tok.token_to_id(o.eos_token);
        DEVIANT_REQUIRE(id.has_value(), "--eos-token '{}' is not a token of the tokenizer {}", o.eos_token, o.tokenizer);
        add(*id);
    }
    if (auto e = tok.eos_id()) add(*e);
    for (std::int64_t id : cfg.eos_token_ids) add(id);
    for (const char* end_of_turn : {"<|im_end|>", "<|eot_id|>"})
        if (auto id = tok.token_to_id(end_of_turn)) add(*id);
    DEVIANT_REQUIRE(!ids.empty(), "no stop token: the tokenizer and the model name no EOS; give --eos-token");
    return ids;
}

template <class Model>
int run_generate(Model& model, const GenerateOptions& o) {
    const BpeTokenizer tok = load_tokenizer(!o.tokenizer.empty() ? std::filesystem::path(o.tokenizer) : model_tokenizer_path(o.model));
    const std::vector<PromptLine> prompts = read_prompts(o.prompts);
    const data::TokenizeOptions topts = data::tokenize_options_for(
        !o.tokenizer.empty() ? std::filesystem::path(o.tokenizer) : model_tokenizer_path(o.model), o.chat_template, o.system_prompt);
    std::vector<std::vector<std::int64_t>> ids;
    for (const PromptLine& p : prompts) {
        auto t = data::tokenize_prompt(tok, p.text, topts);
        DEVIANT_REQUIRE(!t.empty(), "{}:{}: field 'prompt' has no tokens", o.prompts, p.line);
        for (std::int64_t id : t)
            DEVIANT_REQUIRE(id < model.config.vocab_size, "{}:{}: field 'prompt': token id {} of tokenizer {} is outside the model's vocabulary [0, {})",
                            o.prompts, p.line, id, o.tokenizer, model.config.vocab_size);
        DEVIANT_REQUIRE(std::int64_t(t.size()) + o.sampling.max_new_tokens <= model.config.max_position_embeddings,
                        "{}:{}: field 'prompt': {} tokens + --max-new-tokens {} exceed the model's {} positions", o.prompts, p.line,
                        t.size(), o.sampling.max_new_tokens, model.config.max_position_embeddings);
        ids.push_back(std::move(t));
    }

    // Adapters are folded into the weights in the order given (an SFT adapter, then a DPO adapter
    // trained on top of it).
    for (const std::string& dir : o.adapters) nn::LoraAdapters::from_peft(model, dir).merge_into_base();
    if (o.device == "cuda") {
        cuda::require_available();
        model.to(Device::cuda);
    }

    // A GGUF model on the CPU decodes from the file's quantized blocks (same values, fewer bytes
    // per token); not once adapters changed the weights.
    if constexpr (std::is_same_v<Model, Llama>)
        if (o.device == "cpu" && io::is_gguf_file(o.model) && o.adapters.empty()) pack_for_decoding(model, io::GgufFile::open(o.model));

    SamplingOptions s = o.sampling;
    s.stop_ids = stop_ids(tok, model.config, o);
    if (!o.stop_strings.empty()) {
        for (const std::string& st : o.stop_strings) DEVIANT_REQUIRE(!st.empty(), "--stop: an empty stop string");
        s.stop_when = [&](const std::vector<std::int64_t>& generated) {
            std::vector<TokenId> ids;
            for (std::int64_t id : generated)
                if (id >= 0 && std::size_t(id) < tok.vocab_size()) ids.push_back(TokenId(id));
            return first_stop_string(tok.decode(ids, /*skip_special=*/true), o.stop_strings) != std::string::npos;
        };
    }
    const auto out = generate(model, ids, s, o.samples);

    std::vector<eval::SampleGroup> groups(prompts.size());
    std::int64_t tokens = 0;
    for (std::size_t i = 0; i < prompts.size(); ++i) {
        groups[i].prompt = prompts[i].text;
        for (std::size_t j = 0; j < std::size_t(o.samples); ++j) {
            std::vector<TokenId> gen(out[i * std::size_t(o.samples) + j].begin(), out[i * std::size_t(o.samples) + j].end());
            tokens += std::int64_t(gen.size());
            if (!gen.empty() && std::find(s.stop_ids.begin(), s.stop_ids.end(), gen.back()) != s.stop_ids.end()) gen.pop_back();
            // a model vocabulary padded beyond the tokenizer's: such ids have no text
            std::erase_if(gen, [&](TokenId id) { return id < 0 || std::size_t(id) >= tok.vocab_size(); });
            std::string text = tok.decode(gen, /*skip_special=*/true);
            if (std::size_t cut = first_stop_string(text, o.stop_strings); cut != std::string::npos) text.resize(cut);
            groups[i].samples.push_back(std::move(text));
        }
    }
    eval::write_sample_groups(o.output, groups);
    fmt::print(stderr, "generate: {} prompts x {} samples, {} tokens -> {}\n", prompts.size(), o.samples, tokens, o.output);
    return 0;
}

deviant::cli::Registration generate_command{{"generate", "Sample completions of prompts (temperature, top-k, top-p, repetition penalty)", [](CLI::App& app) {
    auto o = std::make_shared<GenerateOptions>();
    app.add_option("--model", o->model, "Checkpoint directory (config.json + safetensors)")->required();
    app.add_option("--adapters", o->adapters, "LoRA adapter directory (PEFT layout) merged into the model (repeatable: applied in order)");
    app.add_option("--tokenizer", o->tokenizer, "tokenizer.json (default: the model's tokenizer.json, or the one a GGUF --model carries)");
    app.add_option("--prompts", o->prompts, "JSON Lines with field 'prompt'")->required();
    app.add_option("--output", o->output, "Output JSON Lines {prompt, samples}")->required();
    app.add_option("--samples", o->samples, "Samples per prompt")->capture_default_str()->check(CLI::PositiveNumber);
    app.add_option("--temperature", o->sampling.temperature, "Softmax temperature (0: greedy)")->capture_default_str();
    app.add_option("--top-p", o->sampling.top_p, "Nucleus mass (1: off)")->capture_default_str();
    app.add_option("--top-k", o->sampling.top_k, "Keep the k most likely tokens (0: off)")->capture_default_str();
    app.add_option("--repetition-penalty", o->sampling.repetition_penalty, "Penalty on tokens already present (1: off)")->capture_default_str();
    app.add_option("--max-new-tokens", o->sampling.max_new_tokens, "Tokens generated at most per sample")->capture_default_str();
    app.add_option("--seed", o->sampling.seed, "Random seed")->capture_default_str();
    app.add_flag("--chat-template,!--no-chat-template", o->chat_template, "Format prompts with the chat template (default on)");
    app.add_option("--system-prompt", o->system_prompt, "A system turn before each prompt (with the chat template)");
    app.add_option("--stop", o->stop_strings, "A text that ends a sample (repeatable); the sample is cut before it");
    app.add_option("--eos-token", o->eos_token, "An extra token that ends a sample (as training's eos_token)");
    app.add_option("--batch-size", o->sampling.batch_size, "Sequences per forward pass (0: all)")->capture_default_str();
    app.add_option("--device", o->device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
    return std::function<int()>([o] {
        validate_sampling(o->sampling);
        data::require_distinct_paths(o->prompts, o->output, "--prompts", "--output");
        return with_pretrained(o->model, [&](auto& model) { return run_generate(model, *o); });
    });
}}};

}  // namespace
