// Grouped-query causal self-attention (Ainslie et al. 2023, "GQA") with an optional sliding
// window (Mistral: query i sees keys j with i - window < j <= i), softmax(q k^T / sqrt(D)) v in
// f32 as transformers' eager attention computes it.
// The forward saves only the log-sum-exp of every score row; the backward recomputes the
// probabilities from it (as FlashAttention does), so no (T, T) matrix per head is kept.
// Shapes (row b*T + t holds token t of window b):
//   q, dq, out, dout: (B*T, Hq*D)   k, v, dk, dv: (B*T, Hkv*D)   lse: (B, Hq, T)
#pragma once

#include "fragile/backend/cpu/gemm.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <vector>

namespace fragile::backend::cpu_kernels {

namespace detail {
using StridedConst = Eigen::Map<const CpuGemm::RowMajor, Eigen::Unaligned,
                                Eigen::OuterStride<>>;
using Strided = Eigen::Map<CpuGemm::RowMajor, Eigen::Unaligned, Eigen::OuterStride<>>;
using Dense = Eigen::Map<CpuGemm::RowMajor>;

/// S (T, T) = scale * Q K^T, then the row-wise probabilities P = exp(S - lse) on the visible
/// keys and 0 elsewhere. When `lse_in` is null, computes lse into `lse_out` first.
/// q and k point at the head's first row (row strides ldq, ldk); s is (T, T) contiguous.
inline void attention_probs(Dense& s, const float* q, std::size_t ldq, const float* k,
                            std::size_t ldk, float scale, const AttentionShape& sh,
                            const float* lse_in, float* lse_out) {
  const std::size_t T = sh.seq_len;
  CpuGemm::gemm_serial(Trans::kN, Trans::kT, T, T, sh.head_dim, 1.0f, q, ldq, k, ldk, 0.0f,
                        s.data(), T);
  for (std::size_t t = 0; t < T; ++t) {
    float* row = s.data() + t * T;
    const std::size_t lo = sh.first_key(t);
    const auto len = static_cast<Eigen::Index>(t + 1 - lo);
    Eigen::Map<Eigen::ArrayXf> vis(row + lo, len);  // the visible keys of query t
    vis *= scale;
    float lse;
    if (lse_in) {
      lse = lse_in[t];
    } else {
      const float mx = vis.maxCoeff();
      lse = mx + std::log((vis - mx).exp().sum());
      lse_out[t] = lse;
    }
    for (std::size_t j = 0; j < lo; ++j) row[j] = 0.0f;
    vis = (vis - lse).exp();
    for (std::size_t j = t + 1; j < T; ++j) row[j] = 0.0f;
  }
}
}  // namespace detail

/// Attention forward and backward on the host: one task per (window, head) or (window, kv head).
struct CpuAttention {

/// out = softmax(q k^T / sqrt(D) + causal mask) v; lse (B, Hq, T) saved when non-null.
static void attention_forward(float* out, float* lse, const float* q, const float* k,
                              const float* v, const AttentionShape& sh) {
  const std::size_t T = sh.seq_len, D = sh.head_dim, H = sh.heads, G = sh.kv_heads;
  const std::size_t qd = H * D, kd = G * D, group = H / G;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const auto I = [](std::size_t x) { return static_cast<Eigen::Index>(x); };
  const std::size_t tasks = sh.batch * H;
#pragma omp parallel if (tasks * T * T * D >= kCpuParallelMin)
  {
    cpu::Buffer<float> scratch(T * T);
    cpu::Buffer<float> lse_local(T);
#pragma omp for schedule(dynamic)
    for (std::size_t task = 0; task < tasks; ++task) {
      const std::size_t b = task / H, h = task % H, g = h / group;
      const float* qh = q + b * T * qd + h * D;
      const float* kh = k + b * T * kd + g * D;
      const float* vh = v + b * T * kd + g * D;
      detail::Dense s(scratch.data(), I(T), I(T));
      float* lse_row = lse ? lse + (b * H + h) * T : lse_local.data();
      detail::attention_probs(s, qh, qd, kh, kd, scale, sh, nullptr, lse_row);
      CpuGemm::gemm_serial(Trans::kN, Trans::kN, T, D, T, 1.0f, scratch.data(), T, vh, kd, 0.0f,
                            out + b * T * qd + h * D, qd);
    }
  }
}

/// dq (overwritten), dk, dv (overwritten) from dout, given the forward's q, k, v, out and lse.
static void attention_backward(float* dq, float* dk, float* dv, const float* dout,
                               const float* out, const float* lse, const float* q, const float* k,
                               const float* v, const AttentionShape& sh) {
  const std::size_t T = sh.seq_len, D = sh.head_dim, H = sh.heads, G = sh.kv_heads;
  const std::size_t qd = H * D, kd = G * D, group = H / G;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const auto I = [](std::size_t x) { return static_cast<Eigen::Index>(x); };
  const std::size_t tasks = sh.batch * G;  // one task per kv head: its dk, dv have one writer
#pragma omp parallel if (tasks * T * T * D >= kCpuParallelMin)
  {
    cpu::Buffer<float> p_buf(T * T), dp_buf(T * T), delta(T);
#pragma omp for schedule(dynamic)
    for (std::size_t task = 0; task < tasks; ++task) {
      const std::size_t b = task / G, g = task % G;
      detail::Strided dkm(dk + b * T * kd + g * D, I(T), I(D), Eigen::OuterStride<>(I(kd)));
      detail::Strided dvm(dv + b * T * kd + g * D, I(T), I(D), Eigen::OuterStride<>(I(kd)));
      dkm.setZero();
      dvm.setZero();
      for (std::size_t h = g * group; h < (g + 1) * group; ++h) {
        const std::size_t off = b * T * qd + h * D;
        detail::StridedConst om(out + off, I(T), I(D), Eigen::OuterStride<>(I(qd)));
        detail::StridedConst dom(dout + off, I(T), I(D), Eigen::OuterStride<>(I(qd)));
        detail::Dense p(p_buf.data(), I(T), I(T));
        detail::Dense dp(dp_buf.data(), I(T), I(T));
        const float* kh = k + b * T * kd + g * D;
        const float* vh = v + b * T * kd + g * D;
        detail::attention_probs(p, q + off, qd, kh, kd, scale, sh, lse + (b * H + h) * T, nullptr);
        CpuGemm::gemm_serial(Trans::kT, Trans::kN, T, D, T, 1.0f, p_buf.data(), T, dout + off, qd,
                              1.0f, dv + b * T * kd + g * D, kd);
        CpuGemm::gemm_serial(Trans::kN, Trans::kT, T, T, D, 1.0f, dout + off, qd, vh, kd, 0.0f,
                              dp_buf.data(), T);
        for (std::size_t t = 0; t < T; ++t) {
          float dsum = 0.0f;
          for (std::size_t j = 0; j < D; ++j) dsum += dom(I(t), I(j)) * om(I(t), I(j));
          delta[t] = dsum;
        }
        // dS = P * (dP - delta) * scale (zero wherever P is zero).
        for (std::size_t t = 0; t < T; ++t) {
          float* pr = p_buf.data() + t * T;
          const float* dpr = dp_buf.data() + t * T;
          for (std::size_t j = 0; j < T; ++j) pr[j] = pr[j] * (dpr[j] - delta[t]) * scale;
        }
        CpuGemm::gemm_serial(Trans::kN, Trans::kN, T, D, T, 1.0f, p_buf.data(), T, kh, kd, 0.0f,
                              dq + off, qd);
        CpuGemm::gemm_serial(Trans::kT, Trans::kN, T, D, T, 1.0f, p_buf.data(), T, q + off, qd,
                              1.0f, dk + b * T * kd + g * D, kd);
      }
    }
  }
}

};

}  // namespace fragile::backend::cpu_kernels
