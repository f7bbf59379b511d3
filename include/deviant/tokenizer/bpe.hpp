// deviant/tokenizer/bpe.hpp — BPE tokenizer compatible with Hugging Face tokenizer.json: byte-level
// vocabularies (GPT-2, Llama-3, Qwen2, SmolLM style) and SentencePiece-style ones with "▁" for
// spaces and <0xNN> byte fallback (Llama-2, Mistral-7B, TinyLlama).
// Why: training and evaluation need the exact token ids the reference `tokenizers` library gives.
//
// Layout: BpeVocabulary (tokens, merges, added tokens, model flags) and BpePipeline (normalizer,
// pre-tokenizer and decoder steps, the special tokens a post-processor adds) are plain data that
// any source can fill — tokenizer.json here, a GGUF file in gguf_tokenizer.hpp; BpeTokenizer holds
// the algorithm.
//
// encode(text): (1) invalid UTF-8 is replaced like bytes.decode("utf-8", "replace");
// (2) non-normalized added tokens are matched leftmost-longest in the text (honouring
// lstrip/rstrip/single_word); (3) the text between them goes through the normalizer steps
// (Prepend, Replace, Strip; NFC/NFD/NFKC/NFKD when built with utf8proc), then normalized added
// tokens are matched in the result; (4) each remaining segment goes through the pre-tokenizer
// steps (Split regex/string — empty regex matches split too, Digits, ByteLevel with GPT-2 regex
// and byte mapping, Metaspace: spaces -> "▁", a "▁" prefix always / on the text's first segment /
// never, optional split before each "▁"); (5) each pre-token is looked up whole when
// ignore_merges is set, else split into characters (unknown ones -> <0xNN> byte tokens with
// byte_fallback, else unk) and merged by rank lowest-first, leftmost on ties, as `tokenizers`
// does; results are cached per pre-token. (6) with add_special_tokens the post-processor's
// prefix (BOS) / suffix (EOS) is added — but not when the ids already start with the prefix / end
// with the suffix (no doubled BOS/EOS; the reference would double them).
// decode(ids): added tokens by content, the rest by vocab; decoder steps ByteLevel (lossy UTF-8),
// ByteFallback, Fuse, Replace, Strip, Metaspace; without a decoder tokens are joined by spaces
// (as `tokenizers` does).
// Not supported (load fails with a message naming the field): other normalizers (Precompiled,
// Lowercase, BertNormalizer, ...), Whitespace/Bert/Punctuation pre-tokenizers, WordPiece/Unigram
// models, other decoders and post-processors.
#pragma once
#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <queue>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "deviant/core/error.hpp"
#include "deviant/tokenizer/regex.hpp"
#include "deviant/tokenizer/utf8.hpp"

#if defined(DEVIANT_WITH_UTF8PROC)
#include <utf8proc.h>
#endif

namespace deviant {

using TokenId = std::int32_t;

// GPT-2 pre-tokenizer regex (implied by ByteLevel with use_regex=true).
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Llama-3 pre-tokenizer regex.
inline constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

struct AddedToken {
    std::string content;
    TokenId id = 0;
    bool special = true;       // skipped by decode(..., skip_special=true)
    bool lstrip = false;       // the match absorbs white space on its left
    bool rstrip = false;       // ... and on its right
    bool single_word = false;  // only matched when not inside a word
    bool normalized = false;   // matched in a second pass (after the non-normalized tokens)
};

// A stretch of text: an added token's match (added_id set) or the text between matches.
struct AddedTokenSegment {
    std::size_t begin, end;           // byte range in the text it came from
    std::optional<TokenId> added_id;  // an added token's match
};

namespace detail {
inline bool is_space_byte(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
inline bool is_word_byte(char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x80 || std::isalnum(u) || c == '_';
}
}  // namespace detail

// Splits text at the matches of added tokens, as the reference tokenizers do: at each position the
// first of candidates(byte) (indices into `tokens`, in priority order) whose content matches is
// taken, honouring single_word, lstrip and rstrip; the rest stays between the matches. Shared by
// the BPE and WordPiece tokenizers.
template <class Candidates>
std::vector<AddedTokenSegment> split_at_added_tokens(std::string_view text, const std::vector<AddedToken>& tokens, Candidates&& candidates) {
    std::vector<AddedTokenSegment> segs;
    std::size_t cursor = 0, pos = 0;
    while (pos < text.size()) {
        const AddedToken* hit = nullptr;
        for (std::size_t idx : candidates(static_cast<unsigned char>(text[pos]))) {
            const AddedToken& t = tokens[idx];
            if (t.content.size() <= text.size() - pos && text.compare(pos, t.content.size(), t.content) == 0) {
                hit = &t;
                break;
            }
        }
        if (!hit) {
            ++pos;
            continue;
        }
        std::size_t b = pos, e = pos + hit->content.size();
        if (hit->single_word && ((b > 0 && detail::is_word_byte(text[b - 1])) || (e < text.size() && detail::is_word_byte(text[e])))) {
            pos = e;
            continue;
        }
        if (hit->lstrip)
            while (b > cursor && detail::is_space_byte(text[b - 1])) --b;
        if (hit->rstrip)
            while (e < text.size() && detail::is_space_byte(text[e])) ++e;
        if (b > cursor) segs.push_back({cursor, b, std::nullopt});
        segs.push_back({b, e, hit->id});
        cursor = pos = e;
    }
    if (cursor < text.size()) segs.push_back({cursor, text.size(), std::nullopt});
    return segs;
}

struct BpeVocabulary {
    std::vector<std::string> id_to_token;  // "" marks an unused id
    std::unordered_map<std::string, TokenId> token_to_id;
    std::vector<std::pair<std::string, std::string>> merges;  // rank = index
    std::vector<AddedToken> added_tokens;
    std::optional<std::string> unk_token;
    bool fuse_unk = false;
    bool byte_fallback = false;  // unknown characters -> <0xNN> tokens when the vocab has them
    bool ignore_merges = false;  // a pre-token found whole in the vocab is one token (Llama-3)
    std::string continuing_subword_prefix, end_of_word_suffix;
    std::optional<TokenId> bos_id, eos_id;

    void add_token(std::string token, TokenId id) {
        DEVIANT_REQUIRE(id >= 0, "BpeVocabulary: negative id {} for token '{}'", id, token);
        if (static_cast<std::size_t>(id) >= id_to_token.size()) id_to_token.resize(static_cast<std::size_t>(id) + 1);
        id_to_token[static_cast<std::size_t>(id)] = token;
        token_to_id[std::move(token)] = id;
    }
    std::optional<TokenId> find(std::string_view token) const {
        auto it = token_to_id.find(std::string(token));
        if (it == token_to_id.end()) return std::nullopt;
        return it->second;
    }
};

enum class SplitBehavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

// Where Metaspace puts its "▁" prefix: on every segment, on the text's first segment only (not
// after a leading added token), or nowhere.
enum class PrependScheme { always, first, never };

inline constexpr std::string_view kMetaspaceReplacement = "\xE2\x96\x81";  // U+2581 "▁"

// One normalizer step, applied to the text between non-normalized added tokens.
struct NormalizerStep {
    enum class Kind { prepend, replace, strip, nfc, nfd, nfkc, nfkd };
    Kind kind = Kind::prepend;
    std::string pattern;            // replace: what is replaced (a literal, or a regex)
    bool pattern_is_regex = false;
    std::string content;            // prepend: the prefix; replace: the replacement
    bool strip_left = false, strip_right = false;  // strip: white space on either side

