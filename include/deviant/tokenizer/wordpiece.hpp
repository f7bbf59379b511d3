// deviant/tokenizer/wordpiece.hpp — BERT's WordPiece tokenizer, compatible with Hugging Face
// tokenizer.json files (model WordPiece, normalizer BertNormalizer, pre-tokenizer
// BertPreTokenizer, post-processor TemplateProcessing / BertProcessing, decoder WordPiece) and
// with a plain vocab.txt plus tokenizer_config.json.
// Why: sentence embedders (BERT, MiniLM) need exactly the ids the reference `tokenizers` gives.
//
// encode(text):
//  (0) invalid UTF-8 is replaced like bytes.decode("utf-8", "replace") (then dropped by step 1);
//  (1) added tokens that are not normalized ([CLS], [MASK], ...) are matched in the raw text,
//      leftmost-longest; the text between them is normalized, then searched for normalized ones;
//  (2) normalizer, per code point and in this order: clean_text drops U+0000, U+FFFD and control
//      characters (categories Cc, Cf, Co except \t \n \r) and turns white space into ' ';
//      handle_chinese_chars surrounds CJK ideographs with spaces; strip_accents (when unset it
//      follows lowercase) decomposes to NFD and drops nonspacing marks (Mn); lowercase maps each
//      code point to its lowercase (U+0130 to "i" + U+0307, no context-dependent rules);
//  (3) pre-tokenizer: split on white space (removed) and on punctuation (isolated): Unicode
//      categories P* and the ASCII symbols !"#$%&'()*+,-./:;<=>?@[\]^_`{|}~;
//  (4) WordPiece per word: words longer than max_input_chars_per_word code points give [UNK];
//      else greedy longest match first, pieces after the first carry the "##" prefix; a word
//      with a part that matches nothing is one [UNK];
//  (5) with add_special_tokens the post-processor's template is applied ([CLS] $A [SEP]), after
//      truncating the word pieces so that the result fits max_length.
// decode(ids): tokens joined by spaces, "##" pieces glued to the previous one, then the
// tokenization clean-up (" ." -> ".", " n't" -> "n't", ...) when the decoder asks for it.
// Character classes come from utf8proc; characters assigned after Unicode 9 may be classified
// differently than by the reference (whose category tables date from Unicode 9).
// Not supported (load fails naming the field): other models, normalizers, pre-tokenizers,
// post-processors and decoders; pair templates are read but only single sequences are encoded.
#pragma once
#include <utf8proc.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "deviant/core/error.hpp"
#include "deviant/tokenizer/bpe.hpp"
#include "deviant/tokenizer/utf8.hpp"

