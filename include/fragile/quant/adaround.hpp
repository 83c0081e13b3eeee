// AdaRound: learn, per weight, whether to round down or up on a fixed RTN grid so that the layer
// output rather than the weight is reconstructed.
//   W~ = s * (clamp(floor(W/s) + h(V) + z, 0, maxq) - z),
//   h(V) = clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1), zeta = 1.1, gamma = -0.1,
//   minimize 1/N sum_t ||(W~ - W) x_t||^2 + lambda sum (1 - |2 h(V) - 1|^beta),
// V initialised so that h(V) = W/s - floor(W/s) (W~ = W), lambda = 0.01, no regulariser during a
// 20% warm-up, then beta annealed linearly 20 -> 2, Adam (lr 1e-3), hard rounding h = [V >= 0]
// at the end. Gradients are written out by hand (clamps pass gradient only inside their range).
// The grid (scale, zero per group) is RTN's under the given spec (incl. its clip search).
//
// @inproceedings{nagel2020adaround, title={Up or Down? Adaptive Rounding for Post-Training
//   Quantization}, author={Nagel, Markus and Amjad, Rana Ali and van Baalen, Mart and Louizos,
//   Christos and Blankevoort, Tijmen}, booktitle={ICML}, year={2020}}
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
#include <vector>

namespace fragile::quant {

struct AdaRound {
  static constexpr Needs needs = Needs::kActivations;

  int iterations = 2000;
  double lr = 1e-3;
  double reg_lambda = 0.01;
  double beta_start = 20.0, beta_end = 2.0;
  double warmup = 0.2;          // fraction of iterations without the rounding regulariser
  double zeta = 1.1, gamma = -0.1;
  Index batch_tokens = 0;       // 0: every step uses all tokens; else a seeded random batch
  std::uint64_t seed = 0;

  struct State {
    QuantizedWeight grid;       // RTN result: scales, zeros, and the nearest-rounding codes
    MatrixF w;                  // (out, in) original weight
    Eigen::ArrayXXf scale, zero, w_floor;  // per element
    Eigen::ArrayXXf v;          // rounding logits
    detail::AdamMoments adam;
    int step = 0;
    double rtn_output_error = 0.0;    // hard nearest rounding on the same grid
    double final_output_error = 0.0;  // hard AdaRound rounding
    std::vector<double> reconstruction;  // per step: output error of the soft W~
    std::vector<double> regulariser;     // per step: sum (1 - |2h-1|^beta) at that step's beta
  };

  [[nodiscard]] double beta_at(int step) const noexcept {
    const double start = warmup * iterations;
    if (step < start) return beta_start;
    const double rel = (step - start) / std::max(1.0, iterations - start);
    return beta_end + (beta_start - beta_end) * std::max(0.0, 1.0 - rel);
  }

  [[nodiscard]] Eigen::ArrayXXf h_of(const Eigen::ArrayXXf& v) const {
    return ((1.0f / (1.0f + (-v).exp())) * static_cast<float>(zeta - gamma) +
            static_cast<float>(gamma))
        .min(1.0f)
        .max(0.0f);
  }

  [[nodiscard]] State start(WeightRef w, const QuantSpec& spec, const LayerCapture& capture) const {
    check_inputs("AdaRound", w, spec, capture, needs);
    require<ArgumentError>(iterations >= 0, "AdaRound{}: iterations = {}, expected >= 0",
                           capture.label(), iterations);
    require<ArgumentError>(zeta > 1.0 && gamma < 0.0, "AdaRound{}: need zeta > 1 and gamma < 0",
                           capture.label());
    require<ArgumentError>(batch_tokens >= 0, "AdaRound{}: batch_tokens = {}, expected >= 0",
                           capture.label(), batch_tokens);
    State st;
    st.grid = rtn_quantize(w, spec);
    st.w = w;
    st.scale = detail::expand_groups(st.grid.scales, st.grid.groups).array();
    st.zero = detail::expand_groups(st.grid.zeros, st.grid.groups).array();
    const Eigen::ArrayXXf ratio = st.w.array() / st.scale;
    st.w_floor = ratio.floor();
    const Eigen::ArrayXXf rest = ratio - st.w_floor;  // in [0, 1)
    const auto zg = static_cast<float>(zeta - gamma), g = static_cast<float>(gamma);
    st.v = -((zg / (rest - g)) - 1.0f).log();
    st.adam.reset(w.rows(), w.cols());
    return st;
  }

