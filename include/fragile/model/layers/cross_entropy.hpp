// Row-wise log-softmax statistics and the fused cross-entropy gradient for the LM head, applied
// to one chunk of logits at a time so that the caller never holds (B*T, V) logits.
// Shapes: logits: (R, V)   lse, nll: (R)   labels: (R), -1 = row not scored   scale: (R)
#pragma once

#include "fragile/backend/cpu.hpp"
#include "fragile/core/error.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace fragile::model::layers {

/// lse[r] = log sum_j exp(logits[r, j]); argmax[r] (optional) = first index of the maximum.
/// exp runs through Eigen's vectorised array kernels (the head is B*T*V exponentials).
/// NumericError when a row holds NaN or +-Inf (a model whose weights or activations
/// overflowed), naming the first such row.
inline void logsumexp_rows(cpu, float* lse, std::int32_t* argmax, const float* logits,
                           std::size_t rows, std::size_t vocab) {
  std::size_t first_bad = rows;
#pragma omp parallel for schedule(static) reduction(min : first_bad) \
    if (rows * vocab >= backend::kCpuParallelMin)
  for (std::size_t r = 0; r < rows; ++r) {
    const Eigen::Map<const Eigen::ArrayXf> row(logits + r * vocab, static_cast<Eigen::Index>(vocab));
    Eigen::Index arg = 0;
    const float mx = row.maxCoeff(&arg);
    lse[r] = mx + std::log((row - mx).exp().sum());
    if (!std::isfinite(lse[r])) {  // NaN anywhere makes the sum NaN; Inf makes mx or lse Inf
      first_bad = std::min(first_bad, r);
      if (argmax) argmax[r] = -1;
      continue;
    }
    if (argmax) {
      // maxCoeff's index is not specified to be the first on ties: find the first explicitly
      // (bounded, although a finite row always holds its maximum).
      std::size_t first = 0;
      while (first + 1 < vocab && logits[r * vocab + first] != mx) ++first;
      argmax[r] = static_cast<std::int32_t>(first);
    }
  }
  require<NumericError>(first_bad == rows,
                        "logits are not finite (row {} of {}): the model's output overflowed, "
                        "from a NaN or infinite weight or activation", first_bad, rows);
}

/// In place: logits[r, :] <- (softmax(logits[r, :]) - onehot(labels[r])) * scale[r];
/// rows with labels[r] < 0 become zero.
inline void cross_entropy_backward_rows(cpu, float* logits, const float* lse,
                                        const std::int32_t* labels, const float* scale,
                                        std::size_t rows, std::size_t vocab) {
#pragma omp parallel for schedule(static) if (rows * vocab >= backend::kCpuParallelMin)
  for (std::size_t r = 0; r < rows; ++r) {
    float* row = logits + r * vocab;
    if (labels[r] < 0) {
      std::fill(row, row + vocab, 0.0f);
      continue;
    }
    const float s = scale[r];
    Eigen::Map<Eigen::ArrayXf> a(row, static_cast<Eigen::Index>(vocab));
    a = (a - lse[r]).exp() * s;
    row[labels[r]] -= s;
  }
}

}  // namespace fragile::model::layers