namespace deviant {

// BertNormalizer's switches, as tokenizer.json spells them.
struct BertNormalizerOptions {
    bool enabled = true;                 // false: no normalizer at all
    bool clean_text = true;
    bool handle_chinese_chars = true;
    std::optional<bool> strip_accents;   // unset: follows lowercase
    bool lowercase = true;
    bool strips_accents() const { return strip_accents.value_or(lowercase); }
};

struct WordPieceModel {
    std::vector<std::string> id_to_token;  // by id; "" marks an unused id (a token is never empty)
    std::string unk_token = "[UNK]";
    std::string continuing_subword_prefix = "##";
    std::size_t max_input_chars_per_word = 100;
};

// The single-sequence template: special tokens before and after the sequence, with type ids.
struct WordPieceTemplate {
    std::vector<TokenId> prefix, suffix;
    std::vector<TokenId> prefix_types, suffix_types;
    TokenId sequence_type = 0;
    std::size_t added() const { return prefix.size() + suffix.size(); }
};

struct WordPieceDecoderOptions {
    std::string prefix = "##";
    bool cleanup = true;
};

// Padded encodings of several texts: row-major (rows, columns), padded on the right.
struct WordPieceBatch {
    std::int64_t rows = 0, columns = 0;
    std::vector<TokenId> ids;                  // (rows, columns), pad id after each row's end
    std::vector<TokenId> type_ids;             // (rows, columns), 0 on padding
    std::vector<std::uint8_t> attention_mask;  // (rows, columns), 1 on tokens, 0 on padding
    std::vector<std::int64_t> lengths;         // (rows,) tokens per row
};

namespace text {

inline utf8proc_category_t unicode_category(char32_t c) { return utf8proc_category(static_cast<utf8proc_int32_t>(c)); }

// BERT's control characters: Cc, Cf and Co, except tab, newline and carriage return.
inline bool is_bert_control(char32_t c) {
    if (c < 0x80) return (c < 0x20 || c == 0x7F) && c != '\t' && c != '\n' && c != '\r';
    const auto cat = unicode_category(c);
    return cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF || cat == UTF8PROC_CATEGORY_CO;
}

// BERT's punctuation: every ASCII non-alphanumeric printable character, and Unicode P*.
inline bool is_bert_punctuation(char32_t c) {
    if (c < 0x80) return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) || (c >= 0x7B && c <= 0x7E);
    const auto cat = unicode_category(c);
    return cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO;
}

// The CJK ideograph blocks BERT isolates (the reference's ranges, including its 0x2B920 start).
inline bool is_cjk_ideograph(char32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// Code points of valid UTF-8.
inline std::u32string utf8_to_code_points(std::string_view s) {
    std::u32string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size();) {
        const std::size_t n = utf8_sequence_length(s, i);
        out.push_back(utf8_decode(s, i, n));
        i += n;
    }
    return out;
}

inline std::string code_points_to_utf8(std::u32string_view cps) {
    std::string out;
    out.reserve(cps.size());
    for (char32_t c : cps) utf8_append(out, c);
    return out;
}

// Canonical decomposition (NFD): each code point fully decomposed, then runs of combining marks
// put in canonical order (stable sort by combining class).
inline std::u32string nfd(std::u32string_view in) {
    std::u32string out;
    out.reserve(in.size() + in.size() / 4);
    utf8proc_int32_t buffer[32];
    for (char32_t c : in) {
        if (c < 0xC0) {  // nothing below U+00C0 decomposes
            out.push_back(c);
            continue;
        }
        const utf8proc_ssize_t n =
            utf8proc_decompose_char(static_cast<utf8proc_int32_t>(c), buffer, 32, UTF8PROC_DECOMPOSE, nullptr);
        if (n <= 0 || n > 32) {
            out.push_back(c);
            continue;
        }
        for (utf8proc_ssize_t k = 0; k < n; ++k) out.push_back(static_cast<char32_t>(buffer[k]));
    }
    const auto ccc = [](char32_t c) { return c < 0x300 ? 0 : utf8proc_get_property(static_cast<utf8proc_int32_t>(c))->combining_class; };
    for (std::size_t i = 0; i < out.size();) {
        if (ccc(out[i]) == 0) {
            ++i;
            continue;
        }
        std::size_t j = i;
        while (j < out.size() && ccc(out[j]) != 0) ++j;
        if (j - i > 1) std::stable_sort(out.begin() + std::ptrdiff_t(i), out.begin() + std::ptrdiff_t(j),
                                        [&](char32_t a, char32_t b) { return ccc(a) < ccc(b); });
        i = j;
    }
    return out;
}

// Lowercase of one code point, appended (U+0130 lowercases to two code points).
inline void append_lowercase(std::u32string& out, char32_t c) {
    if (c < 0x80) {
        out.push_back(c >= 'A' && c <= 'Z' ? c + 32 : c);
    } else if (c == 0x130) {
        out.push_back('i');
        out.push_back(0x307);
    } else {
        out.push_back(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
    }
}

}  // namespace text

class WordPieceTokenizer {
public:
    WordPieceTokenizer(WordPieceModel model, BertNormalizerOptions normalizer, WordPieceTemplate post,
                       std::vector<AddedToken> added_tokens, WordPieceDecoderOptions decoder, std::string origin = "WordPieceTokenizer")
        : model_(std::move(model)), normalizer_(normalizer), template_(std::move(post)), added_(std::move(added_tokens)),
          decoder_(std::move(decoder)), origin_(std::move(origin)) {
        build();
    }

    // A Hugging Face tokenizer.json with a WordPiece model.
    static WordPieceTokenizer from_json_file(const std::filesystem::path& path);
    static WordPieceTokenizer from_json(const nlohmann::json& j, const std::string& origin = "tokenizer.json");
    // A vocab.txt (one token per line, the line number is the id); `config` is a
    // tokenizer_config.json (do_lower_case, strip_accents, tokenize_chinese_chars and the special
    // token names); without one, or when it lacks a field, BERT's defaults apply.
    static WordPieceTokenizer from_vocab_file(const std::filesystem::path& vocab_txt,
                                              const std::optional<std::filesystem::path>& config = std::nullopt);
    // A model folder: tokenizer.json when present, else vocab.txt (+ tokenizer_config.json).
    static WordPieceTokenizer from_directory(const std::filesystem::path& dir);

    // Token ids of `text`; with add_special_tokens the template's [CLS] / [SEP] are added.
    // max_length > 0 truncates the word pieces (from the end) so that the whole result, special
    // tokens included, has at most max_length ids.
    std::vector<TokenId> encode(std::string_view text, bool add_special_tokens = true, std::size_t max_length = 0) const {
        std::vector<TokenId> ids = encode_pieces(text);
        if (!add_special_tokens) {
            if (max_length > 0 && ids.size() > max_length) ids.resize(max_length);
            return ids;
        }
        if (max_length > 0) {
            DEVIANT_REQUIRE(max_length >= template_.added(), "{}: max_length {} cannot hold the {} special tokens", origin_, max_length,
                            template_.added());
            if (ids.size() > max_length - template_.added()) ids.resize(max_length - template_.added());
        }
        std::vector<TokenId> out;
        out.reserve(ids.size() + template_.added());
        out.insert(out.end(), template_.prefix.begin(), template_.prefix.end());
        out.insert(out.end(), ids.begin(), ids.end());
        out.insert(out.end(), template_.suffix.begin(), template_.suffix.end());
        return out;
    }

