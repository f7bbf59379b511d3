// Transformer layers and model families:
//  - `deviant score`'s pipeline against Hugging Face transformers (tests/data/models/
//    make_model_fixtures.py, float64): per-pair log-probs, losses, gradient norms per tensor;
//  - finite-difference gradient checks of every layer and of a whole model (float64);
//  - the Llama alias against the same forward spelled out op by op.
#define BOOST_TEST_MODULE models
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tiny_models.hpp"
#include "gradcheck.hpp"
#include "deviant/models/load.hpp"
#include "deviant/objectives/registry.hpp"
#include "deviant/train/pair_rows.hpp"

using namespace deviant;
using nlohmann::json;

namespace {

const std::string dir = DEVIANT_TEST_DATA_DIR "/models/";

json expected() {
    std::ifstream in(dir + "expected.json");
    return json::parse(in);
}

double rel(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-30); }

// Runs the score pipeline on the fixture pairs and compares with transformers' numbers.
template <class Model>
void compare_with_reference(Model& policy, const Model* ref, const std::string& objective, const json& want, DType dtype,
                            double logp_tol, double grad_tol) {
    auto pairs = data::read_token_pairs(dir + "pairs.jsonl", policy.config.vocab_size);
    SequenceRows rows = make_rows(pairs, dtype);
    policy.store.zero_grad();
    Tape tape;
    PairLogps lp = pair_logps(tape, policy, rows);
    if (ref) std::tie(lp.ref_chosen_logp, lp.ref_rejected_logp) = reference_logps(*ref, rows);
    ObjectiveResult r = make_objective(objective)(lp);
    tape.retain(lp.chosen_logp);  // read after backward
    tape.retain(lp.rejected_logp);
    tape.backward(r.loss);
    auto c = lp.chosen_logp.value().to_vector<double>(), rj = lp.rejected_logp.value().to_vector<double>();
    for (std::size_t i = 0; i < c.size(); ++i) {
        BOOST_TEST(rel(c[i], want["pairs"][i]["chosen_logp"]) < logp_tol, "pair " << i << " chosen " << c[i]);
        BOOST_TEST(rel(rj[i], want["pairs"][i]["rejected_logp"]) < logp_tol, "pair " << i << " rejected " << rj[i]);
        if (ref) {
            BOOST_TEST(rel(lp.ref_chosen_logp.to_vector<double>()[i], want["pairs"][i]["ref_chosen_logp"]) < logp_tol);
        }
    }
    BOOST_TEST(rel(r.loss.value().item(), want["loss"]) < logp_tol);
    std::size_t n = 0;
    for (auto& [name, norm] : want["grad_norms"].items()) {
        BOOST_TEST_CONTEXT("gradient of " << name) {
            BOOST_REQUIRE(policy.store.contains(name));
            const Parameter& p = policy.store.at(name);
            double sq = 0;
            for (double g : p.grad.to_vector<double>()) sq += g * g;
            BOOST_TEST(rel(std::sqrt(sq), double(norm)) < grad_tol);
        }
        ++n;
    }
    BOOST_TEST(n == policy.store.parameters().size());  // every model parameter is reported, no more
}

}  // namespace

BOOST_AUTO_TEST_CASE(llama_matches_transformers) {
    json e = expected();
    for (DType dt : {DType::f32, DType::f64}) {
        // float64: transformers keeps RoPE's inverse frequencies float32-rounded even in a
        // float64 model, which moves its numbers by ~1e-7 relative; ours are exact.
        double logp_tol = dt == DType::f32 ? 1e-4 : 1e-6, grad_tol = dt == DType::f32 ? 1e-3 : 1e-6;
        auto policy = load_pretrained_as<Llama>(dir + "llama", dt);
        auto ref = load_pretrained_as<Llama>(dir + "llama_ref", dt);
        BOOST_TEST(policy->config.num_key_value_heads < policy->config.num_attention_heads);  // grouped-query heads
        BOOST_TEST_CONTEXT("sft " << dtype_name(dt)) compare_with_reference(*policy, (const Llama*)nullptr, "sft", e["llama_sft"], dt, logp_tol, grad_tol);
        BOOST_TEST_CONTEXT("dpo " << dtype_name(dt)) compare_with_reference(*policy, ref.get(), "dpo", e["llama_dpo"], dt, logp_tol, grad_tol);
        BOOST_TEST_CONTEXT("ddpo " << dtype_name(dt)) compare_with_reference(*policy, ref.get(), "ddpo", e["llama_ddpo"], dt, logp_tol, grad_tol);
    }
}

