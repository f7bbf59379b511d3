// deviant/nn/lora.hpp — LoRA adapters (Hu et al.): a trainable low-rank update on chosen
// projections of a frozen model, in PEFT's layout so adapters move to and from Python.
//
//   LoraConfig                 rank r, alpha (scaling = alpha / r), target module names, seed
//   LoraAdapters::attach(m, c) adds A (r, in) (kaiming-uniform, a = sqrt(5), as PEFT) and B (out, r)
//                              (zeros) to every projection whose last path component is a target;
//                              freezes the base model (Parameter::trainable = false)
//   forward                    y = base(x) + scaling * (x A^T) B^T while the adapters are enabled
//   set_enabled / AdaptersDisabled
//                              with the adapters off the model IS the base model: the trainer's
//                              reference log-probs come from the same weights, no second copy
//   export_peft / load_peft / from_peft
//                              adapter_model.safetensors + adapter_config.json (PEFT format)
//   merge_into_base            W += scaling * B A (Conv1D's W (in, out) += scaling * (B A)^T)
//
// A model is anything with for_each_projection(f) (models/causal_lm.hpp, nn/layers.hpp) and
// parameters(). The adapters point into the model: the model must outlive its LoraAdapters,
// whose destruction (or detach()) removes the adapters and restores the base's trainable flags.
#pragma once
#include <algorithm>
#include <cmath>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "deviant/data/jsonl.hpp"
#include "deviant/io/safetensors.hpp"
#include "deviant/nn/layers.hpp"

namespace deviant::nn {

struct LoraConfig {
    std::int64_t rank = 128;
    double alpha = 256;
    std::vector<std::string> target_modules{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    std::uint64_t seed = 0;
};

// Projection names of the supported families (Llama-style and GPT-2). A target that matches no
// projection of the model is an error unless it is one of these (a list may name both families).
inline const std::vector<std::string>& known_projection_names() {
    static const std::vector<std::string> names{"q_proj", "k_proj",  "v_proj", "o_proj", "gate_proj",
                                                "up_proj", "down_proj", "c_attn", "c_proj", "c_fc"};
    return names;
}

inline std::string last_path_component(const std::string& module) {
    auto dot = module.rfind('.');
    return dot == std::string::npos ? module : module.substr(dot + 1);
}

class LoraAdapters {
public:
    LoraAdapters() = default;
    LoraAdapters(LoraAdapters&&) noexcept = default;
    LoraAdapters& operator=(LoraAdapters&& other) noexcept {
        if (this != &other) {
            detach();
            state_ = std::move(other.state_);
        }
        return *this;
    }
    LoraAdapters(const LoraAdapters&) = delete;
    LoraAdapters& operator=(const LoraAdapters&) = delete;
    ~LoraAdapters() { detach(); }

