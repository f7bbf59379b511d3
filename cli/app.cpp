// cli/app.cpp — the `deviant` program's driver: every registered subcommand (cli/cmd_*.cpp) on one
// command line; each deviant::Error (and any other exception) becomes one line on stderr and exit
// status 1. A program built on the library runs the same commands, plus its own registrations
// (objectives, subcommands), through deviant::cli::run (examples/custom_trainer/).
#include <fmt/core.h>

#include <algorithm>
#include <iostream>
#include <new>

#include "app.hpp"
#include "command.hpp"
#include "deviant/core/error.hpp"
#include "deviant/dist/world.hpp"

int deviant::cli::run(int argc, char** argv) {
    CLI::App app{"deviant: diversity-aware preference post-training of transformer language models"};
    app.require_subcommand(1);
    auto& cmds = deviant::cli::commands();
    std::sort(cmds.begin(), cmds.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    std::function<int()> action;
    for (auto& c : cmds) {
        CLI::App* sub = app.add_subcommand(c.name, c.description);
        auto run = c.setup(*sub);
        sub->callback([&action, run] { action = run; });
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        // --help / --version exit 0 as CLI11 prints them; every command-line error is one line and status 1
        if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);
        fmt::print(stderr, "deviant: error: {} (see deviant {}--help)\n", e.what(),
                   app.get_subcommands().empty() ? "" : app.get_subcommands().front()->get_name() + " ");
        return 1;
    }
    // In a job of several ranks (mpirun, srun) the failing rank names itself and takes the others
    // down, instead of leaving them waiting in a collective.
    auto report = [](const std::string& what) {
        auto world = deviant::dist::current_world();
        if (world && world->size() > 1) {
            fmt::print(stderr, "deviant: error on rank {} of {}: {}\n", world->rank(), world->size(), what);
            deviant::dist::abort_world(1);
        }
        fmt::print(stderr, "deviant: error: {}\n", what);
        return 1;
    };
    try {
        return action ? action() : 0;
    } catch (const std::bad_alloc&) {
        return report("out of memory: lower --batch-size, --max-length or --max-new-tokens, or use a smaller model");
    } catch (const deviant::Error& e) {
        return report(e.what());
    } catch (const std::exception& e) {
        return report(e.what());
    }
}
