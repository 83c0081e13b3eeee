// Ops<reference>: every kernel of the seam as a plain loop. See backend/reference.hpp.
#pragma once

#include "fragile/backend/backend.hpp"
#include "fragile/backend/label_draw.hpp"
#include "fragile/core/error.hpp"
#include "fragile/core/rng.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string_view>
#include <vector>

namespace fragile {

/// Tag of the serial reference backend.
struct reference {
  static constexpr std::string_view name = "reference";
  static constexpr backend::Memory memory = backend::Memory::kDevice;

  /// Storage without element access: only the backend's kernels read and write it.
  template <class T>
  class Buffer {
   public:
    Buffer() = default;
    explicit Buffer(std::size_t n) : v_(n) {}
    [[nodiscard]] T* data() noexcept { return v_.data(); }
    [[nodiscard]] const T* data() const noexcept { return v_.data(); }
    [[nodiscard]] std::size_t size() const noexcept { return v_.size(); }
    [[nodiscard]] bool empty() const noexcept { return v_.empty(); }
    void resize(std::size_t n) { v_.resize(n); }

   private:
    std::vector<T> v_;
  };
};

namespace backend {

template <>
struct Ops<reference> {
  // ------------------------------------------------------------------ memory

  template <class T>
  static void upload(T* dst, const T* host, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) dst[i] = host[i];
  }
  template <class T>
  static void download(T* host, const T* src, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) host[i] = src[i];
  }
  template <class T>
  static void copy(T* dst, const T* src, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) dst[i] = src[i];
  }
  template <class T>
  static void fill(T* dst, std::size_t n, T value) {
    for (std::size_t i = 0; i < n; ++i) dst[i] = value;
  }
  static void synchronize() noexcept {}

  static std::size_t first_non_finite(const float* x, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i)
      if (!std::isfinite(x[i])) return i;
    return n;
  }

  // ------------------------------------------------------------------ GEMM

  /// C (m, n) = alpha * op(A) * op(B) + beta * C, row-major, each entry summed in double.
  static void gemm(Trans ta, Trans tb, std::size_t m, std::size_t n, std::size_t k, float alpha,
                   const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta,
                   float* c, std::size_t ldc) {
    require<ArgumentError>(beta == 0.0f || beta == 1.0f,
                           "reference gemm: beta must be 0 or 1, got {}", beta);
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t j = 0; j < n; ++j) {
        double s = 0.0;
        for (std::size_t p = 0; p < k; ++p) {
          const float av = ta == Trans::kN ? a[i * lda + p] : a[p * lda + i];
          const float bv = tb == Trans::kN ? b[p * ldb + j] : b[j * ldb + p];
          s += static_cast<double>(av) * bv;
        }
        const float v = alpha * static_cast<float>(s);
        c[i * ldc + j] = beta == 0.0f ? v : c[i * ldc + j] + v;
      }
  }

  // ------------------------------------------------------------------ embedding, bias

  static void embedding_forward(float* out, const std::int32_t* ids, const float* table,
                                std::size_t n, std::size_t c) {
    for (std::size_t r = 0; r < n; ++r)
      for (std::size_t j = 0; j < c; ++j)
        out[r * c + j] = table[static_cast<std::size_t>(ids[r]) * c + j];
  }
  static void embedding_backward(float* dtable, const float* dout, const std::int32_t* ids,
                                 std::size_t n, std::size_t c) {
    for (std::size_t r = 0; r < n; ++r)
      for (std::size_t j = 0; j < c; ++j)
        dtable[static_cast<std::size_t>(ids[r]) * c + j] += dout[r * c + j];
  }
  static void add_bias(float* y, const float* bias, std::size_t n, std::size_t out) {
    for (std::size_t r = 0; r < n; ++r)
      for (std::size_t j = 0; j < out; ++j) y[r * out + j] += bias[j];
  }
  static void bias_backward(float* db, const float* dy, std::size_t n, std::size_t out) {
    for (std::size_t j = 0; j < out; ++j) {
      double s = 0.0;
      for (std::size_t r = 0; r < n; ++r) s += dy[r * out + j];
      db[j] += static_cast<float>(s);
    }
  }
  static void gather_rows(float* dst, const float* src, const std::int32_t* rows, std::size_t n,
                          std::size_t width) {
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t j = 0; j < width; ++j)
        dst[i * width + j] = src[static_cast<std::size_t>(rows[i]) * width + j];
  }
  static void add_squares(float* acc, const float* v, std::size_t n) {
    for (std::size_t k = 0; k < n; ++k) acc[k] += v[k] * v[k];
  }

  // ------------------------------------------------------------------ RMSNorm

  /// y = w * x / sqrt(mean(x^2) + eps); rstd saved when non-null.
  static void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w,
                              std::size_t n, std::size_t c, float eps) {
    for (std::size_t r = 0; r < n; ++r) {
      double ss = 0.0;
      for (std::size_t j = 0; j < c; ++j) ss += static_cast<double>(x[r * c + j]) * x[r * c + j];
      const float s = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(c)) + eps);
      if (rstd) rstd[r] = s;
      for (std::size_t j = 0; j < c; ++j) y[r * c + j] = w[j] * (x[r * c + j] * s);
    }
  }
  static void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x,
                               const float* w, const float* rstd, std::size_t n, std::size_t c,
                               bool accumulate) {
    for (std::size_t r = 0; r < n; ++r) {
      const float s = rstd[r];
      double dot = 0.0;
      for (std::size_t j = 0; j < c; ++j)
        dot += static_cast<double>(dy[r * c + j]) * w[j] * (x[r * c + j] * s);
      const double m = dot / static_cast<double>(c);
      for (std::size_t j = 0; j < c; ++j) {
        const auto v = static_cast<float>(s * (dy[r * c + j] * w[j] - x[r * c + j] * s * m));
        dx[r * c + j] = accumulate ? dx[r * c + j] + v : v;
      }
    }
    if (dw)
      for (std::size_t j = 0; j < c; ++j) {
        double s = 0.0;
        for (std::size_t r = 0; r < n; ++r)
          s += static_cast<double>(dy[r * c + j]) * x[r * c + j] * rstd[r];
        dw[j] += static_cast<float>(s);
      }
  }

  // ------------------------------------------------------------------ RoPE

  static void rope_forward(float* x, const float* cos, const float* sin, const RopeShape& sh) {
    rope(x, cos, sin, sh, 1.0f);
  }
  static void rope_backward(float* dx, const float* cos, const float* sin, const RopeShape& sh) {
    rope(dx, cos, sin, sh, -1.0f);
  }

  // ------------------------------------------------------------------ attention

  /// out = softmax(q k^T / sqrt(D), causal and windowed) v per head; lse (B, Hq, T) when non-null.
  static void attention_forward(float* out, float* lse, const float* q, const float* k,
                                const float* v, const AttentionShape& sh) {
    const std::size_t T = sh.seq_len, D = sh.head_dim, H = sh.heads, G = sh.kv_heads;
    const std::size_t qd = H * D, kd = G * D, group = H / G;
    const double scale = 1.0 / std::sqrt(static_cast<double>(D));
    std::vector<double> p(T);
    for (std::size_t b = 0; b < sh.batch; ++b)
      for (std::size_t h = 0; h < H; ++h) {
        const std::size_t g = h / group;
        for (std::size_t t = 0; t < T; ++t) {
          const std::size_t lo = sh.first_key(t);
          const double l = probabilities(p, q + (b * T + t) * qd + h * D, k + b * T * kd + g * D,
                                         kd, D, lo, t, scale);
          if (lse) lse[(b * H + h) * T + t] = static_cast<float>(l);
          for (std::size_t d = 0; d < D; ++d) {
            double s = 0.0;
            for (std::size_t j = lo; j <= t; ++j) s += p[j] * v[(b * T + j) * kd + g * D + d];
            out[(b * T + t) * qd + h * D + d] = static_cast<float>(s);
          }
        }
      }
  }

  /// dq, dk, dv (overwritten) from dout, recomputing the probabilities (lse is not needed).
  static void attention_backward(float* dq, float* dk, float* dv, const float* dout,
                                 const float* /*out*/, const float* /*lse*/, const float* q,
                                 const float* k, const float* v, const AttentionShape& sh) {
    const std::size_t T = sh.seq_len, D = sh.head_dim, H = sh.heads, G = sh.kv_heads;
    const std::size_t qd = H * D, kd = G * D, group = H / G;
    const double scale = 1.0 / std::sqrt(static_cast<double>(D));
    std::vector<double> dkd(sh.batch * T * kd, 0.0), dvd(sh.batch * T * kd, 0.0), p(T), dp(T);
    for (std::size_t b = 0; b < sh.batch; ++b)
      for (std::size_t h = 0; h < H; ++h) {
        const std::size_t g = h / group;
        for (std::size_t t = 0; t < T; ++t) {
          const std::size_t lo = sh.first_key(t);
          const float* qt = q + (b * T + t) * qd + h * D;
          const float* dot = dout + (b * T + t) * qd + h * D;
          probabilities(p, qt, k + b * T * kd + g * D, kd, D, lo, t, scale);
          double delta = 0.0;  // sum_j p_j dp_j
          for (std::size_t j = lo; j <= t; ++j) {
            double s = 0.0;
            for (std::size_t d = 0; d < D; ++d) s += dot[d] * v[(b * T + j) * kd + g * D + d];
            dp[j] = s;
            delta += p[j] * s;
          }
          std::vector<double> dqt(D, 0.0);
          for (std::size_t j = lo; j <= t; ++j) {
            const double ds = p[j] * (dp[j] - delta) * scale;
            for (std::size_t d = 0; d < D; ++d) {
              dqt[d] += ds * k[(b * T + j) * kd + g * D + d];
              dkd[(b * T + j) * kd + g * D + d] += ds * qt[d];
              dvd[(b * T + j) * kd + g * D + d] += p[j] * dot[d];
            }
          }
          for (std::size_t d = 0; d < D; ++d) dq[(b * T + t) * qd + h * D + d] = static_cast<float>(dqt[d]);
        }
      }
    for (std::size_t i = 0; i < dkd.size(); ++i) {
      dk[i] = static_cast<float>(dkd[i]);
      dv[i] = static_cast<float>(dvd[i]);
    }
  }

  // ------------------------------------------------------------------ SwiGLU

  static void swiglu_forward(float* h, const float* gate, const float* up, std::size_t count) {
    for (std::size_t i = 0; i < count; ++i) h[i] = silu(gate[i]) * up[i];
  }
  static void swiglu_backward(float* dgate, float* dup, const float* dh, const float* gate,
                              const float* up, std::size_t count) {
    for (std::size_t i = 0; i < count; ++i) {
      const double z = gate[i], s = 1.0 / (1.0 + std::exp(-z));
      dup[i] = static_cast<float>(dh[i] * z * s);
      dgate[i] = static_cast<float>(dh[i] * up[i] * s * (1.0 + z * (1.0 - s)));
    }
  }

  // ------------------------------------------------------------------ LM head rows

  static void logsumexp_rows(float* lse, std::int32_t* argmax, const float* logits,
                             std::size_t rows, std::size_t vocab) {
    for (std::size_t r = 0; r < rows; ++r) {
      const float* row = logits + r * vocab;
      std::size_t arg = 0;
      bool finite = true;
      for (std::size_t j = 0; j < vocab; ++j) {
        finite = finite && std::isfinite(row[j]);
        if (row[j] > row[arg]) arg = j;
      }
      require<NumericError>(finite,
                            "logits are not finite (row {} of {}): the model's output overflowed, "
                            "from a NaN or infinite weight or activation", r, rows);
      double s = 0.0;
      for (std::size_t j = 0; j < vocab; ++j) s += std::exp(static_cast<double>(row[j]) - row[arg]);
      lse[r] = static_cast<float>(row[arg] + std::log(s));
      if (argmax) argmax[r] = static_cast<std::int32_t>(arg);
    }
  }
  static void cross_entropy_backward_rows(float* logits, const float* lse,
                                          const std::int32_t* labels, const float* scale,
                                          std::size_t rows, std::size_t vocab) {
    for (std::size_t r = 0; r < rows; ++r) {
      float* row = logits + r * vocab;
      for (std::size_t j = 0; j < vocab; ++j)
        row[j] = labels[r] < 0 ? 0.0f
                               : static_cast<float>(std::exp(static_cast<double>(row[j]) - lse[r]) *
                                                    scale[r]);
      if (labels[r] >= 0) row[labels[r]] -= scale[r];
    }
  }
  static void row_nll(double* nll, const float* logits, const float* lse,
                      const std::int32_t* labels, std::size_t rows, std::size_t vocab) {
    for (std::size_t r = 0; r < rows; ++r)
      nll[r] = labels[r] < 0 ? 0.0
                             : static_cast<double>(lse[r]) -
                                   logits[r * vocab + static_cast<std::size_t>(labels[r])];
  }
  static void kl_rows(float* kl, const float* lp, const float* lse_p, const float* lq,
                      const float* lse_q, std::size_t rows, std::size_t vocab) {
    for (std::size_t i = 0; i < rows; ++i) {
      double s = 0.0;
      for (std::size_t j = 0; j < vocab; ++j) {
        const double la = static_cast<double>(lp[i * vocab + j]) - lse_p[i];
        const double lb = static_cast<double>(lq[i * vocab + j]) - lse_q[i];
        s += std::exp(la) * (la - lb);
      }
      kl[i] = static_cast<float>(std::max(s, 0.0));
    }
  }
  static void sample_labels(std::int32_t* labels, const float* logits, const float* lse,
                            std::size_t rows, std::size_t vocab, std::uint64_t seed,
                            std::uint64_t stream0) {
    const Rng base(seed);
    for (std::size_t r = 0; r < rows; ++r) {
      Rng rng = base.fork(stream0 + r);
      labels[r] = draw_label(logits + r * vocab, lse[r], vocab, rng.uniform());
    }
  }

  // ------------------------------------------------------------------ metric-pass reductions

  static void scored_square_sums(double* s, const float* g, std::size_t rows, std::size_t width,
                                 std::size_t r0, ScoredRows scored) {
    for (std::size_t r = 0; r < rows; ++r) {
      s[r] = 0.0;
      if (scored(r0 + r))
        for (std::size_t j = 0; j < width; ++j) s[r] += static_cast<double>(g[r * width + j]) * g[r * width + j];
    }
  }
  static void output_error_partials(double* part, const float* g, const float* dy,
                                    std::size_t rows, std::size_t options, std::size_t out,
                                    std::size_t r0, ScoredRows scored) {
    for (std::size_t i = 0; i < rows; ++i)
      for (std::size_t k = 0; k < options; ++k) {
        double dot = 0.0, diag = 0.0, norm = 0.0;
        if (scored(r0 + i))
          for (std::size_t j = 0; j < out; ++j) {
            const double d = dy[i * options * out + k * out + j];
            const double gd = g[i * out + j] * d;
            dot += gd;
            diag += gd * gd;
            norm += d * d;
          }
        double* p = part + (i * options + k) * 3;
        p[0] = dot * dot;
        p[1] = diag;
        p[2] = norm;
      }
  }
  static void column_square_sums(double* power, const float* x, std::size_t rows,
                                 std::size_t cols) {
    for (std::size_t j = 0; j < cols; ++j) {
      power[j] = 0.0;
      for (std::size_t r = 0; r < rows; ++r)
        power[j] += static_cast<double>(x[r * cols + j]) * x[r * cols + j];
    }
  }

 private:
  static float silu(float z) { return static_cast<float>(z / (1.0 + std::exp(-static_cast<double>(z)))); }

  static void rope(float* x, const float* cos, const float* sin, const RopeShape& sh, float sign) {
    const std::size_t D = sh.head_dim, half = D / 2;
    for (std::size_t r = 0; r < sh.rows; ++r)
      for (std::size_t h = 0; h < sh.heads; ++h)
        for (std::size_t i = 0; i < half; ++i) {
          const bool il = sh.style == RopeStyle::kInterleaved;
          float* xa = x + (r * sh.heads + h) * D + (il ? 2 * i : i);
          float* xb = x + (r * sh.heads + h) * D + (il ? 2 * i + 1 : i + half);
          const float c = cos[(r % sh.seq_len) * half + i], s = sign * sin[(r % sh.seq_len) * half + i];
          const float a = *xa, b = *xb;
          *xa = a * c - b * s;
          *xb = b * c + a * s;
        }
  }

  /// p[lo..t] = softmax of scale * q.k_j over the visible keys; returns their log-sum-exp.
  static double probabilities(std::vector<double>& p, const float* q, const float* k,
                              std::size_t ldk, std::size_t D, std::size_t lo, std::size_t t,
                              double scale) {
    double mx = -std::numeric_limits<double>::infinity();
    for (std::size_t j = lo; j <= t; ++j) {
      double s = 0.0;
      for (std::size_t d = 0; d < D; ++d) s += static_cast<double>(q[d]) * k[j * ldk + d];
      p[j] = s * scale;
      mx = std::max(mx, p[j]);
    }
    double sum = 0.0;
    for (std::size_t j = lo; j <= t; ++j) sum += std::exp(p[j] - mx);
    const double lse = mx + std::log(sum);
    for (std::size_t j = lo; j <= t; ++j) p[j] = std::exp(p[j] - lse);
    return lse;
  }
};

}  // namespace backend

}  // namespace fragile
