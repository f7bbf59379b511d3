// deviant/eval/embedder.hpp — a built-in, dependency-free text embedder with two spaces that
// stand in for the paper's semantic and style embedders (docs/method.md, "Deviation weights").
// Why: deviation weights and diversity metrics need embeddings; this one needs no model, runs
// anywhere in microseconds and gives the same vector on every machine. It is lexical, not
// neural: "sem" sees which content words and word pairs a text uses, "sty" sees how it is written.
//
// "sem" (kSemDim = 256 values): hashed bag of content-word unigrams and bigrams.
//   1. ASCII letters are lowercased; tokens are maximal runs of [a-z0-9] or bytes >= 0x80 (so
//      UTF-8 letters stay inside words); tokens shorter than 2 bytes and stop words
//      (kStopWords) are dropped.
//   2. features: every remaining token, and "a b" (one space) for every two adjacent remaining
//      tokens. A text without any feature gets the single feature "<empty>".
//   3. per distinct feature f with count tf: h = FNV-1a 64 of f's bytes; index = h mod 256;
//      sign = -1 when bit 63 of h is set, else +1; v[index] += sign * (1 + ln tf).
//   4. v / ||v|| (a zero sum, from cancelling collisions, gives the "<empty>" vector).
// "sty" (kStyleDim = 21 values): style statistics of the raw text (style_features), each
//   standardised as (x - mean) / scale with the fixed constants kStyleMean / kStyleScale
//   (typical English narrative prose, chosen by hand), clipped to [-5, 5], followed by a constant
//   1 (so that very plain texts are close to each other and the vector is never zero), then
//   L2-normalised. Before counting, the UTF-8 quotes “ ” ‘ ’, dashes — – and the ellipsis …
//   are mapped to " ' - and "...". Words: maximal runs of [A-Za-z0-9'] or bytes >= 0x80, with
//   leading/trailing apostrophes removed (nothing left: not a word). Sentences: the pieces
//   between runs of . ! ? and line breaks that hold at least one word. Rates are per word
//   (0 for a text without words).
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "deviant/core/error.hpp"

namespace deviant::eval {

enum class Space { sem, sty };

inline constexpr std::size_t kSemDim = 256;
inline constexpr std::size_t kStyleFeatures = 20;
inline constexpr std::size_t kStyleDim = kStyleFeatures + 1;  // + the constant 1

inline std::string_view space_name(Space s) { return s == Space::sem ? "sem" : "sty"; }

inline Space parse_space(std::string_view name) {
    if (name == "sem") return Space::sem;
    if (name == "sty") return Space::sty;
    fail("unknown embedding space '{}' (expected sem or sty)", name);
}

// English stop words (also the function words of the style space), lowercase, sorted.
inline constexpr std::string_view kStopWords[] = {
    "a",       "about",  "above", "after",  "again", "against", "all",   "am",     "an",     "and",     "any",   "are",
    "as",      "at",     "be",    "been",   "before", "being",  "below", "between", "both",  "but",     "by",    "can",
    "could",   "did",    "do",    "does",   "doing", "down",    "during", "each",  "few",    "for",     "from",  "further",
    "had",     "has",    "have",  "having", "he",    "her",     "here",  "hers",   "herself", "him",    "himself", "his",
    "how",     "i",      "if",    "in",     "into",  "is",      "it",    "its",    "itself", "just",    "me",    "more",
    "most",    "my",     "myself", "no",    "nor",   "not",     "now",   "of",     "off",    "on",      "once",  "only",
    "or",      "other",  "our",   "ours",   "ourselves", "out", "over",  "own",    "same",   "she",     "should", "so",
    "some",    "such",   "than",  "that",   "the",   "their",   "theirs", "them",  "themselves", "then", "there", "these",
    "they",    "this",   "those", "through", "to",   "too",     "under", "until",  "up",     "very",    "was",   "we",
    "were",    "what",   "when",  "where",  "which", "while",   "who",   "whom",   "why",    "will",    "with",  "would",
    "you",     "your",   "yours", "yourself", "yourselves"};

inline bool is_stop_word(std::string_view w) {
    return std::binary_search(std::begin(kStopWords), std::end(kStopWords), w);
}

// 64-bit FNV-1a of the bytes.
inline std::uint64_t fnv1a64(std::string_view bytes) {
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (char c : bytes) {
        h ^= static_cast<unsigned char>(c);
        h *= 0x100000001b3ull;
    }
    return h;
}

namespace detail {
inline bool sem_token_byte(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c >= 0x80; }
inline char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; }

inline void l2_normalise(std::vector<double>& v) {
    double sq = 0.0;
    for (double x : v) sq += x * x;
    const double norm = std::sqrt(sq);
    if (norm > 0.0)
        for (double& x : v) x /= norm;
}
}  // namespace detail

