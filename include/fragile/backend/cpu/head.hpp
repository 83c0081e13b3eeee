// The LM head's row kernels on the host, applied to one chunk of logits at a time so that the
// caller never holds (B*T, V) logits: log-sum-exp with argmax, the fused cross-entropy gradient,
// the NLL of the labels, KL(P || Q) of two models' rows, and labels drawn from the softmax.
// Shapes: logits: (R, V)   lse, nll, kl: (R)   labels: (R), -1 = row not scored   scale: (R)
#pragma once

#include "fragile/backend/cpu/memory.hpp"
#include "fragile/backend/label_draw.hpp"
#include "fragile/core/rng.hpp"
#include "fragile/core/error.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace fragile::backend::cpu_kernels {

struct CpuHead {

/// lse[r] = log sum_j exp(logits[r, j]); argmax[r] (optional) = first index of the maximum.
/// exp runs through Eigen's vectorised array kernels (the head is B*T*V exponentials).
/// NumericError when a row holds NaN or +-Inf (a model whose weights or activations
/// overflowed), naming the first such row.
static void logsumexp_rows(float* lse, std::int32_t* argmax, const float* logits,
                           std::size_t rows, std::size_t vocab) {
  std::size_t first_bad = rows;
#pragma omp parallel for schedule(static) reduction(min : first_bad) \
    if (rows * vocab >= kCpuParallelMin)
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
static void cross_entropy_backward_rows(float* logits, const float* lse,
                                        const std::int32_t* labels, const float* scale,
                                        std::size_t rows, std::size_t vocab) {
#pragma omp parallel for schedule(static) if (rows * vocab >= kCpuParallelMin)
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


  /// nll[r] = lse[r] - logits[r, labels[r]] in double (0 for rows with labels[r] < 0).
  static void row_nll(double* nll, const float* logits, const float* lse,
                      const std::int32_t* labels, std::size_t rows, std::size_t vocab) {
    for (std::size_t r = 0; r < rows; ++r)
      nll[r] = labels[r] < 0 ? 0.0
                             : static_cast<double>(lse[r]) -
                                   logits[r * vocab + static_cast<std::size_t>(labels[r])];
  }

  /// kl[r] = KL(P || Q) of the rows of logits lp and lq given their log-sum-exps, summed in
  /// double and clamped at 0.
  static void kl_rows(float* kl, const float* lp, const float* lse_p, const float* lq,
                      const float* lse_q, std::size_t rows, std::size_t vocab) {
#pragma omp parallel for schedule(static) if (rows * vocab >= kCpuParallelMin)
    for (std::size_t i = 0; i < rows; ++i) {
      const float* a = lp + i * vocab;
      const float* q = lq + i * vocab;
      double s = 0.0;
      for (std::size_t j = 0; j < vocab; ++j) {
        const double la = static_cast<double>(a[j]) - lse_p[i];
        const double lb = static_cast<double>(q[j]) - lse_q[i];
        s += std::exp(la) * (la - lb);
      }
      kl[i] = static_cast<float>(std::max(s, 0.0));
    }
  }

  /// labels[r] drawn from softmax(logits[r, :]) by inverse CDF in double, with the uniform of
  /// Rng(seed).fork(stream0 + r): a row's label depends on its stream only, not on batching.
  static void sample_labels(std::int32_t* labels, const float* logits, const float* lse,
                            std::size_t rows, std::size_t vocab, std::uint64_t seed,
                            std::uint64_t stream0) {
    const Rng base(seed);
#pragma omp parallel for schedule(static) if (rows * vocab >= kCpuParallelMin)
    for (std::size_t r = 0; r < rows; ++r) {
      Rng rng = base.fork(stream0 + r);
      labels[r] = draw_label(logits + r * vocab, lse[r], vocab, rng.uniform());
    }
  }
};

}  // namespace fragile::backend::cpu_kernels
