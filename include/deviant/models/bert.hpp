// deviant/models/bert.hpp — the BERT encoder (transformers' BertModel) for inference on the CPU.
// Why: sentence embedders (all-MiniLM-L6-v2 and other sentence-transformers models) are BERT
// encoders; embedding many texts must be fast, so this is a dedicated forward pass, not the
// autodiff layers: no tape, fused element-wise passes, sequences packed without padding.
//
// Architecture (post-LayerNorm blocks, bidirectional attention, learned absolute positions):
//   x = LayerNorm(word[id] + position[p] + token_type[t])                      (N, C)
//   per layer: a = Attention(x)                     q, k, v = x Wqkv^T + b    (N, 3C)
//              x = LayerNorm(x + a Wo^T + bo)
//              x = LayerNorm(x + act(x Wi^T + bi) Wout^T + bout)              act: gelu (erf),
//                                                       gelu_new / gelu_pytorch_tanh, relu
// Sequences are packed end to end: N = the total token count of the batch, each token attends
// to the tokens of its own sequence only (what a padding mask does, without the padding).
// Threads: one worker pool runs everything. Matrix products go to BLAS; with OpenBLAS a forward
// pass sets it to one thread (restored afterwards) and the pool runs the products of separate
// blocks of rows in parallel, each block going through output projection, LayerNorm, MLP and
// the next layer's q/k/v while its activations are in cache; attention runs per (sequence,
// head). Element-wise work is fused into those passes and vectorised with AVX-512 or
// AVX2 + FMA when the CPU has them (chosen at run time). exp and erf are polynomial
// approximations (relative error about 1e-7); results match transformers to about 1e-6.
//
// Checkpoint: config.json (model_type "bert") and model.safetensors (single or sharded) with
// transformers' tensor names, optionally under "bert."; LayerNorm "gamma"/"beta" are accepted
// for "weight"/"bias". Refused, naming the field: other model types, position_embedding_type
// other than "absolute", other activations, decoder configurations.
#pragma once
#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "deviant/core/error.hpp"
#include "deviant/core/tensor.hpp"
#include "deviant/ops/blas_threads.hpp"
#include "deviant/io/hf_config.hpp"
#include "deviant/io/safetensors.hpp"
#include "deviant/tokenizer/bpe.hpp"

namespace deviant::models {

enum class BertActivation : std::uint8_t { gelu, gelu_tanh, relu };

struct BertConfig {
    std::filesystem::path source;  // the config.json read
    std::int64_t vocab_size = 0;
    std::int64_t hidden_size = 0;  // C
    std::int64_t num_hidden_layers = 0;
    std::int64_t num_attention_heads = 0;  // H; head size D = C / H
    std::int64_t intermediate_size = 0;    // F
    std::int64_t max_position_embeddings = 512;
    std::int64_t type_vocab_size = 2;
    double layer_norm_eps = 1e-12;
    std::string hidden_act = "gelu";
    BertActivation activation = BertActivation::gelu;
    std::int64_t head_dim() const { return hidden_size / num_attention_heads; }
};

// Reads `dir_or_file` (a model directory holding config.json, or the file itself).
inline BertConfig load_bert_config(const std::filesystem::path& dir_or_file) {
    const auto [path, j] = io::detail::read_config_json(dir_or_file);
    const std::string file = path.string();
    io::detail::ConfigFields f(j, file);
    BertConfig c;
    c.source = path;
    const std::string type = f.string({"model_type"}, "");
    DEVIANT_REQUIRE(type == "bert", "{}: field 'model_type' is '{}', expected 'bert'", file, type);
    c.vocab_size = f.required_int({"vocab_size"});
    c.hidden_size = f.required_int({"hidden_size"});
    c.num_hidden_layers = f.required_int({"num_hidden_layers"});
    c.num_attention_heads = f.required_int({"num_attention_heads"});
    c.intermediate_size = f.required_int({"intermediate_size"});
    c.max_position_embeddings = f.optional_int({"max_position_embeddings"}).value_or(512);
    c.type_vocab_size = f.optional_int({"type_vocab_size"}).value_or(2);
    c.layer_norm_eps = f.number({"layer_norm_eps"}, 1e-12);
    c.hidden_act = f.string({"hidden_act"}, "gelu");
    if (c.hidden_act == "gelu") c.activation = BertActivation::gelu;
    else if (c.hidden_act == "gelu_new" || c.hidden_act == "gelu_pytorch_tanh") c.activation = BertActivation::gelu_tanh;
    else if (c.hidden_act == "relu") c.activation = BertActivation::relu;
    else fail("{}: field 'hidden_act' is '{}', which is not supported (supported: gelu, gelu_new, gelu_pytorch_tanh, relu)", file, c.hidden_act);
    const std::string positions = f.string({"position_embedding_type"}, "absolute");
    DEVIANT_REQUIRE(positions == "absolute", "{}: field 'position_embedding_type' is '{}', only 'absolute' is supported", file, positions);
    DEVIANT_REQUIRE(!f.boolean("is_decoder", false), "{}: field 'is_decoder' is true; only the bidirectional encoder is supported", file);
    DEVIANT_REQUIRE(!f.boolean("add_cross_attention", false), "{}: field 'add_cross_attention' is true, which is not supported", file);
    const auto positive = [&](std::int64_t v, const char* name) {
        DEVIANT_REQUIRE(v > 0, "{}: field '{}' must be positive, got {}", file, name, v);
    };
    positive(c.vocab_size, "vocab_size");
    positive(c.hidden_size, "hidden_size");
    positive(c.num_hidden_layers, "num_hidden_layers");
    positive(c.num_attention_heads, "num_attention_heads");
    positive(c.intermediate_size, "intermediate_size");
    positive(c.max_position_embeddings, "max_position_embeddings");
    positive(c.type_vocab_size, "type_vocab_size");
    DEVIANT_REQUIRE(c.hidden_size % c.num_attention_heads == 0, "{}: field 'hidden_size' ({}) is not divisible by num_attention_heads ({})",
                    file, c.hidden_size, c.num_attention_heads);
    DEVIANT_REQUIRE(c.layer_norm_eps > 0, "{}: field 'layer_norm_eps' must be positive, got {}", file, c.layer_norm_eps);
    return c;
}

// Token sequences laid end to end: sequence b holds tokens [offsets[b], offsets[b + 1]).
struct PackedSequences {
    std::vector<TokenId> ids;              // (N,)
    std::vector<TokenId> type_ids;         // (N,), or empty: all 0
    std::vector<std::int32_t> positions;   // (N,), or empty: 0, 1, ... within each sequence
    std::vector<std::int64_t> offsets{0};  // (B + 1,)

