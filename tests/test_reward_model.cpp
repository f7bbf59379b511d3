// The reward model: scores equal transformers' *ForSequenceClassification on tiny checkpoints
// (tests/data/reward/make_reward_fixtures.py), alone and right-padded in one batch; the score
// transform against its formula; `deviant reward train` learning a signal and `reward score`
// writing what the library computes; bad data stopping with FILE:LINE.
#define BOOST_TEST_MODULE reward_model
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "deviant/models/reward_model.hpp"
#include "deviant/train/reward_data.hpp"
#include "expect_error.hpp"
#include "run_cli.hpp"
#include "temp_dir.hpp"

using namespace deviant;
using nlohmann::json;

namespace {
const std::string test_data = DEVIANT_TEST_DATA_DIR;

json expected() {
    std::ifstream in(test_data + "/reward/expected.json");
    return json::parse(in);
}

template <class M>
std::vector<double> rewards_of(const M& m, const std::vector<std::vector<std::int64_t>>& rows) {
    std::vector<RewardSequence> seqs;
    for (const auto& r : rows) seqs.push_back({r});
    return score_sequences(m, seqs, 16);
}
}  // namespace

BOOST_AUTO_TEST_CASE(scores_match_transformers) {
    const json e = expected();
    for (const char* name : {"llama", "qwen2"})
        for (DType dt : {DType::f64, DType::f32}) {
            const json& x = e[name];
            auto rows = x["rows"].get<std::vector<std::vector<std::int64_t>>>();
            auto want = x["scores"].get<std::vector<double>>();
            with_reward_model(test_data + "/reward/" + name, [&](auto& m) {
                BOOST_TEST(m.head_from_checkpoint());
                // alone
                for (std::size_t i = 0; i < rows.size(); ++i) {
                    Tape t;
                    std::vector<std::int64_t> len{std::int64_t(rows[i].size())};
                    double r = m.rewards(t, Tensor::from(rows[i], {1, std::int64_t(rows[i].size())}), len).value().template to_vector<double>()[0];
                    BOOST_TEST(std::abs(r - want[i]) < (dt == DType::f64 ? 1e-6 : 1e-4) * std::max(1.0, std::abs(want[i])),
                               name << " row " << i << ": " << r << " vs " << want[i]);
                }
                // one right-padded batch (score_sequences pads by length groups; here every row in one batch)
                std::vector<RewardSequence> seqs;
                for (const auto& r : rows) seqs.push_back({r});
                std::vector<std::size_t> all(rows.size());
                for (std::size_t i = 0; i < all.size(); ++i) all[i] = i;
                auto [ids, lengths] = deviant::detail::padded_rows(seqs, all);
                Tape t;
                auto got = m.rewards(t, ids, lengths).value().template to_vector<double>();
                auto padded = x["padded_scores"].get<std::vector<double>>();
                for (std::size_t i = 0; i < rows.size(); ++i)
                    BOOST_TEST(std::abs(got[i] - padded[i]) < 1e-4 * std::max(1.0, std::abs(padded[i])), name << " padded row " << i);
                return 0;
            }, 0, dt);
        }
}

BOOST_AUTO_TEST_CASE(save_and_load_round_trip) {
    testing::TempDir dir("deviant_reward_rt");
    const json e = expected();
    auto rows = e["llama"]["rows"].get<std::vector<std::vector<std::int64_t>>>();
    std::vector<double> before;
    with_reward_model(test_data + "/reward/llama", [&](auto& m) {
        before = rewards_of(m, rows);
        save_reward_model(dir.path / "rm", m);
        return 0;
    });
    const json cfg = json::parse(std::ifstream(dir.path / "rm" / "config.json"));
    BOOST_TEST(cfg["architectures"][0].get<std::string>() == "LlamaForSequenceClassification");
    BOOST_TEST(cfg["id2label"].size() == 1u);
    with_reward_model(dir.path / "rm", [&](auto& m) {
        auto after = rewards_of(m, rows);
        for (std::size_t i = 0; i < rows.size(); ++i) BOOST_TEST(after[i] == before[i]);
        return 0;
    });
    // a language model gets a fresh head from the seed: same seed, same head
    with_reward_model(test_data + "/models/llama", [&](auto& a) {
        BOOST_TEST(!a.head_from_checkpoint());
        with_reward_model(test_data + "/models/llama", [&](auto& b) {
            BOOST_TEST(a.score_parameter().value.template to_vector<double>() == b.score_parameter().value.template to_vector<double>());
            return 0;
        }, 5);
        return 0;
    }, 5);
}