    // Token type ids matching encode(text, true, ...) of a text that gave `length` ids.
    std::vector<TokenId> type_ids(std::size_t length) const {
        std::vector<TokenId> out(length, template_.sequence_type);
        for (std::size_t i = 0; i < template_.prefix_types.size() && i < length; ++i) out[i] = template_.prefix_types[i];
        for (std::size_t i = 0; i < template_.suffix_types.size() && i < length; ++i)
            out[length - template_.suffix_types.size() + i] = template_.suffix_types[i];
        return out;
    }

    // Encodes every text (with special tokens, truncated to max_length when > 0) and pads the
    // rows on the right to the longest one.
    WordPieceBatch encode_batch(const std::vector<std::string>& texts, std::size_t max_length = 0) const {
        WordPieceBatch b;
        std::vector<std::vector<TokenId>> rows;
        rows.reserve(texts.size());
        for (const std::string& t : texts) rows.push_back(encode(t, true, max_length));
        b.rows = std::int64_t(rows.size());
        for (const auto& r : rows) b.columns = std::max<std::int64_t>(b.columns, std::int64_t(r.size()));
        const std::size_t cells = std::size_t(b.rows * b.columns);
        b.ids.assign(cells, pad_id_.value_or(0));
        b.type_ids.assign(cells, 0);
        b.attention_mask.assign(cells, 0);
        for (std::size_t r = 0; r < rows.size(); ++r) {
            const std::vector<TokenId> types = type_ids(rows[r].size());
            for (std::size_t c = 0; c < rows[r].size(); ++c) {
                const std::size_t k = r * std::size_t(b.columns) + c;
                b.ids[k] = rows[r][c];
                b.type_ids[k] = types[c];
                b.attention_mask[k] = 1;
            }
            b.lengths.push_back(std::int64_t(rows[r].size()));
        }
        return b;
    }

    // The word-piece strings of `text` (no special tokens; added tokens appear as their content).
    std::vector<std::string> tokenize(std::string_view text) const {
        std::vector<std::string> out;
        for (TokenId id : encode_pieces(text)) out.push_back(id_to_token(id));
        return out;
    }

    // The normalizer's output for `text` (added tokens are not treated specially here).
    std::string normalize(std::string_view text) const {
        std::string valid;
        if (!text::is_valid_utf8(text)) valid = text::utf8_make_valid(text), text = valid;
        return text::code_points_to_utf8(normalize_code_points(text::utf8_to_code_points(text)));
    }

    // The words the pre-tokenizer makes of normalized text.
    std::vector<std::string> pre_tokenize(std::string_view normalized) const {
        std::vector<std::string> words;
        for_each_word(text::utf8_to_code_points(normalized), [&](std::u32string_view w) { words.push_back(text::code_points_to_utf8(w)); });
        return words;
    }

    // Ids back to text: special tokens dropped when skip_special; "##" pieces glued on.
    std::string decode(const std::vector<TokenId>& ids, bool skip_special = false) const {
        std::string out;
        bool first = true;
        for (TokenId id : ids) {
            DEVIANT_REQUIRE(id >= 0 && std::size_t(id) < id_to_piece_.size() && has_piece_[std::size_t(id)],
                            "{}: decode: unknown token id {} (vocabulary size {})", origin_, id, id_to_piece_.size());
            if (skip_special && is_special_[std::size_t(id)]) continue;
            std::string piece = id_to_piece_[std::size_t(id)];
            if (!first) {
                if (!decoder_.prefix.empty() && piece.starts_with(decoder_.prefix)) piece.erase(0, decoder_.prefix.size());
                else piece.insert(piece.begin(), ' ');
            }
            if (decoder_.cleanup) piece = cleanup(piece);
            out += piece;
            first = false;
        }
        return out;
    }

    std::optional<TokenId> token_to_id(std::string_view token) const {
        for (const AddedToken& t : added_)
            if (t.content == token) return t.id;
        auto it = vocab_.find(token);
        if (it == vocab_.end()) return std::nullopt;
        return it->second;
    }
    const std::string& id_to_token(TokenId id) const {
        DEVIANT_REQUIRE(id >= 0 && std::size_t(id) < id_to_piece_.size() && has_piece_[std::size_t(id)],
                        "{}: unknown token id {}", origin_, id);
        return id_to_piece_[std::size_t(id)];
    }
    bool is_special(TokenId id) const { return id >= 0 && std::size_t(id) < is_special_.size() && is_special_[std::size_t(id)]; }
    std::size_t vocab_size() const { return id_to_piece_.size(); }
    TokenId unk_id() const { return unk_id_; }
    std::optional<TokenId> pad_id() const { return pad_id_; }
    const WordPieceTemplate& post_template() const { return template_; }
    const BertNormalizerOptions& normalizer() const { return normalizer_; }
    // Replaces the normalizer's switches (e.g. to lowercase a cased tokenizer's input).
    void set_normalizer(const BertNormalizerOptions& n) { normalizer_ = n; }
    const WordPieceModel& model() const { return model_; }
    const std::vector<AddedToken>& added_tokens() const { return added_; }
    const std::string& origin() const { return origin_; }

private:
    struct StringHash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
    };
    using Vocab = std::unordered_map<std::string, TokenId, StringHash, std::equal_to<>>;

