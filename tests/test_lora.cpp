// LoRA adapters (nn/lora.hpp):
//  - the projection visitor names every projection by its checkpoint module path;
//  - a fresh adapter (B = 0) leaves the model's outputs unchanged; A follows PEFT's init;
//  - the adapted projection against a naive loop, and finite-difference gradient checks of the
//    adapters of one projection pair and of whole tiny Llama / GPT-2 models (float64); the base
//    receives no gradient;
//  - AdaptersDisabled gives the base model's log-probs exactly; merging keeps the outputs;
//  - adapters saved by PEFT (tests/data/lora/make_lora_fixture.py) load and reproduce
//    PEFT + transformers' logits and log-probs; our export has PEFT's tensor names and fields;
//  - bad configurations and bad adapter files are errors naming what was wrong.
#define BOOST_TEST_MODULE lora
#include <boost/test/unit_test.hpp>

#include <fstream>
#include <nlohmann/json.hpp>

#include "tiny_models.hpp"
#include "gradcheck.hpp"
#include "deviant/models/load.hpp"
#include "deviant/nn/lora.hpp"

using namespace deviant;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const std::string models_dir = DEVIANT_TEST_DATA_DIR "/models/";
const std::string lora_dir = DEVIANT_TEST_DATA_DIR "/lora/";

io::ModelConfig tiny_config(io::ModelFamily family) { return testing::tiny_config(family); }

void randomize(std::deque<Parameter>& params, std::mt19937& rng, double lo = -0.5, double hi = 0.5) {
    for (auto& p : params) p.value.copy_from(testing::random_tensor(p.value.shape(), rng, lo, hi, p.value.dtype()));
}

TokenBatch tiny_batch() {
    std::vector<std::int64_t> ids{1, 5, 3, 7, 2, 9, 4, 4, 0, 10, 6, 8};
    std::vector<std::int64_t> seg{0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1};  // packed row and padded row
    return {Tensor::from(ids, {2, 6}), Tensor::from(seg, {2, 6})};
}

TokenBatch fixture_batch(const json& e) {
    std::vector<std::int64_t> ids;
    for (const auto& row : e["ids"])
        for (const auto& v : row) ids.push_back(v.get<std::int64_t>());
    return {Tensor::from(ids, {std::int64_t(e["ids"].size()), std::int64_t(e["ids"][0].size())}), {}};
}

template <class Model>
std::vector<double> logprobs(Model& m, const TokenBatch& b) {
    NoGradGuard ng;
    Tape t;
    return m.next_token_logprobs(t, b).value().template to_vector<double>();
}
template <class Model>
std::vector<double> logits(Model& m, const TokenBatch& b) {
    NoGradGuard ng;
    Tape t;
    return m.logits(t, b).value().template to_vector<double>();
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
    BOOST_REQUIRE_EQUAL(a.size(), b.size());
    double d = 0;
    for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(a[i] - b[i]));
    return d;
}

std::vector<double> as_vector(const json& j) { return j.get<std::vector<double>>(); }

void check_gradients(std::deque<Parameter>& params, const std::function<Var(Tape&)>& loss) {
    testing::check_parameter_gradients(params, loss);
}

void require_no_gradient(std::deque<Parameter>& base) {
    for (const Parameter& p : base) {
        BOOST_TEST_INFO("base parameter " << p.name);
        BOOST_TEST(!p.trainable);
        BOOST_TEST(!p.grad.defined());
    }
}

// One Linear and one Conv1D projection in a row: the smallest model the adapters attach to.
struct TwoProjections {
    ParameterStore store{DType::f64, 3};
    nn::Linear lin;
    nn::Conv1D conv;
    TwoProjections() {
        lin.bind(store, "blk.q_proj", 5, 4, /*with_bias=*/true);
        conv.bind(store, "blk.c_fc", 4, 6);
    }
    template <class F>
    void for_each_projection(F&& f) {
        lin.for_each_projection(f);
        conv.for_each_projection(f);
    }
    std::deque<Parameter>& parameters() { return store.parameters(); }
    Var forward(Tape& t, Var x) const { return conv.forward(t, lin.forward(t, x)); }
};

