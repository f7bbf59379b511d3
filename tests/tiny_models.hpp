// tests/tiny_models.hpp — the small model configurations the model, LoRA and batching tests
// build on: Llama with grouped-query heads (4 query / 2 key-value) and RoPE, or GPT-2 with a
// tied head and biases; sizes small enough for finite differences over every parameter.
#pragma once
#include "deviant/io/hf_config.hpp"

namespace deviant::testing {

inline io::ModelConfig tiny_config(io::ModelFamily family, std::int64_t vocab_size = 11, std::int64_t max_positions = 16) {
    io::ModelConfig c;
    bool gpt2 = family == io::ModelFamily::gpt2;
    c.family = family;
    c.model_type = gpt2 ? "gpt2" : "llama";
    c.vocab_size = vocab_size;
    c.hidden_size = 8;
    c.intermediate_size = 12;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = gpt2 ? 4 : 2;
    c.head_dim = 2;
    c.max_position_embeddings = max_positions;
    c.norm_eps = 1e-5;
    c.rope_theta = 100.0;
    c.tie_word_embeddings = gpt2;
    c.attention_bias = gpt2;
    return c;
}

}  // namespace deviant::testing
