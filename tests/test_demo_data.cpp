// The built-in demo data (data/demo/, made by data/demo/make_demo_data.py): the tokenizer loads
// and gives the ids of the reference `tokenizers` package (tests/data/demo/make_demo_fixtures.py),
// has BOS "<s>", EOS "<|im_end|>" and the ChatML format, round-trips every demo text, and
// tokenises a demo preference pair with one BOS and one EOS; the demo WritingPrompts file cleans
// with the moderator comments dropped (counted independently here) and a 90/10-ish split.
#define BOOST_TEST_MODULE demo_data
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>

#include "deviant/data/text_pairs.hpp"
#include "deviant/data/writing_prompts.hpp"
#include "deviant/tokenizer/bpe.hpp"
#include "deviant/tokenizer/chat_template.hpp"

using namespace deviant;
using deviant::data::json;

namespace {
const std::filesystem::path kDemo = std::filesystem::path(DEVIANT_TEST_DATA_DIR) / ".." / ".." / "data" / "demo";
const std::filesystem::path kFixtures = std::filesystem::path(DEVIANT_TEST_DATA_DIR) / "demo";

json read_json(const std::filesystem::path& p) {
    std::ifstream in(p);
    BOOST_REQUIRE_MESSAGE(in.is_open(), p.string());
    return json::parse(in);
}

std::vector<json> read_lines(const std::filesystem::path& p) {
    std::ifstream in(p);
    BOOST_REQUIRE_MESSAGE(in.is_open(), p.string());
    std::vector<json> out;
    for (std::string line; std::getline(in, line);)
        if (!line.empty()) out.push_back(json::parse(line));
    return out;
}

std::vector<TokenId> ids_of(const json& a) { return a.get<std::vector<TokenId>>(); }
}  // namespace