    static NormalizerStep prepend(std::string_view prefix) {
        NormalizerStep s;
        s.content = std::string(prefix);
        return s;
    }
    static NormalizerStep replace(std::string_view pattern, std::string_view content, bool regex = false) {
        NormalizerStep s;
        s.kind = Kind::replace;
        s.pattern = std::string(pattern);
        s.pattern_is_regex = regex;
        s.content = std::string(content);
        return s;
    }
    static NormalizerStep strip(bool left, bool right) {
        NormalizerStep s;
        s.kind = Kind::strip;
        s.strip_left = left;
        s.strip_right = right;
        return s;
    }
    static NormalizerStep unicode(Kind form) {  // nfc, nfd, nfkc or nfkd
        NormalizerStep s;
        s.kind = form;
        return s;
    }
};

struct PreTokenizerStep {
    enum class Kind { split, byte_level, metaspace };
    Kind kind = Kind::split;
    // split
    std::string pattern;
    bool pattern_is_regex = true;
    SplitBehavior behavior = SplitBehavior::isolated;
    bool invert = false;
    // byte_level
    bool add_prefix_space = false;
    bool use_regex = true;
    // metaspace
    std::string replacement{kMetaspaceReplacement};
    PrependScheme prepend_scheme = PrependScheme::always;
    bool split_on_replacement = true;

    static PreTokenizerStep split_regex(std::string_view re, SplitBehavior b = SplitBehavior::isolated, bool inv = false) {
        PreTokenizerStep s;
        s.pattern = std::string(re);
        s.behavior = b;
        s.invert = inv;
        return s;
    }
    static PreTokenizerStep split_string(std::string_view literal, SplitBehavior b, bool inv = false) {
        PreTokenizerStep s = split_regex(literal, b, inv);
        s.pattern_is_regex = false;
        return s;
    }
    static PreTokenizerStep byte_level(bool prefix_space = false, bool regex = true) {
        PreTokenizerStep s;
        s.kind = Kind::byte_level;
        s.add_prefix_space = prefix_space;
        s.use_regex = regex;
        return s;
    }
    static PreTokenizerStep metaspace(PrependScheme scheme = PrependScheme::always, bool split = true,
                                      std::string_view replacement = kMetaspaceReplacement) {
        PreTokenizerStep s;
        s.kind = Kind::metaspace;
        s.prepend_scheme = scheme;
        s.split_on_replacement = split;
        s.replacement = std::string(replacement);
        return s;
    }
};

// One decoder step, applied to the list of token strings. Built from its kind alone for the steps
// without parameters: {DecoderStep::byte_level}.
struct DecoderStep {
    enum Kind { byte_level, byte_fallback, fuse, replace, strip, metaspace };
    Kind kind = byte_level;
    std::string pattern;            // replace: what is replaced (a literal, or a regex)
    bool pattern_is_regex = false;
    std::string content;            // replace: the replacement; strip: the character stripped
    std::size_t strip_start = 0, strip_stop = 0;  // strip: at most this many from each end
    std::string replacement{kMetaspaceReplacement};          // metaspace
    PrependScheme prepend_scheme = PrependScheme::always;    // metaspace: never keeps the first token's

    DecoderStep(Kind k = byte_level) : kind(k) {}  // NOLINT: implicit on purpose
    static DecoderStep replace_text(std::string_view pattern, std::string_view content, bool regex = false) {
        DecoderStep s(replace);
        s.pattern = std::string(pattern);
        s.pattern_is_regex = regex;
        s.content = std::string(content);
        return s;
    }
    static DecoderStep strip_char(std::string_view character, std::size_t start, std::size_t stop) {
        DecoderStep s(strip);
        s.content = std::string(character);
        s.strip_start = start;
        s.strip_stop = stop;
        return s;
    }
    static DecoderStep metaspace_of(PrependScheme scheme, std::string_view replacement = kMetaspaceReplacement) {
        DecoderStep s(metaspace);
        s.prepend_scheme = scheme;
        s.replacement = std::string(replacement);
        return s;
    }
};

struct BpePipeline {
    std::vector<PreTokenizerStep> pre_tokenizer;
    std::vector<DecoderStep> decoder;    // empty: tokens joined by " "
    std::vector<TokenId> prefix_tokens;  // added by encode(..., add_special_tokens=true), e.g. BOS
    std::vector<TokenId> suffix_tokens;  // e.g. EOS
    std::vector<NormalizerStep> normalizer;

    static BpePipeline gpt2() { return {{PreTokenizerStep::byte_level(false, true)}, {DecoderStep::byte_level}, {}, {}, {}}; }
    static BpePipeline llama3(TokenId bos) {
        return {{PreTokenizerStep::split_regex(kLlama3Pattern), PreTokenizerStep::byte_level(false, false)},
                {DecoderStep::byte_level},
                {bos},
                {},
                {}};
    }
};

class BpeTokenizer {
public:
    BpeTokenizer(BpeVocabulary vocab, BpePipeline pipeline) : vocab_(std::move(vocab)), pipeline_(std::move(pipeline)) {
        build();
    }

    // Reads a Hugging Face tokenizer.json; a tokenizer_config.json beside it (when present) names
    // bos_token / eos_token. Throws deviant::Error naming the file and the field on bad input.
    static BpeTokenizer from_json_file(const std::filesystem::path& path);
    static BpeTokenizer from_json(const nlohmann::json& j, const std::string& origin = "tokenizer.json");

    std::vector<TokenId> encode(std::string_view text, bool add_special_tokens = true) const {
        std::string valid_storage;
        if (!text::is_valid_utf8(text)) {
            valid_storage = text::utf8_make_valid(text);
            text = valid_storage;
        }
        std::vector<TokenId> ids;
        for (const Segment& seg : split_added_tokens(text, 0)) {
            if (seg.added_id) {
                ids.push_back(*seg.added_id);
                continue;
            }
            std::string normalized_storage;
            std::string_view normalized = text.substr(seg.begin, seg.end - seg.begin);
            if (!pipeline_.normalizer.empty()) normalized = normalized_storage = normalize(normalized);
            for (const Segment& sub : split_added_tokens(normalized, 1)) {
                if (sub.added_id) {
                    ids.push_back(*sub.added_id);
                    continue;
                }
                const bool at_text_start = seg.begin == 0 && sub.begin == 0;
                for (const std::string& piece : pre_tokenize(normalized.substr(sub.begin, sub.end - sub.begin), at_text_start))
                    tokenize_piece(piece, ids);
            }
        }
        if (add_special_tokens) {
            const auto& pre = pipeline_.prefix_tokens;
            const auto& suf = pipeline_.suffix_tokens;
            if (!pre.empty() && !(ids.size() >= pre.size() && std::equal(pre.begin(), pre.end(), ids.begin())))
                ids.insert(ids.begin(), pre.begin(), pre.end());
            if (!suf.empty() && !(ids.size() >= pre.size() + suf.size() && std::equal(suf.rbegin(), suf.rend(), ids.rbegin())))
                ids.insert(ids.end(), suf.begin(), suf.end());
        }
        return ids;
    }

