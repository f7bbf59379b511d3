// `deviant generate` and `deviant evaluate` as a user runs them: greedy completions (with and
// without LoRA adapters) equal to transformers/PEFT's decoded by the tokenizers library
// (tests/data/generate/make_sampler_fixture.py), seeded sampling reproducible, evaluate's JSON
// equal to the Python reference (tests/data/eval/make_diversity_fixture.py), and bad input
// giving one line on stderr naming the file/line/field, with no output file left behind.
#define BOOST_TEST_MODULE cli_generate
#include <boost/test/unit_test.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "deviant/data/text_pairs.hpp"

#include "run_cli.hpp"

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const std::string data = DEVIANT_TEST_DATA_DIR;
const std::string gen_dir = data + "/generate/";
const std::string tokenizer = data + "/tokenizers/fallback_style.json";

using Run = deviant::testing::CliRun;
inline Run run(const std::string& args) { return deviant::testing::run_cli(args); }

std::string temp(const std::string& name) { return (fs::temp_directory_path() / (std::to_string(::getpid()) + "_" + name)).string(); }

std::string write_temp(const std::string& name, const std::string& content) {
    std::string p = temp(name);
    std::ofstream(p) << content;
    return p;
}

std::vector<json> read_lines(const std::string& path) {
    std::ifstream in(path);
    std::vector<json> out;
    for (std::string line; std::getline(in, line);)
        if (!line.empty()) out.push_back(json::parse(line));
    return out;
}

json fixture() {
    std::ifstream in(gen_dir + "sampler_fixture.json");
    return json::parse(in)["cli"];
}

std::string generate_args(const std::string& output) {
    return "generate --model " + gen_dir + "llama_756 --tokenizer " + tokenizer + " --prompts " + gen_dir + "prompts.jsonl --output " + output;
}

void expect_error(const std::string& args, const std::string& needle) {
    Run r = run(args);
    BOOST_TEST_CONTEXT(args) {
        BOOST_TEST(r.status == 1);
        BOOST_TEST(r.err.find(needle) != std::string::npos, r.err);
        BOOST_TEST(std::count(r.err.begin(), r.err.end(), '\n') == 1, r.err);
    }
}

}  // namespace

