// Learnable weight clipping (OmniQuant LWC) and the cheaper AWQ-style clip-ratio grid search.
//
// LWC: per row, or per (row, group) when the spec has groups, two clip factors through a sigmoid,
//   u = sigmoid(g_up) max(W_g, 0), l = sigmoid(g_low) min(W_g, 0), s = (u - l) / maxq,
//   z = round(-l / s), W^ = s (clamp(round(W / s) + z, 0, maxq) - z),
// asymmetric only, factors initialised at 4.0 (sigmoid = 0.982), trained with AdamW (lr 1e-2,
// weight decay 0 by default) on the layer-output MSE mean((W^ - W) x)^2 over seeded shuffled token
// batches, `epochs` passes; round() uses a straight-through estimator, the zero point carries no
// gradient (OmniQuant rounds it outside the graph). The range includes 0 (GPTQ's convention) so
// the zero point always fits in `bits` bits. With `keep_best` (default) the clip factors with the
// lowest full-calibration-set output MSE seen at the start or after any epoch are returned
// (OmniQuant returns the last epoch's; the straight-through gradient can overshoot).
// ClipRatioSearch (AWQ auto_clip): per (row, group) try the range p [xmin, xmax],
// p = 1 - i/grid for i < max_shrink * grid, and keep the p with the lowest output error of that
// group's contribution, mean_t ((W^_g - W_g) . x_t,g)^2.
//
// @inproceedings{shao2024omniquant, title={OmniQuant: Omnidirectionally Calibrated Quantization
//   for Large Language Models}, author={Shao, Wenqi and Chen, Mengzhao and Zhang, Zhaoyang and
//   Xu, Peng and Zhao, Lirui and Li, Zhiqian and Zhang, Kaipeng and Gao, Peng and Qiao, Yu and
//   Luo, Ping}, booktitle={ICLR}, year={2024}}
// @inproceedings{lin2024awq, title={AWQ: Activation-aware Weight Quantization for LLM Compression
//   and Acceleration}, author={Lin, Ji and Tang, Jiaming and Tang, Haotian and Yang, Shang and
//   Chen, Wei-Ming and Wang, Wei-Chen and Xiao, Guangxuan and Dang, Xingyu and Gan, Chuang and
//   Han, Song}, booktitle={MLSys}, year={2024}}
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/core/rng.hpp"
#include "fragile/core/tensor.hpp"
#include "fragile/quant/detail/output_objective.hpp"
#include "fragile/quant/quantizer.hpp"
#include "fragile/quant/result.hpp"
#include "fragile/quant/rtn.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace fragile::quant {

namespace detail {

/// Per (row, group) range [min(W_g, 0), max(W_g, 0)], all-zero groups as [-1, 1].
inline void group_ranges(const MatrixF& w, const GroupLayout& groups, MatrixF& lo, MatrixF& hi) {
  lo.resize(w.rows(), groups.num_groups);
  hi.resize(w.rows(), groups.num_groups);
  for (Index g = 0; g < groups.num_groups; ++g) {
    const auto block = w.middleCols(groups.begin(g), groups.width(g));
    lo.col(g) = block.rowwise().minCoeff().cwiseMin(0.0f);
    hi.col(g) = block.rowwise().maxCoeff().cwiseMax(0.0f);
  }
  for (Index i = 0; i < lo.size(); ++i)
    if (lo.data()[i] == 0.0f && hi.data()[i] == 0.0f) {
      lo.data()[i] = -1.0f;
      hi.data()[i] = 1.0f;
    }
}

/// QuantizedWeight from per-(row, group) scales/zeros (codes by nearest rounding).
inline QuantizedWeight quantize_on_grid(const MatrixF& w, const QuantSpec& spec,
                                        const MatrixF& scales, const MatrixF& zeros) {
  QuantizedWeight q(w.rows(), w.cols(), spec);
  q.scales = scales;
  q.zeros = zeros;
  const auto maxq = static_cast<float>(spec.max_code());
  std::vector<std::uint8_t> row(static_cast<std::size_t>(w.cols()));
  for (Index r = 0; r < w.rows(); ++r) {
    for (Index c = 0; c < w.cols(); ++c) {
      const Index g = q.groups.group_of(c);
      row[static_cast<std::size_t>(c)] =
          static_cast<std::uint8_t>(quantize_code(w(r, c), scales(r, g), zeros(r, g), maxq));
    }
    q.codes.pack_row(r, row.data());
  }
  return q;
}

}  // namespace detail

/// OmniQuant learnable weight clipping.
struct Lwc {
  static constexpr Needs needs = Needs::kActivations;

  int epochs = 20;
  Index batch_tokens = 128;
  double lr = 1e-2;
  double weight_decay = 0.0;
  double init = 4.0;  // initial clip logit (sigmoid(4) = 0.982)
  std::uint64_t seed = 0;
  bool keep_best = true;

