// Preference pairs: the gap pairing's invariants, DivPO counts (method.md's worked example) and
// selection, weights over the paired responses, and the `deviant pairs` file function.
#define BOOST_TEST_MODULE pairs
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "deviant/data/pairs.hpp"
#include "deviant/data/prepare.hpp"
#include "temp_dir.hpp"

using namespace deviant;
using namespace deviant::data;
namespace fs = std::filesystem;

namespace {
bool close(double a, double b, double tol = 1e-12) { return std::abs(a - b) <= tol; }

std::vector<double> random_scores(std::uint64_t seed, std::size_t n, int hi) {
    std::mt19937_64 rng(seed);
    std::vector<double> s(n);
    for (auto& x : s) x = double(uniform_index(rng, std::size_t(hi)));
    return s;
}

// Checks every invariant of build_gap_pairs' result by replaying the draws.
void check_gap_invariants(const std::vector<double>& scores, const std::vector<Pair>& pairs, double gap,
                          const std::vector<std::size_t>& pool) {
    std::set<std::size_t> unused(pool.begin(), pool.end());
    for (const Pair& p : pairs) {
        BOOST_TEST_REQUIRE(unused.count(p.chosen) == 1u);  // disjoint, from the capped pool
        BOOST_TEST_REQUIRE(unused.count(p.rejected) == 1u);
        BOOST_TEST(scores[p.chosen] > scores[p.rejected]);
        if (scores[p.chosen] - scores[p.rejected] < gap) {  // only when no pair with the gap was left
            for (std::size_t a : unused)
                for (std::size_t b : unused) BOOST_TEST_REQUIRE(std::abs(scores[a] - scores[b]) < gap);
        }
        unused.erase(p.chosen);
        unused.erase(p.rejected);
    }
    for (std::size_t a : unused)  // stops only when no pair with different scores is left
        for (std::size_t b : unused) BOOST_TEST_REQUIRE(scores[a] == scores[b]);
}

std::vector<std::size_t> all_indices(std::size_t n) {
    std::vector<std::size_t> v(n);
    std::iota(v.begin(), v.end(), std::size_t{0});
    return v;
}
}  // namespace

BOOST_AUTO_TEST_CASE(uniform_index_is_the_rejection_mapping) {
    std::mt19937_64 a(42), b(42);
    for (int i = 0; i < 1000; ++i) {
        std::uint64_t x = b();  // threshold 2^64 mod 10 = 6: practically never rejected
        BOOST_TEST_REQUIRE(uniform_index(a, 10) == x % 10);
    }
    std::mt19937_64 rng(7);
    std::vector<int> counts(3, 0);
    for (int i = 0; i < 30000; ++i) ++counts[uniform_index(rng, 3)];
    for (int c : counts) BOOST_TEST(std::abs(c - 10000) < 400);
    BOOST_TEST(uniform_index(rng, 1) == 0u);
    BOOST_CHECK_THROW(uniform_index(rng, 0), Error);
}

BOOST_AUTO_TEST_CASE(gap_pairs_hand_worked) {
    // (10, 0, 3), gap 5: both pairs with the gap involve response 0 -> one pair, chosen 0.
    for (std::uint64_t seed = 0; seed < 20; ++seed) {
        auto p = build_gap_pairs({10, 0, 3}, 5, 0, false, seed);
        BOOST_TEST_REQUIRE(p.size() == 1u);
        BOOST_TEST(p[0].chosen == 0u);
        BOOST_TEST((p[0].rejected == 1u || p[0].rejected == 2u));
    }
    // (1, 2, 3, 4), gap 5: no pair has the gap; the fallback still pairs all four.
    BOOST_TEST(build_gap_pairs({1, 2, 3, 4}, 5).size() == 2u);
    // (0, 10, 1, 11), gap 5: wide pairs first; a draw of (0,1)/(2,3)-style narrow pairs is impossible.
    for (std::uint64_t seed = 0; seed < 20; ++seed)
        for (const Pair& p : build_gap_pairs({0, 10, 1, 11}, 5, 0, false, seed)) BOOST_TEST((p.chosen + p.rejected) % 2 == 1u);
    BOOST_TEST(build_gap_pairs({5, 5, 5}, 5).empty());  // equal scores never pair
    BOOST_TEST(build_gap_pairs({7}, 5).empty());
    BOOST_TEST(build_gap_pairs({}, 5).empty());
    // cap: first two in input order are (1, 30); sorted by score: (40, 30).
    BOOST_TEST((build_gap_pairs({1, 30, 2, 40, 3}, 5, 2, false) == std::vector<Pair>{{1, 0}}));
    BOOST_TEST((build_gap_pairs({1, 30, 2, 40, 3}, 5, 2, true) == std::vector<Pair>{{3, 1}}));
    BOOST_CHECK_THROW(build_gap_pairs({1, 2}, -1), Error);
    BOOST_CHECK_THROW(build_gap_pairs({1, NAN}, 5), Error);
}