    std::size_t sequences() const { return offsets.size() - 1; }
    std::size_t tokens() const { return ids.size(); }
    std::int64_t length(std::size_t b) const { return offsets[b + 1] - offsets[b]; }
    // Appends one sequence (types: empty for all 0, else one per token).
    void add(std::span<const TokenId> sequence, std::span<const TokenId> types = {}) {
        DEVIANT_REQUIRE(types.empty() || types.size() == sequence.size(), "PackedSequences: {} type ids for {} tokens", types.size(),
                        sequence.size());
        if (!types.empty() && type_ids.empty() && !ids.empty()) type_ids.assign(ids.size(), 0);
        ids.insert(ids.end(), sequence.begin(), sequence.end());
        if (!types.empty()) type_ids.insert(type_ids.end(), types.begin(), types.end());
        else if (!type_ids.empty()) type_ids.insert(type_ids.end(), sequence.size(), 0);
        offsets.push_back(std::int64_t(ids.size()));
    }
};

// A fixed set of worker threads; run(n, task) calls task(i) for every i in [0, n) on the workers
// and the calling thread, claiming indices dynamically. One run at a time (others wait).
class WorkerPool {
public:
    explicit WorkerPool(unsigned threads = 0) {
        if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
        for (unsigned i = 1; i < threads; ++i) workers_.emplace_back([this] { loop(); });
    }
    ~WorkerPool() {
        {
            std::lock_guard lock(mutex_);
            stop_ = true;
        }
        wake_.notify_all();
        for (auto& t : workers_) t.join();
    }
    WorkerPool(const WorkerPool&) = delete;
    WorkerPool& operator=(const WorkerPool&) = delete;

    unsigned threads() const { return unsigned(workers_.size()) + 1; }

    // task must not throw.
    template <class F>
    void run(std::size_t count, F&& task) {
        if (count == 0) return;
        if (workers_.empty() || count == 1) {
            for (std::size_t i = 0; i < count; ++i) task(i);
            return;
        }
        std::lock_guard serial(run_mutex_);
        {
            std::lock_guard lock(mutex_);
            call_ = [](const void* ctx, std::size_t i) { (*static_cast<std::remove_reference_t<F>*>(const_cast<void*>(ctx)))(i); };
            context_ = &task;
            count_ = count;
            next_.store(0, std::memory_order_relaxed);
            pending_ = workers_.size();
            ++generation_;
        }
        wake_.notify_all();
        work();
        std::unique_lock lock(mutex_);
        done_.wait(lock, [&] { return pending_ == 0; });
    }

    // Splits [0, n) into chunks of about `grain` and calls f(begin, end) for each, in parallel.
    template <class F>
    void run_ranges(std::size_t n, std::size_t grain, F&& f) {
        grain = std::max<std::size_t>(grain, 1);
        const std::size_t chunks = (n + grain - 1) / grain;
        run(chunks, [&](std::size_t c) { f(c * grain, std::min(n, (c + 1) * grain)); });
    }

private:
    void work() {
        for (std::size_t i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < count_;) call_(context_, i);
    }
    void loop() {
        std::uint64_t seen = 0;
        for (;;) {
            {
                std::unique_lock lock(mutex_);
                wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
                if (stop_) return;
                seen = generation_;
            }
            work();
            std::lock_guard lock(mutex_);
            if (--pending_ == 0) done_.notify_one();
        }
    }

