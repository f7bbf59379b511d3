// WordPiece tokenizer: ids, tokens, normalized text, decoded text, truncation and padding equal
// the reference `tokenizers` package (fixtures made by tests/data/wordpiece/
// make_wordpiece_fixtures.py) for small committed vocabularies and, when it is on disk, for
// all-MiniLM-L6-v2; vocab.txt + tokenizer_config.json load to the same tokenizer; malformed
// tokenizer.json, vocab.txt and config files give deviant::Error naming the file and field.
#define BOOST_TEST_MODULE wordpiece
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include "deviant/tokenizer/wordpiece.hpp"
#include "expect_error.hpp"
#include "temp_dir.hpp"

using namespace deviant;
using deviant::testing::throws_naming;
using nlohmann::json;

namespace {

const std::filesystem::path kDir = std::filesystem::path(DEVIANT_TEST_DATA_DIR) / "wordpiece";

// Where downloaded models live: the DEVIANT_MODELS_DIR compile definition, else the environment
// variable of that name, else ~/.cache/deviant/models.
std::filesystem::path models_dir() {
#ifdef DEVIANT_MODELS_DIR
    return DEVIANT_MODELS_DIR;
#else
    if (const char* env = std::getenv("DEVIANT_MODELS_DIR")) return env;
    const char* home = std::getenv("HOME");
    return std::filesystem::path(home ? home : "/root") / ".cache" / "deviant" / "models";
#endif
}
const std::filesystem::path kMiniLm = models_dir() / "all-MiniLM-L6-v2";
bool have_minilm() { return std::filesystem::is_regular_file(kMiniLm / "tokenizer.json"); }

const json& expected() {
    static const json j = [] {
        std::ifstream in(kDir / "expected.json");
        return json::parse(in);
    }();
    return j;
}

std::vector<TokenId> ids_of(const json& a) { return a.get<std::vector<TokenId>>(); }

const char* const kSmall[] = {"small_uncased/tokenizer.json", "small_cased/tokenizer.json",
                              "small_variants/strip_accents_cased.json", "small_variants/no_clean_text.json"};

// Every expectation of one tokenizer.
void check_against_reference(const WordPieceTokenizer& tok, const json& fixture, bool check_text = true) {
    const json& cases = fixture["cases"];
    BOOST_TEST(cases.size() >= 40u);
    for (const json& c : cases) {
        const std::string text = c["text"];
        BOOST_TEST_CONTEXT("text '" << text << "'") {
            BOOST_TEST(tok.encode(text) == ids_of(c["ids"]), boost::test_tools::per_element());
            BOOST_TEST(tok.encode(text, false) == ids_of(c["ids_no_special"]), boost::test_tools::per_element());
            BOOST_TEST(tok.type_ids(c["ids"].size()) == ids_of(c["type_ids"]), boost::test_tools::per_element());
            for (const auto& [n, ids] : c["truncated"].items())
                BOOST_TEST(tok.encode(text, true, std::stoul(n)) == ids_of(ids), "max_length " << n);
            if (!check_text) continue;
            BOOST_TEST(tok.tokenize(text) == c["tokens"].get<std::vector<std::string>>(), boost::test_tools::per_element());
            BOOST_TEST(tok.normalize(text) == c["normalized"].get<std::string>());
            BOOST_TEST(tok.decode(ids_of(c["ids"]), true) == c["decoded"].get<std::string>());
            BOOST_TEST(tok.decode(ids_of(c["ids"]), false) == c["decoded_with_special"].get<std::string>());
        }
    }
}

std::filesystem::path write_file(const deviant::testing::TempDir& dir, const std::string& name, const std::string& content) {
    std::ofstream(dir.path / name, std::ios::binary) << content;
    return dir.path / name;
}

json small_json() {
    std::ifstream in(kDir / "small_uncased" / "tokenizer.json");
    return json::parse(in);
}

}  // namespace

BOOST_AUTO_TEST_CASE(small_tokenizers_match_reference) {
    for (const char* name : kSmall) {
        BOOST_TEST_CONTEXT("tokenizer " << name) {
            check_against_reference(WordPieceTokenizer::from_json_file(kDir / name), expected()[name]);
        }
    }
}

BOOST_AUTO_TEST_CASE(minilm_tokenizer_matches_reference) {
    if (!have_minilm()) {
        BOOST_TEST_MESSAGE("skipped: no all-MiniLM-L6-v2 under " << models_dir() << " (set DEVIANT_MODELS_DIR)");
        return;
    }
    const WordPieceTokenizer tok = WordPieceTokenizer::from_json_file(kMiniLm / "tokenizer.json");
    BOOST_TEST(tok.vocab_size() == 30522u);
    check_against_reference(tok, expected()["all-MiniLM-L6-v2"]);
    // The same tokenizer from vocab.txt + tokenizer_config.json.
    const WordPieceTokenizer from_vocab = WordPieceTokenizer::from_vocab_file(kMiniLm / "vocab.txt", kMiniLm / "tokenizer_config.json");
    check_against_reference(from_vocab, expected()["all-MiniLM-L6-v2"], false);
}