BOOST_AUTO_TEST_CASE(tokenizer_matches_reference) {
    const BpeTokenizer tok = BpeTokenizer::from_json_file(kDemo / "tokenizer.json");
    const json ref = read_json(kFixtures / "tokenizer_expected.json");
    BOOST_TEST((tok.token_to_id("<s>") == std::optional<TokenId>(ref["bos"].get<TokenId>())));
    BOOST_TEST((tok.token_to_id("<|im_start|>") == std::optional<TokenId>(ref["im_start"].get<TokenId>())));
    BOOST_TEST((tok.token_to_id("<|im_end|>") == std::optional<TokenId>(ref["im_end"].get<TokenId>())));
    BOOST_TEST((tok.token_to_id("<pad>") == std::optional<TokenId>(ref["pad"].get<TokenId>())));
    BOOST_TEST((tok.bos_id() == std::optional<TokenId>(ref["bos"].get<TokenId>())));
    BOOST_TEST((tok.eos_id() == std::optional<TokenId>(ref["im_end"].get<TokenId>())));
    for (const json& c : ref["cases"]) {
        const std::string text = c["text"];
        BOOST_TEST_CONTEXT("text '" << text << "'") {
            BOOST_TEST(tok.encode(text, false) == ids_of(c["ids"]), boost::test_tools::per_element());
            std::vector<TokenId> expected = ids_of(c["ids_special"]);
            // The reference doubles a BOS already present; deviant keeps one.
            if (!c["ids"].empty() && c["ids"][0] == ref["bos"]) expected.erase(expected.begin());
            BOOST_TEST(tok.encode(text, true) == expected, boost::test_tools::per_element());
        }
    }
    // ChatML rendering and its ids.
    BOOST_TEST((detect_chat_format(tok) == ChatFormat::chatml));
    const std::vector<ChatMessage> messages{{"system", "You are a writer."}, {"user", "A dragon finds a key."}};
    BOOST_TEST(apply_chat_template(tok, messages, true) == ref["chat_text"].get<std::string>());
    BOOST_TEST(encode_chat(tok, messages, true) == ids_of(ref["chat_ids"]), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(tokenizer_without_config_still_has_bos_and_eos) {
    // tokenizer.json alone (no tokenizer_config.json beside it): BOS from the post-processor,
    // EOS found by name.
    std::ifstream in(kDemo / "tokenizer.json");
    const BpeTokenizer tok = BpeTokenizer::from_json(nlohmann::json::parse(in), "demo");
    BOOST_TEST((tok.bos_id() == tok.token_to_id("<s>")));
    BOOST_TEST((tok.eos_id() == tok.token_to_id("<|im_end|>")));
}

BOOST_AUTO_TEST_CASE(every_demo_text_round_trips) {
    const BpeTokenizer tok = BpeTokenizer::from_json_file(kDemo / "tokenizer.json");
    std::size_t texts = 0, tokens = 0, words = 0;
    for (const json& row : read_lines(kDemo / "writing_prompts_demo.jsonl")) {
        for (const json& t : row["comment_texts"]) {
            const std::string s = t;
            const std::vector<TokenId> ids = tok.encode(s, false);
            BOOST_TEST(tok.decode(ids, false) == s);
            ++texts;
            tokens += ids.size();
            words += data::wp::words(s);
        }
    }
    BOOST_TEST(texts > 1000u);
    // A vocabulary fitted to the corpus: well under 2 tokens per word on average.
    BOOST_TEST(double(tokens) / double(words) < 2.0, tokens << " tokens for " << words << " words");
}

BOOST_AUTO_TEST_CASE(demo_pair_tokenises_with_one_bos_and_eos) {
    const BpeTokenizer tok = BpeTokenizer::from_json_file(kDemo / "tokenizer.json");
    data::TextPair p{"A dragon finds a key.", "The dragon opened the door.", "dragon door the the and then", 1.0, ""};
    const data::TokenPair t = data::tokenize_pair(tok, p);
    const TokenId bos = *tok.bos_id(), eos = *tok.eos_id();
    BOOST_TEST(t.prompt.front() == bos);
    BOOST_TEST(std::count(t.prompt.begin(), t.prompt.end(), bos) == 1);
    BOOST_TEST(t.chosen.back() == eos);
    BOOST_TEST(std::count(t.chosen.begin(), t.chosen.end(), eos) == 1);
    BOOST_TEST(t.rejected.back() == eos);
    // The prompt is one ChatML user turn and the assistant header.
    const std::string prompt = tok.decode(std::vector<TokenId>(t.prompt.begin(), t.prompt.end()), false);
    BOOST_TEST(prompt == "<s><|im_start|>user\nA dragon finds a key.<|im_end|>\n<|im_start|>assistant\n");
    BOOST_TEST(tok.decode(std::vector<TokenId>(t.chosen.begin(), t.chosen.end()), false) == "The dragon opened the door.<|im_end|>");
}

BOOST_AUTO_TEST_CASE(demo_data_cleans) {
    // Independent counts from the raw file.
    std::size_t lines = 0, moderator = 0, kept = 0;
    for (const json& row : read_lines(kDemo / "writing_prompts_demo.jsonl")) {
        ++lines;
        BOOST_TEST(row["post_title"].get<std::string>().rfind("[", 0) == 0u);  // every title has a tag
        BOOST_REQUIRE(row["comment_texts"].size() == row["comment_scores"].size());
        for (const json& t : row["comment_texts"]) {
            if (t.get<std::string>().find("**Welcome to the Prompt!**") != std::string::npos) ++moderator;
            else ++kept;
        }
    }
    BOOST_TEST(moderator > 0u);
    data::WritingPromptsOptions o;
    data::WritingPromptsReport r;
    const auto prompts = data::read_writing_prompts(kDemo / "writing_prompts_demo.jsonl", o, &r);
    BOOST_TEST(r.lines == lines);
    BOOST_TEST(r.dropped_moderator == moderator);
    BOOST_TEST(r.responses == kept);
    BOOST_TEST(r.train_prompts + r.test_prompts == lines);
    BOOST_TEST(r.test_prompts >= lines / 20);
    BOOST_TEST(r.test_prompts <= lines / 5);
    for (const auto& p : prompts) {
        BOOST_TEST(p.prompt.rfind("[", 0) != 0u);  // tag stripped
        BOOST_TEST(p.texts.size() >= 6u);
        BOOST_TEST(p.texts.size() <= 10u);
    }
}