nn::LoraConfig config(std::int64_t r, double alpha, std::vector<std::string> targets, std::uint64_t seed = 0) {
    nn::LoraConfig c;
    c.rank = r;
    c.alpha = alpha;
    c.target_modules = std::move(targets);
    c.seed = seed;
    return c;
}
const std::vector<std::string> llama_targets{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
const std::vector<std::string> gpt2_targets{"c_attn", "c_proj", "c_fc"};

template <class F>
void expect_error(F&& f, std::vector<std::string> needles) {
    BOOST_CHECK_EXCEPTION(f(), Error, [&](const Error& e) {
        std::string m = e.what();
        BOOST_TEST_INFO(m);
        for (const auto& n : needles)
            if (m.find(n) == std::string::npos) return false;
        return true;
    });
}

}  // namespace

BOOST_AUTO_TEST_CASE(projection_visitor_names_checkpoint_modules) {
    auto llama = load_pretrained_as<Llama>(models_dir + "llama");
    std::vector<std::string> names;
    llama->for_each_projection([&](const std::string& name, auto& proj) {
        names.push_back(name);
        BOOST_TEST(proj.weight == &llama->store.at(name + ".weight"));
    });
    std::vector<std::string> want;
    for (int l = 0; l < 2; ++l)
        for (std::string m : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                              "mlp.up_proj", "mlp.down_proj"})
            want.push_back("model.layers." + std::to_string(l) + "." + m);
    BOOST_TEST(names == want, boost::test_tools::per_element());

    auto gpt2 = load_pretrained_as<Gpt2>(models_dir + "gpt2");
    names.clear();
    int convs = 0;
    gpt2->for_each_projection([&](const std::string& name, auto& proj) {
        names.push_back(name);
        convs += std::is_same_v<std::decay_t<decltype(proj)>, nn::Conv1D>;
    });
    want = {"transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj",
            "transformer.h.1.attn.c_attn", "transformer.h.1.attn.c_proj", "transformer.h.1.mlp.c_fc", "transformer.h.1.mlp.c_proj"};
    BOOST_TEST(names == want, boost::test_tools::per_element());
    BOOST_TEST(convs == 8);
}

