// deviant/eval/diversity.hpp — diversity metrics over groups of samples (k samples per prompt),
// the evaluation protocol of the method: each metric is computed per prompt, then averaged over
// prompts with a 95% confidence interval  mean +/- 1.96 * sd / sqrt(n)  (sd with n - 1).
//
//   cosine_distance_<name>  mean of 1 - cos(e_i, e_j) over the pairs i < j of a prompt's sample
//                           embeddings (semantic / style diversity; higher = more diverse)
//   compression_ratio       bytes of the prompt's samples joined by " " / bytes of their gzip
//                           (zlib, level 9, 15-bit window, memLevel 8, default strategy; higher =
//                           more redundant = less diverse); compression_ratio_corpus is the same
//                           over every sample of the file (one value, no interval)
//   distinct_<n>, n = 1..4  unique n-grams / total n-grams over a prompt's samples (n-grams never
//                           cross a sample boundary); a prompt without any n-gram of order n does
//                           not count for that n
//   ngram_diversity         per prompt, the mean of distinct_1..4 over the orders it has
//   homogenization          mean ROUGE-L F1 (word-level longest common subsequence) over the
//                           pairs i < j of a prompt's samples (higher = more alike)
// Words: split at ASCII whitespace, ASCII letters lower-cased (bytes otherwise kept), so the
// numbers are reproducible byte for byte (tests/data/eval/make_diversity_fixture.py).
// Pairwise metrics need two samples: a prompt with fewer does not count for them.
#pragma once
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "deviant/core/error.hpp"

namespace deviant::eval {

struct MetricSummary {
    std::string name;
    double mean = 0, sd = 0, ci_low = 0, ci_high = 0;
    std::int64_t n = 0;  // prompts (or values) averaged
};

// Mean, sample standard deviation and 95% normal interval of per-prompt values.
inline MetricSummary summarize(std::string name, std::span<const double> values) {
    MetricSummary s;
    s.name = std::move(name);
    s.n = std::int64_t(values.size());
    if (values.empty()) {
        s.mean = s.ci_low = s.ci_high = std::nan("");
        return s;
    }
    double sum = 0;
    for (double v : values) sum += v;
    s.mean = sum / double(values.size());
    if (values.size() > 1) {
        double sq = 0;
        for (double v : values) sq += (v - s.mean) * (v - s.mean);
        s.sd = std::sqrt(sq / double(values.size() - 1));
    }
    const double half = 1.96 * s.sd / std::sqrt(double(values.size()));
    s.ci_low = s.mean - half;
    s.ci_high = s.mean + half;
    return s;
}

// --- embeddings ---

inline double cosine_distance(std::span<const double> a, std::span<const double> b) {
    DEVIANT_REQUIRE(a.size() == b.size(), "embeddings of different sizes {} and {}", a.size(), b.size());
    double dot = 0, na = 0, nb = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        dot += a[i] * b[i];
        na += a[i] * a[i];
        nb += b[i] * b[i];
    }
    DEVIANT_REQUIRE(na > 0 && nb > 0 && std::isfinite(na) && std::isfinite(nb), "cosine distance of a zero or non-finite embedding");
    return 1.0 - dot / (std::sqrt(na) * std::sqrt(nb));
}

// Mean over pairs i < j; needs at least two embeddings.
inline double mean_pairwise_cosine_distance(const std::vector<std::vector<double>>& embeddings) {
    DEVIANT_REQUIRE(embeddings.size() >= 2, "pairwise cosine distance needs at least two embeddings, got {}", embeddings.size());
    double sum = 0;
    std::size_t pairs = 0;
    for (std::size_t i = 0; i < embeddings.size(); ++i)
        for (std::size_t j = i + 1; j < embeddings.size(); ++j, ++pairs) sum += cosine_distance(embeddings[i], embeddings[j]);
    return sum / double(pairs);
}

// --- compression ---

// Size in bytes of `text` compressed to the gzip format by zlib (level 9, windowBits 15 + 16,
// memLevel 8, Z_DEFAULT_STRATEGY); the same bytes as Python's
// zlib.compressobj(9, zlib.DEFLATED, 31, 8, zlib.Z_DEFAULT_STRATEGY).
inline std::size_t gzip_size(std::string_view text) {
    z_stream zs{};
    DEVIANT_REQUIRE(deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK, "zlib: deflateInit2 failed");
    std::vector<unsigned char> out(deflateBound(&zs, uLong(text.size())) + 64);
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
    zs.avail_in = uInt(text.size());
    zs.next_out = out.data();
    zs.avail_out = uInt(out.size());
    const int rc = deflate(&zs, Z_FINISH);
    const std::size_t size = zs.total_out;
    deflateEnd(&zs);
    DEVIANT_REQUIRE(rc == Z_STREAM_END, "zlib: deflate did not finish (code {})", rc);
    return size;
}

// Raw bytes / gzip bytes of the texts joined by " ".
inline double compression_ratio(const std::vector<std::string>& texts) {
    std::string joined;
    for (std::size_t i = 0; i < texts.size(); ++i) {
        if (i) joined += ' ';
        joined += texts[i];
    }
    return double(joined.size()) / double(gzip_size(joined));
}

// --- words, n-grams, ROUGE-L ---

inline std::vector<std::string> words(std::string_view text) {
    const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; };
    std::vector<std::string> out;
    std::size_t i = 0;
    while (i < text.size()) {
        while (i < text.size() && space(text[i])) ++i;
        std::size_t j = i;
        while (j < text.size() && !space(text[j])) ++j;
        if (j > i) {
            std::string w(text.substr(i, j - i));
            for (char& c : w)
                if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
            out.push_back(std::move(w));
        }
        i = j;
    }
    return out;
}