BOOST_AUTO_TEST_CASE(vocab_txt_matches_tokenizer_json) {
    for (const char* folder : {"small_uncased", "small_cased"}) {
        BOOST_TEST_CONTEXT("folder " << folder) {
            const auto dir = kDir / folder;
            const WordPieceTokenizer tok = WordPieceTokenizer::from_vocab_file(dir / "vocab.txt", dir / "tokenizer_config.json");
            check_against_reference(tok, expected()[std::string(folder) + "/tokenizer.json"], false);
            // from_directory prefers tokenizer.json and falls back to vocab.txt.
            const WordPieceTokenizer any = WordPieceTokenizer::from_directory(dir);
            BOOST_TEST(any.origin().find("tokenizer.json") != std::string::npos);
            deviant::testing::TempDir tmp("deviant_wordpiece");
            std::filesystem::copy_file(dir / "vocab.txt", tmp.path / "vocab.txt");
            std::filesystem::copy_file(dir / "tokenizer_config.json", tmp.path / "tokenizer_config.json");
            const WordPieceTokenizer fallback = WordPieceTokenizer::from_directory(tmp.path);
            BOOST_TEST(fallback.origin().find("vocab.txt") != std::string::npos);
            for (const json& c : expected()[std::string(folder) + "/tokenizer.json"]["cases"])
                BOOST_TEST(fallback.encode(c["text"].get<std::string>()) == ids_of(c["ids"]), boost::test_tools::per_element());
        }
    }
}