BOOST_AUTO_TEST_CASE(prompts_are_formatted_as_in_training) {
    // the ids the reference generated from: plain chat format, BOS once
    const deviant::BpeTokenizer tok = deviant::BpeTokenizer::from_json_file(tokenizer);
    const json f = fixture();
    const std::vector<std::string> prompts{"Write a story about a dragon.", "The old sea", "Tell me about the night and the stars, please."};
    for (std::size_t i = 0; i < prompts.size(); ++i)
        BOOST_TEST(deviant::data::tokenize_prompt(tok, prompts[i]) == f["prompt_ids"][i].get<std::vector<std::int64_t>>(), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(greedy_matches_transformers_and_peft) {
    const json f = fixture();
    for (bool with_adapters : {false, true}) {
        std::string out = temp("greedy.jsonl");
        std::string args = generate_args(out) + " --samples 2 --temperature 0 --max-new-tokens 12 --batch-size 4";
        if (with_adapters) args += " --adapters " + data + "/lora/llama_adapter";
        Run r = run(args);
        BOOST_TEST_INFO(r.err);
        BOOST_REQUIRE_EQUAL(r.status, 0);
        auto lines = read_lines(out);
        fs::remove(out);
        const json& want = f[with_adapters ? "adapters" : "base"];
        BOOST_REQUIRE_EQUAL(lines.size(), want.size());
        for (std::size_t i = 0; i < lines.size(); ++i) {
            BOOST_TEST_CONTEXT("adapters " << with_adapters << " prompt " << i) {
                BOOST_REQUIRE_EQUAL(lines[i]["samples"].size(), 2u);
                BOOST_TEST(lines[i]["samples"][0].get<std::string>() == want[i].get<std::string>());
                BOOST_TEST(lines[i]["samples"][1].get<std::string>() == want[i].get<std::string>());
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(sampling_is_reproducible_and_evaluable) {
    std::string a = temp("a.jsonl"), b = temp("b.jsonl"), c = temp("c.jsonl"), metrics = temp("metrics.json");
    std::string args = " --samples 3 --max-new-tokens 10 --seed 5";
    BOOST_REQUIRE_EQUAL(run(generate_args(a) + args).status, 0);
    BOOST_REQUIRE_EQUAL(run(generate_args(b) + args + " --batch-size 1").status, 0);
    BOOST_REQUIRE_EQUAL(run(generate_args(c) + " --samples 3 --max-new-tokens 10 --seed 6").status, 0);
    auto la = read_lines(a), lb = read_lines(b), lc = read_lines(c);
    BOOST_REQUIRE_EQUAL(la.size(), 3u);
    BOOST_TEST(la == lb);
    BOOST_TEST(la != lc);
    BOOST_TEST(la[1]["prompt"] == "The old sea");
    for (const auto& l : la) BOOST_TEST(l["samples"].size() == 3u);
    // generate's output is evaluate's input
    Run r = run("evaluate --input " + a + " --output " + metrics);
    BOOST_TEST_INFO(r.err);
    BOOST_REQUIRE_EQUAL(r.status, 0);
    BOOST_TEST(r.out.find("homogenization") != std::string::npos);
    std::ifstream in(metrics);
    json m = json::parse(in);
    BOOST_TEST(m["prompts"] == 3);
    BOOST_TEST(m["samples"] == 9);
    BOOST_TEST(m["metrics"]["distinct_1"]["n"] == 3);
    for (const auto& p : {a, b, c, metrics}) fs::remove(p);
}

BOOST_AUTO_TEST_CASE(evaluate_matches_python_reference) {
    std::string out = temp("eval.json");
    Run r = run("evaluate --input " + data + "/eval/groups.jsonl --embeddings sem,sty --output " + out);
    BOOST_TEST_INFO(r.err);
    BOOST_REQUIRE_EQUAL(r.status, 0);
    std::ifstream in(out), ein(data + "/eval/expected.json");
    json got = json::parse(in), want = json::parse(ein);
    fs::remove(out);
    BOOST_REQUIRE_EQUAL(got["metrics"].size(), want["metrics"].size());
    for (auto& [name, e] : want["metrics"].items())
        for (const char* k : {"mean", "sd", "ci_low", "ci_high"})
            BOOST_TEST(std::abs(got["metrics"][name][k].get<double>() - e[k].get<double>()) < 1e-12, name << " " << k);
    BOOST_TEST(r.out.find("cosine_distance_sty") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(bad_input_is_one_line_error) {
    std::string out = temp("never.jsonl");
    std::string bad = write_temp("bad_prompts.jsonl", "{\"prompt\": \"fine\"}\n{\"text\": \"no prompt\"}\n");
    std::string not_text = write_temp("num_prompts.jsonl", "{\"prompt\": 3}\n");
    std::string m = gen_dir + "llama_756";
    expect_error("generate --model " + m + " --tokenizer " + tokenizer + " --prompts " + bad + " --output " + out,
                 bad + ":2: missing field 'prompt'");
    expect_error("generate --model " + m + " --tokenizer " + tokenizer + " --prompts " + not_text + " --output " + out,
                 not_text + ":1: field 'prompt' must be a string");
    expect_error(generate_args(out) + " --top-p 0", "top_p");
    expect_error(generate_args(out) + " --max-new-tokens 500", "positions");
    // a tokenizer whose ids do not fit the model
    expect_error("generate --model " + data + "/models/llama --tokenizer " + tokenizer + " --prompts " + gen_dir + "prompts.jsonl --output " + out,
                 "outside the model's vocabulary");
    BOOST_TEST(!fs::exists(out));

    std::string no_emb = write_temp("no_emb.jsonl", "{\"samples\": [\"a b\", \"b c\"]}\n");
    std::string bad_emb = write_temp("bad_emb.jsonl", "{\"samples\": [\"a\", \"b\"], \"embeddings\": {\"sem\": [[1, 0], [0]]}}\n");
    expect_error("evaluate --input " + no_emb + " --embeddings sem", no_emb + ":1: missing field 'embeddings.sem'");
    expect_error("evaluate --input " + bad_emb + " --embeddings sem", bad_emb + ":1: field 'embeddings.sem[1]' has 1 dimensions");
    expect_error("evaluate --input " + temp("missing.jsonl"), "cannot open");
    for (const auto& p : {bad, not_text, no_emb, bad_emb}) fs::remove(p);
}