    using Segment = AddedTokenSegment;

    void build() {
        DEVIANT_REQUIRE(!model_.id_to_token.empty(), "{}: the WordPiece vocabulary is empty", origin_);
        const std::string& prefix = model_.continuing_subword_prefix;
        for (std::size_t id = 0; id < model_.id_to_token.size(); ++id)  // a token listed twice keeps its last id
            if (!model_.id_to_token[id].empty()) vocab_.insert_or_assign(model_.id_to_token[id], TokenId(id));
        for (const auto& [token, id] : vocab_)
            if (!prefix.empty() && token.size() > prefix.size() && token.starts_with(prefix))
                continuations_.emplace(token.substr(prefix.size()), id);
        auto unk = vocab_.find(model_.unk_token);
        DEVIANT_REQUIRE(unk != vocab_.end(), "{}: field 'model.unk_token': '{}' is not in the vocabulary", origin_, model_.unk_token);
        unk_id_ = unk->second;
        DEVIANT_REQUIRE(model_.max_input_chars_per_word > 0, "{}: field 'model.max_input_chars_per_word' must be positive", origin_);

        id_to_piece_ = model_.id_to_token;
        has_piece_.assign(id_to_piece_.size(), false);
        for (const auto& [token, id] : vocab_) has_piece_[std::size_t(id)] = true;
        for (const AddedToken& t : added_) {
            DEVIANT_REQUIRE(t.id >= 0 && !t.content.empty(), "{}: added token '{}' has bad id {}", origin_, t.content, t.id);
            if (std::size_t(t.id) >= id_to_piece_.size()) {
                id_to_piece_.resize(std::size_t(t.id) + 1);
                has_piece_.resize(std::size_t(t.id) + 1, false);
            }
            id_to_piece_[std::size_t(t.id)] = t.content;
            has_piece_[std::size_t(t.id)] = true;
        }
        is_special_.assign(id_to_piece_.size(), false);
        for (const AddedToken& t : added_) is_special_[std::size_t(t.id)] = t.special;
        for (int pass = 0; pass < 2; ++pass) {
            for (std::size_t i = 0; i < added_.size(); ++i)
                if (added_[i].normalized == (pass == 1)) added_order_[pass].push_back(i);
            std::stable_sort(added_order_[pass].begin(), added_order_[pass].end(),
                             [&](std::size_t x, std::size_t y) { return added_[x].content.size() > added_[y].content.size(); });
        }
        const auto check = [&](TokenId id, const char* what) {
            DEVIANT_REQUIRE(id >= 0 && std::size_t(id) < id_to_piece_.size() && has_piece_[std::size_t(id)],
                            "{}: post-processor {} token id {} is not in the vocabulary", origin_, what, id);
        };
        for (TokenId id : template_.prefix) check(id, "prefix");
        for (TokenId id : template_.suffix) check(id, "suffix");
        template_.prefix_types.resize(template_.prefix.size(), 0);
        template_.suffix_types.resize(template_.suffix.size(), 0);
        if (!pad_id_) pad_id_ = token_to_id("[PAD]");
    }

    // Ids of the word pieces and added tokens of `text` (no template).
    std::vector<TokenId> encode_pieces(std::string_view input) const {
        std::string valid;
        if (!text::is_valid_utf8(input)) valid = text::utf8_make_valid(input), input = valid;
        std::vector<TokenId> ids;
        for (const Segment& raw : split_added(input, 0)) {
            if (raw.added_id) {
                ids.push_back(*raw.added_id);
                continue;
            }
            const std::u32string normalized =
                normalize_code_points(text::utf8_to_code_points(input.substr(raw.begin, raw.end - raw.begin)));
            if (added_order_[1].empty()) {
                for_each_word(normalized, [&](std::u32string_view w) { word_pieces(w, ids); });
                continue;
            }
            const std::string utf8 = text::code_points_to_utf8(normalized);
            for (const Segment& seg : split_added(utf8, 1)) {
                if (seg.added_id) ids.push_back(*seg.added_id);
                else
                    for_each_word(text::utf8_to_code_points(std::string_view(utf8).substr(seg.begin, seg.end - seg.begin)),
                                  [&](std::u32string_view w) { word_pieces(w, ids); });
            }
        }
        return ids;
    }