    std::string decode(const std::vector<TokenId>& ids, bool skip_special = false) const {
        std::vector<std::string> tokens;
        tokens.reserve(ids.size());
        for (TokenId id : ids) {
            DEVIANT_REQUIRE(id >= 0 && static_cast<std::size_t>(id) < id_to_piece_.size() && !id_to_piece_[id].empty(),
                            "BpeTokenizer::decode: unknown token id {} (vocabulary size {})", id, id_to_piece_.size());
            if (skip_special && is_special_[id]) continue;
            tokens.push_back(id_to_piece_[id]);
        }
        for (std::size_t k = 0; k < pipeline_.decoder.size(); ++k) {
            const DecoderStep& step = pipeline_.decoder[k];
            switch (step.kind) {
                case DecoderStep::byte_level: tokens = {decode_byte_level(tokens)}; break;
                case DecoderStep::byte_fallback: tokens = decode_byte_fallback(tokens); break;
                case DecoderStep::fuse: tokens = {join(tokens, "")}; break;
                case DecoderStep::replace:
                    for (std::string& t : tokens) t = replace_all(t, step.pattern, step.content, decoder_regexes_[k].get());
                    break;
                case DecoderStep::strip:
                    for (std::string& t : tokens) t = strip_repeated(t, step.content, step.strip_start, step.strip_stop);
                    break;
                case DecoderStep::metaspace:
                    // the first token loses its "▁" (the prefix the pre-tokenizer added), the others turn it into " "
                    for (std::size_t i = 0; i < tokens.size(); ++i)
                        tokens[i] = replace_all(tokens[i], step.replacement,
                                                i == 0 && step.prepend_scheme != PrependScheme::never ? "" : " ", nullptr);
                    break;
            }
        }
        return join(tokens, pipeline_.decoder.empty() ? " " : "");
    }

    // The pieces the BPE model sees for text with no added tokens in it: the normalizer's and the
    // pre-tokenizer's output (byte-level pieces in their byte-to-unicode form).
    std::vector<std::string> pre_tokens(std::string_view text) const {
        const std::string valid = text::is_valid_utf8(text) ? std::string(text) : text::utf8_make_valid(text);
        return pre_tokenize(pipeline_.normalizer.empty() ? valid : normalize(valid), true);
    }

    std::optional<TokenId> bos_id() const { return vocab_.bos_id; }
    std::optional<TokenId> eos_id() const { return vocab_.eos_id; }
    std::optional<TokenId> token_to_id(std::string_view token) const {
        for (const AddedToken& t : vocab_.added_tokens)
            if (t.content == token) return t.id;
        return vocab_.find(token);
    }
    // Token string of an id (added-token content or vocab entry; byte-level form for the vocab).
    const std::string& id_to_token(TokenId id) const {
        DEVIANT_REQUIRE(id >= 0 && static_cast<std::size_t>(id) < id_to_piece_.size() && !id_to_piece_[id].empty(),
                        "BpeTokenizer: unknown token id {}", id);
        return id_to_piece_[id];
    }
    bool is_special(TokenId id) const { return id >= 0 && static_cast<std::size_t>(id) < is_special_.size() && is_special_[id]; }
    std::size_t vocab_size() const { return id_to_piece_.size(); }
    const BpeVocabulary& vocabulary() const { return vocab_; }
    const BpePipeline& pipeline() const { return pipeline_; }

private:
    using Segment = AddedTokenSegment;
    struct CompiledStep {
        PreTokenizerStep step;
        std::shared_ptr<const text::Regex> regex;  // null for string patterns / byte_level without regex
    };
    struct Cache {
        std::mutex mutex;
        std::unordered_map<std::string, std::vector<TokenId>> words;
    };
    static constexpr std::size_t kCacheCapacity = 10000;
    static constexpr std::size_t kCacheMaxWordBytes = 256;

    static std::uint64_t pair_key(TokenId a, TokenId b) {
        return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
    }

    void build() {
        // merges -> (rank, new id)
        merges_.reserve(vocab_.merges.size());
        for (std::size_t rank = 0; rank < vocab_.merges.size(); ++rank) {
            const auto& [a, b] = vocab_.merges[rank];
            const auto ia = vocab_.find(a), ib = vocab_.find(b), ic = vocab_.find(a + b);
            DEVIANT_REQUIRE(ia && ib && ic, "BpeVocabulary: merge {} '{} {}' uses a token missing from the vocabulary",
                            rank, a, b);
            merges_.try_emplace(pair_key(*ia, *ib), static_cast<int>(rank), *ic);
        }
        if (vocab_.unk_token) {
            unk_id_ = vocab_.find(*vocab_.unk_token);
            DEVIANT_REQUIRE(unk_id_.has_value(), "BpeVocabulary: unk_token '{}' is not in the vocabulary", *vocab_.unk_token);
        }
        if (vocab_.byte_fallback) {
            for (int b = 0; b < 256; ++b) byte_tokens_[b] = vocab_.find(fmt::format("<0x{:02X}>", b));
        }
        // id -> printable piece (added tokens override the vocab), specialness
        id_to_piece_ = vocab_.id_to_token;
        for (const AddedToken& t : vocab_.added_tokens) {
            DEVIANT_REQUIRE(t.id >= 0 && !t.content.empty(), "BpeVocabulary: added token '{}' has bad id {}", t.content, t.id);
            if (static_cast<std::size_t>(t.id) >= id_to_piece_.size()) id_to_piece_.resize(static_cast<std::size_t>(t.id) + 1);
            id_to_piece_[t.id] = t.content;
        }
        is_special_.assign(id_to_piece_.size(), false);
        for (const AddedToken& t : vocab_.added_tokens) is_special_[t.id] = t.special;
        // added tokens grouped by first byte, longest first (leftmost-longest matching)
        for (int pass = 0; pass < 2; ++pass) {
            for (std::size_t i = 0; i < vocab_.added_tokens.size(); ++i)
                if (vocab_.added_tokens[i].normalized == (pass == 1))
                    added_by_first_byte_[pass][static_cast<unsigned char>(vocab_.added_tokens[i].content[0])].push_back(i);
            for (auto& list : added_by_first_byte_[pass])
                std::stable_sort(list.begin(), list.end(), [&](std::size_t x, std::size_t y) {
                    return vocab_.added_tokens[x].content.size() > vocab_.added_tokens[y].content.size();
                });
        }
        // pre-tokenizer regexes
        for (const PreTokenizerStep& s : pipeline_.pre_tokenizer) {
            CompiledStep c{s, nullptr};
            if (s.kind == PreTokenizerStep::Kind::split && s.pattern_is_regex)
                c.regex = std::make_shared<text::Regex>(s.pattern);
            else if (s.kind == PreTokenizerStep::Kind::byte_level && s.use_regex)
                c.regex = std::make_shared<text::Regex>(kGpt2Pattern);
            DEVIANT_REQUIRE(s.kind != PreTokenizerStep::Kind::split || !s.pattern.empty(), "BpePipeline: empty Split pattern");
            DEVIANT_REQUIRE(s.kind != PreTokenizerStep::Kind::metaspace || text::utf8_length(s.replacement) == 1,
                            "BpePipeline: Metaspace replacement '{}' is not one character", s.replacement);
            steps_.push_back(std::move(c));
        }
        // normalizer and decoder regexes (null where the pattern is a literal)
        for (const NormalizerStep& n : pipeline_.normalizer) {
            DEVIANT_REQUIRE(n.kind != NormalizerStep::Kind::replace || !n.pattern.empty(), "BpePipeline: empty Replace pattern");
#if !defined(DEVIANT_WITH_UTF8PROC)
            DEVIANT_REQUIRE(n.kind == NormalizerStep::Kind::prepend || n.kind == NormalizerStep::Kind::replace ||
                                n.kind == NormalizerStep::Kind::strip,
                            "BpePipeline: Unicode normalization forms need utf8proc (build with DEVIANT_WITH_UTF8PROC)");
#endif
            normalizer_regexes_.push_back(n.kind == NormalizerStep::Kind::replace && n.pattern_is_regex
                                              ? std::make_shared<text::Regex>(n.pattern)
                                              : nullptr);
        }
        for (const DecoderStep& d : pipeline_.decoder) {
            DEVIANT_REQUIRE(d.kind != DecoderStep::replace || !d.pattern.empty(), "BpePipeline: empty Replace decoder pattern");
            DEVIANT_REQUIRE(d.kind != DecoderStep::strip || text::utf8_length(d.content) == 1,
                            "BpePipeline: Strip decoder content '{}' is not one character", d.content);
            decoder_regexes_.push_back(d.kind == DecoderStep::replace && d.pattern_is_regex ? std::make_shared<text::Regex>(d.pattern)
                                                                                            : nullptr);
        }
        for (TokenId id : pipeline_.prefix_tokens) check_id(id, "prefix (BOS) token");
        for (TokenId id : pipeline_.suffix_tokens) check_id(id, "suffix (EOS) token");
        if (vocab_.bos_id) check_id(*vocab_.bos_id, "bos_id");
        if (vocab_.eos_id) check_id(*vocab_.eos_id, "eos_id");
        cache_ = std::make_shared<Cache>();
    }

