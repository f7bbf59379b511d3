// deviant/nn/layers.hpp — the transformer layer set. Each layer is a small type with
//   template <class Names> void bind(ParameterStore&, const std::string& prefix, const ModelConfig&)
//   Var forward(Tape&, Var x, const ForwardContext&) const
// `bind` takes the parameters under the checkpoint's own names (Names supplies the family's
// spelling); `forward` records ops on the tape. Families (models/families.hpp) compose them.
// Layers holding projections also have for_each_projection(f), calling f(module_path, proj)
// for each Linear / Conv1D inside (how nn/lora.hpp finds the projections to adapt).
//   Linear            y = x W^T (+ b), W (out, in)           — Hugging Face nn.Linear
//   Conv1D            y = x W + b,     W (in, out)           — GPT-2's transposed storage
//   RmsNorm           y = x / sqrt(mean(x^2) + eps) * w          (fused op, ops/norm.hpp)
//   LayerNorm         y = (x - mean) / sqrt(var + eps) * w + b   (fused op, ops/norm.hpp)
//   SwiGlu            down(silu(gate(x)) * up(x))
//   GeluMlp           proj(gelu_tanh(fc(x)))   (Conv1D projections)
//   SelfAttention<Qkv, Positions>  causal multi-head attention with grouped key/value heads
#pragma once
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <utility>

#include "deviant/nn/context.hpp"
#include "deviant/nn/parameter_store.hpp"
#include "deviant/ops/attention.hpp"
#include "deviant/ops/elementwise.hpp"
#include "deviant/ops/index.hpp"
#include "deviant/ops/matmul.hpp"
#include "deviant/ops/norm.hpp"
#include "deviant/ops/quantized_matmul.hpp"
#include "deviant/ops/reduce.hpp"
#include "deviant/ops/rope.hpp"
#include "deviant/ops/shape.hpp"
#include "deviant/ops/softmax.hpp"

