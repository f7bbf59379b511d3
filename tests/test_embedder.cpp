// Built-in embedder (eval/embedder.hpp) and `deviant embed`'s file step (eval/embed_file.hpp):
// sem/sty vectors, sem features and raw style statistics equal an independent NumPy
// reimplementation (tests/data/embedder/make_embedder_fixtures.py) within 1e-12; FNV-1a against
// published test vectors; similar texts closer than dissimilar ones; the style space separates
// dialogue from plain narration; both file schemas, kept fields, and the output read by
// `deviant deviation`; bad input errors naming the line and field, with no output left behind.
#define BOOST_TEST_MODULE embedder
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "expect_error.hpp"
#include "deviant/data/prepare.hpp"
#include "deviant/eval/embed_file.hpp"
#include "deviant/eval/embedder.hpp"

using namespace deviant;
using deviant::testing::throws_naming;
using namespace deviant::eval;
using deviant::data::json;

namespace {
const std::filesystem::path kDir = std::filesystem::path(DEVIANT_TEST_DATA_DIR) / "embedder";

json read_json(const std::filesystem::path& p) {
    std::ifstream in(p);
    BOOST_REQUIRE(in.is_open());
    return json::parse(in);
}

double cosine(const std::vector<double>& a, const std::vector<double>& b) {
    double ab = 0, aa = 0, bb = 0;
    for (std::size_t i = 0; i < a.size(); ++i) ab += a[i] * b[i], aa += a[i] * a[i], bb += b[i] * b[i];
    return ab / std::sqrt(aa * bb);
}

double norm(const std::vector<double>& a) {
    double s = 0;
    for (double x : a) s += x * x;
    return std::sqrt(s);
}

std::filesystem::path temp(const std::string& name) { return std::filesystem::temp_directory_path() / ("deviant_embed_" + name); }

void write_text(const std::filesystem::path& p, const std::string& s) {
    std::ofstream out(p, std::ios::binary);
    out << s;
}

}  // namespace

BOOST_AUTO_TEST_CASE(fnv1a64_published_vectors) {
    BOOST_TEST(fnv1a64("") == 0xcbf29ce484222325ull);
    BOOST_TEST(fnv1a64("a") == 0xaf63dc4c8601ec8cull);
    BOOST_TEST(fnv1a64("foobar") == 0x85944171f73967e8ull);
}

BOOST_AUTO_TEST_CASE(stop_words_sorted_for_binary_search) {
    BOOST_TEST(std::is_sorted(std::begin(kStopWords), std::end(kStopWords)));
    BOOST_TEST(is_stop_word("the"));
    BOOST_TEST(!is_stop_word("dragon"));
}

