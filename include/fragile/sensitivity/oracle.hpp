// Fragility oracles: the ground truth that sensitivity metrics are judged against (paper 000,
// DESIGN.md "Definitions"), measured by evaluating the model with weight overrides, for every
// linear layer (or a chosen subset):
//   RestoreOne   V_l(b) = PPL(all linears at Q_b) - PPL(all at Q_b, layer l restored to FP)
//                KL:      KL(FP || all at Q_b) - KL(FP || all but l)
//   QuantizeOne  U_l(b) = PPL(only l at Q_b) - PPL(FP)
//                KL:      KL(FP || only l at Q_b) - 0
// Positive = fragile for both. KL is the mean per scored token in eval::divergence's direction
// KL(P_fp || P_mod); every evaluation also reports top-1 agreement with the FP model.
//
// Cost: RestoreOne runs exactly layers + 1 modified forwards (the all-quantized base and one per
// layer), QuantizeOne exactly `layers`; both plus one FP forward (eval::make_reference) whose
// final hidden states serve every KL, so each evaluation is one forward of the modified model
// and one extra LM-head pass over the FP hidden states (none with `divergence = false`).
// The quantized weights are passed as views and set as WeightOverrides: nothing is copied and
// the model is never reloaded (RestoreOne: all set, erase(l), evaluate, set(l) back).
//
// Resume: with a study::ResultStore every finished evaluation is stored (durably) under
// "oracle/<kind>/<protocol>/<bits label>/<layer name or 'base'>", the FP perplexity under
// "oracle/fp/<protocol>"; a rerun reads those back instead of recomputing. The store's
// fingerprint is the caller's job and must cover the model, the windows (and batching) and the
// quantizer; the bits label must name the quantizer setting (e.g. "rtn3g32").
//
// Determinism: same inputs, same numbers up to float rounding: the CPU runtime repeats itself to
// about 1e-8 relative (Eigen's vectorised reductions depend on heap alignment); values read back
// from a store are bit-identical to what was stored.
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/core/tensor.hpp"
#include "fragile/data/windows.hpp"
#include "fragile/eval/divergence.hpp"
#include "fragile/eval/perplexity.hpp"
#include "fragile/model/transformer.hpp"
#include "fragile/study/progress.hpp"
#include "fragile/study/result_store.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstddef>
#include <functional>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fragile::sensitivity {

enum class OracleKind { kRestoreOne, kQuantizeOne };

/// "restore_one", "quantize_one" (result-store keys, JSON).
constexpr std::string_view oracle_kind_name(OracleKind k) noexcept {
  return k == OracleKind::kRestoreOne ? "restore_one" : "quantize_one";
}

/// Q_b(W_l) of linear layer l: row-major (out, in). The references must stay valid for the
/// whole sweep (RestoreOne holds all of them at once).
using QuantizedWeights = std::function<const MatrixF&(std::size_t linear)>;

template <class B>
struct OracleOptions {
  /// Names the quantizer setting in result-store keys and in the result ("rtn3g32").
  std::string bits_label;
  /// Linear indices (Transformer::linears()) to measure; empty = every linear layer. RestoreOne
  /// always quantizes every layer for its base, whatever the subset.
  std::vector<std::size_t> layers;
  eval::PerplexityProtocol protocol = eval::PerplexityProtocol::kGptq;
  std::size_t batch_size = 1;  ///< windows per forward
  /// KL and top-1 agreement too (one LM-head pass over the FP hidden states per evaluation).
  bool divergence = true;
  /// Finished evaluations are stored and read back on a rerun (see the header comment).
  study::ResultStore* store = nullptr;
  /// Progress lines with ETA (note: the layer name); null = silent.
  study::Progress::Sink progress = study::Progress::default_sink();
  std::chrono::milliseconds progress_interval = std::chrono::seconds(2);
  /// A reference made from the same model and windows (shared between sweeps); null = make one
  /// when something has to be computed. Its protocol and batching take precedence.
  const eval::Reference<B>* reference = nullptr;
};

/// One evaluation of a modified model.
struct OracleEvaluation {
  double ppl = std::numeric_limits<double>::quiet_NaN();
  double kl = std::numeric_limits<double>::quiet_NaN();    ///< mean KL(FP || modified) per token
  double top1 = std::numeric_limits<double>::quiet_NaN();  ///< top-1 agreement with FP

