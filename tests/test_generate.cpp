// Tests of deviant/generate/sampler.hpp: each logits processor on hand-worked numbers and
// against transformers' processors (tests/data/generate/make_sampler_fixture.py), the seeded
// uniform mapping, empirical token frequencies against the filtered distribution, greedy
// generation on the tiny Llama fixture against transformers' generate(do_sample=False), and
// determinism of sampled generation per seed and across batch sizes.
#define BOOST_TEST_MODULE generate
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <fstream>
#include <limits>
#include <numeric>
#include <random>
#include <nlohmann/json.hpp>

#include "deviant/generate/sampler.hpp"
#include "deviant/models/load.hpp"
#include "op_harness.hpp"

using namespace deviant;
using deviant::testing::cuda_device;
using nlohmann::json;

namespace {

const std::string data_dir = DEVIANT_TEST_DATA_DIR "/";
constexpr double kInf = std::numeric_limits<double>::infinity();

const json& fixture() {  // a reference: range-for over fixture()["..."] must not iterate a temporary
    static const json j = [] {
        std::ifstream in(data_dir + "generate/sampler_fixture.json");
        BOOST_REQUIRE(in.good());
        return json::parse(in);
    }();
    return j;
}

std::vector<double> logits_of(const json& row) {
    std::vector<double> out;
    for (const auto& v : row) out.push_back(v.is_null() ? -kInf : v.get<double>());
    return out;
}

void check_row(const std::vector<double>& got, const json& expected, const std::string& what) {
    std::vector<double> want = logits_of(expected);
    BOOST_REQUIRE_EQUAL(got.size(), want.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
        BOOST_TEST_CONTEXT(what << " token " << i) {
            BOOST_TEST(std::isinf(got[i]) == std::isinf(want[i]));
            if (!std::isinf(want[i])) BOOST_TEST(std::abs(got[i] - want[i]) < 1e-9);
        }
    }
}

const Llama& tiny_llama() {
    static std::unique_ptr<Llama> m = load_pretrained_as<Llama>(data_dir + "models/llama");
    return *m;
}

std::vector<std::vector<std::int64_t>> ids_of(const json& rows) {
    std::vector<std::vector<std::int64_t>> out;
    for (const auto& r : rows) out.push_back(r.get<std::vector<std::int64_t>>());
    return out;
}

}  // namespace

// --- hand-worked processors ---

BOOST_AUTO_TEST_CASE(repetition_penalty_divides_positive_multiplies_negative) {
    std::vector<double> l{2.0, -1.0, 0.5, 3.0};
    std::vector<std::int64_t> seen{0, 1, 1, 0};  // duplicates penalise once
    apply_repetition_penalty(l, seen, 2.0);
    BOOST_TEST(l == (std::vector<double>{1.0, -2.0, 0.5, 3.0}), boost::test_tools::per_element());
    std::vector<std::int64_t> bad{4};
    BOOST_CHECK_THROW(apply_repetition_penalty(l, bad, 2.0), Error);
}

BOOST_AUTO_TEST_CASE(temperature_scales) {
    std::vector<double> l{1.0, -2.0};
    apply_temperature(l, 0.5);
    BOOST_TEST(l == (std::vector<double>{2.0, -4.0}), boost::test_tools::per_element());
    BOOST_CHECK_THROW(apply_temperature(l, 0.0), Error);
}

