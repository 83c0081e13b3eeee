// Perplexity of a model (optionally with overridden linear layers) over token windows, from the
// streamed evaluation (eval/window_scores.hpp). The windows say which predictions are scored
// (data::Window targets); the protocol says how scores aggregate (DESIGN.md):
//   kGptq      PPL = exp(mean over windows of the window's mean NLL)   (GPTQ's llama_eval:
//              exp(sum(loss_i * seqlen) / (n * seqlen)))
//   kLlamaCpp  PPL = exp(sum NLL / number of scored tokens)            (llama-perplexity)
// Cut the windows with data::gptq_eval_windows / data::llamacpp_eval_windows (token budget there).
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/data/windows.hpp"
#include "fragile/eval/window_scores.hpp"
#include "fragile/model/transformer.hpp"

#include <cmath>
#include <cstddef>
#include <span>
#include <vector>

namespace fragile::eval {

struct PerplexityOptions {
  PerplexityProtocol protocol = PerplexityProtocol::kGptq;
  std::size_t batch_size = 1;                             ///< windows per forward
  const model::WeightOverrides* overrides = nullptr;      ///< evaluate a modified model
};

struct PerplexityResult {
  double perplexity = 0.0;
  double mean_nll = 0.0;          ///< log(perplexity)
  std::size_t windows = 0;
  std::size_t tokens = 0;         ///< scored predictions
  std::vector<double> window_nll; ///< mean NLL of each window's scored predictions
};

/// The perplexity of per-window NLL sums under `protocol`.
inline PerplexityResult perplexity_of(const std::vector<double>& window_sum,
                                      std::span<const data::Window> windows,
                                      PerplexityProtocol protocol, const char* what) {
  PerplexityResult r;
  r.windows = windows.size();
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
  return r;
}

template <class B>
PerplexityResult perplexity(const model::Transformer<B>& model, std::span<const data::Window> windows,
                            const PerplexityOptions& opt = {}) {
  const auto s = score_windows(model, windows, opt.overrides, nullptr,
                               {.batch_size = opt.batch_size, .what = "perplexity"});
  return perplexity_of(s.window_nll_sum, windows, opt.protocol, "perplexity");
}

}  // namespace fragile::eval
