// How far a modified model (some linear layers overridden, e.g. fake-quantized) is from the
// FP model on the scored predictions of token windows:
//   KL(P_fp || P_mod) per token (the direction llama.cpp's --kl-divergence reports),
//   its mean, top-1 agreement (argmax equal), and the NLL of the target under each model.
// Streamed: per batch of windows, the final hidden states of both models are kept (rows x C)
// and the LM head runs in chunks of TransformerOptions::head_chunk_rows rows, so memory does
// not scale with tokens x vocabulary.
//
// Many comparisons against one FP model (oracle sweeps: one per layer) should not rerun the FP
// forward each time: make_reference() runs it once and keeps the FP final hidden state of every
// scored prediction (tokens x C floats, not tokens x V); divergence(model, windows, reference,
// overrides) then runs one forward of the modified model and gives its perplexity, KL and top-1
// agreement from that single forward (the FP logits are recomputed from the kept hidden states
// by the LM head alone).
#pragma once

#include "fragile/eval/perplexity.hpp"
#include "fragile/model/layers/cross_entropy.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

namespace fragile::eval {

namespace detail {
/// kl[i] = KL(P || Q) of n rows of V logits, given each row's log-sum-exp (clamped at 0).
inline void kl_rows(const float* lp, const float* lse_p, const float* lq, const float* lse_q,
                    std::size_t n, std::size_t V, float* kl) {
#pragma omp parallel for schedule(static) if (n * V >= backend::kCpuParallelMin)
  for (std::size_t i = 0; i < n; ++i) {
    const float* a = lp + i * V;
    const float* q = lq + i * V;
    double s = 0.0;
    for (std::size_t j = 0; j < V; ++j) {
      const double la = static_cast<double>(a[j]) - lse_p[i];
      const double lb = static_cast<double>(q[j]) - lse_q[i];
      s += std::exp(la) * (la - lb);
    }
    kl[i] = static_cast<float>(std::max(s, 0.0));
  }
}
}  // namespace detail

struct DivergenceOptions {
  std::size_t batch_size = 1;
  bool keep_token_kl = true;  ///< fill DivergenceResult::token_kl
};

struct DivergenceResult {
  double mean_kl = 0.0;
  double top1_agreement = 0.0;   ///< fraction of scored positions with equal argmax
  std::size_t tokens = 0;
  double base_mean_nll = 0.0;     ///< token-weighted mean NLL of the targets, FP model
  double modified_mean_nll = 0.0; ///< same, modified model
  std::vector<float> token_kl;    ///< per scored prediction, windows in order
};

template <class B>
DivergenceResult divergence(const model::Transformer<B>& model,
                            std::span<const data::Window> windows,
                            const model::WeightOverrides& modified,
                            const DivergenceOptions& opt = {}) {
  require<ArgumentError>(!windows.empty(), "divergence: no windows");
  require<ArgumentError>(opt.batch_size > 0, "divergence: batch_size must be positive");
  const std::size_t C = model.config().hidden_size, V = model.config().vocab_size;
  const std::size_t chunk = std::max<std::size_t>(1, model.options().head_chunk_rows);
  DivergenceResult r;
  double kl_sum = 0.0, nll_p = 0.0, nll_q = 0.0;
  std::size_t agree = 0;
  std::vector<float> lp(chunk * V), lq(chunk * V), lse_p(chunk), lse_q(chunk), kl(chunk);
  std::vector<std::int32_t> arg_p(chunk), arg_q(chunk);
  for (std::size_t first = 0; first < windows.size();) {
    const std::size_t end = detail::batch_end(windows, first, opt.batch_size);
    const auto batch = windows.subspan(first, end - first);
    const std::size_t T = batch[0].size();
    for (std::size_t i = 0; i < batch.size(); ++i) detail::check_targets(batch[i], first + i, "divergence");
    const auto ids = detail::tokens_of(batch);
    const auto hp = model.final_hidden(ids);
    const auto hq = model.final_hidden(ids, &modified);
    // Rows whose logits are scored (position t-1 for target t) and their targets.
    std::vector<std::size_t> rows;
    std::vector<std::int32_t> targets;
    for (std::size_t b = 0; b < batch.size(); ++b)
      for (std::size_t t = batch[b].target_begin; t < batch[b].target_end; ++t) {
        rows.push_back(b * T + t - 1);
        targets.push_back(batch[b].tokens[t]);
      }
    std::vector<float> gp(std::min(chunk, rows.size()) * C), gq(gp.size());
    for (std::size_t r0 = 0; r0 < rows.size(); r0 += chunk) {
      const std::size_t n = std::min(chunk, rows.size() - r0);
      for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < C; ++j) {
          gp[i * C + j] = hp[rows[r0 + i] * C + j];
          gq[i * C + j] = hq[rows[r0 + i] * C + j];
        }
      model.head(gp.data(), n, lp.data());
      model.head(gq.data(), n, lq.data());
      model::layers::logsumexp_rows(B{}, lse_p.data(), arg_p.data(), lp.data(), n, V);
      model::layers::logsumexp_rows(B{}, lse_q.data(), arg_q.data(), lq.data(), n, V);
      detail::kl_rows(lp.data(), lse_p.data(), lq.data(), lse_q.data(), n, V, kl.data());
      for (std::size_t i = 0; i < n; ++i) {
        kl_sum += kl[i];
        agree += arg_p[i] == arg_q[i] ? 1 : 0;
        const auto tgt = static_cast<std::size_t>(targets[r0 + i]);
        nll_p += static_cast<double>(lse_p[i]) - lp[i * V + tgt];
        nll_q += static_cast<double>(lse_q[i]) - lq[i * V + tgt];
        if (opt.keep_token_kl) r.token_kl.push_back(kl[i]);
      }
      r.tokens += n;
    }
    first = end;
  }
  require<ArgumentError>(r.tokens > 0, "divergence: the windows score no predictions");
  const auto n = static_cast<double>(r.tokens);
  r.mean_kl = kl_sum / n;
  r.top1_agreement = static_cast<double>(agree) / n;
  r.base_mean_nll = nll_p / n;
  r.modified_mean_nll = nll_q / n;
  return r;
}

