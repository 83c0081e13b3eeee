// How far a modified model (some linear layers overridden, e.g. fake-quantized) is from the
// FP model on the scored predictions of token windows:
//   KL(P_fp || P_mod) per token (the direction llama.cpp's --kl-divergence reports),
//   its mean, top-1 agreement (argmax equal), and the NLL of the target under each model.
//
// Many comparisons against one FP model (oracle sweeps: one per layer) should not rerun the FP
// forward each time: make_reference() runs it once and keeps the FP final hidden state of every
// scored prediction (tokens x C floats in backend memory, not tokens x V); divergence(model,
// windows, reference, overrides) then runs one forward of the modified model and gives its
// perplexity, KL and top-1 agreement from that single forward (the FP logits are recomputed from
// the kept hidden states by the LM head alone). Both run the one streamed evaluation of
// eval/window_scores.hpp.
#pragma once

#include "fragile/eval/perplexity.hpp"
#include "fragile/eval/window_scores.hpp"

#include <cstddef>
#include <limits>
#include <span>
#include <utility>
#include <vector>

namespace fragile::eval {

/// The FP model's side of repeated comparisons over fixed windows, computed once.
template <class B>
struct Reference {
  std::size_t windows = 0;
  std::size_t tokens = 0;         ///< scored predictions
  std::size_t hidden_size = 0;
  std::size_t batch_size = 1;     ///< windows per forward, reused by every comparison
  PerplexityProtocol protocol = PerplexityProtocol::kGptq;
  ScoredHidden<B> scored;         ///< FP final hidden state feeding each scored prediction
  std::vector<double> window_nll_sum;  ///< FP NLL sum of each window's targets
  PerplexityResult perplexity;    ///< of the FP model, under `protocol`
};

struct ReferenceOptions {
  PerplexityProtocol protocol = PerplexityProtocol::kGptq;
  std::size_t batch_size = 1;
};

/// Runs the FP model once over `windows` and keeps what later comparisons need.
template <class B>
Reference<B> make_reference(const model::Transformer<B>& model,
                            std::span<const data::Window> windows,
                            const ReferenceOptions& opt = {}) {
  Reference<B> ref;
  const auto s = score_windows(model, windows, nullptr, nullptr,
                               {.batch_size = opt.batch_size, .what = "make_reference"},
                               &ref.scored);
  ref.windows = windows.size();
  ref.tokens = s.tokens;
  ref.hidden_size = model.config().hidden_size;
  ref.batch_size = opt.batch_size;
  ref.protocol = opt.protocol;
  ref.window_nll_sum = s.window_nll_sum;
  ref.perplexity = perplexity_of(s.window_nll_sum, windows, opt.protocol, "make_reference");
  return ref;
}

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

/// Perplexity of the model modified by `modified` (null: unmodified) and, unless disabled, its
/// KL divergence and top-1 agreement against `reference`, from one forward of the modified
/// model. `windows` must be the windows the reference was made from.
template <class B>
ReferenceDivergence divergence(const model::Transformer<B>& model,
                               std::span<const data::Window> windows,
                               const Reference<B>& reference,
                               const model::WeightOverrides* modified,
                               const ReferenceDivergenceOptions& opt = {}) {
  require<ArgumentError>(!windows.empty(), "divergence: no windows");
  const std::size_t C = model.config().hidden_size;
  require<ArgumentError>(reference.windows == windows.size() &&
                             reference.tokens == data::count_targets(windows) &&
                             reference.hidden_size == C,
                         "divergence: the reference holds {} windows / {} scored tokens of hidden "
                         "size {}, these windows are {} / {} and the model's hidden size is {} "
                         "(make the reference from the same model and windows)",
                         reference.windows, reference.tokens, reference.hidden_size,
                         windows.size(), data::count_targets(windows), C);
  auto s = score_windows(model, windows, modified, &reference.scored,
                         {.batch_size = reference.batch_size,
                          .kl = opt.divergence,
                          .keep_token_kl = opt.keep_token_kl,
                          .what = "divergence"});
  ReferenceDivergence r;
  r.perplexity = perplexity_of(s.window_nll_sum, windows, reference.protocol, "divergence");
  if (opt.divergence) {
    const auto n = static_cast<double>(s.tokens);
    r.mean_kl = s.kl_sum / n;
    r.top1_agreement = static_cast<double>(s.top1_agree) / n;
    r.token_kl = std::move(s.token_kl);
  }
  return r;
}

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

/// One comparison of the FP model with the model modified by `modified`: a reference and one
/// divergence() against it.
template <class B>
DivergenceResult divergence(const model::Transformer<B>& model,
                            std::span<const data::Window> windows,
                            const model::WeightOverrides& modified,
                            const DivergenceOptions& opt = {}) {
  const auto ref = make_reference(model, windows, {.protocol = PerplexityProtocol::kLlamaCpp,
                                                   .batch_size = opt.batch_size});
  const auto d = divergence(model, windows, ref, &modified, {.keep_token_kl = opt.keep_token_kl});
  DivergenceResult r;
  r.tokens = ref.tokens;
  r.mean_kl = d.mean_kl;
  r.top1_agreement = d.top1_agreement;
  r.base_mean_nll = ref.perplexity.mean_nll;
  r.modified_mean_nll = d.perplexity.mean_nll;
  r.token_kl = d.token_kl;
  return r;
}

}  // namespace fragile::eval