// The content tokens of the sem space, in text order (step 1).
inline std::vector<std::string> sem_tokens(std::string_view text) {
    std::vector<std::string> out;
    std::string cur;
    auto flush = [&] {
        if (cur.size() >= 2 && !is_stop_word(cur)) out.push_back(cur);
        cur.clear();
    };
    for (char raw : text) {
        const char c = detail::ascii_lower(raw);
        if (detail::sem_token_byte(static_cast<unsigned char>(c))) cur.push_back(c);
        else flush();
    }
    flush();
    return out;
}

// The sem features with their counts (step 2): unigrams and "a b" bigrams, or {"<empty>": 1}.
inline std::map<std::string, int> sem_features(std::string_view text) {
    const std::vector<std::string> tokens = sem_tokens(text);
    std::map<std::string, int> tf;
    for (std::size_t i = 0; i < tokens.size(); ++i) {
        ++tf[tokens[i]];
        if (i + 1 < tokens.size()) ++tf[tokens[i] + " " + tokens[i + 1]];
    }
    if (tf.empty()) tf["<empty>"] = 1;
    return tf;
}

namespace detail {
inline std::vector<double> hash_features(const std::map<std::string, int>& tf) {
    std::vector<double> v(kSemDim, 0.0);
    for (const auto& [feature, count] : tf) {
        const std::uint64_t h = fnv1a64(feature);
        const double sign = (h >> 63) ? -1.0 : 1.0;
        v[h % kSemDim] += sign * (1.0 + std::log(double(count)));
    }
    return v;
}
}  // namespace detail

inline std::vector<double> embed_sem(std::string_view text) {
    std::vector<double> v = detail::hash_features(sem_features(text));
    detail::l2_normalise(v);
    if (std::all_of(v.begin(), v.end(), [](double x) { return x == 0.0; })) {
        v = detail::hash_features({{"<empty>", 1}});
        detail::l2_normalise(v);
    }
    return v;
}

// ---- style ----------------------------------------------------------------------------------

// The raw style statistics, in this order:
enum StyleFeature : std::size_t {
    kSentenceLengthMean,  // words per sentence
    kSentenceLengthStd,   // population standard deviation of words per sentence
    kWordLengthMean,      // bytes per word
    kTypeTokenRatio,      // distinct lowercased words / words
    kCommaRate,           // ',' per word
    kPeriodRate,          // '.' per word
    kQuestionRate,        // '?' per word
    kExclamationRate,     // '!' per word
    kQuoteRate,           // '"' per word
    kColonRate,           // ':' and ';' per word
    kDashRate,            // '-' per word
    kOtherPunctRate,      // ( ) [ ] / * per word
    kFunctionWordRate,    // stop words (kStopWords) / words
    kFirstPersonRate,     // i me my mine myself we us our ours ourselves, per word
    kSecondPersonRate,    // you your yours yourself yourselves, per word
    kThirdPersonRate,     // he him his she her hers they them their theirs it its, per word
    kDialogueFraction,    // bytes between an opening '"' and its closing '"' / all bytes
    kCapitalisedRate,     // words starting with A-Z, per word
    kAllCapsRate,         // words of >= 2 letters, all A-Z, per word
    kLineBreakRate,       // '\n' per word
};

inline constexpr std::array<double, kStyleFeatures> kStyleMean = {14.0, 6.0,  4.3,  0.7,   0.06,  0.06, 0.005,
                                                                  0.005, 0.02, 0.005, 0.005, 0.005, 0.45, 0.02,
                                                                  0.005, 0.06, 0.05, 0.1,   0.005, 0.01};
inline constexpr std::array<double, kStyleFeatures> kStyleScale = {8.0,  5.0,  0.8,  0.15, 0.05, 0.04, 0.02,
                                                                   0.02, 0.06, 0.02, 0.02, 0.02, 0.1,  0.03,
                                                                   0.02, 0.04, 0.2,  0.08, 0.03, 0.03};
inline constexpr double kStyleClip = 5.0;

namespace detail {
// “ ” -> ", ‘ ’ -> ', — – -> -, … -> ...
inline std::string ascii_punctuation(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (i + 2 < text.size() && static_cast<unsigned char>(text[i]) == 0xE2 && static_cast<unsigned char>(text[i + 1]) == 0x80) {
            const unsigned char c = static_cast<unsigned char>(text[i + 2]);
            const char* rep = c == 0x9C || c == 0x9D ? "\"" : c == 0x98 || c == 0x99 ? "'" : c == 0x93 || c == 0x94 ? "-" : c == 0xA6 ? "..." : nullptr;
            if (rep) {
                out += rep;
                i += 2;
                continue;
            }
        }
        out.push_back(text[i]);
    }
    return out;
}
inline bool style_word_byte(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '\'' || c >= 0x80;
}
template <std::size_t N>
bool in_list(std::string_view w, const std::string_view (&list)[N]) {
    return std::find(std::begin(list), std::end(list), w) != std::end(list);
}
}  // namespace detail

