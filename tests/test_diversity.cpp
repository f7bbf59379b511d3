// Tests of deviant/eval/diversity.hpp and eval/samples_file.hpp: hand-worked values of each
// metric, every metric against the independent Python reference
// (tests/data/eval/make_diversity_fixture.py: NumPy, zlib, a plain LCS), and the errors of the
// samples-file reader.
#define BOOST_TEST_MODULE diversity
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "deviant/eval/samples_file.hpp"

using namespace deviant;
using namespace deviant::eval;
using nlohmann::json;

namespace {

const std::string data_dir = DEVIANT_TEST_DATA_DIR "/eval/";

json expected() {
    std::ifstream in(data_dir + "expected.json");
    BOOST_REQUIRE(in.good());
    return json::parse(in);
}

std::vector<std::vector<std::string>> words_of(const std::vector<std::string>& texts) {
    std::vector<std::vector<std::string>> out;
    for (const auto& t : texts) out.push_back(words(t));
    return out;
}

// Writes `text` to a temporary file and returns the error message of reading it ("" if none).
std::string read_error(const std::string& text, const std::vector<std::string>& required = {}) {
    auto path = std::filesystem::temp_directory_path() / fmt::format("deviant_diversity_{}.jsonl", ::getpid());
    {
        std::ofstream out(path);
        out << text;
    }
    std::string msg;
    try {
        read_sample_groups(path, required);
    } catch (const Error& e) {
        msg = e.what();
    }
    std::filesystem::remove(path);
    return msg;
}

}  // namespace

BOOST_AUTO_TEST_CASE(summary_and_interval) {
    std::vector<double> v{1, 2, 3, 4};
    MetricSummary s = summarize("x", v);
    // mean 2.5, sd sqrt(5/3), half-width 1.96 * sd / 2
    BOOST_TEST(s.mean == 2.5);
    BOOST_TEST(std::abs(s.sd - std::sqrt(5.0 / 3.0)) < 1e-12);
    BOOST_TEST(std::abs(s.ci_high - (2.5 + 0.98 * std::sqrt(5.0 / 3.0))) < 1e-12);
    BOOST_TEST(std::abs(s.ci_low - (2.5 - 0.98 * std::sqrt(5.0 / 3.0))) < 1e-12);
    BOOST_TEST(s.n == 4);
    std::vector<double> one{7};
    MetricSummary t = summarize("y", one);
    BOOST_TEST((t.mean == 7 && t.ci_low == 7 && t.ci_high == 7));
}

BOOST_AUTO_TEST_CASE(cosine_distance_by_hand) {
    std::vector<double> a{1, 0}, b{0, 2}, c{3, 0}, d{-1, 0};
    BOOST_TEST(std::abs(cosine_distance(a, b) - 1.0) < 1e-15);
    BOOST_TEST(std::abs(cosine_distance(a, c)) < 1e-15);
    BOOST_TEST(std::abs(cosine_distance(a, d) - 2.0) < 1e-15);
    // pairs (a,b) 1, (a,c) 0, (b,c) 1: mean 2/3
    BOOST_TEST(std::abs(mean_pairwise_cosine_distance({a, b, c}) - 2.0 / 3.0) < 1e-15);
    std::vector<double> zero{0, 0}, three{1, 2, 3};
    BOOST_CHECK_THROW(cosine_distance(a, zero), Error);
    BOOST_CHECK_THROW(cosine_distance(a, three), Error);
    BOOST_CHECK_THROW(mean_pairwise_cosine_distance({a}), Error);
}

BOOST_AUTO_TEST_CASE(words_ngrams_and_rouge_by_hand) {
    auto w = words("  The cat\tSAT\n on the  mat ");
    BOOST_TEST(w == (std::vector<std::string>{"the", "cat", "sat", "on", "the", "mat"}), boost::test_tools::per_element());
    BOOST_TEST(words("Été ÉTÉ") == (std::vector<std::string>{"Été", "ÉtÉ"}), boost::test_tools::per_element());  // ASCII only
    // samples "a b a" and "a b": unigrams a b a a b (2 unique / 5), bigrams ab ba ab (2 / 3),
    // trigrams aba (1 / 1), no 4-grams
    std::vector<std::vector<std::string>> s{{"a", "b", "a"}, {"a", "b"}};
    BOOST_TEST(*distinct_n(s, 1) == 0.4);
    BOOST_TEST(std::abs(*distinct_n(s, 2) - 2.0 / 3.0) < 1e-15);
    BOOST_TEST(*distinct_n(s, 3) == 1.0);
    BOOST_TEST(!distinct_n(s, 4).has_value());
    // LCS of "a b c d e" and "a c e f": a c e = 3; P = 3/4, R = 3/5, F1 = 2PR/(P+R) = 2/3
    std::vector<std::string> x{"a", "b", "c", "d", "e"}, y{"a", "c", "e", "f"};
    BOOST_TEST(lcs_length(x, y) == 3u);
    BOOST_TEST(std::abs(rouge_l_f1(x, y) - 2.0 / 3.0) < 1e-15);
    BOOST_TEST(std::abs(rouge_l_f1(y, x) - 2.0 / 3.0) < 1e-15);
    BOOST_TEST(rouge_l_f1(x, {}) == 0.0);
    BOOST_TEST(rouge_l_f1(x, {"z"}) == 0.0);
    BOOST_TEST(homogenization({x, x, x}) == 1.0);
}

