// deviant/io/hf_config.hpp — the architecture of a model, read from a Hugging Face config.json.
// Why: the model builders need sizes (vocabulary, width C, layers, heads, KV heads) and a few
// switches (RoPE base, norm epsilon, tied embeddings, attention bias) and these are spelled
// differently across model types (GPT-2's n_embd / n_layer / n_head) and transformers versions
// (4.x writes rope_theta at the top level, 5.x under rope_parameters, older files rope_scaling with
// "type" instead of "rope_type"). One reader normalises them; every error names the file and the field.
// RoPE scaling types read: default, linear, dynamic (NTK), llama3 (Llama 3.1 / 3.2) and yarn, with
// the parameters transformers reads for each (nn/rotary.hpp computes the frequencies); Mistral's
// sliding_window (Qwen2's only when use_sliding_window is true) is kept for attention.
#pragma once
#include <unistd.h>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "deviant/core/error.hpp"

namespace deviant::io {

// llama covers llama, mistral and qwen2 (pre-norm RMSNorm, RoPE, SwiGLU MLP, grouped KV heads);
// gpt2 is the learned-position, LayerNorm, GELU architecture.
enum class ModelFamily : std::uint8_t { llama, gpt2 };

// RoPE scaling parameters (rope_scaling / rope_parameters), named as in config.json. Which of them
// a type reads: linear and dynamic: factor; llama3: factor, low_freq_factor, high_freq_factor,
// original_max_position_embeddings; yarn: factor, original_max_position_embeddings,
// attention_factor or mscale / mscale_all_dim, beta_fast, beta_slow, truncate.
struct RopeScaling {
    std::string type = "default";                    // default | linear | dynamic | llama3 | yarn
    double factor = 1.0;
    double low_freq_factor = 1.0;
    double high_freq_factor = 4.0;
    std::int64_t original_max_position_embeddings = 0;  // 0: max_position_embeddings
    std::optional<double> attention_factor;          // yarn: scale of cos / sin (derived when absent)
    std::optional<double> mscale, mscale_all_dim;    // yarn
    double beta_fast = 32.0, beta_slow = 1.0;        // yarn
    bool truncate = true;                            // yarn: integer correction range
    std::vector<double> frequency_divisors;          // GGUF rope_freqs: inv_freq[i] /= divisors[i] (any type)
};

// Model types beyond the built-in ones, registered by user code (models/registered_family.hpp
// register_model_family): model_type -> the built-in family whose config.json fields it reads.
inline std::map<std::string, ModelFamily>& registered_model_types() {
    static std::map<std::string, ModelFamily> types;
    return types;
}

// The model types load_model_config accepts, for error messages: built-in, then registered.
inline std::string supported_model_types() {
    std::string s = "llama, mistral, qwen2, gpt2";
    for (const auto& [name, family] : registered_model_types()) s += ", " + name;
    return s;
}

inline constexpr std::string_view kSupportedRopeTypes = "default, linear, dynamic, llama3, yarn";
inline bool is_supported_rope_type(std::string_view t) {
    return t == "default" || t == "linear" || t == "dynamic" || t == "llama3" || t == "yarn";
}

struct ModelConfig {
    std::filesystem::path source;  // the config.json read
    std::string model_type;        // as written: "llama", "mistral", "qwen2", "gpt2"
    ModelFamily family = ModelFamily::llama;
    std::int64_t vocab_size = 0;
    std::int64_t hidden_size = 0;              // C
    std::int64_t intermediate_size = 0;        // MLP inner width
    std::int64_t num_hidden_layers = 0;
    std::int64_t num_attention_heads = 0;
    std::int64_t num_key_value_heads = 0;      // = num_attention_heads without grouped-query attention
    std::int64_t head_dim = 0;                 // usually hidden_size / num_attention_heads
    std::int64_t max_position_embeddings = 0;
    double norm_eps = 1e-5;                    // rms_norm_eps (llama) or layer_norm_epsilon (gpt2)
    double rope_theta = 10000.0;               // RoPE base (llama family)
    std::string rope_type = "default";         // rope_scaling / rope_parameters type; "default" = plain RoPE
    RopeScaling rope;                          // its parameters (rope.type == rope_type)
    std::int64_t sliding_window = 0;           // attention sees the last `sliding_window` tokens; 0 = all
    bool tie_word_embeddings = false;
    std::string hidden_act;                    // "silu", "gelu_new", ...
    bool attention_bias = false;               // q/k/v (and for gpt2 every) projection has a bias
    bool mlp_bias = false;
    std::vector<std::int64_t> bos_token_ids;   // empty when the config gives none
    std::vector<std::int64_t> eos_token_ids;
    std::string dtype;                         // "torch_dtype" (4.x) or "dtype" (5.x); empty when absent

