// `deviant report`: the experiment's comparison table (and plot) from finished runs.
//   deviant report --run NAME:TRAIN_DIR:EVAL_JSON ... [--human RESPONSES.jsonl] [--samples K]
//                  [--markdown FILE] [--json FILE] [--plot FILE.png]
// TRAIN_DIR holds a run's metrics.jsonl (its last evaluation gives the quality columns);
// EVAL_JSON is `deviant evaluate --output` for that run's samples (the diversity columns).
// --human adds the held-out human responses (prompt/responses JSON Lines with embeddings),
// K per prompt, as the reference row (with its mean reward when its responses carry "reward",
// from `deviant reward score`). A run given as NAME::EVAL_JSON has no training metrics (a base
// model). When the samples carry rewards the table gains a reward column and the plot (gnuplot,
// when installed) is the paper's figure: reward against semantic and style diversity; otherwise
// semantic diversity against held-out ranking accuracy.
#include <fmt/core.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "command.hpp"
#include "deviant/data/jsonl.hpp"
#include "deviant/eval/diversity.hpp"

namespace {

using namespace deviant;
using nlohmann::json;
namespace fs = std::filesystem;

struct Row {
    std::string name;
    double ranking_accuracy = NAN, chosen_nll = NAN;
    std::map<std::string, eval::MetricSummary> diversity;
};

json last_eval(const fs::path& metrics_file) {
    json last;
    data::for_each_json_line(metrics_file, [&](data::JsonLine& line) {
        if (line.value.contains("eval/chosen_nll")) last = line.value;
    });
    DEVIANT_REQUIRE(!last.is_null(), "{}: no evaluation line (train with --eval)", metrics_file.string());
    return last;
}

std::map<std::string, eval::MetricSummary> read_diversity(const fs::path& file) {
    std::ifstream in(file);
    DEVIANT_REQUIRE(in.is_open(), "{}: cannot open for reading", file.string());
    json j;
    try {
        j = json::parse(in);
    } catch (const json::exception& e) {
        fail("{}: invalid JSON: {}", file.string(), e.what());
    }
    DEVIANT_REQUIRE(j.contains("metrics") && j["metrics"].is_object(), "{}: missing field 'metrics'", file.string());
    std::map<std::string, eval::MetricSummary> out;
    for (auto& [k, v] : j["metrics"].items())
        out[k] = eval::MetricSummary{k, v.at("mean"), v.at("sd"), v.at("ci_low"), v.at("ci_high"), v.at("n")};
    return out;
}

// Diversity (and, when every response carries a "reward", quality) of the human responses: the
// first K of each prompt, with their embeddings.
std::map<std::string, eval::MetricSummary> human_diversity(const fs::path& file, std::size_t k, const std::vector<std::string>& spaces) {
    std::vector<eval::SampleGroup> groups;
    bool rewarded = true;
    data::for_each_json_line(file, [&](data::JsonLine& line) {
        eval::SampleGroup g;
        g.prompt = line.value.at("prompt");
        for (const json& r : line.value.at("responses")) {
            if (g.samples.size() == k) break;
            g.samples.push_back(r.at("text"));
            for (auto& s : spaces) g.embeddings[s].push_back(r.at("embedding").at(s).get<std::vector<double>>());
            if (r.contains("reward") && r["reward"].is_number()) g.rewards.push_back(r["reward"].get<double>());
            else rewarded = false;
        }
        if (g.samples.size() >= 2) groups.push_back(std::move(g));
    });
    if (!rewarded)
        for (auto& g : groups) g.rewards.clear();
    std::map<std::string, eval::MetricSummary> out;
    for (auto& m : eval::diversity_report(groups, spaces)) out[m.name] = m;
    return out;
}

std::string cell(const std::map<std::string, eval::MetricSummary>& d, const std::string& key) {
    auto it = d.find(key);
    if (it == d.end()) return "–";
    const auto& m = it->second;
    return m.n > 1 ? fmt::format("{:.3f} ± {:.3f}", m.mean, (m.ci_high - m.ci_low) / 2) : fmt::format("{:.3f}", m.mean);
}

void run_gnuplot(const std::string& script, const std::string& target) {
    FILE* g = ::popen("gnuplot", "w");
    DEVIANT_REQUIRE(g != nullptr, "cannot start gnuplot");
    std::fputs(script.c_str(), g);
    DEVIANT_REQUIRE(::pclose(g) == 0, "gnuplot failed writing {}", target);
}

// The paper's figure: mean reward (x) against semantic and style diversity (y), one point per
// method with 95% CIs on both axes, the human responses as a reference point.
void plot_reward_vs_diversity(const std::vector<Row>& rows, const std::string& png) {
    const fs::path dat = fs::path(png).replace_extension(".dat");
    {
        std::ofstream d(dat);
        for (const char* space : {"sem", "sty"}) {
            for (const Row& r : rows) {
                const std::string key = std::string("cosine_distance_") + space;
                if (!r.diversity.count("reward") || !r.diversity.count(key)) continue;
                const auto& q = r.diversity.at("reward");
                const auto& m = r.diversity.at(key);
                d << fmt::format("\"{}\" {} {} {} {} {}\n", r.name, q.mean, (q.ci_high - q.ci_low) / 2, m.mean, (m.ci_high - m.ci_low) / 2,
                                 r.name.rfind("human", 0) == 0 ? 1 : 0);
            }
            d << "\n\n";  // gnuplot data blocks: index 0 = sem, 1 = sty
        }
    }
    const std::string panel =
        "plot '{0}' index {1} using ($6==0?$2:1/0):4:3:5 with xyerrorbars pt 7 ps 1.4 lc rgb '#1f77b4', "
        "'' index {1} using ($6==1?$2:1/0):4:3:5 with xyerrorbars pt 5 ps 1.4 lc rgb '#d62728', "
        "'' index {1} using 2:4:1 with labels offset 0,1.1 font ',9'\n";
    const std::string script = fmt::format(
        "set terminal pngcairo size 1200,520 font ',11'\nset output '{0}'\nset multiplot layout 1,2 title 'Quality vs diversity (held-out "
        "prompts, 95% CIs)'\nset grid\nset key off\nset offsets graph 0.12, graph 0.12, graph 0.12, graph 0.12\n"
        "set xlabel 'reward (reward model, mean per prompt)'\nset ylabel 'semantic diversity'\n{1}"
        "set ylabel 'style diversity'\n{2}unset multiplot\n",
        png, fmt::format(fmt::runtime(panel), dat.string(), 0), fmt::format(fmt::runtime(panel), dat.string(), 1));
    run_gnuplot(script, png);
    fs::remove(dat);
}

deviant::cli::Registration report_command{{"report", "Comparison table and plot of finished runs (quality and diversity)", [](CLI::App& app) {
    struct Args {
        std::vector<std::string> runs;
        std::string human, markdown, json_out, plot;
        std::size_t samples = 4;
    };
    auto a = std::make_shared<Args>();
    app.add_option("--run", a->runs, "NAME:TRAIN_DIR:EVAL_JSON (repeatable; NAME::EVAL_JSON without training metrics)")->required();
    app.add_option("--human", a->human, "Held-out prompt/responses JSON Lines with embeddings: the human reference row");
    app.add_option("--samples", a->samples, "Human responses per prompt (match generate's --samples)")->capture_default_str();
    app.add_option("--markdown", a->markdown, "Write the table as Markdown");
    app.add_option("--json", a->json_out, "Write the numbers as JSON");
    app.add_option("--plot", a->plot, "Write a PNG plot (needs gnuplot)");
    return std::function<int()>([a] {
        // no output may land on an input (a run's eval file, the human reference) or on another output
        std::vector<std::pair<std::string, std::string>> inputs;
        for (const std::string& spec : a->runs)
            if (auto c = spec.rfind(':'); c != std::string::npos) inputs.emplace_back(spec.substr(c + 1), "--run " + spec);
        if (!a->human.empty()) inputs.emplace_back(a->human, "--human");
        const std::vector<std::pair<std::string, std::string>> outputs{{a->markdown, "--markdown"}, {a->json_out, "--json"}, {a->plot, "--plot"}};
        for (const auto& [out, oflag] : outputs) {
            if (out.empty()) continue;
            for (const auto& [in, iflag] : inputs) deviant::data::require_distinct_paths(in, out, iflag.c_str(), oflag.c_str());
            for (const auto& [other, flag2] : outputs)
                if (!other.empty() && &other != &out) deviant::data::require_distinct_paths(other, out, flag2.c_str(), oflag.c_str());
        }
        std::vector<Row> rows;
        for (const std::string& spec : a->runs) {
            auto c1 = spec.find(':'), c2 = spec.find(':', c1 + 1);
            DEVIANT_REQUIRE(c1 != std::string::npos && c2 != std::string::npos, "--run '{}': expected NAME:TRAIN_DIR:EVAL_JSON", spec);
            Row r;
            r.name = spec.substr(0, c1);
            if (c2 > c1 + 1) {  // NAME::EVAL_JSON: an untrained model, no training metrics
                json e = last_eval(fs::path(spec.substr(c1 + 1, c2 - c1 - 1)) / "metrics.jsonl");
                r.ranking_accuracy = e.value("eval/ranking_accuracy", NAN);
                r.chosen_nll = e.value("eval/chosen_nll", NAN);
            }
            r.diversity = read_diversity(spec.substr(c2 + 1));
            rows.push_back(std::move(r));
        }
        if (!a->human.empty()) {
            Row h;
            h.name = "human (held-out)";
            h.diversity = human_diversity(a->human, a->samples, {"sem", "sty"});
            rows.push_back(std::move(h));
        }
        const bool rewards = std::any_of(rows.begin(), rows.end(), [](const Row& r) { return r.diversity.count("reward") > 0; });
        std::string md = fmt::format("| method |{} ranking acc. ↑ | chosen NLL ↓ | semantic div. ↑ | style div. ↑ | n-gram div. ↑ | compression ↓ | homogenisation ↓ |\n"
                                     "|---|{}---|---|---|---|---|---|---|\n", rewards ? " reward ↑ |" : "", rewards ? "---|" : "");
        json out = json::array();
        for (const Row& r : rows) {
            auto num = [](double v) { return std::isnan(v) ? std::string("–") : fmt::format("{:.3f}", v); };
            md += fmt::format("| {} |{} {} | {} | {} | {} | {} | {} | {} |\n", r.name, rewards ? " " + cell(r.diversity, "reward") + " |" : "",
                              num(r.ranking_accuracy), num(r.chosen_nll),
                              cell(r.diversity, "cosine_distance_sem"), cell(r.diversity, "cosine_distance_sty"),
                              cell(r.diversity, "ngram_diversity"), cell(r.diversity, "compression_ratio"), cell(r.diversity, "homogenization"));
            json j{{"method", r.name}};
            if (!std::isnan(r.ranking_accuracy)) j["ranking_accuracy"] = r.ranking_accuracy, j["chosen_nll"] = r.chosen_nll;
            for (auto& [k, m] : r.diversity) j[k] = {{"mean", m.mean}, {"ci_low", m.ci_low}, {"ci_high", m.ci_high}, {"n", m.n}};
            out.push_back(j);
        }
        fmt::print("{}", md);
        if (!a->markdown.empty()) {
            data::AtomicTextFile f(a->markdown);
            f.stream() << md;
            f.commit();
        }
        if (!a->json_out.empty()) {
            data::AtomicTextFile f(a->json_out);
            f.stream() << out.dump(1) << "\n";
            f.commit();
        }
        if (!a->plot.empty()) {
            if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
                fmt::print(stderr, "deviant report: gnuplot not found, no plot written\n");
                return 0;
            }
            if (rewards) {
                plot_reward_vs_diversity(rows, a->plot);
                return 0;
            }
            fs::path dat = fs::path(a->plot).replace_extension(".dat");
            {
                std::ofstream d(dat);
                for (const Row& r : rows)
                    if (!std::isnan(r.ranking_accuracy) && r.diversity.count("cosine_distance_sem")) {
                        const auto& m = r.diversity.at("cosine_distance_sem");
                        d << fmt::format("\"{}\" {} {} {}\n", r.name, m.mean, (m.ci_high - m.ci_low) / 2, r.ranking_accuracy);
                    }
            }
            std::string human_line;
            for (const Row& r : rows)
                if (std::isnan(r.ranking_accuracy) && r.diversity.count("cosine_distance_sem"))
                    human_line = fmt::format("set arrow from {0},graph 0 to {0},graph 1 nohead dt 2 lc rgb '#888888'\n"
                                             "set label 'human' at {0},graph 0.95 offset 0.5,0 tc rgb '#666666'\n",
                                             r.diversity.at("cosine_distance_sem").mean);
            std::string script = fmt::format(
                "set terminal pngcairo size 800,560 font ',11'\nset output '{}'\n"
                "set title 'Quality vs semantic diversity (held-out prompts)'\n"
                "set xlabel 'semantic diversity (mean pairwise cosine distance)'\nset ylabel 'held-out ranking accuracy'\n"
                "set grid\nset key off\nset offsets graph 0.1, graph 0.15, graph 0.1, graph 0.1\n{}"
                "plot '{}' using 2:4:3 with xerrorbars pt 7 ps 1.5 lc rgb '#1f77b4', '' using 2:4:1 with labels offset 0,1.2\n",
                a->plot, human_line, dat.string());
            FILE* g = ::popen("gnuplot", "w");
            DEVIANT_REQUIRE(g != nullptr, "cannot start gnuplot");
            std::fputs(script.c_str(), g);
            DEVIANT_REQUIRE(::pclose(g) == 0, "gnuplot failed writing {}", a->plot);
            fs::remove(dat);
        }
        return 0;
    });
}}};

}  // namespace
