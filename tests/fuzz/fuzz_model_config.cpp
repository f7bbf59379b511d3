// Fuzz target: a Hugging Face config.json (every family's fields, RoPE scaling blocks), read as a
// model config and its parameter count estimated. Seeds: tests/data/**/config.json.
#include "fuzz_common.hpp"

#include "deviant/io/hf_config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto path = deviant::fuzz::as_file(data, size, "config.json");
    deviant::fuzz::expect_only_deviant_errors([&] {
        const deviant::io::ModelConfig c = deviant::io::load_model_config(path);
        (void)c.estimated_parameters();
    });
    return 0;
}
