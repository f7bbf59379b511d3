// `deviant embed`: add embeddings to a prompt/responses or generated-samples JSONL file — the
// built-in sem/sty spaces (eval/embedder.hpp), or a neural sentence encoder
// (a sentence-transformers folder such as all-MiniLM-L6-v2; eval/sentence_encoder.hpp) written
// under one space name (default "sem"), so that `deviation`, `pairs` and `evaluate` use it unchanged.
//   deviant embed --input F --output F [--spaces sem,sty]
//   deviant embed --model DIR --input F --output F [--space sem] [--batch-size 32] [--threads N]
#include <fmt/core.h>

#include "command.hpp"
#include "deviant/eval/embed_file.hpp"
#include "deviant/eval/sentence_encoder.hpp"

namespace {
struct EmbedArgs {
    std::string input, output, model, space = "sem";
    std::vector<std::string> spaces{"sem", "sty"};
    std::size_t batch_size = 32;
    unsigned threads = 0;
};

deviant::cli::Registration embed_command{{"embed", "Add embeddings (built-in sem/sty, or a sentence encoder's) to prompt/responses or samples JSONL",
                                [](CLI::App& sub) {
    auto args = std::make_shared<EmbedArgs>();
    sub.add_option("--input", args->input,
                   "Input JSONL: {\"prompt\", \"responses\": [{\"text\", ...}]} or {\"prompt\", \"samples\": [text, ...]}")
        ->required();
    sub.add_option("--output", args->output, "Output JSONL (written atomically; never the input)")->required();
    auto* spaces = sub.add_option("--spaces", args->spaces, "Built-in embedding spaces: sem (content words), sty (style statistics)")
                       ->delimiter(',')
                       ->check(CLI::IsMember({"sem", "sty"}))
                       ->capture_default_str();
    auto* model = sub.add_option("--model", args->model, "Sentence-transformers folder (modules.json, config.json, model.safetensors, tokenizer)");
    sub.add_option("--space", args->space, "With --model: the space name its vectors are written under")->capture_default_str();
    sub.add_option("--batch-size", args->batch_size, "With --model: texts per forward pass")->capture_default_str()->check(CLI::PositiveNumber);
    sub.add_option("--threads", args->threads, "With --model: encoder threads (0: one per core)")->capture_default_str();
    model->excludes(spaces);
    return std::function<int()>([args] {
        if (!args->model.empty()) {
            const auto encoder = deviant::eval::SentenceEncoder::load(args->model, args->threads);
            const std::size_t batch = args->batch_size;
            const auto r = deviant::eval::embed_file_with_encoder(
                args->input, args->output, [&](const std::vector<std::string>& texts) { return encoder.encode(texts, batch); }, args->space);
            fmt::print(stderr, "deviant embed: {} lines, {} texts embedded by {} as '{}' -> {}\n", r.lines, r.texts, args->model, args->space,
                       args->output);
            return 0;
        }
        std::vector<deviant::eval::Space> spaces;
        for (const auto& s : args->spaces) spaces.push_back(deviant::eval::parse_space(s));
        const auto r = deviant::eval::embed_file(args->input, args->output, spaces);
        fmt::print(stderr, "deviant embed: {} lines, {} texts embedded in {} space(s) -> {}\n", r.lines, r.texts, spaces.size(),
                   args->output);
        return 0;
    });
}}};
}  // namespace
