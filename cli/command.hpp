// cli/command.hpp — how a subcommand of the `deviant` program registers itself.
// Each cli/cmd_*.cpp defines one subcommand with a static Registration; main.cpp runs the
// chosen one and turns every deviant::Error into a one-line message and exit status 1.
#pragma once
#include <CLI/CLI.hpp>

#include "deviant/core/error.hpp"
#include "deviant/core/dtype.hpp"

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

// --dtype: the model's weight dtype. bfloat16 is mixed precision: bf16 weights and activations,
// float32 log-probabilities and losses (and, in training, float32 master weights and optimizer state).
inline DType model_dtype(const std::string& s) {
    if (s == "float32" || s == "f32") return DType::f32;
    if (s == "float64" || s == "f64") return DType::f64;
    if (s == "bfloat16" || s == "bf16") return DType::bf16;
    fail("--dtype must be float32, float64 or bfloat16, got '{}'", s);
}
inline constexpr const char* model_dtype_help = "float32, float64 or bfloat16 (bf16 weights, float32 log-probs, losses, master weights)";

}  // namespace deviant::cli
