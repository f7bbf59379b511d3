// deviant/nn/context.hpp — what every layer's forward receives besides its input: the token
// positions (B, T) and the segment ids (B, T), so that right-padded and packed rows (several
// sequences in one row, positions restarting) share one code path: a token attends to earlier
// tokens of its own segment only. The equivalent (B, 1, T, T) mask (1 = blocked) is built only
// when a layer asks for it (attention_mask()): fused attention takes the ids, and building
// B T^2 bytes on the host every forward would cost more than the layer it serves.
#pragma once
#include <algorithm>

#include "deviant/autodiff/tape.hpp"
#include "deviant/io/hf_config.hpp"
#include "deviant/nn/rotary.hpp"
#include "deviant/ops/cached_attention.hpp"

namespace deviant {

using io::ModelConfig;

// Keys and values of earlier positions for incremental decoding (generate/sampler.hpp): one
// LayerKvCache per layer (ops/cached_attention.hpp) and the tokens each row holds so far.
struct KvCache {
    std::vector<ops::LayerKvCache> layers;
    std::vector<std::int64_t> lengths;  // (B,): row b's tokens are at cache positions 0 .. lengths[b] - 1
    std::int64_t capacity = 0;

    std::int64_t rows() const { return std::int64_t(lengths.size()); }
    // Keeps rows `keep` (in that order): the others finished.
    void keep_rows(const std::vector<std::int64_t>& keep) {
        for (ops::LayerKvCache& l : layers) ops::keep_cache_rows(l, keep);
        std::vector<std::int64_t> kept;
        for (std::int64_t r : keep) kept.push_back(lengths[std::size_t(r)]);
        lengths = std::move(kept);
    }
};

inline Tensor segments_from_mask(const Tensor& mask);
inline Tensor causal_segment_mask(const Tensor& segments);

struct ForwardContext {
    const ModelConfig& config;
    Tensor positions;       // (B, T) int64
    Tensor mask;            // (B, 1, T, T) uint8, 1 where attention is blocked; may be undefined when segments are given
    Tensor segments = {};   // (B, T) int64 segment ids; when undefined, recovered from `mask`
    KvCache* kv_cache = {};  // incremental decoding: attention reads / extends this cache (rows at positions kv_cache->lengths)
    std::int64_t layer = 0;  // the block being run (which layer of kv_cache attention uses)

    // The (B, 1, T, T) mask: `mask` when given, otherwise built once from the segment ids (cached)
    // on their device.
    const Tensor& attention_mask() const {
        if (mask.defined()) return mask;
        if (!built_mask_.defined()) built_mask_ = causal_segment_mask(segments).to(segments.device());
        return built_mask_;
    }

    // The segment ids attention uses (fused attention takes ids, not the (T, T) mask): `segments`
    // when given, otherwise recovered once from `mask` (and cached) on the mask's device.
    const Tensor& segment_ids() const {
        if (segments.defined()) return segments;
        if (!recovered_segments_.defined()) recovered_segments_ = segments_from_mask(mask).to(mask.device());
        return recovered_segments_;
    }

    // The rotary embedding's inverse frequencies (D/2,) float64 on the positions' device and the
    // cos/sin scaling, for this batch (nn/rotary.hpp; "dynamic" scaling depends on the longest
    // row). Computed once per forward pass and shared by every layer.
    const Tensor& rotary_inv_freq() const {
        if (!rotary_inv_freq_.defined()) build_rotary();
        return rotary_inv_freq_;
    }
    double rotary_scaling() const {
        if (!rotary_inv_freq_.defined()) build_rotary();
        return rotary_scaling_;
    }