    void check_id(TokenId id, const char* what) const {
        DEVIANT_REQUIRE(id >= 0 && static_cast<std::size_t>(id) < id_to_piece_.size() && !id_to_piece_[id].empty(),
                        "BpeTokenizer: {} id {} is not in the vocabulary", what, id);
    }


    // Splits text into the matches of one group of added tokens (pass 0: non-normalized ones, on
    // the raw text; pass 1: normalized ones, on the normalized text) and the text between them.
    std::vector<Segment> split_added_tokens(std::string_view text, int pass) const {
        return split_at_added_tokens(text, vocab_.added_tokens, [&](unsigned char first) -> const auto& { return added_by_first_byte_[pass][first]; });
    }

    // The normalizer steps applied to one stretch of text between non-normalized added tokens.
    std::string normalize(std::string_view segment) const {
        std::string s(segment);
        for (std::size_t k = 0; k < pipeline_.normalizer.size() && !s.empty(); ++k) {
            const NormalizerStep& n = pipeline_.normalizer[k];
            switch (n.kind) {
                case NormalizerStep::Kind::prepend: s.insert(0, n.content); break;
                case NormalizerStep::Kind::replace: s = replace_all(s, n.pattern, n.content, normalizer_regexes_[k].get()); break;
                case NormalizerStep::Kind::strip: s = text::strip_white_space(s, n.strip_left, n.strip_right); break;
                default: s = unicode_normalize(s, n.kind); break;
            }
        }
        return s;
    }

    static std::string unicode_normalize([[maybe_unused]] const std::string& s, [[maybe_unused]] NormalizerStep::Kind form) {
#if defined(DEVIANT_WITH_UTF8PROC)
        int options = UTF8PROC_STABLE;
        switch (form) {
            case NormalizerStep::Kind::nfc: options |= UTF8PROC_COMPOSE; break;
            case NormalizerStep::Kind::nfd: options |= UTF8PROC_DECOMPOSE; break;
            case NormalizerStep::Kind::nfkc: options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
            default: options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
        }
        utf8proc_uint8_t* out = nullptr;
        const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), static_cast<utf8proc_ssize_t>(s.size()),
                                                &out, static_cast<utf8proc_option_t>(options));
        DEVIANT_REQUIRE(n >= 0, "BpeTokenizer: Unicode normalization failed: {}", utf8proc_errmsg(n));
        std::string result(reinterpret_cast<const char*>(out), static_cast<std::size_t>(n));
        std::free(out);
        return result;
#else
        fail("BpeTokenizer: Unicode normalization forms need utf8proc (build with DEVIANT_WITH_UTF8PROC)");
#endif
    }

    // Every occurrence of pattern (a literal, or the matches of regex when given) replaced by content.
    static std::string replace_all(const std::string& s, std::string_view pattern, std::string_view content, const text::Regex* regex) {
        std::string out;
        std::size_t prev = 0;
        const auto emit = [&](std::size_t b, std::size_t e) {
            out.append(s, prev, b - prev);
            out.append(content);
            prev = e;
        };
        if (regex) {
            for (auto [b, e] : regex->find_all(s)) emit(b, e);
        } else {
            for (std::size_t p = s.find(pattern); p != std::string::npos; p = s.find(pattern, p + pattern.size())) emit(p, p + pattern.size());
        }
        if (prev == 0 && out.empty()) return s;
        out.append(s, prev, std::string::npos);
        return out;
    }

    // Strip decoder: up to `start` leading and `stop` trailing copies of one character removed.
    static std::string strip_repeated(const std::string& s, std::string_view ch, std::size_t start, std::size_t stop) {
        std::size_t b = 0, e = s.size();
        for (std::size_t k = 0; k < start && s.compare(b, ch.size(), ch) == 0 && b < e; ++k) b += ch.size();
        for (std::size_t k = 0; k < stop && e >= b + ch.size() && s.compare(e - ch.size(), ch.size(), ch) == 0; ++k) e -= ch.size();
        return s.substr(b, e - b);
    }

    // A piece of text during pre-tokenization; at_text_start: it begins the text (Metaspace's
    // "first" prepend scheme).
    struct Piece {
        std::string text;
        bool at_text_start = false;
    };

