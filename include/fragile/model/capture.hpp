// What a pass over calibration data hands to its consumers, layer by layer and batch by batch.
//
// A consumer (quantizer, sensitivity metric) is an observer that declares what it needs
// (CaptureNeeds: x only, x and g, H = x^T x, weight gradients, per-sequence squared weight
// gradients) and receives a LayerBatch for each linear layer of each batch. The tensors of a
// LayerBatch are views of the backend's memory that say where they live; an observer that works
// on the host asks for host() (free on the CPU). The runtime runs
// the backward pass only when some observer needs gradients, computes each quantity once per
// batch however many observers want it, and frees it before the next layer, so a pass never
// holds every layer's x and g at once.
//
// Definitions (DESIGN.md): for token t of window n, x_l,t is the input of linear layer l and
// g_l,t = dL_n/dy_l,t where L_n is the mean token cross-entropy of window n. Labels are the data
// (next token; positions 0..T-2 are scored, the last row's g is 0) or drawn from the model's own
// predictive distribution with a seed (all T positions scored; the Monte-Carlo true Fisher of
// paper 000).
#pragma once

#include "fragile/backend/backend.hpp"
#include "fragile/model/linear_registry.hpp"
#include "fragile/model/lm_head.hpp"

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace fragile::model {

/// What a consumer needs from a capture pass. Combine with |.
struct CaptureNeeds {
  bool x = false;               ///< inputs x_l (tokens, in)
  bool g = false;               ///< output gradients g_l (tokens, out); implies a backward pass
  bool xtx = false;             ///< x_l^T x_l (in, in) summed over the batch's tokens
  bool weight_grad = false;     ///< sum over windows of dL_n/dW_l (out, in)
  bool weight_grad_sq = false;  ///< sum over windows of (dL_n/dW_l)^2 (empirical Fisher diagonal)

  [[nodiscard]] bool backward() const noexcept { return g || weight_grad || weight_grad_sq; }
  [[nodiscard]] bool any() const noexcept { return x || xtx || backward(); }
  friend CaptureNeeds operator|(CaptureNeeds a, CaptureNeeds b) noexcept {
    return {a.x || b.x, a.g || b.g, a.xtx || b.xtx, a.weight_grad || b.weight_grad,
            a.weight_grad_sq || b.weight_grad_sq};
  }
};

/// One linear layer's data for one batch. The views are valid only during the observe() call;
/// a quantity that no observer declared is a null view.
struct LayerBatch {
  const LinearInfo* layer = nullptr;
  std::size_t batch_index = 0;   ///< which batch of the pass (0, 1, ...)
  std::size_t first_window = 0;  ///< index of this batch's first window among all windows
  std::size_t windows = 0;       ///< windows in this batch (B)
  std::size_t seq_len = 0;       ///< tokens per window (T); rows = B * T, row b*T + t
  std::size_t scored_positions = 0;  ///< positions t < this carry a loss term (T-1 or T)
  backend::TensorView x;               ///< (B*T, in)
  backend::TensorView g;               ///< (B*T, out)
  backend::TensorView xtx;             ///< (in, in)
  backend::TensorView weight_grad;     ///< (out, in)
  backend::TensorView weight_grad_sq;  ///< (out, in)

  [[nodiscard]] std::size_t rows() const noexcept { return windows * seq_len; }
};

/// A capture consumer: declares its needs, receives layer captures.
template <class O>
concept CaptureObserver = requires(O o, const O& co, const LayerBatch& c) {
  { co.needs() } -> std::convertible_to<CaptureNeeds>;
  o.observe(c);
};

/// Options of a capture pass.
struct CaptureOptions {
  LabelSource labels = LabelSource::kData;
  std::uint64_t seed = 0;          ///< for kModelSample; row (window w, position t) draws from
                                   ///< Rng(seed).fork(w * T + t), independent of batching
  std::size_t batch_size = 1;      ///< windows per forward/backward
  std::vector<std::size_t> layers = {};  ///< linear indices to deliver; empty = all
};

/// What a capture pass saw.
struct CaptureSummary {
  std::size_t windows = 0;
  std::size_t batches = 0;
  std::size_t scored_tokens = 0;
  double mean_window_loss = 0.0;  ///< mean over windows of the window's mean cross-entropy
};

/// Observer that accumulates the Gram matrix G_l = sum_t x_l,t x_l,t^T (in, in) in double for
/// chosen layers: a raw sum (quant::HessianAccumulator is GPTQ's H = 2/N G). Holds one (in, in)
/// matrix per chosen layer.
class GramAccumulator {
 public:
  explicit GramAccumulator(std::vector<std::size_t> layers) : layers_(std::move(layers)) {}

  [[nodiscard]] CaptureNeeds needs() const noexcept { return {.xtx = true}; }

  void observe(const LayerBatch& c) {
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      if (layers_[i] != c.layer->index || !c.xtx) continue;
      const float* xtx = c.xtx.host().data();
      const std::size_t n = c.layer->in_features;
      if (h_.size() < layers_.size()) h_.resize(layers_.size());
      if (h_[i].empty()) h_[i].assign(n * n, 0.0);
      for (std::size_t k = 0; k < n * n; ++k) h_[i][k] += xtx[k];
      if (tokens_.size() < layers_.size()) tokens_.resize(layers_.size(), 0);
      tokens_[i] += c.rows();
    }
  }

  /// G of the i-th chosen layer, row-major (in, in); empty if it was never observed.
  [[nodiscard]] const std::vector<double>& gram(std::size_t i) const {
    static const std::vector<double> empty;
    return i < h_.size() ? h_[i] : empty;
  }
  /// Tokens summed into the i-th chosen layer's G.
  [[nodiscard]] std::size_t tokens(std::size_t i) const {
    return i < tokens_.size() ? tokens_[i] : 0;
  }
  [[nodiscard]] const std::vector<std::size_t>& layers() const noexcept { return layers_; }

 private:
  std::vector<std::size_t> layers_;
  std::vector<std::vector<double>> h_;
  std::vector<std::size_t> tokens_;
};

static_assert(CaptureObserver<GramAccumulator>);

}  // namespace fragile::model
