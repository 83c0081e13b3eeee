// GPTQ's layer Hessian H = 2/N sum_t x_t x_t^T, accumulated from activation batches streamed as
// (tokens, in_features) matrices, so a capture pass never has to hold all tokens at once.
// N counts token rows. (The reference GPTQ add_batch counts sequences instead; that only rescales
// H, which leaves the GPTQ solution unchanged and scales its reported loss.)
//
// @article{frantar2022gptq, title={GPTQ: Accurate Post-Training Quantization for Generative
//   Pre-trained Transformers}, author={Frantar, Elias and Ashkboos, Saleh and Hoefler, Torsten
//   and Alistarh, Dan}, journal={arXiv preprint arXiv:2210.17323}, year={2022}}
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/core/linalg.hpp"
#include "fragile/core/tensor.hpp"

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <string>

namespace fragile::quant {

class HessianAccumulator {
 public:
  HessianAccumulator() = default;
  explicit HessianAccumulator(Eigen::Index in_features, std::string name = {})
      : name_(std::move(name)), h_(MatrixF::Zero(in_features, in_features)) {
    require<ArgumentError>(in_features > 0, "HessianAccumulator{}: in_features = {}, expected > 0",
                           label(), in_features);
  }

  /// Adds a batch x: (tokens, in_features). H <- (N H + 2 x^T x) / (N + tokens).
  void add(const Eigen::Ref<const MatrixF>& x) {
    require<ShapeError>(x.cols() == h_.cols(),
                        "HessianAccumulator{}: activation batch is ({}, {}), expected (tokens, {})",
                        label(), x.rows(), x.cols(), h_.cols());
    if (x.rows() == 0) return;
    require<NumericError>(x.allFinite(),
                          "HessianAccumulator{}: activation batch ({}, {}) holds NaN or Inf",
                          label(), x.rows(), x.cols());
    const auto t = static_cast<std::int64_t>(x.rows());
    const float keep = static_cast<float>(static_cast<double>(tokens_) /
                                          static_cast<double>(tokens_ + t));
    tokens_ += t;
    const float gain = static_cast<float>(2.0 / static_cast<double>(tokens_));
    // The lower triangle (a SYRK: half a full product's flops), then mirrored: n^2 copies
    // against n^2 tokens multiply-adds.
    linalg::gram_lower(x, gain, keep, h_);
    linalg::mirror_lower(h_);
  }

  [[nodiscard]] Eigen::Index in_features() const noexcept { return h_.cols(); }
  [[nodiscard]] std::int64_t tokens() const noexcept { return tokens_; }
  /// H, (in, in), symmetric. Zero until a batch was added.
  [[nodiscard]] const MatrixF& hessian() const noexcept { return h_; }
  [[nodiscard]] const std::string& name() const noexcept { return name_; }

 private:
  [[nodiscard]] std::string label() const { return name_.empty() ? "" : " '" + name_ + "'"; }

  std::string name_;
  MatrixF h_;
  std::int64_t tokens_ = 0;
};

}  // namespace fragile::quant
