// deviant/tokenizer/gguf_tokenizer.hpp — the tokenizer stored in a GGUF file (tokenizer.ggml.*), as
// a BpeTokenizer. Why: GGUF checkpoints carry their tokenizer; training on text needs it and no
// tokenizer.json may exist beside the file.
//
// llama.cpp's layout: tokenizer.ggml.model, tokens (by id), token_type (1 normal, 2 unknown,
// 3 control, 4 user-defined, 5 unused, 6 byte; 0 undefined counts as normal), bos/eos/unk token
// ids, add_bos/add_eos_token, and per model:
//  - "gpt2" (byte-level BPE): merges ("a b") and pre, the pre-tokenizer's name ("default" when
//    absent). Each name llama.cpp knows for a byte-level vocabulary maps, through the table below,
//    to its list of regexes (the text is split by each in turn; matches and the text between them
//    become pieces, then mapped to bytes) and to the flags llama.cpp sets with it (ignore_merges,
//    BOS added when add_bos_token is absent, no BOS at all). Where llama.cpp rewrites a pattern for
//    its own regex engine, the tokenizer.json original it names is used. Unknown names are refused,
//    naming the value and the supported ones.
//  - "llama" (SentencePiece BPE: Llama-2, Mistral-7B, TinyLlama): scores (float32 or int32, one per
//    token) and add_space_prefix (default true). Spaces become "▁" and each stretch of text between
//    control/user-defined tokens gets a "▁" prefix; merges are derived from the scores (every split
//    of a normal piece into two normal pieces, ranked by the merged piece's score, highest first,
//    then by id, then left split first), so that merging the lowest rank first, leftmost on ties,
//    merges the highest-scoring pair as SentencePiece does; characters outside the vocabulary
//    become <0xNN> byte tokens. BOS (default id 1) is added unless add_bos_token is false.
// Either is rebuilt here as the equivalent tokenizer.json (every used token in the vocabulary;
// control tokens — and for SentencePiece the unknown token — also as special added tokens,
// user-defined ones as non-special added tokens; BOS/EOS as the post-processor adds them) and read
// by BpeTokenizer::from_json, so the file is validated like any tokenizer.json and the same JSON
// can be saved beside trained weights and loaded again (also by Hugging Face's tokenizers). GGUF
// has no lstrip/rstrip flags: added tokens match their text exactly. Unused and empty tokens keep
// their ids out of the vocabulary.
#pragma once
#include <algorithm>
#include <nlohmann/json.hpp>
#include <string_view>
#include <vector>

#include "deviant/io/gguf.hpp"
#include "deviant/tokenizer/bpe.hpp"

namespace deviant {

// Qwen2's split pattern: Llama 3's with single digits (\p{N}) instead of runs of up to three.
inline constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// The split patterns of llama.cpp's byte-level pre-tokenizers (besides kGpt2Pattern and
// kLlama3Pattern of bpe.hpp and kQwen2Pattern above).
namespace gguf_patterns {
// Qwen3.5: letters keep their combining marks.
inline constexpr std::string_view kQwen35 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Llama 3's with white-space runs cut into power-of-two lengths.
inline constexpr std::string_view kJais2 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1})";
// GPT-4o (o200k): words split at lower-to-upper case changes, contractions attached.
inline constexpr std::string_view kGpt4o =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Mistral Nemo (tekken): GPT-4o's without contractions, single digits.
inline constexpr std::string_view kTekken =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Kimi K2: Han runs apart, GPT-4o's letter classes without Han.
inline constexpr std::string_view kKimiK2 =
    R"([\p{Han}]+|[^\r\n\p{L}\p{N}]?(?:(?!\p{Han})[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}])*(?:(?!\p{Han})[\p{Ll}\p{Lm}\p{Lo}\p{M}])+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?(?:(?!\p{Han})[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}])+(?:(?!\p{Han})[\p{Ll}\p{Lm}\p{Lo}\p{M}])*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Tiny Aya / Cohere2 MoE: digit groups of three from the right, then GPT-4o's.
