// Deviation weights: hand-worked values, error messages, the NumPy reference fixture and the
// `deviant deviation` file function (errors name FILE:LINE, output never half-written).
#define BOOST_TEST_MODULE deviation
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>

#include "deviant/data/prepare.hpp"
#include "deviant/deviation/deviation.hpp"
#include "temp_dir.hpp"

using namespace deviant;
using namespace deviant::deviation;
namespace fs = std::filesystem;
using deviant::data::json;

namespace {
bool close(double a, double b, double tol = 1e-12) { return std::abs(a - b) <= tol; }

void check_all_close(const std::vector<double>& got, const std::vector<double>& want, double tol = 1e-12) {
    BOOST_TEST_REQUIRE(got.size() == want.size());
    for (std::size_t i = 0; i < got.size(); ++i) BOOST_TEST(close(got[i], want[i], tol), "index " << i << ": " << got[i] << " vs " << want[i]);
}

double sum(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0); }

// Checks that `f` throws deviant::Error whose message contains every one of `parts`.
template <class F>
void expect_error(F&& f, std::initializer_list<std::string> parts) {
    try {
        f();
    } catch (const Error& e) {
        std::string m = e.what();
        for (const auto& p : parts) BOOST_TEST((m.find(p) != std::string::npos), "message '" << m << "' lacks '" << p << "'");
        return;
    }
    BOOST_FAIL("no deviant::Error thrown");
}

struct TempDir : testing::TempDir {
    TempDir() : testing::TempDir("deviant_test_deviation") {}
};

// Three vectors: e0 and e1 orthogonal, e2 at 45 degrees to both (unnormalised on purpose).
// d0 = d1 = ((1 - 0) + (1 - 1/sqrt2)) / 2, d2 = 1 - 1/sqrt2.
const std::vector<Embedding> three = {{2, 0}, {0, 0.5}, {3, 3}};

PromptResponses responses_with(std::vector<std::map<std::string, Embedding>> embeddings) {
    PromptResponses r{"p", {}};
    for (auto& e : embeddings) r.responses.push_back({"t", 0.0, std::move(e)});
    return r;
}
}  // namespace

BOOST_AUTO_TEST_CASE(raw_deviation_hand_worked) {
    const double c = 1.0 / std::sqrt(2.0);
    check_all_close(raw_deviation(three), {(2.0 - c) / 2.0, (2.0 - c) / 2.0, 1.0 - c});
    check_all_close(raw_deviation({{1, 2, 3}}), {0.0});                         // N = 1: no other response
    check_all_close(raw_deviation({{1, 0}, {-1, 0}}), {2.0, 2.0});             // opposite vectors
    check_all_close(raw_deviation({{1, 1}, {5, 5}, {0.1, 0.1}}), {0, 0, 0}, 1e-15);  // same direction
}

BOOST_AUTO_TEST_CASE(raw_deviation_errors) {
    expect_error([] { raw_deviation({}); }, {"at least 1 response"});
    expect_error([] { raw_deviation({{1, 0}, {0, 0}, {1, 1}}); }, {"response 1", "zero embedding"});
    expect_error([] { raw_deviation({{1, 0}, {0, 1}, {1, 1, 1}}); }, {"response 2", "length 3", "length 2"});
    expect_error([] { raw_deviation({{1, 0}, {0, NAN}}); }, {"response 1", "non-finite"});
}

BOOST_AUTO_TEST_CASE(rescale_to_minus_one_one) {
    check_all_close(rescale_min_max({0.1, 0.3, 0.2}), {-1.0, 1.0, 0.0});
    check_all_close(rescale_min_max({0.4, 0.4, 0.4}), {0.0, 0.0, 0.0});
}

BOOST_AUTO_TEST_CASE(least_deviating_gets_zero_and_weights_sum_to_n) {
    // rescaled: (1, 1, -1) -> w = 3 (s + 1) / sum(s + 1) = 3 (2, 2, 0) / 4
    std::vector<double> w = deviation_weights({raw_deviation(three)});
    check_all_close(w, {1.5, 1.5, 0.0});
    BOOST_TEST(close(sum(w), 3.0));
}

