// cli/app.hpp — run the `deviant` command line: every subcommand registered in the program
// (cli/cmd_*.cpp, and any the program adds), parsed from argv. Returns the exit status.
#pragma once

namespace deviant::cli {
int run(int argc, char** argv);
}  // namespace deviant::cli
