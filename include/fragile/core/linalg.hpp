// Dense host linear algebra for the quantizers: the Gram matrix X^T X, a product update, the
// Cholesky factor and the inverse of a triangular factor, on row-major float matrices.
// OpenBLAS's BLAS and LAPACK when the build has them (its OpenMP build runs on OpenMP's threads
// outside parallel regions and on the calling thread inside them), else Eigen's.
#pragma once

#include "fragile/core/tensor.hpp"

#include <Eigen/Cholesky>
#include <Eigen/Core>
#if defined(FRAGILE_WITH_OPENBLAS)
#include <cblas.h>
#endif
#if defined(_OPENMP)
#include <omp.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstddef>

#if defined(FRAGILE_WITH_OPENBLAS)
extern "C" {
// LAPACK (column-major, Fortran calling convention with trailing string lengths).
void spotrf_(const char* uplo, const blasint* n, float* a, const blasint* lda, blasint* info,
             std::size_t uplo_len);
void strtri_(const char* uplo, const char* diag, const blasint* n, float* a, const blasint* lda,
             blasint* info, std::size_t uplo_len, std::size_t diag_len);
}
#endif

namespace fragile::linalg {

using Eigen::Index;

namespace detail {

inline int host_threads() noexcept {
#if defined(_OPENMP)
  return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace detail

/// Lower triangle of C (n, n) <- alpha X^T X + beta C for X (t, n). The strict upper triangle is
/// left as it was. With OpenBLAS, C is cut into row bands of equal work (band p ends at row
/// n sqrt(p / threads)), each a single-threaded SYRK on its diagonal block and a GEMM left of it:
/// half the flops of a full product, and the same bytes run to run for a given thread count.
inline void gram_lower(const Eigen::Ref<const MatrixF>& x, float alpha, float beta,
                       Eigen::Ref<MatrixF> c) {
  const Index n = x.cols(), t = x.rows();
  if (n == 0) return;
#if defined(FRAGILE_WITH_OPENBLAS)
  const auto I = [](Index v) { return static_cast<blasint>(v); };
  const int threads = static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(t) >
                              double(1 << 24)
                          ? detail::host_threads()
                          : 1;
  const auto bound = [&](int p) {
    if (p >= threads) return n;
    const auto b = static_cast<Index>(static_cast<double>(n) * std::sqrt(double(p) / threads));
    return std::min(n, b / 16 * 16);
  };
  const float* xp = x.data();
  const Index ldx = x.outerStride(), ldc = c.outerStride();
#pragma omp parallel for schedule(static, 1) num_threads(threads) if (threads > 1)
  for (int p = 0; p < threads; ++p) {
    const Index lo = bound(p), hi = bound(p + 1);
    if (hi <= lo) continue;
    cblas_ssyrk(CblasRowMajor, CblasLower, CblasTrans, I(hi - lo), I(t), alpha, xp + lo, I(ldx),
                beta, c.data() + lo * ldc + lo, I(ldc));
    if (lo > 0)
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, I(hi - lo), I(lo), I(t), alpha,
                  xp + lo, I(ldx), xp, I(ldx), beta, c.data() + lo * ldc, I(ldc));
  }
#else
  if (beta != 1.0f) c.triangularView<Eigen::Lower>() *= beta;
  c.selfadjointView<Eigen::Lower>().rankUpdate(x.transpose(), alpha);
#endif
}

/// Copies the strict lower triangle of a square C onto its strict upper triangle.
inline void mirror_lower(Eigen::Ref<MatrixF> c) {
  const Index n = c.rows();
  constexpr Index kTile = 64;
#pragma omp parallel for schedule(dynamic, 1) if (n >= 512 && detail::host_threads() > 1)
  for (Index i0 = 0; i0 < n; i0 += kTile) {
    const Index i1 = std::min(n, i0 + kTile);
    for (Index j0 = i0; j0 < n; j0 += kTile) {
      const Index j1 = std::min(n, j0 + kTile);
      for (Index i = i0; i < i1; ++i)
        for (Index j = std::max(j0, i + 1); j < j1; ++j) c(i, j) = c(j, i);
    }
  }
}

/// C (m, n) <- C + alpha A B for A (m, k), B (k, n).
inline void multiply_add(float alpha, const Eigen::Ref<const MatrixF>& a,
                         const Eigen::Ref<const MatrixF>& b, Eigen::Ref<MatrixF> c) {
  if (c.size() == 0 || a.cols() == 0) return;
#if defined(FRAGILE_WITH_OPENBLAS)
  const auto I = [](Index v) { return static_cast<blasint>(v); };
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, I(c.rows()), I(c.cols()), I(a.cols()),
              alpha, a.data(), I(a.outerStride()), b.data(), I(b.outerStride()), 1.0f, c.data(),
              I(c.outerStride()));
#else
  c.noalias() += alpha * (a * b);
#endif
}

/// In place: the lower triangle of a symmetric positive definite A becomes L with L L^T = A (the
/// strict upper triangle is left as it was). False when A is not positive definite.
[[nodiscard]] inline bool cholesky_lower_in_place(Eigen::Ref<MatrixF> a) {
  if (a.rows() == 0) return true;
#if defined(FRAGILE_WITH_OPENBLAS)
  // A row-major lower triangle is a column-major upper one: LAPACK's U^T U = A gives L = U^T.
  const auto n = static_cast<blasint>(a.rows()), lda = static_cast<blasint>(a.outerStride());
  blasint info = 0;
  spotrf_("U", &n, a.data(), &lda, &info, 1);
  return info == 0;
#else
  Eigen::LLT<Eigen::Ref<MatrixF>, Eigen::Lower> llt(a);
  return llt.info() == Eigen::Success;
#endif
}

namespace detail {

/// [A 0; B C]^-1 = [A^-1 0; -C^-1 B A^-1  C^-1], recursively, so the work is in GEMM.
inline void invert_lower_eigen(Eigen::Ref<MatrixF> l) {
  const Index n = l.rows();
  if (n <= 96) {
    MatrixF inv = MatrixF::Identity(n, n);
    l.triangularView<Eigen::Lower>().solveInPlace(inv);
    l.triangularView<Eigen::Lower>() = inv;
    return;
  }
  const Index k = n / 2;
  invert_lower_eigen(l.topLeftCorner(k, k));
  invert_lower_eigen(l.bottomRightCorner(n - k, n - k));
  const MatrixF t = l.bottomLeftCorner(n - k, k) * l.topLeftCorner(k, k).triangularView<Eigen::Lower>();
  l.bottomLeftCorner(n - k, k).noalias() =
      -(l.bottomRightCorner(n - k, n - k).triangularView<Eigen::Lower>() * t);
}

}  // namespace detail

/// In place: the lower triangle of a nonsingular lower-triangular L becomes L^-1 (the strict
/// upper triangle is left as it was).
inline void invert_lower_in_place(Eigen::Ref<MatrixF> l) {
  if (l.rows() == 0) return;
#if defined(FRAGILE_WITH_OPENBLAS)
  const auto n = static_cast<blasint>(l.rows()), lda = static_cast<blasint>(l.outerStride());
  blasint info = 0;
  strtri_("U", "N", &n, l.data(), &lda, &info, 1, 1);
  if (info != 0) l.triangularView<Eigen::Lower>().setConstant(std::nanf(""));
#else
  detail::invert_lower_eigen(l);
#endif
}

}  // namespace fragile::linalg
