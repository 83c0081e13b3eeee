// Per-input-channel importance of every linear layer (paper 002, Sec. 3.1 and Eq. 4): the mean
// empirical Fisher diagonal of each weight column,
//   importance_l[j] = 1/out sum_i sum_n (dL_n/dW_l[i, j])^2,
// from one capture pass (per-sequence squared weight gradients, data labels). The ranking picks
// the high-impact channels of quant::ChannelSplit. The sum over windows is kept unnormalised:
// a constant factor does not change the ranking.
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/model/capture.hpp"

#include <cstddef>
#include <vector>

namespace fragile::sensitivity {

/// Capture observer accumulating each layer's column sums of (dL_n/dW)^2.
class ChannelImportance {
 public:
  explicit ChannelImportance(const std::vector<model::LinearInfo>& linears) {
    for (const auto& li : linears) {
      sums_.emplace_back(li.in_features, 0.0);
      rows_.push_back(li.out_features);
    }
  }

  [[nodiscard]] model::CaptureNeeds needs() const noexcept { return {.weight_grad_sq = true}; }

  void observe(const model::LayerBatch& c) {
    if (!c.weight_grad_sq) return;
    auto& s = sums_.at(c.layer->index);
    const std::size_t in = c.layer->in_features;
    const float* f = c.weight_grad_sq.host().data();
    for (std::size_t i = 0; i < c.layer->out_features; ++i)
      for (std::size_t j = 0; j < in; ++j) s[j] += f[i * in + j];
  }

  /// importance_l (in_features), as floats for quant::LayerCapture::with_channel_importance.
  [[nodiscard]] std::vector<float> importance(std::size_t layer) const {
    require<ArgumentError>(layer < sums_.size(), "ChannelImportance: layer {} out of range ({})",
                           layer, sums_.size());
    std::vector<float> out(sums_[layer].size());
    for (std::size_t j = 0; j < out.size(); ++j)
      out[j] = static_cast<float>(sums_[layer][j] / static_cast<double>(rows_[layer]));
    return out;
  }

 private:
  std::vector<std::vector<double>> sums_;
  std::vector<std::size_t> rows_;
};

static_assert(model::CaptureObserver<ChannelImportance>);

}  // namespace fragile::sensitivity