  struct State {
    MatrixF w;
    GroupLayout groups;
    MatrixF lo, hi;                 // (rows, groups) unclipped ranges
    Eigen::ArrayXXf up, low;        // clip logits (rows, groups)
    detail::AdamMoments adam_up, adam_low;
    double initial_objective = 0.0;  // output MSE (mean over tokens and outputs) at init
    double final_objective = 0.0;    // same after training
    std::vector<double> epoch_loss;  // mean batch loss per epoch
  };

  /// Scales and zeros for the current clip logits.
  static void grid(const State& st, const QuantSpec& spec, MatrixF& scales, MatrixF& zeros) {
    const auto maxq = static_cast<float>(spec.max_code());
    const Eigen::ArrayXXf su = 1.0f / (1.0f + (-st.up).exp());
    const Eigen::ArrayXXf sl = 1.0f / (1.0f + (-st.low).exp());
    const Eigen::ArrayXXf u = su * st.hi.array(), l = sl * st.lo.array();
    scales = ((u - l) / maxq).matrix();
    zeros.resize(scales.rows(), scales.cols());
    for (Index r = 0; r < zeros.rows(); ++r)
      for (Index g = 0; g < zeros.cols(); ++g)
        zeros(r, g) = std::clamp(round_half_even(-l(r, g) / scales(r, g)), 0.0f, maxq);
  }

  [[nodiscard]] State start(WeightRef w, const QuantSpec& spec, const LayerCapture& capture) const {
    check_inputs("Lwc", w, spec, capture, needs);
    require<ArgumentError>(!spec.symmetric,
                           "Lwc{}: learnable weight clipping is asymmetric; set spec.symmetric = "
                           "false",
                           capture.label());
    require<ArgumentError>(epochs >= 0 && batch_tokens > 0,
                           "Lwc{}: epochs = {}, batch_tokens = {}; expected >= 0 and > 0",
                           capture.label(), epochs, batch_tokens);
    State st;
    st.w = w;
    st.groups = GroupLayout(w.cols(), spec.group_size);
    detail::group_ranges(st.w, st.groups, st.lo, st.hi);
    st.up = Eigen::ArrayXXf::Constant(w.rows(), st.groups.num_groups, static_cast<float>(init));
    st.low = st.up;
    st.adam_up.reset(w.rows(), st.groups.num_groups);
    st.adam_low.reset(w.rows(), st.groups.num_groups);
    return st;
  }

  /// One AdamW step on the token rows `batch`; returns the batch loss.
  double step(State& st, const QuantSpec& spec, const detail::OutputObjective& obj,
              const std::vector<Index>& batch) const {
    const auto maxq = static_cast<float>(spec.max_code());
    MatrixF scales, zeros;
    grid(st, spec, scales, zeros);
    const Eigen::ArrayXXf s = detail::expand_groups(scales, st.groups).array();
    const Eigen::ArrayXXf z = detail::expand_groups(zeros, st.groups).array();
    const Eigen::ArrayXXf ratio = st.w.array() / s;
    Eigen::ArrayXXf level = ratio;
    for (Index i = 0; i < level.size(); ++i) level.data()[i] = round_half_even(level.data()[i]);
    level += z;
    const Eigen::ArrayXXf code = level.min(maxq).max(0.0f);
    const MatrixF dw = (s * (code - z)).matrix() - st.w;
    MatrixF grad_wq;
    double loss = obj.batch_gradient(dw, batch, grad_wq);
    // mean over outputs too (MSELoss): scale loss and gradient by 1/rows
    const float inv_rows = 1.0f / static_cast<float>(st.w.rows());
    loss *= inv_rows;
    grad_wq *= inv_rows;
    // dW^/ds = (code - z) - [inside] W / s  (straight-through round, zero point constant)
    const Eigen::ArrayXXf inside = ((level >= 0.0f) && (level <= maxq)).cast<float>();
    const Eigen::ArrayXXf gs = grad_wq.array() * ((code - z) - inside * ratio);
    Eigen::ArrayXXf gs_group(st.w.rows(), st.groups.num_groups);
    for (Index g = 0; g < st.groups.num_groups; ++g)
      gs_group.col(g) = gs.middleCols(st.groups.begin(g), st.groups.width(g)).rowwise().sum();
    // s = (sig(up) hi - sig(low) lo) / maxq
    const Eigen::ArrayXXf su = 1.0f / (1.0f + (-st.up).exp());
    const Eigen::ArrayXXf sl = 1.0f / (1.0f + (-st.low).exp());
    const Eigen::ArrayXXf g_up = gs_group * su * (1.0f - su) * st.hi.array() / maxq;
    const Eigen::ArrayXXf g_low = -gs_group * sl * (1.0f - sl) * st.lo.array() / maxq;
    st.adam_up.step(st.up, g_up, lr, weight_decay);
    st.adam_low.step(st.low, g_low, lr, weight_decay);
    return loss;
  }

  [[nodiscard]] QuantizedWeight finish(const State& st, const QuantSpec& spec,
                                       const detail::OutputObjective& obj) const {
    MatrixF scales, zeros;
    grid(st, spec, scales, zeros);
    QuantizedWeight q = detail::quantize_on_grid(st.w, spec, scales, zeros);
    q.loss = obj.value(q.dequantize() - st.w);
    q.loss_kind = LossKind::kOutputMse;
    return q;
  }

