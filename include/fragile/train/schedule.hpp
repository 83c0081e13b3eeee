// The learning-rate schedule of fragile::train: linear warm-up to the peak rate, then a cosine
// decay to a floor (the schedule of GPT-2/llm.c-style pre-training):
//   lr(s) = peak * (s + 1) / warmup                                      s < warmup
//   lr(s) = floor + (peak - floor) * (1 + cos(pi * (s - warmup) / (steps - warmup))) / 2
// s counts from 0; the value at s is the rate of optimiser step s.
#pragma once

#include "fragile/core/error.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numbers>

namespace fragile::train {

struct CosineSchedule {
  double peak = 1e-3;
  double floor = 1e-4;
  std::size_t warmup = 0;
  std::size_t steps = 1;

  void validate() const {
    require<ArgumentError>(steps > 0, "learning-rate schedule: steps must be positive");
    require<ArgumentError>(std::isfinite(peak) && peak > 0.0,
                           "learning-rate schedule: the peak rate must be positive, got {}", peak);
    require<ArgumentError>(std::isfinite(floor) && floor >= 0.0 && floor <= peak,
                           "learning-rate schedule: the floor must be in [0, peak = {}], got {}",
                           peak, floor);
    require<ArgumentError>(warmup <= steps,
                           "learning-rate schedule: warm-up ({} steps) exceeds the run ({} steps)",
                           warmup, steps);
  }

  [[nodiscard]] double operator()(std::size_t step) const noexcept {
    if (step < warmup) return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
    const double span = static_cast<double>(std::max<std::size_t>(1, steps - warmup));
    const double progress = std::min(1.0, static_cast<double>(step - warmup) / span);
    return floor + 0.5 * (1.0 + std::cos(std::numbers::pi * progress)) * (peak - floor);
  }
};

}  // namespace fragile::train