  [[nodiscard]] nlohmann::json to_json() const {
    auto num = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
    return {{"ppl", num(ppl)}, {"kl", num(kl)}, {"top1", num(top1)}};
  }
  /// Null (or absent) fields read back as NaN.
  static OracleEvaluation from_json(const nlohmann::json& j) {
    auto get = [&](const char* k) {
      return j.contains(k) && j[k].is_number() ? j[k].get<double>()
                                               : std::numeric_limits<double>::quiet_NaN();
    };
    return {get("ppl"), get("kl"), get("top1")};
  }
  /// from_json of the value stored under `key`, with each number checked against its domain
  /// (ppl >= 1, kl >= 0, top1 in [0, 1]): a value no evaluation can produce is an IoError
  /// naming the key, never a result.
  static OracleEvaluation from_stored(const nlohmann::json& j, std::string_view key) {
    const OracleEvaluation e = from_json(j);
    auto check = [&](double v, const char* name, bool ok, const char* domain) {
      require<IoError>(std::isnan(v) || (std::isfinite(v) && ok),
                       "result store: '{}' holds {} = {}, outside {}; delete the store to start "
                       "over", key, name, v, domain);
    };
    check(e.ppl, "ppl", e.ppl >= 1.0, "[1, inf)");
    check(e.kl, "kl", e.kl >= -1e-9, "[0, inf)");
    check(e.top1, "top1", e.top1 >= 0.0 && e.top1 <= 1.0, "[0, 1]");
    return e;
  }
};

struct OracleRow {
  std::size_t linear = 0;  ///< index in Transformer::linears()
  std::string name;        ///< HF module name
  std::size_t block = 0;
  model::LinearKind kind = model::LinearKind::kQ;
  double ppl = 0.0;        ///< RestoreOne: all but l quantized; QuantizeOne: only l quantized
  double delta_ppl = 0.0;  ///< V_l (RestoreOne: base - ppl) or U_l (QuantizeOne: ppl - FP)
  double kl = 0.0;
  double delta_kl = 0.0;   ///< RestoreOne: base_kl - kl; QuantizeOne: kl
  double top1 = 0.0;
  bool resumed = false;    ///< read back from the result store
};

struct OracleResult {
  OracleKind kind = OracleKind::kRestoreOne;
  std::string bits_label;
  eval::PerplexityProtocol protocol = eval::PerplexityProtocol::kGptq;
  std::size_t tokens = 0;    ///< scored predictions per evaluation
  double fp_ppl = 0.0;
  /// RestoreOne: every linear quantized. QuantizeOne: the FP model (base_kl 0, base_top1 1).
  double base_ppl = 0.0, base_kl = 0.0, base_top1 = 0.0;
  /// Modified-model forwards run by this call (stored results not counted): layers + 1 for a
  /// fresh RestoreOne sweep, layers for QuantizeOne.
  std::size_t evaluations = 0;
  /// FP forwards run by this call: 1 when it made its reference, else 0.
  std::size_t fp_evaluations = 0;
  std::size_t resumed = 0;   ///< evaluations read back from the store
  std::vector<OracleRow> rows;

  [[nodiscard]] nlohmann::json to_json() const {
    auto num = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
    nlohmann::json layers = nlohmann::json::array();
    for (const auto& r : rows)
      layers.push_back({{"linear", r.linear}, {"name", r.name}, {"block", r.block},
                        {"kind", std::string(model::linear_suffix(r.kind))}, {"ppl", num(r.ppl)},
                        {"delta_ppl", num(r.delta_ppl)}, {"kl", num(r.kl)},
                        {"delta_kl", num(r.delta_kl)}, {"top1", num(r.top1)},
                        {"resumed", r.resumed}});
    return {{"oracle", std::string(oracle_kind_name(kind))},
            {"bits_label", bits_label},
            {"protocol", protocol == eval::PerplexityProtocol::kGptq ? "gptq" : "llamacpp"},
            {"tokens", tokens},
            {"fp_ppl", num(fp_ppl)},
            {"base_ppl", num(base_ppl)},
            {"base_kl", num(base_kl)},
            {"base_top1", num(base_top1)},
            {"evaluations", evaluations},
            {"fp_evaluations", fp_evaluations},
            {"resumed", resumed},
            {"layers", std::move(layers)}};
  }
};

namespace detail {

inline std::string_view protocol_key(eval::PerplexityProtocol p) noexcept {
  return p == eval::PerplexityProtocol::kGptq ? "gptq" : "llamacpp";
}

/// Validates Q_b(W_l) against the registry: shape (naming the layer and the expected shape) and
/// finiteness.
inline void check_quantized(const model::LinearInfo& li, const MatrixF& q) {
  require<ShapeError>(static_cast<std::size_t>(q.rows()) == li.out_features &&
                          static_cast<std::size_t>(q.cols()) == li.in_features,
                      "oracle: quantized weight of '{}' is [{}, {}], the layer needs [{}, {}] "
                      "(out_features, in_features)",
                      li.name, q.rows(), q.cols(), li.out_features, li.in_features);
  require<NumericError>(q.allFinite(), "oracle: quantized weight of '{}' holds a non-finite value",
                        li.name);
}

}  // namespace detail