    bool is_llama_family() const { return family == ModelFamily::llama; }

    // Parameter count the config describes (embeddings, head when untied, attention, MLP, norms,
    // biases), computed before anything is allocated; as a double, so that absurd configs cannot
    // overflow it.
    double estimated_parameters() const {
        const double C = double(hidden_size), I = double(intermediate_size), V = double(vocab_size), L = double(num_hidden_layers);
        const double q = double(num_attention_heads) * double(head_dim), kv = double(num_key_value_heads) * double(head_dim);
        double layer = 0, total = V * C * (tie_word_embeddings ? 1 : 2) + 2 * C;
        if (is_llama_family()) {
            layer = C * q + 2 * C * kv + q * C + 3 * C * I + 2 * C;
            if (attention_bias) layer += q + 2 * kv;
            if (mlp_bias) layer += 2 * I + C;
        } else {
            layer = 4 * C * C + 4 * C + 2 * C * I + I + C + 4 * C;
            total += double(max_position_embeddings) * C;
        }
        return total + L * layer;
    }
};

// Physical memory of this machine in bytes (0 when unknown).
inline double physical_memory_bytes() {
    const long pages = ::sysconf(_SC_PHYS_PAGES), size = ::sysconf(_SC_PAGE_SIZE);
    return pages > 0 && size > 0 ? double(pages) * double(size) : 0.0;
}

// Refuses, before allocating, a model whose `copies` x weights of `bytes_per_value` bytes exceed
// the machine's memory, naming the config's sizes and what to change.
inline void require_fits_in_memory(const ModelConfig& c, double bytes_per_value, double copies, const char* what) {
    const double need = c.estimated_parameters() * bytes_per_value * copies, have = physical_memory_bytes();
    if (have <= 0 || need <= have) return;
    fail("{}: {} needs about {:.1f} GiB ({:.3g} parameters: {} layers, hidden size {}, vocabulary {}), more than this machine's {:.1f} GiB; "
         "use a smaller model, --dtype bfloat16, or LoRA (--lora)",
         c.source.string(), what, need / double(1ull << 30), c.estimated_parameters(), c.num_hidden_layers, c.hidden_size, c.vocab_size,
         have / double(1ull << 30));
}

namespace detail {

// Field access on a parsed config with errors that name the file and the field.
class ConfigFields {
public:
    ConfigFields(const nlohmann::json& j, std::string file) : j_(j), file_(std::move(file)) {}

    // The first present, non-null field among `names` (nullptr when none), and its name.
    const nlohmann::json* find(std::initializer_list<const char*> names, std::string* found = nullptr) const {
        for (const char* n : names) {
            auto it = j_.find(n);
            if (it != j_.end() && !it->is_null()) {
                if (found) *found = n;
                return &*it;
            }
        }
        return nullptr;
    }

