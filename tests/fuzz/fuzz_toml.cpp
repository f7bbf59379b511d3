// Fuzz target: a `deviant train --config` TOML file, parsed and applied to the train command's
// options (every key's type and range checks, as the program runs them). Seeds: tests/fuzz/seeds/toml/.
#include "fuzz_common.hpp"

#include "train_options.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace deviant;
    const auto path = fuzz::as_file(data, size, "run.toml");
    fuzz::expect_only_deviant_errors([&] {
        CLI::App app;
        auto args = std::make_shared<cli::TrainArgs>();
        cli::add_train_options(app, args);
        app.parse(std::vector<std::string>{});
        cli::apply_config(app, path.string());
        cli::validate_train_args(app, *args);
    });
    return 0;
}
