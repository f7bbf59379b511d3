// deviant/models/causal_lm.hpp — a decoder-only language model whose type is its architecture.
//
//   DecoderOnly<Names, PositionEmbedding, Block, FinalNorm>   the architecture, as a type
//   CausalLm<Architecture>                                   parameters + forward + log-probs
//
// Counts and sizes (layers, width, heads, vocabulary) come at run time from the ModelConfig;
// everything structural (which norm, which MLP, rotary or learned positions, fused or separate
// q/k/v, tensor names) is fixed by the type. models/families.hpp defines Llama and Gpt2; a user
// defines a new family the same way in their own code.
#pragma once
#include <vector>

#include "deviant/nn/layers.hpp"
#include "deviant/ops/lm_head.hpp"

namespace deviant {

template <class Names_, class PositionEmbedding_, class Block_, class FinalNorm_>
struct DecoderOnly {
    using Names = Names_;
    using PositionEmbedding = PositionEmbedding_;
    using Block = Block_;
    using FinalNorm = FinalNorm_;
};

// The checkpoint names an architecture gives its top-level tensors. A static Names struct
// supplies them at compile time; an architecture chosen at run time (models/registered_family.hpp)
// has a static names(config) instead.
struct ArchitectureNames {
    std::string_view token_embedding, layers, final_norm, lm_head;
};

// Inputs of one forward pass: token ids (B, T) and segment ids (B, T) (see nn/context.hpp).
struct TokenBatch {
    Tensor ids;       // (B, T) int64
    Tensor segments;  // (B, T) int64; undefined = one segment per row
};

template <class Architecture>
class CausalLm {
public:
    using Names = typename Architecture::Names;
    using Block = typename Architecture::Block;

    ModelConfig config;
    ParameterStore store;

    // Builds the model for `config`, taking parameters from `source` (a checkpoint) or, without
    // one, initialising them from `seed`.
    explicit CausalLm(ModelConfig c, ParameterSource source = {}, std::uint64_t seed = 0, DType dtype = DType::f32)
        : config(std::move(c)), store(dtype, seed) {
        io::require_fits_in_memory(config, double(dtype_size(dtype)), 1.0, "the model's weights");
        DEVIANT_REQUIRE(config.rope_type.empty() || io::is_supported_rope_type(config.rope_type),
                        "{}: rope scaling type '{}' is not supported (supported: {})", config.source.string(), config.rope_type,
                        io::kSupportedRopeTypes);
        bool tanh_gelu = config.hidden_act == "gelu_new" || config.hidden_act == "gelu_pytorch_tanh";
        DEVIANT_REQUIRE(config.hidden_act.empty() || (config.is_llama_family() ? config.hidden_act == "silu" : tanh_gelu),
                        "{}: activation '{}' is not supported for model type '{}' (silu for the Llama family, gelu_new for GPT-2)",
                        config.source.string(), config.hidden_act, config.model_type);
        if (source) store.set_source(std::move(source));
        const ArchitectureNames names = architecture_names(config);
        token_embedding_ = &store.get(std::string(names.token_embedding), {config.vocab_size, config.hidden_size});
        positions_.template bind<Names>(store, config);
        blocks_.resize(std::size_t(config.num_hidden_layers));
        for (std::int64_t i = 0; i < config.num_hidden_layers; ++i)
            blocks_[std::size_t(i)].bind(store, std::string(names.layers) + "." + std::to_string(i), config);
        final_norm_.bind(store, std::string(names.final_norm), config);
        head_ = config.tie_word_embeddings ? token_embedding_
                                           : &store.get(std::string(names.lm_head), {config.vocab_size, config.hidden_size});
    }

    static ArchitectureNames architecture_names(const ModelConfig& c) {
        if constexpr (requires { Architecture::names(c); })
            return Architecture::names(c);
        else
            return {Names::token_embedding, Names::layers, Names::final_norm, Names::lm_head};
    }

    ForwardContext context(const TokenBatch& batch) const {
        Tensor seg = batch.segments.defined() ? batch.segments : Tensor::zeros(batch.ids.shape(), DType::i64);
        DEVIANT_REQUIRE(seg.shape() == batch.ids.shape(), "segment ids {} do not match token ids {}", seg.shape().str(), batch.ids.shape().str());
        Device dev = device();
        return ForwardContext{config, positions_from_segments(seg).to(dev), Tensor{}, seg.to(dev)};  // mask built on demand
    }

    // Final hidden states (B, T, C).
    Var hidden(Tape& t, const TokenBatch& batch) const {
        validate(batch.ids);
        ForwardContext ctx = context(batch);
        return hidden(t, batch.ids, ctx);
    }

    // An empty KV cache for `rows` sequences of up to `capacity` tokens (incremental decoding on
    // the CPU; generate/sampler.hpp).
    KvCache make_kv_cache(std::int64_t rows, std::int64_t capacity) const {
        DEVIANT_REQUIRE(device() == Device::cpu, "the KV cache runs on the CPU; this model is on {}", device_name(device()));
        KvCache c;
        c.capacity = capacity;
        c.lengths.assign(std::size_t(rows), 0);
        for (std::int64_t i = 0; i < config.num_hidden_layers; ++i)
            c.layers.push_back(ops::make_layer_kv_cache(rows, config.num_key_value_heads, capacity, config.head_dim,
                                                        token_embedding_->value.dtype(), device()));
        return c;
    }