namespace deviant::nn {

inline std::string join(const std::string& a, std::string_view b) { return a.empty() ? std::string(b) : a + "." + std::string(b); }

// --- projections ---
// A low-rank update that nn/lora.hpp attaches to a projection: while *enabled, the projection
// adds scaling * (x A^T) B^T to its output. The adapter is owned by nn::LoraAdapters.
struct LowRankAdapter {
    Parameter* a = nullptr;  // (r, in)
    Parameter* b = nullptr;  // (out, r)
    double scaling = 1.0;
    const bool* enabled = nullptr;
    bool active() const { return *enabled; }
    // y + scaling * (x A^T) B^T for a projection that computed y itself.
    Var apply(Tape& t, Var x, Var y) const {
        if (!*enabled) return y;
        return y + scale(linear(linear(x, t.param(*a)), t.param(*b)), scaling);
    }
    // x W^T plus the update for an (out, in) weight W, as one tape node (lora_linear, ops/matmul.hpp).
    Var linear_with(Tape& t, Var x, Var w, Var bias = {}) const { return lora_linear(x, w, t.param(*a), t.param(*b), scaling, bias); }
};

struct Linear {
    Parameter* weight = nullptr;  // (out, in)
    Parameter* bias = nullptr;    // (out,) or none
    std::string module;           // checkpoint module path, e.g. "model.layers.0.self_attn.q_proj"
    const LowRankAdapter* adapter = nullptr;
    // The weight as the GGUF file's blocks, for decoding (models/load.hpp pack_for_decoding, which
    // freezes the weight): used when nothing is recorded for backward and x has at most
    // skinny_max_rows rows; it holds the same values as `weight`.
    std::shared_ptr<const ops::QuantizedMatrix> packed;
    void bind(ParameterStore& s, const std::string& prefix, std::int64_t in, std::int64_t out, bool with_bias) {
        module = prefix;
        weight = &s.get(join(prefix, "weight"), {out, in});
        bias = with_bias ? &s.get(join(prefix, "bias"), {out}, Init::zeros) : nullptr;
    }
    Var forward(Tape& t, Var x) const {
        const bool quantized = packed && !grad_enabled() && x.value().device() == Device::cpu && !weight->trainable &&
                               x.value().numel() <= ops::detail::skinny_max_rows * packed->cols;
        if (adapter && adapter->active() && !quantized && x.value().rank() >= 2) {  // one node: base and update
            return adapter->linear_with(t, x, t.param(*weight), bias ? t.param(*bias) : Var{});
        }
        Var y;
        if (quantized) {
            y = t.constant(ops::quantized_linear(x.value(), *packed).to(x.value().dtype()));
            if (bias) y = y + t.param(*bias);
        } else {
            y = linear(x, t.param(*weight), bias ? t.param(*bias) : Var{});  // the bias added in place, one node
        }
        return adapter ? adapter->apply(t, x, y) : y;
    }
    template <class F>
    void for_each_projection(F&& f) { f(std::as_const(module), *this); }
};

struct Conv1D {
    Parameter* weight = nullptr;  // (in, out)
    Parameter* bias = nullptr;    // (out,)
    std::string module;           // checkpoint module path, e.g. "transformer.h.0.attn.c_attn"
    const LowRankAdapter* adapter = nullptr;
    void bind(ParameterStore& s, const std::string& prefix, std::int64_t in, std::int64_t out) {
        module = prefix;
        weight = &s.get(join(prefix, "weight"), {in, out});
        bias = &s.get(join(prefix, "bias"), {out}, Init::zeros);
    }
    Var forward(Tape& t, Var x) const {
        Var y = matmul(x, t.param(*weight), t.param(*bias));
        return adapter ? adapter->apply(t, x, y) : y;
    }
    template <class F>
    void for_each_projection(F&& f) { f(std::as_const(module), *this); }
};

// --- norms ---
struct RmsNorm {
    Parameter* weight = nullptr;
    double eps = 1e-6;
    void bind(ParameterStore& s, const std::string& prefix, const ModelConfig& c) {
        weight = &s.get(join(prefix, "weight"), {c.hidden_size}, Init::ones);
        eps = c.norm_eps;
    }
    Var forward(Tape& t, Var x) const { return rms_norm(x, t.param(*weight), eps); }
};

struct LayerNorm {
    Parameter* weight = nullptr;
    Parameter* bias = nullptr;
    double eps = 1e-5;
    void bind(ParameterStore& s, const std::string& prefix, const ModelConfig& c) {
        weight = &s.get(join(prefix, "weight"), {c.hidden_size}, Init::ones);
        bias = &s.get(join(prefix, "bias"), {c.hidden_size}, Init::zeros);
        eps = c.norm_eps;
    }
    Var forward(Tape& t, Var x) const { return layer_norm(x, t.param(*weight), t.param(*bias), eps); }
};

// --- feed-forward ---
template <class Names>
struct SwiGlu {
    Linear gate, up, down;
    void bind(ParameterStore& s, const std::string& prefix, const ModelConfig& c) {
        gate.bind(s, join(prefix, Names::mlp_gate), c.hidden_size, c.intermediate_size, c.mlp_bias);
        up.bind(s, join(prefix, Names::mlp_up), c.hidden_size, c.intermediate_size, c.mlp_bias);
        down.bind(s, join(prefix, Names::mlp_down), c.intermediate_size, c.hidden_size, c.mlp_bias);
    }
    // silu(gate(x)) * up(x) as one node (swiglu): one pass, and silu(gate) is not kept for backward
    Var forward(Tape& t, Var x, const ForwardContext&) const { return down.forward(t, swiglu(gate.forward(t, x), up.forward(t, x))); }
    template <class F>
    void for_each_projection(F&& f) { gate.for_each_projection(f); up.for_each_projection(f); down.for_each_projection(f); }
};

template <class Names>
struct GeluMlp {
    Conv1D fc, proj;
    void bind(ParameterStore& s, const std::string& prefix, const ModelConfig& c) {
        fc.bind(s, join(prefix, Names::mlp_fc), c.hidden_size, c.intermediate_size);
        proj.bind(s, join(prefix, Names::mlp_proj), c.intermediate_size, c.hidden_size);
    }
    Var forward(Tape& t, Var x, const ForwardContext&) const {
        Var h = fc.forward(t, x);
        if (proj.adapter) return proj.forward(t, gelu_tanh(h));
        // GELU and the projection as one node: the (tokens, 4C) GELU output is recomputed in backward, not kept
        return activation_matmul(kernels::UnaryOp::gelu_tanh, h, t.param(*proj.weight), WeightLayout::in_out, t.param(*proj.bias));
    }
    template <class F>
    void for_each_projection(F&& f) { fc.for_each_projection(f); proj.for_each_projection(f); }
};

// --- query/key/value projections: each returns q (B, T, H*D), k and v (B, T, Hkv*D) ---
template <class Names>
struct SeparateQkv {
    Linear q, k, v, o;
    void bind(ParameterStore& s, const std::string& prefix, const ModelConfig& c) {
        std::int64_t qd = c.num_attention_heads * c.head_dim, kvd = c.num_key_value_heads * c.head_dim;
        q.bind(s, join(prefix, Names::attn_q), c.hidden_size, qd, c.attention_bias);
        k.bind(s, join(prefix, Names::attn_k), c.hidden_size, kvd, c.attention_bias);
        v.bind(s, join(prefix, Names::attn_v), c.hidden_size, kvd, c.attention_bias);
        o.bind(s, join(prefix, Names::attn_o), qd, c.hidden_size, (c.attention_bias && c.model_type != "qwen2"));
    }
    std::array<Var, 3> project(Tape& t, Var x, const ModelConfig&) const { return {q.forward(t, x), k.forward(t, x), v.forward(t, x)}; }
    Var output(Tape& t, Var x) const { return o.forward(t, x); }
    template <class F>
    void for_each_projection(F&& f) { q.for_each_projection(f); k.for_each_projection(f); v.for_each_projection(f); o.for_each_projection(f); }
};

template <class Names>
struct FusedQkv {
    Conv1D qkv, o;
    void bind(ParameterStore& s, const std::string& prefix, const ModelConfig& c) {
        DEVIANT_REQUIRE(c.num_key_value_heads == c.num_attention_heads, "fused qkv projection needs as many key/value heads as heads");
        qkv.bind(s, join(prefix, Names::attn_qkv), c.hidden_size, 3 * c.num_attention_heads * c.head_dim);
        o.bind(s, join(prefix, Names::attn_o), c.num_attention_heads * c.head_dim, c.hidden_size);
    }
    std::array<Var, 3> project(Tape& t, Var x, const ModelConfig& c) const {
        Var all = qkv.forward(t, x);
        std::int64_t d = c.num_attention_heads * c.head_dim;
        return {narrow(all, -1, 0, d), narrow(all, -1, d, d), narrow(all, -1, 2 * d, d)};
    }
    Var output(Tape& t, Var x) const { return o.forward(t, x); }
    template <class F>
    void for_each_projection(F&& f) { qkv.for_each_projection(f); o.for_each_projection(f); }
};

// --- position handling inside attention ---
struct RotaryPositions {
    static Var apply(Var x, const ForwardContext& ctx) { return rope(x, ctx.positions, ctx.rotary_inv_freq(), ctx.rotary_scaling()); }
};
struct NoRotary {
    static Var apply(Var x, const ForwardContext&) { return x; }
};

// Causal self-attention; x (B, T, C) -> (B, T, C). Heads: H query heads, Hkv key/value heads
// (H a multiple of Hkv), head size D. The attention itself is the fused op of ops/attention.hpp
// (it takes the context's segment ids, not the (T, T) mask).
template <class Qkv, class Positions>
struct SelfAttention {
    Qkv proj;
    void bind(ParameterStore& s, const std::string& prefix, const ModelConfig& c) {
        proj.bind(s, prefix, c);
    }
    Var forward(Tape& t, Var x, const ForwardContext& ctx) const {
        const ModelConfig& c = ctx.config;
        std::int64_t B = x.shape()[0], T = x.shape()[1], H = c.num_attention_heads, Hkv = c.num_key_value_heads, D = c.head_dim;
        auto [q, k, v] = proj.project(t, x, c);
        auto heads = [&](Var y, std::int64_t n) { return transpose(reshape(y, {B, T, n, D}), 1, 2); };  // (B, n, T, D)
        Var qh = Positions::apply(heads(q, H), ctx), kh = Positions::apply(heads(k, Hkv), ctx), vh = heads(v, Hkv);
        Var out;  // (B, H, T, D)
        if (ctx.kv_cache) {  // incremental decoding: new keys / values appended to the layer's cache, inference only
            DEVIANT_REQUIRE(ctx.layer >= 0 && ctx.layer < std::int64_t(ctx.kv_cache->layers.size()), "KV cache has no layer {}", ctx.layer);
            out = t.constant(ops::cached_attention(qh.value(), kh.value(), vh.value(), ctx.kv_cache->layers[std::size_t(ctx.layer)],
                                                   ctx.kv_cache->lengths, 1.0 / std::sqrt(double(D)), c.sliding_window));
        } else {
            // fused: grouped key/value heads by index, causal within segments, no (T, T) scores kept
            out = causal_attention(qh, kh, vh, ctx.segment_ids(), 1.0 / std::sqrt(double(D)), c.sliding_window);
        }
        return proj.output(t, reshape(transpose(out, 1, 2), {B, T, H * D}));
    }
    template <class F>
    void for_each_projection(F&& f) { proj.for_each_projection(f); }
};

// Pre-norm residual block: x + attn(norm1(x)), then + mlp(norm2(x)).
template <class Names, class Norm, class Attention, class Mlp>
struct PreNormBlock {
    Norm norm1, norm2;
    Attention attn;
    Mlp mlp;
    void bind(ParameterStore& s, const std::string& prefix, const ModelConfig& c) {
        norm1.bind(s, join(prefix, Names::norm1), c);
        attn.bind(s, join(prefix, Names::attn), c);
        norm2.bind(s, join(prefix, Names::norm2), c);
        mlp.bind(s, join(prefix, Names::mlp), c);
    }
    Var forward(Tape& t, Var x, const ForwardContext& ctx) const {
        Var h = x + attn.forward(t, norm1.forward(t, x), ctx);
        return h + mlp.forward(t, norm2.forward(t, h), ctx);
    }
    template <class F>
    void for_each_projection(F&& f) { attn.for_each_projection(f); mlp.for_each_projection(f); }
};

// --- embeddings ---
struct NoPositionEmbedding {
    template <class Names>
    void bind(ParameterStore&, const ModelConfig&) {}
    Var forward(Tape&, Var x, const ForwardContext&) const { return x; }
};
struct LearnedPositionEmbedding {
    Parameter* weight = nullptr;  // (max_positions, C)
    template <class Names>
    void bind(ParameterStore& s, const ModelConfig& c) {
        weight = &s.get(std::string(Names::position_embedding), {c.max_position_embeddings, c.hidden_size});
    }
    Var forward(Tape& t, Var x, const ForwardContext& ctx) const { return x + embedding(t.param(*weight), ctx.positions); }
};

}  // namespace deviant::nn