    std::int64_t required_int(std::initializer_list<const char*> names) const {
        std::string name;
        const nlohmann::json* v = find(names, &name);
        DEVIANT_REQUIRE(v != nullptr, "{}: missing required field {}", file_, alternatives(names));
        return as_int(*v, name);
    }
    std::optional<std::int64_t> optional_int(std::initializer_list<const char*> names) const {
        std::string name;
        const nlohmann::json* v = find(names, &name);
        if (!v) return std::nullopt;
        return as_int(*v, name);
    }
    double number(std::initializer_list<const char*> names, double fallback) const {
        std::string name;
        const nlohmann::json* v = find(names, &name);
        if (!v) return fallback;
        DEVIANT_REQUIRE(v->is_number(), "{}: field '{}' must be a number, got {}", file_, name, v->type_name());
        return v->get<double>();
    }
    bool boolean(const char* name, bool fallback) const {
        const nlohmann::json* v = find({name});
        if (!v) return fallback;
        DEVIANT_REQUIRE(v->is_boolean(), "{}: field '{}' must be true or false, got {}", file_, name, v->type_name());
        return v->get<bool>();
    }
    std::string string(std::initializer_list<const char*> names, std::string fallback) const {
        std::string name;
        const nlohmann::json* v = find(names, &name);
        if (!v) return fallback;
        DEVIANT_REQUIRE(v->is_string(), "{}: field '{}' must be a string, got {}", file_, name, v->type_name());
        return v->get<std::string>();
    }
    // A token id given as an integer or a list of integers (null or absent: none).
    std::vector<std::int64_t> token_ids(const char* name) const {
        const nlohmann::json* v = find({name});
        if (!v) return {};
        if (!v->is_array()) return {as_int(*v, name)};
        std::vector<std::int64_t> out;
        for (const auto& e : *v) out.push_back(as_int(e, name));
        return out;
    }
    const std::string& file() const { return file_; }

private:
    std::int64_t as_int(const nlohmann::json& v, const std::string& name) const {
        DEVIANT_REQUIRE(v.is_number_integer(), "{}: field '{}' must be an integer, got {} {}", file_, name, v.type_name(),
                        v.dump());
        if (v.is_number_unsigned())
            DEVIANT_REQUIRE(v.get<std::uint64_t>() <= std::uint64_t(INT64_MAX), "{}: field '{}' value {} is too large",
                            file_, name, v.dump());
        return v.get<std::int64_t>();
    }
    static std::string alternatives(std::initializer_list<const char*> names) {
        std::string s;
        for (const char* n : names) s += (s.empty() ? "'" : " or '") + std::string(n) + "'";
        return s;
    }
    const nlohmann::json& j_;
    std::string file_;
};

}  // namespace detail

namespace detail {
// The JSON object of `dir_or_file` (a model directory holding config.json, or the file itself) and
// the file's path; errors name the file.
inline std::pair<std::filesystem::path, nlohmann::json> read_config_json(const std::filesystem::path& dir_or_file) {
    std::filesystem::path path = dir_or_file;
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) path /= "config.json";
    const std::string file = path.string();
    std::ifstream in(path, std::ios::binary);
    DEVIANT_REQUIRE(in.good(), "{}: cannot open the model config", file);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        fail("{}: not valid JSON: {}", file, e.what());
    }
    DEVIANT_REQUIRE(j.is_object(), "{}: config must be a JSON object, got {}", file, j.type_name());
    return {path, std::move(j)};
}
}  // namespace detail