BOOST_AUTO_TEST_CASE(top_k_keeps_ties_of_the_kth_value) {
    std::vector<double> l{1.0, 3.0, 2.0, 3.0};
    apply_top_k(l, 2);  // k-th largest is 3: both 3s stay
    BOOST_TEST(l == (std::vector<double>{-kInf, 3.0, -kInf, 3.0}), boost::test_tools::per_element());
    std::vector<double> m{1.0, 3.0, 2.0};
    apply_top_k(m, 2);
    BOOST_TEST(m == (std::vector<double>{-kInf, 3.0, 2.0}), boost::test_tools::per_element());
    std::vector<double> all{1.0, 3.0, 2.0};
    apply_top_k(all, 0);  // off
    apply_top_k(all, 5);  // larger than the vocabulary
    BOOST_TEST(all == (std::vector<double>{1.0, 3.0, 2.0}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(top_p_keeps_smallest_set_reaching_p) {
    // probabilities 0.5, 0.3, 0.15, 0.05: with top_p 0.7 the two smallest (cumulative 0.05,
    // 0.2 <= 0.3) go, the set {0.5, 0.3} (mass 0.8 >= 0.7) stays.
    std::vector<double> l{std::log(0.5), std::log(0.3), std::log(0.15), std::log(0.05)};
    apply_top_p(l, 0.7);
    BOOST_TEST(std::isfinite(l[0]));
    BOOST_TEST(std::isfinite(l[1]));
    BOOST_TEST(std::isinf(l[2]));
    BOOST_TEST(std::isinf(l[3]));
    auto p = softmax_probs(l);
    BOOST_TEST(std::abs(p[0] - 0.625) < 1e-12);
    BOOST_TEST(std::abs(p[1] - 0.375) < 1e-12);
    // a tiny top_p still keeps the most likely token
    std::vector<double> m{0.0, 5.0, 1.0};
    apply_top_p(m, 1e-6);
    BOOST_TEST(std::isinf(m[0]));
    BOOST_TEST(m[1] == 5.0);
    BOOST_TEST(std::isinf(m[2]));
}

BOOST_AUTO_TEST_CASE(greedy_applies_only_the_penalty) {
    SamplingOptions o;
    o.temperature = 0;
    o.repetition_penalty = 2.0;
    std::mt19937_64 rng(0);
    // token 0 (logit 3) was seen: 3 / 2 = 1.5 < 2, so token 1 wins
    std::vector<std::int64_t> ctx{0};
    BOOST_TEST(next_token({3.0, 2.0, -1.0}, ctx, o, rng) == 1);
    o.repetition_penalty = 1.0;
    BOOST_TEST(next_token({3.0, 2.0, 3.0}, ctx, o, rng) == 0);  // first arg-max
}

// --- against transformers' processors ---

BOOST_AUTO_TEST_CASE(processors_match_transformers) {
    int n = 0;
    for (const auto& c : fixture()["processors"]) {
        BOOST_TEST_CONTEXT("case " << n++) {
            std::vector<double> l = logits_of(c["logits"]);
            const auto ctx = c["context"].get<std::vector<std::int64_t>>();
            SamplingOptions o;
            o.repetition_penalty = c["repetition_penalty"];
            o.temperature = c["temperature"];
            o.top_k = c["top_k"];
            o.top_p = c["top_p"];
            std::vector<double> staged = l;
            apply_repetition_penalty(staged, ctx, o.repetition_penalty);
            check_row(staged, c["after_penalty"], "penalty");
            apply_temperature(staged, o.temperature);
            check_row(staged, c["after_temperature"], "temperature");
            apply_top_k(staged, o.top_k);
            check_row(staged, c["after_top_k"], "top_k");
            apply_top_p(staged, o.top_p);
            check_row(staged, c["after_top_p"], "top_p");
            // all at once, in order, then the filtered distribution
            process_logits(l, ctx, o);
            std::vector<double> p = softmax_probs(l);
            const auto want = c["probs"].get<std::vector<double>>();
            BOOST_REQUIRE_EQUAL(p.size(), want.size());
            for (std::size_t i = 0; i < p.size(); ++i) BOOST_TEST(std::abs(p[i] - want[i]) < 1e-6);
        }
    }
}

// --- random draws ---

BOOST_AUTO_TEST_CASE(uniform_mapping_is_the_documented_one) {
    std::mt19937_64 rng;  // default seed 5489: the 10000th output is fixed by the C++ standard
    rng.discard(9999);
    BOOST_TEST(rng() == 9981545732273789042ULL);
    std::mt19937_64 a(5), b(5);
    for (int i = 0; i < 1000; ++i) {
        std::uint64_t raw = b();
        double u = uniform_double(a);
        BOOST_TEST(u == double(raw >> 11) / 9007199254740992.0);
        BOOST_TEST((u >= 0.0 && u < 1.0));
    }
}

BOOST_AUTO_TEST_CASE(draws_follow_the_filtered_distribution) {
    for (const auto& c : fixture()["processors"]) {
        const auto probs = c["probs"].get<std::vector<double>>();
        std::mt19937_64 rng(123);
        const int draws = 200000;
        std::vector<double> count(probs.size(), 0);
        for (int i = 0; i < draws; ++i) count[std::size_t(sample_token(probs, rng))] += 1;
        double chi2 = 0;
        int df = -1;
        for (std::size_t i = 0; i < probs.size(); ++i) {
            if (probs[i] == 0) {
                BOOST_TEST(count[i] == 0);  // filtered tokens are never drawn
                continue;
            }
            const double expected = probs[i] * draws;
            chi2 += (count[i] - expected) * (count[i] - expected) / expected;
            ++df;
        }
        // chi-square with df degrees of freedom: mean df, sd sqrt(2 df); 6 sd is far in the tail
        if (df > 0) BOOST_TEST(chi2 < df + 6 * std::sqrt(2.0 * df) + 10);
        else BOOST_TEST(chi2 < 1e-9);
    }
    // a skewed hand-made distribution: a biased sampler (e.g. off by one in the CDF) fails
    std::vector<double> probs{0.7, 0.0, 0.2, 0.1};
    std::mt19937_64 rng(9);
    std::vector<int> count(4, 0);
    for (int i = 0; i < 100000; ++i) ++count[std::size_t(sample_token(probs, rng))];
    BOOST_TEST(count[1] == 0);
    BOOST_TEST(std::abs(count[0] / 1e5 - 0.7) < 0.01);
    BOOST_TEST(std::abs(count[2] / 1e5 - 0.2) < 0.01);
    BOOST_TEST(std::abs(count[3] / 1e5 - 0.1) < 0.01);
}

// --- generation on the tiny Llama ---

BOOST_AUTO_TEST_CASE(greedy_generation_matches_transformers) {
    for (const auto& c : fixture()["greedy"]) {
        auto prompts = ids_of(c["prompts"]);
        auto want = ids_of(c["generated"]);
        for (std::int64_t batch : {0, 1, 3}) {
            BOOST_TEST_CONTEXT("penalty " << c["repetition_penalty"] << " stops " << c["stop_ids"].dump() << " batch " << batch) {
                SamplingOptions o;
                o.temperature = 0;
                o.repetition_penalty = c["repetition_penalty"];
                o.max_new_tokens = c["max_new_tokens"];
                o.stop_ids = c["stop_ids"].get<std::vector<std::int64_t>>();
                o.batch_size = batch;
                o.show_progress = false;
                auto got = generate(tiny_llama(), prompts, o, 2);
                BOOST_REQUIRE_EQUAL(got.size(), 2 * prompts.size());
                for (std::size_t i = 0; i < prompts.size(); ++i) {
                    BOOST_TEST(got[2 * i] == want[i], boost::test_tools::per_element());
                    BOOST_TEST(got[2 * i + 1] == want[i], boost::test_tools::per_element());
                }
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(sampling_is_deterministic_per_seed) {
    auto prompts = ids_of(fixture()["greedy"][0]["prompts"]);
    SamplingOptions o;
    o.max_new_tokens = 12;
    o.seed = 42;
    o.show_progress = false;
    o.stop_ids = {2};
    auto a = generate(tiny_llama(), prompts, o, 3);
    auto b = generate(tiny_llama(), prompts, o, 3);
    BOOST_TEST(a == b);
    o.batch_size = 1;  // a row's samples do not depend on its batch
    BOOST_TEST(generate(tiny_llama(), prompts, o, 3) == a);
    // a prompt's samples do not depend on the other prompts
    auto first = generate(tiny_llama(), {prompts[0]}, o, 3);
    for (std::size_t j = 0; j < 3; ++j) BOOST_TEST(first[j] == a[j]);
    // the samples of one prompt differ from each other and from another seed's
    BOOST_TEST((a[0] != a[1] || a[1] != a[2]));
    o.seed = 43;
    BOOST_TEST(generate(tiny_llama(), prompts, o, 3) != a);
    for (const auto& s : a) {
        BOOST_TEST(s.size() <= 12u);
        for (std::size_t t = 0; t + 1 < s.size(); ++t) BOOST_TEST(s[t] != 2);  // nothing after a stop id
    }
}

BOOST_AUTO_TEST_CASE(sampling_with_top_k_one_is_greedy) {
    auto prompts = ids_of(fixture()["greedy"][0]["prompts"]);
    SamplingOptions o;
    o.top_k = 1;
    o.repetition_penalty = 1.0;
    o.max_new_tokens = 20;
    o.stop_ids = {2};
    o.show_progress = false;
    auto got = generate(tiny_llama(), prompts, o, 1);
    auto want = ids_of(fixture()["greedy"][0]["generated"]);
    BOOST_TEST(got == want);
}

// Incremental decoding (KV cache) gives the tokens of the full recompute, for sampled rows of
// different prompt lengths together, on every family and on RoPE-scaled and sliding-window
// models (Mistral's window of 5 is far shorter than the rows), in float32 and bfloat16.
namespace {
template <class Model>
void check_cache_matches_recompute(const Model& m, const std::string& what) {
    std::vector<std::vector<std::int64_t>> prompts = {{1, 5, 9, 13}, {1, 7}, {1, 20, 21, 22, 23, 24, 25, 26, 27}, {3}};
    SamplingOptions o;
    o.max_new_tokens = 14;
    o.seed = 5;
    o.show_progress = false;
    o.top_k = 0;
    o.top_p = 0.9;
    o.stop_ids = {2};
    for (std::int64_t batch : {0, 3}) {
        o.batch_size = batch;
        o.use_cache = true;
        auto cached = generate(m, prompts, o, 2);
        o.use_cache = false;
        auto full = generate(m, prompts, o, 2);
        BOOST_TEST_CONTEXT(what << " batch " << batch) {
            BOOST_TEST(cached.size() == full.size());
            for (std::size_t i = 0; i < cached.size(); ++i) BOOST_TEST(cached[i] == full[i], boost::test_tools::per_element());
        }
    }
}
}  // namespace

BOOST_AUTO_TEST_CASE(kv_cache_matches_full_recompute) {
    check_cache_matches_recompute(tiny_llama(), "llama");
    check_cache_matches_recompute(*load_pretrained_as<Gpt2>(data_dir + "models/gpt2"), "gpt2");
    for (const char* name : {"mistral", "llama31", "yarn"})  // (dynamic: cached keys keep the frequencies they were made with, as in transformers)
        check_cache_matches_recompute(*load_pretrained_as<Llama>(data_dir + "rope/" + name), name);
    check_cache_matches_recompute(*load_pretrained_as<Llama>(data_dir + "models/llama", DType::bf16), "llama bf16");
}

// The cache's logits equal the full forward's at every position (not only the argmax).
BOOST_AUTO_TEST_CASE(kv_cache_logits_equal_full_forward) {
    auto m = load_pretrained_as<Llama>(data_dir + "rope/mistral");
    const std::vector<std::int64_t> ids = {1, 8, 30, 31, 2, 44, 45, 46, 50, 60, 61, 70};
    const std::int64_t T = std::int64_t(ids.size());
    Tape t;
    Tensor full = m->sampling_logits(t, TokenBatch{Tensor::from(ids, {1, T}), Tensor{}});  // (1, T, V)
    KvCache cache = m->make_kv_cache(1, T);
    // prefill 5, then one by one
    std::vector<std::int64_t> head(ids.begin(), ids.begin() + 5);
    Tensor l = m->cached_logits(Tensor::from(head, {1, 5}), cache, {4}, {5});
    double worst = 0;
    auto compare = [&](const Tensor& got, std::int64_t pos) {
        auto g = got.to_vector<double>();
        auto w = full.select(0, 0).select(0, pos).to_vector<double>();
        for (std::size_t v = 0; v < g.size(); ++v) worst = std::max(worst, std::abs(g[v] - w[v]));
    };
    compare(l, 4);
    for (std::int64_t p = 5; p < T; ++p) {
        l = m->cached_logits(Tensor::from(std::vector<std::int64_t>{ids[std::size_t(p)]}, {1, 1}), cache, {0}, {1});
        compare(l, p);
    }
    BOOST_TEST(worst < 1e-5);
    BOOST_TEST(cache.lengths[0] == T);
    BOOST_CHECK_THROW(m->cached_logits(Tensor::from(std::vector<std::int64_t>{3}, {1, 1}), cache, {0}, {1}), Error);  // cache full
}

// Top-p without the full sort keeps exactly the set the sorted definition keeps.
BOOST_AUTO_TEST_CASE(top_p_selection_equals_the_sorted_definition) {
    std::mt19937_64 rng(3);
    for (int trial = 0; trial < 200; ++trial) {
        const std::size_t V = 1 + rng() % 3000;
        std::vector<double> logits(V);
        for (double& l : logits) l = double(std::int64_t(rng() % 4000)) / 400.0 - 5.0;  // many ties
        if (trial % 3 == 0) logits[rng() % V] = -kInf;
        const double top_p = 0.05 + double(rng() % 900) / 1000.0;
        std::vector<double> got = logits;
        apply_top_p(got, top_p);
        // reference: the definition, sorted ascending (stable), cumulative, removed while <= 1 - top_p
        std::vector<double> want = logits;
        std::vector<std::size_t> order(V);
        std::iota(order.begin(), order.end(), std::size_t(0));
        std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return logits[a] < logits[b]; });
        std::vector<double> p = softmax_probs(logits);
        double cum = 0;
        for (std::size_t r = 0; r + 1 < V; ++r) {
            cum += p[order[r]];
            if (cum <= 1.0 - top_p) want[order[r]] = -kInf;
        }
        std::size_t differ = 0;
        for (std::size_t i = 0; i < V; ++i) differ += std::isinf(got[i]) != std::isinf(want[i]);
        BOOST_TEST(differ == 0u, "trial " << trial << " V " << V << " top_p " << top_p);
    }
}

// stop_when ends a row as soon as it holds: the rows are the uncut rows' prefixes.
BOOST_AUTO_TEST_CASE(stop_condition_ends_rows_early) {
    auto prompts = ids_of(fixture()["greedy"][0]["prompts"]);
    SamplingOptions o;
    o.max_new_tokens = 16;
    o.seed = 9;
    o.show_progress = false;
    const auto full = generate(tiny_llama(), prompts, o, 2);
    o.stop_when = [](const std::vector<std::int64_t>& g) { return g.size() >= 3 && g[g.size() - 1] % 2 == 0; };
    const auto cut = generate(tiny_llama(), prompts, o, 2);
    BOOST_REQUIRE_EQUAL(cut.size(), full.size());
    for (std::size_t i = 0; i < cut.size(); ++i) {
        BOOST_TEST(cut[i].size() <= full[i].size());
        BOOST_TEST(std::equal(cut[i].begin(), cut[i].end(), full[i].begin()));
        if (cut[i].size() < full[i].size()) BOOST_TEST(cut[i].back() % 2 == 0);
    }
    BOOST_TEST(first_stop_string("The capital is Paris. It", {"Paris", "It"}) == 15u);
    BOOST_TEST(first_stop_string("abc", {"x", ""}) == std::string::npos);
}

BOOST_AUTO_TEST_CASE(bad_requests_are_errors) {
    SamplingOptions o;
    o.show_progress = false;
    o.max_new_tokens = 4;
    BOOST_CHECK_THROW(generate(tiny_llama(), {{1, 500}}, o, 1), Error);       // id outside the vocabulary
    BOOST_CHECK_THROW(generate(tiny_llama(), {{}}, o, 1), Error);             // empty prompt
    BOOST_CHECK_THROW(generate(tiny_llama(), {{1, 5}}, o, 0), Error);         // no samples
    o.max_new_tokens = 200;                                                   // > 128 positions
    BOOST_CHECK_THROW(generate(tiny_llama(), {{1, 5}}, o, 1), Error);
    o.max_new_tokens = 4;
    o.top_p = 0;
    BOOST_CHECK_THROW(generate(tiny_llama(), {{1, 5}}, o, 1), Error);
    o.top_p = 0.9;
    o.temperature = -1;
    BOOST_CHECK_THROW(generate(tiny_llama(), {{1, 5}}, o, 1), Error);
    o.temperature = 1;
    o.max_new_tokens = 0;
    auto none = generate(tiny_llama(), {{1, 5}}, o, 2);
    BOOST_TEST(none.size() == 2u);
    BOOST_TEST(none[0].empty());
}

BOOST_AUTO_TEST_CASE(greedy_on_cuda_matches_transformers, *boost::unit_test::precondition(cuda_device)) {
    auto model = load_pretrained_as<Llama>(data_dir + "models/llama");
    model->to(Device::cuda);
    const auto& c = fixture()["greedy"][1];
    SamplingOptions o;
    o.temperature = 0;
    o.repetition_penalty = c["repetition_penalty"];
    o.max_new_tokens = c["max_new_tokens"];
    o.stop_ids = {2};
    o.show_progress = false;
    BOOST_TEST(generate(*model, ids_of(c["prompts"]), o, 1) == ids_of(c["generated"]));
}
