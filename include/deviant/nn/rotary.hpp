// deviant/nn/rotary.hpp — the rotary embedding's inverse frequencies for a model configuration,
// with the RoPE scaling types of long-context checkpoints.
// Why: Llama 3.1 / 3.2 (llama3), YaRN and linear / dynamic NTK checkpoints change the frequencies
// (and YaRN the size of cos / sin); a model computed with plain RoPE would silently give other
// log-probs. Frequencies follow transformers' definitions (modeling_rope_utils), with D the head
// size, base = rope_theta and f_i = base^(-2i/D) for i < D/2:
//   default   inv_freq_i = f_i
//   linear    inv_freq_i = f_i / factor
//   dynamic   for a batch whose longest row has L > max_position_embeddings = M positions,
//             base' = base * (factor L / M - (factor - 1))^(D / (D - 2)); else plain
//   llama3    wavelength w_i = 2 pi / f_i, with O = original_max_position_embeddings:
//             w_i < O / high_freq_factor: f_i;  w_i > O / low_freq_factor: f_i / factor;
//             between: (1 - s) f_i / factor + s f_i,  s = (O / w_i - low) / (high - low)
//   yarn      ramp between f_i / factor (interpolation) and f_i (extrapolation) over the
//             dimensions [low, high] found from beta_fast / beta_slow rotations in O positions;
//             cos and sin scaled by attention_factor (0.1 ln(factor) + 1 unless given, or the
//             mscale / mscale_all_dim ratio)
// GGUF files of Llama 3.1 carry the llama3 divisors as a tensor (rope_freqs): inv_freq_i /= d_i.
#pragma once
#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "deviant/core/error.hpp"
#include "deviant/io/hf_config.hpp"

namespace deviant::nn {

struct RotaryFrequencies {
    std::vector<double> inv_freq;   // (D/2,)
    double attention_scaling = 1.0;  // multiplies cos and sin
};

// `longest` = positions in the batch's longest row (max position + 1); only "dynamic" reads it.
inline RotaryFrequencies rotary_frequencies(const io::ModelConfig& c, std::int64_t longest = 0) {
    const std::int64_t D = c.head_dim, half = D / 2;
    DEVIANT_REQUIRE(D > 0 && D % 2 == 0, "rotary embedding needs an even head size, got {}", D);
    const io::RopeScaling& rs = c.rope;
    const std::string& type = c.rope_type.empty() ? std::string("default") : c.rope_type;
    DEVIANT_REQUIRE(io::is_supported_rope_type(type), "{}: rope type '{}' is not supported (supported: {})", c.source.string(), type,
                    io::kSupportedRopeTypes);
    double base = c.rope_theta;
    if (type == "dynamic") {
        const double M = double(c.max_position_embeddings), L = double(std::max<std::int64_t>(longest, c.max_position_embeddings));
        base *= std::pow(rs.factor * L / M - (rs.factor - 1.0), double(D) / double(D - 2));
    }
    RotaryFrequencies r;
    r.inv_freq.resize(std::size_t(half));
    for (std::int64_t i = 0; i < half; ++i) r.inv_freq[std::size_t(i)] = 1.0 / std::pow(base, double(2 * i) / double(D));
    const double O = double(rs.original_max_position_embeddings > 0 ? rs.original_max_position_embeddings : c.max_position_embeddings);
    if (type == "linear") {
        for (double& f : r.inv_freq) f /= rs.factor;
    } else if (type == "llama3") {
        const double low_wavelen = O / rs.low_freq_factor, high_wavelen = O / rs.high_freq_factor;
        for (double& f : r.inv_freq) {
            const double wavelen = 2.0 * std::numbers::pi / f;
            if (wavelen < high_wavelen) continue;
            if (wavelen > low_wavelen) {
                f /= rs.factor;
                continue;
            }
            const double s = (O / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
            f = (1.0 - s) * f / rs.factor + s * f;
        }
    } else if (type == "yarn") {
        auto mscale = [](double scale, double m) { return scale <= 1.0 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; };
        if (rs.attention_factor)
            r.attention_scaling = *rs.attention_factor;
        else if (rs.mscale && rs.mscale_all_dim && *rs.mscale != 0 && *rs.mscale_all_dim != 0)
            r.attention_scaling = mscale(rs.factor, *rs.mscale) / mscale(rs.factor, *rs.mscale_all_dim);
        else
            r.attention_scaling = mscale(rs.factor, 1.0);
        auto correction_dim = [&](double rotations) {
            return double(D) * std::log(O / (rotations * 2.0 * std::numbers::pi)) / (2.0 * std::log(c.rope_theta));
        };
        double low = correction_dim(rs.beta_fast), high = correction_dim(rs.beta_slow);
        if (rs.truncate) {
            low = std::floor(low);
            high = std::ceil(high);
        }
        low = std::max(low, 0.0);
        high = std::min(high, double(D - 1));
        if (low == high) high += 0.001;
        for (std::int64_t i = 0; i < half; ++i) {
            const double extrapolation = r.inv_freq[std::size_t(i)], interpolation = extrapolation / rs.factor;
            const double ramp = std::clamp((double(i) - low) / (high - low), 0.0, 1.0);
            const double keep = 1.0 - ramp;  // share of the extrapolated (unscaled) frequency
            r.inv_freq[std::size_t(i)] = interpolation * (1.0 - keep) + extrapolation * keep;
        }
    }
    if (!rs.frequency_divisors.empty()) {
        DEVIANT_REQUIRE(std::int64_t(rs.frequency_divisors.size()) == half, "{}: {} RoPE frequency divisors for a head size of {} (need {})",
                        c.source.string(), rs.frequency_divisors.size(), D, half);
        for (std::int64_t i = 0; i < half; ++i) {
            const double d = rs.frequency_divisors[std::size_t(i)];
            DEVIANT_REQUIRE(std::isfinite(d) && d > 0, "{}: RoPE frequency divisor {} is {}, not a positive number", c.source.string(), i, d);
            r.inv_freq[std::size_t(i)] /= d;
        }
    }
    return r;
}

// GGUF rope_freqs divisors as llama3 parameters: when the divisors equal those of Llama 3.x's
// llama3 scaling (factor 8, 16 or 32; low 1, high 4; original context 8192) the config is
// rewritten to that type (so that a saved config.json is the Hugging Face one). Others stay
// divisors. Returns whether the config changed.
inline bool divisors_as_llama3(io::ModelConfig& c) {
    if (c.rope.frequency_divisors.empty() || (c.rope_type != "default" && !c.rope_type.empty())) return false;
    io::ModelConfig plain = c;
    plain.rope.frequency_divisors.clear();
    const std::vector<double> base = rotary_frequencies(plain).inv_freq;
    for (double factor : {8.0, 16.0, 32.0, 4.0, 2.0}) {
        io::ModelConfig candidate = plain;
        candidate.rope_type = candidate.rope.type = "llama3";
        candidate.rope.factor = factor;
        candidate.rope.low_freq_factor = 1.0;
        candidate.rope.high_freq_factor = 4.0;
        candidate.rope.original_max_position_embeddings = 8192;
        const std::vector<double> f = rotary_frequencies(candidate).inv_freq;
        bool same = true;
        for (std::size_t i = 0; i < f.size() && same; ++i) {
            const double divisor = base[i] / f[i];
            same = std::abs(divisor - c.rope.frequency_divisors[i]) <= 1e-5 * divisor;
        }
        if (same) {
            c = candidate;
            return true;
        }
    }
    return false;
}

}  // namespace deviant::nn