    std::vector<std::thread> workers_;
    std::mutex run_mutex_, mutex_;
    std::condition_variable wake_, done_;
    void (*call_)(const void*, std::size_t) = nullptr;
    const void* context_ = nullptr;
    std::size_t count_ = 0, pending_ = 0;
    std::atomic<std::size_t> next_{0};
    std::uint64_t generation_ = 0;
    bool stop_ = false;
};

namespace bert_kernels {

// 16 floats; GCC/Clang vector extensions, lowered to AVX-512, AVX2 or SSE by the caller's target.
// Vectors are never passed or returned by value (that would tie helpers to one calling
// convention): memory is viewed through references, math helpers work in place.
using f32x16 = float __attribute__((vector_size(64)));
using i32x16 = std::int32_t __attribute__((vector_size(64)));
// 16 floats at any address: a packed struct of a 4-byte-aligned vector type makes the compiler
// use unaligned loads and stores (and tells the alignment sanitizer the real requirement).
using f32x16_any_address = float __attribute__((vector_size(64), aligned(4)));
struct __attribute__((packed, may_alias)) f32x16_unaligned {
    f32x16_any_address v;
};
inline constexpr std::int64_t kLanes = 16;

#define DEVIANT_BERT_INLINE inline __attribute__((always_inline))

// 16 floats at p (no alignment needed), used as at(p).v.v.
DEVIANT_BERT_INLINE const f32x16_unaligned& at(const float* p) { return *reinterpret_cast<const f32x16_unaligned*>(p); }
DEVIANT_BERT_INLINE f32x16_unaligned& at(float* p) { return *reinterpret_cast<f32x16_unaligned*>(p); }
// Horizontal sum and maximum, as a tree (halving the vector three times).
DEVIANT_BERT_INLINE float hsum(const f32x16& v) {
    using f32x8 = float __attribute__((vector_size(32)));
    using f32x4 = float __attribute__((vector_size(16)));
    f32x8 a, b;
    std::memcpy(&a, &v, sizeof a);
    std::memcpy(&b, reinterpret_cast<const char*>(&v) + sizeof a, sizeof b);
    a += b;
    f32x4 c, d;
    std::memcpy(&c, &a, sizeof c);
    std::memcpy(&d, reinterpret_cast<const char*>(&a) + sizeof c, sizeof d);
    c += d;
    return (c[0] + c[2]) + (c[1] + c[3]);
}
DEVIANT_BERT_INLINE float hmax(const f32x16& v) {
    using f32x8 = float __attribute__((vector_size(32)));
    using f32x4 = float __attribute__((vector_size(16)));
    f32x8 a, b;
    std::memcpy(&a, &v, sizeof a);
    std::memcpy(&b, reinterpret_cast<const char*>(&v) + sizeof a, sizeof b);
    a = a > b ? a : b;
    f32x4 c, d;
    std::memcpy(&c, &a, sizeof c);
    std::memcpy(&d, reinterpret_cast<const char*>(&a) + sizeof c, sizeof d);
    c = c > d ? c : d;
    const float x = c[0] > c[2] ? c[0] : c[2], y = c[1] > c[3] ? c[1] : c[3];
    return x > y ? x : y;
}

// x = exp(x): x = n ln2 + r, |r| <= ln2 / 2, exp(r) by a degree-7 polynomial, times 2^n built
// in the exponent bits. Inputs are clamped to [-87.3, 88] (results from 1.2e-38 to 1.65e38).
DEVIANT_BERT_INLINE void exp_inplace(f32x16& x) {
    x = x < -87.3f ? f32x16{} - 87.3f : x;
    x = x > 88.0f ? f32x16{} + 88.0f : x;
    // n = round(x / ln2): adding 1.5 * 2^23 leaves n in the low mantissa bits of t
    constexpr float shifter = 12582912.0f;
    const f32x16 t = x * 1.44269504088896341f + shifter;
    const f32x16 n = t - shifter;
    f32x16 r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    f32x16 p = f32x16{} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    const i32x16 bits = ((i32x16)t - 0x4B400000 + 127) << 23;  // 0x4B400000: the bits of the shifter
    x = p * (f32x16)bits;
}

// x = erf(x), Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
DEVIANT_BERT_INLINE void erf_inplace(f32x16& x) {
    const f32x16 a = x < 0.0f ? -x : x;
    const f32x16 t = 1.0f / (a * 0.3275911f + 1.0f);
    f32x16 p = f32x16{} + 1.061405429f;
    p = p * t - 1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t - 0.284496736f;
    p = p * t + 0.254829592f;
    f32x16 e = -(a * a);
    exp_inplace(e);
    const f32x16 y = 1.0f - p * t * e;
    x = x < 0.0f ? -y : y;
}

DEVIANT_BERT_INLINE void activation_inplace(f32x16& x, BertActivation act) {
    switch (act) {
        case BertActivation::gelu: {
            f32x16 e = x * 0.70710678118654752f;
            erf_inplace(e);
            x = 0.5f * x * (1.0f + e);
            return;
        }
        case BertActivation::gelu_tanh: {
            // 0.5 x (1 + tanh(u)) = x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3)
            f32x16 e = -1.5957691216057308f * (x + 0.044715f * x * x * x);
            exp_inplace(e);
            x = x / (1.0f + e);
            return;
        }
        case BertActivation::relu: x = x > 0.0f ? x : f32x16{}; return;
    }
}

// rows [r0, r1) of x (rows, cols): x = act(x + bias).
DEVIANT_BERT_INLINE void bias_activation_rows(float* x, const float* bias, std::int64_t r0, std::int64_t r1, std::int64_t cols,
                                              BertActivation act) {
    const std::int64_t full = cols / kLanes * kLanes;
    for (std::int64_t r = r0; r < r1; ++r) {
        float* row = x + r * cols;
        for (std::int64_t j = 0; j < full; j += kLanes) {
            f32x16 v = at(row + j).v + at(bias + j).v;
            activation_inplace(v, act);
            at(row + j).v = v;
        }
        if (full < cols) {
            f32x16 v{};
            for (std::int64_t j = full; j < cols; ++j) v[j - full] = row[j] + bias[j];
            activation_inplace(v, act);
            for (std::int64_t j = full; j < cols; ++j) row[j] = v[j - full];
        }
    }
}

// LayerNorm of one row in place: row = (row - mean) / sqrt(var + eps) * w + b.
DEVIANT_BERT_INLINE void layer_norm_row(float* row, const float* w, const float* b, std::int64_t cols, float eps) {
    const std::int64_t full = cols / kLanes * kLanes;
    f32x16 acc{};
    for (std::int64_t j = 0; j < full; j += kLanes) acc += at(row + j).v;
    float sum = hsum(acc);
    for (std::int64_t j = full; j < cols; ++j) sum += row[j];
    const float mean = sum / float(cols);
    acc = f32x16{};
    for (std::int64_t j = 0; j < full; j += kLanes) {
        const f32x16 d = at(row + j).v - mean;
        acc += d * d;
    }
    float var = hsum(acc);
    for (std::int64_t j = full; j < cols; ++j) var += (row[j] - mean) * (row[j] - mean);
    const float rstd = 1.0f / std::sqrt(var / float(cols) + eps);
    for (std::int64_t j = 0; j < full; j += kLanes) at(row + j).v = (at(row + j).v - mean) * rstd * at(w + j).v + at(b + j).v;
    for (std::int64_t j = full; j < cols; ++j) row[j] = (row[j] - mean) * rstd * w[j] + b[j];
}

// rows [r0, r1): x = LayerNorm(x + bias) (x already holds the residual plus the projection).
DEVIANT_BERT_INLINE void bias_layer_norm_rows(float* x, const float* bias, const float* w, const float* b, std::int64_t r0, std::int64_t r1,
                                              std::int64_t cols, float eps) {
    const std::int64_t full = cols / kLanes * kLanes;
    for (std::int64_t r = r0; r < r1; ++r) {
        float* row = x + r * cols;
        for (std::int64_t j = 0; j < full; j += kLanes) at(row + j).v = at(row + j).v + at(bias + j).v;
        for (std::int64_t j = full; j < cols; ++j) row[j] += bias[j];
        layer_norm_row(row, w, b, cols, eps);
    }
}

// rows [r0, r1): x[i] = LayerNorm(word[ids[i]] + position[positions[i]] + type[types[i]]).
DEVIANT_BERT_INLINE void embed_rows(float* x, const float* word, const float* position, const float* type, const TokenId* ids,
                                    const std::int32_t* positions, const TokenId* types, const float* w, const float* b,
                                    std::int64_t r0, std::int64_t r1, std::int64_t cols, float eps) {
    const std::int64_t full = cols / kLanes * kLanes;
    for (std::int64_t r = r0; r < r1; ++r) {
        float* row = x + r * cols;
        const float* pw = word + std::int64_t(ids[r]) * cols;
        const float* pp = position + std::int64_t(positions[r]) * cols;
        const float* pt = type + std::int64_t(types ? types[r] : 0) * cols;
        for (std::int64_t j = 0; j < full; j += kLanes) at(row + j).v = at(pw + j).v + at(pp + j).v + at(pt + j).v;
        for (std::int64_t j = full; j < cols; ++j) row[j] = pw[j] + pp[j] + pt[j];
        layer_norm_row(row, w, b, cols, eps);
    }
}

// Scratch of one attention call, reused per thread.
struct AttentionScratch {
    std::vector<float> queries;  // (Tq, D): queries, bias added, scaled by 1/sqrt(D); Tq = T rounded up to 8
    std::vector<float> keys_t;   // (D, Tp): keys transposed, zero beyond T; Tp = T rounded up to 16
    std::vector<float> values;   // (T, Dp): values, zero beyond D; Dp = D rounded up to 16
    std::vector<float> scores;   // (8, Tp): scores, then probabilities
};

// In place, for each row of p (rows, Tp): the first T values x become exp(x - max(x)), the
// columns beyond T become 0, and inv_sum[r] receives 1 / (the row's sum).
DEVIANT_BERT_INLINE void softmax_rows(float* p, std::int64_t rows, std::int64_t T, std::int64_t Tp, float* inv_sum) {
    const std::int64_t last = Tp - kLanes;  // the one block that may hold padding columns
    const i32x16 lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    const i32x16 real = lane < std::int32_t(T - last);
    for (std::int64_t r = 0; r < rows; ++r) {
        float* sr = p + r * Tp;
        f32x16 tail = at(sr + last).v;
        tail = real ? tail : f32x16{} - 3.0e38f;
        f32x16 m = tail;
        for (std::int64_t jc = 0; jc < last; jc += kLanes) {
            const f32x16 v = at(sr + jc).v;
            m = v > m ? v : m;
        }
        const float mx = hmax(m);
        f32x16 sum{};
        for (std::int64_t jc = 0; jc < last; jc += kLanes) {
            f32x16 e = at(sr + jc).v - mx;
            exp_inplace(e);
            at(sr + jc).v = e;
            sum += e;
        }
        tail -= mx;
        exp_inplace(tail);
        tail = real ? tail : f32x16{};
        at(sr + last).v = tail;
        sum += tail;
        inv_sum[r] = 1.0f / hsum(sum);
    }
}

// One head of one sequence: rows [begin, begin + T) of qkv (N, 3C) -> the head's columns of ctx
// (N, C): softmax((q + bq) (k + bk)^T / sqrt(D)) (v + bv) over the sequence's own tokens.
// The key bias adds (q + bq) . bk to a whole row of scores, which softmax ignores, so it is left
// out; the value bias comes out of the weighted sum unchanged (the weights sum to 1), so it is
// added to the result. Queries go 8 at a time: 8 independent accumulators per block of 16
// columns keep the FMA units busy and each loaded key / value vector serves 8 rows.
DEVIANT_BERT_INLINE void attention_head(const float* qkv, const float* qkv_bias, float* ctx, std::int64_t begin, std::int64_t T,
                                        std::int64_t head, std::int64_t C, std::int64_t D, AttentionScratch& s) {
    constexpr std::int64_t R = 8;
    const std::int64_t Tp = (T + kLanes - 1) / kLanes * kLanes, Dp = (D + kLanes - 1) / kLanes * kLanes, Tq = (T + R - 1) / R * R;
    const std::int64_t stride = 3 * C, q_off = head * D, k_off = C + head * D, v_off = 2 * C + head * D;
    s.queries.resize(std::size_t(Tq * D));
    s.keys_t.resize(std::size_t(D * Tp));
    s.values.resize(std::size_t(T * Dp));
    s.scores.resize(std::size_t(R * Tp));
    const float scale = 1.0f / std::sqrt(float(D));
    float* q = s.queries.data();
    float* kt = s.keys_t.data();
    float* vals = s.values.data();
    float* sc = s.scores.data();
    const float* bq = qkv_bias + q_off;
    for (std::int64_t j = 0; j < T; ++j) {
        const float* row = qkv + (begin + j) * stride;
        float* qj = q + j * D;
        float* vj = vals + j * Dp;
        std::int64_t d = 0;
        for (; d + kLanes <= D; d += kLanes) {
            at(qj + d).v = (at(row + q_off + d).v + at(bq + d).v) * scale;
            at(vj + d).v = at(row + v_off + d).v;
        }
        for (; d < D; ++d) qj[d] = (row[q_off + d] + bq[d]) * scale, vj[d] = row[v_off + d];
        for (d = D; d < Dp; ++d) vj[d] = 0.0f;
        for (d = 0; d < D; ++d) kt[d * Tp + j] = row[k_off + d];
    }
    std::fill(q + T * D, q + Tq * D, 0.0f);
    for (std::int64_t d = 0; d < D; ++d) std::fill(kt + d * Tp + T, kt + (d + 1) * Tp, 0.0f);

    for (std::int64_t i0 = 0; i0 < T; i0 += R) {
        const std::int64_t rows = std::min(R, T - i0);
        const float* qb = q + i0 * D;
        // scores (8, Tp) = q (8, D) @ keys_t (D, Tp)
        for (std::int64_t jc = 0; jc < Tp; jc += kLanes) {
            f32x16 a0{}, a1{}, a2{}, a3{}, a4{}, a5{}, a6{}, a7{};
            for (std::int64_t d = 0; d < D; ++d) {
                const f32x16 k = at(kt + d * Tp + jc).v;
                a0 += qb[d] * k;
                a1 += qb[D + d] * k;
                a2 += qb[2 * D + d] * k;
                a3 += qb[3 * D + d] * k;
                a4 += qb[4 * D + d] * k;
                a5 += qb[5 * D + d] * k;
                a6 += qb[6 * D + d] * k;
                a7 += qb[7 * D + d] * k;
            }
            at(sc + jc).v = a0;
            at(sc + Tp + jc).v = a1;
            at(sc + 2 * Tp + jc).v = a2;
            at(sc + 3 * Tp + jc).v = a3;
            at(sc + 4 * Tp + jc).v = a4;
            at(sc + 5 * Tp + jc).v = a5;
            at(sc + 6 * Tp + jc).v = a6;
            at(sc + 7 * Tp + jc).v = a7;
        }
        float inv_sum[R];
        softmax_rows(sc, rows, T, Tp, inv_sum);
        std::fill(sc + rows * Tp, sc + R * Tp, 0.0f);
        // out (8, Dp) = p (8, T) @ values (T, Dp) / row sums + bv
        for (std::int64_t dc = 0; dc < Dp; dc += kLanes) {
            f32x16 o0{}, o1{}, o2{}, o3{}, o4{}, o5{}, o6{}, o7{};
            for (std::int64_t j = 0; j < T; ++j) {
                const f32x16 v = at(vals + j * Dp + dc).v;
                o0 += sc[j] * v;
                o1 += sc[Tp + j] * v;
                o2 += sc[2 * Tp + j] * v;
                o3 += sc[3 * Tp + j] * v;
                o4 += sc[4 * Tp + j] * v;
                o5 += sc[5 * Tp + j] * v;
                o6 += sc[6 * Tp + j] * v;
                o7 += sc[7 * Tp + j] * v;
            }
            const f32x16 o[R] = {o0, o1, o2, o3, o4, o5, o6, o7};
            const std::int64_t width = std::min<std::int64_t>(kLanes, D - dc);
            const float* bv = qkv_bias + v_off + dc;
            for (std::int64_t r = 0; r < rows; ++r) {
                float* dst = ctx + (begin + i0 + r) * C + head * D + dc;
                if (width == kLanes) at(dst).v = o[r] * inv_sum[r] + at(bv).v;
                else
                    for (std::int64_t l = 0; l < width; ++l) dst[l] = o[r][l] * inv_sum[r] + bv[l];
            }
        }
    }
}

// The instruction set the kernels are compiled for, chosen once from the CPU.
enum class Isa : std::uint8_t { generic, avx2, avx512 };
inline Isa cpu_isa() {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    static const Isa isa = [] {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl"))
            return Isa::avx512;
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
        return Isa::generic;
    }();
    return isa;
#else
    return Isa::generic;
#endif
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
template <class F>
__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,bmi,bmi2,popcnt"))) void run_avx512(F& f) { f(); }
template <class F>
__attribute__((target("avx2,fma,bmi,bmi2,popcnt"))) void run_avx2(F& f) { f(); }
#endif

// Runs f (an always-inline lambda) compiled for the best instruction set of this CPU.
template <class F>
void dispatch(F&& f) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    switch (cpu_isa()) {
        case Isa::avx512: run_avx512(f); return;
        case Isa::avx2: run_avx2(f); return;
        case Isa::generic: break;
    }
#endif
    f();
}

}  // namespace bert_kernels

class BertModel {
public:
    // config.json + model.safetensors (or a sharded index) from `dir`.
    static BertModel from_pretrained(const std::filesystem::path& dir, unsigned threads = 0) {
        BertConfig config = load_bert_config(dir);
        return BertModel(std::move(config), io::CheckpointReader::open(dir), threads);
    }