BOOST_AUTO_TEST_CASE(gpt2_matches_transformers) {
    json e = expected();
    for (DType dt : {DType::f32, DType::f64}) {
        auto policy = load_pretrained_as<Gpt2>(dir + "gpt2", dt);
        BOOST_TEST(!policy->store.contains("lm_head.weight"));  // tied to transformer.wte.weight
        compare_with_reference(*policy, (const Gpt2*)nullptr, "sft", e["gpt2_sft"], dt, dt == DType::f32 ? 1e-4 : 1e-10,
                               dt == DType::f32 ? 1e-3 : 1e-9);
    }
}

namespace {
io::ModelConfig tiny_config(io::ModelFamily family) { return testing::tiny_config(family); }

template <class Model>
void check_model_gradients(Model& m, const std::function<Var(Tape&)>& loss) {
    testing::check_parameter_gradients(m.parameters(), loss);
}

Tensor ids_tensor(std::vector<std::int64_t> v, std::int64_t B, std::int64_t T) { return Tensor::from(v, {B, T}); }
}  // namespace

BOOST_AUTO_TEST_CASE(whole_model_gradients_llama_and_gpt2) {
    std::vector<std::int64_t> ids{1, 5, 3, 7, 2, 9, 4, 4, 0, 10, 6, 8};
    std::vector<std::int64_t> seg{0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1};  // packed row and padded row
    TokenBatch batch{ids_tensor(ids, 2, 6), ids_tensor(seg, 2, 6)};
    std::mt19937 rng(3);
    Tensor proj = testing::random_tensor({2, 5}, rng);
    {
        Llama m(tiny_config(io::ModelFamily::llama), {}, 7, DType::f64);
        for (auto& p : m.parameters()) p.value = testing::random_tensor(p.value.shape(), rng, -0.5, 0.5);
        check_model_gradients(m, [&](Tape& t) { return sum_all(m.next_token_logprobs(t, batch) * t.constant(proj)); });
    }
    {
        Gpt2 m(tiny_config(io::ModelFamily::gpt2), {}, 7, DType::f64);
        for (auto& p : m.parameters()) p.value = testing::random_tensor(p.value.shape(), rng, -0.5, 0.5);
        check_model_gradients(m, [&](Tape& t) { return sum_all(m.next_token_logprobs(t, batch) * t.constant(proj)); });
    }
}