BOOST_AUTO_TEST_CASE(two_responses_weigh_one_each) {
    check_all_close(deviation_weights({raw_deviation({{1, 0}, {0.3, 0.9}})}), {1.0, 1.0});
    check_all_close(deviation_weights({raw_deviation({{1, 0}, {0.3, 0.9}}), raw_deviation({{1, 2, 3}, {-1, 0, 2}})}), {1.0, 1.0});
    check_all_close(deviation_weights({raw_deviation({{1, 0}})}), {1.0});
}

BOOST_AUTO_TEST_CASE(all_equal_scores_weigh_one) {
    check_all_close(normalise_weights({0.3, 0.3, 0.3, 0.3}), {1, 1, 1, 1});
    check_all_close(normalise_weights({-1, -1}), {1, 1});
    check_all_close(normalise_weights({0.5, 0.5}, 1.0), {1.0, 1.0});  // the floor still applies (at most 1)
    expect_error([] { normalise_weights({0.5, 0.5}, 1.5); }, {"floor"});  // weights average 1: a floor above lifts them all
}

BOOST_AUTO_TEST_CASE(geometric_mean_of_two_spaces) {
    // [0,1] scale: space A (1, 0.75, 0), space B (1, 0.25, 0.5) -> g = (1, sqrt(3)/4, 0)
    std::vector<double> s = combine_spaces({{1.0, 0.5, -1.0}, {1.0, -0.5, 0.0}});
    check_all_close(s, {1.0, std::sqrt(3.0) / 2.0 - 1.0, -1.0});
    const double total = 2.0 + std::sqrt(3.0) / 2.0;  // sum of (s + 1)
    std::vector<double> w = normalise_weights(s);
    check_all_close(w, {3.0 * 2.0 / total, 3.0 * (std::sqrt(3.0) / 2.0) / total, 0.0});
    // Opposite extremes in two spaces: both ends get g = 0, the middle one takes all the weight.
    check_all_close(deviation_weights({{0.1, 0.2, 0.3}, {0.9, 0.5, 0.1}}), {0.0, 3.0, 0.0});
    expect_error([] { combine_spaces({}); }, {"at least 1 embedding space"});
    expect_error([] { combine_spaces({{0, 1}, {0, 1, 1}}); }, {"space 1 has 3 responses"});
}

BOOST_AUTO_TEST_CASE(floor_raises_small_weights) {
    check_all_close(deviation_weights({raw_deviation(three)}, 0.2), {1.5, 1.5, 0.2});
    check_all_close(normalise_weights({1.0, -1.0, 0.0}, 0.2), {2.0, 0.2, 1.0});  // 3 (2, 0, 1) / 3
    expect_error([] { normalise_weights({0, 1}, -0.1); }, {"floor"});
}

BOOST_AUTO_TEST_CASE(policies) {
    PromptResponses r = responses_with({{{"sem", {2, 0}}, {"sty", {1, 0}}},
                                        {{"sem", {0, 0.5}}, {"sty", {1, 0.1}}},
                                        {{"sem", {3, 3}}, {"sty", {0, 1}}, {"only_here", {1}}}});
    EmbeddingDeviation sem{{{"sem"}, 0.0}};
    check_all_close(sem.weights(r), {1.5, 1.5, 0.0});
    EmbeddingDeviation both{};  // default: sem and sty (only_here is not in every response)
    BOOST_TEST((resolve_spaces(r, both.opts) == std::vector<std::string>{"sem", "sty"}));
    std::vector<double> expected = deviation_weights({raw_deviation({{2, 0}, {0, 0.5}, {3, 3}}), raw_deviation({{1, 0}, {1, 0.1}, {0, 1}})});
    check_all_close(both.weights(r), expected);
    BOOST_TEST(close(sum(both.weights(r)), 3.0));
    check_all_close(UniformWeight{}.weights(r), {1, 1, 1});

    expect_error([&] { EmbeddingDeviation{{{"sem", "only_here"}, 0.0}}.weights(r); }, {"response 0", "'only_here'"});
    PromptResponses bad = responses_with({{{"sem", {1, 0}}}, {{"sem", {1, 0, 0}}}});
    expect_error([&] { EmbeddingDeviation{}.weights(bad); }, {"space 'sem'", "response 1", "length 3"});
    expect_error([&] { EmbeddingDeviation{}.weights(responses_with({{{"a", {1.0}}}, {{"b", {1.0}}}})); }, {"no embedding space"});
}

