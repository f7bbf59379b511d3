// deviant/tokenizer/gguf_tokenizer.hpp — the byte-level BPE tokenizer stored in a GGUF file
// (tokenizer.ggml.*), as a BpeTokenizer. Why: GGUF checkpoints carry their tokenizer; training
// on text needs it and no tokenizer.json may exist beside the file.
//
// llama.cpp's layout: tokenizer.ggml.model "gpt2" (byte-level BPE; "llama" is SentencePiece and is
// refused), tokens (by id), token_type (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
// 6 byte), merges ("a b"), pre (the pre-tokenizer's name: "default"/"gpt2" = GPT-2's byte-level
// regex, "llama-bpe"/"llama3" = Llama 3's split pattern, "qwen2" = Qwen2's; others are refused,
// naming the value),
// bos/eos_token_id and add_bos/add_eos_token. It is rebuilt here as the equivalent tokenizer.json
// (every used token in the vocabulary; control tokens also as special added tokens, user-defined
// ones as non-special added tokens; BOS/EOS as the post-processor adds them) and read by
// BpeTokenizer::from_json, so the file is validated like any tokenizer.json; the same JSON saved as
// tokenizer.json loads in Hugging Face's tokenizers with the same ids. GGUF has no
// lstrip/rstrip flags: added tokens match their text exactly.
#pragma once
#include <nlohmann/json.hpp>

#include "deviant/io/gguf.hpp"
#include "deviant/tokenizer/bpe.hpp"

