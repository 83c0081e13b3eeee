// RMSNorm (Zhang & Sennrich 2019) as Llama/Qwen2/Mistral compute it in Hugging Face transformers:
//   y = w * (x * rsqrt(mean(x^2) + eps)), in f32.
// The forward saves rstd = rsqrt(mean(x^2) + eps) per row for the backward. Shapes:
//   x, y, dy, dx: (N, C)   w, dw: (C)   rstd: (N)
#pragma once

#include "fragile/backend/cpu/memory.hpp"

#include <cmath>
#include <cstddef>

namespace fragile::backend::cpu_kernels {

struct CpuNorm {

/// y = w * x * rstd; writes rstd when non-null.
static void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w,
                            std::size_t n, std::size_t c, float eps) {
#pragma omp parallel for schedule(static) if (n * c >= kCpuParallelMin)
  for (std::size_t r = 0; r < n; ++r) {
    const float* xr = x + r * c;
    float* yr = y + r * c;
    double ss = 0.0;
    for (std::size_t j = 0; j < c; ++j) ss += static_cast<double>(xr[j]) * xr[j];
    const float var = static_cast<float>(ss / static_cast<double>(c));
    const float s = 1.0f / std::sqrt(var + eps);
    if (rstd) rstd[r] = s;
    for (std::size_t j = 0; j < c; ++j) yr[j] = w[j] * (xr[j] * s);
  }
}

/// dx (+)= d/dx of the norm given dy; dw += sum_rows dy * x * rstd when dw is non-null
/// (dw accumulation is serial over rows: it is only used by tests and small models).
static void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x,
                             const float* w, const float* rstd, std::size_t n, std::size_t c,
                             bool accumulate) {
#pragma omp parallel for schedule(static) if (n * c >= kCpuParallelMin)
  for (std::size_t r = 0; r < n; ++r) {
    const float* xr = x + r * c;
    const float* dyr = dy + r * c;
    float* dxr = dx + r * c;
    const float s = rstd[r];
    double dot = 0.0;  // sum_j dy_j w_j xhat_j
    for (std::size_t j = 0; j < c; ++j) dot += static_cast<double>(dyr[j]) * w[j] * (xr[j] * s);
    const float m = static_cast<float>(dot / static_cast<double>(c));
    for (std::size_t j = 0; j < c; ++j) {
      const float v = s * (dyr[j] * w[j] - xr[j] * s * m);
      dxr[j] = accumulate ? dxr[j] + v : v;
    }
  }
  if (dw)
    for (std::size_t r = 0; r < n; ++r)
      for (std::size_t j = 0; j < c; ++j) dw[j] += dy[r * c + j] * x[r * c + j] * rstd[r];
}

};

}  // namespace fragile::backend::cpu_kernels
