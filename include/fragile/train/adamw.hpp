// AdamW (Loshchilov & Hutter 2019) exactly as torch.optim.AdamW computes it for f32 parameters
// (foreach=False): decoupled weight decay, then the bias-corrected Adam step
//   p <- p * (1 - lr * wd)
//   m <- b1 m + (1 - b1) g          v <- b2 v + (1 - b2) g^2
//   p <- p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// with t the 1-based step. Weight decay applies to matrices only (embeddings and linears), the
// usual choice for transformers; norms and biases are not decayed.
//   @inproceedings{loshchilov2019adamw, title={Decoupled Weight Decay Regularization},
//     author={Loshchilov, Ilya and Hutter, Frank}, booktitle={ICLR}, year={2019}}
#pragma once

#include "fragile/backend/cpu.hpp"
#include "fragile/core/error.hpp"
#include "fragile/model/transformer.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace fragile::train {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;

  void validate() const {
    require<ArgumentError>(beta1 >= 0.0 && beta1 < 1.0, "AdamW: beta1 must be in [0, 1), got {}",
                           beta1);
    require<ArgumentError>(beta2 >= 0.0 && beta2 < 1.0, "AdamW: beta2 must be in [0, 1), got {}",
                           beta2);
    require<ArgumentError>(eps > 0.0, "AdamW: eps must be positive, got {}", eps);
    require<ArgumentError>(weight_decay >= 0.0, "AdamW: weight decay must be >= 0, got {}",
                           weight_decay);
  }
};

/// Adam moments for a fixed list of parameters (the order of Transformer::parameters()).
class AdamW {
 public:
  AdamW(std::span<const model::Parameter> params, AdamWOptions options) : options_(options) {
    options_.validate();
    for (const auto& p : params) {
      m_.emplace_back(p.value.size(), 0.0f);
      v_.emplace_back(p.value.size(), 0.0f);
    }
  }

  /// One step at learning rate `lr` with gradients `grads` (same order as the parameters).
  void step(std::span<model::Parameter> params, const model::ParameterGradients& grads, double lr) {
    require<ArgumentError>(params.size() == m_.size() && grads.tensors.size() == m_.size(),
                           "AdamW: {} parameters and {} gradients, the optimiser holds {}",
                           params.size(), grads.tensors.size(), m_.size());
    ++t_;
    // torch computes these in double (Python floats) and applies them to f32 tensors.
    const double bc1 = 1.0 - std::pow(options_.beta1, static_cast<double>(t_));
    const double bc2_sqrt = std::sqrt(1.0 - std::pow(options_.beta2, static_cast<double>(t_)));
    const float step_size = static_cast<float>(lr / bc1);
    // Scalars as torch passes them: computed in double, applied as f32.
    const float one_minus_b1 = static_cast<float>(1.0 - options_.beta1);
    const float b2 = static_cast<float>(options_.beta2);
    const float one_minus_b2 = static_cast<float>(1.0 - options_.beta2);
    const float eps = static_cast<float>(options_.eps), bc2s = static_cast<float>(bc2_sqrt);
    for (std::size_t i = 0; i < params.size(); ++i) {
      float* p = params[i].value.data();
      const float* g = grads.tensors[i].data();
      float* m = m_[i].data();
      float* v = v_[i].data();
      const std::size_t n = m_[i].size();
      require<ArgumentError>(params[i].value.size() == n && grads.tensors[i].size() == n,
                             "AdamW: parameter '{}' has {} values, its state {}", params[i].name,
                             params[i].value.size(), n);
      const float decay = params[i].is_matrix()
                              ? static_cast<float>(1.0 - lr * options_.weight_decay)
                              : 1.0f;
#pragma omp parallel for simd schedule(static) if (n >= backend::kCpuParallelMin)
      for (std::size_t k = 0; k < n; ++k) {
        const float gk = g[k];
        const float pk = p[k] * decay;
        const float mk = m[k] + one_minus_b1 * (gk - m[k]);  // torch's lerp_ (weight < 0.5)
        const float vk = v[k] * b2 + one_minus_b2 * gk * gk;  // mul_ then addcmul_
        m[k] = mk;
        v[k] = vk;
        p[k] = pk + (-step_size * mk) / (std::sqrt(vk) / bc2s + eps);  // addcdiv_
      }
    }
  }

  [[nodiscard]] std::uint64_t steps_taken() const noexcept { return t_; }
  [[nodiscard]] const AdamWOptions& options() const noexcept { return options_; }
  /// The first and second moments (for checkpoints).
  [[nodiscard]] std::vector<std::vector<float>>& first_moments() noexcept { return m_; }
  [[nodiscard]] std::vector<std::vector<float>>& second_moments() noexcept { return v_; }
  void set_steps_taken(std::uint64_t t) noexcept { t_ = t; }

 private:
  AdamWOptions options_;
  std::vector<std::vector<float>> m_, v_;
  std::uint64_t t_ = 0;
};

/// Scales the gradients so that their global L2 norm is at most `max_norm` (torch's
/// clip_grad_norm_: factor max_norm / (norm + 1e-6), never above 1). Returns the norm before.
inline double clip_gradients(model::ParameterGradients& grads, double max_norm) {
  const double norm = grads.norm();
  require<NumericError>(std::isfinite(norm), "gradient clipping: the gradient norm is {} (the loss "
                        "diverged; lower the learning rate)", norm);
  if (max_norm <= 0.0) return norm;
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) {
    const auto c = static_cast<float>(coef);
    for (auto& t : grads.tensors)
      for (float& v : t) v *= c;
  }
  return norm;
}

}  // namespace fragile::train
