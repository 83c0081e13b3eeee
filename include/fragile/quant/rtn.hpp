// Round-to-nearest (RTN) quantization with GPTQ's `find_params` conventions (quant.py of the
// reference implementation), per (row, group):
//   xmin = min(min x, 0), xmax = max(max x, 0); all-zero groups use [-1, +1];
//   asymmetric: scale = (xmax - xmin) / maxq, zero = round(-xmin / scale);
//   symmetric:  xmax = max(|xmin|, xmax), xmin = -xmax if xmin < 0, zero = (maxq + 1) / 2
//               (so a group with no negative value keeps xmin = 0, as in the reference);
//   code = clamp(round(x / scale) + zero, 0, maxq), x^ = scale * (code - zero),
// rounding half to even. ClipSearch::kMse adds GPTQ's grid search over shrunk ranges
// p * [xmin, xmax], p = 1 - i/grid, keeping the lowest sum |x^ - x|^norm.
// All arithmetic is f32 in the reference's order, so results match it bit for bit.
//
// @article{frantar2022gptq, title={GPTQ: Accurate Post-Training Quantization for Generative
//   Pre-trained Transformers}, author={Frantar, Elias and Ashkboos, Saleh and Hoefler, Torsten
//   and Alistarh, Dan}, journal={arXiv preprint arXiv:2210.17323}, year={2022}}
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/core/tensor.hpp"
#include "fragile/quant/quantizer.hpp"
#include "fragile/quant/result.hpp"
#include "fragile/quant/spec.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace fragile::quant {

/// Round half to even with std::nearbyint's result in the default rounding mode. Adding and
/// subtracting 1.5 * 2^23 rounds any |v| < 2^22 to an integer in the FPU's nearest-even mode;
/// larger |v| are already integers. Written this way so the RTN loop vectorizes.
inline float round_half_even(float v) noexcept {
  constexpr float kMagic = 0x1.8p23f;
  const float r = (v + kMagic) - kMagic;
  return std::fabs(v) < 0x1p22f ? r : v;
}

namespace detail {
/// Hides v's origin from the optimizer so `a * b - c` is not fused into one FMA: matching the
/// reference bit for bit needs the product rounded on its own, as PyTorch does.
inline float unfused(float v) noexcept {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __asm__("" : "+x"(v));
#elif defined(__GNUC__) && defined(__aarch64__)
  __asm__("" : "+w"(v));
#endif
  return v;
}
}  // namespace detail

/// One (row, group)'s grid: x^ = scale * (code - zero).
struct GridParams {
  float scale = 1.0f;
  float zero = 0.0f;
};

/// Code of x on a grid (as float, in 0..maxq).
inline float quantize_code(float x, float scale, float zero, float maxq) noexcept {
  const float c = round_half_even(x / scale) + zero;
  const float lo = c < 0.0f ? 0.0f : c;  // selects, not branches: the loops vectorize
  return lo > maxq ? maxq : lo;
}
inline float quantize_value(float x, float scale, float zero, float maxq) noexcept {
  return scale * (quantize_code(x, scale, zero, maxq) - zero);
}

namespace detail {
/// The range GPTQ's find_params quantizes: symmetrized for symmetric grids, [-1, 1] for an
/// all-zero group. Shared by the min-max grid and the MSE clip search.
inline void reference_range(float& xmin, float& xmax, const QuantSpec& spec) noexcept {
  if (spec.symmetric) {
    xmax = std::max(std::fabs(xmin), xmax);
    if (xmin < 0.0f) xmin = -xmax;
  }
  if (xmin == 0.0f && xmax == 0.0f) {
    xmin = -1.0f;
    xmax = 1.0f;
  }
}
}  // namespace detail

/// Min-max grid of a range [xmin, xmax] (xmin <= 0 <= xmax), GPTQ conventions.
inline GridParams grid_from_range(float xmin, float xmax, const QuantSpec& spec) noexcept {
  const auto maxq = static_cast<float>(spec.max_code());
  detail::reference_range(xmin, xmax, spec);
  GridParams p;
  p.scale = (xmax - xmin) / maxq;
  p.zero = spec.symmetric ? (maxq + 1.0f) / 2.0f : round_half_even(-xmin / p.scale);
  return p;
}

