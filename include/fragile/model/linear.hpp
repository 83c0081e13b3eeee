// Linear layer y = x W^T + b (PyTorch nn.Linear convention: W is (out, in), row-major) with its
// backward, written once against the backend seam. Shapes:
//   x: (N, in)   W: (out, in)   b: (out) or null   y, dy: (N, out)   dx: (N, in)   dW: (out, in)
#pragma once

#include "fragile/backend/backend.hpp"

#include <cstddef>

namespace fragile::model {

template <class B>
struct Linear {
  using Ops = backend::Ops<B>;
  using Trans = backend::Trans;

  /// y (N, out) = x (N, in) W^T (+ bias).
  static void forward(float* y, const float* x, const float* w, const float* bias, std::size_t n,
                      std::size_t in, std::size_t out) {
    Ops::gemm(Trans::kN, Trans::kT, n, out, in, 1.0f, x, in, w, in, 0.0f, y, out);
    if (bias) Ops::add_bias(y, bias, n, out);
  }

  /// dx (N, in) = dy (N, out) W, or += when `accumulate`.
  static void backward_input(float* dx, const float* dy, const float* w, std::size_t n,
                             std::size_t in, std::size_t out, bool accumulate) {
    Ops::gemm(Trans::kN, Trans::kN, n, in, out, 1.0f, dy, out, w, in, accumulate ? 1.0f : 0.0f,
              dx, in);
  }

  /// dW (out, in) = dy^T x over the N rows, or += when `accumulate`.
  static void backward_weight(float* dw, const float* dy, const float* x, std::size_t n,
                              std::size_t in, std::size_t out, bool accumulate) {
    Ops::gemm(Trans::kT, Trans::kN, out, in, n, 1.0f, dy, out, x, in, accumulate ? 1.0f : 0.0f,
              dw, in);
  }
};

}  // namespace fragile::model
