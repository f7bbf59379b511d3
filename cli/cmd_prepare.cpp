// `deviant prepare`: clean r/WritingPrompts preference data into prompt/responses train/test files.
#include <fmt/core.h>

#include "command.hpp"
#include "deviant/data/jsonl.hpp"
#include "deviant/data/writing_prompts.hpp"

namespace {
struct PrepareArgs {
    std::string input, train_output, test_output;
    deviant::data::WritingPromptsOptions opts;
};

deviant::cli::Registration prepare_command{{"prepare", "Clean WritingPrompts preference data into prompt/responses train and test JSONL", [](CLI::App& sub) {
    auto args = std::make_shared<PrepareArgs>();
    sub.add_option("--input", args->input, "Input JSONL: {\"post_title\", \"post_text\", \"comment_texts\", \"comment_scores\"}")
        ->required();
    sub.add_option("--train-output", args->train_output, "Train split, prompt/responses JSONL (written atomically)")->required();
    sub.add_option("--test-output", args->test_output, "Test split, prompt/responses JSONL (written atomically)")->required();
    sub.add_option("--test-fraction", args->opts.test_fraction, "Share of prompts held out (split by a hash of the prompt)")
        ->check(CLI::Range(0.0, 1.0))
        ->capture_default_str();
    sub.add_option("--split-seed", args->opts.split_seed, "Changes which prompts are held out, deterministically")->capture_default_str();
    sub.add_option("--max-response-words", args->opts.max_response_words, "Drop responses with more words (0 = no limit)")
        ->capture_default_str();
    sub.add_option("--max-response-chars", args->opts.max_response_chars, "Drop responses with more characters (0 = no limit)")
        ->capture_default_str();
    sub.add_option("--min-responses", args->opts.min_responses, "Drop prompts left with fewer responses")->capture_default_str();
    sub.add_flag("--skip-bad-lines", args->opts.skip_bad_lines, "Skip and count malformed lines instead of failing");
    return std::function<int()>([args] {
        deviant::data::require_distinct_paths(args->input, args->train_output, "--input", "--train-output");
        deviant::data::require_distinct_paths(args->input, args->test_output, "--input", "--test-output");
        deviant::data::require_distinct_paths(args->train_output, args->test_output, "--train-output", "--test-output");
        const auto r = deviant::data::convert_writing_prompts(args->input, args->train_output, args->test_output, args->opts);
        fmt::print("{}\n", r.summary());
        if (!r.skipped_line_numbers.empty()) {
            std::string lines;
            for (std::size_t n : r.skipped_line_numbers) lines += (lines.empty() ? "" : ", ") + std::to_string(n);
            fmt::print(stderr, "deviant prepare: skipped lines: {}{}\n", lines, r.skipped_lines > r.skipped_line_numbers.size() ? ", ..." : "");
        }
        return 0;
    });
}}};
}  // namespace