BOOST_AUTO_TEST_CASE(matches_numpy_reference) {
    const json cases = read_json(kDir / "expected.json");
    BOOST_REQUIRE(cases.size() >= 10u);
    for (const json& c : cases) {
        const std::string text = c["text"];
        BOOST_TEST_CONTEXT("text '" << text << "'") {
            // features with counts
            std::map<std::string, int> expected_features;
            for (const auto& [k, v] : c["sem_features"].items()) expected_features[k] = v.get<int>();
            BOOST_TEST((sem_features(text) == expected_features));
            // raw style statistics
            const auto f = style_features(text);
            BOOST_REQUIRE(c["style_features"].size() == kStyleFeatures);
            for (std::size_t k = 0; k < kStyleFeatures; ++k)
                BOOST_TEST(std::abs(f[k] - c["style_features"][k].get<double>()) <= 1e-12, "style feature " << k << ": " << f[k]);
            // vectors
            for (Space s : {Space::sem, Space::sty}) {
                const std::vector<double> v = embed(text, s);
                const json& ref = c[std::string(space_name(s))];
                BOOST_REQUIRE(v.size() == ref.size());
                BOOST_TEST(v.size() == (s == Space::sem ? kSemDim : kStyleDim));
                double worst = 0;
                for (std::size_t i = 0; i < v.size(); ++i) worst = std::max(worst, std::abs(v[i] - ref[i].get<double>()));
                BOOST_TEST(worst <= 1e-12, space_name(s) << " max abs difference " << worst);
                BOOST_TEST(std::abs(norm(v) - 1.0) <= 1e-12);
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(sem_hand_worked) {
    // "Dragons, dragons and the Sea": stop words and case go; tf("dragons") = 2.
    const auto f = sem_features("Dragons, dragons and the Sea");
    const std::map<std::string, int> expected{{"dragons", 2}, {"sea", 1}, {"dragons dragons", 1}, {"dragons sea", 1}};
    BOOST_TEST((f == expected));
    // One feature only: a signed unit vector at fnv1a64("dragon") % 256.
    const std::uint64_t h = fnv1a64("dragon");
    const std::vector<double> v = embed("DRAGON!", Space::sem);
    for (std::size_t i = 0; i < kSemDim; ++i) BOOST_TEST(v[i] == (i == h % kSemDim ? ((h >> 63) ? -1.0 : 1.0) : 0.0));
    // Texts without content words share the "<empty>" vector.
    BOOST_TEST(embed("", Space::sem) == embed("the and of a", Space::sem));
    BOOST_TEST(embed("Sea dragons", Space::sem) == embed("sea DRAGONS", Space::sem));
}

BOOST_AUTO_TEST_CASE(style_hand_worked) {
    // Two sentences of 3 and 1 words: mean 2, population std 1; 4 words of 3+3+2+3 bytes.
    const auto f = style_features("\"You saw me?\" Yes.");
    BOOST_TEST(f[kSentenceLengthMean] == 2.0);
    BOOST_TEST(f[kSentenceLengthStd] == 1.0);
    BOOST_TEST(f[kWordLengthMean] == 2.75);
    BOOST_TEST(f[kPeriodRate] == 0.25);
    BOOST_TEST(f[kQuoteRate] == 0.5);
    BOOST_TEST(f[kQuestionRate] == 0.25);
    BOOST_TEST(f[kSecondPersonRate] == 0.25);
    BOOST_TEST(f[kFirstPersonRate] == 0.25);
    BOOST_TEST(f[kCapitalisedRate] == 0.5);
    BOOST_TEST(std::abs(f[kDialogueFraction] - 11.0 / 18.0) <= 1e-15);  // "You saw me?" = 11 of 18 bytes
}

BOOST_AUTO_TEST_CASE(similar_texts_are_closer) {
    const std::string a = "Mara was afraid of the door at first. But when Mara opened the door, she found a staircase of light.";
    const std::string b = "Otto was scared of the door at first. But when Otto opened the door, he found a staircase of light.";
    const std::string c = "Form 27-B requires that the fog be reported within three business days; the clerk stamped it.";
    for (Space s : {Space::sem, Space::sty}) {
        BOOST_TEST(cosine(embed(a, s), embed(b, s)) > cosine(embed(a, s), embed(c, s)), space_name(s));
        BOOST_TEST(cosine(embed(a, s), embed(b, s)) > cosine(embed(b, s), embed(c, s)), space_name(s));
    }
    BOOST_TEST(cosine(embed(a, Space::sem), embed(b, Space::sem)) > 0.5);
    BOOST_TEST(cosine(embed(a, Space::sem), embed(c, Space::sem)) < 0.2);
}

BOOST_AUTO_TEST_CASE(style_separates_dialogue_from_narration) {
    const std::vector<std::string> dialogue = {
        "\"Is it supposed to hum?\" she asked. \"Only on Tuesdays,\" he said. \"Run!\"",
        "\"Where were you?\" \"Out.\" \"Out where?\" \"Just out, Mum!\"",
        "\"I told you,\" I said. \"You never listen.\" \"I'm listening now,\" you said.",
    };
    const std::vector<std::string> narration = {
        "The keeper climbed the long stairs of the lighthouse every evening and watched the grey water until the lamps were lit.",
        "For many years the village blacksmith worked alone in the forge, and the people of the valley brought him their broken tools.",
        "The museum was quiet after midnight, and the guard walked slowly through the empty rooms with a small torch in his hand.",
    };
    // Every text's nearest neighbour in the style space belongs to its own group.
    std::vector<std::string> all = dialogue;
    all.insert(all.end(), narration.begin(), narration.end());
    for (std::size_t i = 0; i < all.size(); ++i) {
        std::size_t best = i;
        double best_cos = -2;
        for (std::size_t j = 0; j < all.size(); ++j) {
            if (j == i) continue;
            const double c = cosine(embed(all[i], Space::sty), embed(all[j], Space::sty));
            if (c > best_cos) best_cos = c, best = j;
        }
        BOOST_TEST((best < 3) == (i < 3), "text " << i << " nearest " << best);
    }
}

BOOST_AUTO_TEST_CASE(unusual_texts_give_finite_unit_vectors) {
    for (const std::string t : {std::string(), std::string("..."), std::string("\xff\xfe\x80"), std::string(5000, 'a'),
                                std::string("one"), std::string("A\n\n\nB")})
        for (Space s : {Space::sem, Space::sty}) {
            const std::vector<double> v = embed(t, s);
            BOOST_TEST(std::all_of(v.begin(), v.end(), [](double x) { return std::isfinite(x); }));
            BOOST_TEST(std::abs(norm(v) - 1.0) <= 1e-12);
        }
}

BOOST_AUTO_TEST_CASE(space_names) {
    BOOST_TEST((parse_space("sem") == Space::sem));
    BOOST_TEST((parse_space("sty") == Space::sty));
    BOOST_TEST(space_name(Space::sty) == "sty");
    BOOST_TEST(throws_naming([] { parse_space("style"); }, {"style", "sem or sty"}));
}

BOOST_AUTO_TEST_CASE(embed_file_prompt_responses_schema) {
    const auto in = temp("pr_in.jsonl"), out = temp("pr_out.jsonl"), dev = temp("pr_dev.jsonl");
    write_text(in,
               "{\"prompt\": \"P\", \"id\": 7, \"responses\": [{\"text\": \"A dragon sleeps.\", \"score\": 3, \"embedding\": {\"x\": [1, 0]}},"
               " {\"text\": \"\\\"Wake up!\\\" she said.\", \"score\": 9}, {\"text\": \"The dragon sleeps soundly.\", \"score\": 1}]}\n"
               "\n"
               "{\"prompt\": \"Q\", \"responses\": [{\"text\": \"Only one.\", \"score\": 0}]}\n");
    const EmbedReport r = embed_file(in, out, {Space::sem, Space::sty});
    BOOST_TEST(r.lines == 2u);
    BOOST_TEST(r.texts == 4u);
    std::ifstream f(out);
    std::string l1, l2;
    std::getline(f, l1);
    std::getline(f, l2);
    const json a = json::parse(l1);
    BOOST_TEST(a["id"] == 7);
    BOOST_TEST(a["responses"][0]["embedding"]["x"] == json::array({1, 0}));  // kept
    for (std::size_t i = 0; i < 3; ++i) {
        const std::string text = a["responses"][i]["text"];
        BOOST_TEST(a["responses"][i]["embedding"]["sem"].get<std::vector<double>>() == embed(text, Space::sem));
        BOOST_TEST(a["responses"][i]["embedding"]["sty"].get<std::vector<double>>() == embed(text, Space::sty));
    }
    // `deviant deviation` reads it: the odd one out (dialogue) gets the largest weight.
    deviation::DeviationOptions o;
    o.spaces = {"sem", "sty"};
    data::deviation_file(out, dev, o);
    std::ifstream g(dev);
    std::string d1;
    std::getline(g, d1);
    const json d = json::parse(d1);
    BOOST_TEST(d["responses"][1]["weight"].get<double>() > d["responses"][0]["weight"].get<double>());
    BOOST_TEST(d["responses"][1]["weight"].get<double>() > d["responses"][2]["weight"].get<double>());
    for (auto p : {in, out, dev}) std::filesystem::remove(p);
}

BOOST_AUTO_TEST_CASE(embed_file_samples_schema) {
    const auto in = temp("s_in.jsonl"), out = temp("s_out.jsonl");
    write_text(in, "{\"prompt\": \"P\", \"samples\": [\"One story.\", \"\", \"Another, different story!\"]}\n");
    const EmbedReport r = embed_file(in, out, {Space::sty});
    BOOST_TEST(r.texts == 3u);
    std::ifstream f(out);
    std::string line;
    std::getline(f, line);
    const json a = json::parse(line);
    BOOST_TEST(!a["embeddings"].contains("sem"));
    BOOST_REQUIRE(a["embeddings"]["sty"].size() == 3u);
    BOOST_TEST(a["embeddings"]["sty"][2].get<std::vector<double>>() == embed("Another, different story!", Space::sty));
    BOOST_TEST(a["samples"].size() == 3u);
    for (auto p : {in, out}) std::filesystem::remove(p);
}

BOOST_AUTO_TEST_CASE(bad_input_errors) {
    const auto in = temp("bad_in.jsonl"), out = temp("bad_out.jsonl");
    std::filesystem::remove(out);
    const std::vector<Space> both{Space::sem, Space::sty};
    auto check = [&](const std::string& content, std::initializer_list<std::string> parts) {
        write_text(in, content);
        BOOST_TEST(throws_naming([&] { embed_file(in, out, both); }, parts), content);
        BOOST_TEST(!std::filesystem::exists(out));  // atomic: nothing left behind
    };
    check("{\"prompt\": \"P\", \"samples\": [\"a\"]}\n[1, 2]\n", {":2:", "JSON object"});
    check("{\"prompt\": \"P\"}\n", {":1:", "'responses'", "'samples'"});
    check("{\"prompt\": \"P\", \"responses\": [{\"score\": 1}]}\n", {":1:", "response 0", "'text'"});
    check("{\"prompt\": \"P\", \"responses\": [{\"text\": \"a\"}, {\"text\": 5}]}\n", {"response 1", "'text'"});
    check("{\"prompt\": \"P\", \"responses\": [{\"text\": \"a\", \"embedding\": [1]}]}\n", {"response 0", "'embedding'"});
    check("{\"prompt\": \"P\", \"responses\": 3}\n", {"'responses'", "array"});
    check("{\"prompt\": \"P\", \"samples\": [\"a\", null]}\n", {"sample 1", "string"});
    check("{\"prompt\": \"P\", \"samples\": [\"a\"]}\n{not json\n", {":2:", "invalid JSON"});
    BOOST_TEST(throws_naming([&] { embed_file(temp("does_not_exist.jsonl"), out, both); }, {"does_not_exist", "cannot open"}));
    write_text(in, "{\"prompt\": \"P\", \"samples\": [\"a\"]}\n");
    BOOST_TEST(throws_naming([&] { embed_file(in, out, {}); }, {"no embedding space"}));
    std::filesystem::remove(in);
}