/// Runs the `kind` oracle over the selected linear layers of `model` on `windows`.
template <class B>
OracleResult run_oracle(OracleKind kind, const model::Transformer<B>& model,
                        std::span<const data::Window> windows, const QuantizedWeights& quantized,
                        const OracleOptions<B>& opt = {}) {
  const auto& linears = model.linears();
  require<ArgumentError>(!windows.empty(), "oracle: no windows");
  require<ArgumentError>(opt.batch_size > 0, "oracle: batch_size must be positive");
  require<ArgumentError>(static_cast<bool>(quantized), "oracle: no quantized weights given");
  require<ArgumentError>(!opt.store || !opt.bits_label.empty(),
                         "oracle: a result store needs OracleOptions::bits_label to name the "
                         "quantizer setting in its keys");
  for (std::size_t w = 0; w < windows.size(); ++w) eval::detail::check_targets(windows[w], w, "oracle");
  const std::size_t tokens = data::count_targets(windows);
  require<ArgumentError>(tokens > 0, "oracle: the windows score no predictions");
  const eval::PerplexityProtocol protocol = opt.reference ? opt.reference->protocol : opt.protocol;

  std::vector<std::size_t> layers = opt.layers;
  if (layers.empty())
    for (std::size_t l = 0; l < linears.size(); ++l) layers.push_back(l);
  {
    std::vector<char> seen(linears.size(), 0);
    for (auto l : layers) {
      require<ArgumentError>(l < linears.size(),
                             "oracle: layer index {} out of range (the model has {} linear layers)",
                             l, linears.size());
      require<ArgumentError>(!seen[l], "oracle: layer index {} ('{}') selected twice", l,
                             linears[l].name);
      seen[l] = 1;
    }
  }

  // Quantized weights: every layer for RestoreOne's base, the selected ones for QuantizeOne.
  std::vector<const MatrixF*> q(linears.size(), nullptr);
  auto fetch = [&](std::size_t l) {
    const MatrixF& m = quantized(l);
    detail::check_quantized(linears[l], m);
    q[l] = &m;
  };
  if (kind == OracleKind::kRestoreOne) {
    for (std::size_t l = 0; l < linears.size(); ++l) fetch(l);
  } else {
    for (auto l : layers) fetch(l);
  }
  auto view = [&](std::size_t l) {
    return std::span<const float>(q[l]->data(), static_cast<std::size_t>(q[l]->size()));
  };

  const std::string prefix = fmt::format("oracle/{}/{}/{}/", oracle_kind_name(kind),
                                         detail::protocol_key(protocol), opt.bits_label);
  const std::string fp_key = fmt::format("oracle/fp/{}", detail::protocol_key(protocol));
  auto stored = [&](const std::string& key) -> std::optional<OracleEvaluation> {
    if (!opt.store) return std::nullopt;
    const auto j = opt.store->get(key);
    if (!j) return std::nullopt;
    auto e = OracleEvaluation::from_stored(*j, key);
    // An entry without the requested KL is recomputed.
    if (!std::isfinite(e.ppl) || (opt.divergence && !std::isfinite(e.kl))) return std::nullopt;
    return e;
  };

  OracleResult res;
  res.kind = kind;
  res.bits_label = opt.bits_label;
  res.protocol = protocol;
  res.tokens = tokens;

  std::optional<eval::Reference<B>> own_ref;
  auto reference = [&]() -> const eval::Reference<B>& {
    if (opt.reference) return *opt.reference;
    if (!own_ref) {
      own_ref = eval::make_reference(model, windows, {.protocol = protocol, .batch_size = opt.batch_size});
      ++res.fp_evaluations;
    }
    return *own_ref;
  };
  auto evaluate = [&](const model::WeightOverrides& ov) {
    const auto d = eval::divergence(model, windows, reference(), &ov, {.divergence = opt.divergence});
    ++res.evaluations;
    return OracleEvaluation{d.perplexity.perplexity, d.mean_kl, d.top1_agreement};
  };

  // Which evaluations the store already holds (the ETA counts only the others).
  const bool has_base = kind == OracleKind::kRestoreOne;
  std::size_t already = has_base && stored(prefix + "base") ? 1 : 0;
  for (auto l : layers) already += stored(prefix + linears[l].name) ? 1 : 0;
  study::Progress progress(fmt::format("{} {}", oracle_kind_name(kind), opt.bits_label),
                           layers.size() + (has_base ? 1 : 0), already, opt.progress,
                           opt.progress_interval);

  // Looks the evaluation up in the store or computes and stores it.
  auto measure = [&](const std::string& key, const std::string& note, auto&& compute,
                     bool& resumed) {
    if (auto e = stored(key)) {
      resumed = true;
      ++res.resumed;
      return *e;
    }
    resumed = false;
    const OracleEvaluation e = compute();
    if (opt.store) opt.store->put(key, e.to_json());
    progress.tick(note);
    return e;
  };

  // FP perplexity: from the store, or the reference (which every computed evaluation needs).
  if (auto fp = stored(fp_key)) {
    res.fp_ppl = fp->ppl;
  } else {
    res.fp_ppl = reference().perplexity.perplexity;
    if (opt.store) opt.store->put(fp_key, OracleEvaluation{res.fp_ppl, 0.0, 1.0}.to_json());
  }

  auto ov = model.make_overrides();
  bool resumed = false;
  OracleEvaluation base{res.fp_ppl, 0.0, 1.0};
  if (kind == OracleKind::kRestoreOne) {
    for (std::size_t l = 0; l < linears.size(); ++l)
      ov.set(l, view(l), linears[l].out_features, linears[l].in_features);
    base = measure(prefix + "base", "base: every linear quantized", [&] { return evaluate(ov); },
                   resumed);
  }
  if (!opt.divergence) base.kl = base.top1 = std::numeric_limits<double>::quiet_NaN();
  res.base_ppl = base.ppl;
  res.base_kl = base.kl;
  res.base_top1 = base.top1;

  for (auto l : layers) {
    const auto& li = linears[l];
    const OracleEvaluation e = measure(prefix + li.name, li.name, [&] {
      if (kind == OracleKind::kRestoreOne) {
        ov.erase(l);
        const auto r = evaluate(ov);
        ov.set(l, view(l), li.out_features, li.in_features);
        return r;
      }
      ov.set(l, view(l), li.out_features, li.in_features);
      const auto r = evaluate(ov);
      ov.erase(l);
      return r;
    }, resumed);
    OracleRow row;
    row.linear = l;
    row.name = li.name;
    row.block = li.block;
    row.kind = li.kind;
    row.ppl = e.ppl;
    row.kl = opt.divergence ? e.kl : std::numeric_limits<double>::quiet_NaN();
    row.top1 = opt.divergence ? e.top1 : std::numeric_limits<double>::quiet_NaN();
    if (kind == OracleKind::kRestoreOne) {
      row.delta_ppl = base.ppl - e.ppl;
      row.delta_kl = base.kl - row.kl;
    } else {
      row.delta_ppl = e.ppl - res.fp_ppl;
      row.delta_kl = row.kl;
    }
    row.resumed = resumed;
    res.rows.push_back(std::move(row));
  }
  return res;
}

