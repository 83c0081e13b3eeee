// Layer-output reconstruction objective shared by the learned quantizers (AdaRound, LWC):
// L(dW) = 1/B sum_{t in batch} ||dW x_t||^2 and its gradient 2/B dW X_b^T X_b, either over all
// captured tokens (through the Gram matrix G = X^T X / N, one (out, in) x (in, in) GEMM per
// step) or over a seeded random mini-batch of token rows.
#pragma once

#include "fragile/core/rng.hpp"
#include "fragile/core/tensor.hpp"
#include "fragile/quant/quantizer.hpp"

#include <Eigen/Core>

#include <cstdint>
#include <numeric>
#include <vector>

namespace fragile::quant::detail {

/// out = a * b. Small products skip Eigen's blocked (and OpenMP-parallel) GEMM: the learned
/// quantizers run thousands of small steps, where thread start-up costs more than the work.
template <class A, class B>
void product_into(MatrixF& out, const A& a, const B& b) {
  if (static_cast<double>(a.rows()) * static_cast<double>(a.cols()) * static_cast<double>(b.cols()) <
      static_cast<double>(1 << 21)) {
    out = a.lazyProduct(b);
  } else {
    out.noalias() = a * b;
  }
}

class OutputObjective {
 public:
  explicit OutputObjective(const LayerCapture::ActivationMap& x) : x_(x) {
    gram_.noalias() = x.transpose() * x;
    gram_ /= static_cast<float>(x.rows());
  }

  [[nodiscard]] Index tokens() const noexcept { return x_.rows(); }
  [[nodiscard]] const MatrixF& gram() const noexcept { return gram_; }

  /// Mean over all tokens of ||dW x_t||^2.
  [[nodiscard]] double value(const MatrixF& dw) const {
    MatrixF t;
    product_into(t, dw, gram_);
    return static_cast<double>((t.array() * dw.array()).cast<double>().sum());
  }
  /// Gradient of value() with respect to dW: 2 dW G.
  void gradient(const MatrixF& dw, MatrixF& grad) const {
    product_into(grad, dw, gram_);
    grad *= 2.0f;
  }

  /// value and gradient on the token rows `rows` only.
  double batch_gradient(const MatrixF& dw, const std::vector<Index>& rows, MatrixF& grad) const {
    MatrixF xb(static_cast<Index>(rows.size()), x_.cols());
    for (std::size_t i = 0; i < rows.size(); ++i) xb.row(static_cast<Index>(i)) = x_.row(rows[i]);
    MatrixF dy;  // (out, B)
    product_into(dy, dw, xb.transpose());
    const float inv_b = 1.0f / static_cast<float>(rows.size());
    product_into(grad, dy, xb);
    grad *= 2.0f * inv_b;
    return static_cast<double>(dy.cast<double>().squaredNorm()) * inv_b;
  }

 private:
  LayerCapture::ActivationMap x_;
  MatrixF gram_;
};

/// Adam / AdamW moments for one parameter array (PyTorch's update rule and defaults).
struct AdamMoments {
  Eigen::ArrayXXf m, v;
  std::int64_t t = 0;

  void reset(Index rows, Index cols) {
    m = Eigen::ArrayXXf::Zero(rows, cols);
    v = Eigen::ArrayXXf::Zero(rows, cols);
    t = 0;
  }
  template <class P, class G>
  void step(P& param, const G& grad, double lr, double weight_decay = 0.0, double beta1 = 0.9,
            double beta2 = 0.999, double eps = 1e-8) {
    ++t;
    if (weight_decay != 0.0) param *= static_cast<float>(1.0 - lr * weight_decay);  // AdamW
    m = static_cast<float>(beta1) * m + static_cast<float>(1.0 - beta1) * grad;
    v = static_cast<float>(beta2) * v + static_cast<float>(1.0 - beta2) * grad.square();
    const auto c1 = static_cast<float>(1.0 - std::pow(beta1, static_cast<double>(t)));
    const auto c2 = static_cast<float>(1.0 - std::pow(beta2, static_cast<double>(t)));
    param -= static_cast<float>(lr) * (m / c1) / ((v / c2).sqrt() + static_cast<float>(eps));
  }
};

/// Token rows of a shuffled epoch, split into batches of `batch` (the last may be shorter).
inline std::vector<std::vector<Index>> epoch_batches(Index tokens, Index batch, Rng& rng) {
  std::vector<Index> order(static_cast<std::size_t>(tokens));
  std::iota(order.begin(), order.end(), Index{0});
  rng.shuffle(order);
  std::vector<std::vector<Index>> out;
  for (Index b = 0; b < tokens; b += batch)
    out.emplace_back(order.begin() + b, order.begin() + std::min(b + batch, tokens));
  return out;
}

/// (rows, cols) matrix holding each element's group scale / zero.
inline MatrixF expand_groups(const MatrixF& per_group, const GroupLayout& groups) {
  MatrixF out(per_group.rows(), groups.cols);
  for (Index g = 0; g < groups.num_groups; ++g)
    out.middleCols(groups.begin(g), groups.width(g)) =
        per_group.col(g).replicate(1, groups.width(g));
  return out;
}

}  // namespace fragile::quant::detail