    BertModel(BertConfig config, const io::CheckpointReader& checkpoint, unsigned threads = 0)
        : config_(std::move(config)), pool_(std::make_shared<WorkerPool>(threads)) {
        load(checkpoint);
    }

    const BertConfig& config() const { return config_; }
    WorkerPool& workers() const { return *pool_; }
    // Replaces the worker pool (0: one thread per core). With one thread, BLAS keeps its own
    // threading.
    void set_threads(unsigned threads) { pool_ = std::make_shared<WorkerPool>(threads); }

    // Last hidden states of packed sequences: (N, C) float32, row i for token i.
    Tensor forward(const PackedSequences& batch) const {
        const std::int64_t N = std::int64_t(batch.tokens()), C = config_.hidden_size, F = config_.intermediate_size;
        const std::int64_t H = config_.num_attention_heads, D = config_.head_dim();
        validate(batch);
        Tensor out = Tensor::empty({N, C});
        if (N == 0) return out;
        float* x = out.data<float>();
        const float eps = float(config_.layer_norm_eps);
        const SingleThreadedBlas blas_scope(pool_->threads() > 1);
        // Row blocks run in parallel on the pool when BLAS is single-threaded; otherwise one
        // block of all rows on this thread, parallelised by BLAS itself.
        const bool parallel_rows = blas_scope.single_threaded();
        const std::int64_t block = parallel_rows ? kRowBlock : N;
        const std::size_t blocks = std::size_t((N + block - 1) / block);
        const auto for_each_block = [&](auto&& f) {
            const auto one = [&](std::size_t k) { f(std::int64_t(k) * block, std::min(N, std::int64_t(k + 1) * block)); };
            if (parallel_rows) pool_->run(blocks, one);
            else
                for (std::size_t k = 0; k < blocks; ++k) one(k);
        };

        std::vector<std::int32_t> own_positions;
        const std::int32_t* positions = batch.positions.data();
        if (batch.positions.empty()) {
            own_positions.resize(std::size_t(N));
            for (std::size_t b = 0; b < batch.sequences(); ++b)
                for (std::int64_t i = batch.offsets[b]; i < batch.offsets[b + 1]; ++i)
                    own_positions[std::size_t(i)] = std::int32_t(i - batch.offsets[b]);
            positions = own_positions.data();
        }
        const TokenId* types = batch.type_ids.empty() ? nullptr : batch.type_ids.data();
        std::unique_ptr<float[]> qkv(new float[std::size_t(N * 3 * C)]), ctx(new float[std::size_t(N * C)]);

        // embeddings, then the first layer's q/k/v
        pool_->run_ranges(std::size_t(N), std::size_t(block), [&](std::size_t r0, std::size_t r1) {
            bert_kernels::dispatch([&]() __attribute__((always_inline)) {
                bert_kernels::embed_rows(x, word_.data<float>(), position_.data<float>(), token_type_.data<float>(), batch.ids.data(),
                                         positions, types, embed_norm_w_.data<float>(), embed_norm_b_.data<float>(), std::int64_t(r0),
                                         std::int64_t(r1), C, eps);
            });
            if (parallel_rows) gemm(x + std::int64_t(r0) * C, layers_[0].qkv_w, qkv.get() + std::int64_t(r0) * 3 * C, std::int64_t(r1 - r0));
        });
        if (!parallel_rows) gemm(x, layers_[0].qkv_w, qkv.get(), N);

        const std::size_t items = batch.sequences() * std::size_t(H);
        for (std::size_t l = 0; l < layers_.size(); ++l) {
            const Layer& L = layers_[l];
            const Layer* next = l + 1 < layers_.size() ? &layers_[l + 1] : nullptr;
            pool_->run(items, [&](std::size_t item) {
                const std::size_t b = item / std::size_t(H);
                const std::int64_t head = std::int64_t(item % std::size_t(H));
                thread_local bert_kernels::AttentionScratch scratch;
                bert_kernels::dispatch([&]() __attribute__((always_inline)) {
                    bert_kernels::attention_head(qkv.get(), L.qkv_b.data<float>(), ctx.get(), batch.offsets[b], batch.length(b), head, C, D,
                                                 scratch);
                });
            });
            // per row block: output projection + LayerNorm, MLP + LayerNorm, next layer's q/k/v;
            // both projections add onto the residual rows in place (BLAS beta = 1)
            for_each_block([&](std::int64_t r0, std::int64_t r1) {
                const std::int64_t rows = r1 - r0;
                thread_local std::vector<float> inter_buffer;
                inter_buffer.resize(std::size_t(rows * F));
                float* inter = inter_buffer.data();
                float* xb = x + r0 * C;
                gemm(ctx.get() + r0 * C, L.attn_out_w, xb, rows, 1.0f);
                bert_kernels::dispatch([&]() __attribute__((always_inline)) {
                    bert_kernels::bias_layer_norm_rows(xb, L.attn_out_b.data<float>(), L.attn_norm_w.data<float>(), L.attn_norm_b.data<float>(),
                                                       0, rows, C, eps);
                });
                gemm(xb, L.inter_w, inter, rows);
                bert_kernels::dispatch([&]() __attribute__((always_inline)) {
                    bert_kernels::bias_activation_rows(inter, L.inter_b.data<float>(), 0, rows, F, config_.activation);
                });
                gemm(inter, L.output_w, xb, rows, 1.0f);
                bert_kernels::dispatch([&]() __attribute__((always_inline)) {
                    bert_kernels::bias_layer_norm_rows(xb, L.output_b.data<float>(), L.output_norm_w.data<float>(), L.output_norm_b.data<float>(),
                                                       0, rows, C, eps);
                });
                if (next) gemm(xb, next->qkv_w, qkv.get() + r0 * 3 * C, rows);
            });
        }
        return out;
    }

