// WritingPrompts preparation: tag removal and prompt assembly, moderator / empty / over-long
// drops (counted), the deterministic split by prompt (FNV-1a against published test vectors,
// ratio on a generated set, independence from order and duplicates), malformed lines (error
// naming FILE:LINE, or skipped and counted), the prompt/responses output read back by the
// `deviant deviation` parser, and the text-pair reader. Fixtures: tests/data/writing_prompts/
// (written by make_fixtures.py there).
#define BOOST_TEST_MODULE writing_prompts
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>

#include "expect_error.hpp"
#include "deviant/data/prepare.hpp"
#include "deviant/data/writing_prompts.hpp"

using namespace deviant;
using deviant::testing::throws_naming;
using namespace deviant::data;

namespace {
const std::filesystem::path kDir = std::filesystem::path(DEVIANT_TEST_DATA_DIR) / "writing_prompts";

std::filesystem::path temp(const std::string& name) { return std::filesystem::temp_directory_path() / ("deviant_wp_" + name); }
}  // namespace

BOOST_AUTO_TEST_CASE(tag_removal_and_prompt) {
    BOOST_TEST(wp::strip_tag("[WP] A dragon") == "A dragon");
    BOOST_TEST(wp::strip_tag("[WP]A dragon") == "A dragon");
    BOOST_TEST(wp::strip_tag("  [EU]   Harry ") == "Harry");
    BOOST_TEST(wp::strip_tag("[WP] [TT] Two tags") == "[TT] Two tags");  // only the leading tag
    BOOST_TEST(wp::strip_tag("No tag [not a tag]") == "No tag [not a tag]");
    BOOST_TEST(wp::strip_tag("[unclosed tag") == "[unclosed tag");
    BOOST_TEST(wp::make_prompt("[WP] Title", "Body.") == "Title\nBody.");
    BOOST_TEST(wp::make_prompt("[WP] Title", "  ") == "Title");
    BOOST_TEST(wp::words("  one two\nthree\t four ") == 4u);
    BOOST_TEST(wp::code_points("h\xC3\xA9llo") == 5u);  // é is one code point of two bytes
}

BOOST_AUTO_TEST_CASE(cleaning_the_fixture) {
    WritingPromptsOptions o;
    o.max_response_words = 10;
    o.test_fraction = 0.0;  // everything in train, to look at the content
    WritingPromptsReport r;
    auto prompts = read_writing_prompts(kDir / "sample.jsonl", o, &r);
    BOOST_REQUIRE(prompts.size() == 2u);
    // line 1: moderator and whitespace comments dropped, order and scores kept
    BOOST_TEST(prompts[0].prompt == "A dragon wakes up in a library\nIt has been asleep for a thousand years.");
    BOOST_TEST(prompts[0].texts == std::vector<std::string>({"The dragon opened one eye and saw the shelves.",
                                                             "Dust fell like snow as the dragon stretched.",
                                                             "She read every book before the librarian noticed."}),
               boost::test_tools::per_element());
    BOOST_TEST(prompts[0].scores == std::vector<double>({12, 30, 7}), boost::test_tools::per_element());
    BOOST_TEST(prompts[0].line == 1u);
    // line 2: the 12-word comment is over the limit, leaving one response: prompt dropped;
    // line 3: two moderator comments leave one: dropped; line 4: no tag, all kept
    BOOST_TEST(prompts[1].prompt == "No tag at all [not a tag]\nBody text.");
    BOOST_TEST(prompts[1].scores == std::vector<double>({3, -2, 8.5}), boost::test_tools::per_element());
    BOOST_TEST(prompts[1].line == 4u);
    BOOST_TEST(r.lines == 4u);
    BOOST_TEST(r.dropped_moderator == 3u);
    BOOST_TEST(r.dropped_empty == 1u);
    BOOST_TEST(r.dropped_too_long == 1u);
    BOOST_TEST(r.dropped_prompts == 2u);
    BOOST_TEST(r.train_prompts == 2u);
    BOOST_TEST(r.test_prompts == 0u);
    BOOST_TEST(r.responses == 6u);
    // a character limit instead, and min_responses 1: the moon prompt stays with its one story
    WritingPromptsOptions c;
    c.max_response_chars = 47;
    c.min_responses = 1;
    c.test_fraction = 0.0;
    auto kept = read_writing_prompts(kDir / "sample.jsonl", c, &r);
    BOOST_REQUIRE(kept.size() == 4u);
    BOOST_TEST(kept[0].texts.size() == 2u);  // 46 and 44 characters kept, 49 over the limit of 47
    BOOST_TEST(kept[1].prompt == "Harry Potter, but the wand chooses wrong");
    BOOST_TEST(kept[1].texts.size() == 1u);  // 62 characters: dropped; 38: kept
    BOOST_TEST(kept[2].prompt == "The moon sends an apology letter\nDear Earth,");
    BOOST_TEST(kept[2].texts == std::vector<std::string>({"Sorry about the tides."}), boost::test_tools::per_element());
    BOOST_TEST(r.dropped_too_long == 2u);
}