// The evaluation's transform: s + 1 - min(s), log(x + 1) twice, min-max to [-1, 1].
BOOST_AUTO_TEST_CASE(score_transform_formula) {
    const std::vector<double> s{-3, 0, 4, 24, 1500};
    ScoreTransform t = ScoreTransform::fit(s, 2);
    auto squash = [](double v) { return std::log(std::log(v + 3 + 1 + 1) + 1); };  // shift = 1 - (-3) = 4
    const double lo = squash(-3), hi = squash(1500);
    for (double v : s) BOOST_TEST(std::abs(t(v) - (2 * (squash(v) - lo) / (hi - lo) - 1)) < 1e-12);
    BOOST_TEST(t(-3) == -1.0);
    BOOST_TEST(t(1500) == 1.0);
    BOOST_TEST(std::abs(t(-100) - (2 * (std::log(std::log(1.0) + 1) - lo) / (hi - lo) - 1)) < 1e-12);  // below the shift: clamped at 0
    ScoreTransform back = ScoreTransform::from_json(t.to_json(), "t");
    BOOST_TEST(back(24) == t(24));
    BOOST_TEST(ScoreTransform::fit(std::vector<double>{3}, 1)(3) == 0.0);  // one distinct score: no scale
}

namespace {
const std::string tokenizer = test_data + "/tokenizers/fallback_style.json";
const std::string model = test_data + "/generate/llama_756";

// Prompts whose responses score high when they say "good" and low when they say "bad".
std::string scored_lines(int prompts) {
    std::string s;
    for (int p = 0; p < prompts; ++p) {
        json line{{"prompt", "Write about thing " + std::to_string(p)}, {"responses", json::array()}};
        for (int k = 0; k < 4; ++k) {
            const bool good = (k + p) % 2 == 0;
            line["responses"].push_back({{"text", std::string(good ? "good good story " : "bad bad story ") + std::to_string(k)},
                                         {"score", good ? 40 + k : k}});
        }
        s += line.dump() + "\n";
    }
    return s;
}
}  // namespace