// The LM head on scored positions only (what pair_logps asks for): the log-probs of those positions
// and every parameter gradient equal the full head's, masked to them; the rest read 0; and the
// finite-difference check holds for the scored path itself.
BOOST_AUTO_TEST_CASE(scored_positions_match_the_full_head) {
    std::vector<std::int64_t> ids{1, 5, 3, 7, 2, 9, 4, 4, 0, 10, 6, 8};
    std::vector<std::int64_t> seg{0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1};
    TokenBatch batch{ids_tensor(ids, 2, 6), ids_tensor(seg, 2, 6)};
    const std::vector<std::int64_t> scored{-1, 0, 0, -1, 1, 1, -1, -1, 2, 2, 2, -1};  // (2, 5) sequence index or -1 (first entry unused)
    std::vector<std::int64_t> scored_2x5(scored.begin() + 1, scored.begin() + 11);
    const Tensor scored_t = Tensor::from(scored_2x5, {2, 5});
    std::vector<double> mask(10);
    for (std::size_t i = 0; i < mask.size(); ++i) mask[i] = scored_2x5[i] >= 0 ? 1.0 : 0.0;
    const Tensor mask_t = Tensor::from(mask, {2, 5}, DType::f64);
    std::mt19937 rng(5);
    Tensor proj = testing::random_tensor({2, 5}, rng);
    Llama m(tiny_config(io::ModelFamily::llama), {}, 7, DType::f64);
    for (auto& p : m.parameters()) p.value = testing::random_tensor(p.value.shape(), rng, -0.5, 0.5);
    auto grads = [&](bool use_scored) {
        m.store.zero_grad();
        Tape t;
        Var lp = use_scored ? m.next_token_logprobs(t, batch, scored_t) : m.next_token_logprobs(t, batch) * t.constant(mask_t);
        Var loss = sum_all(lp * t.constant(proj));
        std::vector<std::vector<double>> g{lp.value().to_vector<double>()};  // read before backward releases it
        t.backward(loss);
        for (auto& p : m.parameters()) g.push_back(p.grad.to_vector<double>());
        return g;
    };
    const auto full = grads(false), part = grads(true);
    BOOST_REQUIRE_EQUAL(full.size(), part.size());
    for (std::size_t i = 0; i < full.size(); ++i)
        for (std::size_t j = 0; j < full[i].size(); ++j)
            BOOST_TEST(std::abs(full[i][j] - part[i][j]) <= 1e-12 * std::max(1.0, std::abs(full[i][j])), "tensor " << i << " entry " << j);
    check_model_gradients(m, [&](Tape& t) { return sum_all(m.next_token_logprobs(t, batch, scored_t) * t.constant(proj)); });
    // nothing scored: zeros, and a wrong shape is refused
    Tape t;
    const Tensor none = Tensor::full({2, 5}, -1.0, DType::i64);
    for (double v : m.next_token_logprobs(t, batch, none).value().to_vector<double>()) BOOST_TEST(v == 0.0);
    BOOST_CHECK_THROW(m.next_token_logprobs(t, batch, Tensor::full({2, 4}, 0.0, DType::i64)), Error);
}

BOOST_AUTO_TEST_CASE(layer_gradients_with_respect_to_inputs) {
    io::ModelConfig c = tiny_config(io::ModelFamily::llama);
    ParameterStore store(DType::f64, 5);
    nn::RmsNorm rms;
    rms.bind(store, "rms", c);
    nn::LayerNorm ln;
    ln.bind(store, "ln", c);
    nn::SwiGlu<LlamaNames> swiglu;
    swiglu.bind(store, "mlp", c);
    nn::GeluMlp<Gpt2Names> gelu;
    gelu.bind(store, "gelu", c);
    nn::SelfAttention<nn::SeparateQkv<LlamaNames>, nn::RotaryPositions> attn;
    attn.bind(store, "attn", c);
    std::mt19937 rng(9);
    for (auto& p : store.parameters()) p.value = testing::random_tensor(p.value.shape(), rng, -0.5, 0.5);
    std::vector<std::int64_t> seg{0, 0, 0, 0, 0, 0, 1, 1};
    Tensor segments = Tensor::from(seg, {2, 4});
    ForwardContext ctx{c, positions_from_segments(segments), causal_segment_mask(segments)};
    auto x = [&] { return testing::random_tensor({2, 4, 8}, rng); };
    testing::check_gradient("rmsnorm", [&](Tape& t, std::vector<Var>& v) { return rms.forward(t, v[0]); }, {x()});
    testing::check_gradient("layernorm", [&](Tape& t, std::vector<Var>& v) { return ln.forward(t, v[0]); }, {x()});
    testing::check_gradient("swiglu", [&](Tape& t, std::vector<Var>& v) { return swiglu.forward(t, v[0], ctx); }, {x()});
    testing::check_gradient("gelu mlp", [&](Tape& t, std::vector<Var>& v) { return gelu.forward(t, v[0], ctx); }, {x()});
    testing::check_gradient("attention (GQA, RoPE, packed)", [&](Tape& t, std::vector<Var>& v) { return attn.forward(t, v[0], ctx); }, {x()});
    Tensor pos = Tensor::from(std::vector<std::int64_t>{0, 1, 2, 3, 0, 1, 5, 9}, {2, 4});
    testing::check_gradient("rope", [&](Tape&, std::vector<Var>& v) { return rope(v[0], pos, 10.0); }, {testing::random_tensor({2, 3, 4, 6}, rng)});
}

