// `deviant deviation`: add raw deviations and deviation weights to a prompt/responses JSONL file.
#include <fmt/core.h>

#include "command.hpp"
#include "deviant/data/jsonl.hpp"
#include "deviant/data/prepare.hpp"

namespace {
struct DeviationArgs {
    std::string input, output;
    deviant::deviation::DeviationOptions opts;
};

deviant::cli::Registration deviation_command{{"deviation", "Add per-response deviations and deviation weights to a JSONL file", [](CLI::App& sub) {
    auto args = std::make_shared<DeviationArgs>();
    sub.add_option("--input", args->input, "Input JSONL: {\"prompt\", \"responses\": [{\"text\", \"score\", \"embedding\": {space: [...]}}]}")
        ->required();
    sub.add_option("--output", args->output, "Output JSONL (written atomically)")->required();
    sub.add_option("--spaces", args->opts.spaces, "Embedding spaces to combine, e.g. sem,sty (default: every space all responses have)")
        ->delimiter(',');
    sub.add_option("--floor", args->opts.floor, "Minimum weight w_min (0 = none; the paper's ablation uses 0.2)")
        ->check(CLI::NonNegativeNumber);
    return std::function<int()>([args] {
        deviant::data::require_distinct_paths(args->input, args->output);
        deviant::data::deviation_file(args->input, args->output, args->opts);
        return 0;
    });
}}};
}  // namespace
