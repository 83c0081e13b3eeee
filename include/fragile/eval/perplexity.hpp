// Perplexity of a model (optionally with overridden linear layers) over token windows, streamed
// batch by batch. The windows say which predictions are scored (data::Window targets); the
// protocol says how scores aggregate (DESIGN.md):
//   kGptq      PPL = exp(mean over windows of the window's mean NLL)   (GPTQ's llama_eval:
//              exp(sum(loss_i * seqlen) / (n * seqlen)))
//   kLlamaCpp  PPL = exp(sum NLL / number of scored tokens)            (llama-perplexity)
// Cut the windows with data::gptq_eval_windows / data::llamacpp_eval_windows (token budget there).
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/data/windows.hpp"
#include "fragile/model/transformer.hpp"

#include <cmath>
#include <cstddef>
#include <span>
#include <vector>

namespace fragile::eval {

enum class PerplexityProtocol { kGptq, kLlamaCpp };

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

namespace detail {
/// Consecutive windows of one length, at most `batch` of them, starting at `first`.
inline std::size_t batch_end(std::span<const data::Window> w, std::size_t first, std::size_t batch) {
  std::size_t end = first + 1;
  while (end < w.size() && end - first < batch && w[end].size() == w[first].size()) ++end;
  return end;
}

inline std::vector<model::Window> tokens_of(std::span<const data::Window> w) {
  std::vector<model::Window> out;
  out.reserve(w.size());
  for (const auto& x : w) out.push_back(x.tokens);
  return out;
}

inline void check_targets(const data::Window& w, std::size_t index, const char* what) {
  require<ArgumentError>(w.target_begin >= 1 && w.target_begin <= w.target_end &&
                             w.target_end <= w.size(),
                         "{}: window {} scores targets [{}, {}) of {} tokens (need 1 <= begin <= "
                         "end <= size)", what, index, w.target_begin, w.target_end, w.size());
}
}  // namespace detail

template <class B>
PerplexityResult perplexity(const model::Transformer<B>& model, std::span<const data::Window> windows,
                            const PerplexityOptions& opt = {}) {
  require<ArgumentError>(!windows.empty(), "perplexity: no windows");
  require<ArgumentError>(opt.batch_size > 0, "perplexity: batch_size must be positive");
  PerplexityResult r;
  double total = 0.0;
  for (std::size_t first = 0; first < windows.size();) {
    const std::size_t end = detail::batch_end(windows, first, opt.batch_size);
    const auto batch = windows.subspan(first, end - first);
    for (std::size_t i = 0; i < batch.size(); ++i) detail::check_targets(batch[i], first + i, "perplexity");
    const auto ids = detail::tokens_of(batch);
    const auto nll = model.token_nll(ids, opt.overrides);  // (B, T-1): nll[b, t-1] scores token t
    const std::size_t T = batch[0].size();
    for (std::size_t b = 0; b < batch.size(); ++b) {
      double sum = 0.0;
      for (std::size_t t = batch[b].target_begin; t < batch[b].target_end; ++t)
        sum += nll[b * (T - 1) + t - 1];
      const std::size_t n = batch[b].num_targets();
      total += sum;
      r.tokens += n;
      r.window_nll.push_back(n ? sum / static_cast<double>(n) : 0.0);
    }
    r.windows += batch.size();
    first = end;
  }
  require<ArgumentError>(r.tokens > 0, "perplexity: the windows score no predictions");
  if (opt.protocol == PerplexityProtocol::kGptq) {
    double s = 0.0;
    for (double v : r.window_nll) s += v;
    r.mean_nll = s / static_cast<double>(r.windows);
  } else {
    r.mean_nll = total / static_cast<double>(r.tokens);
  }
  r.perplexity = std::exp(r.mean_nll);
  return r;
}

}  // namespace fragile::eval