    // Applies one Split to piece, appending the resulting pieces. Empty regex matches count, as in
    // `tokenizers`: with Isolated they split the text at their position.
    static void split_piece(const std::string& pattern, const text::Regex* regex, SplitBehavior behavior, bool invert,
                            const Piece& piece, std::vector<Piece>& out) {
        const std::string& s = piece.text;
        std::vector<std::pair<std::size_t, std::size_t>> found;
        if (regex) {
            found = regex->find_all(s, /*include_empty=*/true);
        } else {
            for (std::size_t p = s.find(pattern); p != std::string::npos; p = s.find(pattern, p + pattern.size()))
                found.emplace_back(p, p + pattern.size());
        }
        struct Part {
            std::size_t b, e;
            bool is_match;
        };
        std::vector<Part> parts;
        std::size_t prev = 0;
        for (auto [b, e] : found) {
            if (b > prev) parts.push_back({prev, b, invert});
            parts.push_back({b, e, !invert});
            prev = e;
        }
        if (prev < s.size()) parts.push_back({prev, s.size(), invert});
        std::vector<std::pair<std::size_t, std::size_t>> kept;
        switch (behavior) {
            case SplitBehavior::removed:
                for (const Part& p : parts)
                    if (!p.is_match) kept.emplace_back(p.b, p.e);
                break;
            case SplitBehavior::isolated:
                for (const Part& p : parts) kept.emplace_back(p.b, p.e);
                break;
            case SplitBehavior::merged_with_previous: {
                bool previous_match = false;
                for (const Part& p : parts) {
                    if (p.is_match && !previous_match && !kept.empty()) kept.back().second = p.e;
                    else kept.emplace_back(p.b, p.e);
                    previous_match = p.is_match;
                }
                break;
            }
            case SplitBehavior::merged_with_next: {
                bool previous_match = false;
                for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
                    if (it->is_match && !previous_match && !kept.empty()) kept.back().first = it->b;
                    else kept.emplace_back(it->b, it->e);
                    previous_match = it->is_match;
                }
                std::reverse(kept.begin(), kept.end());
                break;
            }
            case SplitBehavior::contiguous: {
                bool previous_match = false;
                for (const Part& p : parts) {
                    if (p.is_match == previous_match && !kept.empty()) kept.back().second = p.e;
                    else kept.emplace_back(p.b, p.e);
                    previous_match = p.is_match;
                }
                break;
            }
        }
        for (auto [b, e] : kept)
            if (e > b) out.push_back({s.substr(b, e - b), piece.at_text_start && b == 0});
    }

    std::vector<std::string> pre_tokenize(std::string_view segment, bool at_text_start) const {
        if (segment.empty()) return {};
        std::vector<Piece> pieces{{std::string(segment), at_text_start}};
        for (const CompiledStep& c : steps_) {
            const PreTokenizerStep& step = c.step;
            std::vector<Piece> next;
            for (Piece& piece : pieces) {
                switch (step.kind) {
                    case PreTokenizerStep::Kind::split:
                        split_piece(step.pattern, c.regex.get(), step.behavior, step.invert, piece, next);
                        break;
                    case PreTokenizerStep::Kind::byte_level: {
                        if (step.add_prefix_space && (piece.text.empty() || piece.text[0] != ' ')) piece.text.insert(piece.text.begin(), ' ');
                        std::vector<Piece> parts;
                        if (c.regex) split_piece({}, c.regex.get(), SplitBehavior::isolated, false, piece, parts);
                        else parts.push_back(std::move(piece));
                        for (Piece& p : parts) next.push_back({text::ByteLevelMap::get().encode(p.text), p.at_text_start});
                        break;
                    }
                    case PreTokenizerStep::Kind::metaspace: {
                        Piece replaced{replace_all(piece.text, " ", step.replacement, nullptr), piece.at_text_start};
                        const bool prepend = step.prepend_scheme == PrependScheme::always ||
                                             (step.prepend_scheme == PrependScheme::first && piece.at_text_start);
                        if (prepend && !replaced.text.starts_with(step.replacement)) replaced.text.insert(0, step.replacement);
                        if (step.split_on_replacement)
                            split_piece(step.replacement, nullptr, SplitBehavior::merged_with_next, false, replaced, next);
                        else
                            next.push_back(std::move(replaced));
                        break;
                    }
                }
            }
            pieces = std::move(next);
        }
        std::vector<std::string> out;
        out.reserve(pieces.size());
        for (Piece& p : pieces)
            if (!p.text.empty()) out.push_back(std::move(p.text));
        return out;  // NOLINT(performance-move-const-arg)
    }

    void tokenize_piece(const std::string& piece, std::vector<TokenId>& ids) const {
        if (vocab_.ignore_merges) {
            if (auto id = vocab_.find(piece)) {
                ids.push_back(*id);
                return;
            }
        }
        const bool cacheable = piece.size() < kCacheMaxWordBytes;
        if (cacheable) {
            std::lock_guard lock(cache_->mutex);
            auto it = cache_->words.find(piece);
            if (it != cache_->words.end()) {
                ids.insert(ids.end(), it->second.begin(), it->second.end());
                return;
            }
        }
        std::vector<TokenId> word = merge_word(piece);
        ids.insert(ids.end(), word.begin(), word.end());
        if (cacheable) {
            std::lock_guard lock(cache_->mutex);
            if (cache_->words.size() >= kCacheCapacity) cache_->words.clear();
            cache_->words.emplace(piece, std::move(word));
        }
    }

    // The BPE merge loop of `tokenizers` (word.rs merge_all): a min-heap of (rank, position).
    std::vector<TokenId> merge_word(const std::string& w) const {
        struct Symbol {
            TokenId id;
            int prev, next;
            bool alive;
        };
        std::vector<Symbol> symbols;
        std::optional<TokenId> pending_unk;
        const auto push = [&](TokenId id) {
            const int n = static_cast<int>(symbols.size());
            symbols.push_back({id, n - 1, n + 1, true});
        };
        for (std::size_t i = 0; i < w.size();) {
            std::size_t n = text::utf8_sequence_length(w, i);
            if (n == 0) n = 1;  // cannot happen for validated input; stay safe
            std::string s = w.substr(i, n);
            const bool first = i == 0, last = i + n >= w.size();
            if (!first) s = vocab_.continuing_subword_prefix + s;
            if (last) s += vocab_.end_of_word_suffix;
            i += n;
            if (auto id = vocab_.find(s)) {
                if (pending_unk) push(*pending_unk), pending_unk.reset();
                push(*id);
                continue;
            }
            if (vocab_.byte_fallback) {
                bool all = true;
                for (unsigned char b : s) all = all && byte_tokens_[b].has_value();
                if (all) {
                    for (unsigned char b : s) push(*byte_tokens_[b]);
                    continue;
                }
            }
            if (unk_id_) {
                if (pending_unk && !vocab_.fuse_unk) push(*pending_unk);
                pending_unk = unk_id_;
            }
        }
        if (pending_unk) push(*pending_unk);
        if (!symbols.empty()) symbols.back().next = -1;

        struct Merge {
            int rank, pos;
            TokenId new_id;
            bool operator>(const Merge& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
        };
        std::priority_queue<Merge, std::vector<Merge>, std::greater<Merge>> queue;
        const auto lookup = [&](TokenId a, TokenId b) -> const std::pair<int, TokenId>* {
            auto it = merges_.find(pair_key(a, b));
            return it == merges_.end() ? nullptr : &it->second;
        };
        for (std::size_t k = 0; k + 1 < symbols.size(); ++k)
            if (auto m = lookup(symbols[k].id, symbols[k + 1].id)) queue.push({m->first, static_cast<int>(k), m->second});
        while (!queue.empty()) {
            const Merge top = queue.top();
            queue.pop();
            Symbol& cur = symbols[top.pos];
            if (!cur.alive || cur.next == -1) continue;
            Symbol& right = symbols[cur.next];
            const auto m = lookup(cur.id, right.id);
            if (!m || m->second != top.new_id) continue;  // stale entry
            cur.id = top.new_id;
            right.alive = false;
            cur.next = right.next;
            if (cur.next != -1) symbols[cur.next].prev = top.pos;
            if (cur.prev >= 0)
                if (auto pm = lookup(symbols[cur.prev].id, cur.id)) queue.push({pm->first, cur.prev, pm->second});
            if (cur.next != -1)
                if (auto nm = lookup(cur.id, symbols[cur.next].id)) queue.push({nm->first, top.pos, nm->second});
        }
        std::vector<TokenId> out;
        for (const Symbol& s : symbols)
            if (s.alive) out.push_back(s.id);
        return out;
    }

    static std::string join(const std::vector<std::string>& parts, std::string_view sep) {
        std::string out;
        for (std::size_t i = 0; i < parts.size(); ++i) {
            if (i) out += sep;
            out += parts[i];
        }
        return out;
    }

    // ByteLevel decoder: byte images back to bytes (tokens with other chars kept as they are),
    // then invalid UTF-8 replaced by U+FFFD.
    static std::string decode_byte_level(const std::vector<std::string>& tokens) {
        std::string bytes;
        for (const std::string& t : tokens)
            if (!text::ByteLevelMap::get().decode(t, bytes)) bytes += t;
        return text::is_valid_utf8(bytes) ? bytes : text::utf8_make_valid(bytes);
    }

    // ByteFallback decoder: runs of <0xNN> tokens become bytes; an invalid run gives one U+FFFD per byte.
    static std::vector<std::string> decode_byte_fallback(const std::vector<std::string>& tokens) {
        std::vector<std::string> out;
        std::string run;
        std::size_t run_tokens = 0;
        const auto flush = [&] {
            if (!run_tokens) return;
            if (text::is_valid_utf8(run)) out.push_back(run);
            else
                for (std::size_t k = 0; k < run_tokens; ++k) out.emplace_back(text::kReplacementChar);
            run.clear();
            run_tokens = 0;
        };
        for (const std::string& t : tokens) {
            unsigned value = 0;
            const bool is_byte = t.size() == 6 && t.starts_with("<0x") && t.back() == '>' &&
                                 std::isxdigit(static_cast<unsigned char>(t[3])) && std::isxdigit(static_cast<unsigned char>(t[4])) &&
                                 (value = static_cast<unsigned>(std::stoul(t.substr(3, 2), nullptr, 16)), true);
            if (is_byte) {
                run.push_back(static_cast<char>(value));
                ++run_tokens;
            } else {
                flush();
                out.push_back(t);
            }
        }
        flush();
        return out;
    }

    BpeVocabulary vocab_;
    BpePipeline pipeline_;
    std::unordered_map<std::uint64_t, std::pair<int, TokenId>> merges_;
    std::optional<TokenId> unk_id_;
    std::array<std::optional<TokenId>, 256> byte_tokens_{};
    std::vector<std::string> id_to_piece_;
    std::vector<bool> is_special_;
    std::array<std::array<std::vector<std::size_t>, 256>, 2> added_by_first_byte_{};
    std::vector<CompiledStep> steps_;
    std::vector<std::shared_ptr<const text::Regex>> normalizer_regexes_, decoder_regexes_;  // by step; null for literals
    std::shared_ptr<Cache> cache_;  // shared by copies: same vocabulary, same results
};

