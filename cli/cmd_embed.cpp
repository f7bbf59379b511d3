// `deviant embed`: add the built-in sem/sty embeddings (eval/embedder.hpp) to a JSONL file.
#include <fmt/core.h>

#include "command.hpp"
#include "deviant/eval/embed_file.hpp"

namespace {
struct EmbedArgs {
    std::string input, output;
    std::vector<std::string> spaces{"sem", "sty"};
};

deviant::cli::Registration reg{{"embed", "Add built-in sem/sty embeddings to prompt/responses or generated-samples JSONL", [](CLI::App& sub) {
    auto args = std::make_shared<EmbedArgs>();
    sub.add_option("--input", args->input,
                   "Input JSONL: {\"prompt\", \"responses\": [{\"text\", ...}]} or {\"prompt\", \"samples\": [text, ...]}")
        ->required();
    sub.add_option("--output", args->output, "Output JSONL (written atomically)")->required();
    sub.add_option("--spaces", args->spaces, "Embedding spaces: sem (content words), sty (style statistics)")
        ->delimiter(',')
        ->check(CLI::IsMember({"sem", "sty"}))
        ->capture_default_str();
    return std::function<int()>([args] {
        std::vector<deviant::eval::Space> spaces;
        for (const auto& s : args->spaces) spaces.push_back(deviant::eval::parse_space(s));
        const auto r = deviant::eval::embed_file(args->input, args->output, spaces);
        fmt::print(stderr, "deviant embed: {} lines, {} texts embedded in {} space(s) -> {}\n", r.lines, r.texts, spaces.size(),
                   args->output);
        return 0;
    });
}}};
}  // namespace