// The same Llama forward written op by op (no layer types) gives identical logits.
BOOST_AUTO_TEST_CASE(llama_alias_equals_hand_spelled_forward) {
    auto m = load_pretrained_as<Llama>(dir + "llama", DType::f64);
    const auto& c = m->config;
    std::vector<std::int64_t> ids{3, 17, 40, 16, 86, 68, 77, 5};
    TokenBatch batch{Tensor::from(ids, {1, 8}), {}};
    NoGradGuard ng;
    Tape t;
    Var alias = m->logits(t, batch);

    auto P = [&](const std::string& n) { return t.param(m->store.at(n)); };
    std::int64_t T = 8, H = c.num_attention_heads, Hkv = c.num_key_value_heads, D = c.head_dim;
    Tensor pos = Tensor::from(std::vector<std::int64_t>{0, 1, 2, 3, 4, 5, 6, 7}, {1, 8});
    std::vector<std::uint8_t> causal(std::size_t(T * T));
    for (std::int64_t i = 0; i < T; ++i)
        for (std::int64_t j = 0; j < T; ++j) causal[std::size_t(i * T + j)] = j > i;
    Tensor mask = Tensor::from(causal, {1, 1, T, T});
    auto rms = [&](Var x, const std::string& w) { return x * rsqrt(mean(x * x, -1, true) + c.norm_eps) * P(w); };
    Var x = embedding(P("model.embed_tokens.weight"), batch.ids);
    for (int l = 0; l < c.num_hidden_layers; ++l) {
        std::string pre = "model.layers." + std::to_string(l) + ".";
        Var h = rms(x, pre + "input_layernorm.weight");
        Var q = rope(transpose(reshape(linear(h, P(pre + "self_attn.q_proj.weight")), {1, T, H, D}), 1, 2), pos, c.rope_theta);
        Var k = rope(transpose(reshape(linear(h, P(pre + "self_attn.k_proj.weight")), {1, T, Hkv, D}), 1, 2), pos, c.rope_theta);
        Var v = transpose(reshape(linear(h, P(pre + "self_attn.v_proj.weight")), {1, T, Hkv, D}), 1, 2);
        std::vector<Var> heads;
        for (std::int64_t hh = 0; hh < H; ++hh) {
            std::int64_t g = hh / (H / Hkv);
            Var s = scale(matmul(narrow(q, 1, hh, 1), transpose(narrow(k, 1, g, 1), -1, -2)), 1.0 / std::sqrt(double(D)));
            heads.push_back(matmul(softmax(masked_fill(s, mask, -1e300), -1), narrow(v, 1, g, 1)));
        }
        Var att = reshape(transpose(concat(heads, 1), 1, 2), {1, T, H * D});
        x = x + linear(att, P(pre + "self_attn.o_proj.weight"));
        Var h2 = rms(x, pre + "post_attention_layernorm.weight");
        x = x + linear(silu(linear(h2, P(pre + "mlp.gate_proj.weight"))) * linear(h2, P(pre + "mlp.up_proj.weight")),
                       P(pre + "mlp.down_proj.weight"));
    }
    Var by_hand = linear(rms(x, "model.norm.weight"), P("lm_head.weight"));
    BOOST_TEST(testing::relative_error(alias.value().to_vector<double>(), by_hand.value().to_vector<double>()) < 1e-13);
}

namespace {
// The fixture checkpoint under another model_type, in a fresh folder.
std::filesystem::path retyped_copy(const std::string& fixture, const std::string& model_type) {
    namespace fs = std::filesystem;
    fs::path out = fs::temp_directory_path() / fmt::format("deviant-retyped-{}-{}", model_type, ::getpid());
    fs::remove_all(out);
    fs::create_directories(out);
    fs::copy_file(dir + fixture + "/model.safetensors", out / "model.safetensors");
    json c = json::parse(std::ifstream(dir + fixture + "/config.json"));
    c["model_type"] = model_type;
    std::ofstream(out / "config.json") << c.dump();
    return out;
}
const bool llama_registered = register_model_family<LlamaArchitecture>("test-registered-llama");
const bool gpt2_registered = register_model_family<Gpt2Architecture>("test-registered-gpt2", io::ModelFamily::gpt2);
}  // namespace