// Unique / total n-grams over the samples; nullopt when they have no n-gram of order n.
inline std::optional<double> distinct_n(const std::vector<std::vector<std::string>>& samples_words, int n) {
    DEVIANT_REQUIRE(n >= 1, "distinct-n needs n >= 1, got {}", n);
    std::set<std::vector<std::string>> unique;
    std::size_t total = 0;
    for (const auto& w : samples_words)
        for (std::size_t i = 0; i + std::size_t(n) <= w.size(); ++i, ++total)
            unique.emplace(w.begin() + std::ptrdiff_t(i), w.begin() + std::ptrdiff_t(i) + n);
    if (total == 0) return std::nullopt;
    return double(unique.size()) / double(total);
}

inline std::size_t lcs_length(const std::vector<std::string>& a, const std::vector<std::string>& b) {
    std::vector<std::size_t> prev(b.size() + 1, 0), cur(b.size() + 1, 0);
    for (std::size_t i = 1; i <= a.size(); ++i) {
        for (std::size_t j = 1; j <= b.size(); ++j)
            cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
        std::swap(prev, cur);
    }
    return prev[b.size()];
}

// ROUGE-L F1 (beta 1): 2 P R / (P + R) with P = lcs / |b|, R = lcs / |a|; 0 without overlap.
inline double rouge_l_f1(const std::vector<std::string>& a, const std::vector<std::string>& b) {
    if (a.empty() || b.empty()) return 0.0;
    const double lcs = double(lcs_length(a, b));
    if (lcs == 0) return 0.0;
    const double p = lcs / double(b.size()), r = lcs / double(a.size());
    return 2 * p * r / (p + r);
}

// Mean ROUGE-L F1 over pairs i < j; needs at least two samples.
inline double homogenization(const std::vector<std::vector<std::string>>& samples_words) {
    DEVIANT_REQUIRE(samples_words.size() >= 2, "homogenization needs at least two samples, got {}", samples_words.size());
    double sum = 0;
    std::size_t pairs = 0;
    for (std::size_t i = 0; i < samples_words.size(); ++i)
        for (std::size_t j = i + 1; j < samples_words.size(); ++j, ++pairs) sum += rouge_l_f1(samples_words[i], samples_words[j]);
    return sum / double(pairs);
}

// --- a whole evaluation ---

struct SampleGroup {
    std::string prompt;
    std::vector<std::string> samples;
    std::map<std::string, std::vector<std::vector<double>>> embeddings;  // name -> one vector per sample
    std::vector<double> rewards;  // a reward model's score per sample (`deviant reward score`); empty when not scored
};

// Every metric above over `groups`, in a fixed order: cosine_distance_<name> for each of
// `embedding_names` (every group must carry them, one per sample), compression_ratio,
// compression_ratio_corpus, distinct_1..4, ngram_diversity, homogenization; and reward (mean
// per prompt) when every group carries rewards.
inline std::vector<MetricSummary> diversity_report(const std::vector<SampleGroup>& groups, const std::vector<std::string>& embedding_names) {
    std::vector<MetricSummary> out;
    for (const std::string& name : embedding_names) {
        std::vector<double> v;
        for (std::size_t g = 0; g < groups.size(); ++g) {
            auto it = groups[g].embeddings.find(name);
            DEVIANT_REQUIRE(it != groups[g].embeddings.end(), "group {}: no '{}' embeddings", g, name);
            DEVIANT_REQUIRE(it->second.size() == groups[g].samples.size(), "group {}: {} '{}' embeddings for {} samples", g,
                            it->second.size(), name, groups[g].samples.size());
            if (it->second.size() >= 2) v.push_back(mean_pairwise_cosine_distance(it->second));
        }
        out.push_back(summarize("cosine_distance_" + name, v));
    }
    std::vector<double> ratio, homog, ngd;
    std::vector<std::vector<double>> distinct(4);
    std::vector<std::string> all;
    for (const SampleGroup& g : groups) {
        ratio.push_back(compression_ratio(g.samples));
        all.insert(all.end(), g.samples.begin(), g.samples.end());
        std::vector<std::vector<std::string>> w;
        for (const std::string& s : g.samples) w.push_back(words(s));
        double sum = 0;
        int orders = 0;
        for (int n = 1; n <= 4; ++n)
            if (auto d = distinct_n(w, n)) {
                distinct[std::size_t(n - 1)].push_back(*d);
                sum += *d;
                ++orders;
            }
        if (orders > 0) ngd.push_back(sum / orders);
        if (w.size() >= 2) homog.push_back(homogenization(w));
    }
    out.push_back(summarize("compression_ratio", ratio));
    MetricSummary corpus = summarize("compression_ratio_corpus", std::vector<double>{all.empty() ? std::nan("") : compression_ratio(all)});
    if (all.empty()) corpus.n = 0;
    out.push_back(corpus);
    for (int n = 1; n <= 4; ++n) out.push_back(summarize("distinct_" + std::to_string(n), distinct[std::size_t(n - 1)]));
    out.push_back(summarize("ngram_diversity", ngd));
    out.push_back(summarize("homogenization", homog));
    // quality: each prompt's mean reward, when every group was scored
    if (!groups.empty() && std::all_of(groups.begin(), groups.end(), [](const SampleGroup& g) { return !g.rewards.empty(); })) {
        std::vector<double> r;
        for (const SampleGroup& g : groups) {
            double sum = 0;
            for (double v : g.rewards) sum += v;
            r.push_back(sum / double(g.rewards.size()));
        }
        out.push_back(summarize("reward", r));
    }
    return out;
}

}  // namespace deviant::eval