/// The FP model's side of repeated comparisons over fixed windows, computed once.
struct Reference {
  std::size_t windows = 0;
  std::size_t tokens = 0;         ///< scored predictions
  std::size_t hidden_size = 0;
  std::size_t batch_size = 1;     ///< windows per forward, reused by every comparison
  PerplexityProtocol protocol = PerplexityProtocol::kGptq;
  std::vector<float> hidden;      ///< (tokens, C): FP final hidden state feeding each scored prediction
  std::vector<std::int32_t> targets;  ///< (tokens): the scored target ids, windows in order
  PerplexityResult perplexity;    ///< of the FP model, under `protocol`
};

struct ReferenceOptions {
  PerplexityProtocol protocol = PerplexityProtocol::kGptq;
  std::size_t batch_size = 1;
};

/// What one modified forward gives against a Reference.
struct ReferenceDivergence {
  PerplexityResult perplexity;  ///< of the modified model, under the reference's protocol
  double mean_kl = std::numeric_limits<double>::quiet_NaN();  ///< mean KL(P_fp || P_mod) per scored token
  double top1_agreement = std::numeric_limits<double>::quiet_NaN();
  std::vector<float> token_kl;  ///< per scored prediction when keep_token_kl
};

struct ReferenceDivergenceOptions {
  bool divergence = true;      ///< KL and top-1 (one LM-head pass over the FP hidden states); off: PPL only
  bool keep_token_kl = false;
};

