// Row-wise log-softmax statistics and the fused cross-entropy gradient for the LM head, applied
// to one chunk of logits at a time so that the caller never holds (B*T, V) logits.
// Shapes: logits: (R, V)   lse, nll: (R)   labels: (R), -1 = row not scored   scale: (R)
#pragma once

#include "fragile/backend/cpu.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace fragile::model::layers {

/// lse[r] = log sum_j exp(logits[r, j]); argmax[r] (optional) = first index of the maximum.
inline void logsumexp_rows(cpu, float* lse, std::int32_t* argmax, const float* logits,
                           std::size_t rows, std::size_t vocab) {
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < rows; ++r) {
    const float* row = logits + r * vocab;
    float mx = -std::numeric_limits<float>::infinity();
    std::size_t arg = 0;
    for (std::size_t j = 0; j < vocab; ++j)
      if (row[j] > mx) {
        mx = row[j];
        arg = j;
      }
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (std::size_t j = 0; j < vocab; ++j) sum += std::exp(row[j] - mx);
    lse[r] = mx + std::log(sum);
    if (argmax) argmax[r] = static_cast<std::int32_t>(arg);
  }
}

/// In place: logits[r, :] <- (softmax(logits[r, :]) - onehot(labels[r])) * scale[r];
/// rows with labels[r] < 0 become zero.
inline void cross_entropy_backward_rows(cpu, float* logits, const float* lse,
                                        const std::int32_t* labels, const float* scale,
                                        std::size_t rows, std::size_t vocab) {
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < rows; ++r) {
    float* row = logits + r * vocab;
    if (labels[r] < 0) {
      std::fill(row, row + vocab, 0.0f);
      continue;
    }
    const float s = scale[r];
    const float l = lse[r];
#pragma omp simd
    for (std::size_t j = 0; j < vocab; ++j) row[j] = std::exp(row[j] - l) * s;
    row[labels[r]] -= s;
  }
}

}  // namespace fragile::model::layers