/// GPTQ find_params for one group of values x[0..n).
inline GridParams find_params(const float* x, Index n, const QuantSpec& spec) noexcept {
  float lo = 0.0f, hi = 0.0f;
  for (Index i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  GridParams best = grid_from_range(lo, hi, spec);
  if (spec.clip != ClipSearch::kMse) return best;

  // The grid search shrinks the (symmetrized) range the reference uses.
  float xmin = lo, xmax = hi;
  detail::reference_range(xmin, xmax, spec);
  const auto maxq = static_cast<float>(spec.max_code());
  const auto steps = static_cast<int>(spec.clip_max_shrink * spec.clip_grid);
  const auto norm = static_cast<float>(spec.clip_norm);
  float best_err = std::numeric_limits<float>::infinity();
  for (int i = 0; i < steps; ++i) {
    const auto p = static_cast<float>(1.0 - static_cast<double>(i) / spec.clip_grid);
    const float xmin1 = detail::unfused(p * xmin), xmax1 = detail::unfused(p * xmax);
    const float scale1 = (xmax1 - xmin1) / maxq;
    const float zero1 = spec.symmetric ? best.zero : round_half_even(-xmin1 / scale1);
    float err = 0.0f;
    for (Index k = 0; k < n; ++k)
      err += std::pow(std::fabs(detail::unfused(quantize_value(x[k], scale1, zero1, maxq)) - x[k]), norm);
    if (err < best_err) {
      best_err = err;
      best.scale = scale1;
      best.zero = zero1;
    }
  }
  return best;
}

/// RTN of a whole (out, in) weight (OpenMP over rows). Loss: weight SSE.
inline QuantizedWeight rtn_quantize(WeightRef w, const QuantSpec& spec) {
  QuantizedWeight q(w.rows(), w.cols(), spec);
  const auto maxq = static_cast<float>(spec.max_code());
  const GroupLayout& groups = q.groups;
  // Per-row errors summed in row order afterwards: an OpenMP reduction would add the threads'
  // partial sums in the order they finish, and the loss would change from run to run.
  std::vector<double> row_sse(static_cast<std::size_t>(w.rows()), 0.0);
#pragma omp parallel if (w.rows() * w.cols() > (1 << 14))
  {
    std::vector<std::uint8_t> row_codes(static_cast<std::size_t>(w.cols()));
    Eigen::ArrayXf code(groups.group_size);
#pragma omp for schedule(static)
    for (Index r = 0; r < w.rows(); ++r) {
      const float* x = w.row(r).data();
      double row_err = 0.0;
      for (Index g = 0; g < groups.num_groups; ++g) {
        const Index b = groups.begin(g), n = groups.width(g);
        const Eigen::Map<const Eigen::ArrayXf> xg(x + b, n);
        GridParams p;
        if (spec.clip == ClipSearch::kNone) {
          p = grid_from_range(std::min(xg.minCoeff(), 0.0f), std::max(xg.maxCoeff(), 0.0f), spec);
        } else {
          p = find_params(x + b, n, spec);
        }
        q.scales(r, g) = p.scale;
        q.zeros(r, g) = p.zero;
        // Eigen's packet rint (round half to even in the default rounding mode), min and max
        // vectorize where scalar selects on floats do not (-ftrapping-math).
        code.head(n) = ((xg / p.scale).rint() + p.zero).max(0.0f).min(maxq);
        const float* cf = code.data();
        std::uint8_t* codes = row_codes.data() + b;
        for (Index c = 0; c < n; ++c) codes[c] = static_cast<std::uint8_t>(cf[c]);
        row_err += static_cast<double>(((code.head(n) - p.zero) * p.scale - xg).square().sum());
      }
      q.codes.pack_row(r, row_codes.data());
      row_sse[static_cast<std::size_t>(r)] = row_err;
    }
  }
  double sse = 0.0;
  for (double e : row_sse) sse += e;
  q.loss = sse;
  q.loss_kind = LossKind::kWeightSse;
  return q;
}

/// RTN as a Quantizer policy. With activations in the capture the loss is the output MSE,
/// otherwise the weight SSE.
struct Rtn {
  static constexpr Needs needs = Needs::kWeights;
  struct State {};  // RTN keeps no per-layer state

  [[nodiscard]] QuantizedWeight quantize(WeightRef w, const QuantSpec& spec,
                                         const LayerCapture& capture = {}) const {
    check_inputs("Rtn", w, spec, capture, needs);
    QuantizedWeight q = rtn_quantize(w, spec);
    if (capture.has_activations()) {
      q.loss = output_error(w, q.dequantize(), capture.activations());
      q.loss_kind = LossKind::kOutputMse;
    }
    return q;
  }
};

}  // namespace fragile::quant
