// The capture driver's delivery: for one linear layer of one batch, computes the quantities the
// observers declared (x^T x, dL/dW, the per-window squared dL/dW) once, in backend memory, and
// hands every observer the same LayerBatch of views.
#pragma once

#include "fragile/backend/backend.hpp"
#include "fragile/model/capture.hpp"
#include "fragile/model/linear.hpp"

#include <cstddef>
#include <tuple>
#include <vector>

namespace fragile::model {

/// One batch as the delivery sees it.
struct CaptureBatch {
  std::size_t batch_index = 0, first_window = 0, windows = 0, seq_len = 0, scored = 0;
  CaptureNeeds needs;
  const std::vector<char>* selected = nullptr;  ///< by linear index
};

template <class B, class... Obs>
class CaptureDelivery {
 public:
  using Ops = backend::Ops<B>;
  using Buffer = typename B::template Buffer<float>;

  CaptureDelivery(const CaptureBatch& batch, std::tuple<Obs&...> observers)
      : batch_(&batch), observers_(observers) {}

  /// x: the layer's input (rows, in); g: dL/dy (rows, out) or null; both in backend memory.
  void operator()(const LinearInfo& li, const float* x, const float* g) {
    if (!(*batch_->selected)[li.index]) return;
    const CaptureNeeds& n = batch_->needs;
    const std::size_t rows = batch_->windows * batch_->seq_len, in = li.in_features,
                      out = li.out_features;
    LayerBatch c;
    c.layer = &li;
    c.batch_index = batch_->batch_index;
    c.first_window = batch_->first_window;
    c.windows = batch_->windows;
    c.seq_len = batch_->seq_len;
    c.scored_positions = batch_->scored;
    if (n.x) c.x = view(x, rows * in);
    if (n.g && g) c.g = view(g, rows * out);
    if (n.xtx) {
      // Layers reading one input (q/k/v, gate/up) share their x^T x.
      const InputKey key{li.block, input_source(li.kind)};
      if (!xtx_valid_ || xtx_key_ != key) {
        xtx_.resize(in * in);
        Ops::gemm(backend::Trans::kT, backend::Trans::kN, in, in, rows, 1.0f, x, in, x, in, 0.0f,
                  xtx_.data(), in);
        xtx_key_ = key;
        xtx_valid_ = true;
      }
      c.xtx = view(xtx_.data(), in * in);
    }
    Buffer wg, wg2;
    if (g && n.weight_grad) {
      wg.resize(out * in);
      Linear<B>::backward_weight(wg.data(), g, x, rows, in, out, false);
      c.weight_grad = view(wg.data(), out * in);
    }
    if (g && n.weight_grad_sq) {
      wg2.resize(out * in);
      Ops::fill(wg2.data(), out * in, 0.0f);
      Buffer one(out * in);
      const std::size_t T = batch_->seq_len;
      for (std::size_t b = 0; b < batch_->windows; ++b) {
        Linear<B>::backward_weight(one.data(), g + b * T * out, x + b * T * in, T, in, out, false);
        Ops::add_squares(wg2.data(), one.data(), out * in);
      }
      c.weight_grad_sq = view(wg2.data(), out * in);
    }
    std::apply([&](auto&... o) { (o.observe(c), ...); }, observers_);
  }

 private:
  static backend::TensorView view(const float* p, std::size_t n) {
    return backend::TensorView::template of<B>(p, n);
  }

  const CaptureBatch* batch_;
  std::tuple<Obs&...> observers_;
  struct InputKey {
    std::size_t block;
    LinearKind source;
    friend bool operator==(const InputKey&, const InputKey&) = default;
  };
  InputKey xtx_key_{};
  bool xtx_valid_ = false;
  Buffer xtx_;
};

}  // namespace fragile::model
