// The rotary embedding's rotation on the host, in both pairings (backend::RopeStyle):
//   kHalf        Hugging Face rotate_half: dimension i pairs with i + D/2
//   kInterleaved llama2.c / Meta: dimension 2i pairs with 2i + 1
// Shapes: x, dx: (N, H, D) with row r at position r % T;  cos, sin: (T, D/2).
#pragma once

#include "fragile/backend/cpu/memory.hpp"

#include <cstddef>

namespace fragile::backend::cpu_kernels {

struct CpuRope {
  /// x rotated in place by +angle.
  static void rope_forward(float* x, const float* cos, const float* sin, const RopeShape& sh) {
    apply(x, cos, sin, sh, 1.0f);
  }
  /// dx in place: the gradient before the rotation from the gradient after it (-angle).
  static void rope_backward(float* dx, const float* cos, const float* sin, const RopeShape& sh) {
    apply(dx, cos, sin, sh, -1.0f);
  }

 private:
  static void apply(float* x, const float* cos, const float* sin, const RopeShape& sh,
                    float sign) {
    const std::size_t d = sh.head_dim, half = d / 2, heads = sh.heads, n = sh.rows;
    const bool interleaved = sh.style == RopeStyle::kInterleaved;
#pragma omp parallel for schedule(static) if (n * heads * d >= kCpuParallelMin)
    for (std::size_t r = 0; r < n; ++r) {
      const float* cs = cos + (r % sh.seq_len) * half;
      const float* sn = sin + (r % sh.seq_len) * half;
      for (std::size_t h = 0; h < heads; ++h) {
        float* xh = x + (r * heads + h) * d;
        for (std::size_t i = 0; i < half; ++i) {
          const std::size_t a = interleaved ? 2 * i : i;
          const std::size_t b = interleaved ? 2 * i + 1 : i + half;
          const float c = cs[i];
          const float s = sign * sn[i];
          const float xa = xh[a];
          const float xb = xh[b];
          xh[a] = xa * c - xb * s;
          xh[b] = xb * c + xa * s;
        }
      }
    }
  }
};

}  // namespace fragile::backend::cpu_kernels
