// cli/command.hpp — how a subcommand of the `deviant` program registers itself.
// Each cli/cmd_*.cpp defines one subcommand with a static Registration; main.cpp runs the
// chosen one and turns every deviant::Error into a one-line message and exit status 1.
#pragma once
#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace deviant::cli {

struct Command {
    std::string name, description;
    // Adds options to `sub`; returns the action to run when the subcommand is chosen.
    std::function<std::function<int()>(CLI::App& sub)> setup;
};

inline std::vector<Command>& commands() {
    static std::vector<Command> all;
    return all;
}

struct Registration {
    explicit Registration(Command c) { commands().push_back(std::move(c)); }
};

}  // namespace deviant::cli
