// deviant/models/families.hpp — the Llama and GPT-2 families as type aliases over one layer set.
// Names structs spell each family's checkpoint tensor names (Hugging Face transformers layout).
#pragma once
#include "deviant/models/causal_lm.hpp"

namespace deviant {

struct LlamaNames {
    static constexpr std::string_view token_embedding = "model.embed_tokens.weight";
    static constexpr std::string_view position_embedding = "";
    static constexpr std::string_view layers = "model.layers";
    static constexpr std::string_view norm1 = "input_layernorm";
    static constexpr std::string_view attn = "self_attn";
    static constexpr std::string_view norm2 = "post_attention_layernorm";
    static constexpr std::string_view mlp = "mlp";
    static constexpr std::string_view attn_q = "q_proj", attn_k = "k_proj", attn_v = "v_proj", attn_o = "o_proj";
    static constexpr std::string_view mlp_gate = "gate_proj", mlp_up = "up_proj", mlp_down = "down_proj";
    static constexpr std::string_view final_norm = "model.norm";
    static constexpr std::string_view lm_head = "lm_head.weight";
};

struct Gpt2Names {
    static constexpr std::string_view token_embedding = "transformer.wte.weight";
    static constexpr std::string_view position_embedding = "transformer.wpe.weight";
    static constexpr std::string_view layers = "transformer.h";
    static constexpr std::string_view norm1 = "ln_1";
    static constexpr std::string_view attn = "attn";
    static constexpr std::string_view norm2 = "ln_2";
    static constexpr std::string_view mlp = "mlp";
    static constexpr std::string_view attn_qkv = "c_attn", attn_o = "c_proj";
    static constexpr std::string_view mlp_fc = "c_fc", mlp_proj = "c_proj";
    static constexpr std::string_view final_norm = "transformer.ln_f";
    static constexpr std::string_view lm_head = "lm_head.weight";
};

using LlamaArchitecture =
    DecoderOnly<LlamaNames, nn::NoPositionEmbedding,
                nn::PreNormBlock<LlamaNames, nn::RmsNorm, nn::SelfAttention<nn::SeparateQkv<LlamaNames>, nn::RotaryPositions>,
                                 nn::SwiGlu<LlamaNames>>,
                nn::RmsNorm>;

using Gpt2Architecture =
    DecoderOnly<Gpt2Names, nn::LearnedPositionEmbedding,
                nn::PreNormBlock<Gpt2Names, nn::LayerNorm, nn::SelfAttention<nn::FusedQkv<Gpt2Names>, nn::NoRotary>,
                                 nn::GeluMlp<Gpt2Names>>,
                nn::LayerNorm>;

using Llama = CausalLm<LlamaArchitecture>;
using Gpt2 = CausalLm<Gpt2Architecture>;

}  // namespace deviant
