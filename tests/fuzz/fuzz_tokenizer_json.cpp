// Fuzz target: a tokenizer.json, read as a byte-level / SentencePiece BPE tokenizer and as a
// WordPiece (BERT) tokenizer; whichever accepts it encodes and decodes a fixed text. Seeds:
// tests/data/tokenizers/*, tests/data/wordpiece/*, tests/data/encoder/*.
#include "fuzz_common.hpp"

#include "deviant/tokenizer/bpe.hpp"
#include "deviant/tokenizer/wordpiece.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace deviant;
    const auto path = fuzz::as_file(data, size, "tokenizer.json");
    const std::string text = "Hello, world! Ünïcödé   spaces\n\t123 4567 — 日本語 <s></s>";
    fuzz::expect_only_deviant_errors([&] {
        BpeTokenizer tok = BpeTokenizer::from_json_file(path);
        (void)tok.decode(tok.encode(text, true), true);
    });
    fuzz::expect_only_deviant_errors([&] {
        WordPieceTokenizer tok = WordPieceTokenizer::from_json_file(path);
        (void)tok.encode(text);
    });
    return 0;
}
