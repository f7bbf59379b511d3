// deviant/nn/context.hpp — what every layer's forward receives besides its input: the token
// positions (B, T) and the attention mask (B, 1, T, T) (1 = blocked) built from segment ids, so
// that right-padded and packed rows (several sequences in one row, positions restarting) share
// one code path: a token attends to earlier tokens of its own segment only.
#pragma once
#include "deviant/autodiff/tape.hpp"
#include "deviant/io/hf_config.hpp"

namespace deviant {

using io::ModelConfig;

struct ForwardContext {
    const ModelConfig& config;
    Tensor positions;  // (B, T) int64
    Tensor mask;       // (B, 1, T, T) uint8, 1 where attention is blocked
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