  /// One Adam step on V; returns the step's reconstruction term.
  double step(State& st, const detail::OutputObjective& obj, Rng& rng, const QuantSpec& spec) const {
    const auto maxq = static_cast<float>(spec.max_code());
    const auto zg = static_cast<float>(zeta - gamma), g = static_cast<float>(gamma);
    const Eigen::ArrayXXf sig = 1.0f / (1.0f + (-st.v).exp());
    const Eigen::ArrayXXf raw = sig * zg + g;
    const Eigen::ArrayXXf h = raw.min(1.0f).max(0.0f);
    const Eigen::ArrayXXf level = st.w_floor + h + st.zero;
    const Eigen::ArrayXXf clamped = level.min(maxq).max(0.0f);
    const MatrixF dw = ((st.scale * (clamped - st.zero)).matrix() - st.w);
    MatrixF grad_wq;
    double rec = 0.0;
    if (batch_tokens == 0 || batch_tokens >= obj.tokens()) {
      obj.gradient(dw, grad_wq);
      rec = obj.value(dw);
    } else {
      std::vector<Index> rows(static_cast<std::size_t>(batch_tokens));
      for (auto& r : rows) r = static_cast<Index>(rng.below(static_cast<std::uint64_t>(obj.tokens())));
      rec = obj.batch_gradient(dw, rows, grad_wq);
    }
    // dW~/dh = s inside the code range; dh/dV = (zeta - gamma) sig (1 - sig) inside [0, 1].
    Eigen::ArrayXXf grad_h = grad_wq.array() * st.scale *
                             ((level >= 0.0f) && (level <= maxq)).cast<float>();
    const double beta = beta_at(st.step);
    const Eigen::ArrayXXf centred = 2.0f * h - 1.0f;
    const Eigen::ArrayXXf mag = centred.abs();
    const auto b = static_cast<float>(beta);
    st.regulariser.push_back(static_cast<double>((1.0f - mag.pow(b)).cast<double>().sum()));
    if (st.step >= warmup * iterations) {
      // d/dh (1 - |2h - 1|^beta) = -2 beta |2h - 1|^(beta - 1) sign(2h - 1)
      grad_h += static_cast<float>(reg_lambda) *
                (-2.0f * b * mag.pow(b - 1.0f) * centred.sign());
    }
    const Eigen::ArrayXXf grad_v =
        grad_h * zg * sig * (1.0f - sig) * ((raw >= 0.0f) && (raw <= 1.0f)).cast<float>();
    st.adam.step(st.v, grad_v, lr);
    ++st.step;
    st.reconstruction.push_back(rec);
    return rec;
  }

  /// Hard rounding h = [V >= 0] into a QuantizedWeight.
  [[nodiscard]] QuantizedWeight finish(const State& st, const QuantSpec& spec,
                                       const detail::OutputObjective& obj) const {
    QuantizedWeight q = st.grid;
    const auto maxq = static_cast<float>(spec.max_code());
    const Eigen::ArrayXXf up = (st.v >= 0.0f).cast<float>();
    const Eigen::ArrayXXf codes = (st.w_floor + up + st.zero).min(maxq).max(0.0f);
    std::vector<std::uint8_t> row(static_cast<std::size_t>(q.cols));
    for (Index r = 0; r < q.rows; ++r) {
      for (Index c = 0; c < q.cols; ++c) row[static_cast<std::size_t>(c)] = static_cast<std::uint8_t>(codes(r, c));
      q.codes.pack_row(r, row.data());
    }
    q.loss = obj.value(q.dequantize() - st.w);
    q.loss_kind = LossKind::kOutputMse;
    return q;
  }

  /// Runs the whole optimisation; `state_out` (optional) receives the final state.
  [[nodiscard]] QuantizedWeight quantize(WeightRef w, const QuantSpec& spec,
                                         const LayerCapture& capture, State* state_out) const {
    State st = start(w, spec, capture);
    const detail::OutputObjective obj(capture.activations());
    st.rtn_output_error = obj.value(st.grid.dequantize() - st.w);
    Rng rng(seed);
    for (int i = 0; i < iterations; ++i) step(st, obj, rng, spec);
    QuantizedWeight q = finish(st, spec, obj);
    st.final_output_error = q.loss;
    if (state_out) *state_out = std::move(st);
    return q;
  }
  [[nodiscard]] QuantizedWeight quantize(WeightRef w, const QuantSpec& spec,
                                         const LayerCapture& capture) const {
    return quantize(w, spec, capture, nullptr);
  }
};

}  // namespace fragile::quant