// ---------------------------------------------------------------------------------------------
// tokenizer.json reader

namespace detail {

struct JsonContext {
    std::string origin;
    [[noreturn]] void error(std::string_view field, std::string_view what) const {
        fail("{}: field '{}': {}", origin, field, what);
    }
    const nlohmann::json& member(const nlohmann::json& obj, const char* key, const std::string& field) const {
        if (!obj.is_object()) error(field, "expected an object");
        auto it = obj.find(key);
        if (it == obj.end()) error(field + "." + key, "missing");
        return *it;
    }
    std::string string(const nlohmann::json& v, const std::string& field) const {
        if (!v.is_string()) error(field, fmt::format("expected a string, got {}", v.type_name()));
        return v.get<std::string>();
    }
    bool boolean(const nlohmann::json& obj, const char* key, bool def, const std::string& field) const {
        auto it = obj.find(key);
        if (it == obj.end() || it->is_null()) return def;
        if (!it->is_boolean()) error(field + "." + key, "expected a boolean");
        return it->get<bool>();
    }
    TokenId id(const nlohmann::json& v, const std::string& field) const {
        if (!v.is_number_integer() || v.get<std::int64_t>() < 0 || v.get<std::int64_t>() > INT32_MAX)
            error(field, "expected a non-negative integer id");
        return static_cast<TokenId>(v.get<std::int64_t>());
    }
    std::string type(const nlohmann::json& obj, const std::string& field) const {
        return string(member(obj, "type", field), field + ".type");
    }
};

// A Split/Replace pattern: {"Regex": ...} (checked to compile) or {"String": ...}; returns
// (pattern, is_regex).
inline std::pair<std::string, bool> parse_pattern(const JsonContext& cx, const nlohmann::json& pattern, const std::string& pf) {
    if (!pattern.is_object()) cx.error(pf, "expected {\"Regex\": ...} or {\"String\": ...}");
    if (pattern.contains("Regex")) {
        std::string re = cx.string(pattern["Regex"], pf + ".Regex");
        try {
            text::Regex check(re);
        } catch (const Error& e) {
            cx.error(pf + ".Regex", e.what());
        }
        return {std::move(re), true};
    }
    if (pattern.contains("String")) {
        std::string literal = cx.string(pattern["String"], pf + ".String");
        if (literal.empty()) cx.error(pf + ".String", "empty pattern");
        return {std::move(literal), false};
    }
    cx.error(pf, "expected {\"Regex\": ...} or {\"String\": ...}");
}

// A string member that must be one character (Metaspace replacement, Strip content).
inline std::string one_character(const JsonContext& cx, const nlohmann::json& obj, const char* key, std::string_view def,
                                 const std::string& field) {
    const auto it = obj.find(key);
    std::string c = it == obj.end() || it->is_null() ? std::string(def) : cx.string(*it, field + "." + key);
    if (!text::is_valid_utf8(c) || text::utf8_length(c) != 1) cx.error(field + "." + key, fmt::format("'{}' is not one character", c));
    return c;
}

// Metaspace's prepend_scheme, or the older add_prefix_space flag (true: always, false: never).
inline PrependScheme parse_prepend_scheme(const JsonContext& cx, const nlohmann::json& j, const std::string& field) {
    const auto it = j.find("prepend_scheme");
    if (it == j.end() || it->is_null()) return cx.boolean(j, "add_prefix_space", true, field) ? PrependScheme::always : PrependScheme::never;
    const std::string scheme = cx.string(*it, field + ".prepend_scheme");
    if (scheme == "always") return PrependScheme::always;
    if (scheme == "first") return PrependScheme::first;
    if (scheme == "never") return PrependScheme::never;
    cx.error(field + ".prepend_scheme", fmt::format("unknown scheme '{}' (always, first, never)", scheme));
}

inline void parse_normalizer(const JsonContext& cx, const nlohmann::json& j, const std::string& field,
                             std::vector<NormalizerStep>& steps) {
    if (j.is_null()) return;
    const std::string type = cx.type(j, field);
    if (type == "Sequence") {
        const auto& list = cx.member(j, "normalizers", field);
        if (!list.is_array()) cx.error(field + ".normalizers", "expected an array");
        for (std::size_t i = 0; i < list.size(); ++i) parse_normalizer(cx, list[i], fmt::format("{}.normalizers[{}]", field, i), steps);
    } else if (type == "Prepend") {
        steps.push_back(NormalizerStep::prepend(cx.string(cx.member(j, "prepend", field), field + ".prepend")));
    } else if (type == "Replace") {
        auto [pattern, regex] = parse_pattern(cx, cx.member(j, "pattern", field), field + ".pattern");
        steps.push_back(NormalizerStep::replace(pattern, cx.string(cx.member(j, "content", field), field + ".content"), regex));
    } else if (type == "Strip") {
        steps.push_back(NormalizerStep::strip(cx.boolean(j, "strip_left", true, field), cx.boolean(j, "strip_right", true, field)));
    } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
#if defined(DEVIANT_WITH_UTF8PROC)
        using K = NormalizerStep::Kind;
        steps.push_back(NormalizerStep::unicode(type == "NFC" ? K::nfc : type == "NFD" ? K::nfd : type == "NFKC" ? K::nfkc : K::nfkd));
#else
        cx.error(field + ".type", fmt::format("normalizer '{}' needs utf8proc (build with DEVIANT_WITH_UTF8PROC)", type));
#endif
    } else {
        cx.error(field + ".type", fmt::format("unsupported normalizer '{}' (Sequence, Prepend, Replace, Strip, NFC, NFD, NFKC, NFKD)", type));
    }
}

