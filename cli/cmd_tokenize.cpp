// `deviant tokenize`: what the model sees — token ids of texts, optionally rendered as a user turn
// through the model's chat template with the generation prompt.
//   deviant tokenize --model M | --tokenizer F --input texts.jsonl --output ids.jsonl
//                    [--chat] [--system-prompt TEXT] [--add-special-tokens]
// Input lines {"text": ...}; output lines {"text": ..., "ids": [...], "tokens": [...]} (with --chat
// also "rendered": the prompt text the template produced), written atomically.
#include <fmt/core.h>

#include "command.hpp"
#include "deviant/data/jsonl.hpp"
#include "deviant/data/text_pairs.hpp"
#include "deviant/tokenizer/chat_jinja.hpp"
#include "deviant/tokenizer/gguf_tokenizer.hpp"

namespace {

using namespace deviant;

struct TokenizeArgs {
    std::string model, tokenizer, input, output, system_prompt;
    bool chat = false, add_special = false;
};

int run_tokenize(const TokenizeArgs& a) {
    DEVIANT_REQUIRE(!a.model.empty() || !a.tokenizer.empty(), "give --model or --tokenizer");
    const std::filesystem::path tok_path = !a.tokenizer.empty() ? std::filesystem::path(a.tokenizer) : model_tokenizer_path(a.model);
    data::require_distinct_paths(a.input, a.output);
    const BpeTokenizer tok = load_tokenizer(tok_path);
    data::TokenizeOptions opts;
    opts.system_prompt = a.system_prompt;
    if (a.chat) opts.chat_template = find_chat_template(tok_path);
    data::AtomicTextFile out(a.output);
    std::int64_t lines = 0, tokens = 0;
    data::for_each_json_line(a.input, [&](data::JsonLine& line) {
        DEVIANT_REQUIRE(line.value.is_object() && line.value.contains("text"), "expected a JSON object with field 'text'");
        DEVIANT_REQUIRE(line.value["text"].is_string(), "field 'text' must be a string, got {}", line.value["text"].type_name());
        const std::string text = line.value["text"].get<std::string>();
        nlohmann::json o{{"text", text}};
        std::vector<std::int64_t> ids;
        if (a.chat) {
            ids = data::tokenize_prompt(tok, text, opts);
            std::vector<ChatMessage> messages;
            if (!a.system_prompt.empty()) messages.push_back({"system", a.system_prompt});
            messages.push_back({"user", text});
            o["rendered"] = opts.chat_template ? opts.chat_template->render(messages, true) : apply_chat_template(tok, messages, true);
        } else {
            const auto enc = tok.encode(text, a.add_special);
            ids.assign(enc.begin(), enc.end());
        }
        nlohmann::json pieces = nlohmann::json::array();
        for (std::int64_t id : ids) pieces.push_back(tok.id_to_token(TokenId(id)));
        o["ids"] = ids;
        o["tokens"] = pieces;
        out.stream() << o.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
        ++lines;
        tokens += std::int64_t(ids.size());
    });
    out.commit();
    fmt::print(stderr, "tokenize: {} lines, {} tokens{} -> {}\n", lines, tokens,
               a.chat ? (opts.chat_template ? " (model chat template)" : " (built-in chat format)") : "", a.output);
    return 0;
}

deviant::cli::Registration tokenize_command{{"tokenize", "Token ids of texts as the model sees them (optionally through its chat template)", [](CLI::App& app) {
    auto a = std::make_shared<TokenizeArgs>();
    app.add_option("--model", a->model, "Checkpoint directory or GGUF file (its tokenizer and chat template)");
    app.add_option("--tokenizer", a->tokenizer, "tokenizer.json or GGUF file (default: the model's)");
    app.add_option("--input", a->input, "JSON Lines with field 'text'")->required();
    app.add_option("--output", a->output, "Output JSON Lines {text, ids, tokens}")->required();
    app.add_flag("--chat", a->chat, "Render each text as a user message through the chat template, with the generation prompt");
    app.add_option("--system-prompt", a->system_prompt, "With --chat: a system message first");
    app.add_flag("--add-special-tokens", a->add_special, "Without --chat: add the tokenizer's BOS/EOS as its post-processor does");
    return std::function<int()>([a] { return run_tokenize(*a); });
}}};

}  // namespace
