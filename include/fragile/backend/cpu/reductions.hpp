// The metric pass's reductions on the host. Each writes per-row partial sums in double; the
// caller adds them in row order, so a sum does not depend on the thread count.
// Shapes: g: (R, out)   dy: (R, K*out), option k in columns [k*out, (k+1)*out)   x: (R, in)
#pragma once

#include "fragile/backend/cpu/memory.hpp"

#include <algorithm>
#include <cstddef>

namespace fragile::backend::cpu_kernels {

struct CpuReductions {
  /// s[r] = sum_j g[r, j]^2 for the scored rows r0 + r, 0 for the others.
  static void scored_square_sums(double* s, const float* g, std::size_t rows, std::size_t width,
                                 std::size_t r0, ScoredRows scored) {
#pragma omp parallel for schedule(static) if (rows * width >= kCpuParallelMin)
    for (std::size_t r = 0; r < rows; ++r) {
      double acc = 0.0;
      if (scored(r0 + r)) {
        const float* gr = g + r * width;
        for (std::size_t j = 0; j < width; ++j) acc += static_cast<double>(gr[j]) * gr[j];
      }
      s[r] = acc;
    }
  }

  /// For every row r (global row r0 + r) and option k: part[(r*K + k)*3 + {0,1,2}] =
  /// {(g.dy_k)^2, sum_j (g_j dy_k,j)^2, ||dy_k||^2}, zero for unscored rows.
  static void output_error_partials(double* part, const float* g, const float* dy,
                                    std::size_t rows, std::size_t options, std::size_t out,
                                    std::size_t r0, ScoredRows scored) {
    const std::size_t width = options * out;
#pragma omp parallel for schedule(static) if (rows * width >= kCpuParallelMin)
    for (std::size_t i = 0; i < rows; ++i) {
      double* p = part + i * options * 3;
      if (!scored(r0 + i)) {
        for (std::size_t k = 0; k < options * 3; ++k) p[k] = 0.0;
        continue;
      }
      const float* gr = g + i * out;
      for (std::size_t k = 0; k < options; ++k) {
        const float* d = dy + i * width + k * out;
        double dot = 0.0, diag = 0.0, norm = 0.0;
        for (std::size_t j = 0; j < out; ++j) {
          const double gd = static_cast<double>(gr[j]) * d[j];
          dot += gd;
          diag += gd * gd;
          norm += static_cast<double>(d[j]) * d[j];
        }
        p[k * 3 + 0] = dot * dot;
        p[k * 3 + 1] = diag;
        p[k * 3 + 2] = norm;
      }
    }
  }

  /// power[j] = sum_r x[r, j]^2 in double, rows in order (columns in blocks of 64, so each
  /// row's block is read contiguously).
  static void column_square_sums(double* power, const float* x, std::size_t rows,
                                 std::size_t cols) {
    constexpr std::size_t kBlock = 64;
    const std::size_t blocks = (cols + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (rows * cols >= kCpuParallelMin)
    for (std::size_t b = 0; b < blocks; ++b) {
      const std::size_t j0 = b * kBlock, w = std::min(kBlock, cols - j0);
      double acc[kBlock] = {};
      for (std::size_t r = 0; r < rows; ++r) {
        const float* xr = x + r * cols + j0;
        for (std::size_t j = 0; j < w; ++j) acc[j] += static_cast<double>(xr[j]) * xr[j];
      }
      for (std::size_t j = 0; j < w; ++j) power[j0 + j] = acc[j];
    }
  }
};

}  // namespace fragile::backend::cpu_kernels