BOOST_AUTO_TEST_CASE(split_is_deterministic_and_by_prompt) {
    // FNV-1a 64 published test vectors: the hash is the same everywhere.
    BOOST_TEST(wp::fnv1a64("") == 0xcbf29ce484222325ull);
    BOOST_TEST(wp::fnv1a64("a") == 0xaf63dc4c8601ec8cull);
    BOOST_TEST(wp::fnv1a64("foobar") == 0x85944171f73967e8ull);
    const std::size_t n = 4000;
    std::size_t test = 0, test_seed = 0, moved = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const std::string p = "Prompt number " + std::to_string(i) + "\nsome text";
        const bool t = in_test_split(p, 0.1);
        BOOST_TEST(in_test_split(p, 0.1) == t);  // repeatable
        test += t;
        const bool ts = in_test_split(p, 0.1, 7);
        test_seed += ts;
        moved += ts != t;
        BOOST_TEST((!in_test_split(p, 0.05) || t));  // a smaller fraction holds out a subset
        BOOST_TEST(!in_test_split(p, 0.0));
        BOOST_TEST(in_test_split(p, 1.0));
    }
    // 10% +- 5 standard deviations (sqrt(4000 * 0.09) = 19)
    BOOST_TEST(test > 305u);
    BOOST_TEST(test < 495u);
    BOOST_TEST(test_seed > 305u);
    BOOST_TEST(test_seed < 495u);
    BOOST_TEST(moved > 100u);  // another seed holds out other prompts

    // Through the reader: duplicate prompts land on the same side; counts match the split.
    auto path = temp("generated.jsonl");
    {
        std::ofstream out(path);
        for (std::size_t i = 0; i < 600; ++i) {
            json line{{"post_title", "[WP] Story " + std::to_string(i % 300)}, {"post_text", ""},
                      {"comment_texts", {"first " + std::to_string(i), "second"}}, {"comment_scores", {1, 2}}};
            out << line.dump() << "\n";
        }
    }
    WritingPromptsOptions o;
    WritingPromptsReport r;
    auto prompts = read_writing_prompts(path, o, &r);
    BOOST_REQUIRE(prompts.size() == 600u);
    for (std::size_t i = 0; i < 300; ++i) {
        BOOST_TEST(prompts[i].test == prompts[i + 300].test);
        BOOST_TEST(prompts[i].test == in_test_split("Story " + std::to_string(i), 0.1));
    }
    BOOST_TEST(r.train_prompts + r.test_prompts == 600u);
    BOOST_TEST(r.test_prompts > 0u);
    BOOST_TEST(r.train_prompts > r.test_prompts * 4);
    std::filesystem::remove(path);
}

