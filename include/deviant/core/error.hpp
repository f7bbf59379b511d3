// deviant/core/error.hpp — the library's one exception type and its contract macros.
// Why: every bad input (shape, dtype, device, file, field) must surface as a one-line message
// that names what was wrong; DEVIANT_REQUIRE states a precondition dlib-style and throws.
#pragma once
#include <fmt/format.h>
#include <stdexcept>
#include <string>

namespace deviant {

class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

template <class... Args>
[[noreturn]] inline void fail(fmt::format_string<Args...> f, Args&&... args) {
    throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace deviant

// DEVIANT_REQUIRE(cond, "format {}", args...): precondition; throws deviant::Error when false.
#define DEVIANT_REQUIRE(cond, ...)                 \
    do {                                           \
        if (!(cond)) [[unlikely]] ::deviant::fail(__VA_ARGS__); \
    } while (0)