inline std::array<double, kStyleFeatures> style_features(std::string_view raw_text) {
    static constexpr std::string_view first[] = {"i", "me", "my", "mine", "myself", "we", "us", "our", "ours", "ourselves"};
    static constexpr std::string_view second[] = {"you", "your", "yours", "yourself", "yourselves"};
    static constexpr std::string_view third[] = {"he", "him", "his", "she", "her", "hers", "they", "them", "their", "theirs", "it", "its"};
    const std::string text = detail::ascii_punctuation(raw_text);
    std::array<double, kStyleFeatures> f{};

    // Words and sentences in one pass.
    std::vector<std::string> words;
    std::vector<double> sentence_lengths;
    std::size_t in_sentence = 0;
    auto end_sentence = [&] {
        if (in_sentence > 0) sentence_lengths.push_back(double(in_sentence));
        in_sentence = 0;
    };
    std::string cur;
    auto end_word = [&] {
        std::size_t b = 0, e = cur.size();
        while (b < e && cur[b] == '\'') ++b;
        while (e > b && cur[e - 1] == '\'') --e;
        if (e > b) {
            words.push_back(cur.substr(b, e - b));
            ++in_sentence;
        }
        cur.clear();
    };
    std::size_t quoted_bytes = 0;
    bool in_quote = false;
    for (char c : text) {
        const unsigned char u = static_cast<unsigned char>(c);
        if (detail::style_word_byte(u)) {
            cur.push_back(c);
        } else {
            end_word();
            if (c == '.' || c == '!' || c == '?' || c == '\n') end_sentence();
        }
        switch (c) {
            case ',': f[kCommaRate] += 1; break;
            case '.': f[kPeriodRate] += 1; break;
            case '?': f[kQuestionRate] += 1; break;
            case '!': f[kExclamationRate] += 1; break;
            case '"': f[kQuoteRate] += 1; break;
            case ':': case ';': f[kColonRate] += 1; break;
            case '-': f[kDashRate] += 1; break;
            case '(': case ')': case '[': case ']': case '/': case '*': f[kOtherPunctRate] += 1; break;
            case '\n': f[kLineBreakRate] += 1; break;
            default: break;
        }
        if (c == '"') in_quote = !in_quote;
        else if (in_quote) ++quoted_bytes;
    }
    end_word();
    end_sentence();

    const double n = double(words.size());
    if (!text.empty()) f[kDialogueFraction] = double(quoted_bytes) / double(text.size());
    if (words.empty()) {
        for (std::size_t k : {kCommaRate, kPeriodRate, kQuestionRate, kExclamationRate, kQuoteRate, kColonRate, kDashRate,
                              kOtherPunctRate, kLineBreakRate})
            f[k] = 0.0;
        return f;
    }
    double mean = 0.0;
    for (double l : sentence_lengths) mean += l;
    mean /= double(sentence_lengths.size());
    double var = 0.0;
    for (double l : sentence_lengths) var += (l - mean) * (l - mean);
    f[kSentenceLengthMean] = mean;
    f[kSentenceLengthStd] = std::sqrt(var / double(sentence_lengths.size()));

    std::set<std::string> types;
    double letters = 0.0;
    for (const std::string& w : words) {
        letters += double(w.size());
        std::string lower = w;
        for (char& c : lower) c = detail::ascii_lower(c);
        types.insert(lower);
        if (is_stop_word(lower)) f[kFunctionWordRate] += 1;
        if (detail::in_list(lower, first)) f[kFirstPersonRate] += 1;
        if (detail::in_list(lower, second)) f[kSecondPersonRate] += 1;
        if (detail::in_list(lower, third)) f[kThirdPersonRate] += 1;
        if (w[0] >= 'A' && w[0] <= 'Z') f[kCapitalisedRate] += 1;
        if (w.size() >= 2 && std::all_of(w.begin(), w.end(), [](char c) { return c >= 'A' && c <= 'Z'; })) f[kAllCapsRate] += 1;
    }
    f[kWordLengthMean] = letters / n;
    f[kTypeTokenRatio] = double(types.size()) / n;
    for (std::size_t k : {kCommaRate, kPeriodRate, kQuestionRate, kExclamationRate, kQuoteRate, kColonRate, kDashRate, kOtherPunctRate,
                          kFunctionWordRate, kFirstPersonRate, kSecondPersonRate, kThirdPersonRate, kCapitalisedRate, kAllCapsRate,
                          kLineBreakRate})
        f[k] /= n;
    return f;
}

inline std::vector<double> embed_sty(std::string_view text) {
    const std::array<double, kStyleFeatures> f = style_features(text);
    std::vector<double> v(kStyleDim);
    for (std::size_t k = 0; k < kStyleFeatures; ++k)
        v[k] = std::clamp((f[k] - kStyleMean[k]) / kStyleScale[k], -kStyleClip, kStyleClip);
    v[kStyleFeatures] = 1.0;
    detail::l2_normalise(v);
    return v;
}

// The unit-length embedding of `text` in `space` (kSemDim or kStyleDim values).
inline std::vector<double> embed(std::string_view text, Space space) {
    return space == Space::sem ? embed_sem(text) : embed_sty(text);
}

}  // namespace deviant::eval