inline constexpr std::string_view kDigitGroupsOfThree = R"(\d{1,3}(?=(?:\d{3})*\b))";
// DeepSeek-V3: Latin words with one leading punctuation mark, letters with marks.
inline constexpr std::string_view kDeepseekV3Cjk = R"([\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+)";
inline constexpr std::string_view kDeepseekV3 =
    R"re([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";
// DeepSeek LLM: cased letters (a fixed list of ranges), ASCII/full-width punctuation, CJK runs.
inline constexpr std::string_view kDeepseekLlmLetters =
    R"(\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+)";
inline constexpr std::string_view kDeepseekLlmPunctuation = R"(\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+)";
inline constexpr std::string_view kDeepseekCjk = R"([\x{4E00}-\x{9FA5}\x{0800}-\x{4E00}\x{AC00}-\x{D7FF}]+)";
// Falcon and llama.cpp's default: punctuation runs first.
inline constexpr std::string_view kFalconPunctuation = R"([\p{P}\$\+<=>\^~\|`]+)";
inline constexpr std::string_view kDefaultPunctuation = R"([\p{P}\$\+<=>\^~\|]+)";
inline constexpr std::string_view kThreeAsciiDigits = "[0-9][0-9][0-9]";
// BLOOM, Poro, GPT-3 Finnish, Viking: anything but white space and sentence punctuation.
inline constexpr std::string_view kBloom = R"( ?[^(\s|.,!?\x{2026}\x{3002}\x{FF0C}\x{3001}\x{0964}\x{06D4}\x{060C})]+)";
// Chameleon: sentinel and image tokens, tabs/newlines/double spaces, digits, punctuation, GPT-2's.
inline constexpr std::string_view kChameleonSentinel = "<sentinel:[0-9]+>";
inline constexpr std::string_view kChameleonImage = "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z";
inline constexpr std::string_view kChameleonSpaces = "([\\t\\n]|    |  )";
inline constexpr std::string_view kChameleonPunctuation = R"([\p{P}!-/:-@\[-`{-~])";
// Ling / Bailing MoE: possessive quantifiers, one newline per piece.
inline constexpr std::string_view kBailingMoe =
    R"('(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+)";
// Seed-Coder: single digits, punctuation runs without newlines.
inline constexpr std::string_view kSeedCoder =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+)";
// EXAONE MoE: words with marks and single inner spaces.
inline constexpr std::string_view kExaoneMoe =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+)";
// MiniCPM5: Qwen2's with digit runs.
inline constexpr std::string_view kMiniCpm5 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Ufakzeka: Qwen2's without the contractions.
inline constexpr std::string_view kUfakzeka = R"([^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Laguna: lines first, then Qwen2's (as llama.cpp spells it).
inline constexpr std::string_view kLagunaLines = R"([^\n]+|[\n]+)";
inline constexpr std::string_view kLaguna =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// SuperBPE: digit runs, cut into groups of three from the right by an empty match.
inline constexpr std::string_view kDigitRuns = R"(\p{N}+)";
inline constexpr std::string_view kSuperBpeDigitGroups = R"((?=(\d{3})+(?!\d)))";
}  // namespace gguf_patterns

// One row of the byte-level pre-tokenizer table: the tokenizer.ggml.pre names, the regexes the
// text is split by in turn (each match and each stretch between matches is a piece), and the flags
// llama.cpp sets with that pre-tokenizer.
struct GgufPreTokenizer {
    std::vector<std::string_view> names;
    std::vector<std::string_view> splits;
    bool ignore_merges = false;       // a piece found whole in the vocabulary is one token
    bool add_bos_by_default = false;  // when tokenizer.ggml.add_bos_token is absent
    bool adds_bos = true;             // false: BOS is never added (ChatGLM)
};

