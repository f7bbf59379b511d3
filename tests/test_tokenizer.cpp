// BPE tokenizer: ids and decoded text equal the reference `tokenizers` package (fixtures made by
// tests/data/make_tokenizer_fixtures.py), special-token handling, no doubled BOS, invalid UTF-8,
// hand-worked merge order, chat template, malformed tokenizer.json files, and the byte-level
// pre-tokenizers a GGUF file names (each compiles; several against `tokenizers` with the same
// regexes).
#define BOOST_TEST_MODULE tokenizer
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <set>
#include <thread>

#include "deviant/tokenizer/bpe.hpp"
#include "deviant/tokenizer/chat_template.hpp"
#include "deviant/tokenizer/gguf_tokenizer.hpp"

using namespace deviant;
using nlohmann::json;

namespace {

const std::filesystem::path kDir = std::filesystem::path(DEVIANT_TEST_DATA_DIR) / "tokenizers";

const json& expected() {
    static const json j = [] {
        std::ifstream in(kDir / "expected.json");
        return json::parse(in);
    }();
    return j;
}

std::string from_hex(const std::string& hex) {
    std::string out;
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    return out;
}

std::vector<TokenId> ids_of(const json& a) { return a.get<std::vector<TokenId>>(); }

struct Fixture {
    const char* file;
    std::vector<std::string> prefix, suffix;  // what the post-processor adds (by token text)
};
const Fixture kFixtures[] = {
    {"gpt2_style.json", {}, {}},
    {"llama3_style.json", {"<|begin_of_text|>"}, {}},
    {"fallback_style.json", {"<s>"}, {"</s>"}},
};

bool starts_with(const std::vector<TokenId>& v, const std::vector<TokenId>& p) {
    return v.size() >= p.size() && std::equal(p.begin(), p.end(), v.begin());
}
bool ends_with(const std::vector<TokenId>& v, const std::vector<TokenId>& s) {
    return v.size() >= s.size() && std::equal(s.rbegin(), s.rend(), v.rbegin());
}

std::filesystem::path write_temp(const std::string& name, const std::string& content) {
    const auto dir = std::filesystem::temp_directory_path() / "deviant_test_tokenizer";
    std::filesystem::create_directories(dir);
    const auto path = dir / name;
    std::ofstream(path, std::ios::binary) << content;
    return path;
}

json fixture_json(const char* file) {
    std::ifstream in(kDir / file);
    return json::parse(in);
}

}  // namespace

