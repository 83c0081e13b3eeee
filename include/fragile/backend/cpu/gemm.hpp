// The CPU backend's GEMM: OpenBLAS's sgemm (or Eigen's) on one thread, with large products
// split over OpenMP threads by fragile itself.
#pragma once

#include "fragile/backend/cpu/memory.hpp"
#include "fragile/core/error.hpp"

#include <Eigen/Core>
#if defined(FRAGILE_WITH_OPENBLAS)
#include <cblas.h>
#endif
#include <thrust/system/cpp/execution_policy.h>
#if defined(_OPENMP)
#include <thrust/system/omp/execution_policy.h>
#endif

#include <algorithm>
#include <cstddef>

namespace fragile::backend::cpu_kernels {

/// Row-major GEMM on the host.
struct CpuGemm {
  using Stride = Eigen::OuterStride<>;
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using ConstMap = Eigen::Map<const RowMajor, Eigen::Unaligned, Stride>;
  using Map = Eigen::Map<RowMajor, Eigen::Unaligned, Stride>;

  /// C (m, n) = alpha * op(A) * op(B) + beta * C, row-major; op(A) is (m, k), op(B) is (k, n).
  /// A is stored (m, k) when ta == kN and (k, m) when kT; likewise B. beta is 0 or 1 (the two
  /// values the runtime uses); beta == 0 never reads C.
  /// Large products are split into one independent single-threaded Eigen GEMM per thread along
  /// the larger of m and n: one fork/join per call instead of Eigen's spin-synchronised shared
  /// packing, which degrades badly when the cores are shared with other processes.
  static void gemm(Trans ta, Trans tb, std::size_t m, std::size_t n, std::size_t k, float alpha,
                   const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta,
                   float* c, std::size_t ldc) {
    require<ArgumentError>(beta == 0.0f || beta == 1.0f, "cpu gemm: beta must be 0 or 1, got {}",
                           beta);
    if (m == 0 || n == 0) return;
#if defined(_OPENMP)
    const auto threads = static_cast<std::size_t>(cpu_threads());
    if (threads > 1 && !omp_in_parallel() && m * n * k >= kGemmSplitMin) {
      const bool split_n = n >= m;
      const std::size_t extent = split_n ? n : m;
      const std::size_t parts = std::min(threads, std::max<std::size_t>(1, extent / 16));
      // Part boundaries rounded to multiples of 16 (whole SIMD panels).
      auto bound = [&](std::size_t p) {
        return p == parts ? extent : std::min(extent, (extent * p / parts) / 16 * 16);
      };
#pragma omp parallel for schedule(static, 1) num_threads(static_cast<int>(parts))
      for (std::size_t p = 0; p < parts; ++p) {
        const std::size_t lo = bound(p), hi = bound(p + 1);
        if (hi <= lo) continue;
        if (split_n) {
          const float* bp = tb == Trans::kT ? b + lo * ldb : b + lo;
          gemm_serial(ta, tb, m, hi - lo, k, alpha, a, lda, bp, ldb, beta, c + lo, ldc);
        } else {
          const float* ap = ta == Trans::kT ? a + lo : a + lo * lda;
          gemm_serial(ta, tb, hi - lo, n, k, alpha, ap, lda, b, ldb, beta, c + lo * ldc, ldc);
        }
      }
      return;
    }
#endif
    gemm_serial(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }

  /// gemm() on the calling thread only: OpenBLAS's sgemm when the build has it (1.2-1.4x
  /// Eigen's on the runtime's shapes), else Eigen's.
  static void gemm_serial(Trans ta, Trans tb, std::size_t m, std::size_t n, std::size_t k,
                          float alpha, const float* a, std::size_t lda, const float* b,
                          std::size_t ldb, float beta, float* c, std::size_t ldc) {
#if defined(FRAGILE_WITH_OPENBLAS)
    if (k == 0) {
      if (beta == 0.0f)
        for (std::size_t r = 0; r < m; ++r) std::fill(c + r * ldc, c + r * ldc + n, 0.0f);
      return;
    }
    // fragile splits large products over its threads itself: OpenBLAS runs on the caller's.
    // Its OpenMP build already does inside a parallel region, and openblas_set_num_threads
    // there calls omp_set_num_threads, which would leave every later OpenMP region of the
    // calling thread single-threaded; only a pthreads build needs telling.
    static const bool single = [] {
      if (openblas_get_parallel() == 1) openblas_set_num_threads(1);
      return true;
    }();
    (void)single;
    const auto I = [](std::size_t v) { return static_cast<blasint>(v); };
    cblas_sgemm(CblasRowMajor, ta == Trans::kT ? CblasTrans : CblasNoTrans,
                tb == Trans::kT ? CblasTrans : CblasNoTrans, I(m), I(n), I(k), alpha, a, I(lda), b,
                I(ldb), beta, c, I(ldc));
#else
    const auto I = [](std::size_t v) { return static_cast<Eigen::Index>(v); };
    Map C(c, I(m), I(n), Stride(I(ldc)));
    if (k == 0) {
      if (beta == 0.0f) C.setZero();
      return;
    }
    const bool at = ta == Trans::kT;
    const bool bt = tb == Trans::kT;
    ConstMap A(a, at ? I(k) : I(m), at ? I(m) : I(k), Stride(I(lda)));
    ConstMap B(b, bt ? I(n) : I(k), bt ? I(k) : I(n), Stride(I(ldb)));
    // Four explicit branches so that Eigen sees plain or transposed maps (no temporaries).
    // Inside an OpenMP parallel region Eigen runs the product on the calling thread.
    auto run = [&](const auto& opa, const auto& opb) {
      if (beta == 0.0f) {
        if (alpha == 1.0f) C.noalias() = opa * opb;
        else C.noalias() = alpha * (opa * opb);
      } else {
        if (alpha == 1.0f) C.noalias() += opa * opb;
        else C.noalias() += alpha * (opa * opb);
      }
    };
    if (!at && !bt) run(A, B);
    else if (!at && bt) run(A, B.transpose());
    else if (at && !bt) run(A.transpose(), B);
    else run(A.transpose(), B.transpose());
#endif
  }

  /// thrust execution policy for elementwise kernels on host memory: the OpenMP system when the
  /// build has OpenMP, else the serial C++ system (independent of THRUST_DEVICE_SYSTEM, so a CUDA
  /// build still runs these host kernels on the host).
  static auto policy() noexcept {
#if defined(_OPENMP)
    return thrust::omp::par;
#else
    return thrust::cpp::par;
#endif
  }
};


}  // namespace fragile::backend::cpu_kernels