    // transformers' calling convention: input_ids (B, T), attention_mask (B, T) (1: token,
    // 0: padding; undefined: all tokens), token_type_ids (B, T) or undefined (all 0); integer
    // tensors of any integer dtype. Position ids are the column indices, as transformers uses.
    // Returns (B, T, C); rows at masked positions are 0 (transformers leaves unused values there).
    Tensor forward(const Tensor& input_ids, const Tensor& attention_mask = {}, const Tensor& token_type_ids = {}) const {
        DEVIANT_REQUIRE(input_ids.rank() == 2, "BertModel::forward: input_ids must be (B, T), got {}", input_ids.shape().str());
        const std::int64_t B = input_ids.size(0), T = input_ids.size(1), C = config_.hidden_size;
        for (const Tensor* t : {&attention_mask, &token_type_ids})
            DEVIANT_REQUIRE(!t->defined() || t->shape() == input_ids.shape(), "BertModel::forward: mask/type ids {} do not match input_ids {}",
                            t->shape().str(), input_ids.shape().str());
        const std::vector<std::int64_t> ids = input_ids.to_vector<std::int64_t>();
        const std::vector<std::int64_t> mask = attention_mask.defined() ? attention_mask.to_vector<std::int64_t>()
                                                                         : std::vector<std::int64_t>(ids.size(), 1);
        const std::vector<std::int64_t> types = token_type_ids.defined() ? token_type_ids.to_vector<std::int64_t>()
                                                                          : std::vector<std::int64_t>(ids.size(), 0);
        PackedSequences batch;
        std::vector<std::int64_t> where;  // packed row -> b * T + t
        batch.type_ids.reserve(ids.size());
        for (std::int64_t b = 0; b < B; ++b) {
            for (std::int64_t t = 0; t < T; ++t) {
                const std::size_t k = std::size_t(b * T + t);
                if (mask[k] == 0) continue;
                DEVIANT_REQUIRE(ids[k] >= 0 && ids[k] <= INT32_MAX && types[k] >= 0 && types[k] <= INT32_MAX,
                                "BertModel::forward: negative or huge id at ({}, {})", b, t);
                batch.ids.push_back(TokenId(ids[k]));
                batch.type_ids.push_back(TokenId(types[k]));
                batch.positions.push_back(std::int32_t(std::min<std::int64_t>(t, INT32_MAX)));
                where.push_back(b * T + t);
            }
            batch.offsets.push_back(std::int64_t(batch.ids.size()));
        }
        const Tensor packed = forward(batch);
        Tensor out = Tensor::zeros({B, T, C});
        const float* src = packed.data<float>();
        float* dst = out.data<float>();
        for (std::size_t i = 0; i < where.size(); ++i)
            std::memcpy(dst + where[i] * C, src + std::int64_t(i) * C, std::size_t(C) * sizeof(float));
        return out;
    }

private:
    struct Layer {
        Tensor qkv_w, qkv_b;              // (3C, C), (3C,): query, key and value stacked
        Tensor attn_out_w, attn_out_b;    // (C, C), (C,)
        Tensor attn_norm_w, attn_norm_b;  // (C,)
        Tensor inter_w, inter_b;          // (F, C), (F,)
        Tensor output_w, output_b;        // (C, F), (C,)
        Tensor output_norm_w, output_norm_b;
    };

