// The CPU backend's transfers and elementwise kernels: copies between host buffers (the host is
// the backend's memory, so upload and download are copies), the token embedding and its
// scatter-add backward, bias add and bias gradient, squared accumulation, the non-finite scan.
// Shapes: ids: (N)   table, dtable: (V, C)   out, dout: (N, C)   y, dy: (N, out)   bias: (out)
#pragma once

#include "fragile/backend/cpu/memory.hpp"
#include "fragile/core/finite.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace fragile::backend::cpu_kernels {

struct CpuElementwise {
  /// dst[0, n) = host[0, n).
  template <class T>
  static void upload(T* dst, const T* host, std::size_t n) noexcept {
    if (n && dst != host) std::memcpy(dst, host, n * sizeof(T));
  }
  /// host[0, n) = src[0, n).
  template <class T>
  static void download(T* host, const T* src, std::size_t n) noexcept {
    if (n && host != src) std::memcpy(host, src, n * sizeof(T));
  }
  /// dst[0, n) = src[0, n), both in backend memory.
  template <class T>
  static void copy(T* dst, const T* src, std::size_t n) noexcept {
    upload(dst, src, n);
  }
  template <class T>
  static void fill(T* dst, std::size_t n, T value) noexcept {
    std::fill(dst, dst + n, value);
  }
  static void synchronize() noexcept {}

  /// Index of the first NaN or infinity of x[0, n), or n.
  static std::size_t first_non_finite(const float* x, std::size_t n) noexcept {
    return fragile::first_non_finite(x, n);
  }

  /// out[r, :] = table[ids[r], :]. The caller has checked the ids against the vocabulary.
  static void embedding_forward(float* out, const std::int32_t* ids, const float* table,
                                std::size_t n, std::size_t c) {
#pragma omp parallel for schedule(static) if (n * c >= kCpuParallelMin)
    for (std::size_t r = 0; r < n; ++r)
      std::memcpy(out + r * c, table + static_cast<std::size_t>(ids[r]) * c, c * sizeof(float));
  }
  /// dtable[ids[r], :] += dout[r, :], rows in order.
  static void embedding_backward(float* dtable, const float* dout, const std::int32_t* ids,
                                 std::size_t n, std::size_t c) {
    for (std::size_t r = 0; r < n; ++r) {
      float* row = dtable + static_cast<std::size_t>(ids[r]) * c;
      for (std::size_t j = 0; j < c; ++j) row[j] += dout[r * c + j];
    }
  }

  /// y[r, :] += bias over n rows.
  static void add_bias(float* y, const float* bias, std::size_t n, std::size_t out) {
#pragma omp parallel for schedule(static) if (n * out >= kCpuParallelMin)
    for (std::size_t r = 0; r < n; ++r)
      for (std::size_t j = 0; j < out; ++j) y[r * out + j] += bias[j];
  }
  /// db += sum over rows of dy, rows in order.
  static void bias_backward(float* db, const float* dy, std::size_t n, std::size_t out) {
    for (std::size_t r = 0; r < n; ++r)
      for (std::size_t j = 0; j < out; ++j) db[j] += dy[r * out + j];
  }

  /// dst[i, :] = src[rows[i], :] for n rows of `width`.
  static void gather_rows(float* dst, const float* src, const std::int32_t* rows, std::size_t n,
                          std::size_t width) {
#pragma omp parallel for schedule(static) if (n * width >= kCpuParallelMin)
    for (std::size_t i = 0; i < n; ++i)
      std::memcpy(dst + i * width, src + static_cast<std::size_t>(rows[i]) * width,
                  width * sizeof(float));
  }

  /// acc[k] += v[k]^2.
  static void add_squares(float* acc, const float* v, std::size_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kCpuParallelMin)
    for (std::size_t k = 0; k < n; ++k) acc[k] += v[k] * v[k];
  }
};

}  // namespace fragile::backend::cpu_kernels