BOOST_AUTO_TEST_CASE(gap_pairs_invariants_and_determinism) {
    bool some_seed_differs = false;
    for (std::uint64_t t = 0; t < 30; ++t) {
        std::vector<double> scores = random_scores(t, 3 + t % 17, t % 3 == 0 ? 6 : 40);
        for (double gap : {0.0, 5.0, 12.0}) {
            auto p = build_gap_pairs(scores, gap, 0, false, t);
            check_gap_invariants(scores, p, gap, all_indices(scores.size()));
            BOOST_TEST((p == build_gap_pairs(scores, gap, 0, false, t)));
            if (p != build_gap_pairs(scores, gap, 0, false, t + 1000)) some_seed_differs = true;
            // capped pool
            auto pool = capped_responses(scores, 6, true);
            auto pc = build_gap_pairs(scores, gap, 6, true, t);
            check_gap_invariants(scores, pc, gap, pool);
        }
    }
    BOOST_TEST(some_seed_differs);
}

BOOST_AUTO_TEST_CASE(divpo_counts_worked_example) {
    // method.md: n_max = 6, rho = 25: n = 4, 8, 12, 16 -> 2k = 4, 6, 6, 8 and 2m = 4, 6, 6, 6.
    const std::size_t n[] = {4, 8, 12, 16}, two_k[] = {4, 6, 6, 8}, two_m[] = {4, 6, 6, 6};
    for (int i = 0; i < 4; ++i) {
        DivpoCounts c = divpo_counts(n[i], 25, 6);
        BOOST_TEST(2 * c.k == two_k[i], "n = " << n[i]);
        BOOST_TEST(2 * c.m == two_m[i], "n = " << n[i]);
    }
    // defaults rho 25, n_max 4: n = 10 -> k = floor(min(5, max(2, 2.5))) = 2, m = 2
    BOOST_TEST(divpo_counts(10).k == 2u);
    BOOST_TEST(divpo_counts(10).m == 2u);
    BOOST_TEST(divpo_counts(1).m == 0u);
    BOOST_TEST(divpo_counts(2).m == 1u);
    BOOST_CHECK_THROW(divpo_counts(10, 0), Error);
    BOOST_CHECK_THROW(divpo_counts(10, 25, 1), Error);
}

BOOST_AUTO_TEST_CASE(divpo_selects_most_and_least_deviating) {
    // 16 responses, score = index; n_max 6 rho 25 -> k = 4, m = 3.
    // high set = {15, 14, 13, 12}, low set = {3, 2, 1, 0}.
    std::vector<double> scores(16);
    std::iota(scores.begin(), scores.end(), 0.0);
    const std::vector<double> dev = {0.5, 0.9, 0.1, 0.3, 0, 0, 0, 0, 0, 0, 0, 0, 0.8, 0.2, 0.6, 0.7};
    std::vector<std::set<std::size_t>> sets_seen;
    auto fn = [&](const std::vector<std::size_t>& members) {
        sets_seen.emplace_back(members.begin(), members.end());
        std::vector<double> d;
        for (std::size_t i : members) d.push_back(dev[i]);
        return d;
    };
    std::set<std::vector<Pair>> distinct;
    for (std::uint64_t seed = 0; seed < 20; ++seed) {
        sets_seen.clear();
        auto pairs = divpo_select(scores, fn, 25, 6, seed);
        BOOST_TEST_REQUIRE(pairs.size() == 3u);
        BOOST_TEST((sets_seen == std::vector<std::set<std::size_t>>{{12, 13, 14, 15}, {0, 1, 2, 3}}));
        std::set<std::size_t> chosen, rejected;
        for (const Pair& p : pairs) {
            chosen.insert(p.chosen);
            rejected.insert(p.rejected);
            BOOST_TEST(scores[p.chosen] > scores[p.rejected]);
        }
        BOOST_TEST((chosen == std::set<std::size_t>{12, 14, 15}));   // most deviating of the high set (13 drops out)
        BOOST_TEST((rejected == std::set<std::size_t>{0, 2, 3}));    // least deviating of the low set (1 drops out)
        BOOST_TEST((pairs == divpo_select(scores, fn, 25, 6, seed)));  // deterministic
        distinct.insert(pairs);
    }
    BOOST_TEST(distinct.size() > 1u);  // the pairing is random across seeds
    BOOST_TEST(divpo_select({3.0}, fn).empty());
}

