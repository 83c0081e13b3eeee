// Tensors: xtensor containers own N-d data (row-major); linear algebra sees them through
// zero-copy Eigen maps. Everything is row-major so that a (T, C) activation or an (out, in)
// weight has the same memory in both libraries and in the raw-pointer kernels.
#pragma once

#include "fragile/core/error.hpp"

#include <Eigen/Core>
#include <xtensor/xtensor.hpp>

#include <cstddef>
#include <span>
#include <string_view>

namespace fragile {

template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixF = RowMatrix<float>;
using MatrixD = RowMatrix<double>;
using VectorF = Eigen::VectorXf;

using MatrixMap = Eigen::Map<MatrixF>;
using ConstMatrixMap = Eigen::Map<const MatrixF>;
using VectorMap = Eigen::Map<VectorF>;
using ConstVectorMap = Eigen::Map<const VectorF>;

/// Owning f32 tensors of static rank.
template <std::size_t N>
using Tensor = xt::xtensor<float, N, xt::layout_type::row_major>;

/// Eigen view of a raw row-major (rows x cols) buffer.
inline MatrixMap as_matrix(float* data, std::size_t rows, std::size_t cols) {
  return {data, static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(cols)};
}
inline ConstMatrixMap as_matrix(const float* data, std::size_t rows, std::size_t cols) {
  return {data, static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(cols)};
}

/// Eigen view of a rank-2 tensor (no copy).
inline MatrixMap as_matrix(Tensor<2>& t) { return as_matrix(t.data(), t.shape(0), t.shape(1)); }
inline ConstMatrixMap as_matrix(const Tensor<2>& t) {
  return as_matrix(t.data(), t.shape(0), t.shape(1));
}

/// Eigen view of a rank-1 tensor (no copy).
inline VectorMap as_vector(Tensor<1>& t) { return {t.data(), static_cast<Eigen::Index>(t.size())}; }
inline ConstVectorMap as_vector(const Tensor<1>& t) {
  return {t.data(), static_cast<Eigen::Index>(t.size())};
}

/// A rank-N tensor viewed as a matrix with the leading N-1 axes flattened into rows,
/// e.g. activations (B, T, C) -> (B*T, C).
template <std::size_t N>
MatrixMap as_rows(Tensor<N>& t) {
  static_assert(N >= 1, "as_rows needs a tensor of rank >= 1");
  const std::size_t cols = t.shape(N - 1);
  return as_matrix(t.data(), cols == 0 ? 0 : t.size() / cols, cols);
}

/// Flat span over a tensor's elements.
template <std::size_t N>
std::span<float> as_span(Tensor<N>& t) {
  return {t.data(), t.size()};
}
template <std::size_t N>
std::span<const float> as_span(const Tensor<N>& t) {
  return {t.data(), t.size()};
}

/// Throws ShapeError unless `t` has exactly `expected` extents; `what` names the tensor.
template <std::size_t N>
void require_shape(const Tensor<N>& t, const std::array<std::size_t, N>& expected,
                   std::string_view what) {
  bool same = true;
  for (std::size_t i = 0; i < N; ++i) same = same && t.shape(i) == expected[i];
  if (!same)
    raise<ShapeError>("{}: shape [{}], expected [{}]", what, fmt::join(t.shape(), ", "),
                      fmt::join(expected, ", "));
}

}  // namespace fragile