    std::u32string normalize_code_points(const std::u32string& in) const {
        if (!normalizer_.enabled) return in;
        std::u32string s;
        s.reserve(in.size() + 8);
        for (char32_t c : in) {
            if (normalizer_.clean_text) {
                if (c == 0 || c == 0xFFFD || text::is_bert_control(c)) continue;
                if (text::is_white_space(c)) c = ' ';
            }
            if (normalizer_.handle_chinese_chars && text::is_cjk_ideograph(c)) {
                s.push_back(' ');
                s.push_back(c);
                s.push_back(' ');
            } else {
                s.push_back(c);
            }
        }
        if (normalizer_.strips_accents()) {
            std::u32string d = text::nfd(s);
            s.clear();
            for (char32_t c : d)
                if (c < 0x300 || text::unicode_category(c) != UTF8PROC_CATEGORY_MN) s.push_back(c);
        }
        if (normalizer_.lowercase) {
            std::u32string lower;
            lower.reserve(s.size());
            for (char32_t c : s) text::append_lowercase(lower, c);
            s = std::move(lower);
        }
        return s;
    }

    // Calls f(word) for each word: runs between white space, punctuation characters on their own.
    template <class F>
    static void for_each_word(std::u32string_view s, F&& f) {
        std::size_t start = 0;
        for (std::size_t i = 0; i < s.size(); ++i) {
            const char32_t c = s[i];
            if (text::is_white_space(c)) {
                if (i > start) f(s.substr(start, i - start));
                start = i + 1;
            } else if (text::is_bert_punctuation(c)) {
                if (i > start) f(s.substr(start, i - start));
                f(s.substr(i, 1));
                start = i + 1;
            }
        }
        if (s.size() > start) f(s.substr(start));
    }

    // Greedy longest-match-first WordPiece of one word.
    void word_pieces(std::u32string_view word, std::vector<TokenId>& ids) const {
        if (word.size() > model_.max_input_chars_per_word) {
            ids.push_back(unk_id_);
            return;
        }
        const std::string utf8 = text::code_points_to_utf8(word);
        // byte offset of each code point boundary
        std::vector<std::size_t> bounds;
        bounds.reserve(word.size() + 1);
        for (std::size_t i = 0; i < utf8.size();) {
            bounds.push_back(i);
            i += text::utf8_sequence_length(utf8, i);
        }
        bounds.push_back(utf8.size());
        const std::size_t mark = ids.size();
        std::size_t start = 0;  // index into bounds
        while (start + 1 < bounds.size()) {
            const Vocab& table = start == 0 ? vocab_ : continuations_;
            std::size_t end = bounds.size() - 1;
            std::optional<TokenId> found;
            for (; end > start; --end) {
                auto it = table.find(std::string_view(utf8).substr(bounds[start], bounds[end] - bounds[start]));
                if (it != table.end()) {
                    found = it->second;
                    break;
                }
            }
            if (!found) {
                ids.resize(mark);
                ids.push_back(unk_id_);
                return;
            }
            ids.push_back(*found);
            start = end;
        }
    }

    // Splits text into added-token matches (pass 0: not normalized, 1: normalized) and the rest.
    std::vector<Segment> split_added(std::string_view text, int pass) const {
        const auto& order = added_order_[pass];
        if (order.empty()) return {{0, text.size(), std::nullopt}};
        return split_at_added_tokens(text, added_, [&](unsigned char) -> const auto& { return order; });
    }

