// The `deviant` program as a user runs it: `deviant score` output against the transformers
// reference, and bad input giving one line on stderr naming the file/line/field and a
// non-zero exit status (never a crash).
#define BOOST_TEST_MODULE cli
#include <boost/test/unit_test.hpp>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

using nlohmann::json;

namespace {

const std::string data = DEVIANT_TEST_DATA_DIR;

struct Run {
    int status = -1;
    std::string out, err;
};

Run run(const std::string& args) {
    auto err_file = std::filesystem::temp_directory_path() / ("deviant_cli_err_" + std::to_string(::getpid()));
    std::string cmd = std::string(DEVIANT_CLI) + " " + args + " 2>" + err_file.string();
    Run r;
    FILE* p = ::popen(cmd.c_str(), "r");
    BOOST_REQUIRE(p);
    std::array<char, 4096> buf;
    while (std::size_t n = std::fread(buf.data(), 1, buf.size(), p)) r.out.append(buf.data(), n);
    int st = ::pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    std::ifstream e(err_file);
    r.err.assign(std::istreambuf_iterator<char>(e), {});
    std::filesystem::remove(err_file);
    return r;
}

double rel(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-30); }

void check_score(const std::string& args, const json& want) {
    Run r = run(args);
    BOOST_TEST_INFO(r.err);
    BOOST_REQUIRE_EQUAL(r.status, 0);
    json got = json::parse(r.out);
    BOOST_REQUIRE_EQUAL(got["pairs"].size(), want["pairs"].size());
    for (std::size_t i = 0; i < got["pairs"].size(); ++i)
        for (auto& [k, v] : want["pairs"][i].items()) BOOST_TEST(rel(got["pairs"][i][k], v) < 1e-4, "pair " << i << " " << k);
    BOOST_TEST(rel(got["loss"], want["loss"]) < 1e-4);
    BOOST_REQUIRE_EQUAL(got["grad_norms"].size(), want["grad_norms"].size());
    for (auto& [k, v] : want["grad_norms"].items()) BOOST_TEST(rel(got["grad_norms"][k], v) < 1e-3, k);
}

std::string write_temp(const std::string& name, const std::string& content) {
    auto p = std::filesystem::temp_directory_path() / name;
    std::ofstream(p) << content;
    return p.string();
}

}  // namespace

BOOST_AUTO_TEST_CASE(score_matches_transformers) {
    std::ifstream in(data + "/models/expected.json");
    json e = json::parse(in);
    std::string m = data + "/models/";
    check_score("score --model " + m + "llama --ref " + m + "llama_ref --pairs " + m + "pairs.jsonl --objective dpo --grad-norms", e["llama_dpo"]);
    check_score("score --model " + m + "llama --ref " + m + "llama_ref --pairs " + m + "pairs.jsonl --objective ddpo --grad-norms --batch-size 2",
                e["llama_ddpo"]);
    check_score("score --model " + m + "gpt2 --pairs " + m + "pairs.jsonl --objective sft --grad-norms", e["gpt2_sft"]);
}

BOOST_AUTO_TEST_CASE(score_accepts_every_objective) {
    std::string m = data + "/models/";
    for (std::string obj : {"sft", "dpo", "ddpo", "ipo", "hinge", "simpo", "orpo", "dorpo"}) {
        Run r = run("score --model " + m + "llama --pairs " + m + "pairs.jsonl --objective " + obj + " --beta 0.2");
        BOOST_TEST_INFO(obj << ": " << r.err);
        BOOST_TEST(r.status == 0);
        BOOST_TEST(std::isfinite(json::parse(r.out)["loss"].get<double>()));
    }
}

BOOST_AUTO_TEST_CASE(bad_input_is_one_line_error) {
    std::string m = data + "/models/";
    auto expect_error = [&](const std::string& args, const std::string& needle) {
        Run r = run(args);
        BOOST_TEST_CONTEXT(args) {
            BOOST_TEST(r.status == 1);
            BOOST_TEST(r.out.empty());
            BOOST_TEST(r.err.find(needle) != std::string::npos, r.err);
            BOOST_TEST(std::count(r.err.begin(), r.err.end(), '\n') == 1, r.err);
        }
    };
    std::string bad_line = write_temp("deviant_bad_line.jsonl", "{\"prompt_ids\":[1],\"chosen_ids\":[2],\"rejected_ids\":[3]}\n{\"prompt_ids\":[1],\n");
    std::string oov = write_temp("deviant_oov.jsonl", "{\"prompt_ids\":[1],\"chosen_ids\":[2],\"rejected_ids\":[96]}\n");
    std::string empty = write_temp("deviant_empty.jsonl", "{\"prompt_ids\":[1],\"chosen_ids\":[],\"rejected_ids\":[3]}\n");
    expect_error("score --model " + m + "llama --pairs " + bad_line, bad_line + ":2:");
    expect_error("score --model " + m + "llama --pairs " + oov, "rejected_ids");
    expect_error("score --model " + m + "llama --pairs " + empty, "chosen_ids");
    expect_error("score --model " + m + "nonexistent --pairs " + oov, "nonexistent");
    expect_error("score --model " + m + "llama --pairs " + m + "pairs.jsonl --objective kto", "kto");
    // a truncated checkpoint
    auto dir = std::filesystem::temp_directory_path() / "deviant_truncated_model";
    std::filesystem::create_directories(dir);
    std::filesystem::copy_file(m + "llama/config.json", dir / "config.json", std::filesystem::copy_options::overwrite_existing);
    {
        std::ifstream src(m + "llama/model.safetensors", std::ios::binary);
        std::string bytes(std::istreambuf_iterator<char>(src), {});
        std::ofstream(dir / "model.safetensors", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
    }
    expect_error("score --model " + dir.string() + " --pairs " + m + "pairs.jsonl", "model.safetensors");
    std::filesystem::remove_all(dir);
    for (auto& f : {bad_line, oov, empty}) std::filesystem::remove(f);
}
