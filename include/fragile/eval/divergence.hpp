// How far a modified model (some linear layers overridden, e.g. fake-quantized) is from the
// FP model on the scored predictions of token windows:
//   KL(P_fp || P_mod) per token (the direction llama.cpp's --kl-divergence reports),
//   its mean, top-1 agreement (argmax equal), and the NLL of the target under each model.
// Streamed: per batch of windows, the final hidden states of both models are kept (rows x C)
// and the LM head runs in chunks of TransformerOptions::head_chunk_rows rows, so memory does
// not scale with tokens x vocabulary.
#pragma once

#include "fragile/eval/perplexity.hpp"
#include "fragile/model/layers/cross_entropy.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace fragile::eval {

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
#pragma omp parallel for schedule(static) if (n * V >= backend::kCpuParallelMin)
      for (std::size_t i = 0; i < n; ++i) {
        const float* a = lp.data() + i * V;
        const float* q = lq.data() + i * V;
        double s = 0.0;
        for (std::size_t j = 0; j < V; ++j) {
          const double la = static_cast<double>(a[j]) - lse_p[i];
          const double lb = static_cast<double>(q[j]) - lse_q[i];
          s += std::exp(la) * (la - lb);
        }
        kl[i] = static_cast<float>(std::max(s, 0.0));
      }
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

}  // namespace fragile::eval