inline void parse_pre_tokenizer(const JsonContext& cx, const nlohmann::json& j, const std::string& field,
                                std::vector<PreTokenizerStep>& steps) {
    if (j.is_null()) return;
    const std::string type = cx.type(j, field);
    if (type == "Sequence") {
        const auto& list = cx.member(j, "pretokenizers", field);
        if (!list.is_array()) cx.error(field + ".pretokenizers", "expected an array");
        for (std::size_t i = 0; i < list.size(); ++i)
            parse_pre_tokenizer(cx, list[i], fmt::format("{}.pretokenizers[{}]", field, i), steps);
    } else if (type == "ByteLevel") {
        steps.push_back(PreTokenizerStep::byte_level(cx.boolean(j, "add_prefix_space", false, field),
                                                     cx.boolean(j, "use_regex", true, field)));
    } else if (type == "Split") {
        const std::string behavior = cx.string(cx.member(j, "behavior", field), field + ".behavior");
        SplitBehavior b;
        if (behavior == "Removed") b = SplitBehavior::removed;
        else if (behavior == "Isolated") b = SplitBehavior::isolated;
        else if (behavior == "MergedWithPrevious") b = SplitBehavior::merged_with_previous;
        else if (behavior == "MergedWithNext") b = SplitBehavior::merged_with_next;
        else if (behavior == "Contiguous") b = SplitBehavior::contiguous;
        else cx.error(field + ".behavior", fmt::format("unknown behavior '{}'", behavior));
        const bool invert = cx.boolean(j, "invert", false, field);
        auto [pattern, regex] = parse_pattern(cx, cx.member(j, "pattern", field), field + ".pattern");
        steps.push_back(regex ? PreTokenizerStep::split_regex(pattern, b, invert) : PreTokenizerStep::split_string(pattern, b, invert));
    } else if (type == "Metaspace") {
        steps.push_back(PreTokenizerStep::metaspace(parse_prepend_scheme(cx, j, field), cx.boolean(j, "split", true, field),
                                                    one_character(cx, j, "replacement", kMetaspaceReplacement, field)));
    } else if (type == "Digits") {
        const bool individual = cx.boolean(j, "individual_digits", false, field);
        steps.push_back(PreTokenizerStep::split_regex(individual ? R"(\p{N})" : R"(\p{N}+)"));
    } else {
        cx.error(field + ".type", fmt::format("unsupported pre-tokenizer '{}' (Sequence, Split, Digits, ByteLevel, Metaspace)", type));
    }
}

inline void parse_decoder(const JsonContext& cx, const nlohmann::json& j, const std::string& field,
                          std::vector<DecoderStep>& steps) {
    if (j.is_null()) return;
    const std::string type = cx.type(j, field);
    if (type == "Sequence") {
        const auto& list = cx.member(j, "decoders", field);
        if (!list.is_array()) cx.error(field + ".decoders", "expected an array");
        for (std::size_t i = 0; i < list.size(); ++i) parse_decoder(cx, list[i], fmt::format("{}.decoders[{}]", field, i), steps);
    } else if (type == "ByteLevel") {
        steps.push_back(DecoderStep::byte_level);
    } else if (type == "ByteFallback") {
        steps.push_back(DecoderStep::byte_fallback);
    } else if (type == "Fuse") {
        steps.push_back(DecoderStep::fuse);
    } else if (type == "Replace") {
        auto [pattern, regex] = parse_pattern(cx, cx.member(j, "pattern", field), field + ".pattern");
        steps.push_back(DecoderStep::replace_text(pattern, cx.string(cx.member(j, "content", field), field + ".content"), regex));
    } else if (type == "Strip") {
        const auto count = [&](const char* key) -> std::size_t {
            const auto& v = cx.member(j, key, field);
            if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<std::int64_t>() >= 0))
                cx.error(field + "." + key, "expected a non-negative integer");
            return v.get<std::size_t>();
        };
        steps.push_back(DecoderStep::strip_char(one_character(cx, j, "content", " ", field), count("start"), count("stop")));
    } else if (type == "Metaspace") {
        steps.push_back(DecoderStep::metaspace_of(parse_prepend_scheme(cx, j, field),
                                                  one_character(cx, j, "replacement", kMetaspaceReplacement, field)));
    } else {
        cx.error(field + ".type",
                 fmt::format("unsupported decoder '{}' (Sequence, ByteLevel, ByteFallback, Fuse, Replace, Strip, Metaspace)", type));
    }
}

inline void parse_post_processor(const JsonContext& cx, const nlohmann::json& j, const std::string& field,
                                 const BpeVocabulary& vocab, BpePipeline& p) {
    if (j.is_null()) return;
    const std::string type = cx.type(j, field);
    const auto lookup = [&](const std::string& token, const std::string& f) -> TokenId {
        for (const AddedToken& t : vocab.added_tokens)
            if (t.content == token) return t.id;
        if (auto id = vocab.find(token)) return *id;
        cx.error(f, fmt::format("token '{}' is not in the vocabulary", token));
    };
    if (type == "Sequence") {
        const auto& list = cx.member(j, "processors", field);
        if (!list.is_array()) cx.error(field + ".processors", "expected an array");
        for (std::size_t i = 0; i < list.size(); ++i)
            parse_post_processor(cx, list[i], fmt::format("{}.processors[{}]", field, i), vocab, p);
    } else if (type == "ByteLevel") {
        // offsets only
    } else if (type == "TemplateProcessing") {
        const auto& single = cx.member(j, "single", field);
        const auto& specials = cx.member(j, "special_tokens", field);
        if (!single.is_array()) cx.error(field + ".single", "expected an array");
        p.prefix_tokens.clear();
        p.suffix_tokens.clear();
        bool seen_sequence = false;
        for (std::size_t i = 0; i < single.size(); ++i) {
            const std::string f = fmt::format("{}.single[{}]", field, i);
            if (single[i].contains("Sequence")) {
                seen_sequence = true;
                continue;
            }
            if (!single[i].contains("SpecialToken")) cx.error(f, "expected Sequence or SpecialToken");
            const std::string name = cx.string(cx.member(single[i]["SpecialToken"], "id", f + ".SpecialToken"), f + ".SpecialToken.id");
            const std::string sf = fmt::format("{}.special_tokens.{}", field, name);
            const auto& ids = cx.member(cx.member(specials, name.c_str(), field + ".special_tokens"), "ids", sf);
            if (!ids.is_array()) cx.error(sf + ".ids", "expected an array");
            for (std::size_t k = 0; k < ids.size(); ++k)
                (seen_sequence ? p.suffix_tokens : p.prefix_tokens).push_back(cx.id(ids[k], fmt::format("{}.ids[{}]", sf, k)));
        }
        if (!seen_sequence) cx.error(field + ".single", "no $A sequence");
    } else if (type == "RobertaProcessing" || type == "BertProcessing") {
        for (const char* key : {"cls", "sep"}) {
            const auto& v = cx.member(j, key, field);
            const std::string f = field + "." + key;
            if (!v.is_array() || v.size() != 2) cx.error(f, "expected [token, id]");
            const TokenId id = cx.id(v[1], f + "[1]");
            (void)lookup(cx.string(v[0], f + "[0]"), f);
            (std::string_view(key) == "cls" ? p.prefix_tokens : p.suffix_tokens) = {id};
        }
    } else {
        cx.error(field + ".type", fmt::format("unsupported post-processor '{}'", type));
    }
}