// ---- files -------------------------------------------------------------------------------------
namespace {
std::vector<json> read_lines(const fs::path& p) {
    std::vector<json> out;
    std::ifstream in(p);
    std::string s;
    while (std::getline(in, s))
        if (!s.empty()) out.push_back(json::parse(s));
    return out;
}

// Structural equality; numbers compared within tol.
void check_json_close(const json& got, const json& want, const std::string& where, double tol = 1e-12) {
    if (want.is_number()) {
        BOOST_TEST_REQUIRE(got.is_number(), where << ": not a number");
        BOOST_TEST(close(got.get<double>(), want.get<double>(), tol), where << ": " << got << " vs " << want);
    } else if (want.is_object()) {
        BOOST_TEST_REQUIRE(got.is_object(), where << ": not an object");
        BOOST_TEST(got.size() == want.size(), where << ": keys differ: " << got.dump().substr(0, 200));
        for (const auto& [k, v] : want.items()) {
            BOOST_TEST_REQUIRE(got.contains(k), where << ": missing " << k);
            check_json_close(got.at(k), v, where + "." + k, tol);
        }
    } else if (want.is_array()) {
        BOOST_TEST_REQUIRE(got.is_array(), where << ": not an array");
        BOOST_TEST_REQUIRE(got.size() == want.size(), where << ": length differs");
        for (std::size_t i = 0; i < want.size(); ++i) check_json_close(got[i], want[i], where + "[" + std::to_string(i) + "]", tol);
    } else {
        BOOST_TEST(got == want, where << ": " << got << " vs " << want);
    }
}

void check_against_reference(const deviation::DeviationOptions& opts, const char* expected_name) {
    TempDir dir;
    const fs::path data = DEVIANT_TEST_DATA_DIR;
    data::deviation_file(data / "deviation_fixture.jsonl", dir.path / "out.jsonl", opts);
    std::vector<json> got = read_lines(dir.path / "out.jsonl"), want = read_lines(data / expected_name);
    BOOST_TEST_REQUIRE(want.size() == 5u);
    BOOST_TEST_REQUIRE(got.size() == want.size());
    for (std::size_t i = 0; i < want.size(); ++i) check_json_close(got[i], want[i], "line " + std::to_string(i + 1));
    BOOST_TEST(dir.entries() == 1u);  // no temporary file left behind
}
}  // namespace

BOOST_AUTO_TEST_CASE(numpy_reference_default_spaces) { check_against_reference({}, "deviation_expected.jsonl"); }

BOOST_AUTO_TEST_CASE(numpy_reference_one_space_with_floor) { check_against_reference({{"sem"}, 0.2}, "deviation_expected_sem_floor.jsonl"); }

