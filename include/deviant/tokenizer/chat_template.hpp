// deviant/tokenizer/chat_template.hpp — a fixed, documented chat format chosen from the tokenizer.
// Why: preference data are conversations; prompts must be rendered the same way at training and
// generation time without a Jinja engine, and without doubled BOS/EOS tokens.
//
// The format follows the special tokens the tokenizer has:
//   chatml  (has <|im_start|> and <|im_end|>):
//       "<|im_start|>{role}\n{content}<|im_end|>\n" per message; prompt "<|im_start|>assistant\n"
//   llama3  (has <|start_header_id|>, <|end_header_id|>, <|eot_id|>):
//       "<|start_header_id|>{role}<|end_header_id|>\n\n{trimmed content}<|eot_id|>" per message;
//       prompt "<|start_header_id|>assistant<|end_header_id|>\n\n"
//   plain   (anything else, Zephyr-like):
//       "<|{role}|>\n{content}{EOS}\n" per message (EOS text only when the tokenizer has one);
//       prompt "<|assistant|>\n"
// The rendered text never contains BOS. encode_chat() encodes it with add_special_tokens=true, so
// the tokenizer's post-processor adds its BOS exactly once (BpeTokenizer::encode never doubles a
// BOS/EOS already present). Special-token strings inside message contents are matched as special
// tokens, as in the reference library.
#pragma once
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "deviant/tokenizer/bpe.hpp"

namespace deviant {

struct ChatMessage {
    std::string role;  // "system", "user", "assistant", ...
    std::string content;
};

enum class ChatFormat { chatml, llama3, plain };

inline ChatFormat detect_chat_format(const BpeTokenizer& tok) {
    if (tok.token_to_id("<|im_start|>") && tok.token_to_id("<|im_end|>")) return ChatFormat::chatml;
    if (tok.token_to_id("<|start_header_id|>") && tok.token_to_id("<|end_header_id|>") && tok.token_to_id("<|eot_id|>"))
        return ChatFormat::llama3;
    return ChatFormat::plain;
}

namespace detail {
inline std::string_view trim_spaces(std::string_view s) {
    const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; };
    while (!s.empty() && space(s.front())) s.remove_prefix(1);
    while (!s.empty() && space(s.back())) s.remove_suffix(1);
    return s;
}
}  // namespace detail

// Renders messages in the format of detect_chat_format(tok); with add_generation_prompt the
// header of an assistant turn is appended.
inline std::string apply_chat_template(const BpeTokenizer& tok, std::span<const ChatMessage> messages,
                                       bool add_generation_prompt = true) {
    std::string out;
    switch (detect_chat_format(tok)) {
        case ChatFormat::chatml:
            for (const ChatMessage& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
            if (add_generation_prompt) out += "<|im_start|>assistant\n";
            break;
        case ChatFormat::llama3:
            for (const ChatMessage& m : messages)
                out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + std::string(detail::trim_spaces(m.content)) +
                       "<|eot_id|>";
            if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
            break;
        case ChatFormat::plain: {
            const std::string eos = tok.eos_id() ? tok.id_to_token(*tok.eos_id()) : std::string();
            for (const ChatMessage& m : messages) out += "<|" + m.role + "|>\n" + m.content + eos + "\n";
            if (add_generation_prompt) out += "<|assistant|>\n";
            break;
        }
    }
    return out;
}

// Token ids of the rendered conversation, with the tokenizer's BOS (if any) exactly once.
inline std::vector<TokenId> encode_chat(const BpeTokenizer& tok, std::span<const ChatMessage> messages,
                                        bool add_generation_prompt = true) {
    return tok.encode(apply_chat_template(tok, messages, add_generation_prompt), /*add_special_tokens=*/true);
}

}  // namespace deviant
