// tests/expect_error.hpp — throws_naming(f, {"part", ...}): true when f throws deviant::Error and
// the message contains every part (the file, line, field or shape a message must name).
#pragma once
#include <boost/test/unit_test.hpp>

#include <initializer_list>
#include <string>

#include "deviant/core/error.hpp"

namespace deviant::testing {

template <class F>
bool throws_naming(F&& f, std::initializer_list<std::string> parts) {
    try {
        f();
    } catch (const Error& e) {
        const std::string m = e.what();
        for (const auto& p : parts)
            if (m.find(p) == std::string::npos) {
                BOOST_TEST_MESSAGE("message '" << m << "' lacks '" << p << "'");
                return false;
            }
        return true;
    }
    return false;
}

}  // namespace deviant::testing
