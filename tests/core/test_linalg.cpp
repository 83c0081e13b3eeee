#include "support/test_data.hpp"

#include <fragile/core/linalg.hpp>
#include <fragile/core/rng.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include <Eigen/Core>

namespace {

using Eigen::Index;
using fragile::MatrixF;

MatrixF normal_matrix(Index rows, Index cols, std::uint64_t seed) {
  fragile::Rng rng(seed);
  MatrixF m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<float>(rng.normal());
  return m;
}

double max_rel(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  return (a - b).cwiseAbs().maxCoeff() / b.cwiseAbs().maxCoeff();
}

}  // namespace

TEST_CASE("gram_lower fills the lower triangle with alpha X^T X + beta C", "[core][linalg]") {
  // 300 x 300 from 200 rows is above the size at which the row bands run on several threads;
  // 37 columns is not a multiple of the 16-column band rounding.
  for (const auto [t, n] : {std::pair<Index, Index>{9, 37}, {200, 300}, {64, 515}}) {
    const MatrixF x = normal_matrix(t, n, static_cast<std::uint64_t>(n));
    MatrixF c = normal_matrix(n, n, 7);
    const MatrixF before = c;
    fragile::linalg::gram_lower(x, 0.5f, 0.25f, c);
    const Eigen::MatrixXd expected =
        0.5 * (x.cast<double>().transpose() * x.cast<double>()) + 0.25 * before.cast<double>();
    const Eigen::MatrixXd got = c.cast<double>();
    Eigen::MatrixXd lower_got = got.triangularView<Eigen::Lower>();
    Eigen::MatrixXd lower_expected = expected.triangularView<Eigen::Lower>();
    CHECK(max_rel(lower_got, lower_expected) < 1e-5);
    // the strict upper triangle is untouched
    CHECK(c.triangularView<Eigen::StrictlyUpper>().toDenseMatrix() ==
          before.triangularView<Eigen::StrictlyUpper>().toDenseMatrix());
    fragile::linalg::mirror_lower(c);
    CHECK(c == c.transpose());
  }
}

TEST_CASE("gram_lower gives the same bytes run to run", "[core][linalg]") {
  const MatrixF x = normal_matrix(256, 400, 3);
  MatrixF a = MatrixF::Zero(400, 400), b = a;
  fragile::linalg::gram_lower(x, 1.0f, 0.0f, a);
  fragile::linalg::gram_lower(x, 1.0f, 0.0f, b);
  CHECK(a == b);
}

TEST_CASE("cholesky_lower_in_place and invert_lower_in_place against double precision",
          "[core][linalg]") {
  for (Index n : {1, 50, 333}) {
    const MatrixF x = normal_matrix(2 * n + 3, n, static_cast<std::uint64_t>(n) + 11);
    MatrixF h = x.transpose() * x / static_cast<float>(n);
    h.diagonal().array() += 0.1f;
    MatrixF l = h;
    REQUIRE(fragile::linalg::cholesky_lower_in_place(l));
    const MatrixF lower = l.triangularView<Eigen::Lower>();
    const Eigen::MatrixXd ld = lower.cast<double>();
    CHECK(max_rel(ld * ld.transpose(), h.cast<double>()) < 1e-5);
    CHECK((lower.diagonal().array() > 0.0f).all());

    MatrixF inv = lower;
    inv.triangularView<Eigen::StrictlyUpper>().setConstant(5.0f);  // must stay as it was
    fragile::linalg::invert_lower_in_place(inv);
    for (Index i = 0; i < n; ++i)
      for (Index j = i + 1; j < n; ++j) REQUIRE(inv(i, j) == 5.0f);
    const MatrixF inv_lower = inv.triangularView<Eigen::Lower>();
    const Eigen::MatrixXd prod = inv_lower.cast<double>() * ld;
    CHECK((prod - Eigen::MatrixXd::Identity(n, n)).cwiseAbs().maxCoeff() < 1e-3);
  }
  MatrixF indefinite = MatrixF::Identity(3, 3);
  indefinite(2, 2) = -1.0f;
  CHECK_FALSE(fragile::linalg::cholesky_lower_in_place(indefinite));
}

TEST_CASE("multiply_add adds alpha A B onto blocks of row-major matrices", "[core][linalg]") {
  const MatrixF a = normal_matrix(40, 70, 1), b = normal_matrix(90, 130, 2);
  MatrixF c = normal_matrix(50, 120, 3);
  const MatrixF before = c;
  // blocks with outer strides unlike their widths
  fragile::linalg::multiply_add(-1.0f, a.leftCols(30), b.block(5, 10, 30, 100),
                                c.block(3, 20, 40, 100));
  Eigen::MatrixXd expected = before.cast<double>();
  expected.block(3, 20, 40, 100) -=
      a.leftCols(30).cast<double>() * b.block(5, 10, 30, 100).cast<double>();
  CHECK(max_rel(c.cast<double>(), expected) < 1e-5);
  CHECK(c.leftCols(20) == before.leftCols(20));
}