    // Adds an adapter to every targeted projection of `model` and freezes the base parameters.
    template <class Model>
    void attach(Model& model, const LoraConfig& config) {
        DEVIANT_REQUIRE(!attached(), "LoRA adapters are already attached; detach() or merge_into_base() first");
        DEVIANT_REQUIRE(config.rank > 0, "LoRA rank must be positive, got {}", config.rank);
        DEVIANT_REQUIRE(std::isfinite(config.alpha), "LoRA alpha must be finite, got {}", config.alpha);
        DEVIANT_REQUIRE(!config.target_modules.empty(), "LoRA needs at least one target module");
        auto st = std::make_unique<State>();
        st->config = config;
        const std::set<std::string> targets(config.target_modules.begin(), config.target_modules.end());
        std::set<std::string> existing, matched;
        std::mt19937_64 rng(config.seed);
        model.for_each_projection([&](const std::string& module, auto& proj) {
            const std::string leaf = last_path_component(module);
            existing.insert(leaf);
            if (!targets.count(leaf)) return;
            DEVIANT_REQUIRE(proj.adapter == nullptr, "projection {} already has an adapter", module);
            matched.insert(leaf);
            constexpr bool conv = std::is_same_v<std::decay_t<decltype(proj)>, Conv1D>;
            const Tensor& w = proj.weight->value;
            Entry& e = st->entries.emplace_back();
            e.module = module;
            e.weight = proj.weight;
            e.transposed = conv;
            e.in = conv ? w.size(0) : w.size(1);
            e.out = conv ? w.size(1) : w.size(0);
            e.slot = &proj.adapter;
            // an adapter beyond min(in, out) cannot add rank, only parameters; one more than 64 times
            // the size of its weight is surely a typo and would exhaust memory: refused, naming the projection
            DEVIANT_REQUIRE(config.rank * (e.in + e.out) <= 64 * e.in * e.out,
                            "LoRA rank {} would give {} ({} -> {}) {} adapter values, more than 64 times its weight; ranks above {} add no rank",
                            config.rank, module, e.in, e.out, config.rank * (e.in + e.out), std::min(e.in, e.out));
            // kaiming_uniform_(a = sqrt(5)) on (r, in): gain sqrt(1/3), bound = gain * sqrt(3 / in) = 1 / sqrt(in)
            const double bound = 1.0 / std::sqrt(double(e.in));
            std::uniform_real_distribution<double> u(-bound, bound);
            std::vector<double> a(std::size_t(config.rank * e.in));
            for (double& v : a) v = u(rng);
            Parameter& pa = st->params.emplace_back(peft_name(module, "A"),
                                                     Tensor::from(a, {config.rank, e.in}, w.dtype()).to(w.device()));
            Parameter& pb = st->params.emplace_back(peft_name(module, "B"),
                                                     Tensor::zeros({e.out, config.rank}, w.dtype(), w.device()));
            e.hook = LowRankAdapter{&pa, &pb, config.alpha / double(config.rank), &st->enabled};
        });
        std::string available;
        for (const auto& n : existing) available += (available.empty() ? "" : ", ") + n;
        for (const auto& t : targets) {
            bool known = std::find(known_projection_names().begin(), known_projection_names().end(), t) !=
                         known_projection_names().end();
            DEVIANT_REQUIRE(matched.count(t) || known, "LoRA target module '{}' matches no projection; this model has: {}", t,
                            available);
        }
        DEVIANT_REQUIRE(!st->entries.empty(), "no LoRA target module ({}) matches a projection; this model has: {}",
                        fmt::join(config.target_modules, ", "), available);
        st->matched_targets.assign(matched.begin(), matched.end());
        for (Entry& e : st->entries) *e.slot = &e.hook;
        for (Parameter& p : model.parameters()) {
            st->frozen.emplace_back(&p, p.trainable);
            p.trainable = false;
        }
        state_ = std::move(st);
    }

    // Adapters for `model` as saved in a PEFT directory (adapter_config.json gives r, lora_alpha
    // and target_modules; adapter_model.safetensors the weights).
    template <class Model>
    static LoraAdapters from_peft(Model& model, const std::filesystem::path& dir) {
        nlohmann::json cfg = read_peft_config(dir);
        const std::string file = (dir / "adapter_config.json").string();
        LoraConfig c;
        c.rank = cfg["r"].get<std::int64_t>();
        c.alpha = cfg["lora_alpha"].get<double>();
        DEVIANT_REQUIRE(cfg.contains("target_modules") && cfg["target_modules"].is_array(),
                        "{}: field 'target_modules' must be a list of module names", file);
        c.target_modules.clear();
        for (const auto& t : cfg["target_modules"]) {
            DEVIANT_REQUIRE(t.is_string(), "{}: field 'target_modules' holds a non-string entry {}", file, t.dump());
            c.target_modules.push_back(t.get<std::string>());
        }
        LoraAdapters adapters;
        adapters.attach(model, c);
        adapters.load_peft(dir);
        return adapters;
    }

    bool attached() const { return state_ != nullptr; }
    const LoraConfig& config() const { return state().config; }
    double scaling() const { return state().config.alpha / double(state().config.rank); }
    // The adapted modules' paths, in model order.
    std::vector<std::string> modules() const {
        std::vector<std::string> out;
        for (const Entry& e : state().entries) out.push_back(e.module);
        return out;
    }
    // The adapter Parameters, lora_A then lora_B per module, named as PEFT names them
    // ("base_model.model.<module>.lora_A.weight"). The only trainable tensors while attached.
    std::deque<Parameter>& parameters() { return state().params; }
    std::int64_t count() const {
        std::int64_t n = 0;
        for (const Parameter& p : state().params) n += p.value.numel();
        return n;
    }
    void zero_grad() {
        for (Parameter& p : parameters()) p.zero_grad();
    }
    void to(Device device) {
        for (Parameter& p : parameters()) {
            p.value = p.value.to(device);
            if (p.grad.defined()) p.grad = p.grad.to(device);
        }
    }