BOOST_AUTO_TEST_CASE(cli_train_learns_and_score_writes_rewards) {
    testing::TempDir dir("deviant_reward_cli");
    const auto train = dir.write("train.jsonl", scored_lines(12));
    const auto eval = dir.write("eval.jsonl", scored_lines(4));
    const std::string out = (dir.path / "rm").string();
    auto r = testing::run_cli("reward train --model " + model + " --tokenizer " + tokenizer + " --train " + train.string() + " --eval " +
                              eval.string() + " --output " + out + " --lr 3e-3 --epochs 6 --batch-size 8 --lora-rank 4 --lora-alpha 8 --quiet");
    BOOST_TEST_INFO(r.err);
    BOOST_REQUIRE_EQUAL(r.status, 0);
    // held-out MAE falls and the good/bad order is learnt
    json last;
    {
        std::ifstream in(out + "/metrics.jsonl");
        for (std::string l; std::getline(in, l);)
            if (l.find("eval/mae") != std::string::npos) last = json::parse(l);
    }
    BOOST_REQUIRE(!last.is_null());
    BOOST_TEST(last["eval/pair_accuracy"].get<double>() >= 0.9, last.dump());
    BOOST_TEST(last["eval/mae"].get<double>() < 0.5, last.dump());
    const json meta = json::parse(std::ifstream(out + "/reward.json"));
    BOOST_TEST(meta["transform"]["logs"].get<int>() == 2);

    // score: every input form; samples get "rewards", responses "reward", the library agrees
    const auto in = dir.write("in.jsonl", json{{"prompt", "Write about thing 1"}, {"samples", {"good good story 3", "bad bad story 3"}}}.dump() +
                                              "\n" + json{{"prompt", "Write about thing 1"}, {"response", "good good story 3"}}.dump() + "\n" +
                                              json{{"ids", {1, 5, 9, 2}}}.dump() + "\n" +
                                              json{{"prompt", "P"}, {"responses", {{{"text", "bad bad story 0"}, {"score", 1}}}}}.dump() + "\n");
    auto s = testing::run_cli("reward score --model " + out + " --input " + in.string() + " --output " + (dir.path / "out.jsonl").string());
    BOOST_TEST_INFO(s.err);
    BOOST_REQUIRE_EQUAL(s.status, 0);
    std::vector<json> lines;
    {
        std::ifstream o(dir.path / "out.jsonl");
        for (std::string l; std::getline(o, l);) lines.push_back(json::parse(l));
    }
    BOOST_REQUIRE_EQUAL(lines.size(), 4u);
    BOOST_TEST(lines[0]["rewards"].size() == 2u);
    BOOST_TEST(lines[0]["rewards"][0].get<double>() > lines[0]["rewards"][1].get<double>());
    BOOST_TEST(std::abs(lines[1]["reward"].get<double>() - lines[0]["rewards"][0].get<double>()) < 1e-6);
    BOOST_TEST(lines[2]["reward"].is_number());
    BOOST_TEST(lines[3]["responses"][0]["reward"].is_number());
    BOOST_TEST(lines[3]["responses"][0]["score"].get<int>() == 1);  // the rest of the line is kept
    with_reward_model(out, [&](auto& m) {
        auto r2 = rewards_of(m, {{1, 5, 9, 2}});
        // float32 agreement: the CLI process and this one may split the float32 products over
        // their threads differently, which changes the last bits of the sums
        BOOST_TEST(std::abs(r2[0] - lines[2]["reward"].get<double>()) <= 1e-6 * std::max(1.0, std::abs(r2[0])));
        return 0;
    });

    // bad data: one line naming FILE:LINE, status 1, nothing written
    auto bad = [&](const std::string& name, const std::string& text, const std::string& must) {
        const auto f = dir.write(name, text);
        auto b = testing::run_cli("reward train --model " + model + " --tokenizer " + tokenizer + " --train " + f.string() + " --output " +
                                  (dir.path / ("o_" + name)).string() + " --max-steps 1 --quiet");
        BOOST_TEST(b.status == 1, name);
        BOOST_TEST(std::count(b.err.begin(), b.err.end(), '\n') == 1, b.err);
        BOOST_TEST(b.err.find(f.string() + ":" + must) != std::string::npos, name << ": " << b.err);
        BOOST_TEST(!std::filesystem::exists(dir.path / ("o_" + name) / "model.safetensors"), name);
    };
    const std::string good = scored_lines(2);
    bad("truncated.jsonl", good + good.substr(0, 40), "3:");
    bad("scoreless.jsonl", good + R"({"prompt": "p", "responses": [{"text": "a story"}]})" + "\n", "3: response 0: field 'score'");
    bad("nan.jsonl", good + R"({"prompt": "p", "responses": [{"text": "a story", "score": NaN}]})" + "\n", "3:");
    bad("overflow.jsonl", good + R"({"prompt": "p", "responses": [{"text": "a story", "score": 1e999}]})" + "\n", "3:");
    bad("string_nan.jsonl", good + R"({"prompt": "p", "response": "a story", "score": "nan"})" + "\n", "3: field 'response': field 'score'");
    bad("empty_text.jsonl", R"({"prompt": "p", "responses": [{"text": "", "score": 3}]})" "\n", "1: response 0: text");
    // retraining a reward model into its own folder is refused (an output never replaces an input)
    auto same = testing::run_cli("reward train --model " + out + " --train " + train.string() + " --output " + out + "/ --max-steps 1 --quiet");
    BOOST_TEST(same.status == 1);
    BOOST_TEST(same.err.find("refusing to overwrite an input") != std::string::npos, same.err);
    // scoring with a plain language model (no trained head) is refused
    auto lm = testing::run_cli("reward score --model " + model + " --tokenizer " + tokenizer + " --input " + in.string() + " --output " +
                               (dir.path / "x.jsonl").string());
    BOOST_TEST(lm.status == 1);
    BOOST_TEST(lm.err.find("not a reward model") != std::string::npos, lm.err);
}

// Bradley-Terry on text pairs: the chosen ("good ...") responses end up above the rejected.
BOOST_AUTO_TEST_CASE(cli_bradley_terry_orders_pairs) {
    testing::TempDir dir("deviant_reward_bt");
    auto pairs = [](int n) {
        std::string s;
        for (int p = 0; p < n; ++p)
            s += json{{"prompt", "Write about thing " + std::to_string(p)},
                      {"chosen", "good good story " + std::to_string(p % 3)},
                      {"rejected", "bad bad story " + std::to_string(p % 3)}}.dump() + "\n";
        return s;
    };
    const auto train = dir.write("train.jsonl", pairs(24));
    const auto eval = dir.write("eval.jsonl", pairs(6));
    const std::string out = (dir.path / "rm").string();
    auto r = testing::run_cli("reward train --loss bt --model " + model + " --tokenizer " + tokenizer + " --train " + train.string() + " --eval " +
                              eval.string() + " --output " + out + " --lr 3e-3 --epochs 4 --batch-size 4 --lora-rank 4 --lora-alpha 8 --quiet");
    BOOST_TEST_INFO(r.err);
    BOOST_REQUIRE_EQUAL(r.status, 0);
    const json meta = json::parse(std::ifstream(out + "/reward.json"));
    BOOST_TEST(meta["loss"].get<std::string>() == "bt");
    BOOST_TEST(!meta.contains("transform"));
    BOOST_TEST(meta["eval"]["eval/pair_accuracy"].get<double>() == 1.0, meta.dump());
}