    static void replace_all(std::string& s, std::string_view from, std::string_view to) {
        for (std::size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
    }
    static std::string cleanup(std::string s) {
        static constexpr std::pair<std::string_view, std::string_view> rules[] = {
            {" .", "."},      {" ?", "?"},      {" !", "!"},  {" ,", ","},   {" ' ", "'"},  {" n't", "n't"},
            {" 'm", "'m"},    {" do not", " don't"},          {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"},
        };
        for (const auto& [from, to] : rules) replace_all(s, from, to);
        return s;
    }

    WordPieceModel model_;
    BertNormalizerOptions normalizer_;
    WordPieceTemplate template_;
    std::vector<AddedToken> added_;
    WordPieceDecoderOptions decoder_;
    std::string origin_;

    Vocab vocab_;          // every token -> id
    Vocab continuations_;  // "##x" tokens keyed by "x"
    TokenId unk_id_ = 0;
    std::optional<TokenId> pad_id_;
    std::vector<std::string> id_to_piece_;  // vocabulary with added tokens laid over it
    std::vector<bool> has_piece_, is_special_;
    std::vector<std::size_t> added_order_[2];  // added tokens per pass, longest first
};

namespace detail {

inline nlohmann::json read_json_file(const std::filesystem::path& path, const char* what) {
    std::ifstream in(path, std::ios::binary);
    DEVIANT_REQUIRE(in.good(), "{} '{}': cannot open", what, path.string());
    try {
        return nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
        fail("{} '{}': invalid JSON: {}", what, path.string(), e.what());
    }
}

inline std::optional<bool> json_optional_bool(const JsonContext& cx, const nlohmann::json& obj, const char* key, const std::string& field) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return std::nullopt;
    if (!it->is_boolean()) cx.error(field + "." + key, fmt::format("expected a boolean or null, got {}", it->type_name()));
    return it->get<bool>();
}

inline TokenId wordpiece_lookup(const JsonContext& cx, const std::vector<AddedToken>& added, const WordPieceModel& model,
                                const std::string& token, const std::string& field) {
    for (const AddedToken& t : added)
        if (t.content == token) return t.id;
    for (std::size_t i = model.id_to_token.size(); i-- > 0;)
        if (model.id_to_token[i] == token) return TokenId(i);
    cx.error(field, fmt::format("token '{}' is not in the vocabulary", token));
}

inline void parse_wordpiece_normalizer(const JsonContext& cx, const nlohmann::json& j, BertNormalizerOptions& n) {
    if (j.is_null()) {
        n.enabled = false;
        return;
    }
    const std::string type = cx.type(j, "normalizer");
    if (type != "BertNormalizer") cx.error("normalizer.type", fmt::format("unsupported normalizer '{}' (expected BertNormalizer)", type));
    n.enabled = true;
    n.clean_text = cx.boolean(j, "clean_text", true, "normalizer");
    n.handle_chinese_chars = cx.boolean(j, "handle_chinese_chars", true, "normalizer");
    n.strip_accents = json_optional_bool(cx, j, "strip_accents", "normalizer");
    n.lowercase = cx.boolean(j, "lowercase", true, "normalizer");
}

inline void parse_wordpiece_template(const JsonContext& cx, const nlohmann::json& j, const std::string& field,
                                     const std::vector<AddedToken>& added, const WordPieceModel& model, WordPieceTemplate& t) {
    if (j.is_null()) return;
    const std::string type = cx.type(j, field);
    if (type == "TemplateProcessing") {
        const auto& single = cx.member(j, "single", field);
        const auto& specials = cx.member(j, "special_tokens", field);
        if (!single.is_array()) cx.error(field + ".single", "expected an array");
        bool seen_sequence = false;
        for (std::size_t i = 0; i < single.size(); ++i) {
            const std::string f = fmt::format("{}.single[{}]", field, i);
            if (!single[i].is_object()) cx.error(f, "expected an object");
            if (single[i].contains("Sequence")) {
                if (seen_sequence) cx.error(f, "a single-sequence template holds one Sequence");
                seen_sequence = true;
                const auto& seq = single[i]["Sequence"];
                if (seq.contains("type_id")) t.sequence_type = cx.id(seq["type_id"], f + ".Sequence.type_id");
                continue;
            }
            if (!single[i].contains("SpecialToken")) cx.error(f, "expected Sequence or SpecialToken");
            const auto& st = single[i]["SpecialToken"];
            const std::string name = cx.string(cx.member(st, "id", f + ".SpecialToken"), f + ".SpecialToken.id");
            const TokenId type_id = st.contains("type_id") ? cx.id(st["type_id"], f + ".SpecialToken.type_id") : 0;
            const std::string sf = fmt::format("{}.special_tokens.{}", field, name);
            const auto& ids = cx.member(cx.member(specials, name.c_str(), field + ".special_tokens"), "ids", sf);
            if (!ids.is_array()) cx.error(sf + ".ids", "expected an array");
            for (std::size_t k = 0; k < ids.size(); ++k) {
                (seen_sequence ? t.suffix : t.prefix).push_back(cx.id(ids[k], fmt::format("{}.ids[{}]", sf, k)));
                (seen_sequence ? t.suffix_types : t.prefix_types).push_back(type_id);
            }
        }
        if (!seen_sequence) cx.error(field + ".single", "no $A sequence");
    } else if (type == "BertProcessing") {
        for (const char* key : {"cls", "sep"}) {
            const auto& v = cx.member(j, key, field);
            const std::string f = field + "." + key;
            if (!v.is_array() || v.size() != 2) cx.error(f, "expected [token, id]");
            const TokenId id = cx.id(v[1], f + "[1]");
            (void)wordpiece_lookup(cx, added, model, cx.string(v[0], f + "[0]"), f + "[0]");
            (std::string_view(key) == "cls" ? t.prefix : t.suffix) = {id};
            (std::string_view(key) == "cls" ? t.prefix_types : t.suffix_types) = {0};
        }
    } else {
        cx.error(field + ".type", fmt::format("unsupported post-processor '{}' (expected TemplateProcessing or BertProcessing)", type));
    }
}

}  // namespace detail

inline WordPieceTokenizer WordPieceTokenizer::from_json(const nlohmann::json& j, const std::string& origin) {
    const detail::JsonContext cx{origin};
    if (!j.is_object()) cx.error("<root>", "expected an object");
    WordPieceModel model;
    BertNormalizerOptions normalizer;
    WordPieceTemplate post;
    std::vector<AddedToken> added;
    WordPieceDecoderOptions decoder;

    const auto& m = cx.member(j, "model", "<root>");
    if (!m.is_object()) cx.error("model", "expected an object");
    const std::string type = cx.string(cx.member(m, "type", "model"), "model.type");
    if (type != "WordPiece") cx.error("model.type", fmt::format("expected 'WordPiece', got '{}'", type));
    const auto& vocab = cx.member(m, "vocab", "model");
    if (!vocab.is_object() || vocab.empty()) cx.error("model.vocab", "expected a non-empty object {token: id}");
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
        const TokenId id = cx.id(it.value(), "model.vocab." + it.key());
        if (std::size_t(id) > 16 * vocab.size() + 1024) cx.error("model.vocab." + it.key(), fmt::format("id {} is far beyond the vocabulary size", id));
        if (std::size_t(id) >= model.id_to_token.size()) model.id_to_token.resize(std::size_t(id) + 1);
        if (!model.id_to_token[std::size_t(id)].empty()) cx.error("model.vocab." + it.key(), fmt::format("id {} is given twice", id));
        model.id_to_token[std::size_t(id)] = it.key();
    }
    model.unk_token = cx.string(cx.member(m, "unk_token", "model"), "model.unk_token");
    if (!vocab.contains(model.unk_token)) cx.error("model.unk_token", fmt::format("'{}' is not in model.vocab", model.unk_token));
    if (m.contains("continuing_subword_prefix") && !m["continuing_subword_prefix"].is_null())
        model.continuing_subword_prefix = cx.string(m["continuing_subword_prefix"], "model.continuing_subword_prefix");
    if (m.contains("max_input_chars_per_word") && !m["max_input_chars_per_word"].is_null()) {
        const auto& v = m["max_input_chars_per_word"];
        if (!v.is_number_integer() || v.get<std::int64_t>() <= 0)
            cx.error("model.max_input_chars_per_word", "expected a positive integer");
        model.max_input_chars_per_word = v.get<std::size_t>();
    }

