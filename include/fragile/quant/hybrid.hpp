// Channel-split hybrid quantization (paper 002, "Layer-wise high-impact parameter ratio
// optimization in post-training quantization for LLMs"): given a per-input-channel importance
// (e.g. the mean empirical Fisher diagonal over each weight column) and a ratio r, the
// round(r * in) most important input channels (columns) are quantized by a quantizer QH at b_H
// bits and the rest by QN at the spec's bits (e.g. AdaRound at 3 bits + LWC at 2 bits). Each part
// is an (out, |part|) matrix with its own group layout along its own columns, quantized with the
// matching columns of the activations. Storage: both parts plus the channel index, stored as
// the cheaper of an in-bit mask or |H| indices of ceil(log2 in) bits.
// Ties in importance go to the lower column index, so the split is deterministic.
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/core/tensor.hpp"
#include "fragile/quant/quantizer.hpp"
#include "fragile/quant/result.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

namespace fragile::quant {

/// Result of a channel split: two uniformly quantized parts and the channel index.
struct SplitQuantizedWeight {
  Index rows = 0, cols = 0;
  std::vector<Index> high_channels;    // ascending original column indices quantized by QH
  std::vector<Index> normal_channels;  // the rest, ascending
  QuantizedWeight high, normal;        // (rows, |high|), (rows, |normal|); empty when a part is
  double loss = 0.0;                   // output MSE of the combined weight (weight SSE without
  LossKind loss_kind = LossKind::kNone;  // activations)

  /// Bits of the channel index: min(in-bit mask, |H| * ceil(log2 in)).
  [[nodiscard]] std::uint64_t index_bits() const noexcept {
    const auto in = static_cast<std::uint64_t>(cols);
    const auto width = static_cast<std::uint64_t>(std::bit_width(in > 1 ? in - 1 : 1));
    return std::min(in, static_cast<std::uint64_t>(high_channels.size()) * width);
  }
  [[nodiscard]] std::uint64_t storage_bits() const noexcept {
    return high.storage_bits() + normal.storage_bits() + index_bits();
  }
  [[nodiscard]] double bits_per_weight() const noexcept {
    return rows * cols == 0 ? 0.0
                            : static_cast<double>(storage_bits()) / static_cast<double>(rows * cols);
  }
  [[nodiscard]] MatrixF dequantize() const {
    MatrixF out(rows, cols);
    if (!high_channels.empty()) {
      const MatrixF h = high.dequantize();
      for (std::size_t j = 0; j < high_channels.size(); ++j)
        out.col(high_channels[j]) = h.col(static_cast<Index>(j));
    }
    if (!normal_channels.empty()) {
      const MatrixF n = normal.dequantize();
      for (std::size_t j = 0; j < normal_channels.size(); ++j)
        out.col(normal_channels[j]) = n.col(static_cast<Index>(j));
    }
    return out;
  }
};

/// The top round(ratio * n) entries of `importance` (ties to the lower index), ascending.
inline std::vector<Index> top_channels(std::span<const float> importance, double ratio) {
  const auto n = static_cast<Index>(importance.size());
  const auto k = std::clamp<Index>(static_cast<Index>(std::llround(ratio * static_cast<double>(n))), 0, n);
  std::vector<Index> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), Index{0});
  std::stable_sort(order.begin(), order.end(), [&](Index a, Index b) {
    return importance[static_cast<std::size_t>(a)] > importance[static_cast<std::size_t>(b)];
  });
  order.resize(static_cast<std::size_t>(k));
  std::sort(order.begin(), order.end());
  return order;
}

template <class QH, class QN>
struct ChannelSplit {
  static_assert(check_quantizer<QH>() && check_quantizer<QN>());
  static constexpr Needs needs = QH::needs | QN::needs | Needs::kGrads;

  QH high{};
  QN normal{};
  double ratio = 0.05;  // fraction of input channels quantized by `high`
  int high_bits = 3;    // b_H; the spec's bits are b_N

  struct State {
    std::vector<Index> high_channels, normal_channels;
    MatrixF w_high, w_normal;          // column subsets
    MatrixF x_high, x_normal;          // matching activation columns (when captured)
  };

  [[nodiscard]] SplitQuantizedWeight quantize(WeightRef w, const QuantSpec& spec,
                                              const LayerCapture& capture) const {
    check_inputs("ChannelSplit", w, spec, capture,
                 static_cast<Needs>(static_cast<unsigned>(needs) & ~static_cast<unsigned>(Needs::kGrads)));
    require<ArgumentError>(ratio >= 0.0 && ratio <= 1.0,
                           "ChannelSplit{}: ratio = {}, expected in [0, 1]", capture.label(), ratio);
    QuantSpec spec_high = spec;
    spec_high.bits = high_bits;
    validate(spec_high, "ChannelSplit" + capture.label() + " high_bits");
    const auto importance = capture.channel_importance();
    require<ShapeError>(static_cast<Index>(importance.size()) == w.cols(),
                        "ChannelSplit{}: channel importance has {} entries but the weight is ({}, "
                        "{}); expected {}",
                        capture.label(), importance.size(), w.rows(), w.cols(), w.cols());
    for (float v : importance)
      require<NumericError>(std::isfinite(v), "ChannelSplit{}: channel importance holds NaN or Inf",
                            capture.label());

    State st;
    st.high_channels = top_channels(importance, ratio);
    std::vector<bool> is_high(static_cast<std::size_t>(w.cols()), false);
    for (Index c : st.high_channels) is_high[static_cast<std::size_t>(c)] = true;
    for (Index c = 0; c < w.cols(); ++c)
      if (!is_high[static_cast<std::size_t>(c)]) st.normal_channels.push_back(c);

    SplitQuantizedWeight out;
    out.rows = w.rows();
    out.cols = w.cols();
    out.high_channels = st.high_channels;
    out.normal_channels = st.normal_channels;
    out.high = part(w, spec_high, capture, st.high_channels, high, st.w_high, st.x_high, "high");
    out.normal = part(w, spec, capture, st.normal_channels, normal, st.w_normal, st.x_normal, "normal");
    const MatrixF d = out.dequantize();
    if (capture.has_activations()) {
      out.loss = output_error(w, d, capture.activations());
      out.loss_kind = LossKind::kOutputMse;
    } else {
      out.loss = weight_sse(w, d);
      out.loss_kind = LossKind::kWeightSse;
    }
    return out;
  }

 private:
  template <class Q>
  static QuantizedWeight part(WeightRef w, const QuantSpec& spec, const LayerCapture& capture,
                              const std::vector<Index>& channels, const Q& quantizer,
                              MatrixF& w_part, MatrixF& x_part, const char* which) {
    if (channels.empty()) return QuantizedWeight(w.rows(), 0, spec);
    const auto k = static_cast<Index>(channels.size());
    w_part.resize(w.rows(), k);
    for (Index j = 0; j < k; ++j) w_part.col(j) = w.col(channels[static_cast<std::size_t>(j)]);
    LayerCapture sub(capture.name().empty() ? std::string(which) : capture.name() + "/" + which);
    require<ArgumentError>(capture.has_activations() || capture.hessian() == nullptr,
                           "ChannelSplit{}: splitting a captured Hessian is not supported; "
                           "capture the activations instead",
                           capture.label());
    if (capture.has_activations()) {
      const auto x = capture.activations();
      x_part.resize(x.rows(), k);
      for (Index j = 0; j < k; ++j) x_part.col(j) = x.col(channels[static_cast<std::size_t>(j)]);
      sub.with_activations(x_part);
    }
    return quantizer.quantize(w_part, spec, sub);
  }
};

}  // namespace fragile::quant