namespace detail {

/// Final hidden states of one batch's scored rows, gathered into (scored, C) in window order,
/// with each row's window (relative to the batch) and target.
template <class B>
void scored_hidden(const model::Transformer<B>& model, std::span<const data::Window> batch,
                   std::size_t first, const model::WeightOverrides* ov, const char* what,
                   std::vector<float>& out, std::vector<std::size_t>& row_window,
                   std::vector<std::int32_t>& targets) {
  for (std::size_t i = 0; i < batch.size(); ++i) check_targets(batch[i], first + i, what);
  const auto ids = tokens_of(batch);
  const auto h = model.final_hidden(ids, ov);
  const std::size_t C = model.config().hidden_size, T = batch[0].size();
  out.clear();
  row_window.clear();
  targets.clear();
  for (std::size_t b = 0; b < batch.size(); ++b)
    for (std::size_t t = batch[b].target_begin; t < batch[b].target_end; ++t) {
      const float* src = h.data() + (b * T + t - 1) * C;
      out.insert(out.end(), src, src + C);
      row_window.push_back(b);
      targets.push_back(batch[b].tokens[t]);
    }
}

/// Fills perplexity/mean_nll from window sums under `protocol`.
inline void finish_perplexity(PerplexityResult& r, const std::vector<double>& window_sum,
                              std::span<const data::Window> windows, PerplexityProtocol protocol,
                              const char* what) {
  r.windows = windows.size();
  r.tokens = 0;
  r.window_nll.clear();
  double total = 0.0;
  for (std::size_t w = 0; w < windows.size(); ++w) {
    const std::size_t n = windows[w].num_targets();
    r.tokens += n;
    total += window_sum[w];
    r.window_nll.push_back(n ? window_sum[w] / static_cast<double>(n) : 0.0);
  }
  require<ArgumentError>(r.tokens > 0, "{}: the windows score no predictions", what);
  if (protocol == PerplexityProtocol::kGptq) {
    double s = 0.0;
    for (double v : r.window_nll) s += v;
    r.mean_nll = s / static_cast<double>(r.windows);
  } else {
    r.mean_nll = total / static_cast<double>(r.tokens);
  }
  r.perplexity = std::exp(r.mean_nll);
}

}  // namespace detail

/// Runs the FP model once over `windows` and keeps what later comparisons need.
template <class B>
Reference make_reference(const model::Transformer<B>& model, std::span<const data::Window> windows,
                         const ReferenceOptions& opt = {}) {
  require<ArgumentError>(!windows.empty(), "make_reference: no windows");
  require<ArgumentError>(opt.batch_size > 0, "make_reference: batch_size must be positive");
  const std::size_t C = model.config().hidden_size, V = model.config().vocab_size;
  const std::size_t chunk = std::max<std::size_t>(1, model.options().head_chunk_rows);
  Reference ref;
  ref.windows = windows.size();
  ref.hidden_size = C;
  ref.batch_size = opt.batch_size;
  ref.protocol = opt.protocol;
  std::vector<double> window_sum(windows.size(), 0.0);
  std::vector<float> h, logits(chunk * V), lse(chunk);
  std::vector<std::size_t> row_window;
  std::vector<std::int32_t> targets;
  for (std::size_t first = 0; first < windows.size();) {
    const std::size_t end = detail::batch_end(windows, first, opt.batch_size);
    detail::scored_hidden(model, windows.subspan(first, end - first), first, nullptr,
                          "make_reference", h, row_window, targets);
    const std::size_t rows = targets.size();
    for (std::size_t r0 = 0; r0 < rows; r0 += chunk) {
      const std::size_t n = std::min(chunk, rows - r0);
      model.head(h.data() + r0 * C, n, logits.data());
      model::layers::logsumexp_rows(B{}, lse.data(), nullptr, logits.data(), n, V);
      for (std::size_t i = 0; i < n; ++i)
        window_sum[first + row_window[r0 + i]] +=
            static_cast<double>(lse[i]) - logits[i * V + static_cast<std::size_t>(targets[r0 + i])];
    }
    ref.hidden.insert(ref.hidden.end(), h.begin(), h.end());
    ref.targets.insert(ref.targets.end(), targets.begin(), targets.end());
    first = end;
  }
  ref.tokens = ref.targets.size();
  detail::finish_perplexity(ref.perplexity, window_sum, windows, opt.protocol, "make_reference");
  return ref;
}

