// Training checkpoints: bit-exact round trip (tensors, optimizer state, RNG continuation, step),
// keep_last, latest_checkpoint, atomicity under a simulated crash, NaN refusal, corrupt state.
#define BOOST_TEST_MODULE checkpoint
#include <boost/test/unit_test.hpp>
#include <unistd.h>

#include <cstring>
#include <fstream>

#include "deviant/optim/adamw.hpp"
#include "deviant/train/checkpoint.hpp"

using namespace deviant;
namespace fs = std::filesystem;

namespace {

struct TempDir {
    fs::path path;
    TempDir() {
        static int counter = 0;
        path = fs::temp_directory_path() / fmt::format("deviant-test-checkpoint-{}-{}", ::getpid(), counter++);
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~TempDir() { fs::remove_all(path); }
};

std::vector<unsigned char> bytes_of(const Tensor& t) {
    Tensor c = t.to(Device::cpu).contiguous();
    auto p = static_cast<const unsigned char*>(c.raw_data());
    return {p, p + c.numel() * dtype_size(c.dtype())};
}

const Tensor& find(const train::NamedTensors& ts, const std::string& name) {
    for (const auto& [n, t] : ts)
        if (n == name) return t;
    throw Error("no tensor " + name);
}

train::TrainingCheckpoint sample(std::int64_t step) {
    train::TrainingCheckpoint c;
    c.step = step;
    c.epoch = 1;
    c.data_position = 17;
    c.model.emplace_back("model.embed_tokens.weight", Tensor::from(std::vector<float>{0.1f, -2.5f, 3e-8f, 1e30f, -0.0f, 7.0f}, {2, 3}));
    c.model.emplace_back("lm_head.lora_A", Tensor::from(std::vector<float>{1.0f / 3, 2.0f / 3}, {1, 2}, DType::bf16));
    c.model.emplace_back("norm.weight", Tensor::from(std::vector<double>{1.0 / 7, 1e-300}, {2}));
    c.optimizer.emplace_back("step", Tensor::from(std::vector<std::int64_t>{step}, {1}));
    return c;
}

bool message_has(const Error& e, const std::string& a, const std::string& b = "") {
    std::string m = e.what();
    BOOST_TEST_MESSAGE("error: " << m);
    return m.find(a) != std::string::npos && m.find(b) != std::string::npos;
}

}  // namespace

BOOST_AUTO_TEST_CASE(round_trip_is_bit_exact) {
    TempDir out;
    // a real optimizer state (moments after two steps), float32 and bfloat16 weights
    Parameter w("w", Tensor::from(std::vector<float>{0.5f, -1.25f, 2.0f}, {3})), h("h", Tensor::from(std::vector<float>{1, 2}, {2}, DType::bf16));
    optim::AdamW opt({&w, &h}, {0.9, 0.999, 1e-8, 0.01});
    for (int s = 0; s < 2; ++s) {
        w.grad = Tensor::from(std::vector<float>{0.3f, -0.1f * float(s), 1.0f}, {3});
        h.grad = Tensor::from(std::vector<float>{-0.7f, 0.2f}, {2}, DType::bf16);
        opt.step(1e-2);
    }
    train::TrainingCheckpoint c = sample(2);
    c.optimizer = opt.state_tensors();
    std::mt19937_64 rng(42);
    for (int i = 0; i < 1000; ++i) rng();
    c.set_rng(rng);
    c.metrics = {{"loss", 0.6931471805599453}, {"grad_norm", 1.5}, {"bad", std::nan("")}};
    c.extra = {{"objective", "ddpo"}, {"beta", 0.1}};

    fs::path dir = train::save_checkpoint(out.path, c);
    BOOST_TEST(dir == out.path / "checkpoint-2");
    for (const char* f : {"model.safetensors", "optimizer.safetensors", "trainer_state.json"}) BOOST_TEST(fs::is_regular_file(dir / f));

    train::TrainingCheckpoint r = train::load_checkpoint(dir);
    BOOST_TEST(r.step == 2);
    BOOST_TEST(r.epoch == 1);
    BOOST_TEST(r.data_position == 17);
    BOOST_TEST(r.metrics.at("loss") == 0.6931471805599453);
    BOOST_TEST(r.metrics.at("grad_norm") == 1.5);
    BOOST_TEST(std::isnan(r.metrics.at("bad")));
    BOOST_TEST(r.extra == c.extra);
    BOOST_TEST_REQUIRE(r.model.size() == c.model.size());
    for (const auto& [name, t] : c.model) {
        const Tensor& got = find(r.model, name);
        BOOST_TEST_INFO(name);
        BOOST_TEST((got.dtype() == t.dtype() && got.shape() == t.shape()));
        BOOST_TEST(bytes_of(got) == bytes_of(t));
    }
    for (const auto& [name, t] : c.optimizer) {
        BOOST_TEST_INFO(name);
        BOOST_TEST(bytes_of(find(r.optimizer, name)) == bytes_of(t));
    }

    // The restored generator continues the same sequence.
    std::mt19937_64 restored;
    r.restore_rng(restored);
    for (int i = 0; i < 100; ++i) BOOST_TEST_REQUIRE(restored() == rng());

    // The restored optimizer continues exactly like the original.
    Parameter w2("w", w.value.clone()), h2("h", h.value.clone());
    optim::AdamW opt2({&w2, &h2}, {0.9, 0.999, 1e-8, 0.01});
    opt2.load_state(r.optimizer, (dir / "optimizer.safetensors").string());
    BOOST_TEST(opt2.steps() == 2);
    w.grad = Tensor::from(std::vector<float>{0.05f, 0.4f, -0.3f}, {3}), w2.grad = w.grad.clone();
    h.grad = Tensor::from(std::vector<float>{0.1f, 0.1f}, {2}, DType::bf16), h2.grad = h.grad.clone();
    opt.step(5e-3);
    opt2.step(5e-3);
    BOOST_TEST(bytes_of(w.value) == bytes_of(w2.value));
    BOOST_TEST(bytes_of(h.value) == bytes_of(h2.value));
}

BOOST_AUTO_TEST_CASE(latest_and_keep_last) {
    TempDir out;
    BOOST_TEST(!train::latest_checkpoint(out.path).has_value());
    BOOST_TEST(!train::latest_checkpoint(out.path / "missing").has_value());
    for (std::int64_t s : {5, 20, 10, 100}) train::save_checkpoint(out.path, sample(s));
    // A leftover temporary directory of a higher step, an incomplete final-named directory and
    // an unrelated name must all be ignored by the listing.
    fs::create_directories(out.path / ".checkpoint-500.tmp-99999");
    {
        std::ofstream(out.path / ".checkpoint-500.tmp-99999" / "trainer_state.json") << "{}";
    }
    fs::create_directories(out.path / "checkpoint-400");  // no files: not complete
    fs::create_directories(out.path / "checkpoint-300x");
    BOOST_TEST(train::latest_checkpoint(out.path).value() == out.path / "checkpoint-100");
    auto all = train::list_checkpoints(out.path);
    BOOST_TEST_REQUIRE(all.size() == 4u);
    BOOST_TEST(all[1].first == 10);  // numeric order, not text order

    // a save in progress by a live process (here the parent) is left alone
    const fs::path live = out.path / (".checkpoint-600.tmp-" + std::to_string(::getppid()));
    fs::create_directories(live);
    auto removed = train::keep_last(out.path, 2);
    BOOST_TEST(removed.size() == 3u);  // two old checkpoints and the dead process's temporary
    BOOST_TEST(!fs::exists(out.path / ".checkpoint-500.tmp-99999"));
    BOOST_TEST(fs::exists(live));
    BOOST_TEST(!fs::exists(out.path / "checkpoint-5"));
    BOOST_TEST(!fs::exists(out.path / "checkpoint-10"));
    BOOST_TEST(fs::exists(out.path / "checkpoint-20"));
    BOOST_TEST(fs::exists(out.path / "checkpoint-100"));
    BOOST_TEST(fs::exists(out.path / "checkpoint-300x"));  // not ours
    BOOST_TEST(fs::exists(out.path / "checkpoint-400"));   // not a complete checkpoint: left alone
    BOOST_TEST(train::keep_last(out.path, 1).size() == 1u);
    BOOST_TEST(fs::exists(out.path / "checkpoint-100"));  // the newest is never deleted
    BOOST_CHECK_THROW(train::keep_last(out.path, 0), Error);
}

BOOST_AUTO_TEST_CASE(simulated_crash_leaves_previous_checkpoint) {
    TempDir out;
    train::save_checkpoint(out.path, sample(10));
    const auto before = bytes_of(find(train::load_checkpoint(out.path / "checkpoint-10").model, "norm.weight"));
    for (const char* crash_at : {"model.safetensors", "optimizer.safetensors", "trainer_state.json"}) {
        BOOST_TEST_CONTEXT("crash before writing " << crash_at) {
            train::CheckpointSaveOptions opts;
            bool saw_temp_dir = false;
            opts.before_write = [&](const fs::path& p) {
                if (p.filename() != crash_at) return;
                saw_temp_dir = p.parent_path().filename().string().starts_with(".checkpoint-20.tmp-");
                throw std::runtime_error("simulated crash");
            };
            BOOST_CHECK_THROW(train::save_checkpoint(out.path, sample(20), opts), std::runtime_error);
            BOOST_TEST(saw_temp_dir);  // files are written into the temporary directory
            BOOST_TEST(!fs::exists(out.path / "checkpoint-20"));
            BOOST_TEST(train::latest_checkpoint(out.path).value() == out.path / "checkpoint-10");
            BOOST_TEST(bytes_of(find(train::load_checkpoint(out.path / "checkpoint-10").model, "norm.weight")) == before);
        }
    }
    // A crash while replacing an existing checkpoint of the same step leaves the old one whole.
    train::CheckpointSaveOptions opts;
    opts.before_write = [](const fs::path& p) {
        if (p.filename() == "trainer_state.json") throw std::runtime_error("simulated crash");
    };
    train::TrainingCheckpoint changed = sample(10);
    changed.data_position = 99;
    BOOST_CHECK_THROW(train::save_checkpoint(out.path, changed, opts), std::runtime_error);
    BOOST_TEST(train::load_checkpoint(out.path / "checkpoint-10").data_position == 17);
    // Saving it for real replaces it.
    train::save_checkpoint(out.path, changed);
    BOOST_TEST(train::load_checkpoint(out.path / "checkpoint-10").data_position == 99);
    for (const auto& e : fs::directory_iterator(out.path)) BOOST_TEST(!e.path().filename().string().starts_with("."));
}

BOOST_AUTO_TEST_CASE(unwritable_output_fails_cleanly) {
    TempDir out;
    train::save_checkpoint(out.path, sample(1));
    // An output path below a regular file cannot be created, even by root.
    { std::ofstream(out.path / "blocker") << "x"; }
    BOOST_CHECK_EXCEPTION(train::save_checkpoint(out.path / "blocker" / "run", sample(2)), Error,
                          [](const Error& e) { return message_has(e, "blocker"); });
    if (::geteuid() != 0) {  // root ignores directory permissions
        fs::permissions(out.path, fs::perms::owner_read | fs::perms::owner_exec);
        BOOST_CHECK_THROW(train::save_checkpoint(out.path, sample(2)), Error);
        fs::permissions(out.path, fs::perms::owner_all);
    }
    BOOST_TEST(train::latest_checkpoint(out.path).value() == out.path / "checkpoint-1");
    BOOST_TEST(!fs::exists(out.path / "checkpoint-2"));
}

BOOST_AUTO_TEST_CASE(refuses_non_finite_values) {
    TempDir out;
    for (double bad : {std::nan(""), double(INFINITY), -double(INFINITY)}) {
        for (DType dt : {DType::f32, DType::bf16, DType::f64}) {
            train::TrainingCheckpoint c = sample(3);
            c.model.emplace_back("layers.1.mlp.weight", Tensor::from(std::vector<double>{1.0, bad, 2.0}, {3}, dt));
            BOOST_CHECK_EXCEPTION(train::save_checkpoint(out.path, c), Error, [](const Error& e) {
                return message_has(e, "refusing to write a checkpoint with non-finite values in layers.1.mlp.weight");
            });
        }
        train::TrainingCheckpoint c = sample(3);
        c.optimizer.emplace_back("w.exp_avg_sq", Tensor::from(std::vector<float>{float(bad)}, {1}));
        BOOST_CHECK_EXCEPTION(train::save_checkpoint(out.path, c), Error,
                              [](const Error& e) { return message_has(e, "non-finite values in w.exp_avg_sq"); });
    }
    BOOST_TEST(fs::is_empty(out.path));  // nothing written, not even a temporary directory
}

BOOST_AUTO_TEST_CASE(corrupt_trainer_state_names_the_file) {
    TempDir out;
    fs::path dir = train::save_checkpoint(out.path, sample(7));
    fs::path state = dir / "trainer_state.json";
    const std::string file = state.string();
    auto write = [&](const std::string& text) { std::ofstream(state, std::ios::trunc) << text; };
    std::string good;
    {
        std::ifstream in(state);
        good.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    auto expect = [&](const std::string& fragment) {
        BOOST_CHECK_EXCEPTION(train::load_checkpoint(dir), Error, [&](const Error& e) { return message_has(e, file, fragment); });
    };
    write(good.substr(0, good.size() / 2));
    expect("not valid JSON");
    write("[1, 2]");
    expect("must be a JSON object");
    auto j = nlohmann::json::parse(good);
    auto with = [&](const char* key, nlohmann::json v) {
        auto k = j;
        if (v.is_discarded()) k.erase(key);
        else k[key] = v;
        write(k.dump());
    };
    with("step", nlohmann::json::value_t::discarded);
    expect("missing field 'step'");
    with("step", "seven");
    expect("field 'step' must be a non-negative integer");
    with("step", 8);
    expect("directory is named for step 7");
    with("rng_state", "not a generator");
    expect("rng_state");
    with("metrics", 3);
    expect("field 'metrics'");
    write(good);
    BOOST_CHECK_NO_THROW(train::load_checkpoint(dir));
    // a damaged tensor file is named too
    {
        std::ofstream(dir / "optimizer.safetensors", std::ios::trunc) << "xx";
    }
    BOOST_CHECK_EXCEPTION(train::load_checkpoint(dir), Error, [&](const Error& e) { return message_has(e, "optimizer.safetensors"); });
    BOOST_CHECK_THROW(train::load_checkpoint(out.path / "checkpoint-8"), Error);
}
