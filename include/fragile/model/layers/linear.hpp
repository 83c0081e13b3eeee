// Linear layer y = x W^T + b (PyTorch nn.Linear convention: W is (out, in), row-major) with its
// backward: the input gradient, the weight gradient and the bias gradient. Shapes:
//   x: (N, in)   W: (out, in)   b: (out) or null   y, dy: (N, out)   dx: (N, in)   dW: (out, in)
#pragma once

#include "fragile/backend/cpu.hpp"

#include <cstddef>

namespace fragile::model::layers {

using backend::Ops;
using backend::Trans;

/// y (N, out) = x (N, in) W^T (+ bias).
inline void linear_forward(cpu, float* y, const float* x, const float* w, const float* bias,
                           std::size_t n, std::size_t in, std::size_t out) {
  Ops<cpu>::gemm(Trans::kN, Trans::kT, n, out, in, 1.0f, x, in, w, in, 0.0f, y, out);
  if (bias) {
#pragma omp parallel for schedule(static) if (n * out >= backend::kCpuParallelMin)
    for (std::size_t r = 0; r < n; ++r)
      for (std::size_t j = 0; j < out; ++j) y[r * out + j] += bias[j];
  }
}

/// dx (N, in) = dy (N, out) W, or += when `accumulate`.
inline void linear_backward_input(cpu, float* dx, const float* dy, const float* w, std::size_t n,
                                  std::size_t in, std::size_t out, bool accumulate) {
  Ops<cpu>::gemm(Trans::kN, Trans::kN, n, in, out, 1.0f, dy, out, w, in,
                 accumulate ? 1.0f : 0.0f, dx, in);
}

/// dW (out, in) = dy^T x over the N rows, or += when `accumulate`.
inline void linear_backward_weight(cpu, float* dw, const float* dy, const float* x, std::size_t n,
                                   std::size_t in, std::size_t out, bool accumulate) {
  Ops<cpu>::gemm(Trans::kT, Trans::kN, out, in, n, 1.0f, dy, out, x, in,
                 accumulate ? 1.0f : 0.0f, dw, in);
}

/// db (out) += sum over rows of dy.
inline void linear_backward_bias(cpu, float* db, const float* dy, std::size_t n, std::size_t out) {
  for (std::size_t r = 0; r < n; ++r)
    for (std::size_t j = 0; j < out; ++j) db[j] += dy[r * out + j];
}

}  // namespace fragile::model::layers
