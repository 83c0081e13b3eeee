// The draw of one label from a row of logits, shared by every backend's sample_labels kernel:
// the label is part of the definition of a model-sampled pass (paper 000's Monte-Carlo true
// Fisher), so backends must agree on it, not only on the distribution.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

namespace fragile::backend {

/// The label drawn from softmax(row) (row: `vocab` logits, `lse` their log-sum-exp) by inverse
/// CDF in double with the uniform `u` in [0, 1).
inline std::int32_t draw_label(const float* row, float lse, std::size_t vocab, double u) {
  double total = 0.0, acc = 0.0;
  for (std::size_t j = 0; j < vocab; ++j) total += std::exp(static_cast<double>(row[j] - lse));
  for (std::size_t j = 0; j < vocab; ++j) {
    acc += std::exp(static_cast<double>(row[j] - lse));
    if (u * total < acc) return static_cast<std::int32_t>(j);
  }
  return static_cast<std::int32_t>(vocab - 1);
}

}  // namespace fragile::backend