    // Incremental decoding: runs ids (B, Tn) at cache positions cache.lengths[b] .. + Tn - 1 (keys
    // and values appended to the cache), then returns the logits (B, V), float32 (float64 for a
    // float64 model), of row b's position last[b] (0 <= last[b] < Tn) and advances
    // cache.lengths[b] by advance[b] (the row's real new tokens; the rest was padding).
    // Nothing is recorded for backward.
    Tensor cached_logits(const Tensor& ids, KvCache& cache, const std::vector<std::int64_t>& last, const std::vector<std::int64_t>& advance) const {
        validate(ids);
        NoGradGuard no_grad;
        const std::int64_t B = ids.size(0), Tn = ids.size(1), C = config.hidden_size;
        DEVIANT_REQUIRE(cache.rows() == B && std::int64_t(last.size()) == B && std::int64_t(advance.size()) == B,
                        "KV cache of {} rows, {} last positions and {} advances for a batch of {}", cache.rows(), last.size(), advance.size(), B);
        std::vector<std::int64_t> pos(std::size_t(B * Tn));
        for (std::int64_t b = 0; b < B; ++b) {
            DEVIANT_REQUIRE(cache.lengths[std::size_t(b)] + Tn <= cache.capacity, "row {}: {} cached + {} new tokens exceed the KV cache's {}",
                            b, cache.lengths[std::size_t(b)], Tn, cache.capacity);
            DEVIANT_REQUIRE(last[std::size_t(b)] >= 0 && last[std::size_t(b)] < Tn && advance[std::size_t(b)] >= 0 && advance[std::size_t(b)] <= Tn,
                            "row {}: last position {} / advance {} outside the {} new tokens", b, last[std::size_t(b)], advance[std::size_t(b)], Tn);
            for (std::int64_t t = 0; t < Tn; ++t) pos[std::size_t(b * Tn + t)] = cache.lengths[std::size_t(b)] + t;
        }
        ForwardContext ctx{config, Tensor::from(pos, {B, Tn}).to(device()), Tensor{}, Tensor::zeros({B, Tn}, DType::i64, device())};
        ctx.kv_cache = &cache;
        // A tape per block: nothing is kept for backward, so each block's intermediate values are
        // released as soon as the block is done (a prefill's activations never pile up).
        Tensor x;
        {
            Tape t;
            x = positions_.forward(t, embedding(t.param(*token_embedding_), ids.to(device())), ctx).value();
        }
        for (std::size_t i = 0; i < blocks_.size(); ++i) {
            Tape t;
            ctx.layer = std::int64_t(i);
            x = blocks_[i].forward(t, t.constant(x), ctx).value();
        }
        Tensor h;
        {
            Tape t;
            h = final_norm_.forward(t, t.constant(x)).value().contiguous();  // (B, Tn, C)
        }
        Tensor rows = Tensor::empty({B, C}, h.dtype(), h.device());
        const std::size_t row_bytes = std::size_t(C) * dtype_size(h.dtype());
        for (std::int64_t b = 0; b < B; ++b) {
            const auto* src = static_cast<const unsigned char*>(h.raw_data()) + std::size_t(b * Tn + last[std::size_t(b)]) * row_bytes;
            std::copy(src, src + row_bytes, static_cast<unsigned char*>(rows.raw_data()) + std::size_t(b) * row_bytes);
        }
        for (std::int64_t b = 0; b < B; ++b) cache.lengths[std::size_t(b)] += advance[std::size_t(b)];
        if (packed_head && !head_->trainable && B <= ops::detail::skinny_max_rows) {
            Tensor y = ops::quantized_linear(rows, *packed_head);
            return h.dtype() == DType::f64 ? y.to(DType::f64) : y;
        }
        return ops::matmul(rows, head_->value.transpose(0, 1), compute_dtype(h.dtype()));  // (B, V)
    }

    // The LM head's weight (V, C) (the token embedding when tied), and its block-quantized copy for
    // decoding (see nn::Linear::packed; models/load.hpp pack_for_decoding).
    Parameter& head_parameter() { return *head_; }
    std::shared_ptr<const ops::QuantizedMatrix> packed_head;
    // Logits (B, T, V).
    Var logits(Tape& t, const TokenBatch& batch) const { return linear(hidden(t, batch), t.param(*head_)); }
    // Logits (B, T, V) for sampling, in the compute type (float32 for a bf16 model: the head's product
    // is not rounded to bf16, whose spacing near 10 is 0.06). Nothing is recorded for backward.
    Tensor sampling_logits(Tape& t, const TokenBatch& batch) const {
        NoGradGuard no_grad;
        Tensor h = hidden(t, batch).value();
        return ops::matmul(h, head_->value.transpose(0, 1), compute_dtype(h.dtype()));
    }

