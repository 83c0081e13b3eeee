// What to quantize to: bit width, group layout along the input dimension, symmetric or
// asymmetric grid, optional clip search. Every quantizer takes a QuantSpec and validates it
// here, so the rules (and the error messages) are the same for all of them.
//
// Group rule: a weight W is (out, in), row-major; groups run along the input dimension, each row
// has its own scale/zero per group. group_size 0 means one group per output row ("per
// channel"). When in_features is not a multiple of group_size, the last group is shorter
// (in_features - (n_groups - 1) * group_size columns) -- the same slicing as GPTQ's
// `W[:, i:i + groupsize]` and AutoGPTQ's static groups. A group_size >= in_features gives one
// group per row, identical to per-channel quantization.
#pragma once

#include "fragile/core/error.hpp"

#include <Eigen/Core>

#include <cstdint>
#include <string>

namespace fragile::quant {

using Index = Eigen::Index;

inline constexpr int kMinBits = 2;
inline constexpr int kMaxBits = 8;
inline constexpr int kScaleBits = 16;  // scales are stored as f16/bf16 for budget accounting

/// Range clipping applied when choosing a group's scale/zero.
enum class ClipSearch {
  kNone,  // plain min-max
  kMse,   // GPTQ's grid search: shrink the range by p = 1 - i/grid and keep the lowest
          // sum |Q(x) - x|^norm per group (GPTQ quant.py `mse=True`)
};

struct QuantSpec {
  int bits = 4;
  int group_size = 128;  // along in_features; 0 = per output channel
  bool symmetric = false;
  ClipSearch clip = ClipSearch::kNone;
  // MSE clip grid (GPTQ's defaults): candidates p = 1 - i/grid for i < max_shrink * grid.
  int clip_grid = 100;
  double clip_max_shrink = 0.8;
  double clip_norm = 2.4;

  [[nodiscard]] int max_code() const noexcept { return (1 << bits) - 1; }
};

/// Throws ArgumentError unless `spec` is usable; `who` names the caller in the message.
inline void validate(const QuantSpec& spec, const std::string& who = "QuantSpec") {
  require<ArgumentError>(spec.bits >= kMinBits && spec.bits <= kMaxBits,
                         "{}: bits = {}, expected {}..{}", who, spec.bits, kMinBits, kMaxBits);
  require<ArgumentError>(spec.group_size >= 0,
                         "{}: group_size = {}, expected 0 (per output channel) or a positive "
                         "number of input columns",
                         who, spec.group_size);
  if (spec.clip == ClipSearch::kMse) {
    require<ArgumentError>(spec.clip_grid > 0, "{}: clip_grid = {}, expected > 0", who,
                           spec.clip_grid);
    require<ArgumentError>(spec.clip_max_shrink > 0.0 && spec.clip_max_shrink < 1.0,
                           "{}: clip_max_shrink = {}, expected in (0, 1)", who,
                           spec.clip_max_shrink);
    require<ArgumentError>(spec.clip_norm > 0.0, "{}: clip_norm = {}, expected > 0", who,
                           spec.clip_norm);
  }
}

/// Column groups of one (out, in) weight under a spec.
struct GroupLayout {
  Index cols = 0;        // in_features
  Index group_size = 0;  // effective: cols for per-channel (and for group_size >= cols)
  Index num_groups = 0;

  GroupLayout() = default;
  GroupLayout(Index in_features, int spec_group_size) : cols(in_features) {
    group_size = (spec_group_size <= 0 || spec_group_size >= in_features)
                     ? in_features
                     : static_cast<Index>(spec_group_size);
    num_groups = group_size == 0 ? 0 : (cols + group_size - 1) / group_size;
  }

  [[nodiscard]] Index group_of(Index col) const noexcept { return col / group_size; }
  [[nodiscard]] Index begin(Index g) const noexcept { return g * group_size; }
  /// Width of group g (the last one may be shorter).
  [[nodiscard]] Index width(Index g) const noexcept {
    const Index b = begin(g);
    return (b + group_size <= cols) ? group_size : cols - b;
  }
};

}  // namespace fragile::quant
