// The one streamed evaluation behind perplexity, divergence and the oracles: a model (optionally
// with overridden linear layers) runs over token windows batch by batch, and each window's
// scored predictions (data::Window targets) yield
//   the NLL sum of the window's targets,
//   against a reference (the FP model's final hidden states, kept once): the KL divergence
//   KL(P_ref || P_model) of each prediction and whether the argmax agrees.
// Only the scored rows reach the LM head, in chunks of TransformerOptions::head_chunk_rows, so
// memory never scales with tokens x vocabulary. Everything per token stays in backend memory;
// per-row sums cross to the host, where they are added in window order.
#pragma once

#include "fragile/backend/backend.hpp"
#include "fragile/core/error.hpp"
#include "fragile/data/windows.hpp"
#include "fragile/model/transformer.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

namespace fragile::eval {

/// How per-window scores aggregate into a perplexity (DESIGN.md):
///   kGptq      PPL = exp(mean over windows of the window's mean NLL)   (GPTQ's llama_eval)
///   kLlamaCpp  PPL = exp(sum NLL / number of scored tokens)            (llama-perplexity)
enum class PerplexityProtocol { kGptq, kLlamaCpp };

/// The final hidden state feeding every scored prediction of fixed windows, in backend memory,
/// with the targets: what a KL divergence against this model needs.
template <class B>
struct ScoredHidden {
  typename B::template Buffer<float> hidden;  ///< (tokens, C), windows in order
  std::vector<std::int32_t> targets;          ///< (tokens)
};

/// What one streamed evaluation gives.
struct WindowScores {
  std::vector<double> window_nll_sum;  ///< per window: the NLL sum of its scored targets
  std::size_t tokens = 0;              ///< scored predictions
  double kl_sum = 0.0;                 ///< sum of KL(P_ref || P_model), when against a reference
  std::size_t top1_agree = 0;          ///< predictions whose argmax equals the reference's
  std::vector<float> token_kl;         ///< per scored prediction, when kept
};

struct WindowScoreOptions {
  std::size_t batch_size = 1;     ///< windows per forward (consecutive windows of one length)
  bool kl = true;                 ///< with a reference: KL and top-1 too (else only its targets are checked)
  bool keep_token_kl = false;
  const char* what = "evaluation";  ///< the caller's name, for error messages
};

namespace detail {

/// Consecutive windows of one length, at most `batch` of them, starting at `first`.
inline std::size_t batch_end(std::span<const data::Window> w, std::size_t first, std::size_t batch) {
  std::size_t end = first + 1;
  while (end < w.size() && end - first < batch && w[end].size() == w[first].size()) ++end;
  return end;
}

inline void check_targets(const data::Window& w, std::size_t index, const char* what) {
  require<ArgumentError>(w.target_begin >= 1 && w.target_begin <= w.target_end &&
                             w.target_end <= w.size(),
                         "{}: window {} scores targets [{}, {}) of {} tokens (need 1 <= begin <= "
                         "end <= size)", what, index, w.target_begin, w.target_end, w.size());
}

/// B's buffer of T.
template <class B, class T>
using Buf = typename B::template Buffer<T>;

}  // namespace detail

/// Runs `model` (with `overrides`, may be null) over `windows`. With `reference` (made from the
/// same windows, whose targets are checked against its own), also sums the KL divergence from it
/// and the top-1 agreement with it unless opt.kl is off.
/// With `keep`, stores this model's scored hidden states and targets there (a reference for
/// later calls).
template <class B>
WindowScores score_windows(const model::Transformer<B>& model,
                           std::span<const data::Window> windows,
                           const model::WeightOverrides* overrides,
                           std::type_identity_t<const ScoredHidden<B>*> reference,
                           const WindowScoreOptions& opt,
                           std::type_identity_t<ScoredHidden<B>*> keep = nullptr) {
  using Ops = backend::Ops<B>;
  const char* what = opt.what;
  require<ArgumentError>(!windows.empty(), "{}: no windows", what);
  require<ArgumentError>(opt.batch_size > 0, "{}: batch_size must be positive", what);
  for (std::size_t i = 0; i < windows.size(); ++i) detail::check_targets(windows[i], i, what);
  const std::size_t C = model.config().hidden_size, V = model.config().vocab_size;
  const std::size_t total = data::count_targets(windows);
  require<ArgumentError>(total > 0, "{}: the windows score no predictions", what);
  if (reference)
    require<ArgumentError>(reference->targets.size() == total &&
                               reference->hidden.size() == total * C,
                           "{}: the reference holds {} scored tokens of hidden size {}, these "
                           "windows score {} and the model's hidden size is {} (make the "
                           "reference from the same model and windows)", what,
                           reference->targets.size(),
                           reference->targets.empty()
                               ? 0
                               : reference->hidden.size() / reference->targets.size(),
                           total, C);
  if (keep) {
    keep->hidden = typename B::template Buffer<float>(total * C);
    keep->targets.clear();
    keep->targets.reserve(total);
  }
  const model::LmHead<B> head = model.lm_head();
  const std::size_t chunk = head.chunk;
  WindowScores s;
  s.window_nll_sum.assign(windows.size(), 0.0);
  detail::Buf<B, float> lq(chunk * V), lse_q(chunk), lp, lse_p, kl;
  detail::Buf<B, std::int32_t> arg_q(chunk), arg_p, targets_dev(chunk);
  detail::Buf<B, double> nll(chunk);
  const bool kl_wanted = reference && opt.kl;
  if (kl_wanted) {
    lp = detail::Buf<B, float>(chunk * V);
    lse_p = detail::Buf<B, float>(chunk);
    kl = detail::Buf<B, float>(chunk);
    arg_p = detail::Buf<B, std::int32_t>(chunk);
  }
  std::vector<std::int32_t> rows, targets, h_arg_q(chunk), h_arg_p(chunk);
  std::vector<std::size_t> row_window;
  std::vector<double> h_nll(chunk);
  std::vector<float> h_kl(chunk);
  std::vector<model::TokenIds> ids;
  std::size_t g0 = 0;  // scored predictions before this batch
  for (std::size_t first = 0; first < windows.size();) {
    const std::size_t end = detail::batch_end(windows, first, opt.batch_size);
    const auto batch = windows.subspan(first, end - first);
    const std::size_t T = batch[0].size();
    ids.clear();
    for (const auto& w : batch) ids.push_back(w.tokens);
    const auto hidden = model.hidden_states(ids, overrides);
    // The scored rows (position t-1 predicts target t), their windows and targets.
    rows.clear();
    targets.clear();
    row_window.clear();
    for (std::size_t b = 0; b < batch.size(); ++b)
      for (std::size_t t = batch[b].target_begin; t < batch[b].target_end; ++t) {
        rows.push_back(static_cast<std::int32_t>(b * T + t - 1));
        targets.push_back(batch[b].tokens[t]);
        row_window.push_back(first + b);
      }
    const std::size_t n_rows = rows.size();
    if (reference)
      for (std::size_t i = 0; i < n_rows; ++i)
        require<ArgumentError>(targets[i] == reference->targets[g0 + i],
                               "{}: scored token {} is {}, the reference's is {} (make the "
                               "reference from the same windows)", what, g0 + i, targets[i],
                               reference->targets[g0 + i]);
    detail::Buf<B, std::int32_t> rows_dev(n_rows);
    Ops::upload(rows_dev.data(), rows.data(), n_rows);
    detail::Buf<B, float> h(n_rows * C);
    Ops::gather_rows(h.data(), hidden.data(), rows_dev.data(), n_rows, C);
    if (keep) {
      Ops::copy(keep->hidden.data() + g0 * C, h.data(), n_rows * C);
      keep->targets.insert(keep->targets.end(), targets.begin(), targets.end());
    }
    for (std::size_t r0 = 0; r0 < n_rows; r0 += chunk) {
      const std::size_t n = std::min(chunk, n_rows - r0);
      head.logits(h.data() + r0 * C, n, lq.data());
      Ops::logsumexp_rows(lse_q.data(), arg_q.data(), lq.data(), n, V);
      Ops::upload(targets_dev.data(), targets.data() + r0, n);
      Ops::row_nll(nll.data(), lq.data(), lse_q.data(), targets_dev.data(), n, V);
      Ops::download(h_nll.data(), nll.data(), n);
      for (std::size_t i = 0; i < n; ++i) s.window_nll_sum[row_window[r0 + i]] += h_nll[i];
      if (!kl_wanted) continue;
      head.logits(reference->hidden.data() + (g0 + r0) * C, n, lp.data());
      Ops::logsumexp_rows(lse_p.data(), arg_p.data(), lp.data(), n, V);
      Ops::kl_rows(kl.data(), lp.data(), lse_p.data(), lq.data(), lse_q.data(), n, V);
      Ops::download(h_kl.data(), kl.data(), n);
      Ops::download(h_arg_q.data(), arg_q.data(), n);
      Ops::download(h_arg_p.data(), arg_p.data(), n);
      for (std::size_t i = 0; i < n; ++i) {
        s.kl_sum += h_kl[i];
        s.top1_agree += h_arg_p[i] == h_arg_q[i] ? 1 : 0;
        if (opt.keep_token_kl) s.token_kl.push_back(h_kl[i]);
      }
    }
    g0 += n_rows;
    first = end;
  }
  s.tokens = g0;
  return s;
}

}  // namespace fragile::eval
