// Fuzz target: the JSON Lines readers of every schema the program takes. The first byte picks the
// reader, the rest is the file:
//   0 token pairs (train/score)          1 text pairs (pairs' output)      2 generated samples (evaluate)
//   3 scored prompts (reward train)      4 prompt/responses -> deviation   5 -> gap pairs
//   6 -> DivPO pairs                     7 WritingPrompts export (prepare) 8 -> built-in embeddings
// Seeds: tests/data/**/*.jsonl, each with every selector.
#include "fuzz_common.hpp"

#include "deviant/data/prepare.hpp"
#include "deviant/data/token_pairs.hpp"
#include "deviant/data/writing_prompts.hpp"
#include "deviant/eval/embed_file.hpp"
#include "deviant/eval/samples_file.hpp"
#include "deviant/train/reward_data.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace deviant;
    if (size == 0) return 0;
    const int schema = data[0] % 9;
    const auto in = fuzz::as_file(data + 1, size - 1, "input.jsonl");
    const auto out = fuzz::scratch() / "output.jsonl", out2 = fuzz::scratch() / "output2.jsonl";
    fuzz::expect_only_deviant_errors([&] {
        switch (schema) {
            case 0: (void)data::read_token_pairs(in, 1000); break;
            case 1: (void)data::read_text_pairs(in); break;
            case 2: (void)eval::read_sample_groups(in); break;
            case 3: (void)read_scored_prompts(in); break;
            case 4: data::deviation_file(in, out, {}); break;
            case 5: (void)data::pairs_file(in, out, {}); break;
            case 6: {
                data::PairsOptions o;
                o.method = data::PairMethod::divpo;
                (void)data::pairs_file(in, out, o);
                break;
            }
            case 7: (void)data::convert_writing_prompts(in, out, out2, {}); break;
            case 8: (void)eval::embed_file(in, out, {eval::Space::sem, eval::Space::sty}); break;
        }
    });
    return 0;
}