BOOST_AUTO_TEST_CASE(fresh_adapters_leave_outputs_unchanged_and_follow_peft_init) {
    auto m = load_pretrained_as<Llama>(models_dir + "llama", DType::f64);
    TokenBatch b = fixture_batch(json::parse(std::ifstream(lora_dir + "expected.json"))["llama"]);
    auto before = logits(*m, b);
    nn::LoraAdapters lora;
    lora.attach(*m, nn::LoraConfig{});  // the defaults: r = 128, alpha = 256, Llama's seven projections
    BOOST_TEST(lora.config().rank == 128);
    BOOST_TEST(lora.scaling() == 2.0);
    BOOST_TEST(lora.modules().size() == 14u);
    BOOST_TEST(lora.parameters().size() == 28u);
    BOOST_TEST(lora.parameters()[0].name == "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
    BOOST_TEST(lora.parameters()[1].name == "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
    BOOST_TEST(lora.parameters()[0].value.shape() == Shape({128, 32}));
    BOOST_TEST(lora.parameters()[1].value.shape() == Shape({32, 128}));   // q_proj: 4 heads * 8
    BOOST_TEST(lora.parameters()[3].value.shape() == Shape({16, 128}));   // k_proj: 2 key/value heads * 8
    BOOST_TEST(lora.parameters()[27].value.shape() == Shape({32, 128}));  // down_proj B
    BOOST_TEST(lora.parameters()[26].value.shape() == Shape({128, 48}));  // down_proj A: in = 48
    // kaiming_uniform_(a = sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)): variance 1 / (3 in)
    for (std::size_t i = 0; i < lora.parameters().size(); i += 2) {
        const Parameter& a = lora.parameters()[i];
        const Parameter& bp = lora.parameters()[i + 1];
        double bound = 1.0 / std::sqrt(double(a.value.size(1))), sq = 0, mx = 0;
        auto v = a.value.to_vector<double>();
        for (double x : v) sq += x * x, mx = std::max(mx, std::abs(x));
        BOOST_TEST(mx <= bound);
        BOOST_TEST(mx > 0.95 * bound);
        BOOST_TEST(std::abs(sq / double(v.size()) * 3 * double(a.value.size(1)) - 1.0) < 0.1);
        for (double x : bp.value.to_vector<double>()) BOOST_TEST_REQUIRE(x == 0.0);
        BOOST_TEST(a.trainable);
    }
    for (const Parameter& p : m->parameters()) BOOST_TEST(!p.trainable);
    auto after = logits(*m, b);
    BOOST_TEST(before == after, boost::test_tools::per_element());
    // the seed decides A: same seed, same A; another seed, another A
    auto first_a = lora.parameters()[0].value.to_vector<double>();
    lora.detach();
    for (const Parameter& p : m->parameters()) BOOST_TEST(p.trainable);
    nn::LoraAdapters again, other;
    again.attach(*m, nn::LoraConfig{});
    BOOST_TEST(again.parameters()[0].value.to_vector<double>() == first_a);
    again.detach();
    other.attach(*m, config(128, 256, llama_targets, 1));
    BOOST_TEST(max_abs_diff(other.parameters()[0].value.to_vector<double>(), first_a) > 0.01);
}

BOOST_AUTO_TEST_CASE(adapted_projection_against_loops_and_gradients) {
    TwoProjections model;
    std::mt19937 rng(11);
    randomize(model.parameters(), rng);
    nn::LoraAdapters lora;
    lora.attach(model, config(3, 5.0, {"q_proj", "c_fc"}));
    BOOST_TEST(lora.modules() == (std::vector<std::string>{"blk.q_proj", "blk.c_fc"}), boost::test_tools::per_element());
    randomize(lora.parameters(), rng);
    const double s = 5.0 / 3.0;
    Tensor x = testing::random_tensor({2, 3, 5}, rng);

    // y = x W^T + b + s (x A^T) B^T for the Linear, spelled as loops
    {
        NoGradGuard ng;
        Tape t;
        auto y = model.lin.forward(t, t.constant(x)).value().to_vector<double>();
        auto xv = x.to_vector<double>(), w = model.lin.weight->value.to_vector<double>(), bias = model.lin.bias->value.to_vector<double>();
        auto a = lora.parameters()[0].value.to_vector<double>(), bb = lora.parameters()[1].value.to_vector<double>();
        std::vector<double> want(y.size());
        for (int row = 0; row < 6; ++row)
            for (int o = 0; o < 4; ++o) {
                double acc = bias[o];
                for (int i = 0; i < 5; ++i) acc += xv[row * 5 + i] * w[o * 5 + i];
                for (int k = 0; k < 3; ++k) {
                    double xa = 0;
                    for (int i = 0; i < 5; ++i) xa += xv[row * 5 + i] * a[k * 5 + i];
                    acc += s * xa * bb[o * 3 + k];
                }
                want[row * 4 + o] = acc;
            }
        BOOST_TEST(max_abs_diff(y, want) < 1e-12);
        // the Conv1D: y = h W + b + s (h A^T) B^T with W (in, out)
        Tensor h = testing::random_tensor({6, 4}, rng);
        auto yc = model.conv.forward(t, t.constant(h)).value().to_vector<double>();
        auto hv = h.to_vector<double>(), wc = model.conv.weight->value.to_vector<double>(), bc = model.conv.bias->value.to_vector<double>();
        auto ac = lora.parameters()[2].value.to_vector<double>(), bbc = lora.parameters()[3].value.to_vector<double>();
        for (int row = 0; row < 6; ++row)
            for (int o = 0; o < 6; ++o) {
                double acc = bc[o];
                for (int i = 0; i < 4; ++i) acc += hv[row * 4 + i] * wc[i * 6 + o];
                for (int k = 0; k < 3; ++k) {
                    double ha = 0;
                    for (int i = 0; i < 4; ++i) ha += hv[row * 4 + i] * ac[k * 4 + i];
                    acc += s * ha * bbc[o * 3 + k];
                }
                BOOST_TEST(std::abs(yc[row * 6 + o] - acc) < 1e-12);
            }
    }

    Tensor proj = testing::random_tensor({2, 3, 6}, rng);
    auto loss = [&](Tape& t) { return sum_all(model.forward(t, t.constant(x)) * t.constant(proj)); };
    check_gradients(lora.parameters(), loss);
    require_no_gradient(model.parameters());
    // the input's gradient flows through both the base and the adapter path
    testing::check_gradient("adapted projections wrt x", [&](Tape& t, std::vector<Var>& v) { return model.forward(t, v[0]); }, {x});
}

BOOST_AUTO_TEST_CASE(whole_model_adapter_gradients_llama_and_gpt2) {
    TokenBatch batch = tiny_batch();
    std::mt19937 rng(3);
    Tensor proj = testing::random_tensor({2, 5}, rng);
    {
        Llama m(tiny_config(io::ModelFamily::llama), {}, 7, DType::f64);
        randomize(m.parameters(), rng);
        nn::LoraAdapters lora;
        lora.attach(m, config(2, 3.0, llama_targets));
        randomize(lora.parameters(), rng);
        check_gradients(lora.parameters(), [&](Tape& t) { return sum_all(m.next_token_logprobs(t, batch) * t.constant(proj)); });
        require_no_gradient(m.parameters());
    }
    {
        Gpt2 m(tiny_config(io::ModelFamily::gpt2), {}, 7, DType::f64);
        randomize(m.parameters(), rng);
        nn::LoraAdapters lora;
        lora.attach(m, config(2, 3.0, {"c_attn", "c_proj", "c_fc", "q_proj"}));  // a list may name both families
        BOOST_TEST(lora.modules().size() == 8u);
        randomize(lora.parameters(), rng);
        check_gradients(lora.parameters(), [&](Tape& t) { return sum_all(m.next_token_logprobs(t, batch) * t.constant(proj)); });
        require_no_gradient(m.parameters());
    }
}

BOOST_AUTO_TEST_CASE(disabled_adapters_are_the_base_model) {
    auto m = load_pretrained_as<Llama>(models_dir + "llama", DType::f64);
    TokenBatch b = fixture_batch(json::parse(std::ifstream(lora_dir + "expected.json"))["llama"]);
    auto base = logprobs(*m, b);
    nn::LoraAdapters lora;
    lora.attach(*m, config(4, 8, llama_targets));
    std::mt19937 rng(5);
    randomize(lora.parameters(), rng, -0.2, 0.2);
    auto adapted = logprobs(*m, b);
    BOOST_TEST(max_abs_diff(adapted, base) > 1e-2);
    {
        nn::AdaptersDisabled off(lora);
        BOOST_TEST(!lora.enabled());
        auto ref = logprobs(*m, b);
        BOOST_TEST(ref == base, boost::test_tools::per_element());
        {
            nn::AdaptersDisabled nested(lora);
        }
        BOOST_TEST(!lora.enabled());
    }
    BOOST_TEST(lora.enabled());
    BOOST_TEST(logprobs(*m, b) == adapted, boost::test_tools::per_element());
    lora.set_enabled(false);
    BOOST_TEST(logprobs(*m, b) == base, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(merge_keeps_outputs_llama_and_gpt2) {
    TokenBatch batch = tiny_batch();
    std::mt19937 rng(8);
    auto run = [&](auto& m, std::vector<std::string> targets) {
        randomize(m.parameters(), rng);
        auto base = logits(m, batch);
        nn::LoraAdapters lora;
        lora.attach(m, config(3, 7.0, targets));
        randomize(lora.parameters(), rng);
        auto adapted = logits(m, batch);
        BOOST_TEST(max_abs_diff(adapted, base) > 1e-2);
        lora.merge_into_base();
        BOOST_TEST(!lora.attached());
        int with_adapter = 0;
        m.for_each_projection([&](const std::string&, auto& p) { with_adapter += p.adapter != nullptr; });
        BOOST_TEST(with_adapter == 0);
        for (const Parameter& p : m.parameters()) BOOST_TEST(p.trainable);
        BOOST_TEST(max_abs_diff(logits(m, batch), adapted) < 1e-10);
    };
    Llama llama(tiny_config(io::ModelFamily::llama), {}, 7, DType::f64);
    run(llama, llama_targets);
    Gpt2 gpt2(tiny_config(io::ModelFamily::gpt2), {}, 7, DType::f64);
    run(gpt2, gpt2_targets);
}

// Adapters saved by PEFT reproduce PEFT + transformers' numbers (float32).
BOOST_AUTO_TEST_CASE(peft_adapters_match_pytorch) {
    json e = json::parse(std::ifstream(lora_dir + "expected.json"));
    auto check = [&](auto& m, const json& want, const std::string& adapter_dir) {
        TokenBatch b = fixture_batch(want);
        nn::LoraAdapters lora = nn::LoraAdapters::from_peft(m, adapter_dir);
        BOOST_TEST(max_abs_diff(logits(m, b), as_vector(want["logits"])) < 1e-4);
        BOOST_TEST(max_abs_diff(logprobs(m, b), as_vector(want["logprobs"])) < 1e-4);
        {
            nn::AdaptersDisabled off(lora);
            BOOST_TEST(max_abs_diff(logprobs(m, b), as_vector(want["base_logprobs"])) < 1e-4);
        }
        BOOST_TEST(max_abs_diff(as_vector(want["logprobs"]), as_vector(want["base_logprobs"])) > 1e-2);  // the test can fail
        lora.merge_into_base();
        BOOST_TEST(max_abs_diff(logprobs(m, b), as_vector(want["merged_logprobs"])) < 1e-4);
    };
    auto llama = load_pretrained_as<Llama>(models_dir + "llama");
    check(*llama, e["llama"], lora_dir + "llama_adapter");
    auto gpt2 = load_pretrained_as<Gpt2>(models_dir + "gpt2");  // Conv1D projections: fan_in_fan_out
    check(*gpt2, e["gpt2"], lora_dir + "gpt2_adapter");

    // attach + load_peft: the same numbers
    auto again = load_pretrained_as<Llama>(models_dir + "llama");
    nn::LoraAdapters lora;
    lora.attach(*again, config(4, 8, llama_targets));
    lora.load_peft(lora_dir + "llama_adapter");
    BOOST_TEST(max_abs_diff(logprobs(*again, fixture_batch(e["llama"])), as_vector(e["llama"]["logprobs"])) < 1e-4);
}

// export_peft writes what PEFT writes: its tensor names and shapes, its config fields.
BOOST_AUTO_TEST_CASE(export_has_peft_layout_and_round_trips) {
    json e = json::parse(std::ifstream(lora_dir + "expected.json"));
    auto check = [&](auto& m, auto& fresh, const std::string& family, std::vector<std::string> targets, std::int64_t r, double alpha) {
        const fs::path out = fs::temp_directory_path() / ("deviant_lora_export_" + family);
        fs::remove_all(out);
        nn::LoraAdapters lora;
        lora.attach(m, config(r, alpha, targets, 4));
        std::mt19937 rng(6);
        randomize(lora.parameters(), rng, -0.2, 0.2);
        lora.export_peft(out, "tests/data/models/" + family);
        std::set<std::string> files;
        for (const auto& f : fs::directory_iterator(out)) files.insert(f.path().filename().string());
        BOOST_TEST(files == (std::set<std::string>{"adapter_config.json", "adapter_model.safetensors"}));  // no temporaries left

        const fs::path peft_dir = lora_dir + family + "_adapter";
        auto ours = io::SafetensorsFile::open(out / "adapter_model.safetensors");
        auto theirs = io::SafetensorsFile::open(peft_dir / "adapter_model.safetensors");
        BOOST_TEST(ours.names() == theirs.names(), boost::test_tools::per_element());
        for (const auto& n : theirs.names()) BOOST_TEST(ours.info(n).shape == theirs.info(n).shape, n);

        json cfg = json::parse(std::ifstream(out / "adapter_config.json"));
        json peft = json::parse(std::ifstream(peft_dir / "adapter_config.json"));
        for (auto& [key, value] : cfg.items()) BOOST_TEST(peft.contains(key), "PEFT has no field " << key);
        for (const char* key : {"peft_type", "task_type", "r", "lora_alpha", "bias", "fan_in_fan_out", "lora_dropout", "use_rslora",
                                "use_dora", "base_model_name_or_path"})
            BOOST_TEST(cfg[key] == peft[key], key << ": ours " << cfg[key].dump() << ", PEFT's " << peft[key].dump());
        auto sorted = [](json j) {
            auto v = j.get<std::vector<std::string>>();
            std::sort(v.begin(), v.end());
            return v;
        };
        BOOST_TEST(sorted(cfg["target_modules"]) == sorted(peft["target_modules"]), boost::test_tools::per_element());

        TokenBatch b = fixture_batch(e[family]);
        auto adapted = logprobs(m, b);
        nn::LoraAdapters loaded = nn::LoraAdapters::from_peft(fresh, out);
        BOOST_TEST(logprobs(fresh, b) == adapted, boost::test_tools::per_element());
        fs::remove_all(out);
    };
    auto llama = load_pretrained_as<Llama>(models_dir + "llama");
    auto llama2 = load_pretrained_as<Llama>(models_dir + "llama");
    check(*llama, *llama2, "llama", llama_targets, 4, 8);
    auto gpt2 = load_pretrained_as<Gpt2>(models_dir + "gpt2");
    auto gpt2b = load_pretrained_as<Gpt2>(models_dir + "gpt2");
    check(*gpt2, *gpt2b, "gpt2", gpt2_targets, 3, 12);
}

BOOST_AUTO_TEST_CASE(errors_name_what_is_wrong) {
    Llama llama(tiny_config(io::ModelFamily::llama), {}, 7, DType::f32);
    Gpt2 gpt2(tiny_config(io::ModelFamily::gpt2), {}, 7, DType::f32);
    nn::LoraAdapters lora;
    expect_error([&] { lora.attach(llama, config(0, 8, llama_targets)); }, {"rank", "0"});
    expect_error([&] { lora.attach(llama, config(-2, 8, llama_targets)); }, {"rank", "-2"});
    expect_error([&] { lora.attach(llama, config(4, 8, {"q_proj", "q_porj"})); }, {"q_porj", "q_proj", "gate_proj"});
    expect_error([&] { lora.attach(gpt2, nn::LoraConfig{}); }, {"matches a projection", "c_attn", "c_fc"});
    expect_error([&] { lora.attach(llama, config(4, 8, {})); }, {"target"});
    expect_error([&] { (void)lora.parameters(); }, {"no LoRA adapters"});
    BOOST_TEST(!lora.attached());
    for (const Parameter& p : llama.parameters()) BOOST_TEST(p.trainable);  // a failed attach froze nothing

    lora.attach(llama, config(4, 8, {"q_proj"}));
    expect_error([&] { lora.attach(llama, config(4, 8, {"q_proj"})); }, {"already attached"});
    nn::LoraAdapters second;
    expect_error([&] { second.attach(llama, config(4, 8, {"q_proj"})); }, {"model.layers.0.self_attn.q_proj", "already has an adapter"});

    // bad adapter directories
    const fs::path dir = fs::temp_directory_path() / "deviant_lora_bad";
    fs::remove_all(dir);
    lora.export_peft(dir);
    const std::string st = (dir / "adapter_model.safetensors").string();
    const std::string a0 = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (const Parameter& p : lora.parameters()) tensors.emplace_back(p.name, p.value);
    lora.load_peft(dir);  // the exported directory itself loads

    auto missing = tensors;
    missing.erase(missing.begin());
    io::save_safetensors(st, missing);
    expect_error([&] { lora.load_peft(dir); }, {st, a0});

    auto reshaped = tensors;
    reshaped[0].second = Tensor::zeros({4, 7});
    io::save_safetensors(st, reshaped);
    expect_error([&] { lora.load_peft(dir); }, {st, a0, "(4, 7)"});

    auto extra = tensors;
    extra.emplace_back("base_model.model.model.layers.0.mlp.up_proj.lora_A.weight", Tensor::zeros({4, 8}));
    io::save_safetensors(st, extra);
    expect_error([&] { lora.load_peft(dir); }, {st, "mlp.up_proj.lora_A.weight"});

    io::save_safetensors(st, tensors);
    const std::string cfg_file = (dir / "adapter_config.json").string();
    json cfg = json::parse(std::ifstream(cfg_file));
    auto with = [&](const std::string& key, json value) {
        json c = cfg;
        c[key] = value;
        std::ofstream(cfg_file) << c.dump();
    };
    with("r", 5);
    expect_error([&] { lora.load_peft(dir); }, {cfg_file, "'r'"});
    with("lora_alpha", 9);
    expect_error([&] { lora.load_peft(dir); }, {cfg_file, "lora_alpha"});
    with("use_dora", true);
    expect_error([&] { lora.load_peft(dir); }, {cfg_file, "use_dora"});
    with("peft_type", "IA3");
    expect_error([&] { lora.load_peft(dir); }, {cfg_file, "peft_type"});
    with("rank_pattern", json{{"q_proj", 8}});
    expect_error([&] { lora.load_peft(dir); }, {cfg_file, "rank_pattern"});
    std::ofstream(cfg_file) << "{ not json";
    expect_error([&] { lora.load_peft(dir); }, {cfg_file, "JSON"});
    fs::remove(cfg_file);
    expect_error([&] { lora.load_peft(dir); }, {cfg_file});
    fs::remove_all(dir);
}

// A rank above a projection's smaller side is refused naming the projection (a huge one used to
// die inside BLAS allocating the adapters).
BOOST_AUTO_TEST_CASE(rank_beyond_the_projection_is_refused) {
    auto m = load_pretrained_as<Llama>(DEVIANT_TEST_DATA_DIR "/models/llama");
    nn::LoraAdapters a;
    BOOST_CHECK_EXCEPTION(a.attach(*m, config(100000, 16, llama_targets)), Error, [](const Error& e) {
        const std::string msg = e.what();
        return msg.find("LoRA rank 100000") != std::string::npos && msg.find("self_attn") != std::string::npos;
    });
}
