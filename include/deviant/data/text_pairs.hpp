// deviant/data/text_pairs.hpp — text preference pairs tokenised for training (data::TokenPair).
// Why: the model must see prompts exactly as at generation time, and each sequence must carry
// exactly one BOS (at the start of the prompt) and one EOS (at the end of each completion):
// a doubled BOS or a missing EOS silently changes what is learnt.
//   prompt      with use_chat_template: one user turn rendered by tokenizer/chat_template.hpp
//               with the assistant header appended (add_generation_prompt); otherwise the raw
//               text. Encoded without the tokenizer's post-processor, then the tokenizer's BOS
//               (bos_id) is put in front unless the text already starts with it; a tokenizer
//               without a BOS gets none. (The post-processor is not used because some, e.g.
//               Llama-2 style, also append an EOS, which must not end a prompt.)
//   completion  its text encoded without special tokens, then EOS (eos_token, or the
//               tokenizer's eos_id) unless it already ends with it. Prompt and completions are
//               encoded separately (TRL's convention), so a token never straddles the boundary.
// A completion with no tokens before its EOS is an error naming the pair's origin.
#pragma once
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "deviant/data/token_pairs.hpp"
#include "deviant/data/writing_prompts.hpp"
#include "deviant/tokenizer/chat_jinja.hpp"
#include "deviant/tokenizer/chat_template.hpp"

namespace deviant::data {

struct TokenizeOptions {
    bool use_chat_template = true;
    std::string system_prompt;  // with the chat template: an optional system turn before the user turn
    std::string eos_token;      // token that ends a completion (empty: the tokenizer's EOS)
    // The model's own chat template (tokenizer/chat_jinja.hpp find_chat_template); when null the
    // fixed format of tokenizer/chat_template.hpp chosen by the tokenizer's special tokens.
    std::shared_ptr<const ChatTemplate> chat_template = {};
};

// How text reaches the model whose tokenizer is at `tokenizer_path` (a tokenizer.json or GGUF):
// through its own chat template when it ships one and `chat_template` is on, with an optional
// system turn. Training, sampling and the reward model format text the same way through this.
inline TokenizeOptions tokenize_options_for(const std::filesystem::path& tokenizer_path, bool chat_template, std::string system_prompt = {}) {
    TokenizeOptions t;
    t.use_chat_template = chat_template;
    t.system_prompt = std::move(system_prompt);
    if (chat_template) t.chat_template = find_chat_template(tokenizer_path);
    return t;
}

namespace detail {
inline TokenId completion_end_id(const BpeTokenizer& tok, const TokenizeOptions& opts) {
    if (!opts.eos_token.empty()) {
        auto id = tok.token_to_id(opts.eos_token);
        DEVIANT_REQUIRE(id.has_value(), "eos_token '{}' is not a token of the tokenizer", opts.eos_token);
        return *id;
    }
    DEVIANT_REQUIRE(tok.eos_id().has_value(), "the tokenizer has no EOS token: name one with eos_token");
    return *tok.eos_id();
}
}  // namespace detail

// Prompt token ids: chat-formatted (or raw) text, with the tokenizer's BOS exactly once.
inline std::vector<std::int64_t> tokenize_prompt(const BpeTokenizer& tok, const std::string& prompt, const TokenizeOptions& opts = {}) {
    std::string text = prompt;
    if (opts.use_chat_template) {
        std::vector<ChatMessage> messages;
        if (!opts.system_prompt.empty()) messages.push_back({"system", opts.system_prompt});
        messages.push_back({"user", prompt});
        if (opts.chat_template) {
            // as the reference renders and encodes it: the template writes whatever special tokens
            // (BOS, default system turn) it wants; nothing is added
            const std::vector<TokenId> ids = tok.encode(opts.chat_template->render(messages, /*add_generation_prompt=*/true), false);
            return {ids.begin(), ids.end()};
        }
        text = apply_chat_template(tok, messages, /*add_generation_prompt=*/true);
    }
    std::vector<TokenId> ids = tok.encode(text, /*add_special_tokens=*/false);
    if (auto bos = tok.bos_id(); bos && (ids.empty() || ids.front() != *bos)) ids.insert(ids.begin(), *bos);
    return {ids.begin(), ids.end()};
}

// Completion token ids: the text, then EOS exactly once.
inline std::vector<std::int64_t> tokenize_completion(const BpeTokenizer& tok, const std::string& completion, const TokenizeOptions& opts = {}) {
    const TokenId eos = detail::completion_end_id(tok, opts);
    std::vector<TokenId> ids = tok.encode(completion, /*add_special_tokens=*/false);
    if (!ids.empty() && ids.back() == eos) ids.pop_back();
    if (ids.empty()) return {};
    ids.push_back(eos);
    return {ids.begin(), ids.end()};
}

inline TokenPair tokenize_pair(const BpeTokenizer& tok, const TextPair& p, const TokenizeOptions& opts = {}, std::size_t index = 0) {
    const std::string name = p.origin.empty() ? fmt::format("pair {}", index) : p.origin;
    TokenPair out;
    out.prompt = tokenize_prompt(tok, p.prompt, opts);
    DEVIANT_REQUIRE(!out.prompt.empty(), "{}: the prompt has no tokens", name);
    out.chosen = tokenize_completion(tok, p.chosen, opts);
    DEVIANT_REQUIRE(!out.chosen.empty(), "{}: the chosen completion has no tokens", name);
    out.rejected = tokenize_completion(tok, p.rejected, opts);
    DEVIANT_REQUIRE(!out.rejected.empty(), "{}: the rejected completion has no tokens", name);
    out.weight = p.weight;
    return out;
}

inline std::vector<TokenPair> tokenize_pairs(const BpeTokenizer& tok, std::span<const TextPair> pairs, const TokenizeOptions& opts = {}) {
    std::vector<TokenPair> out;
    out.reserve(pairs.size());
    for (std::size_t i = 0; i < pairs.size(); ++i) out.push_back(tokenize_pair(tok, pairs[i], opts, i));
    return out;
}

}  // namespace deviant::data
