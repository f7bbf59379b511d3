// Hugging Face config.json reading: llama written by transformers 4.x (rope_theta at the top level)
// and 5.x (rope_parameters), qwen2's implicit q/k/v bias, GPT-2's own field names and defaults,
// and errors naming the file and the field.
#define BOOST_TEST_MODULE hf_config
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "deviant/io/hf_config.hpp"
#include "expect_error.hpp"

using namespace deviant;
using namespace deviant::io;
namespace fs = std::filesystem;

namespace {

struct ConfigDir {
    fs::path path;
    ConfigDir() {
        path = fs::temp_directory_path() / fmt::format("deviant_hf_config_{}", ::getpid());
        fs::create_directories(path);
    }
    ~ConfigDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    fs::path write(const std::string& json) const {
        std::ofstream(path / "config.json", std::ios::trunc) << json;
        return path / "config.json";
    }
};

template <class F>
void expect_error(F&& f, std::initializer_list<std::string> fragments) {
    BOOST_TEST(testing::throws_naming(std::forward<F>(f), fragments));
}

// A TinyLlama-shaped config as transformers 4.x writes it.
const char* llama4x = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "vocab_size": 32000, "hidden_size": 2048, "intermediate_size": 5632,
  "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4,
  "max_position_embeddings": 2048, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
  "rope_scaling": null, "tie_word_embeddings": false, "hidden_act": "silu",
  "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16", "transformers_version": "4.40.0"
})";

}  // namespace

BOOST_AUTO_TEST_CASE(llama_transformers_4x) {
    ConfigDir dir;
    dir.write(llama4x);
    ModelConfig c = load_model_config(dir.path);  // a directory: reads its config.json
    BOOST_TEST(c.model_type == "llama");
    BOOST_TEST(c.is_llama_family());
    BOOST_TEST(c.vocab_size == 32000);
    BOOST_TEST(c.hidden_size == 2048);
    BOOST_TEST(c.intermediate_size == 5632);
    BOOST_TEST(c.num_hidden_layers == 22);
    BOOST_TEST(c.num_attention_heads == 32);
    BOOST_TEST(c.num_key_value_heads == 4);
    BOOST_TEST(c.head_dim == 64);
    BOOST_TEST(c.max_position_embeddings == 2048);
    BOOST_TEST(c.norm_eps == 1e-5);
    BOOST_TEST(c.rope_theta == 500000.0);
    BOOST_TEST(c.rope_type == "default");
    BOOST_TEST(!c.tie_word_embeddings);
    BOOST_TEST(c.hidden_act == "silu");
    BOOST_TEST(!c.attention_bias);
    BOOST_TEST(c.bos_token_ids == std::vector<std::int64_t>{1}, boost::test_tools::per_element());
    BOOST_TEST(c.eos_token_ids == std::vector<std::int64_t>{2}, boost::test_tools::per_element());
    BOOST_TEST(c.dtype == "bfloat16");
    BOOST_TEST(c.source == dir.path / "config.json");
}

BOOST_AUTO_TEST_CASE(llama_transformers_5x_rope_parameters_and_token_lists) {
    ConfigDir dir;
    auto file = dir.write(R"({
      "model_type": "llama", "vocab_size": 128256, "hidden_size": 3072, "intermediate_size": 8192,
      "num_hidden_layers": 28, "num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128,
      "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "tie_word_embeddings": true,
      "rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3", "factor": 32.0},
      "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "dtype": "bfloat16",
      "attention_bias": false, "mlp_bias": false
    })");
    ModelConfig c = load_model_config(file);
    BOOST_TEST(c.rope_theta == 500000.0);
    BOOST_TEST(c.rope_type == "llama3");
    BOOST_TEST(c.head_dim == 128);  // given explicitly, not hidden / heads (= 128 here too, checked below)
    BOOST_TEST(c.tie_word_embeddings);
    BOOST_TEST(c.eos_token_ids == (std::vector<std::int64_t>{128001, 128008, 128009}), boost::test_tools::per_element());
    BOOST_TEST(c.dtype == "bfloat16");

    // head_dim that differs from hidden / heads (as in some Qwen3 / Gemma configs) is kept.
    dir.write(R"({"model_type": "mistral", "vocab_size": 10, "hidden_size": 64, "intermediate_size": 128,
                  "num_hidden_layers": 2, "num_attention_heads": 4, "head_dim": 32})");
    ModelConfig m = load_model_config(dir.path);
    BOOST_TEST(m.head_dim == 32);
    BOOST_TEST(m.num_key_value_heads == 4);  // defaults to the head count
    BOOST_TEST(m.rope_theta == 10000.0);     // default when neither form is present
    BOOST_TEST(m.norm_eps == 1e-6);
    BOOST_TEST(m.max_position_embeddings == 2048);
    BOOST_TEST(m.bos_token_ids.empty());
}