namespace {
deviation::PromptResponses four_responses() {
    // sem embeddings: 0 and 1 orthogonal, 2 at 45 degrees, 3 far from all (opposite to 2).
    deviation::PromptResponses r{"p", {}};
    const std::vector<deviation::Embedding> e = {{2, 0}, {0, 0.5}, {3, 3}, {-1, -1}};
    for (std::size_t i = 0; i < e.size(); ++i) r.responses.push_back({"t" + std::to_string(i), double(i), {{"sem", e[i]}}});
    return r;
}
}  // namespace

BOOST_AUTO_TEST_CASE(weights_use_only_paired_responses) {
    deviation::PromptResponses r = four_responses();
    deviation::EmbeddingDeviation policy{};
    // One pair (1, 0): two responses -> weight 1, whatever response 2 and 3 look like.
    BOOST_TEST(chosen_weights(r, {{1, 0}}, policy) == std::vector<double>{1.0});
    // Pairs (0, 2), (1, 2) bring in responses {0, 2, 1} (response 3 stays out): over e0, e1, e2
    // the weights are (1.5, 1.5, 0), so both chosen responses weigh 1.5 (with response 3 they would not).
    auto w = chosen_weights(r, {{0, 2}, {1, 2}}, policy);
    BOOST_TEST_REQUIRE(w.size() == 2u);
    BOOST_TEST(close(w[0], 1.5));
    BOOST_TEST(close(w[1], 1.5));
    auto w2 = chosen_weights(r, {{2, 0}}, policy);
    BOOST_TEST(w2 == std::vector<double>{1.0});
    BOOST_TEST(chosen_weights(r, {{2, 0}, {1, 3}}, deviation::UniformWeight{}) == (std::vector<double>{1.0, 1.0}));
    BOOST_TEST(chosen_weights(r, {}, policy).empty());
}

// ---- files -------------------------------------------------------------------------------------
namespace {
struct TempDir : testing::TempDir {
    TempDir() : testing::TempDir("deviant_test_pairs") {}
};

std::vector<json> read_lines(const fs::path& p) {
    std::vector<json> out;
    std::ifstream in(p);
    std::string s;
    while (std::getline(in, s))
        if (!s.empty()) out.push_back(json::parse(s));
    return out;
}

// Reference weights for a pair file line: deviation weights over the responses (of `line`)
// whose texts appear in the output pairs of that prompt.
void check_pair_file(const fs::path& fixture, const std::vector<json>& out, bool divpo) {
    std::vector<json> in = read_lines(fixture);
    std::size_t used = 0;
    for (const json& line : in) {
        std::vector<json> mine;
        for (const json& p : out)
            if (p.at("prompt") == line.at("prompt")) mine.push_back(p);
        used += mine.size();
        const json& resp = line.at("responses");
        auto find = [&](const json& text) {
            for (std::size_t i = 0; i < resp.size(); ++i)
                if (resp[i].at("text") == text) return i;
            BOOST_FAIL("text not found");
            return std::size_t(0);
        };
        std::vector<std::size_t> members;
        for (const json& p : mine) {
            members.push_back(find(p.at("chosen")));
            members.push_back(find(p.at("rejected")));
            BOOST_TEST(p.at("chosen_score").get<double>() >= p.at("rejected_score").get<double>());
            if (!divpo) BOOST_TEST(p.at("chosen_score").get<double>() > p.at("rejected_score").get<double>());
            BOOST_TEST(p.at("chosen_score") == resp[members[members.size() - 2]].at("score"));
            BOOST_TEST(p.at("rejected_score") == resp[members.back()].at("score"));
        }
        BOOST_TEST(std::set<std::size_t>(members.begin(), members.end()).size() == members.size());  // disjoint
        if (!divpo) {  // gap pairing stops only when the unpaired responses all have the same score
            std::set<double> left;
            for (std::size_t i = 0; i < resp.size(); ++i)
                if (std::find(members.begin(), members.end(), i) == members.end()) left.insert(resp[i].at("score").get<double>());
            BOOST_TEST(left.size() <= 1u);
        }
        if (mine.empty()) continue;
        // independent weights: raw deviations of the members, over sem and sty
        std::vector<std::vector<double>> raw;
        for (const char* space : {"sem", "sty"}) {
            std::vector<deviation::Embedding> e;
            for (std::size_t i : members) e.push_back(resp[i].at("embedding").at(space).get<std::vector<double>>());
            raw.push_back(deviation::raw_deviation(e));
        }
        std::vector<double> w = deviation::deviation_weights(raw);
        for (std::size_t p = 0; p < mine.size(); ++p) BOOST_TEST(close(mine[p].at("weight").get<double>(), w[2 * p]));
    }
    BOOST_TEST(used == out.size());
}
}  // namespace