namespace deviant {

// Qwen2's split pattern: Llama 3's with single digits (\p{N}) instead of runs of up to three.
inline constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

inline bool gguf_has_tokenizer(const io::GgufFile& f) { return f.find("tokenizer.ggml.tokens") != nullptr; }

// The tokenizer.json equivalent of a GGUF file's tokenizer (what tokenizer_from_gguf reads, and
// what a run started from a GGUF file saves beside its trained weights).
inline nlohmann::json gguf_tokenizer_json(const io::GgufFile& f) {
    const std::string file = f.path().string();
    const std::string model = f.get_string("tokenizer.ggml.model");
    DEVIANT_REQUIRE(model == "gpt2", "{}: tokenizer.ggml.model is '{}'; byte-level BPE ('gpt2') tokenizers are read from GGUF, give "
                    "--tokenizer tokenizer.json for others", file, model);
    const io::GgufValue* tokens_v = f.find("tokenizer.ggml.tokens");
    DEVIANT_REQUIRE(tokens_v && tokens_v->as_array(), "{}: tokenizer.ggml.tokens is missing or not an array", file);
    const auto& tokens = *tokens_v->as_array();
    const io::GgufValue* types_v = f.find("tokenizer.ggml.token_type");
    DEVIANT_REQUIRE(!types_v || (types_v->as_array() && types_v->as_array()->size() == tokens.size()),
                    "{}: tokenizer.ggml.token_type must list one type per token ({})", file, tokens.size());
    const io::GgufValue* merges_v = f.find("tokenizer.ggml.merges");
    DEVIANT_REQUIRE(merges_v && merges_v->as_array(), "{}: tokenizer.ggml.merges is missing or not an array", file);

    nlohmann::json vocab = nlohmann::json::object(), added = nlohmann::json::array(), merges = nlohmann::json::array();
    for (std::size_t id = 0; id < tokens.size(); ++id) {
        const std::string* text = tokens[id].as_string();
        DEVIANT_REQUIRE(text, "{}: tokenizer.ggml.tokens[{}] is not a string", file, id);
        std::int64_t type = 1;
        if (types_v) {
            auto t = (*types_v->as_array())[id].as_int();
            DEVIANT_REQUIRE(t, "{}: tokenizer.ggml.token_type[{}] is not an integer", file, id);
            type = *t;
        }
        if (type == 5) continue;  // unused id
        if (type == 3 || type == 4)  // also in the vocabulary, as tokenizer.json keeps them (its readers key ids on that)
            added.push_back({{"id", id}, {"content", *text}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                             {"normalized", false}, {"special", type == 3}});
        DEVIANT_REQUIRE(!vocab.contains(*text), "{}: token '{}' appears twice (ids {} and {})", file, *text, vocab[*text].get<std::int64_t>(), id);
        vocab[*text] = id;
    }
    for (std::size_t i = 0; i < merges_v->as_array()->size(); ++i) {
        const std::string* m = (*merges_v->as_array())[i].as_string();
        DEVIANT_REQUIRE(m, "{}: tokenizer.ggml.merges[{}] is not a string", file, i);
        merges.push_back(*m);
    }

    const std::string pre = f.find("tokenizer.ggml.pre") ? f.get_string("tokenizer.ggml.pre") : "default";
    nlohmann::json pre_tokenizer;
    if (pre == "default" || pre == "gpt2" || pre == "gpt-2") {
        pre_tokenizer = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
    } else if (pre == "llama-bpe" || pre == "llama3" || pre == "qwen2") {
        const std::string_view pattern = pre == "qwen2" ? kQwen2Pattern : kLlama3Pattern;
        pre_tokenizer = {{"type", "Sequence"},
                         {"pretokenizers",
                          {{{"type", "Split"}, {"pattern", {{"Regex", std::string(pattern)}}}, {"behavior", "Isolated"}, {"invert", false}},
                           {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}};
    } else {
        fail("{}: tokenizer.ggml.pre is '{}', a pre-tokenizer this reader does not know (default, gpt2, llama-bpe, qwen2); give --tokenizer "
             "tokenizer.json", file, pre);
    }

    nlohmann::json j{{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}},
                     {"added_tokens", added},
                     {"pre_tokenizer", pre_tokenizer},
                     {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}}};
    // BOS / EOS the way the post-processor would add them.
    auto flag = [&](const char* key) {
        const io::GgufValue* v = f.find(key);
        return v && std::holds_alternative<bool>(v->v) && std::get<bool>(v->v);
    };
    auto token_text = [&](const char* key) -> std::optional<std::pair<std::string, std::int64_t>> {
        if (!f.find(key)) return std::nullopt;
        const std::int64_t id = f.get_int(key);
        DEVIANT_REQUIRE(id >= 0 && std::size_t(id) < tokens.size(), "{}: {} = {} is not a token id (vocabulary of {})", file, key, id,
                        tokens.size());
        return std::pair{*tokens[std::size_t(id)].as_string(), id};
    };
    const bool add_bos = flag("tokenizer.ggml.add_bos_token"), add_eos = flag("tokenizer.ggml.add_eos_token");
    auto bos = token_text("tokenizer.ggml.bos_token_id"), eos = token_text("tokenizer.ggml.eos_token_id");
    if ((add_bos && bos) || (add_eos && eos)) {
        nlohmann::json single = nlohmann::json::array(), pair = nlohmann::json::array(), specials = nlohmann::json::object();
        auto special = [&](const std::pair<std::string, std::int64_t>& t, nlohmann::json& into, int type_id) {
            into.push_back({{"SpecialToken", {{"id", t.first}, {"type_id", type_id}}}});
            specials[t.first] = {{"id", t.first}, {"ids", {t.second}}, {"tokens", {t.first}}};
        };
        for (int seq = 0; seq < 2; ++seq) {  // single = [BOS] A [EOS]; pair = that, then [BOS] B [EOS]
            nlohmann::json& into = seq == 0 ? single : pair;
            for (int k = 0; k <= seq; ++k) {
                if (add_bos && bos) special(*bos, into, k);
                into.push_back({{"Sequence", {{"id", k == 0 ? "A" : "B"}, {"type_id", k}}}});
                if (add_eos && eos) special(*eos, into, k);
            }
        }
        j["post_processor"] = {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}};
    }
    return j;
}

inline BpeTokenizer tokenizer_from_gguf(const io::GgufFile& f) {
    return BpeTokenizer::from_json(gguf_tokenizer_json(f), fmt::format("GGUF tokenizer of '{}'", f.path().string()));
}

// Where a model's tokenizer is when none is named: the GGUF file itself (it carries one), else
// tokenizer.json in the checkpoint directory; empty for no model.
inline std::filesystem::path model_tokenizer_path(const std::filesystem::path& model) {
    if (model.empty()) return {};
    return io::is_gguf_file(model) ? model : model / "tokenizer.json";
}

// A tokenizer from a tokenizer.json or from the GGUF file that carries one.
inline BpeTokenizer load_tokenizer(const std::filesystem::path& path) {
    if (io::is_gguf_file(path)) return tokenizer_from_gguf(io::GgufFile::open(path));
    return BpeTokenizer::from_json_file(path);
}

}  // namespace deviant
