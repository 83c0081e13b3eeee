// The LM head and the loss at its output, chunk by chunk so that memory never scales with
// tokens x vocabulary: logits = hidden W_head^T for `chunk` rows at a time, their log-sum-exp,
// and for the backward the labels (the data's next token, or drawn from the model's own softmax
// with a seed: paper 000's Monte-Carlo true Fisher), the NLL of each window and the gradient of
// the mean cross-entropy w.r.t. the hidden states.
#pragma once

#include "fragile/backend/backend.hpp"
#include "fragile/model/linear.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace fragile::model {

/// Where the labels of the loss come from.
enum class LabelSource {
  kData,         ///< the next token of the window (T-1 scored positions)
  kModelSample,  ///< drawn from the model's softmax at every position (T scored positions)
};

template <class B>
struct LmHead {
  using Ops = backend::Ops<B>;
  template <class T>
  using Buffer = typename B::template Buffer<T>;

  const float* weight;  ///< (vocab, hidden) in backend memory
  std::size_t hidden, vocab, chunk;

  /// labels[r] of rows [r0, r0 + n) of a batch of windows of `seq_len` tokens packed in `ids`:
  /// the next token, or -1 for a window's last position (it has none).
  static void next_token_labels(std::vector<std::int32_t>& labels,
                                const std::vector<std::int32_t>& ids, std::size_t r0,
                                std::size_t n, std::size_t seq_len) {
    labels.assign(n, -1);
    for (std::size_t r = 0; r < n; ++r)
      if ((r0 + r) % seq_len + 1 < seq_len) labels[r] = ids[r0 + r + 1];
  }

  /// logits (rows, V) = hidden (rows, C) W_head^T.
  void logits(const float* h, std::size_t rows, float* out) const {
    Linear<B>::forward(out, h, weight, nullptr, rows, hidden, vocab);
  }

  /// fn(first_row, rows, logits, lse) for consecutive chunks of the `rows` hidden rows, with
  /// logits (rows, V) and lse (rows) in backend memory; fn may overwrite the logits.
  template <class Fn>
  void for_each_chunk(const float* h, std::size_t rows, Fn&& fn) const {
    const std::size_t c = std::max<std::size_t>(1, chunk);
    Buffer<float> lg(std::min(c, rows) * vocab), lse(std::min(c, rows));
    for (std::size_t r0 = 0; r0 < rows; r0 += c) {
      const std::size_t n = std::min(c, rows - r0);
      logits(h + r0 * hidden, n, lg.data());
      Ops::logsumexp_rows(lse.data(), nullptr, lg.data(), n, vocab);
      fn(r0, n, lg.data(), lse.data());
    }
  }

  /// The loss over a batch of `windows` windows of `seq_len` tokens (ids on the host) and its
  /// gradient: dhidden (rows, C) = d(sum of the scaled token losses)/d hidden, each token's loss
  /// scaled by `scale`; dweight (when non-null) += the head's weight gradient. Returns the NLL
  /// sum of each window.
  std::vector<double> loss_backward(const float* h, const std::vector<std::int32_t>& ids,
                                    std::size_t windows, std::size_t seq_len, LabelSource source,
                                    std::uint64_t seed, std::size_t first_window, float scale,
                                    float* dhidden, float* dweight) const {
    const std::size_t T = seq_len, rows = windows * T;
    std::vector<double> window_nll(windows, 0.0);
    const std::size_t c = std::max<std::size_t>(1, chunk);
    Buffer<std::int32_t> labels(std::min(c, rows));
    Buffer<float> scales(std::min(c, rows));
    Ops::fill(scales.data(), scales.size(), scale);  // every token's loss weighs the same
    Buffer<double> nll(std::min(c, rows));
    std::vector<std::int32_t> host_labels;
    std::vector<double> host_nll;
    for_each_chunk(h, rows, [&](std::size_t r0, std::size_t n, float* lg, const float* lse) {
      if (source == LabelSource::kData) {
        next_token_labels(host_labels, ids, r0, n, T);
        Ops::upload(labels.data(), host_labels.data(), n);
      } else {
        // Row r0 + r is position (r0 + r) % T of window first_window + (r0 + r) / T: its stream
        // is (first_window * T) + r0 + r, the same however the windows are batched.
        Ops::sample_labels(labels.data(), lg, lse, n, vocab, seed, first_window * T + r0);
      }
      Ops::row_nll(nll.data(), lg, lse, labels.data(), n, vocab);
      host_nll.resize(n);
      Ops::download(host_nll.data(), nll.data(), n);
      for (std::size_t r = 0; r < n; ++r) window_nll[(r0 + r) / T] += host_nll[r];
      Ops::cross_entropy_backward_rows(lg, lse, labels.data(), scales.data(), n, vocab);
      if (dweight) Linear<B>::backward_weight(dweight, lg, h + r0 * hidden, n, hidden, vocab, true);
      Linear<B>::backward_input(dhidden + r0 * hidden, lg, weight, n, hidden, vocab, false);
    });
    return window_nll;
  }
};

}  // namespace fragile::model