BOOST_AUTO_TEST_CASE(pairs_file_gap_and_divpo) {
    const fs::path fixture = fs::path(DEVIANT_TEST_DATA_DIR) / "deviation_fixture.jsonl";
    TempDir dir;
    PairsOptions gap;
    gap.seed = 3;
    std::size_t n = pairs_file(fixture, dir.path / "gap.jsonl", gap);
    std::vector<json> out = read_lines(dir.path / "gap.jsonl");
    BOOST_TEST(n == out.size());
    BOOST_TEST(n >= 1u + 2u + 2u + 1u + 2u);  // responses 2, 5, 4, 3, 6 (the last has two equal scores)
    for (const json& p : out)
        for (const char* key : {"prompt", "chosen", "rejected", "weight", "chosen_score", "rejected_score"}) BOOST_TEST(p.contains(key));
    check_pair_file(fixture, out, false);
    pairs_file(fixture, dir.path / "gap2.jsonl", gap);
    BOOST_TEST(read_lines(dir.path / "gap2.jsonl") == out);  // deterministic per seed

    PairsOptions unweighted = gap;
    unweighted.weights = false;
    pairs_file(fixture, dir.path / "unweighted.jsonl", unweighted);
    for (const json& p : read_lines(dir.path / "unweighted.jsonl")) BOOST_TEST(p.at("weight").get<double>() == 1.0);

    PairsOptions divpo;
    divpo.method = PairMethod::divpo;
    divpo.n_max = 4;
    std::size_t nd = pairs_file(fixture, dir.path / "divpo.jsonl", divpo);
    // n = 2, 5, 4, 3, 6 -> k = 1, 2, 2, 1, 2 -> m = 1, 2, 2, 1, 2
    BOOST_TEST(nd == 8u);
    check_pair_file(fixture, read_lines(dir.path / "divpo.jsonl"), true);
    BOOST_TEST(dir.entries() == 4u);
}

BOOST_AUTO_TEST_CASE(pairs_file_errors) {
    auto expect = [](const std::string& text, std::initializer_list<std::string> parts, PairsOptions opts = {}) {
        TempDir dir;
        fs::path in = dir.write("in.jsonl", text);
        try {
            pairs_file(in, dir.path / "out.jsonl", opts);
            BOOST_FAIL("no deviant::Error thrown");
        } catch (const Error& e) {
            std::string m = e.what();
            BOOST_TEST((m.find(in.string() + ":") != std::string::npos), m);
            for (const auto& p : parts) BOOST_TEST((m.find(p) != std::string::npos), "message '" << m << "' lacks '" << p << "'");
        }
        BOOST_TEST(dir.entries() == 1u);  // no output, no temporary file
    };
    const std::string ok = R"({"prompt": "p", "responses": [{"text": "a", "score": 1, "embedding": {"sem": [1, 0]}}, )"
                           R"({"text": "b", "score": 9, "embedding": {"sem": [0, 1]}}]})"
                           "\n";
    expect(ok + R"({"prompt": "p", "responses": [{"text": "a"}]})", {":2:", "response 0", "'score'"});
    expect(ok + R"({"responses": []})", {":2:", "'prompt'"});
    expect(ok + "not json\n", {":2:", "invalid JSON"});
    expect(ok + R"({"prompt": "p", "responses": [{"text": "a", "score": 1}, {"text": "b", "score": 9}]})", {":2:", "no embedding space"});
    PairsOptions sty;
    sty.deviation.spaces = {"sty"};
    expect(ok, {":1:", "response 0", "'sty'"}, sty);
    PairsOptions bad_rho;
    bad_rho.method = PairMethod::divpo;
    bad_rho.rho = 0;
    expect(ok, {":1:", "rho"}, bad_rho);

    // Without weights, gap pairing needs no embeddings.
    TempDir dir;
    fs::path in = dir.write("in.jsonl", R"({"prompt": "p", "responses": [{"text": "a", "score": 1}, {"text": "b", "score": 9}]})");
    PairsOptions plain;
    plain.weights = false;
    BOOST_TEST(pairs_file(in, dir.path / "out.jsonl", plain) == 1u);
    json p = read_lines(dir.path / "out.jsonl").at(0);
    BOOST_TEST(p.at("chosen") == "b");
    BOOST_TEST(p.at("rejected") == "a");
    BOOST_TEST(p.at("weight").get<double>() == 1.0);
}