    bool enabled() const { return state().enabled; }
    void set_enabled(bool on) { state().enabled = on; }

    // Writes adapter_model.safetensors and adapter_config.json into `dir` (created if needed),
    // each atomically. `base_model` fills base_model_name_or_path when given.
    void export_peft(const std::filesystem::path& dir, const std::string& base_model = "") const {
        const State& st = state();
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
        DEVIANT_REQUIRE(!ec, "{}: cannot create the adapter directory: {}", dir.string(), ec.message());
        std::vector<std::pair<std::string, Tensor>> tensors;
        for (const Parameter& p : st.params) tensors.emplace_back(p.name, p.value);
        io::save_safetensors(dir / "adapter_model.safetensors", tensors, {{"format", "pt"}});

        bool any_conv = std::any_of(st.entries.begin(), st.entries.end(), [](const Entry& e) { return e.transposed; });
        nlohmann::ordered_json j;
        j["peft_type"] = "LORA";
        j["task_type"] = "CAUSAL_LM";
        if (base_model.empty()) j["base_model_name_or_path"] = nullptr;
        else j["base_model_name_or_path"] = base_model;
        j["r"] = st.config.rank;
        if (st.config.alpha == std::round(st.config.alpha) && std::abs(st.config.alpha) < 1e15)
            j["lora_alpha"] = std::int64_t(st.config.alpha);
        else
            j["lora_alpha"] = st.config.alpha;
        j["target_modules"] = st.matched_targets;
        j["lora_dropout"] = 0.0;
        j["bias"] = "none";
        j["fan_in_fan_out"] = any_conv;
        j["use_rslora"] = false;
        j["use_dora"] = false;
        j["init_lora_weights"] = true;
        j["inference_mode"] = true;
        j["modules_to_save"] = nullptr;
        data::AtomicTextFile out(dir / "adapter_config.json");
        out.stream() << j.dump(2) << '\n';
        out.commit();
    }

    // Loads adapter weights saved by PEFT (or export_peft) into the attached adapters. The
    // file's r and lora_alpha must equal this configuration's; every adapter tensor must be
    // present with its shape, and the file may hold no other tensor.
    void load_peft(const std::filesystem::path& dir) {
        State& st = state();
        const std::string cfg_file = (dir / "adapter_config.json").string();
        nlohmann::json cfg = read_peft_config(dir);
        DEVIANT_REQUIRE(cfg["r"].get<std::int64_t>() == st.config.rank, "{}: field 'r' is {}, the adapters have rank {}", cfg_file,
                        cfg["r"].dump(), st.config.rank);
        DEVIANT_REQUIRE(cfg["lora_alpha"].get<double>() == st.config.alpha, "{}: field 'lora_alpha' is {}, the adapters have alpha {}",
                        cfg_file, cfg["lora_alpha"].dump(), st.config.alpha);
        const auto file = io::SafetensorsFile::open(dir / "adapter_model.safetensors");
        const std::string path = file.path().string();
        std::set<std::string> expected;
        for (const Parameter& p : st.params) expected.insert(p.name);
        for (const std::string& name : file.names())
            DEVIANT_REQUIRE(expected.count(name), "{}: tensor '{}' belongs to no adapter of this model", path, name);
        for (Parameter& p : st.params) {
            DEVIANT_REQUIRE(file.contains(p.name), "{}: no tensor named '{}'", path, p.name);
            const Shape& shape = file.info(p.name).shape;
            DEVIANT_REQUIRE(shape == p.value.shape(), "{}: tensor '{}' has shape {}, the adapter expects {}", path, p.name,
                            shape.str(), p.value.shape().str());
        }
        for (Parameter& p : st.params) p.value.copy_from(file.load(p.name, p.value.dtype()).to(p.value.device()));
    }

    // Folds every adapter into its base weight (W += scaling * B A, computed in float64), then
    // detaches: the model alone gives the adapted outputs.
    void merge_into_base() {
        State& st = state();
        const double s = scaling();
        for (Entry& e : st.entries) {
            Parameter& w = *e.weight;
            auto a = e.hook.a->value.to_vector<double>(), b = e.hook.b->value.to_vector<double>();
            auto wv = w.value.to_vector<double>();
            const std::int64_t r = st.config.rank;
            for (std::int64_t o = 0; o < e.out; ++o)
                for (std::int64_t i = 0; i < e.in; ++i) {
                    double d = 0;
                    for (std::int64_t k = 0; k < r; ++k) d += b[std::size_t(o * r + k)] * a[std::size_t(k * e.in + i)];
                    wv[std::size_t(e.transposed ? i * e.out + o : o * e.in + i)] += s * d;
                }
            w.value.copy_from(Tensor::from(wv, w.value.shape(), w.value.dtype()).to(w.value.device()));
        }
        detach();
    }

