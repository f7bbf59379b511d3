// `deviant pairs`: preference pairs (gap pairing or DivPO selection) with deviation weights.
#include <fmt/core.h>

#include "command.hpp"
#include "deviant/data/jsonl.hpp"
#include "deviant/data/prepare.hpp"

namespace {
struct PairsArgs {
    std::string input, output;
    deviant::data::PairsOptions opts;
    std::string method = "gap";
    bool no_weights = false;
};

deviant::cli::Registration pairs_command{{"pairs", "Build weighted preference pairs from scored responses (gap pairing or DivPO)", [](CLI::App& sub) {
    auto args = std::make_shared<PairsArgs>();
    sub.add_option("--input", args->input, "Input JSONL: {\"prompt\", \"responses\": [{\"text\", \"score\", \"embedding\": {space: [...]}}]}")
        ->required();
    sub.add_option("--output", args->output, "Output JSONL, one pair a line (written atomically)")->required();
    sub.add_option("--method", args->method, "gap: random disjoint pairs with a score gap; divpo: diverse preference selection")
        ->check(CLI::IsMember({"gap", "divpo"}))
        ->capture_default_str();
    sub.add_option("--gap", args->opts.gap, "gap: minimum score difference when such a pair exists")->capture_default_str();
    sub.add_option("--max-responses", args->opts.max_responses, "gap: responses used per prompt (0 = all)")->capture_default_str();
    sub.add_flag("--sort-by-score", args->opts.sort_by_score, "gap: with --max-responses, keep the highest-scored responses");
    sub.add_option("--rho", args->opts.rho, "divpo: percentage of responses in the high and in the low set")->capture_default_str();
    sub.add_option("--n-max", args->opts.n_max, "divpo: at most n_max/2 pairs per prompt")->capture_default_str();
    sub.add_option("--seed", args->opts.seed, "Random seed (each prompt uses its own stream)")->capture_default_str();
    sub.add_option("--spaces", args->opts.deviation.spaces, "Embedding spaces for weights and divpo, e.g. sem,sty (default: every space all responses have)")
        ->delimiter(',');
    sub.add_option("--floor", args->opts.deviation.floor, "Minimum weight w_min (0 = none)")->check(CLI::NonNegativeNumber);
    sub.add_option("--max-prompts", args->opts.max_prompts, "Pairs of the first N prompts only (0 = all): a smaller run")->capture_default_str();
    sub.add_flag("--no-weights", args->no_weights, "Give every pair weight 1 (gap pairing then needs no embeddings)");
    return std::function<int()>([args] {
        args->opts.method = args->method == "divpo" ? deviant::data::PairMethod::divpo : deviant::data::PairMethod::gap;
        args->opts.weights = !args->no_weights;
        deviant::data::require_distinct_paths(args->input, args->output);
        std::size_t n = deviant::data::pairs_file(args->input, args->output, args->opts);
        fmt::print(stderr, "deviant pairs: wrote {} pairs to {}\n", n, args->output);
        return 0;
    });
}}};
}  // namespace
