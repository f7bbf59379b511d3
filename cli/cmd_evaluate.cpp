// `deviant evaluate`: diversity metrics of generated samples with 95% confidence intervals.
//   deviant evaluate --input FILE [--embeddings sem,sty] [--output FILE]
// Input: `deviant generate`'s output, one prompt per line, optionally with per-sample embedding
// vectors: {"prompt": ..., "samples": ["text", ...], "embeddings": {"sem": [[...], ...]}}.
// Prints a table of eval/diversity.hpp's metrics (mean, 95% CI, prompts counted); with --output
// also writes them as JSON (atomically).
#include <fmt/core.h>

#include <cmath>

#include "command.hpp"
#include "deviant/data/jsonl.hpp"
#include "deviant/eval/samples_file.hpp"

namespace {

using namespace deviant;

struct EvaluateOptions {
    std::string input, output;
    std::vector<std::string> embeddings;
};

std::string number(double v) { return std::isnan(v) ? "n/a" : fmt::format("{:.4f}", v); }

int run_evaluate(const EvaluateOptions& o) {
    for (const std::string& name : o.embeddings) DEVIANT_REQUIRE(!name.empty(), "--embeddings: an empty name in the list");
    const auto groups = eval::read_sample_groups(o.input, o.embeddings);
    const auto report = eval::diversity_report(groups, o.embeddings);
    std::size_t samples = 0;
    for (const auto& g : groups) samples += g.samples.size();

    fmt::print("{} prompts, {} samples ({})\n", groups.size(), samples, o.input);
    fmt::print("{:<26} {:>9}  {:<21} {:>6}\n", "metric", "mean", "95% CI", "n");
    for (const auto& m : report)
        fmt::print("{:<26} {:>9}  {:<21} {:>6}\n", m.name, number(m.mean), fmt::format("[{}, {}]", number(m.ci_low), number(m.ci_high)), m.n);

    if (!o.output.empty()) {
        data::json metrics = data::json::object();
        for (const auto& m : report) {
            auto value = [](double v) { return std::isnan(v) ? data::json(nullptr) : data::json(v); };
            metrics[m.name] = {{"mean", value(m.mean)}, {"sd", value(m.sd)}, {"ci_low", value(m.ci_low)}, {"ci_high", value(m.ci_high)}, {"n", m.n}};
        }
        data::json out{{"input", o.input}, {"prompts", groups.size()}, {"samples", samples}, {"metrics", metrics}};
        data::AtomicTextFile file(o.output);
        file.stream() << out.dump(1) << '\n';
        file.commit();
    }
    return 0;
}

deviant::cli::Registration evaluate_command{{"evaluate", "Diversity metrics (embedding distance, compression, distinct-n, ROUGE-L) with 95% CIs", [](CLI::App& app) {
    auto o = std::make_shared<EvaluateOptions>();
    app.add_option("--input", o->input, "JSON Lines {prompt, samples, embeddings?} (deviant generate's output)")->required();
    app.add_option("--embeddings", o->embeddings, "Embedding names to score by mean pairwise cosine distance, e.g. sem,sty")->delimiter(',');
    app.add_option("--output", o->output, "Also write the metrics as JSON");
    return std::function<int()>([o] {
        if (!o->output.empty()) deviant::data::require_distinct_paths(o->input, o->output);
        return run_evaluate(*o);
    });
}}};

}  // namespace