BOOST_AUTO_TEST_CASE(qwen2_has_qkv_bias) {
    ConfigDir dir;
    dir.write(R"({"model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
                  "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
                  "rope_theta": 1000000.0, "rms_norm_eps": 1e-06, "tie_word_embeddings": true,
                  "bos_token_id": 151643, "eos_token_id": 151645, "sliding_window": null})");
    ModelConfig c = load_model_config(dir.path);
    BOOST_TEST(c.is_llama_family());
    BOOST_TEST(c.attention_bias);
    BOOST_TEST(!c.mlp_bias);
    BOOST_TEST(c.head_dim == 64);
    BOOST_TEST(c.rope_theta == 1000000.0);
    BOOST_TEST(c.tie_word_embeddings);
}

BOOST_AUTO_TEST_CASE(gpt2_field_names_and_defaults) {
    ConfigDir dir;
    dir.write(R"({"model_type": "gpt2", "vocab_size": 50257, "n_embd": 768, "n_layer": 12, "n_head": 12,
                  "n_positions": 1024, "n_inner": null, "layer_norm_epsilon": 1e-05,
                  "activation_function": "gelu_new", "bos_token_id": 50256, "eos_token_id": 50256})");
    ModelConfig c = load_model_config(dir.path);
    BOOST_TEST((c.family == ModelFamily::gpt2));
    BOOST_TEST(c.hidden_size == 768);
    BOOST_TEST(c.intermediate_size == 4 * 768);  // n_inner null: 4 * n_embd
    BOOST_TEST(c.num_hidden_layers == 12);
    BOOST_TEST(c.num_attention_heads == 12);
    BOOST_TEST(c.num_key_value_heads == 12);
    BOOST_TEST(c.head_dim == 64);
    BOOST_TEST(c.max_position_embeddings == 1024);
    BOOST_TEST(c.norm_eps == 1e-5);
    BOOST_TEST(c.hidden_act == "gelu_new");
    BOOST_TEST(c.tie_word_embeddings);  // GPT-2 ties by default
    BOOST_TEST(c.attention_bias);

    dir.write(R"({"model_type": "gpt2", "vocab_size": 100, "n_embd": 32, "n_layer": 2, "n_head": 4, "n_inner": 80,
                  "tie_word_embeddings": false})");
    ModelConfig small = load_model_config(dir.path);
    BOOST_TEST(small.intermediate_size == 80);
    BOOST_TEST(!small.tie_word_embeddings);
    BOOST_TEST(small.max_position_embeddings == 1024);
}

BOOST_AUTO_TEST_CASE(errors_name_file_and_field) {
    ConfigDir dir;
    const std::string file = (dir.path / "config.json").string();
    dir.write(R"({"model_type": "llama", "vocab_size": 10, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2})");
    expect_error([&] { load_model_config(dir.path); }, {file, "'hidden_size'", "missing"});
    dir.write(R"({"model_type": "gpt2", "vocab_size": 10, "n_layer": 1, "n_head": 2})");
    expect_error([&] { load_model_config(dir.path); }, {file, "'n_embd'"});
    dir.write(R"({"model_type": "bert", "vocab_size": 10})");
    expect_error([&] { load_model_config(dir.path); }, {file, "'model_type'", "bert", "not supported"});
    dir.write(R"({"vocab_size": 10})");
    expect_error([&] { load_model_config(dir.path); }, {file, "'model_type'", "missing"});
    dir.write(R"({"model_type": "llama", "vocab_size": "32000", "hidden_size": 8, "intermediate_size": 8,
                  "num_hidden_layers": 1, "num_attention_heads": 2})");
    expect_error([&] { load_model_config(dir.path); }, {file, "'vocab_size'", "integer", "string"});
    dir.write(R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
                  "num_hidden_layers": 1, "num_attention_heads": 2, "tie_word_embeddings": "yes"})");
    expect_error([&] { load_model_config(dir.path); }, {file, "'tie_word_embeddings'"});
    dir.write(R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
                  "num_hidden_layers": 1, "num_attention_heads": 2, "rope_parameters": {"rope_theta": "big"}})");
    expect_error([&] { load_model_config(dir.path); }, {file, "rope_parameters", "'rope_theta'"});
    dir.write(R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
                  "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 3})");
    expect_error([&] { load_model_config(dir.path); }, {file, "'num_key_value_heads'"});
    dir.write(R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 10, "intermediate_size": 8,
                  "num_hidden_layers": 1, "num_attention_heads": 4})");
    expect_error([&] { load_model_config(dir.path); }, {file, "divisible", "head_dim"});
    dir.write(R"({"model_type": "llama", "vocab_size": 0, "hidden_size": 8, "intermediate_size": 8,
                  "num_hidden_layers": 1, "num_attention_heads": 2})");
    expect_error([&] { load_model_config(dir.path); }, {file, "'vocab_size'", "positive"});
    dir.write(R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
                  "num_hidden_layers": 1, "num_attention_heads": 2, "eos_token_id": [1, "x"]})");
    expect_error([&] { load_model_config(dir.path); }, {file, "'eos_token_id'"});
    dir.write("{ \"model_type\": ");
    expect_error([&] { load_model_config(dir.path); }, {file, "not valid JSON"});
    dir.write("[]");
    expect_error([&] { load_model_config(dir.path); }, {file, "JSON object"});
    expect_error([&] { load_model_config(dir.path / "absent"); }, {"absent", "cannot open"});
}