BOOST_AUTO_TEST_CASE(compression_by_hand) {
    // a long repetition compresses far better than varied text
    std::string rep;
    for (int i = 0; i < 200; ++i) rep += "the same words again ";
    BOOST_TEST(compression_ratio({rep}) > 10.0);
    // gzip stream of an empty input: 10-byte header, 2-byte empty final block, 8-byte trailer
    BOOST_TEST(gzip_size("") == 20u);
    // joined with one space: "ab" + " " + "cd" is 5 bytes
    BOOST_TEST(std::abs(compression_ratio({"ab", "cd"}) - 5.0 / double(gzip_size("ab cd"))) < 1e-15);
}

BOOST_AUTO_TEST_CASE(metrics_match_python_reference) {
    auto groups = read_sample_groups(data_dir + "groups.jsonl", {"sem", "sty"});
    json want = expected();
    BOOST_REQUIRE_EQUAL(groups.size(), want["per_group"].size());
    for (std::size_t g = 0; g < groups.size(); ++g) {
        const json& row = want["per_group"][g];
        auto w = words_of(groups[g].samples);
        BOOST_TEST_CONTEXT("group " << g) {
            BOOST_TEST(std::abs(compression_ratio(groups[g].samples) - row["compression_ratio"].get<double>()) < 1e-12);
            for (int n = 1; n <= 4; ++n) {
                auto d = distinct_n(w, n);
                std::string key = "distinct_" + std::to_string(n);
                BOOST_TEST(d.has_value() == row.contains(key));
                if (d && row.contains(key)) BOOST_TEST(std::abs(*d - row[key].get<double>()) < 1e-12);
            }
            if (row.contains("homogenization")) BOOST_TEST(std::abs(homogenization(w) - row["homogenization"].get<double>()) < 1e-12);
            if (row.contains("cosine_distance_sem"))
                BOOST_TEST(std::abs(mean_pairwise_cosine_distance(groups[g].embeddings.at("sem")) - row["cosine_distance_sem"].get<double>()) <
                           1e-12);
        }
    }
    auto report = diversity_report(groups, {"sem", "sty"});
    BOOST_REQUIRE_EQUAL(report.size(), want["metrics"].size());
    for (const MetricSummary& m : report) {
        BOOST_TEST_CONTEXT(m.name) {
            BOOST_REQUIRE(want["metrics"].contains(m.name));
            const json& e = want["metrics"][m.name];
            BOOST_TEST(std::abs(m.mean - e["mean"].get<double>()) < 1e-12);
            BOOST_TEST(std::abs(m.sd - e["sd"].get<double>()) < 1e-12);
            BOOST_TEST(std::abs(m.ci_low - e["ci_low"].get<double>()) < 1e-12);
            BOOST_TEST(std::abs(m.ci_high - e["ci_high"].get<double>()) < 1e-12);
            BOOST_TEST(m.n == e["n"].get<std::int64_t>());
        }
    }
    BOOST_CHECK_THROW(diversity_report(groups, {"missing"}), Error);
}

BOOST_AUTO_TEST_CASE(samples_file_round_trip_and_errors) {
    auto groups = read_sample_groups(data_dir + "groups.jsonl");
    auto path = std::filesystem::temp_directory_path() / fmt::format("deviant_diversity_rt_{}.jsonl", ::getpid());
    groups[0].samples[0] += std::string("\xE2\x82", 2);  // a sample cut inside a character
    write_sample_groups(path, groups);
    auto back = read_sample_groups(path, {"sem"});
    std::filesystem::remove(path);
    BOOST_REQUIRE_EQUAL(back.size(), groups.size());
    BOOST_TEST(back[1].samples == groups[1].samples, boost::test_tools::per_element());
    BOOST_TEST(back[1].embeddings.at("sty") == groups[1].embeddings.at("sty"));
    BOOST_TEST(back[0].samples[0].ends_with("\xEF\xBF\xBD"));

    BOOST_TEST(read_error("").find("empty") != std::string::npos);
    BOOST_TEST(read_error("{\"prompt\": \"p\"}\n").find(":1: missing field 'samples'") != std::string::npos);
    BOOST_TEST(read_error("{\"samples\": [\"a\"]}\n{\"samples\": [\"a\", 3]}\n").find(":2: field 'samples[1]' must be a string") !=
               std::string::npos);
    BOOST_TEST(read_error("{\"samples\": [\"a\", \"b\"], \"embeddings\": {\"sem\": [[1, 2]]}}\n").find("'embeddings.sem' has 1 vectors for 2 samples") !=
               std::string::npos);
    BOOST_TEST(read_error("{\"samples\": [\"a\", \"b\"], \"embeddings\": {\"sem\": [[1, 2], [1, \"x\"]]}}\n").find("'embeddings.sem[1][1]' must be a number") !=
               std::string::npos);
    BOOST_TEST(read_error("{\"samples\": [\"a\", \"b\"], \"embeddings\": {\"sem\": [[1, 2], [1]]}}\n").find("has 1 dimensions") !=
               std::string::npos);
    BOOST_TEST(read_error("{\"samples\": [\"a\"]}\n", {"sem"}).find(":1: missing field 'embeddings.sem'") != std::string::npos);
    BOOST_TEST(read_error("[1, 2]\n").find(":1: expected a JSON object") != std::string::npos);
    BOOST_TEST(read_error("{\"samples\": [\"a\"]}\n{oops\n").find(":2: invalid JSON") != std::string::npos);
}