// Reads `dir_or_file` (a model directory holding config.json, or the file itself).
inline ModelConfig load_model_config(const std::filesystem::path& dir_or_file) {
    const auto [path, j] = detail::read_config_json(dir_or_file);
    const std::string file = path.string();
    detail::ConfigFields f(j, file);

    ModelConfig c;
    c.source = path;
    DEVIANT_REQUIRE(f.find({"model_type"}) != nullptr, "{}: missing required field 'model_type'", file);
    c.model_type = f.string({"model_type"}, "");
    if (c.model_type == "llama" || c.model_type == "mistral" || c.model_type == "qwen2") {
        c.family = ModelFamily::llama;
    } else if (c.model_type == "gpt2") {
        c.family = ModelFamily::gpt2;
    } else if (auto it = registered_model_types().find(c.model_type); it != registered_model_types().end()) {
        c.family = it->second;
    } else {
        fail("{}: field 'model_type' is '{}', which is not supported (supported: {})", file, c.model_type, supported_model_types());
    }
    const bool gpt2 = c.family == ModelFamily::gpt2;

    c.vocab_size = f.required_int({"vocab_size"});
    if (gpt2) {
        c.hidden_size = f.required_int({"n_embd", "hidden_size"});
        c.num_hidden_layers = f.required_int({"n_layer", "num_hidden_layers"});
        c.num_attention_heads = f.required_int({"n_head", "num_attention_heads"});
        c.intermediate_size = f.optional_int({"n_inner", "intermediate_size"}).value_or(4 * c.hidden_size);
        c.num_key_value_heads = c.num_attention_heads;
        c.max_position_embeddings = f.optional_int({"n_positions", "max_position_embeddings"}).value_or(1024);
        c.norm_eps = f.number({"layer_norm_epsilon"}, 1e-5);
        c.hidden_act = f.string({"activation_function"}, "gelu_new");
        c.tie_word_embeddings = f.boolean("tie_word_embeddings", true);
        c.attention_bias = true;
        c.mlp_bias = true;
    } else {
        c.hidden_size = f.required_int({"hidden_size"});
        c.num_hidden_layers = f.required_int({"num_hidden_layers"});
        c.num_attention_heads = f.required_int({"num_attention_heads"});
        c.intermediate_size = f.required_int({"intermediate_size"});
        c.num_key_value_heads = f.optional_int({"num_key_value_heads"}).value_or(c.num_attention_heads);
        c.max_position_embeddings = f.optional_int({"max_position_embeddings"}).value_or(2048);
        c.norm_eps = f.number({"rms_norm_eps"}, 1e-6);
        c.hidden_act = f.string({"hidden_act"}, "silu");
        c.tie_word_embeddings = f.boolean("tie_word_embeddings", false);
        // qwen2 always has q/k/v biases and writes no attention_bias field.
        c.attention_bias = c.model_type == "qwen2" ? true : f.boolean("attention_bias", false);
        c.mlp_bias = f.boolean("mlp_bias", false);

        // RoPE: transformers 4.x writes rope_theta (and rope_scaling) at the top level, 5.x nests both in rope_parameters.
        c.rope_theta = f.number({"rope_theta"}, 10000.0);
        c.rope.original_max_position_embeddings = f.optional_int({"original_max_position_embeddings"}).value_or(0);
        for (const char* block : {"rope_scaling", "rope_parameters"}) {
            const nlohmann::json* r = f.find({block});
            if (!r) continue;
            DEVIANT_REQUIRE(r->is_object(), "{}: field '{}' must be an object, got {}", file, block, r->type_name());
            detail::ConfigFields rf(*r, fmt::format("{}: field '{}'", file, block));
            c.rope_theta = rf.number({"rope_theta"}, c.rope_theta);
            c.rope_type = rf.string({"rope_type", "type"}, c.rope_type);
            DEVIANT_REQUIRE(is_supported_rope_type(c.rope_type), "{}: field '{}.rope_type' is '{}', which is not supported (supported: {})",
                            file, block, c.rope_type, kSupportedRopeTypes);
            RopeScaling& rs = c.rope;
            rs.factor = rf.number({"factor"}, rs.factor);
            rs.low_freq_factor = rf.number({"low_freq_factor"}, rs.low_freq_factor);
            rs.high_freq_factor = rf.number({"high_freq_factor"}, rs.high_freq_factor);
            if (!c.rope.original_max_position_embeddings)
                rs.original_max_position_embeddings = rf.optional_int({"original_max_position_embeddings"}).value_or(0);
            if (rf.find({"attention_factor"})) rs.attention_factor = rf.number({"attention_factor"}, 1.0);
            if (rf.find({"mscale"})) rs.mscale = rf.number({"mscale"}, 1.0);
            if (rf.find({"mscale_all_dim"})) rs.mscale_all_dim = rf.number({"mscale_all_dim"}, 1.0);
            rs.beta_fast = rf.number({"beta_fast"}, rs.beta_fast);
            rs.beta_slow = rf.number({"beta_slow"}, rs.beta_slow);
            rs.truncate = rf.boolean("truncate", rs.truncate);
            const double partial = rf.number({"partial_rotary_factor"}, 1.0);
            DEVIANT_REQUIRE(partial == 1.0, "{}: field '{}.partial_rotary_factor' is {}; only full rotary embeddings (1.0) are supported",
                            file, block, partial);
            const bool needs_factor = c.rope_type != "default";
            DEVIANT_REQUIRE(!needs_factor || (std::isfinite(rs.factor) && rs.factor > 0), "{}: field '{}.factor' must be positive for rope type '{}', got {}",
                            file, block, c.rope_type, rs.factor);
            if (c.rope_type == "llama3")
                DEVIANT_REQUIRE(rs.high_freq_factor > rs.low_freq_factor && rs.low_freq_factor > 0,
                                "{}: field '{}': llama3 RoPE needs 0 < low_freq_factor < high_freq_factor, got {} and {}", file, block,
                                rs.low_freq_factor, rs.high_freq_factor);
        }
        c.rope.type = c.rope_type;
        DEVIANT_REQUIRE(f.number({"partial_rotary_factor"}, 1.0) == 1.0,
                        "{}: field 'partial_rotary_factor' must be 1.0 (only full rotary embeddings are supported)", file);
        // Mistral: sliding_window (null = none); Qwen2 writes one but uses it only with use_sliding_window.
        if (c.model_type != "qwen2" || f.boolean("use_sliding_window", false))
            c.sliding_window = f.optional_int({"sliding_window"}).value_or(0);
    }
    std::optional<std::int64_t> head_dim = f.optional_int({"head_dim"});
    c.bos_token_ids = f.token_ids("bos_token_id");
    c.eos_token_ids = f.token_ids("eos_token_id");
    c.dtype = f.string({"dtype", "torch_dtype"}, "");

    auto positive = [&](std::int64_t v, const char* name) {
        DEVIANT_REQUIRE(v > 0, "{}: field '{}' must be positive, got {}", file, name, v);
    };
    positive(c.vocab_size, "vocab_size");
    positive(c.hidden_size, gpt2 ? "n_embd" : "hidden_size");
    positive(c.intermediate_size, gpt2 ? "n_inner" : "intermediate_size");
    positive(c.num_hidden_layers, gpt2 ? "n_layer" : "num_hidden_layers");
    positive(c.num_attention_heads, gpt2 ? "n_head" : "num_attention_heads");
    positive(c.num_key_value_heads, "num_key_value_heads");
    positive(c.max_position_embeddings, gpt2 ? "n_positions" : "max_position_embeddings");
    DEVIANT_REQUIRE(c.num_attention_heads % c.num_key_value_heads == 0,
                    "{}: field 'num_key_value_heads' ({}) must divide num_attention_heads ({})", file, c.num_key_value_heads,
                    c.num_attention_heads);
    if (head_dim) {
        positive(*head_dim, "head_dim");
        c.head_dim = *head_dim;
    } else {
        DEVIANT_REQUIRE(c.hidden_size % c.num_attention_heads == 0,
                        "{}: hidden size {} is not divisible by the {} attention heads (and no 'head_dim' field is given)",
                        file, c.hidden_size, c.num_attention_heads);
        c.head_dim = c.hidden_size / c.num_attention_heads;
    }
    DEVIANT_REQUIRE(c.norm_eps > 0, "{}: norm epsilon must be positive, got {}", file, c.norm_eps);
    DEVIANT_REQUIRE(c.rope_theta > 0, "{}: field 'rope_theta' must be positive, got {}", file, c.rope_theta);
    DEVIANT_REQUIRE(c.sliding_window >= 0, "{}: field 'sliding_window' must be positive or null, got {}", file, c.sliding_window);
    if (!c.rope.original_max_position_embeddings) c.rope.original_max_position_embeddings = c.max_position_embeddings;
    return c;
}

