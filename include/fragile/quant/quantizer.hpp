// The Quantizer concept: what every weight quantizer policy (RTN, GPTQ, AdaRound, LWC, the
// channel-split hybrid) provides, and what it is given.
//
// Modelled on ensmallen: a policy object holds hyperparameters only; the per-layer work lives in
// a nested `State` created at the start of quantize(); `needs` declares what the capture pass must
// collect (weights only, activations, the GPTQ Hessian, gradients). check_quantizer<Q>() names
// the member a would-be policy lacks instead of failing deep inside a template.
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/core/tensor.hpp"
#include "fragile/quant/hessian.hpp"
#include "fragile/quant/result.hpp"
#include "fragile/quant/spec.hpp"

#include <Eigen/Core>

#include <concepts>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>

namespace fragile::quant {

/// What a quantizer reads besides the weight (a bit set).
enum class Needs : unsigned {
  kWeights = 0,
  kActivations = 1u << 0,  // (tokens, in) inputs of the layer
  kHessian = 1u << 1,      // H = 2/N sum x x^T (from a HessianAccumulator or the activations)
  kGrads = 1u << 2,        // per-token output gradients / channel importance from them
};
constexpr Needs operator|(Needs a, Needs b) noexcept {
  return static_cast<Needs>(static_cast<unsigned>(a) | static_cast<unsigned>(b));
}
constexpr bool has(Needs set, Needs flag) noexcept {
  return (static_cast<unsigned>(set) & static_cast<unsigned>(flag)) != 0;
}

/// What the capture pass hands a quantizer for one linear layer. Views only: the caller keeps
/// the activations, Hessian and importance alive during quantize().
class LayerCapture {
 public:
  using ActivationMap = Eigen::Map<const MatrixF, 0, Eigen::OuterStride<>>;

  LayerCapture() = default;
  explicit LayerCapture(std::string name) : name_(std::move(name)) {}

  /// Layer inputs x: (tokens, in_features), row-major f32.
  LayerCapture& with_activations(const Eigen::Ref<const MatrixF>& x) {
    act_data_ = x.data();
    act_rows_ = x.rows();
    act_cols_ = x.cols();
    act_stride_ = x.outerStride();
    return *this;
  }
  LayerCapture& with_hessian(const HessianAccumulator& h) {
    hessian_ = &h;
    return *this;
  }
  /// Per-input-channel importance (in_features), e.g. the mean empirical Fisher diagonal of
  /// each weight column.
  LayerCapture& with_channel_importance(std::span<const float> importance) {
    importance_ = importance;
    return *this;
  }

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] bool has_activations() const noexcept { return act_data_ != nullptr; }
  [[nodiscard]] ActivationMap activations() const noexcept {
    return {act_data_, act_rows_, act_cols_, Eigen::OuterStride<>(act_stride_)};
  }
  [[nodiscard]] const HessianAccumulator* hessian() const noexcept { return hessian_; }
  [[nodiscard]] std::span<const float> channel_importance() const noexcept { return importance_; }

  /// " 'name'" or "" -- for error messages.
  [[nodiscard]] std::string label() const { return name_.empty() ? "" : " '" + name_ + "'"; }

 private:
  std::string name_;
  const float* act_data_ = nullptr;
  Index act_rows_ = 0, act_cols_ = 0, act_stride_ = 0;
  const HessianAccumulator* hessian_ = nullptr;
  std::span<const float> importance_;
};

/// Common input checks: spec, finite weights, and the captures the policy needs, with errors
/// that name the layer (if the capture has a name) and both shapes on a mismatch.
inline void check_inputs(const std::string& who, WeightRef w, const QuantSpec& spec,
                         const LayerCapture& capture, Needs needs) {
  validate(spec, who + capture.label());
  require<ShapeError>(w.rows() > 0 && w.cols() > 0, "{}{}: weight is ({}, {}), expected a non-empty "
                      "(out, in) matrix", who, capture.label(), w.rows(), w.cols());
  require<NumericError>(w.allFinite(), "{}{}: weight ({}, {}) holds NaN or Inf", who,
                        capture.label(), w.rows(), w.cols());
  if (has(needs, Needs::kActivations) ||
      (has(needs, Needs::kHessian) && capture.hessian() == nullptr)) {
    require<ArgumentError>(capture.has_activations(),
                           "{}{}: needs the layer's activations (tokens, {}), none were captured",
                           who, capture.label(), w.cols());
  }
  if (capture.has_activations()) {
    const auto x = capture.activations();
    require<ShapeError>(x.cols() == w.cols(),
                        "{}{}: activations are ({}, {}) but the weight is ({}, {}); expected "
                        "(tokens, {})",
                        who, capture.label(), x.rows(), x.cols(), w.rows(), w.cols(), w.cols());
    require<ArgumentError>(x.rows() > 0, "{}{}: activations have 0 tokens", who, capture.label());
    require<NumericError>(x.allFinite(), "{}{}: activations ({}, {}) hold NaN or Inf", who,
                          capture.label(), x.rows(), x.cols());
  }
  if (const auto* h = capture.hessian()) {
    require<ShapeError>(h->in_features() == w.cols(),
                        "{}{}: Hessian is ({}, {}) but the weight is ({}, {}); expected ({}, {})",
                        who, capture.label(), h->in_features(), h->in_features(), w.rows(),
                        w.cols(), w.cols(), w.cols());
    require<ArgumentError>(h->tokens() > 0, "{}{}: Hessian accumulated no tokens", who,
                           capture.label());
  }
}

/// A quantizer's result: a dequantized weight, a storage cost and a loss.
template <class R>
concept QuantResult = requires(const R r) {
  { r.dequantize() } -> std::convertible_to<MatrixF>;
  { r.storage_bits() } -> std::convertible_to<std::uint64_t>;
  { r.loss } -> std::convertible_to<double>;
};

namespace detail {
template <class Q>
concept HasNeeds = requires { { Q::needs } -> std::convertible_to<Needs>; };
template <class Q>
concept HasState = requires { typename Q::State; };
template <class Q>
concept HasQuantize = requires(const Q q, WeightRef w, const QuantSpec& s, const LayerCapture& c) {
  q.quantize(w, s, c);
};
}  // namespace detail

template <class Q>
concept Quantizer = detail::HasNeeds<Q> && detail::HasState<Q> && detail::HasQuantize<Q> &&
    requires(const Q q, WeightRef w, const QuantSpec& s, const LayerCapture& c) {
      { q.quantize(w, s, c) } -> QuantResult;
    };

/// Instantiate in a policy's test (or `static_assert(check_quantizer<Q>())`) to get a message
/// naming the missing member rather than a concept failure.
template <class Q>
consteval bool check_quantizer() {
  static_assert(detail::HasNeeds<Q>,
                "Quantizer: missing `static constexpr fragile::quant::Needs needs` (what the "
                "capture pass must collect)");
  static_assert(detail::HasState<Q>,
                "Quantizer: missing nested type `State` (per-layer state created by quantize())");
  static_assert(detail::HasQuantize<Q>,
                "Quantizer: missing `quantize(WeightRef, const QuantSpec&, const LayerCapture&) "
                "const`");
  if constexpr (detail::HasQuantize<Q>) {
    using R = decltype(std::declval<const Q&>().quantize(
        std::declval<WeightRef>(), std::declval<const QuantSpec&>(),
        std::declval<const LayerCapture&>()));
    static_assert(QuantResult<R>,
                  "Quantizer: quantize() must return a result with dequantize(), "
                  "storage_bits() and a `loss` member");
  }
  return true;
}

}  // namespace fragile::quant
