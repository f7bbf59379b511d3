// Fuzz target: a safetensors file (header JSON, offsets, dtypes, shapes), opened and every tensor
// loaded as float32. Seeds: tests/data/**/*.safetensors.
#include "fuzz_common.hpp"

#include "deviant/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto path = deviant::fuzz::as_file(data, size, "model.safetensors");
    deviant::fuzz::expect_only_deviant_errors([&] {
        const auto f = deviant::io::SafetensorsFile::open(path);
        for (const std::string& name : f.names()) (void)f.load(name, deviant::DType::f32);
    });
    return 0;
}