/// Perplexity of the model modified by `modified` (null: unmodified) and, unless disabled, its
/// KL divergence and top-1 agreement against `reference`, from one forward of the modified
/// model. `windows` must be the windows the reference was made from.
template <class B>
ReferenceDivergence divergence(const model::Transformer<B>& model,
                               std::span<const data::Window> windows, const Reference& reference,
                               const model::WeightOverrides* modified,
                               const ReferenceDivergenceOptions& opt = {}) {
  require<ArgumentError>(!windows.empty(), "divergence: no windows");
  const std::size_t C = model.config().hidden_size, V = model.config().vocab_size;
  require<ArgumentError>(reference.windows == windows.size() &&
                             reference.tokens == data::count_targets(windows) &&
                             reference.hidden_size == C &&
                             reference.hidden.size() == reference.tokens * C,
                         "divergence: the reference holds {} windows / {} scored tokens of hidden "
                         "size {}, these windows are {} / {} and the model's hidden size is {} "
                         "(make the reference from the same model and windows)",
                         reference.windows, reference.tokens, reference.hidden_size,
                         windows.size(), data::count_targets(windows), C);
  const std::size_t chunk = std::max<std::size_t>(1, model.options().head_chunk_rows);
  ReferenceDivergence r;
  std::vector<double> window_sum(windows.size(), 0.0);
  double kl_sum = 0.0;
  std::size_t agree = 0, g0 = 0;
  std::vector<float> h, lp(chunk * V), lq(chunk * V), lse_p(chunk), lse_q(chunk), kl(chunk);
  std::vector<std::int32_t> arg_p(chunk), arg_q(chunk), targets;
  std::vector<std::size_t> row_window;
  for (std::size_t first = 0; first < windows.size();) {
    const std::size_t end = detail::batch_end(windows, first, reference.batch_size);
    detail::scored_hidden(model, windows.subspan(first, end - first), first, modified,
                          "divergence", h, row_window, targets);
    const std::size_t rows = targets.size();
    for (std::size_t i = 0; i < rows; ++i)
      require<ArgumentError>(targets[i] == reference.targets[g0 + i],
                             "divergence: scored token {} is {}, the reference's is {} (make the "
                             "reference from the same windows)", g0 + i, targets[i],
                             reference.targets[g0 + i]);
    for (std::size_t r0 = 0; r0 < rows; r0 += chunk) {
      const std::size_t n = std::min(chunk, rows - r0);
      model.head(h.data() + r0 * C, n, lq.data());
      model::layers::logsumexp_rows(B{}, lse_q.data(), arg_q.data(), lq.data(), n, V);
      for (std::size_t i = 0; i < n; ++i)
        window_sum[first + row_window[r0 + i]] +=
            static_cast<double>(lse_q[i]) - lq[i * V + static_cast<std::size_t>(targets[r0 + i])];
      if (!opt.divergence) continue;
      model.head(reference.hidden.data() + (g0 + r0) * C, n, lp.data());
      model::layers::logsumexp_rows(B{}, lse_p.data(), arg_p.data(), lp.data(), n, V);
      detail::kl_rows(lp.data(), lse_p.data(), lq.data(), lse_q.data(), n, V, kl.data());
      for (std::size_t i = 0; i < n; ++i) {
        kl_sum += kl[i];
        agree += arg_p[i] == arg_q[i] ? 1 : 0;
        if (opt.keep_token_kl) r.token_kl.push_back(kl[i]);
      }
    }
    g0 += rows;
    first = end;
  }
  detail::finish_perplexity(r.perplexity, window_sum, windows, reference.protocol, "divergence");
  if (opt.divergence) {
    const auto n = static_cast<double>(r.perplexity.tokens);
    r.mean_kl = kl_sum / n;
    r.top1_agreement = static_cast<double>(agree) / n;
  }
  return r;
}

}  // namespace fragile::eval