BOOST_AUTO_TEST_CASE(ids_and_decode_match_reference) {
    for (const Fixture& fx : kFixtures) {
        BOOST_TEST_CONTEXT("tokenizer " << fx.file) {
            const BpeTokenizer tok = BpeTokenizer::from_json_file(kDir / fx.file);
            std::vector<TokenId> prefix, suffix;
            for (const auto& t : fx.prefix) prefix.push_back(*tok.token_to_id(t));
            for (const auto& t : fx.suffix) suffix.push_back(*tok.token_to_id(t));
            const json& cases = expected()[fx.file]["cases"];
            BOOST_TEST(cases.size() >= 40u);
            for (const json& c : cases) {
                const std::string text = c["text"];
                BOOST_TEST_CONTEXT("text '" << text << "'") {
                    const std::vector<TokenId> ref = ids_of(c["ids"]);
                    const std::vector<TokenId> got = tok.encode(text, false);
                    BOOST_TEST(got == ref, boost::test_tools::per_element());
                    BOOST_TEST(tok.decode(ref) == c["decoded"].get<std::string>());
                    BOOST_TEST(tok.decode(ref, true) == c["decoded_skip_special"].get<std::string>());
                    // With special tokens: the reference, minus a BOS/EOS it would double.
                    std::vector<TokenId> ref_special = ids_of(c["ids_with_special"]);
                    if (!prefix.empty() && starts_with(ref, prefix)) ref_special.erase(ref_special.begin(), ref_special.begin() + prefix.size());
                    if (!suffix.empty() && ends_with(ref, suffix) && ref.size() >= prefix.size() + suffix.size())
                        ref_special.resize(ref_special.size() - suffix.size());
                    BOOST_TEST(tok.encode(text, true) == ref_special, boost::test_tools::per_element());
                }
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(round_trip_of_plain_text) {
    for (const Fixture& fx : kFixtures) {
        const BpeTokenizer tok = BpeTokenizer::from_json_file(kDir / fx.file);
        for (const json& c : expected()[fx.file]["cases"]) {
            const std::string text = c["text"];
            if (text.find('<') != std::string::npos) continue;  // special tokens may strip spaces (lstrip)
            BOOST_TEST(tok.decode(tok.encode(text, false)) == text, fx.file << ": '" << text << "'");
            BOOST_TEST(tok.decode(tok.encode(text, true), true) == text, fx.file << ": '" << text << "'");
        }
    }
}

BOOST_AUTO_TEST_CASE(bos_is_added_once) {
    const BpeTokenizer tok = BpeTokenizer::from_json_file(kDir / "llama3_style.json");
    const TokenId bos = *tok.token_to_id("<|begin_of_text|>");
    BOOST_TEST(tok.bos_id().value() == bos);
    BOOST_TEST(tok.eos_id().value() == *tok.token_to_id("<|end_of_text|>"));
    const auto count_bos = [&](const std::vector<TokenId>& ids) { return std::count(ids.begin(), ids.end(), bos); };
    const auto plain = tok.encode("Hello there", true);
    BOOST_TEST(plain.front() == bos);
    BOOST_TEST(count_bos(plain) == 1);
    const auto already = tok.encode("<|begin_of_text|>Hello there", true);
    BOOST_TEST(already == plain, boost::test_tools::per_element());
    BOOST_TEST(count_bos(tok.encode("", true)) == 1);
    BOOST_TEST(tok.encode("", false).empty());
    // Two BOS written in the text are the caller's: kept, none added.
    BOOST_TEST(count_bos(tok.encode("<|begin_of_text|><|begin_of_text|>x", true)) == 2);
    // GPT-2 style adds nothing.
    const BpeTokenizer gpt2 = BpeTokenizer::from_json_file(kDir / "gpt2_style.json");
    BOOST_TEST(gpt2.encode("Hello", true) == gpt2.encode("Hello", false), boost::test_tools::per_element());
    BOOST_TEST(gpt2.eos_id().value() == *gpt2.token_to_id("<|endoftext|>"));
}

BOOST_AUTO_TEST_CASE(special_tokens_in_text) {
    const BpeTokenizer tok = BpeTokenizer::from_json_file(kDir / "gpt2_style.json");
    const TokenId eot = *tok.token_to_id("<|endoftext|>");
    const auto ids = tok.encode("a<|endoftext|>b", false);
    BOOST_TEST(ids.size() == 3u);
    BOOST_TEST(ids[1] == eot);
    BOOST_TEST(tok.is_special(eot));
    BOOST_TEST(tok.decode(ids) == "a<|endoftext|>b");
    BOOST_TEST(tok.decode(ids, true) == "ab");
    // A partial special token is ordinary text.
    const auto partial = tok.encode("<|endoftext", false);
    BOOST_TEST(std::count(partial.begin(), partial.end(), eot) == 0);
    // Non-special added token: matched, and kept by skip_special.
    const BpeTokenizer llama = BpeTokenizer::from_json_file(kDir / "llama3_style.json");
    const TokenId call = *llama.token_to_id("<tool_call>");
    BOOST_TEST(!llama.is_special(call));
    BOOST_TEST(llama.decode(llama.encode("x<tool_call>y", false), true) == "x<tool_call>y");
}

BOOST_AUTO_TEST_CASE(invalid_utf8_is_replaced_like_the_reference) {
    for (const Fixture& fx : kFixtures) {
        const BpeTokenizer tok = BpeTokenizer::from_json_file(kDir / fx.file);
        for (const json& c : expected()[fx.file]["invalid_utf8"]) {
            const std::string bytes = from_hex(c["hex"]);
            BOOST_TEST(tok.encode(bytes, false) == ids_of(c["ids"]), boost::test_tools::per_element());
        }
    }
    // Random bytes never crash; decoding gives the repaired text back.
    const BpeTokenizer tok = BpeTokenizer::from_json_file(kDir / "gpt2_style.json");
    std::mt19937 rng(7);
    for (int trial = 0; trial < 300; ++trial) {
        std::string s(rng() % 40, '\0');
        for (char& ch : s) ch = static_cast<char>(rng() % 256);
        const auto ids = tok.encode(s, true);
        BOOST_TEST(tok.decode(ids) == text::utf8_make_valid(s));
    }
}

BOOST_AUTO_TEST_CASE(utf8_repair_hand_worked) {
    const std::string fffd(text::kReplacementChar);
    BOOST_TEST(text::utf8_make_valid("a\xFF" "b") == "a" + fffd + "b");
    BOOST_TEST(text::utf8_make_valid("\xE2\x82") == fffd);                         // one maximal subpart
    BOOST_TEST(text::utf8_make_valid("\xED\xA0\x80") == fffd + fffd + fffd);       // surrogate: 3 subparts
    BOOST_TEST(text::utf8_make_valid("\xE2\x82\xAC") == "\xE2\x82\xAC");           // valid euro sign
    BOOST_TEST(!text::is_valid_utf8("\xC0\xAF"));
    BOOST_TEST(text::is_valid_utf8("\xF0\x9F\x8E\x89"));
}

BOOST_AUTO_TEST_CASE(long_inputs) {
    const BpeTokenizer tok = BpeTokenizer::from_json_file(kDir / "llama3_style.json");
    for (const std::string& s : {std::string(200000, ' '), std::string(200000, 'a'), std::string(50000, '\n') + "x"}) {
        const auto ids = tok.encode(s, false);
        BOOST_TEST(!ids.empty());
        BOOST_TEST(tok.decode(ids) == s);
    }
}

BOOST_AUTO_TEST_CASE(concurrent_encode_matches_serial) {
    const BpeTokenizer tok = BpeTokenizer::from_json_file(kDir / "gpt2_style.json");
    std::vector<std::string> texts;
    for (const json& c : expected()["gpt2_style.json"]["cases"]) texts.push_back(c["text"]);
    std::vector<std::vector<TokenId>> serial;
    for (const auto& t : texts) serial.push_back(tok.encode(t, false));
    const BpeTokenizer copy = tok;  // copies share the cache
    std::vector<int> mismatches(4, 0);
    std::vector<std::thread> threads;
    for (int w = 0; w < 4; ++w)
        threads.emplace_back([&, w] {
            for (int rep = 0; rep < 20; ++rep)
                for (std::size_t i = 0; i < texts.size(); ++i)
                    if ((w % 2 ? copy : tok).encode(texts[i], false) != serial[i]) ++mismatches[w];
        });
    for (auto& t : threads) t.join();
    for (int m : mismatches) BOOST_TEST(m == 0);
}

// Hand-worked merges: the lowest rank merges first, leftmost on ties.
BOOST_AUTO_TEST_CASE(merge_order_hand_worked) {
    const auto make = [](std::vector<std::pair<std::string, std::string>> merges, bool ignore_merges = false) {
        BpeVocabulary v;
        TokenId id = 0;
        for (const char* t : {"a", "b", "c", "ab", "bc", "abc", "aa", "aaa"}) v.add_token(t, id++);
        v.merges = std::move(merges);
        v.ignore_merges = ignore_merges;
        return BpeTokenizer(std::move(v), BpePipeline{});
    };
    // ids: a0 b1 c2 ab3 bc4 abc5 aa6 aaa7
    BOOST_TEST(make({{"a", "b"}, {"ab", "c"}}).encode("abc", false) == std::vector<TokenId>{5}, boost::test_tools::per_element());
    BOOST_TEST(make({{"b", "c"}, {"a", "b"}, {"ab", "c"}}).encode("abc", false) == (std::vector<TokenId>{0, 4}),
               boost::test_tools::per_element());
    // "aaa" with only "a a": leftmost pair merges first -> aa a
    BOOST_TEST(make({{"a", "a"}}).encode("aaa", false) == (std::vector<TokenId>{6, 0}), boost::test_tools::per_element());
    BOOST_TEST(make({{"a", "a"}}).encode("aaaa", false) == (std::vector<TokenId>{6, 6}), boost::test_tools::per_element());
    // ignore_merges: a whole pre-token in the vocab wins even when merges cannot build it
    BOOST_TEST(make({{"a", "a"}}, true).encode("aaa", false) == std::vector<TokenId>{7}, boost::test_tools::per_element());
    // unknown characters without unk/byte_fallback are dropped and their neighbours may merge
    // (the reference gives [ab] too)
    BOOST_TEST(make({{"a", "b"}}).encode("axb", false) == std::vector<TokenId>{3}, boost::test_tools::per_element());
    // no pre-tokenizer, no decoder: tokens are joined by spaces
    BOOST_TEST(make({{"a", "b"}}).decode({3, 2}) == "ab c");
}

BOOST_AUTO_TEST_CASE(byte_fallback_tokens) {
    const BpeTokenizer tok = BpeTokenizer::from_json_file(kDir / "fallback_style.json");
    BOOST_TEST(tok.vocabulary().byte_fallback);
    // U+D55C (한) = ED 95 9C: not in the character alphabet, so three byte tokens
    const auto ids = tok.encode("\xED\x95\x9C", false);
    BOOST_TEST(ids == (std::vector<TokenId>{*tok.token_to_id("<0xED>"), *tok.token_to_id("<0x95>"), *tok.token_to_id("<0x9C>")}),
               boost::test_tools::per_element());
    BOOST_TEST(tok.decode(ids) == "\xED\x95\x9C");
    // an incomplete byte run decodes to one U+FFFD per byte
    const std::string fffd(text::kReplacementChar);
    BOOST_TEST(tok.decode({ids[0], ids[1]}) == fffd + fffd);
}

BOOST_AUTO_TEST_CASE(chat_template) {
    const std::vector<ChatMessage> messages{{"system", "  Be brief.\n"}, {"user", "What is 2+2?"}};
    {
        const BpeTokenizer tok = BpeTokenizer::from_json_file(kDir / "llama3_style.json");
        const json& ref = expected()["llama3_style.json"]["chat"];
        BOOST_TEST((detect_chat_format(tok) == ChatFormat::llama3));
        BOOST_TEST(apply_chat_template(tok, messages) == ref["text"].get<std::string>());
        const auto ids = encode_chat(tok, messages);
        BOOST_TEST(ids == ids_of(ref["ids_with_special"]), boost::test_tools::per_element());
        BOOST_TEST(std::count(ids.begin(), ids.end(), *tok.bos_id()) == 1);
        // rendering already starting with BOS is not doubled either
        const auto again = tok.encode("<|begin_of_text|>" + apply_chat_template(tok, messages), true);
        BOOST_TEST(again == ids, boost::test_tools::per_element());
    }
    {
        const BpeTokenizer tok = BpeTokenizer::from_json_file(kDir / "gpt2_style.json");
        const std::vector<ChatMessage> plain{{"system", "Be brief."}, {"user", "What is 2+2?"}};
        const json& ref = expected()["gpt2_style.json"]["chat"];
        BOOST_TEST((detect_chat_format(tok) == ChatFormat::plain));
        BOOST_TEST(apply_chat_template(tok, plain) == ref["text"].get<std::string>());
        BOOST_TEST(encode_chat(tok, plain) == ids_of(ref["ids_with_special"]), boost::test_tools::per_element());
    }
    {
        BpeVocabulary v;
        TokenId id = 0;
        for (const char* t : {"a", "<|im_start|>", "<|im_end|>"}) v.add_token(t, id++);
        v.added_tokens = {{"<|im_start|>", 1}, {"<|im_end|>", 2}};
        const BpeTokenizer tok(std::move(v), BpePipeline::gpt2());
        BOOST_TEST((detect_chat_format(tok) == ChatFormat::chatml));
        BOOST_TEST(apply_chat_template(tok, std::vector<ChatMessage>{{"user", "hi"}}) ==
                   "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
        BOOST_TEST(apply_chat_template(tok, std::vector<ChatMessage>{{"user", "hi"}}, false) == "<|im_start|>user\nhi<|im_end|>\n");
    }
}

BOOST_AUTO_TEST_CASE(both_merge_formats_load) {
    // gpt2_style.json stores merges as "a b" strings; the same merges as [a, b] pairs must give
    // the same tokenizer.
    json j = fixture_json("gpt2_style.json");
    BOOST_TEST(j["model"]["merges"][0].is_string());
    const BpeTokenizer strings = BpeTokenizer::from_json(j);
    for (auto& m : j["model"]["merges"]) {
        const std::string s = m;
        m = json::array({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)});
    }
    const BpeTokenizer pairs = BpeTokenizer::from_json(j);
    BOOST_TEST(fixture_json("llama3_style.json")["model"]["merges"][0].is_array());
    for (const json& c : expected()["gpt2_style.json"]["cases"])
        BOOST_TEST(pairs.encode(c["text"].get<std::string>(), false) == strings.encode(c["text"].get<std::string>(), false));
}

BOOST_AUTO_TEST_CASE(malformed_files_name_file_and_field) {
    const auto expect_error = [](const std::filesystem::path& path, const std::string& field) {
        bool thrown = false;
        try {
            (void)BpeTokenizer::from_json_file(path);
        } catch (const Error& e) {
            thrown = true;
            const std::string msg = e.what();
            BOOST_TEST(msg.find(path.filename().string()) != std::string::npos, msg);
            BOOST_TEST(msg.find(field) != std::string::npos, "expected '" << field << "' in: " << msg);
        }
        BOOST_TEST(thrown, path.filename().string() << " should fail");
    };
    const auto mutate = [&](const char* name, const std::function<void(json&)>& edit, const std::string& field) {
        json j = fixture_json("llama3_style.json");
        edit(j);
        expect_error(write_temp(name, j.dump()), field);
    };
    expect_error(kDir / "does_not_exist.json", "cannot open");
    expect_error(write_temp("not_json.json", "{\"model\": [1, 2"), "invalid JSON");
    mutate("no_model.json", [](json& j) { j.erase("model"); }, "model");
    mutate("wordpiece.json", [](json& j) { j["model"]["type"] = "WordPiece"; }, "model.type");
    mutate("vocab_array.json", [](json& j) { j["model"]["vocab"] = json::array(); }, "model.vocab");
    mutate("vocab_bad_id.json", [](json& j) { j["model"]["vocab"]["a"] = "seven"; }, "model.vocab.a");
    mutate("merge_missing.json", [](json& j) { j["model"]["merges"][1] = json::array({"zzz_not_a_token", "a"}); }, "model.merges[1]");
    mutate("merge_one_part.json", [](json& j) { j["model"]["merges"][2] = "nospace"; }, "model.merges[2]");
    mutate("merge_number.json", [](json& j) { j["model"]["merges"][3] = 5; }, "model.merges[3]");
    mutate("bad_regex.json", [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed"; },
           "pre_tokenizer.pretokenizers[0].pattern.Regex");
    mutate("bad_behavior.json", [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Sideways"; },
           "pre_tokenizer.pretokenizers[0].behavior");
    mutate("whitespace.json", [](json& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; }, "pre_tokenizer.type");
    mutate("normalizer.json", [](json& j) { j["normalizer"] = {{"type", "BertNormalizer"}}; }, "normalizer.type");
    mutate("decoder.json", [](json& j) { j["decoder"] = {{"type", "WordPiece"}}; }, "decoder.type");
    mutate("added_no_id.json", [](json& j) { j["added_tokens"][0].erase("id"); }, "added_tokens[0].id");
    mutate("template_unknown.json", [](json& j) { j["post_processor"]["processors"][1]["special_tokens"] = json::object(); },
           "post_processor.processors[1].special_tokens");
    mutate("unk_missing.json", [](json& j) { j["model"]["unk_token"] = "<nope>"; }, "model.unk_token");
}

// The pre-tokenizers of GGUF byte-level tokenizers: the regexes of several names are the ones the
// fixture script lists, and with llama3_style.json's vocabulary they give the pieces and ids
// `tokenizers` gives with Sequence[Split(regex, Isolated)..., ByteLevel].
BOOST_AUTO_TEST_CASE(gguf_pre_tokenizers_match_tokenizers) {
    const json fixture = fixture_json("gguf_pre_tokenizers.json");
    const json& want = fixture["pre_tokenizers"];
    const auto texts = fixture["texts"].get<std::vector<std::string>>();
    const json base = fixture_json("llama3_style.json");
    BOOST_TEST(want.size() >= 20u);
    BOOST_TEST(texts.size() >= 24u);
    for (auto it = want.begin(); it != want.end(); ++it) {
        BOOST_TEST_CONTEXT("pre-tokenizer " << it.key()) {
            const GgufPreTokenizer* row = find_gguf_pre_tokenizer(it.key());
            BOOST_REQUIRE(row);
            std::vector<std::string> splits(row->splits.begin(), row->splits.end());
            BOOST_TEST(splits == it.value()["splits"].get<std::vector<std::string>>(), boost::test_tools::per_element());
            BOOST_TEST(row->ignore_merges == it.value()["ignore_merges"].get<bool>());
            json j = base;
            j["pre_tokenizer"] = gguf_pre_tokenizer_json(*row);
            j["model"]["ignore_merges"] = row->ignore_merges;
            const BpeTokenizer tok = BpeTokenizer::from_json(j, it.key());
            for (std::size_t i = 0; i < texts.size(); ++i) {
                BOOST_TEST(tok.pre_tokens(texts[i]) == it.value()["pieces"][i].get<std::vector<std::string>>(),
                           boost::test_tools::per_element());
                const std::vector<TokenId> ids = ids_of(it.value()["ids"][i]);
                BOOST_TEST(tok.encode(texts[i], false) == ids, boost::test_tools::per_element());
                BOOST_TEST(tok.decode(ids) == texts[i]);
            }
        }
    }
}

// Every name of the table loads (each regex compiles) and encodes any text reversibly; names are
// unique; unknown names are not found.
BOOST_AUTO_TEST_CASE(every_gguf_pre_tokenizer_loads) {
    json j = fixture_json("llama3_style.json");
    std::set<std::string_view> names;
    std::size_t rows = 0;
    for (const GgufPreTokenizer& row : gguf_pre_tokenizers()) {
        ++rows;
        j["pre_tokenizer"] = gguf_pre_tokenizer_json(row);
        const BpeTokenizer tok = BpeTokenizer::from_json(j, std::string(row.names.front()));
        for (std::string_view name : row.names) {
            BOOST_TEST(names.insert(name).second, "'" << name << "' appears twice");
            BOOST_TEST(find_gguf_pre_tokenizer(name) == &row);
        }
        for (const json& c : expected()["llama3_style.json"]["cases"]) {
            const std::string text = c["text"];
            BOOST_TEST(tok.decode(tok.encode(text, false)) == text, row.names.front() << ": '" << text << "'");
        }
    }
    BOOST_TEST(rows >= 25u);
    BOOST_TEST(names.size() >= 80u);
    for (const char* name : {"deepseek-llm", "deepseek-coder", "deepseek-v3", "gpt-4o", "falcon", "mpt", "starcoder", "command-r", "olmo",
                             "dbrx", "jais", "stablelm2", "tekken", "pixtral", "poro-chat", "chatglm-bpe", "viking", "bloom",
                             "gpt3-finnish", "exaone", "minerva-7b", "chameleon", "phi-2", "seed-coder", "superbpe", "trillion",
                             "bailingmoe", "kimi-k2", "smollm", "llama-bpe", "qwen2", "default", "gpt2"})
        BOOST_TEST(find_gguf_pre_tokenizer(name) != nullptr, name);
    BOOST_TEST(find_gguf_pre_tokenizer("no-such-pre") == nullptr);
    BOOST_TEST(gguf_pre_tokenizer_names().find("kimi-k2") != std::string::npos);
}

// Regex details that matter for pre-tokenizers: script properties are the Script property (as in
// Oniguruma), not Script_Extensions; empty matches are reported when asked for, never twice at one
// position nor right where a match ended.
BOOST_AUTO_TEST_CASE(regex_scripts_and_empty_matches) {
    using Matches = std::vector<std::pair<std::size_t, std::size_t>>;
    const std::string han = "\xE4\xB8\xAD\xE6\x96\x87";  // 中文
    const std::string full_stop = "\xE3\x80\x82";        // 。 (Common script, Han by extension)
    BOOST_TEST((text::Regex(R"(\p{Han}+)").find_all(han + full_stop + han) == Matches{{0, 6}, {9, 15}}));
    BOOST_TEST((text::Regex(R"([^\P{Han}]+)").find_all(han + full_stop) == Matches{{0, 6}}));
    BOOST_TEST((text::Regex(R"(\\p{Han})").find_all(R"(a\p{Han})") == Matches{{1, 8}}));  // an escaped backslash, then text
    BOOST_TEST((text::Regex(R"((?=(\d{3})+(?!\d)))").find_all("1234567", true) == Matches{{1, 1}, {4, 4}}));
    BOOST_TEST(text::Regex(R"((?=(\d{3})+(?!\d)))").find_all("1234567").empty());
    BOOST_TEST((text::Regex(R"(a|(?=b))").find_all("ab", true) == Matches{{0, 1}}));  // the empty match at 1 follows "a"
    bool thrown = false;
    try {
        text::Regex bad("(unclosed");
    } catch (const Error& e) {
        thrown = std::string(e.what()).find("(unclosed") != std::string::npos;
    }
    BOOST_TEST(thrown);
}