// A family registered at run time loads through with_pretrained as RegisteredLm (the layers behind
// the registration) and computes what transformers computes for the same weights.
BOOST_AUTO_TEST_CASE(registered_families_load_and_match_transformers) {
    BOOST_TEST(llama_registered);
    BOOST_TEST(gpt2_registered);
    json e = expected();
    const auto llama_dir = retyped_copy("llama", "test-registered-llama");
    const auto gpt2_dir = retyped_copy("gpt2", "test-registered-gpt2");
    int visited = 0;
    with_pretrained(llama_dir, [&](auto& loaded) {
        if constexpr (!std::is_same_v<std::decay_t<decltype(loaded)>, RegisteredLm>) {
            BOOST_FAIL("a registered family did not load as RegisteredLm");
        } else {
        RegisteredLm& m = loaded;
        compare_with_reference(m, (const RegisteredLm*)nullptr, "sft", e["llama_sft"], DType::f32, 1e-4, 1e-3);
        // the same projections as the static type, in the same order (LoRA and GGUF packing use them)
        auto fixed = load_pretrained_as<Llama>(dir + "llama");
        std::vector<std::string> a, b;
        m.for_each_projection([&](const std::string& module, auto&) { a.push_back(module); });
        fixed->for_each_projection([&](const std::string& module, auto&) { b.push_back(module); });
        BOOST_TEST(a == b, boost::test_tools::per_element());
        BOOST_TEST(a.size() == std::size_t(7 * m.config.num_hidden_layers));
        ++visited;
        }
        return 0;
    });
    with_pretrained(gpt2_dir, [&](auto& loaded) {
        if constexpr (!std::is_same_v<std::decay_t<decltype(loaded)>, RegisteredLm>) {
            BOOST_FAIL("a registered family did not load as RegisteredLm");
        } else {
        RegisteredLm& m = loaded;
        BOOST_TEST((m.config.family == io::ModelFamily::gpt2));  // fields read as GPT-2's
        compare_with_reference(m, (const RegisteredLm*)nullptr, "sft", e["gpt2_sft"], DType::f32, 1e-4, 1e-3);
        ++visited;
        }
        return 0;
    });
    BOOST_TEST(visited == 2);
    // a registered name cannot be taken twice, a built-in one not at all
    BOOST_CHECK_THROW(register_model_family<LlamaArchitecture>("test-registered-llama"), Error);
    BOOST_CHECK_THROW(register_model_family<LlamaArchitecture>("qwen2"), Error);
    // an unknown type's error lists the registered ones beside the built-in ones
    const auto unknown = retyped_copy("llama", "no-such-family");
    try {
        io::load_model_config(unknown);
        BOOST_FAIL("unknown model type accepted");
    } catch (const Error& err) {
        BOOST_TEST(std::string(err.what()).find("'no-such-family', which is not supported (supported: llama, mistral, qwen2, gpt2, "
                                                "test-registered-gpt2, test-registered-llama)") != std::string::npos,
                   err.what());
    }
    for (const auto& d : {llama_dir, gpt2_dir, unknown}) std::filesystem::remove_all(d);
}

