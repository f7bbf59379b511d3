// tests/fuzz/fuzz_common.hpp — what every libFuzzer target shares: the input as a file (the
// parsers read files, as the program does) and the rule that a deviant::Error is the expected
// answer to bad input. Anything else (another exception, a crash, a sanitizer report, a leak) is
// a finding: libFuzzer stops and saves the input.
#pragma once
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "deviant/core/error.hpp"

namespace deviant::fuzz {

// A per-process scratch folder, removed at exit.
inline const std::filesystem::path& scratch() {
    static const std::filesystem::path dir = [] {
        auto d = std::filesystem::temp_directory_path() / ("deviant-fuzz-" + std::to_string(::getpid()));
        std::filesystem::create_directories(d);
        return d;
    }();
    static const struct Cleanup {
        ~Cleanup() {
            std::error_code ec;
            std::filesystem::remove_all(dir, ec);
        }
    } cleanup;
    return dir;
}

// Writes the input to scratch()/name and returns the path.
inline std::filesystem::path as_file(const std::uint8_t* data, std::size_t size, const std::string& name) {
    const auto path = scratch() / name;
    std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data), std::streamsize(size));
    return path;
}

// Runs f; a deviant::Error (the one-line message bad input must get) is swallowed, anything else
// propagates to libFuzzer as a finding.
template <class F>
void expect_only_deviant_errors(F&& f) {
    try {
        f();
    } catch (const deviant::Error&) {
    }
}

}  // namespace deviant::fuzz