    if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
        const auto& list = j["added_tokens"];
        if (!list.is_array()) cx.error("added_tokens", "expected an array");
        for (std::size_t i = 0; i < list.size(); ++i) {
            const std::string f = fmt::format("added_tokens[{}]", i);
            AddedToken t;
            t.id = cx.id(cx.member(list[i], "id", f), f + ".id");
            t.content = cx.string(cx.member(list[i], "content", f), f + ".content");
            if (t.content.empty()) cx.error(f + ".content", "empty token");
            t.special = cx.boolean(list[i], "special", false, f);
            t.lstrip = cx.boolean(list[i], "lstrip", false, f);
            t.rstrip = cx.boolean(list[i], "rstrip", false, f);
            t.single_word = cx.boolean(list[i], "single_word", false, f);
            t.normalized = cx.boolean(list[i], "normalized", !t.special, f);
            added.push_back(std::move(t));
        }
    }
    detail::parse_wordpiece_normalizer(cx, j.contains("normalizer") ? j["normalizer"] : nlohmann::json(), normalizer);
    if (j.contains("pre_tokenizer") && !j["pre_tokenizer"].is_null()) {
        const std::string pt = cx.type(j["pre_tokenizer"], "pre_tokenizer");
        if (pt != "BertPreTokenizer") cx.error("pre_tokenizer.type", fmt::format("unsupported pre-tokenizer '{}' (expected BertPreTokenizer)", pt));
    } else {
        cx.error("pre_tokenizer", "missing (expected BertPreTokenizer)");
    }
    if (j.contains("post_processor")) detail::parse_wordpiece_template(cx, j["post_processor"], "post_processor", added, model, post);
    if (j.contains("decoder") && !j["decoder"].is_null()) {
        const auto& d = j["decoder"];
        const std::string dt = cx.type(d, "decoder");
        if (dt != "WordPiece") cx.error("decoder.type", fmt::format("unsupported decoder '{}' (expected WordPiece)", dt));
        if (d.contains("prefix") && !d["prefix"].is_null()) decoder.prefix = cx.string(d["prefix"], "decoder.prefix");
        decoder.cleanup = cx.boolean(d, "cleanup", true, "decoder");
    }
    try {
        return WordPieceTokenizer(std::move(model), normalizer, std::move(post), std::move(added), std::move(decoder), origin);
    } catch (const Error& e) {
        const std::string what = e.what();
        if (what.starts_with(origin)) throw;
        fail("{}: {}", origin, what);
    }
}

inline WordPieceTokenizer WordPieceTokenizer::from_json_file(const std::filesystem::path& path) {
    const nlohmann::json j = detail::read_json_file(path, "tokenizer file");
    return from_json(j, fmt::format("tokenizer file '{}'", path.string()));
}