BOOST_AUTO_TEST_CASE(bad_pairs_name_file_line_and_field) {
    auto tmp = std::filesystem::temp_directory_path() / "deviant_bad_pairs.jsonl";
    auto expect = [&](const std::string& content, const std::string& needle) {
        std::ofstream(tmp) << content;
        BOOST_CHECK_EXCEPTION(data::read_token_pairs(tmp, 96), Error, [&](const Error& e) {
            std::string m = e.what();
            BOOST_TEST_INFO(m);
            return m.find(tmp.string()) != std::string::npos && m.find(needle) != std::string::npos;
        });
    };
    expect("{\"prompt_ids\":[1],\"chosen_ids\":[2],\"rejected_ids\":[3]}\n{\"prompt_ids\":[1],\"chosen_ids\":[],\"rejected_ids\":[3]}\n", ":2:");
    expect("{\"prompt_ids\":[1],\"chosen_ids\":[2],\"rejected_ids\":[300]}\n", "rejected_ids");
    expect("{\"prompt_ids\":[1],\"chosen_ids\":[2]}\n", "rejected_ids");
    expect("{\"prompt_ids\":[1],\"chosen_ids\":[2],\"rejected_ids\":[3]\n", ":1:");
    expect("{\"prompt_ids\":[1],\"chosen_ids\":[2.5],\"rejected_ids\":[3]}\n", "chosen_ids");
    BOOST_CHECK_THROW(data::read_token_pairs("/nonexistent/pairs.jsonl"), Error);
    std::filesystem::remove(tmp);
}

// Configurations the layer set cannot compute exactly are refused, not approximated.
BOOST_AUTO_TEST_CASE(unsupported_rope_scaling_and_activation_are_errors) {
    io::ModelConfig c = tiny_config(io::ModelFamily::llama);
    c.rope_type = "longrope";
    BOOST_CHECK_EXCEPTION(Llama{c}, Error, [](const Error& e) { return std::string(e.what()).find("longrope") != std::string::npos; });
    c = tiny_config(io::ModelFamily::llama);
    c.hidden_act = "gelu";
    BOOST_CHECK_THROW(Llama{c}, Error);
    c = tiny_config(io::ModelFamily::gpt2);
    c.hidden_act = "relu";
    BOOST_CHECK_THROW(Gpt2{c}, Error);
}

// RoPE scaling (llama3, linear, dynamic, yarn) and sliding-window attention against transformers
// (tests/data/rope/make_rope_fixtures.py, float64 reference): every row's per-token log-probs
// within 1e-4 relative in float32, and a negative control: plain RoPE / full attention differ.
namespace {
std::vector<std::vector<double>> rope_fixture_logprobs(const Llama& m, const json& rows) {
    std::vector<std::vector<double>> out;
    for (const json& r : rows) {
        std::vector<std::int64_t> ids = r.get<std::vector<std::int64_t>>();
        Tape t;
        NoGradGuard ng;
        Var lp = m.next_token_logprobs(t, TokenBatch{Tensor::from(ids, {1, std::int64_t(ids.size())}), Tensor{}});
        out.push_back(lp.value().to_vector<double>());
    }
    return out;
}
double max_rel_diff(const std::vector<std::vector<double>>& a, const json& b) {
    double worst = 0;
    for (std::size_t i = 0; i < a.size(); ++i)
        for (std::size_t j = 0; j < a[i].size(); ++j) worst = std::max(worst, rel(a[i][j], b[i][j].get<double>()));
    return worst;
}
}  // namespace

BOOST_AUTO_TEST_CASE(rope_scaling_and_sliding_window_match_transformers) {
    const std::string rdir = DEVIANT_TEST_DATA_DIR "/rope/";
    std::ifstream in(rdir + "expected.json");
    const json e = json::parse(in);
    for (const char* name : {"llama31", "linear", "dynamic", "yarn", "yarn_mscale", "mistral", "qwen2_window"}) {
        BOOST_TEST_CONTEXT(name) {
            auto m = load_pretrained_as<Llama>(rdir + name, DType::f32);
            const json& want = e[name];
            const double diff = max_rel_diff(rope_fixture_logprobs(*m, want["rows"]), want["logprobs"]);
            BOOST_TEST(diff < 1e-4, name << ": max relative difference " << diff);
            // negative control: without the scaling / the window the numbers move
            if (std::string(name) != "qwen2_window") {
                io::ModelConfig plain = m->config;
                plain.rope_type = plain.rope.type = "default";
                plain.sliding_window = 0;
                auto p = std::make_unique<Llama>(plain, checkpoint_source(rdir + name), 0, DType::f32);
                const double off = max_rel_diff(rope_fixture_logprobs(*p, want["rows"]), want["logprobs"]);
                BOOST_TEST(off > 1e-3, name << ": plain RoPE / full attention differs by only " << off);
            }
        }
    }
    // the configs were read as written
    BOOST_TEST(io::load_model_config(rdir + "llama31").rope.original_max_position_embeddings == 512);
    BOOST_TEST(io::load_model_config(rdir + "mistral").sliding_window == 5);
    BOOST_TEST(io::load_model_config(rdir + "qwen2_window").sliding_window == 0);  // use_sliding_window false
}