    // Rows per block: large enough for BLAS to run near its peak, small enough that the block's
    // MLP activations (rows x F) stay mostly in cache.
    static constexpr std::int64_t kRowBlock = 512;

    // y (rows, out) = x (rows, in) @ w^T + beta * y for w (out, in), float32 row-major.
    static void gemm(const float* x, const Tensor& w, float* y, std::int64_t rows, float beta = 0.0f) {
        const std::int64_t out = w.size(0), in = w.size(1);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(out), int(in), 1.0f, x, int(in), w.data<float>(), int(in),
                    beta, y, int(out));
    }

    void validate(const PackedSequences& batch) const {
        DEVIANT_REQUIRE(!batch.offsets.empty() && batch.offsets.front() == 0 && batch.offsets.back() == std::int64_t(batch.ids.size()),
                        "BertModel::forward: offsets must run from 0 to the token count {}", batch.ids.size());
        DEVIANT_REQUIRE(batch.type_ids.empty() || batch.type_ids.size() == batch.ids.size(), "BertModel::forward: {} type ids for {} tokens",
                        batch.type_ids.size(), batch.ids.size());
        DEVIANT_REQUIRE(batch.positions.empty() || batch.positions.size() == batch.ids.size(),
                        "BertModel::forward: {} positions for {} tokens", batch.positions.size(), batch.ids.size());
        DEVIANT_REQUIRE(batch.ids.size() <= std::size_t(INT32_MAX) / std::size_t(std::max(3 * config_.hidden_size, config_.intermediate_size)),
                        "BertModel::forward: {} tokens are too many for one batch", batch.ids.size());
        for (std::size_t b = 0; b < batch.sequences(); ++b) {
            DEVIANT_REQUIRE(batch.offsets[b + 1] >= batch.offsets[b], "BertModel::forward: offsets decrease at sequence {}", b);
            if (batch.positions.empty())
                DEVIANT_REQUIRE(batch.length(b) <= config_.max_position_embeddings,
                                "BertModel::forward: sequence {} has {} tokens, more than max_position_embeddings {} of {}", b,
                                batch.length(b), config_.max_position_embeddings, config_.source.string());
        }
        for (std::size_t i = 0; i < batch.ids.size(); ++i) {
            DEVIANT_REQUIRE(batch.ids[i] >= 0 && batch.ids[i] < config_.vocab_size, "BertModel::forward: token id {} at {} is outside the vocabulary of {}",
                            batch.ids[i], i, config_.vocab_size);
            if (!batch.type_ids.empty())
                DEVIANT_REQUIRE(batch.type_ids[i] >= 0 && batch.type_ids[i] < config_.type_vocab_size,
                                "BertModel::forward: token type id {} at {} is outside type_vocab_size {}", batch.type_ids[i], i,
                                config_.type_vocab_size);
            if (!batch.positions.empty())
                DEVIANT_REQUIRE(batch.positions[i] >= 0 && batch.positions[i] < config_.max_position_embeddings,
                                "BertModel::forward: position {} at {} is outside max_position_embeddings {}", batch.positions[i], i,
                                config_.max_position_embeddings);
        }
    }

