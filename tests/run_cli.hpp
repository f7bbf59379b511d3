// tests/run_cli.hpp — runs the built `deviant` program (path in DEVIANT_CLI) with arguments and
// returns its exit status, standard output and standard error, as a user's shell would see them.
#pragma once
#include <boost/test/unit_test.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

namespace deviant::testing {

struct CliRun {
    int status = -1;
    std::string out, err;
};

inline CliRun run_cli(const std::string& args) {
    static int counter = 0;
    auto err_file = std::filesystem::temp_directory_path() /
                    ("deviant_cli_err_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::string cmd = std::string(DEVIANT_CLI) + " " + args + " 2>" + err_file.string();
    CliRun r;
    FILE* p = ::popen(cmd.c_str(), "r");
    BOOST_REQUIRE(p);
    std::array<char, 4096> buf;
    while (std::size_t n = std::fread(buf.data(), 1, buf.size(), p)) r.out.append(buf.data(), n);
    int st = ::pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    std::ifstream e(err_file);
    r.err.assign(std::istreambuf_iterator<char>(e), {});
    std::filesystem::remove(err_file);
    return r;
}

}  // namespace deviant::testing
