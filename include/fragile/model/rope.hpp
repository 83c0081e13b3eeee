// Rotary position embedding (Su et al. 2021, "RoFormer") as transformers computes it: the
// inverse frequencies inv_freq_i = 1 / theta^(2i/D) in f32, with the "llama3" rope_scaling rule
// of _compute_llama3_parameters, and the cos/sin tables of the angles pos * inv_freq_i (f32
// products). The rotation itself is a backend kernel (Ops<B>::rope_forward / rope_backward).
#pragma once

#include "fragile/model/config.hpp"

#include <cmath>
#include <cstddef>
#include <numbers>
#include <vector>

namespace fragile::model {

/// The D/2 inverse frequencies of `c` (rope_theta, head_dim, rope_scaling).
inline std::vector<float> rope_inv_freq(const ModelConfig& c) {
  const std::size_t half = c.head_dim / 2;
  std::vector<float> inv(half);
  const auto base = static_cast<float>(c.rope_theta);
  for (std::size_t i = 0; i < half; ++i) {
    const float e = static_cast<float>(2 * i) / static_cast<float>(c.head_dim);
    inv[i] = 1.0f / std::pow(base, e);
  }
  if (c.rope_scaling.type == RopeScaling::Type::kLlama3) {
    const auto& s = c.rope_scaling;
    const auto factor = static_cast<float>(s.factor);
    const auto lo = static_cast<float>(s.low_freq_factor);
    const auto hi = static_cast<float>(s.high_freq_factor);
    const auto old_len = static_cast<float>(s.original_max_position_embeddings);
    const float low_freq_wavelen = old_len / lo;
    const float high_freq_wavelen = old_len / hi;
    for (auto& f : inv) {
      const float wavelen = 2.0f * std::numbers::pi_v<float> / f;
      const float scaled = wavelen > low_freq_wavelen ? f / factor : f;
      const float smooth = (old_len / wavelen - lo) / (hi - lo);
      const float smoothed = (1.0f - smooth) * scaled / factor + smooth * scaled;
      const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
      f = medium ? smoothed : scaled;
    }
  }
  return inv;
}

/// cos / sin of pos * inv_freq for positions 0..T-1.
struct RopeTable {
  std::size_t seq_len = 0;
  std::size_t half = 0;
  std::vector<float> cos;  // (T, D/2)
  std::vector<float> sin;  // (T, D/2)
};

inline RopeTable rope_table(const std::vector<float>& inv_freq, std::size_t seq_len) {
  RopeTable t{seq_len, inv_freq.size(), {}, {}};
  t.cos.resize(seq_len * t.half);
  t.sin.resize(seq_len * t.half);
  for (std::size_t p = 0; p < seq_len; ++p)
    for (std::size_t i = 0; i < t.half; ++i) {
      const float angle = static_cast<float>(p) * inv_freq[i];  // f32 product, as torch
      t.cos[p * t.half + i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      t.sin[p * t.half + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  return t;
}

}  // namespace fragile::model