    void load(const io::CheckpointReader& ck) {
        const std::int64_t C = config_.hidden_size, F = config_.intermediate_size;
        std::string prefix;
        if (!ck.contains("embeddings.word_embeddings.weight") && ck.contains("bert.embeddings.word_embeddings.weight")) prefix = "bert.";
        const auto tensor = [&](const std::string& name, const Shape& shape) -> Tensor {
            std::string full = prefix + name;
            if (!ck.contains(full)) {  // older checkpoints name LayerNorm parameters gamma / beta
                std::string alt = full;
                if (alt.ends_with("LayerNorm.weight")) alt.replace(alt.size() - 6, 6, "gamma");
                else if (alt.ends_with("LayerNorm.bias")) alt.replace(alt.size() - 4, 4, "beta");
                if (ck.contains(alt)) full = alt;
            }
            DEVIANT_REQUIRE(ck.contains(full), "BERT checkpoint: tensor '{}' is missing (config {})", full, config_.source.string());
            DEVIANT_REQUIRE(ck.info(full).shape == shape, "{}: tensor '{}' has shape {}, the config {} needs {}", ck.file_of(full).string(), full,
                            ck.info(full).shape.str(), config_.source.string(), shape.str());
            return ck.load(full, DType::f32).contiguous();
        };
        word_ = tensor("embeddings.word_embeddings.weight", {config_.vocab_size, C});
        position_ = tensor("embeddings.position_embeddings.weight", {config_.max_position_embeddings, C});
        token_type_ = tensor("embeddings.token_type_embeddings.weight", {config_.type_vocab_size, C});
        embed_norm_w_ = tensor("embeddings.LayerNorm.weight", {C});
        embed_norm_b_ = tensor("embeddings.LayerNorm.bias", {C});
        for (std::int64_t i = 0; i < config_.num_hidden_layers; ++i) {
            const std::string p = fmt::format("encoder.layer.{}.", i);
            Layer L;
            L.qkv_w = Tensor::empty({3 * C, C});
            L.qkv_b = Tensor::empty({3 * C});
            const char* parts[] = {"query", "key", "value"};
            for (int k = 0; k < 3; ++k) {
                const Tensor w = tensor(p + "attention.self." + parts[k] + ".weight", {C, C});
                const Tensor b = tensor(p + "attention.self." + parts[k] + ".bias", {C});
                std::memcpy(L.qkv_w.data<float>() + k * C * C, w.data<float>(), std::size_t(C * C) * sizeof(float));
                std::memcpy(L.qkv_b.data<float>() + k * C, b.data<float>(), std::size_t(C) * sizeof(float));
            }
            L.attn_out_w = tensor(p + "attention.output.dense.weight", {C, C});
            L.attn_out_b = tensor(p + "attention.output.dense.bias", {C});
            L.attn_norm_w = tensor(p + "attention.output.LayerNorm.weight", {C});
            L.attn_norm_b = tensor(p + "attention.output.LayerNorm.bias", {C});
            L.inter_w = tensor(p + "intermediate.dense.weight", {F, C});
            L.inter_b = tensor(p + "intermediate.dense.bias", {F});
            L.output_w = tensor(p + "output.dense.weight", {C, F});
            L.output_b = tensor(p + "output.dense.bias", {C});
            L.output_norm_w = tensor(p + "output.LayerNorm.weight", {C});
            L.output_norm_b = tensor(p + "output.LayerNorm.bias", {C});
            layers_.push_back(std::move(L));
        }
    }

    BertConfig config_;
    Tensor word_, position_, token_type_, embed_norm_w_, embed_norm_b_;
    std::vector<Layer> layers_;
    std::shared_ptr<WorkerPool> pool_;
};

}  // namespace deviant::models