// transformers 4.x spelling (rope_scaling with "type"), refused types and bad parameters.
BOOST_AUTO_TEST_CASE(rope_scaling_config_spellings_and_errors) {
    const auto dir_ = std::filesystem::temp_directory_path() / ("deviant_rope_cfg_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    auto read = [&](const std::string& extra) {
        std::ofstream(dir_ / "config.json") << R"({"model_type": "llama", "vocab_size": 96, "hidden_size": 32, "intermediate_size": 48,
            "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 128)" << extra << "}";
        return io::load_model_config(dir_);
    };
    io::ModelConfig c = read(R"(, "rope_theta": 500000.0, "rope_scaling": {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})");
    BOOST_TEST(c.rope_type == "llama3");
    BOOST_TEST(c.rope.factor == 8.0);
    BOOST_TEST(c.rope_theta == 500000.0);
    auto refused = [&](const std::string& extra, const std::string& needle) {
        BOOST_CHECK_EXCEPTION(read(extra), Error, [&](const Error& err) {
            const std::string m = err.what();
            BOOST_TEST_MESSAGE(m);
            return m.find(needle) != std::string::npos && m.find("config.json") != std::string::npos;
        });
    };
    refused(R"(, "rope_scaling": {"rope_type": "longrope", "factor": 2.0})", "longrope");
    refused(R"(, "rope_scaling": {"rope_type": "linear", "factor": -2.0})", "factor");
    refused(R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0})", "low_freq_factor");
    refused(R"(, "rope_scaling": {"rope_type": "linear", "factor": 2.0, "partial_rotary_factor": 0.5})", "partial_rotary_factor");
    refused(R"(, "sliding_window": -3)", "sliding_window");
    std::filesystem::remove_all(dir_);
}

// The GGUF form of Llama 3.1's scaling (per-frequency divisors) is recognised as llama3.
BOOST_AUTO_TEST_CASE(gguf_rope_divisors_are_read_as_llama3) {
    io::ModelConfig c = io::load_model_config(DEVIANT_TEST_DATA_DIR "/rope/llama31");
    const std::vector<double> scaled = nn::rotary_frequencies(c).inv_freq;
    io::ModelConfig g = c;
    g.rope_type = g.rope.type = "default";
    const std::vector<double> plain = nn::rotary_frequencies(g).inv_freq;
    // Llama 3.x's own parameters (original context 8192)
    c.rope.original_max_position_embeddings = 8192;
    const std::vector<double> llama31 = nn::rotary_frequencies(c).inv_freq;
    for (std::size_t i = 0; i < plain.size(); ++i) g.rope.frequency_divisors.push_back(plain[i] / llama31[i]);
    BOOST_TEST(nn::divisors_as_llama3(g));
    BOOST_TEST(g.rope_type == "llama3");
    BOOST_TEST(g.rope.factor == 8.0);
    BOOST_TEST(g.rope.frequency_divisors.empty());
    BOOST_TEST(std::abs(scaled[1] - plain[1]) > 1e-9);  // the fixture's scaling moves the frequencies
    // divisors that match no llama3 setting stay divisors, and a config.json cannot state them
    io::ModelConfig odd = c;
    odd.rope_type = odd.rope.type = "default";
    odd.rope.frequency_divisors.assign(plain.size(), 3.0);
    BOOST_TEST(!nn::divisors_as_llama3(odd));
    BOOST_CHECK_THROW(io::llama_config_json(odd), Error);
    const std::vector<double> f = nn::rotary_frequencies(odd).inv_freq;
    BOOST_TEST(std::abs(f[1] - plain[1] / 3.0) < 1e-15);
}
