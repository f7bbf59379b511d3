// deviant/optim/schedule.hpp — learning-rate schedules with linear warmup, matching
// transformers' get_constant_schedule_with_warmup, get_linear_schedule_with_warmup and
// get_cosine_schedule_with_warmup (half a cosine; with min_ratio > 0 it is
// get_cosine_with_min_lr_schedule_with_warmup(min_lr_rate = min_ratio)).
// at(step) is the learning rate of the step-th optimizer update, counting from 0: the value
// transformers' scheduler reports after `step` calls of scheduler.step(). Warmup therefore
// starts at 0, as there. For linear, min_ratio > 0 lifts the floor the same way as for cosine:
// factor * (1 - min_ratio) + min_ratio; constant ignores min_ratio.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <string_view>

#include "deviant/core/error.hpp"

namespace deviant::optim {

struct LrSchedule {
    enum class Kind { constant, linear, cosine };
    Kind kind = Kind::constant;
    double base_lr = 0.0;
    std::int64_t warmup_steps = 0, total_steps = 0;
    double min_ratio = 0;

    void validate() const {
        DEVIANT_REQUIRE(std::isfinite(base_lr) && base_lr >= 0, "learning-rate schedule: base_lr {} must be finite and >= 0", base_lr);
        DEVIANT_REQUIRE(warmup_steps >= 0, "learning-rate schedule: warmup_steps {} is negative", warmup_steps);
        DEVIANT_REQUIRE(total_steps >= 0, "learning-rate schedule: total_steps {} is negative", total_steps);
        DEVIANT_REQUIRE(min_ratio >= 0 && min_ratio <= 1, "learning-rate schedule: min_ratio {} is outside [0, 1]", min_ratio);
    }

    // The multiplier of base_lr at `step` (the transformers lr_lambda).
    double factor(std::int64_t step) const {
        validate();
        DEVIANT_REQUIRE(step >= 0, "learning-rate schedule: step {} is negative", step);
        if (step < warmup_steps) return double(step) / double(std::max<std::int64_t>(1, warmup_steps));
        double decay_steps = double(std::max<std::int64_t>(1, total_steps - warmup_steps));
        double progress = double(step - warmup_steps) / decay_steps;
        switch (kind) {
            case Kind::constant: return 1.0;
            case Kind::linear: {
                double f = std::max(0.0, double(total_steps - step) / decay_steps);
                return min_ratio > 0 ? f * (1.0 - min_ratio) + min_ratio : f;
            }
            case Kind::cosine: {
                double f = 0.5 * (1.0 + std::cos(std::numbers::pi * 2.0 * 0.5 * progress));
                if (min_ratio > 0) f = f * (1.0 - min_ratio) + min_ratio;
                return std::max(0.0, f);
            }
        }
        return 1.0;
    }
    double at(std::int64_t step) const { return base_lr * factor(step); }
};

// "constant", "linear" or "cosine" (the names the command line and configs use).
inline LrSchedule::Kind schedule_kind(std::string_view name) {
    if (name == "constant") return LrSchedule::Kind::constant;
    if (name == "linear") return LrSchedule::Kind::linear;
    if (name == "cosine") return LrSchedule::Kind::cosine;
    fail("unknown learning-rate schedule '{}' (known: constant, linear, cosine)", name);
}

}  // namespace deviant::optim