// Hugging Face config.json text for a llama-family configuration (what a GGUF-started run saves
// beside its safetensors weights, so that the result loads like any checkpoint directory; the
// inverse of load_model_config for the llama and qwen2 types).
inline std::string llama_config_json(const ModelConfig& c) {
    DEVIANT_REQUIRE(c.rope.frequency_divisors.empty(),
                    "{}: the RoPE frequency divisors of this model (rope_freqs) match no scaling type config.json can state", c.source.string());
    const bool qwen2 = c.model_type == "qwen2";
    nlohmann::json j{{"architectures", {qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM"}},
                     {"model_type", qwen2 ? "qwen2" : "llama"},
                     {"vocab_size", c.vocab_size},
                     {"hidden_size", c.hidden_size},
                     {"intermediate_size", c.intermediate_size},
                     {"num_hidden_layers", c.num_hidden_layers},
                     {"num_attention_heads", c.num_attention_heads},
                     {"num_key_value_heads", c.num_key_value_heads},
                     {"head_dim", c.head_dim},
                     {"max_position_embeddings", c.max_position_embeddings},
                     {"rms_norm_eps", c.norm_eps},
                     {"rope_theta", c.rope_theta},
                     {"hidden_act", c.hidden_act.empty() ? "silu" : c.hidden_act},
                     {"tie_word_embeddings", c.tie_word_embeddings},
                     {"attention_bias", c.attention_bias},
                     {"mlp_bias", c.mlp_bias},
                     {"torch_dtype", "float32"}};
    if (c.rope_type != "default" && !c.rope_type.empty()) {
        nlohmann::json r{{"rope_type", c.rope_type}, {"factor", c.rope.factor}};
        if (c.rope_type == "llama3" || c.rope_type == "yarn")
            r["original_max_position_embeddings"] = c.rope.original_max_position_embeddings;
        if (c.rope_type == "llama3") {
            r["low_freq_factor"] = c.rope.low_freq_factor;
            r["high_freq_factor"] = c.rope.high_freq_factor;
        }
        if (c.rope_type == "yarn") {
            if (c.rope.attention_factor) r["attention_factor"] = *c.rope.attention_factor;
            if (c.rope.mscale) r["mscale"] = *c.rope.mscale;
            if (c.rope.mscale_all_dim) r["mscale_all_dim"] = *c.rope.mscale_all_dim;
            r["beta_fast"] = c.rope.beta_fast;
            r["beta_slow"] = c.rope.beta_slow;
            r["truncate"] = c.rope.truncate;
        }
        j["rope_scaling"] = r;
    }
    if (c.sliding_window > 0) j["sliding_window"] = c.sliding_window;
    if (c.bos_token_ids.size() == 1) j["bos_token_id"] = c.bos_token_ids[0];
    if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
    return j.dump(2) + "\n";
}

}  // namespace deviant::io