inline const std::vector<GgufPreTokenizer>& gguf_pre_tokenizers() {
    using namespace gguf_patterns;
    static const std::vector<GgufPreTokenizer> table = {
        {{"default"}, {kDefaultPunctuation, kGpt2Pattern, kDigitRuns, kThreeAsciiDigits}},
        {{"gpt2", "gpt-2", "phi-2", "mpt", "olmo", "jais", "trillion", "exaone4", "granite-docling", "gigachat", "a.x-4.0", "mellum",
          "jina-es", "jina-de", "jina-v2-es", "jina-v2-de", "modern-bert"},
         {kGpt2Pattern}},
        {{"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b", "mellum2"}, {R"(\p{N})", kGpt2Pattern}},
        {{"falcon"}, {kFalconPunctuation, kGpt2Pattern, kThreeAsciiDigits}},
        {{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano"},
         {kLlama3Pattern}, true, true},
        {{"dbrx", "smaug-bpe"}, {kLlama3Pattern}},
        {{"chatglm-bpe", "glm4"}, {kLlama3Pattern}, false, false, false},
        {{"jais-2"}, {kJais2}},
        {{"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan", "solar-open", "grok-2"}, {kQwen2Pattern}},
        {{"qwen35"}, {kQwen35}},
        {{"deepseek-llm"}, {"[\r\n]", kDeepseekLlmLetters, kDeepseekLlmPunctuation, R"(\s+$)", kDeepseekCjk, kDigitRuns}},
        {{"deepseek-coder"}, {"[\r\n]", R"(\s?\p{L}+)", R"(\s?\p{P}+)", kDeepseekCjk, R"(\p{N})"}},
        {{"deepseek-v3", "hunyuan-dense", "joyai-llm", "hy_v4"}, {R"(\p{N}{1,3})", kDeepseekV3Cjk, kDeepseekV3}},
        {{"poro-chat", "bloom", "gpt3-finnish"}, {kBloom}},
        {{"viking"}, {kBloom, R"(\p{N})"}},
        {{"tekken"}, {kTekken}, true, true},
        {{"chameleon"},
         {kChameleonSentinel, kChameleonImage, kChameleonSpaces, R"(\p{N})", kChameleonPunctuation, kGpt2Pattern},
         false,
         true},
        {{"gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"}, {kGpt4o}},
        {{"tiny_aya", "cohere2moe"}, {kDigitGroupsOfThree, kGpt4o}},
        {{"kimi-k2"}, {kKimiK2}},
        {{"superbpe"}, {kDigitRuns, kSuperBpeDigitGroups}},
        {{"bailingmoe", "bailingmoe2", "llada-moe"}, {kBailingMoe}},
        {{"seed-coder"}, {kSeedCoder}},
        {{"exaone-moe"}, {kExaoneMoe}},
        {{"minicpm5"}, {R"(\p{N}{1,3})", kMiniCpm5}, true},
        {{"ufakzeka"}, {kUfakzeka}},
        {{"laguna"}, {kLagunaLines, kLaguna}},
    };
    return table;
}

inline const GgufPreTokenizer* find_gguf_pre_tokenizer(std::string_view name) {
    for (const GgufPreTokenizer& row : gguf_pre_tokenizers())
        if (std::find(row.names.begin(), row.names.end(), name) != row.names.end()) return &row;
    return nullptr;
}

// Every tokenizer.ggml.pre value a byte-level GGUF tokenizer may carry, comma-separated.
inline std::string gguf_pre_tokenizer_names() {
    std::string out;
    for (const GgufPreTokenizer& row : gguf_pre_tokenizers())
        for (std::string_view name : row.names) out += (out.empty() ? "" : ", ") + std::string(name);
    return out;
}

// The tokenizer.json pre_tokenizer of one table row: Sequence[Split(regex, Isolated)...,
// ByteLevel] (GPT-2's pattern, when it comes last, is ByteLevel's own regex).
inline nlohmann::json gguf_pre_tokenizer_json(const GgufPreTokenizer& row) {
    nlohmann::json steps = nlohmann::json::array();
    const bool gpt2_last = !row.splits.empty() && row.splits.back() == kGpt2Pattern;
    for (std::size_t i = 0; i + (gpt2_last ? 1 : 0) < row.splits.size(); ++i)
        steps.push_back({{"type", "Split"}, {"pattern", {{"Regex", std::string(row.splits[i])}}}, {"behavior", "Isolated"}, {"invert", false}});
    steps.push_back({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", gpt2_last}});
    if (steps.size() == 1) return steps[0];
    return {{"type", "Sequence"}, {"pretokenizers", steps}};
}

inline bool gguf_has_tokenizer(const io::GgufFile& f) { return f.find("tokenizer.ggml.tokens") != nullptr; }

namespace detail {

enum GgufTokenType : std::int64_t { kTokenUndefined = 0, kTokenNormal = 1, kTokenUnknown = 2, kTokenControl = 3, kTokenUserDefined = 4,
                                    kTokenUnused = 5, kTokenByte = 6 };

// tokenizer.ggml.tokens and token_type (all normal when absent), checked.
struct GgufVocabulary {
    std::vector<std::string> tokens;
    std::vector<std::int64_t> types;
};

inline GgufVocabulary read_gguf_vocabulary(const io::GgufFile& f, const std::string& file) {
    GgufVocabulary v;
    const io::GgufValue* tokens_v = f.find("tokenizer.ggml.tokens");
    DEVIANT_REQUIRE(tokens_v && tokens_v->as_array(), "{}: tokenizer.ggml.tokens is missing or not an array", file);
    const auto& tokens = *tokens_v->as_array();
    DEVIANT_REQUIRE(!tokens.empty(), "{}: tokenizer.ggml.tokens is empty", file);
    const io::GgufValue* types_v = f.find("tokenizer.ggml.token_type");
    DEVIANT_REQUIRE(!types_v || (types_v->as_array() && types_v->as_array()->size() == tokens.size()),
                    "{}: tokenizer.ggml.token_type must list one type per token ({})", file, tokens.size());
    for (std::size_t id = 0; id < tokens.size(); ++id) {
        const std::string* text = tokens[id].as_string();
        DEVIANT_REQUIRE(text, "{}: tokenizer.ggml.tokens[{}] is not a string", file, id);
        v.tokens.push_back(*text);
        std::int64_t type = kTokenNormal;
        if (types_v) {
            auto t = (*types_v->as_array())[id].as_int();
            DEVIANT_REQUIRE(t && *t >= kTokenUndefined && *t <= kTokenByte,
                            "{}: tokenizer.ggml.token_type[{}] is not a token type (0-6: undefined, normal, unknown, control, "
                            "user-defined, unused, byte)", file, id);
            type = *t == kTokenUndefined ? kTokenNormal : *t;
        }
        v.types.push_back(type);
    }
    return v;
}

inline bool gguf_flag(const io::GgufFile& f, const char* key, bool fallback) {
    const io::GgufValue* v = f.find(key);
    if (!v) return fallback;
    DEVIANT_REQUIRE(std::holds_alternative<bool>(v->v), "{}: {} is not a boolean", f.path().string(), key);
    return std::get<bool>(v->v);
}

// A special token id from the metadata (fallback when absent), checked against the vocabulary.
inline std::optional<std::int64_t> gguf_token_id(const io::GgufFile& f, const GgufVocabulary& v, const char* key,
                                                 std::optional<std::int64_t> fallback = std::nullopt) {
    std::int64_t id;
    if (f.find(key)) {
        id = f.get_int(key);
        DEVIANT_REQUIRE(id >= 0 && std::size_t(id) < v.tokens.size(), "{}: {} = {} is not a token id (vocabulary of {})",
                        f.path().string(), key, id, v.tokens.size());
    } else {
        if (!fallback || *fallback < 0 || std::size_t(*fallback) >= v.tokens.size()) return std::nullopt;
        id = *fallback;
    }
    if (v.types[std::size_t(id)] == kTokenUnused || v.tokens[std::size_t(id)].empty()) return std::nullopt;
    return id;
}

// vocab (every used token) and added_tokens (control and unknown: special; user-defined: not).
inline void gguf_vocab_json(const GgufVocabulary& v, const std::string& file, bool unknown_is_added, nlohmann::json& vocab,
                            nlohmann::json& added) {
    vocab = nlohmann::json::object();
    added = nlohmann::json::array();
    for (std::size_t id = 0; id < v.tokens.size(); ++id) {
        const std::int64_t type = v.types[id];
        const std::string& text = v.tokens[id];
        if (type == kTokenUnused || text.empty()) continue;  // an empty token can never match: its id stays unused
        if (type == kTokenControl || type == kTokenUserDefined || (unknown_is_added && type == kTokenUnknown))
            // also in the vocabulary, as tokenizer.json keeps them (its readers key ids on that)
            added.push_back({{"id", id}, {"content", text}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                             {"normalized", false}, {"special", type != kTokenUserDefined}});
        DEVIANT_REQUIRE(!vocab.contains(text), "{}: token '{}' appears twice (ids {} and {})", file, text, vocab[text].get<std::int64_t>(), id);
        vocab[text] = id;
    }
}

// BOS / EOS the way the post-processor would add them.
inline void gguf_post_processor(nlohmann::json& j, const GgufVocabulary& v, std::optional<std::int64_t> bos, bool add_bos,
                                std::optional<std::int64_t> eos, bool add_eos) {
    if (!((add_bos && bos) || (add_eos && eos))) return;
    nlohmann::json single = nlohmann::json::array(), pair = nlohmann::json::array(), specials = nlohmann::json::object();
    auto special = [&](std::int64_t id, nlohmann::json& into, int type_id) {
        const std::string& text = v.tokens[std::size_t(id)];
        into.push_back({{"SpecialToken", {{"id", text}, {"type_id", type_id}}}});
        specials[text] = {{"id", text}, {"ids", {id}}, {"tokens", {text}}};
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

// Byte-level BPE ("gpt2").
inline nlohmann::json gguf_byte_level_json(const io::GgufFile& f, const GgufVocabulary& v, const std::string& file) {
    const io::GgufValue* merges_v = f.find("tokenizer.ggml.merges");
    DEVIANT_REQUIRE(merges_v && merges_v->as_array(), "{}: tokenizer.ggml.merges is missing or not an array", file);
    nlohmann::json vocab, added, merges = nlohmann::json::array();
    gguf_vocab_json(v, file, /*unknown_is_added=*/false, vocab, added);
    for (std::size_t i = 0; i < merges_v->as_array()->size(); ++i) {
        const std::string* m = (*merges_v->as_array())[i].as_string();
        DEVIANT_REQUIRE(m, "{}: tokenizer.ggml.merges[{}] is not a string", file, i);
        merges.push_back(*m);
    }
    const std::string pre = f.find("tokenizer.ggml.pre") ? f.get_string("tokenizer.ggml.pre") : "default";
    const GgufPreTokenizer* row = find_gguf_pre_tokenizer(pre);
    if (!row)
        fail("{}: tokenizer.ggml.pre is '{}', a pre-tokenizer this reader does not know ({}); give --tokenizer tokenizer.json", file, pre,
             gguf_pre_tokenizer_names());
    nlohmann::json j{{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}, {"ignore_merges", row->ignore_merges}}},
                     {"added_tokens", added},
                     {"pre_tokenizer", gguf_pre_tokenizer_json(*row)},
                     {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}}};
    gguf_post_processor(j, v, row->adds_bos ? gguf_token_id(f, v, "tokenizer.ggml.bos_token_id") : std::nullopt,
                        gguf_flag(f, "tokenizer.ggml.add_bos_token", row->add_bos_by_default), gguf_token_id(f, v, "tokenizer.ggml.eos_token_id"),
                        gguf_flag(f, "tokenizer.ggml.add_eos_token", false));
    return j;
}

// SentencePiece BPE ("llama").
inline nlohmann::json gguf_sentencepiece_json(const io::GgufFile& f, const GgufVocabulary& v, const std::string& file) {
    const io::GgufValue* scores_v = f.find("tokenizer.ggml.scores");
    DEVIANT_REQUIRE(scores_v && scores_v->as_array(), "{}: tokenizer.ggml.scores is missing or not an array (a SentencePiece "
                    "vocabulary ranks its merges by score)", file);
    const auto& score_values = *scores_v->as_array();
    DEVIANT_REQUIRE(score_values.size() == v.tokens.size(), "{}: tokenizer.ggml.scores has {} entries for {} tokens", file,
                    score_values.size(), v.tokens.size());
    std::vector<double> scores(v.tokens.size());
    for (std::size_t id = 0; id < scores.size(); ++id) {
        const auto s = score_values[id].as_number();
        DEVIANT_REQUIRE(s, "{}: tokenizer.ggml.scores[{}] is not a number", file, id);
        scores[id] = *s;
    }
    nlohmann::json vocab, added;
    gguf_vocab_json(v, file, /*unknown_is_added=*/true, vocab, added);

    // merges: every split of a normal piece into two normal pieces; pieces by score (highest
    // first, then id), splits left to right
    std::unordered_map<std::string_view, std::size_t> normal;
    std::vector<std::size_t> order;
    for (std::size_t id = 0; id < v.tokens.size(); ++id)
        if (v.types[id] == kTokenNormal) {
            normal.emplace(v.tokens[id], id);
            order.push_back(id);
        }
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return scores[a] > scores[b]; });
    nlohmann::json merges = nlohmann::json::array();
    for (std::size_t id : order) {
        const std::string_view piece = v.tokens[id];
        const std::vector<std::size_t> cuts = text::utf8_boundaries(piece);
        for (std::size_t k = 1; k + 1 < cuts.size(); ++k) {
            const std::string_view left = piece.substr(0, cuts[k]), right = piece.substr(cuts[k]);
            if (normal.count(left) && normal.count(right)) merges.push_back(nlohmann::json::array({left, right}));
        }
    }

    const auto first_unknown = std::find(v.types.begin(), v.types.end(), kTokenUnknown);
    const auto unk = gguf_token_id(f, v, "tokenizer.ggml.unknown_token_id",
                                   first_unknown == v.types.end() ? std::nullopt : std::optional<std::int64_t>(first_unknown - v.types.begin()));
    const bool byte_fallback = std::find(v.types.begin(), v.types.end(), kTokenByte) != v.types.end();
    nlohmann::json model{{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}, {"fuse_unk", true}, {"byte_fallback", byte_fallback}};
    if (unk) model["unk_token"] = v.tokens[std::size_t(*unk)];

    // spaces -> "▁", and "▁" before each stretch of text between added tokens (llama.cpp and
    // SentencePiece's dummy prefix); decoding undoes both
    const bool space_prefix = gguf_flag(f, "tokenizer.ggml.add_space_prefix", true);
    const std::string space(kMetaspaceReplacement);
    nlohmann::json normalizers = nlohmann::json::array();
    if (space_prefix) normalizers.push_back({{"type", "Prepend"}, {"prepend", space}});
    normalizers.push_back({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", space}});
    nlohmann::json decoders = nlohmann::json::array({{{"type", "Replace"}, {"pattern", {{"String", space}}}, {"content", " "}},
                                                     {{"type", "ByteFallback"}},
                                                     {{"type", "Fuse"}}});
    if (space_prefix) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});

    nlohmann::json j{{"model", model},
                     {"added_tokens", added},
                     {"normalizer", {{"type", "Sequence"}, {"normalizers", normalizers}}},
                     {"pre_tokenizer", nullptr},
                     {"decoder", {{"type", "Sequence"}, {"decoders", decoders}}}};
    gguf_post_processor(j, v, gguf_token_id(f, v, "tokenizer.ggml.bos_token_id", 1), gguf_flag(f, "tokenizer.ggml.add_bos_token", true),
                        gguf_token_id(f, v, "tokenizer.ggml.eos_token_id", 2), gguf_flag(f, "tokenizer.ggml.add_eos_token", false));
    return j;
}

}  // namespace detail

// The tokenizer.json equivalent of a GGUF file's tokenizer (what tokenizer_from_gguf reads, and
// what a run started from a GGUF file saves beside its trained weights).
inline nlohmann::json gguf_tokenizer_json(const io::GgufFile& f) {
    const std::string file = f.path().string();
    const std::string model = f.get_string("tokenizer.ggml.model");
    DEVIANT_REQUIRE(model == "gpt2" || model == "llama",
                    "{}: tokenizer.ggml.model is '{}'; byte-level BPE ('gpt2') and SentencePiece BPE ('llama') tokenizers are read "
                    "from GGUF, give --tokenizer tokenizer.json for others", file, model);
    const detail::GgufVocabulary v = detail::read_gguf_vocabulary(f, file);
    return model == "gpt2" ? detail::gguf_byte_level_json(f, v, file) : detail::gguf_sentencepiece_json(f, v, file);
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
