// Fuzz target: a GGUF file (header, metadata of every value type, tensor infos, quantized blocks):
// opened, read as a model config, its tokenizer built when it has one, and every tensor
// dequantized. Seeds: tests/data/gguf/*.gguf, tests/data/sentencepiece/*.gguf.
#include "fuzz_common.hpp"

#include "deviant/io/gguf.hpp"
#include "deviant/tokenizer/chat_jinja.hpp"
#include "deviant/tokenizer/gguf_tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace deviant;
    const auto path = fuzz::as_file(data, size, "model.gguf");
    fuzz::expect_only_deviant_errors([&] {
        const auto f = io::GgufFile::open(path);
        fuzz::expect_only_deviant_errors([&] { (void)io::gguf_model_config(f); });
        fuzz::expect_only_deviant_errors([&] {
            if (!gguf_has_tokenizer(f)) return;
            BpeTokenizer tok = tokenizer_from_gguf(f);
            (void)tok.decode(tok.encode("Once upon a time, 42 cats\n\ttalked.", true));
        });
        fuzz::expect_only_deviant_errors([&] { (void)chat_template_from_gguf(f); });
        for (const auto& t : f.tensors()) (void)f.load(t.name, DType::f32);
    });
    return 0;
}