    // log p(ids[b, t+1] | ids[b, <=t]) for t < T-1, as (B, T-1).
    // `scored` (optional, (B, T-1) int64): only positions with scored >= 0 (a sequence index, as
    // SequenceRows' completion_index) run the LM head; the others read 0 and pass no gradient.
    // Prompt and padding positions then cost nothing in the head, which is the largest product
    // of a small model's step (vocabulary x width per position).
    Var next_token_logprobs(Tape& t, const TokenBatch& batch, const Tensor& scored = {}) const {
        std::int64_t B = batch.ids.size(0), T = batch.ids.size(1);
        DEVIANT_REQUIRE(T >= 2, "need at least two tokens per row to score, got {}", batch.ids.shape().str());
        const std::int64_t C = config.hidden_size, N = B * (T - 1);
        // Hidden states of every position but the last, as rows (B * (T-1), C); the head, the
        // log-softmax and the target pick run fused in chunks (ops/lm_head.hpp): the (B, T-1, V)
        // logits never exist at once.
        Var rows = reshape(narrow(hidden(t, batch), 1, 0, T - 1), {N, C});
        Tensor targets = batch.ids.narrow(1, 1, T - 1).contiguous().view({N});
        if (!scored.defined()) return reshape(token_logprobs(rows, t.param(*head_), targets), {B, T - 1});
        DEVIANT_REQUIRE(scored.dtype() == DType::i64 && scored.shape() == Shape({B, T - 1}),
                        "scored positions must be (B, T-1) = ({}, {}) int64, got {}", B, T - 1, scored.describe());
        const std::vector<std::int64_t> s = scored.to_vector<std::int64_t>();
        std::vector<std::int64_t> picked, slot(std::size_t(N), -1);  // slot: position -> row of the picked set
        for (std::int64_t i = 0; i < N; ++i)
            if (s[std::size_t(i)] >= 0) slot[std::size_t(i)] = std::int64_t(picked.size()), picked.push_back(i);
        const std::int64_t n = std::int64_t(picked.size());
        if (n == N) return reshape(token_logprobs(rows, t.param(*head_), targets), {B, T - 1});
        for (std::int64_t& v : slot)
            if (v < 0) v = n;  // unscored positions read the zero appended after the picked log-probs
        const Tensor picked_idx = Tensor::from(picked, {n}).to(device());
        Var lp = reshape(t.constant(Tensor::zeros({1, 1}, compute_dtype(rows.value().dtype()), device())), {1, 1});
        if (n > 0) {
            // the picked rows (n, C) (embedding's backward scatters their gradients back), their targets
            Var picked_rows = embedding(rows, picked_idx);
            const std::vector<std::int64_t> all_targets = targets.to_vector<std::int64_t>();
            std::vector<std::int64_t> picked_targets_host(static_cast<std::size_t>(n));
            for (std::int64_t j = 0; j < n; ++j) picked_targets_host[std::size_t(j)] = all_targets[std::size_t(picked[std::size_t(j)])];
            const Tensor picked_targets = Tensor::from(picked_targets_host, {n}).to(device());
            Var picked_lp = reshape(token_logprobs(picked_rows, t.param(*head_), picked_targets), {n, 1});
            lp = concat({picked_lp, lp}, 0);  // (n + 1, 1)
        }
        return reshape(embedding(lp, Tensor::from(slot, {N}).to(device())), {B, T - 1});
    }

    // Calls f(module_path, projection) for every Linear / Conv1D projection, layer by layer
    // (module_path is the checkpoint's, e.g. "model.layers.0.self_attn.q_proj").
    template <class F>
    void for_each_projection(F&& f) {
        for (Block& b : blocks_) b.for_each_projection(f);
    }

    Device device() const { return token_embedding_->value.device(); }
    void to(Device d) { store.to(d); }
    std::deque<Parameter>& parameters() { return store.parameters(); }
    std::int64_t num_parameters() const { return store.count(); }

private:
    Var hidden(Tape& t, const Tensor& ids, ForwardContext& ctx) const {
        Var x = embedding(t.param(*token_embedding_), ids.to(device()));
        x = positions_.forward(t, x, ctx);
        for (std::size_t i = 0; i < blocks_.size(); ++i) {
            ctx.layer = std::int64_t(i);
            x = blocks_[i].forward(t, x, ctx);
        }
        return final_norm_.forward(t, x);
    }
    void validate(const Tensor& ids) const {
        DEVIANT_REQUIRE(ids.rank() == 2 && ids.dtype() == DType::i64, "token ids must be (B, T) int64, got {}", ids.describe());
        for (std::int64_t id : ids.to_vector<std::int64_t>())
            DEVIANT_REQUIRE(id >= 0 && id < config.vocab_size, "token id {} is outside the vocabulary [0, {})", id, config.vocab_size);
    }

    Parameter* token_embedding_ = nullptr;
    Parameter* head_ = nullptr;
    typename Architecture::PositionEmbedding positions_;
    std::vector<Block> blocks_;
    typename Architecture::FinalNorm final_norm_;
};

}  // namespace deviant
