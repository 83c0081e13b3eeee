// Token windows for perplexity evaluation and calibration, cut from one tokenized text.
//
// Three protocols, each reproducing its reference implementation's indices:
//  * GPTQ evaluation (Frantar et al., GPTQ, ICLR 2023; repo IST-DASLab/gptq, datautils.py and
//    llama_eval): window i = tokens[i*seqlen, (i+1)*seqlen) for i < N / seqlen (tail dropped);
//    HF's shifted loss scores every prediction: targets 1..seqlen-1 of each window.
//  * llama.cpp `llama-perplexity` (tools/perplexity/perplexity.cpp, perplexity()): the text is
//    tokenized with the vocabulary's BOS prepended; it needs at least 2*n_ctx tokens;
//    n_chunk = N / n_ctx; chunk i = tokens[i*n_ctx, (i+1)*n_ctx) with its first token replaced
//    by BOS when the vocabulary adds BOS; with first = n_ctx/2, the logits of positions
//    first .. n_ctx-2 are scored against tokens first+1 .. n_ctx-1 (n_ctx - 1 - first targets);
//    PPL = exp(sum NLL / count) over all scored tokens.
//  * Calibration sampling as GPTQ's get_wikitext2 / get_ptb (one token stream: offset
//    i = random.randint(0, N - seqlen - 1), window tokens[i, i+seqlen)) and get_c4 (pick a
//    random document until one has more than seqlen tokens, as randint's range needs, then a
//    random offset in it the same way). GPTQ only uses the inputs (its targets are masked);
//    fragile's calibration windows score every prediction, which gradient-based metrics need. Offsets are drawn with fragile::Rng (portable), not Python's random, so the windows
//    are GPTQ's distribution, not its exact draws.
// The token budget caps the tokens a protocol consumes (0 = no cap): GPTQ and llama.cpp use
// floor(budget / seqlen) windows, the sampler min(n, floor(budget / seqlen)).
//
//   @inproceedings{frantar2023gptq,
//     title={{GPTQ}: Accurate Post-Training Quantization for Generative Pre-trained Transformers},
//     author={Frantar, Elias and Ashkboos, Saleh and Hoefler, Torsten and Alistarh, Dan},
//     booktitle={International Conference on Learning Representations}, year={2023}}
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/core/rng.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace fragile::data {

using TokenId = std::int32_t;

/// One model input and the positions whose next-token predictions are scored.
///
/// Target position t in [target_begin, target_end) means: the logits computed at position t-1
/// are scored against tokens[t]. Hence 1 <= target_begin <= target_end <= tokens.size().
struct Window {
  std::vector<TokenId> tokens;  ///< model input, `seqlen` ids
  std::size_t offset = 0;       ///< index of tokens[0] in its source stream (or document)
  std::size_t document = 0;     ///< source document (0 for a single stream)
  std::size_t target_begin = 1;
  std::size_t target_end = 0;

  [[nodiscard]] std::size_t size() const noexcept { return tokens.size(); }
  [[nodiscard]] std::size_t num_targets() const noexcept { return target_end - target_begin; }
  /// The scored target tokens, tokens[target_begin .. target_end).
  [[nodiscard]] std::span<const TokenId> targets() const noexcept {
    return std::span<const TokenId>(tokens).subspan(target_begin, num_targets());
  }
};

/// Total number of scored predictions over `windows`.
inline std::size_t count_targets(std::span<const Window> windows) noexcept {
  std::size_t n = 0;
  for (const auto& w : windows) n += w.num_targets();
  return n;
}

namespace detail {

inline void check_seqlen(std::size_t seqlen, const char* what) {
  require<ArgumentError>(seqlen >= 2, "{}: seqlen must be at least 2 (one input, one target), got {}",
                         what, seqlen);
}

/// Windows allowed by `max_tokens` (0 = unlimited).
inline std::size_t budget_windows(std::size_t max_tokens, std::size_t seqlen, const char* what) {
  if (max_tokens == 0) return SIZE_MAX;
  require<ArgumentError>(max_tokens >= seqlen,
                         "{}: token budget {} is smaller than one window of {} tokens", what,
                         max_tokens, seqlen);
  return max_tokens / seqlen;
}

inline Window make_window(std::span<const TokenId> source, std::size_t offset, std::size_t seqlen,
                          std::size_t target_begin, std::size_t document = 0) {
  Window w;
  w.tokens.assign(source.begin() + static_cast<std::ptrdiff_t>(offset),
                  source.begin() + static_cast<std::ptrdiff_t>(offset + seqlen));
  w.offset = offset;
  w.document = document;
  w.target_begin = target_begin;
  w.target_end = seqlen;
  return w;
}

}  // namespace detail

/// GPTQ evaluation: non-overlapping windows of `seqlen`, tail dropped, every prediction scored.
inline std::vector<Window> gptq_eval_windows(std::span<const TokenId> tokens, std::size_t seqlen,
                                             std::size_t max_tokens = 0) {
  detail::check_seqlen(seqlen, "gptq_eval_windows");
  require<ArgumentError>(tokens.size() >= seqlen,
                         "gptq_eval_windows: {} tokens are fewer than one window of {}",
                         tokens.size(), seqlen);
  const std::size_t n =
      std::min(tokens.size() / seqlen, detail::budget_windows(max_tokens, seqlen, "gptq_eval_windows"));
  std::vector<Window> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) out.push_back(detail::make_window(tokens, i * seqlen, seqlen, 1));
  return out;
}