BOOST_AUTO_TEST_CASE(malformed_lines) {
    WritingPromptsOptions o;
    BOOST_TEST(throws_naming([&] { read_writing_prompts(kDir / "malformed.jsonl", o); }, {"malformed.jsonl:2:", "parse error"}));
    o.skip_bad_lines = true;
    WritingPromptsReport r;
    auto prompts = read_writing_prompts(kDir / "malformed.jsonl", o, &r);
    BOOST_TEST(prompts.size() == 2u);
    BOOST_TEST(r.skipped_lines == 3u);
    BOOST_TEST(r.skipped_line_numbers == std::vector<std::size_t>({2, 4, 5}), boost::test_tools::per_element());
    BOOST_TEST(r.lines == 5u);  // the blank line is not a line of data
    BOOST_TEST(r.summary().find("skipped 3 malformed lines") != std::string::npos);
    BOOST_TEST(prompts[1].line == 6u);
    // each kind of problem names its line and field
    auto bad = temp("bad.jsonl");
    auto expect = [&](const std::string& content, std::initializer_list<std::string> parts) {
        std::ofstream(bad) << content;
        return throws_naming([&] { read_writing_prompts(bad, WritingPromptsOptions{}); }, parts);
    };
    BOOST_TEST(expect(R"({"post_title":"t","post_text":"","comment_texts":["a","b"],"comment_scores":[1]})", {":1:", "'comment_scores' has 1"}));
    BOOST_TEST(expect("\n" R"({"post_title":"t","post_text":"","comment_texts":["a",3],"comment_scores":[1,2]})", {":2:", "'comment_texts'[1]"}));
    BOOST_TEST(expect(R"({"post_text":"","comment_texts":[],"comment_scores":[]})", {":1:", "'post_title'"}));
    BOOST_TEST(expect(R"({"post_title":"t","post_text":"","comment_texts":"a","comment_scores":[1]})", {"'comment_texts' must be an array"}));
    BOOST_TEST(expect(R"([1, 2])", {":1:", "JSON object"}));
    BOOST_TEST(throws_naming([&] { read_writing_prompts("/nonexistent/wp.jsonl", WritingPromptsOptions{}); }, {"/nonexistent/wp.jsonl"}));
    WritingPromptsOptions frac;
    frac.test_fraction = 1.5;
    BOOST_TEST(throws_naming([&] { read_writing_prompts(kDir / "sample.jsonl", frac); }, {"test_fraction", "1.5"}));
    std::filesystem::remove(bad);
}

BOOST_AUTO_TEST_CASE(conversion_feeds_the_pipeline) {
    auto train = temp("train.jsonl"), test = temp("test.jsonl"), pairs = temp("pairs.jsonl");
    WritingPromptsOptions o;
    o.test_fraction = 0.5;
    o.split_seed = 3;
    auto r = convert_writing_prompts(kDir / "sample.jsonl", train, test, o);
    std::size_t lines = 0;
    for (const auto& f : {train, test})
        for_each_json_line(f, [&](JsonLine& line) {
            ++lines;
            auto pr = parse_prompt_responses(line.value, /*need_text_and_score=*/true);  // the `deviant deviation` schema
            BOOST_TEST(pr.responses.size() >= 2u);
            BOOST_TEST(in_test_split(pr.prompt, 0.5, 3) == (f == test));
        });
    BOOST_TEST(lines == r.train_prompts + r.test_prompts);
    BOOST_TEST(lines == 3u);
    // `deviant pairs` on the result, then the text-pair reader
    PairsOptions po;
    po.weights = false;
    po.gap = 1;
    std::size_t n = pairs_file(train, pairs, po);
    if (n > 0) {
        auto text = read_text_pairs(pairs);
        BOOST_TEST(text.size() == n);
        BOOST_TEST(!text[0].chosen.empty());
        BOOST_TEST(text[0].origin == pairs.string() + ":1");
    }
    for (const auto& f : {train, test, pairs}) std::filesystem::remove(f);
}