/// run_oracle over quantized weights given as one matrix per linear layer, in
/// Transformer::linears() order (entries of unselected layers are ignored by QuantizeOne).
template <class B>
OracleResult run_oracle(OracleKind kind, const model::Transformer<B>& model,
                        std::span<const data::Window> windows, std::span<const MatrixF> quantized,
                        const OracleOptions<B>& opt = {}) {
  require<ArgumentError>(quantized.size() == model.linears().size(),
                         "oracle: {} quantized weights given, the model has {} linear layers",
                         quantized.size(), model.linears().size());
  return run_oracle(kind, model, windows,
                    QuantizedWeights([quantized](std::size_t l) -> const MatrixF& { return quantized[l]; }),
                    opt);
}

/// V_l(b) for the selected layers: layers + 1 modified evaluations.
template <class B, class Q>
OracleResult restore_one(const model::Transformer<B>& model, std::span<const data::Window> windows,
                         Q&& quantized, const OracleOptions<B>& opt = {}) {
  return run_oracle(OracleKind::kRestoreOne, model, windows, std::forward<Q>(quantized), opt);
}

/// U_l(b) for the selected layers: `layers` modified evaluations.
template <class B, class Q>
OracleResult quantize_one(const model::Transformer<B>& model, std::span<const data::Window> windows,
                          Q&& quantized, const OracleOptions<B>& opt = {}) {
  return run_oracle(OracleKind::kQuantizeOne, model, windows, std::forward<Q>(quantized), opt);
}

}  // namespace fragile::sensitivity