inline WordPieceTokenizer WordPieceTokenizer::from_vocab_file(const std::filesystem::path& vocab_txt,
                                                              const std::optional<std::filesystem::path>& config) {
    const std::string origin = fmt::format("vocabulary file '{}'", vocab_txt.string());
    std::ifstream in(vocab_txt, std::ios::binary);
    DEVIANT_REQUIRE(in.good(), "{}: cannot open", origin);
    WordPieceModel model;
    std::string line;
    std::size_t line_number = 0;
    while (std::getline(in, line)) {
        ++line_number;
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t' || line.back() == '\n' ||
                                 line.back() == '\f' || line.back() == '\v'))
            line.pop_back();
        DEVIANT_REQUIRE(text::is_valid_utf8(line), "{}: line {} is not valid UTF-8", origin, line_number);
        model.id_to_token.push_back(line);
    }
    DEVIANT_REQUIRE(!model.id_to_token.empty(), "{}: the file holds no tokens", origin);

    BertNormalizerOptions normalizer;
    std::string unk = "[UNK]", sep = "[SEP]", pad = "[PAD]", cls = "[CLS]", mask = "[MASK]";
    std::vector<AddedToken> config_added;
    if (config) {
        const std::string corigin = fmt::format("tokenizer config '{}'", config->string());
        const nlohmann::json cfg = detail::read_json_file(*config, "tokenizer config");
        const detail::JsonContext cx{corigin};
        if (!cfg.is_object()) cx.error("<root>", "expected an object");
        normalizer.lowercase = cx.boolean(cfg, "do_lower_case", true, "<root>");
        normalizer.strip_accents = detail::json_optional_bool(cx, cfg, "strip_accents", "<root>");
        normalizer.handle_chinese_chars = cx.boolean(cfg, "tokenize_chinese_chars", true, "<root>");
        for (auto [key, dest] : {std::pair{"unk_token", &unk}, std::pair{"sep_token", &sep}, std::pair{"pad_token", &pad},
                                 std::pair{"cls_token", &cls}, std::pair{"mask_token", &mask}}) {
            auto it = cfg.find(key);
            if (it == cfg.end() || it->is_null()) continue;
            if (it->is_string()) *dest = it->get<std::string>();
            else if (it->is_object() && it->contains("content")) *dest = cx.string((*it)["content"], std::string(key) + ".content");
            else cx.error(key, "expected a string or {\"content\": ...}");
        }
        if (cfg.contains("added_tokens_decoder") && !cfg["added_tokens_decoder"].is_null()) {
            const auto& dec = cfg["added_tokens_decoder"];
            if (!dec.is_object()) cx.error("added_tokens_decoder", "expected an object {id: token}");
            for (auto it = dec.begin(); it != dec.end(); ++it) {
                const std::string f = "added_tokens_decoder." + it.key();
                AddedToken t;
                try {
                    std::size_t used = 0;
                    const long long id = std::stoll(it.key(), &used);
                    if (used != it.key().size() || id < 0 || id > INT32_MAX) throw std::invalid_argument("id");
                    t.id = TokenId(id);
                } catch (const std::exception&) {
                    cx.error(f, "the key must be a non-negative integer id");
                }
                t.content = cx.string(cx.member(it.value(), "content", f), f + ".content");
                if (t.content.empty()) cx.error(f + ".content", "empty token");
                t.special = cx.boolean(it.value(), "special", false, f);
                t.lstrip = cx.boolean(it.value(), "lstrip", false, f);
                t.rstrip = cx.boolean(it.value(), "rstrip", false, f);
                t.single_word = cx.boolean(it.value(), "single_word", false, f);
                t.normalized = cx.boolean(it.value(), "normalized", !t.special, f);
                config_added.push_back(std::move(t));
            }
        }
    }
    model.unk_token = unk;
    const auto find = [&](const std::string& token) -> std::optional<TokenId> {
        for (std::size_t i = model.id_to_token.size(); i-- > 0;)
            if (model.id_to_token[i] == token) return TokenId(i);
        return std::nullopt;
    };
    DEVIANT_REQUIRE(find(unk).has_value(), "{}: the unknown token '{}' is not in the vocabulary", origin, unk);
    // The special tokens become special added tokens (matched in raw text), as transformers does.
    std::vector<AddedToken> added = config_added;
    for (const std::string* name : {&pad, &unk, &cls, &sep, &mask}) {
        bool present = false;
        for (const AddedToken& t : added) present = present || t.content == *name;
        if (present) continue;
        if (auto id = find(*name)) {
            AddedToken t;
            t.content = *name;
            t.id = *id;
            t.special = true;
            t.normalized = false;
            added.push_back(std::move(t));
        }
    }
    WordPieceTemplate post;
    const auto cls_id = find(cls), sep_id = find(sep);
    DEVIANT_REQUIRE(cls_id && sep_id, "{}: the classifier token '{}' or separator token '{}' is not in the vocabulary", origin, cls, sep);
    post.prefix = {*cls_id};
    post.suffix = {*sep_id};
    return WordPieceTokenizer(std::move(model), normalizer, std::move(post), std::move(added), WordPieceDecoderOptions{}, origin);
}

inline WordPieceTokenizer WordPieceTokenizer::from_directory(const std::filesystem::path& dir) {
    std::error_code ec;
    if (std::filesystem::is_regular_file(dir / "tokenizer.json", ec)) return from_json_file(dir / "tokenizer.json");
    DEVIANT_REQUIRE(std::filesystem::is_regular_file(dir / "vocab.txt", ec), "{}: neither tokenizer.json nor vocab.txt is in this directory",
                    dir.string());
    std::optional<std::filesystem::path> config;
    if (std::filesystem::is_regular_file(dir / "tokenizer_config.json", ec)) config = dir / "tokenizer_config.json";
    return from_vocab_file(dir / "vocab.txt", config);
}

}  // namespace deviant