inline std::optional<std::string> config_token(const nlohmann::json& cfg, const char* key) {
    auto it = cfg.find(key);
    if (it == cfg.end()) return std::nullopt;
    if (it->is_string()) return it->get<std::string>();
    if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
    return std::nullopt;
}

}  // namespace detail

inline BpeTokenizer BpeTokenizer::from_json(const nlohmann::json& j, const std::string& origin) {
    const detail::JsonContext cx{origin};
    if (!j.is_object()) cx.error("<root>", "expected an object");
    BpeVocabulary v;
    BpePipeline p;

    const auto& model = cx.member(j, "model", "<root>");
    if (!model.is_object()) cx.error("model", "expected an object");
    if (model.contains("type")) {
        const std::string type = cx.string(model["type"], "model.type");
        if (type != "BPE") cx.error("model.type", fmt::format("expected 'BPE', got '{}'", type));
    } else if (!model.contains("merges")) {
        cx.error("model.type", "missing");
    }
    const auto& vocab = cx.member(model, "vocab", "model");
    if (!vocab.is_object()) cx.error("model.vocab", "expected an object {token: id}");
    std::unordered_map<std::int64_t, std::string> owner;  // two tokens with one id would decode ambiguously
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
        const auto id = cx.id(it.value(), "model.vocab." + it.key());
        if (auto [o, fresh] = owner.emplace(std::int64_t(id), it.key()); !fresh)
            cx.error("model.vocab." + it.key(), fmt::format("id {} is also the id of token '{}'", std::int64_t(id), o->second));
        v.add_token(it.key(), id);
    }

    const auto& merges = cx.member(model, "merges", "model");
    if (!merges.is_array()) cx.error("model.merges", "expected an array");
    v.merges.reserve(merges.size());
    for (std::size_t i = 0; i < merges.size(); ++i) {
        const std::string f = fmt::format("model.merges[{}]", i);
        const auto& m = merges[i];
        std::string a, b;
        if (m.is_string()) {
            const std::string s = m.get<std::string>();
            const auto space = s.find(' ');
            if (space == std::string::npos) cx.error(f, fmt::format("merge '{}' is not two tokens separated by a space", s));
            a = s.substr(0, space);
            b = s.substr(space + 1);
        } else if (m.is_array() && m.size() == 2) {
            a = cx.string(m[0], f + "[0]");
            b = cx.string(m[1], f + "[1]");
        } else {
            cx.error(f, "expected \"a b\" or [a, b]");
        }
        if (!v.find(a) || !v.find(b) || !v.find(a + b))
            cx.error(f, fmt::format("merge '{} {}' uses a token missing from model.vocab", a, b));
        v.merges.emplace_back(std::move(a), std::move(b));
    }
    if (model.contains("unk_token") && !model["unk_token"].is_null()) {
        v.unk_token = cx.string(model["unk_token"], "model.unk_token");
        if (!v.find(*v.unk_token)) cx.error("model.unk_token", fmt::format("'{}' is not in model.vocab", *v.unk_token));
    }
    for (auto [key, dest] : {std::pair{"continuing_subword_prefix", &v.continuing_subword_prefix},
                             std::pair{"end_of_word_suffix", &v.end_of_word_suffix}})
        if (model.contains(key) && !model[key].is_null()) *dest = cx.string(model[key], std::string("model.") + key);
    v.fuse_unk = cx.boolean(model, "fuse_unk", false, "model");
    v.byte_fallback = cx.boolean(model, "byte_fallback", false, "model");
    v.ignore_merges = cx.boolean(model, "ignore_merges", false, "model");

    if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
        const auto& added = j["added_tokens"];
        if (!added.is_array()) cx.error("added_tokens", "expected an array");
        for (std::size_t i = 0; i < added.size(); ++i) {
            const std::string f = fmt::format("added_tokens[{}]", i);
            AddedToken t;
            t.id = cx.id(cx.member(added[i], "id", f), f + ".id");
            t.content = cx.string(cx.member(added[i], "content", f), f + ".content");
            if (t.content.empty()) cx.error(f + ".content", "empty token");
            t.special = cx.boolean(added[i], "special", false, f);
            t.lstrip = cx.boolean(added[i], "lstrip", false, f);
            t.rstrip = cx.boolean(added[i], "rstrip", false, f);
            t.single_word = cx.boolean(added[i], "single_word", false, f);
            t.normalized = cx.boolean(added[i], "normalized", !t.special, f);
            v.added_tokens.push_back(std::move(t));
        }
    }
    if (j.contains("normalizer")) detail::parse_normalizer(cx, j["normalizer"], "normalizer", p.normalizer);
    if (j.contains("pre_tokenizer")) detail::parse_pre_tokenizer(cx, j["pre_tokenizer"], "pre_tokenizer", p.pre_tokenizer);
    if (j.contains("decoder")) detail::parse_decoder(cx, j["decoder"], "decoder", p.decoder);
    if (j.contains("post_processor")) detail::parse_post_processor(cx, j["post_processor"], "post_processor", v, p);

    // BOS / EOS: the post-processor's tokens, else conventional special-token names.
    const auto special_named = [&](std::initializer_list<std::string_view> names) -> std::optional<TokenId> {
        for (std::string_view n : names)
            for (const AddedToken& t : v.added_tokens)
                if (t.content == n) return t.id;
        return std::nullopt;
    };
    v.bos_id = !p.prefix_tokens.empty() ? std::optional<TokenId>(p.prefix_tokens.front())
                                        : special_named({"<|begin_of_text|>", "<s>", "<|startoftext|>", "<bos>", "<|endoftext|>"});
    v.eos_id = !p.suffix_tokens.empty() ? std::optional<TokenId>(p.suffix_tokens.back())
                                        : special_named({"<|end_of_text|>", "<|endoftext|>", "</s>", "<|im_end|>", "<eos>", "<|eot_id|>"});
    try {
        return BpeTokenizer(std::move(v), std::move(p));
    } catch (const Error& e) {
        fail("{}: {}", origin, e.what());
    }
}

inline BpeTokenizer BpeTokenizer::from_json_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    DEVIANT_REQUIRE(in.good(), "tokenizer file '{}': cannot open", path.string());
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
        fail("tokenizer file '{}': invalid JSON: {}", path.string(), e.what());
    }
    BpeTokenizer tok = from_json(j, fmt::format("tokenizer file '{}'", path.string()));
    // tokenizer_config.json (transformers) names the BOS/EOS tokens explicitly.
    const auto config_path = path.parent_path() / "tokenizer_config.json";
    std::error_code ec;
    if (std::filesystem::is_regular_file(config_path, ec)) {
        std::ifstream cin(config_path, std::ios::binary);
        const nlohmann::json cfg = nlohmann::json::parse(cin, nullptr, /*allow_exceptions=*/false);
        if (cfg.is_object()) {
            if (auto bos = detail::config_token(cfg, "bos_token"))
                if (auto id = tok.token_to_id(*bos)) tok.vocab_.bos_id = id;
            if (auto eos = detail::config_token(cfg, "eos_token"))
                if (auto id = tok.token_to_id(*eos)) tok.vocab_.eos_id = id;
        }
    }
    return tok;
}

}  // namespace deviant