    mutable Tensor recovered_segments_ = {};  // cache of segment_ids(); not part of the interface
    mutable Tensor built_mask_ = {};          // cache of attention_mask(); not part of the interface
    mutable Tensor rotary_inv_freq_ = {};     // cache of rotary_inv_freq(); not part of the interface
    mutable double rotary_scaling_ = 1.0;

private:
    void build_rotary() const {
        std::int64_t longest = 0;
        if (config.rope_type == "dynamic" && positions.numel() > 0) {
            const std::vector<std::int64_t> p = positions.to_vector<std::int64_t>();
            longest = *std::max_element(p.begin(), p.end()) + 1;
        }
        nn::RotaryFrequencies f = nn::rotary_frequencies(config, longest);
        rotary_inv_freq_ = Tensor::from(f.inv_freq, {std::int64_t(f.inv_freq.size())}, DType::f64).to(positions.device());
        rotary_scaling_ = f.attention_scaling;
    }
};

// segments (B, T) int64: tokens with equal ids in a row form one sequence; causal within it.
inline Tensor causal_segment_mask(const Tensor& segments_in) {
    Tensor segments = segments_in.to(Device::cpu).contiguous();
    DEVIANT_REQUIRE(segments.rank() == 2 && segments.dtype() == DType::i64, "segment ids must be (B, T) int64, got {}", segments.describe());
    std::int64_t B = segments.size(0), T = segments.size(1);
    Tensor mask = Tensor::empty({B, 1, T, T}, DType::u8);
    const std::int64_t* s = segments.data<std::int64_t>();
    std::uint8_t* m = mask.data<std::uint8_t>();
    for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t i = 0; i < T; ++i)
            for (std::int64_t j = 0; j < T; ++j) m[(b * T + i) * T + j] = (j > i || s[b * T + i] != s[b * T + j]) ? 1 : 0;
    return mask;
}

// The inverse of causal_segment_mask: ids (B, T) int64 where each token's id is the index of the
// first key it may attend to (the first token of its segment). Throws when `mask` is not the
// causal segment mask of any ids.
inline Tensor segments_from_mask(const Tensor& mask_in) {
    DEVIANT_REQUIRE(mask_in.defined() && mask_in.rank() == 4 && mask_in.size(1) == 1 && mask_in.size(2) == mask_in.size(3) &&
                        mask_in.dtype() == DType::u8,
                    "attention mask must be (B, 1, T, T) uint8, got {}", mask_in.defined() ? mask_in.describe() : std::string("none"));
    Tensor mask = mask_in.to(Device::cpu).contiguous();
    std::int64_t B = mask.size(0), T = mask.size(2);
    Tensor segments = Tensor::empty({B, T}, DType::i64);
    const std::uint8_t* m = mask.data<std::uint8_t>();
    std::int64_t* s = segments.data<std::int64_t>();
    for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t i = 0; i < T; ++i) {
            const std::uint8_t* row = m + (b * T + i) * T;
            std::int64_t first = 0;
            while (first < T && row[first]) ++first;
            DEVIANT_REQUIRE(first <= i, "attention mask row {} of batch {} does not let token {} attend to itself", i, b, i);
            s[b * T + i] = first;
        }
    Tensor expected = causal_segment_mask(segments);
    DEVIANT_REQUIRE(std::equal(m, m + mask.numel(), expected.data<std::uint8_t>()),
                    "attention mask {} is not causal within segments (see causal_segment_mask)", mask_in.shape().str());
    return segments;
}

// Positions 0..T-1 restarting at every segment change.
inline Tensor positions_from_segments(const Tensor& segments_in) {
    Tensor segments = segments_in.to(Device::cpu).contiguous();
    std::int64_t B = segments.size(0), T = segments.size(1);
    Tensor pos = Tensor::empty({B, T}, DType::i64);
    const std::int64_t* s = segments.data<std::int64_t>();
    std::int64_t* p = pos.data<std::int64_t>();
    for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t t = 0; t < T; ++t)
            p[b * T + t] = (t > 0 && s[b * T + t] == s[b * T + t - 1]) ? p[b * T + t - 1] + 1 : 0;
    return pos;
}

}  // namespace deviant