    // Removes the adapters from the model and restores the base parameters' trainable flags.
    void detach() {
        if (!state_) return;
        for (Entry& e : state_->entries)
            if (*e.slot == &e.hook) *e.slot = nullptr;
        for (auto& [p, trainable] : state_->frozen) p->trainable = trainable;
        state_.reset();
    }

private:
    struct Entry {
        std::string module;
        LowRankAdapter hook;                    // what the projection calls
        const LowRankAdapter** slot = nullptr;  // the projection's adapter pointer
        Parameter* weight = nullptr;            // the base weight
        bool transposed = false;                // Conv1D: weight stored (in, out)
        std::int64_t in = 0, out = 0;
    };
    struct State {
        LoraConfig config;
        bool enabled = true;
        std::deque<Parameter> params;  // stable addresses: the hooks point at them
        std::deque<Entry> entries;
        std::vector<std::pair<Parameter*, bool>> frozen;  // base parameters and their former flag
        std::vector<std::string> matched_targets;
    };

    static std::string peft_name(const std::string& module, const char* which) {
        return "base_model.model." + module + ".lora_" + which + ".weight";
    }

    static nlohmann::json read_peft_config(const std::filesystem::path& dir) {
        const std::string file = (dir / "adapter_config.json").string();
        std::ifstream in(file);
        DEVIANT_REQUIRE(in.is_open(), "{}: cannot open for reading", file);
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(in);
        } catch (const nlohmann::json::exception& e) {
            fail("{}: not valid JSON: {}", file, e.what());
        }
        DEVIANT_REQUIRE(j.is_object(), "{}: expected a JSON object", file);
        auto str = [&](const char* key) { return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string(); };
        DEVIANT_REQUIRE(str("peft_type") == "LORA", "{}: field 'peft_type' must be \"LORA\", got {}", file,
                        j.contains("peft_type") ? j["peft_type"].dump() : "nothing");
        DEVIANT_REQUIRE(j.contains("r") && j["r"].is_number_integer() && j["r"].get<std::int64_t>() > 0,
                        "{}: field 'r' must be a positive integer", file);
        DEVIANT_REQUIRE(j.contains("lora_alpha") && j["lora_alpha"].is_number(), "{}: field 'lora_alpha' must be a number", file);
        for (const char* unsupported : {"use_rslora", "use_dora"})
            DEVIANT_REQUIRE(!(j.contains(unsupported) && j[unsupported].is_boolean() && j[unsupported].get<bool>()),
                            "{}: field '{}' is true, which these adapters do not support", file, unsupported);
        for (const char* pattern : {"rank_pattern", "alpha_pattern"})
            DEVIANT_REQUIRE(!(j.contains(pattern) && j[pattern].is_object() && !j[pattern].empty()),
                            "{}: field '{}' is not empty; per-module ranks or alphas are not supported", file, pattern);
        if (j.contains("bias") && j["bias"].is_string())
            DEVIANT_REQUIRE(j["bias"] == "none", "{}: field 'bias' is {}; only \"none\" is supported", file, j["bias"].dump());
        return j;
    }

    State& state() {
        DEVIANT_REQUIRE(state_ != nullptr, "no LoRA adapters are attached");
        return *state_;
    }
    const State& state() const {
        DEVIANT_REQUIRE(state_ != nullptr, "no LoRA adapters are attached");
        return *state_;
    }

    std::unique_ptr<State> state_;
};

// Within this scope the adapters are off and the model computes the base model's outputs.
class AdaptersDisabled {
public:
    explicit AdaptersDisabled(LoraAdapters& adapters) : adapters_(adapters), prev_(adapters.enabled()) { adapters_.set_enabled(false); }
    ~AdaptersDisabled() { adapters_.set_enabled(prev_); }
    AdaptersDisabled(const AdaptersDisabled&) = delete;
    AdaptersDisabled& operator=(const AdaptersDisabled&) = delete;

private:
    LoraAdapters& adapters_;
    bool prev_;
};

}  // namespace deviant::nn