namespace {
const char* good_line = R"({"prompt": "p", "responses": [{"text": "a", "embedding": {"sem": [1, 0], "sty": [1, 2]}}, )"
                        R"({"text": "b", "embedding": {"sem": [0, 1], "sty": [2, 1]}}]})";

// deviation_file on `text` must fail with all of `parts` in the message and create no output.
void expect_file_error(const std::string& text, std::initializer_list<std::string> parts, deviation::DeviationOptions opts = {}) {
    TempDir dir;
    fs::path in = dir.write("in.jsonl", text);
    std::vector<std::string> all(parts);
    all.insert(all.begin(), in.string() + ":");
    try {
        data::deviation_file(in, dir.path / "out.jsonl", opts);
        BOOST_FAIL("no deviant::Error thrown");
    } catch (const Error& e) {
        std::string m = e.what();
        for (const auto& p : all) BOOST_TEST((m.find(p) != std::string::npos), "message '" << m << "' lacks '" << p << "'");
    }
    BOOST_TEST(!fs::exists(dir.path / "out.jsonl"));
    BOOST_TEST(dir.entries() == 1u);  // only the input: the temporary output was removed
}
}  // namespace

BOOST_AUTO_TEST_CASE(file_errors_name_file_and_line) {
    const std::string good = std::string(good_line) + "\n";
    expect_file_error(good + "\n" + "{\"prompt\": \"p\", \"responses\": [\n", {":3:", "invalid JSON"});
    expect_file_error(good + good +
                          R"({"prompt": "p", "responses": [{"embedding": {"sem": [1, 0]}}, {"embedding": {"sem": [0, 1], "sty": [1]}}]})",
                      {":3:", "response 0", "'sty'"}, {{"sem", "sty"}, 0.0});
    expect_file_error(R"({"prompt": "p", "responses": [{"embedding": {"sem": [1, 0]}}, {"embedding": {"sem": [0, 1, 2]}}]})",
                      {":1:", "space 'sem'", "response 1", "length 3"});
    expect_file_error(R"({"prompt": "p", "responses": [{"embedding": {"sem": [1, "x"]}}]})", {":1:", "response 0", "value 1"});
    expect_file_error(R"({"prompt": "p", "responses": []})", {":1:", "at least 1 response"});
    expect_file_error(R"([1, 2])", {":1:", "JSON object"});
    expect_file_error(R"({"prompt": "p"})", {":1:", "'responses'"});
    expect_file_error(R"({"prompt": "p", "responses": [{"embedding": {"sem": [0, 0]}}, {"embedding": {"sem": [0, 1]}}]})",
                      {":1:", "response 0", "zero embedding"});

    TempDir dir;
    expect_error([&] { data::deviation_file(dir.path / "missing.jsonl", dir.path / "out.jsonl", {}); }, {"missing.jsonl", "cannot open"});
    BOOST_TEST(dir.entries() == 0u);
}

BOOST_AUTO_TEST_CASE(file_keeps_fields_and_skips_blank_lines) {
    TempDir dir;
    fs::path in = dir.write("in.jsonl", std::string("\n") + good_line + "\r\n   \n" + good_line + "\n");
    std::ofstream(dir.path / "out.jsonl") << "old content\n";  // replaced atomically
    data::deviation_file(in, dir.path / "out.jsonl", {{"sty"}, 0.0});
    std::vector<json> out = read_lines(dir.path / "out.jsonl");
    BOOST_TEST_REQUIRE(out.size() == 2u);
    for (const json& line : out) {
        BOOST_TEST(line.at("prompt") == "p");
        const json& r = line.at("responses");
        BOOST_TEST(r[0].at("text") == "a");
        BOOST_TEST(r[1].at("embedding").at("sem").size() == 2u);
        BOOST_TEST(r[0].at("deviation").size() == 1u);  // only the listed space
        // sty: cos((1,2), (2,1)) = 4/5 -> d = 0.2 for both; N = 2 -> weight 1
        BOOST_TEST(close(r[0].at("deviation").at("sty").get<double>(), 0.2));
        BOOST_TEST(close(r[1].at("deviation").at("sty").get<double>(), 0.2));
        BOOST_TEST(r[0].at("weight").get<double>() == 1.0);
        BOOST_TEST(r[1].at("weight").get<double>() == 1.0);
    }
    BOOST_TEST(dir.entries() == 2u);
}