/// llama.cpp `llama-perplexity`: `tokens` is the whole text tokenized as llama.cpp does
/// (common_tokenize with add_special = true, i.e. BOS first when the vocabulary adds one);
/// `bos` (when the vocabulary adds BOS) replaces the first token of every chunk. Only the
/// second half of each chunk is scored (targets n_ctx/2 + 1 .. n_ctx - 1).
inline std::vector<Window> llamacpp_eval_windows(std::span<const TokenId> tokens, std::size_t n_ctx,
                                                 std::optional<TokenId> bos,
                                                 std::size_t max_tokens = 0) {
  detail::check_seqlen(n_ctx, "llamacpp_eval_windows");
  require<ArgumentError>(n_ctx >= 4, "llamacpp_eval_windows: n_ctx must be at least 4 so that the "
                                     "second half holds a target, got {}",
                         n_ctx);
  require<ArgumentError>(tokens.size() >= 2 * n_ctx,
                         "llamacpp_eval_windows: llama.cpp needs at least 2*n_ctx = {} tokens, "
                         "got {}",
                         2 * n_ctx, tokens.size());
  const std::size_t n = std::min(tokens.size() / n_ctx,
                                 detail::budget_windows(max_tokens, n_ctx, "llamacpp_eval_windows"));
  const std::size_t first = n_ctx / 2;
  std::vector<Window> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    out.push_back(detail::make_window(tokens, i * n_ctx, n_ctx, first + 1));
    if (bos) out.back().tokens.front() = *bos;
  }
  return out;
}

/// GPTQ's get_wikitext2 calibration sampler: `n` windows of `seqlen` at offsets drawn uniformly
/// from [0, N - seqlen - 1] (so N must exceed seqlen), seeded; every prediction is a target.
inline std::vector<Window> sample_calibration_windows(std::span<const TokenId> tokens,
                                                      std::size_t n, std::size_t seqlen,
                                                      std::uint64_t seed,
                                                      std::size_t max_tokens = 0) {
  detail::check_seqlen(seqlen, "sample_calibration_windows");
  require<ArgumentError>(n > 0, "sample_calibration_windows: number of windows must be positive");
  require<ArgumentError>(tokens.size() > seqlen,
                         "sample_calibration_windows: {} tokens, need more than seqlen = {}",
                         tokens.size(), seqlen);
  const std::size_t count =
      std::min(n, detail::budget_windows(max_tokens, seqlen, "sample_calibration_windows"));
  Rng rng(seed);
  std::vector<Window> out;
  out.reserve(count);
  for (std::size_t k = 0; k < count; ++k) {
    const auto offset = static_cast<std::size_t>(rng.below(tokens.size() - seqlen));
    out.push_back(detail::make_window(tokens, offset, seqlen, 1));
  }
  return out;
}

/// GPTQ's get_c4 calibration sampler over tokenized documents: for each window, draw documents
/// uniformly until one has more than `seqlen` tokens, then an offset in [0, len - seqlen - 1].
inline std::vector<Window> sample_calibration_windows(
    std::span<const std::vector<TokenId>> documents, std::size_t n, std::size_t seqlen,
    std::uint64_t seed, std::size_t max_tokens = 0) {
  detail::check_seqlen(seqlen, "sample_calibration_windows");
  require<ArgumentError>(n > 0, "sample_calibration_windows: number of windows must be positive");
  std::size_t longest = 0;
  for (const auto& d : documents) longest = std::max(longest, d.size());
  require<ArgumentError>(longest > seqlen,
                         "sample_calibration_windows: none of {} documents has more than seqlen = "
                         "{} tokens (longest: {})",
                         documents.size(), seqlen, longest);
  const std::size_t count =
      std::min(n, detail::budget_windows(max_tokens, seqlen, "sample_calibration_windows"));
  Rng rng(seed);
  std::vector<Window> out;
  out.reserve(count);
  for (std::size_t k = 0; k < count; ++k) {
    std::size_t doc = 0;
    do {
      doc = static_cast<std::size_t>(rng.below(documents.size()));
    } while (documents[doc].size() <= seqlen);
    const auto& d = documents[doc];
    const auto offset = static_cast<std::size_t>(rng.below(d.size() - seqlen));
    out.push_back(detail::make_window(d, offset, seqlen, 1, doc));
  }
  return out;
}

}  // namespace fragile::data
