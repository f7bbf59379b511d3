// cli/main.cpp — the `deviant` program: one binary, one subcommand per library workflow
// (cli/app.cpp runs them).
#include "app.hpp"

int main(int argc, char** argv) { return deviant::cli::run(argc, argv); }