  [[nodiscard]] QuantizedWeight quantize(WeightRef w, const QuantSpec& spec,
                                         const LayerCapture& capture, State* state_out) const {
    State st = start(w, spec, capture);
    const detail::OutputObjective obj(capture.activations());
    const double per_output = 1.0 / static_cast<double>(w.rows());
    st.initial_objective = finish(st, spec, obj).loss * per_output;
    Rng rng(seed);
    double best = st.initial_objective;
    Eigen::ArrayXXf best_up = st.up, best_low = st.low;
    for (int e = 0; e < epochs; ++e) {
      double sum = 0.0;
      const auto batches = detail::epoch_batches(obj.tokens(), batch_tokens, rng);
      for (const auto& b : batches) sum += step(st, spec, obj, b);
      st.epoch_loss.push_back(sum / static_cast<double>(batches.size()));
      if (keep_best) {
        const double now = finish(st, spec, obj).loss * per_output;
        if (now < best) {
          best = now;
          best_up = st.up;
          best_low = st.low;
        }
      }
    }
    if (keep_best) {
      st.up = best_up;
      st.low = best_low;
    }
    QuantizedWeight q = finish(st, spec, obj);
    st.final_objective = q.loss * per_output;
    if (state_out) *state_out = std::move(st);
    return q;
  }
  [[nodiscard]] QuantizedWeight quantize(WeightRef w, const QuantSpec& spec,
                                         const LayerCapture& capture) const {
    return quantize(w, spec, capture, nullptr);
  }
};

/// AWQ-style clip-ratio grid search on the output error of each group.
struct ClipRatioSearch {
  static constexpr Needs needs = Needs::kActivations;

  int grid = 20;
  double max_shrink = 0.5;

  struct State {
    MatrixF ratio;  // (rows, groups): the chosen p
  };

  [[nodiscard]] QuantizedWeight quantize(WeightRef w_in, const QuantSpec& spec,
                                         const LayerCapture& capture, State* state_out) const {
    check_inputs("ClipRatioSearch", w_in, spec, capture, needs);
    require<ArgumentError>(grid > 0 && max_shrink >= 0.0 && max_shrink < 1.0,
                           "ClipRatioSearch{}: grid = {}, max_shrink = {}; expected grid > 0 and "
                           "max_shrink in [0, 1)",
                           capture.label(), grid, max_shrink);
    const MatrixF w = w_in;
    const detail::OutputObjective obj(capture.activations());
    const GroupLayout groups(w.cols(), spec.group_size);
    MatrixF lo, hi;
    detail::group_ranges(w, groups, lo, hi);
    const auto maxq = static_cast<float>(spec.max_code());
    MatrixF scales(w.rows(), groups.num_groups), zeros(w.rows(), groups.num_groups);
    State st;
    st.ratio = MatrixF::Ones(w.rows(), groups.num_groups);
    const int steps = std::max(1, static_cast<int>(max_shrink * grid));
    for (Index g = 0; g < groups.num_groups; ++g) {
      const Index b = groups.begin(g), n = groups.width(g);
      const MatrixF gram_g = obj.gram().block(b, b, n, n);
      const auto wg = w.middleCols(b, n);
      Eigen::VectorXd best = Eigen::VectorXd::Constant(w.rows(), std::numeric_limits<double>::infinity());
      MatrixF dq(w.rows(), n);
      std::vector<GridParams> params(static_cast<std::size_t>(w.rows()));
      for (int i = 0; i < steps; ++i) {
        const auto p = static_cast<float>(1.0 - static_cast<double>(i) / grid);
        for (Index r = 0; r < w.rows(); ++r) {
          params[static_cast<std::size_t>(r)] = grid_from_range(p * lo(r, g), p * hi(r, g), spec);
          const GridParams& gp = params[static_cast<std::size_t>(r)];
          for (Index c = 0; c < n; ++c) dq(r, c) = quantize_value(wg(r, c), gp.scale, gp.zero, maxq) - wg(r, c);
        }
        const Eigen::VectorXd err =
            ((dq * gram_g).array() * dq.array()).rowwise().sum().cast<double>();
        for (Index r = 0; r < w.rows(); ++r)
          if (err(r) < best(r)) {
            best(r) = err(r);
            scales(r, g) = params[static_cast<std::size_t>(r)].scale;
            zeros(r, g) = params[static_cast<std::size_t>(r)].zero;
            st.ratio(r, g) = p;
          }
      }
    }
    QuantizedWeight q = detail::quantize_on_grid(w, spec, scales, zeros);
    q.loss = obj.value(q.dequantize() - w);
    q.loss_kind = LossKind::kOutputMse;
    if (state_out) *state_out = std::move(st);
    return q;
  }
  [[nodiscard]] QuantizedWeight quantize(WeightRef w, const QuantSpec& spec,
                                         const LayerCapture& capture) const {
    return quantize(w, spec, capture, nullptr);
  }
};

}  // namespace fragile::quant