BOOST_AUTO_TEST_CASE(batch_padding_matches_reference) {
    std::vector<std::string> names(std::begin(kSmall), std::end(kSmall));
    if (have_minilm()) names.push_back("all-MiniLM-L6-v2");
    for (const std::string& name : names) {
        BOOST_TEST_CONTEXT("tokenizer " << name) {
            const WordPieceTokenizer tok = name == "all-MiniLM-L6-v2" ? WordPieceTokenizer::from_json_file(kMiniLm / "tokenizer.json")
                                                                      : WordPieceTokenizer::from_json_file(kDir / name);
            const json& fx = expected()[name];
            std::vector<std::string> texts;
            for (const json& i : fx["batch"]["cases"]) texts.push_back(fx["cases"][i.get<std::size_t>()]["text"]);
            const WordPieceBatch b = tok.encode_batch(texts);
            BOOST_TEST(b.rows == std::int64_t(texts.size()));
            for (std::size_t r = 0; r < texts.size(); ++r) {
                const auto row = [&](const auto& v) {
                    return std::vector<std::int64_t>(v.begin() + std::ptrdiff_t(r * b.columns),
                                                     v.begin() + std::ptrdiff_t((r + 1) * b.columns));
                };
                BOOST_TEST(row(b.ids) == fx["batch"]["ids"][r].get<std::vector<std::int64_t>>(), boost::test_tools::per_element());
                BOOST_TEST(row(b.type_ids) == fx["batch"]["type_ids"][r].get<std::vector<std::int64_t>>(), boost::test_tools::per_element());
                BOOST_TEST(row(b.attention_mask) == fx["batch"]["attention_mask"][r].get<std::vector<std::int64_t>>(),
                           boost::test_tools::per_element());
                BOOST_TEST(b.lengths[r] == std::int64_t(tok.encode(texts[r]).size()));
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(truncation_keeps_cls_and_sep) {
    const WordPieceTokenizer tok = WordPieceTokenizer::from_json_file(kDir / "small_uncased/tokenizer.json");
    const std::string text = expected()["small_uncased/tokenizer.json"]["cases"].back()["text"];  // the long paragraph
    const auto full = tok.encode(text);
    BOOST_TEST(full.size() > 256u);
    const TokenId cls = *tok.token_to_id("[CLS]"), sep = *tok.token_to_id("[SEP]");
    for (std::size_t n : {2u, 3u, 10u, 256u}) {
        const auto ids = tok.encode(text, true, n);
        BOOST_TEST(ids.size() == n);
        BOOST_TEST(ids.front() == cls);
        BOOST_TEST(ids.back() == sep);
        BOOST_TEST(std::equal(ids.begin() + 1, ids.end() - 1, full.begin() + 1));
    }
    BOOST_TEST(tok.encode("short", true, 256) == tok.encode("short"), boost::test_tools::per_element());
    BOOST_TEST(tok.encode(text, false, 7).size() == 7u);
    BOOST_TEST(throws_naming([&] { tok.encode(text, true, 1); }, {"max_length 1", "2 special tokens"}));
    const WordPieceBatch b = tok.encode_batch({text, "short"}, 16);
    BOOST_TEST(b.columns == 16);
    BOOST_TEST(b.lengths[0] == 16);
    BOOST_TEST(b.ids[15] == sep);
}

BOOST_AUTO_TEST_CASE(invalid_utf8_and_random_bytes) {
    const WordPieceTokenizer tok = WordPieceTokenizer::from_json_file(kDir / "small_uncased/tokenizer.json");
    // Invalid bytes become U+FFFD, which clean_text drops.
    BOOST_TEST(tok.encode("ab\xFF\xFE" "cd") == tok.encode("abcd"), boost::test_tools::per_element());
    std::mt19937 rng(11);
    for (int trial = 0; trial < 300; ++trial) {
        std::string s(rng() % 60, '\0');
        for (char& ch : s) ch = static_cast<char>(rng() % 256);
        const auto ids = tok.encode(s, true, 32);
        BOOST_TEST(ids.size() <= 32u);
        BOOST_TEST(ids.size() >= 2u);
        (void)tok.decode(ids, true);
    }
    BOOST_TEST(throws_naming([&] { tok.decode({0, 99999}); }, {"unknown token id 99999"}));
}

BOOST_AUTO_TEST_CASE(malformed_tokenizer_json) {
    deviant::testing::TempDir tmp("deviant_wordpiece_bad");
    const auto with = [&](const std::string& name, auto edit) {
        json j = small_json();
        edit(j);
        return write_file(tmp, name, j.dump());
    };
    struct Case {
        std::string name;
        std::function<void(json&)> edit;
        std::vector<std::string> parts;
    };
    const std::vector<Case> cases = {
        {"bpe.json", [](json& j) { j["model"]["type"] = "BPE"; }, {"bpe.json", "model.type", "BPE"}},
        {"novocab.json", [](json& j) { j["model"].erase("vocab"); }, {"novocab.json", "model.vocab", "missing"}},
        {"vocablist.json", [](json& j) { j["model"]["vocab"] = json::array({"a"}); }, {"vocablist.json", "model.vocab"}},
        {"badid.json", [](json& j) { j["model"]["vocab"]["a"] = -3; }, {"badid.json", "model.vocab.a", "non-negative"}},
        {"dupid.json", [](json& j) { j["model"]["vocab"]["zzzz"] = 7; }, {"dupid.json", "id 7 is given twice"}},
        {"unk.json", [](json& j) { j["model"]["unk_token"] = "<unk>"; }, {"unk.json", "model.unk_token", "<unk>"}},
        {"maxchars.json", [](json& j) { j["model"]["max_input_chars_per_word"] = 0; }, {"maxchars.json", "max_input_chars_per_word"}},
        {"norm.json", [](json& j) { j["normalizer"] = {{"type", "Lowercase"}}; }, {"norm.json", "normalizer.type", "Lowercase"}},
        {"strip.json", [](json& j) { j["normalizer"]["strip_accents"] = "yes"; }, {"strip.json", "normalizer.strip_accents"}},
        {"pretok.json", [](json& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; }, {"pretok.json", "pre_tokenizer.type", "Whitespace"}},
        {"nopretok.json", [](json& j) { j.erase("pre_tokenizer"); }, {"nopretok.json", "pre_tokenizer"}},
        {"post.json", [](json& j) { j["post_processor"] = {{"type", "ByteLevel"}}; }, {"post.json", "post_processor.type", "ByteLevel"}},
        {"postid.json", [](json& j) { j["post_processor"]["special_tokens"]["[CLS]"]["ids"] = {100000}; },
         {"postid.json", "prefix token id 100000"}},
        {"nosequence.json", [](json& j) { j["post_processor"]["single"] = json::array({j["post_processor"]["single"][0]}); },
         {"nosequence.json", "post_processor.single", "no $A"}},
        {"decoder.json", [](json& j) { j["decoder"] = {{"type", "ByteLevel"}}; }, {"decoder.json", "decoder.type", "ByteLevel"}},
        {"added.json", [](json& j) { j["added_tokens"][0]["content"] = ""; }, {"added.json", "added_tokens[0].content"}},
    };
    for (const Case& c : cases) {
        const auto path = with(c.name, c.edit);
        bool named = false;
        try {
            WordPieceTokenizer::from_json_file(path);
        } catch (const Error& e) {
            named = true;
            for (const auto& p : c.parts)
                if (std::string(e.what()).find(p) == std::string::npos) {
                    named = false;
                    BOOST_TEST_MESSAGE("'" << e.what() << "' lacks '" << p << "'");
                }
        }
        BOOST_TEST(named, c.name);
    }
    const auto truncated = write_file(tmp, "truncated.json", small_json().dump().substr(0, 500));
    BOOST_TEST(throws_naming([&] { WordPieceTokenizer::from_json_file(truncated); }, {"truncated.json", "invalid JSON"}));
    BOOST_TEST(throws_naming([&] { WordPieceTokenizer::from_json_file(tmp.path / "absent.json"); }, {"absent.json", "cannot open"}));
    BOOST_TEST(throws_naming([&] { WordPieceTokenizer::from_directory(tmp.path / "nowhere"); }, {"nowhere", "vocab.txt"}));
}

BOOST_AUTO_TEST_CASE(malformed_vocab_files) {
    deviant::testing::TempDir tmp("deviant_wordpiece_vocab");
    const auto empty = write_file(tmp, "empty.txt", "");
    BOOST_TEST(throws_naming([&] { WordPieceTokenizer::from_vocab_file(empty); }, {"empty.txt", "no tokens"}));
    const auto no_unk = write_file(tmp, "nounk.txt", "[PAD]\n[CLS]\n[SEP]\nhello\n");
    BOOST_TEST(throws_naming([&] { WordPieceTokenizer::from_vocab_file(no_unk); }, {"nounk.txt", "[UNK]"}));
    const auto no_cls = write_file(tmp, "nocls.txt", "[PAD]\n[UNK]\nhello\n");
    BOOST_TEST(throws_naming([&] { WordPieceTokenizer::from_vocab_file(no_cls); }, {"nocls.txt", "[CLS]"}));
    const auto bad_utf8 = write_file(tmp, "badutf8.txt", "[UNK]\n[CLS]\n[SEP]\nab\xFF\n");
    BOOST_TEST(throws_naming([&] { WordPieceTokenizer::from_vocab_file(bad_utf8); }, {"badutf8.txt", "line 4"}));
    BOOST_TEST(throws_naming([&] { WordPieceTokenizer::from_vocab_file(tmp.path / "absent.txt"); }, {"absent.txt", "cannot open"}));
    const auto good = write_file(tmp, "good.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n##s\r\n");
    const auto bad_cfg = write_file(tmp, "bad_config.json", R"({"do_lower_case": "yes"})");
    BOOST_TEST(throws_naming([&] { WordPieceTokenizer::from_vocab_file(good, bad_cfg); }, {"bad_config.json", "do_lower_case"}));
    const auto bad_token = write_file(tmp, "bad_token.json", R"({"unk_token": 5})");
    BOOST_TEST(throws_naming([&] { WordPieceTokenizer::from_vocab_file(good, bad_token); }, {"bad_token.json", "unk_token"}));
    const auto not_json = write_file(tmp, "not_json.json", "{");
    BOOST_TEST(throws_naming([&] { WordPieceTokenizer::from_vocab_file(good, not_json); }, {"not_json.json", "invalid JSON"}));
    // A minimal vocabulary works: trailing \r is trimmed, specials are matched in text.
    const WordPieceTokenizer tok = WordPieceTokenizer::from_vocab_file(good);
    BOOST_TEST(tok.encode("Hellos [SEP]") == (std::vector<TokenId>{2, 4, 5, 3, 3}), boost::test_tools::per_element());
    BOOST_TEST(tok.encode("hi") == (std::vector<TokenId>{2, 1, 3}), boost::test_tools::per_element());
    BOOST_TEST(tok.decode(tok.encode("hellos hello"), true) == "hellos hello");
}

BOOST_AUTO_TEST_CASE(word_piece_rules_hand_worked) {
    const WordPieceTokenizer tok = WordPieceTokenizer::from_vocab_file(
        [] {
            static deviant::testing::TempDir tmp("deviant_wordpiece_rules");
            std::ofstream(tmp.path / "vocab.txt") << "[PAD]\n[UNK]\n[CLS]\n[SEP]\nun\n##aff\n##able\nunaff\n##a\n!\n,\n";
            return tmp.path / "vocab.txt";
        }());
    // Greedy longest match: "unaff" + "##able" (not "un" + "##aff" + ...).
    BOOST_TEST(tok.tokenize("unaffable") == (std::vector<std::string>{"unaff", "##able"}), boost::test_tools::per_element());
    // A part that matches nothing makes the whole word [UNK]; punctuation is split off.
    BOOST_TEST(tok.tokenize("unaffablex!") == (std::vector<std::string>{"[UNK]", "!"}), boost::test_tools::per_element());
    BOOST_TEST(tok.tokenize("UN,a") == (std::vector<std::string>{"un", ",", "[UNK]"}), boost::test_tools::per_element());
    BOOST_TEST(tok.tokenize(std::string(101, 'a')) == (std::vector<std::string>{"[UNK]"}), boost::test_tools::per_element());
    BOOST_TEST(tok.decode(tok.encode("unaffable, un!"), true) == "unaffable, un!");
}
