// Per-layer sensitivity metrics (DESIGN.md "Definitions", paper 000 Sec. 5) as policies over the
// sufficient statistics one calibration pass collects.
//
// Every metric of paper 000 is a ratio of a few sums over calibration tokens t (scored positions;
// E_t = sum / tokens) and over the candidate error dW = Q_o(W) - W of each option o:
//   FisherTrace      F_l    = E_t ||g_t||^2
//   WeightMse               = mean(dW^2)
//   Visibility       D_l(o) = 1/2 E_t (g_t . dy_t)^2,          dy_t = dW x_t
//   VisibilityDiag          = 1/2 E_t sum_i (g_t,i dy_t,i)^2     (ModelOpt AutoQuantize's score)
//   Feo                     = E_t (g.dy)^2 / (E_t ||g||^2  E_t ||dy||^2)   (scale-free overlap)
//   HessianDiagProxy        = 1/2 sum_ij dW_ij^2 H_jj,  H_jj = E_x x_j^2 over all tokens (GPTQ's
//                             diag(E[x x^T]) without its factor 2)
//   FisherDiag              = 1/2 sum_ij dW_ij^2 F_ij,  F = E_n (dL_n/dW)^2 per window n
// so a metric here is a pure function of LayerStats/OptionStats: the pass computes the costly
// dy = X dW^T once for all options and every metric reads it, instead of each metric repeating
// the GEMM (DESIGN.md sketches stateful observe/finalize metrics; sharing the sums is what keeps
// the pass near one forward+backward). A metric that needs a statistic not listed here is a
// model::CaptureObserver of its own.
//
// Scale: g_t = dL_n/dy_t with L_n the window's MEAN token loss (DESIGN.md), so every
// gradient-based score carries a factor 1/S^2 (S = scored positions per window) relative to
// per-token gradients. It is common to all layers and leaves rankings and correlations unchanged.
#pragma once

#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string_view>
#include <vector>

namespace fragile::sensitivity {

/// Which sums a pass must collect (the union over the requested metrics).
struct StatNeeds {
  bool gradients = false;       ///< g: a backward pass
  bool output_error = false;    ///< dy = dW x for every option (one GEMM per layer and batch)
  bool input_power = false;     ///< sum_t x_t,j^2 per input column
  bool weight_grad_sq = false;  ///< sum_n (dL_n/dW)^2 per window (per-window weight gradients)

  friend constexpr StatNeeds operator|(StatNeeds a, StatNeeds b) noexcept {
    return {a.gradients || b.gradients, a.output_error || b.output_error,
            a.input_power || b.input_power, a.weight_grad_sq || b.weight_grad_sq};
  }
};

/// Sums of one layer under one option.
struct OptionStats {
  double weight_sse = 0.0;      ///< sum dW^2
  double gdy2 = 0.0;            ///< sum_t (g_t . dy_t)^2
  double gdy2_diag = 0.0;       ///< sum_t sum_i (g_t,i dy_t,i)^2
  double dy2 = 0.0;             ///< sum_t ||dy_t||^2 (scored positions)
  double input_power = 0.0;     ///< sum_ij dW_ij^2 sum_t x_t,j^2 (all positions)
  double fisher_diag = 0.0;     ///< sum_ij dW_ij^2 sum_n (dL_n/dW_ij)^2
};

/// Sums of one layer shared by its options.
struct LayerStats {
  std::uint64_t parameters = 0;
  std::uint64_t tokens = 0;     ///< scored positions seen
  std::uint64_t positions = 0;  ///< all positions seen (x statistics)
  std::uint64_t windows = 0;
  double g2 = 0.0;              ///< sum_t ||g_t||^2
};

namespace detail {
inline double per(double sum, std::uint64_t n) {
  return n == 0 ? std::numeric_limits<double>::quiet_NaN() : sum / static_cast<double>(n);
}
}  // namespace detail

/// A metric: a name, the sums it needs and a score (higher = more sensitive).
template <class M>
concept SensitivityMetric = requires(const LayerStats& l, const OptionStats& o) {
  { M::name } -> std::convertible_to<std::string_view>;
  { M::needs } -> std::convertible_to<StatNeeds>;
  { M::score(l, o) } -> std::convertible_to<double>;
};

struct FisherTrace {
  static constexpr std::string_view name = "fisher_trace";
  static constexpr StatNeeds needs{.gradients = true};
  static double score(const LayerStats& l, const OptionStats&) { return detail::per(l.g2, l.tokens); }
};

struct WeightMse {
  static constexpr std::string_view name = "weight_mse";
  static constexpr StatNeeds needs{};
  static double score(const LayerStats& l, const OptionStats& o) {
    return detail::per(o.weight_sse, l.parameters);
  }
};

struct Visibility {
  static constexpr std::string_view name = "D_l";
  static constexpr StatNeeds needs{.gradients = true, .output_error = true};
  static double score(const LayerStats& l, const OptionStats& o) {
    return 0.5 * detail::per(o.gdy2, l.tokens);
  }
};

struct VisibilityDiag {
  static constexpr std::string_view name = "D_l_diag";
  static constexpr StatNeeds needs{.gradients = true, .output_error = true};
  static double score(const LayerStats& l, const OptionStats& o) {
    return 0.5 * detail::per(o.gdy2_diag, l.tokens);
  }
};

struct Feo {
  static constexpr std::string_view name = "feo";
  static constexpr StatNeeds needs{.gradients = true, .output_error = true};
  static double score(const LayerStats& l, const OptionStats& o) {
    const double den = detail::per(l.g2, l.tokens) * detail::per(o.dy2, l.tokens);
    return den > 0.0 ? detail::per(o.gdy2, l.tokens) / den : 0.0;
  }
};

struct HessianDiagProxy {
  static constexpr std::string_view name = "hessian_diag";
  static constexpr StatNeeds needs{.input_power = true};
  static double score(const LayerStats& l, const OptionStats& o) {
    return 0.5 * detail::per(o.input_power, l.positions);
  }
};

struct FisherDiag {
  static constexpr std::string_view name = "fisher_diag";
  static constexpr StatNeeds needs{.gradients = true, .weight_grad_sq = true};
  static double score(const LayerStats& l, const OptionStats& o) {
    return 0.5 * detail::per(o.fisher_diag, l.windows);
  }
};

static_assert(SensitivityMetric<FisherTrace> && SensitivityMetric<WeightMse> &&
              SensitivityMetric<Visibility> && SensitivityMetric<VisibilityDiag> &&
              SensitivityMetric<Feo> && SensitivityMetric<HessianDiagProxy> &&
              SensitivityMetric<FisherDiag>);

/// The union of the sums the metrics need.
template <SensitivityMetric... Ms>
constexpr StatNeeds needs_of() {
  StatNeeds n{};
  ((n = n | Ms::needs), ...);
  return n;
}

}  // namespace fragile::sensitivity
