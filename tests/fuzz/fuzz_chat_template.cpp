// Fuzz target: a Jinja2 chat template (the language subset models ship in tokenizer_config.json
// and GGUF), parsed and rendered for a two-turn conversation, with and without the generation
// prompt. Seeds: tests/data/chat_templates/*.
#include "fuzz_common.hpp"

#include "deviant/tokenizer/chat_jinja.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace deviant;
    const std::string source(reinterpret_cast<const char*>(data), size);
    fuzz::expect_only_deviant_errors([&] {
        jinja::Limits limits;
        limits.max_output_bytes = std::size_t(1) << 20;  // small limits keep each run fast; the refusal path is the same
        limits.max_steps = 100000;
        ChatTemplate t(source, std::string("<s>"), std::string("</s>"), "fuzzed template", limits);
        const std::vector<ChatMessage> messages{{"system", "Write a story."}, {"user", "A dragon, please."}, {"assistant", "Once..."}};
        (void)t.render(messages, true);
        (void)t.render(messages, false);
    });
    return 0;
}
