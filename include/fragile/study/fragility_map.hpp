// The fragility map (paper 000): which linear layers are fragile at b bits, and which per-layer
// metric predicts it.
//   1. candidates Q_o(W_l) of every linear at every candidate bit width, by one quantizer setting;
//   2. two metric passes over the calibration windows: model-sampled labels (paper 000's
//      procedure: D_l, its diagonal, FEO, MC Fisher trace, GPTQ H-diagonal, weight MSE) and the
//      data's labels (empirical Fisher trace and diagonal, D_l with data labels); NSDS from the
//      weights alone;
//   3. the oracles on the evaluation windows: RestoreOne V_l (PPL and KL) and QuantizeOne U_l
//      (PPL and KL) at b bits;
//   4. every metric's Spearman, Pearson and Kendall against V_l and V_l^KL.
// D_l is reported per token: the pass differentiates each window's MEAN loss, so its gradients
// are 1/S of the per-token-loss gradients (S scored positions per window) and D_l is scaled by
// S^2. Then D_l approximates U_l^KL to second order (paper 000's decomposition), which the
// report plots.
//
// Regime (documented bands, relative to FP PPL so that they carry over between models; paper
// 000's absolute bands 25..200 are for FP PPL ~8..12): all-quantized PPL / FP PPL below
// `regime_minimal` (1.5) is minimal, above `regime_catastrophic` (25) catastrophic, else
// degraded, the only regime where paper 000 finds the metrics informative.
//
// Resume: metric scores and every oracle evaluation go to the result store; a rerun reads them
// back (candidates are re-quantized, deterministically).
#pragma once

#include "fragile/backend/cpu.hpp"
#include "fragile/core/error.hpp"
#include "fragile/eval/divergence.hpp"
#include "fragile/sensitivity/candidates.hpp"
#include "fragile/sensitivity/oracle.hpp"
#include "fragile/sensitivity/pass.hpp"
#include "fragile/study/context.hpp"
#include "fragile/study/correlation_table.hpp"
#include "fragile/study/progress.hpp"
#include "fragile/study/quant_setting.hpp"
#include "fragile/study/result_store.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <string>
#include <vector>

namespace fragile::study {

struct MapOptions {
  QuantSetting quant;
  int bits = 3;                        ///< the oracle's and the correlations' bit width
  std::vector<int> candidate_bits;     ///< empty: {2, 3, 4, 8} (always with `bits`)
  double regime_minimal = 1.5;         ///< all-quantized PPL / FP below this: minimal
  double regime_catastrophic = 25.0;   ///< above this: catastrophic
  std::size_t bootstrap = 2000;        ///< resamples of the Spearman CI
  bool quantize_one = true;            ///< also U_l (QuantizeOne) at `bits`
  Progress::Sink progress = Progress::default_sink();
};

/// The candidate bit widths a study uses: the given ones (or {2, 3, 4, 8}) plus `extra`,
/// sorted, unique, each in 2..8.
inline std::vector<int> candidate_bit_widths(std::vector<int> given, std::initializer_list<int> extra) {
  if (given.empty()) given = {2, 3, 4, 8};
  for (int b : extra)
    if (b >= 2 && b <= 8) given.push_back(b);
  for (int b : given)
    require<ArgumentError>(b >= 2 && b <= 8, "--candidate-bits {}: expected 2 to 8", b);
  std::sort(given.begin(), given.end());
  given.erase(std::unique(given.begin(), given.end()), given.end());
  return given;
}

/// Per-layer scores of one metric at every candidate option: [option][layer].
using ScoreGrid = std::vector<std::vector<double>>;

struct MapResult {
  QuantSetting quant;
  int bits = 3;
  std::vector<int> candidate_bits;
  std::size_t bits_option = 0;             ///< index of `bits` in candidate_bits
  sensitivity::CandidateSet candidates;
  /// Scores at every option, by metric key ("D_l", "weight_mse", "fisher_trace", "nsds", ...).
  std::map<std::string, ScoreGrid> scores;
  std::vector<Column> metrics;             ///< at `bits`, as the report names them
  std::vector<sensitivity::LayerInfo> layers;
  sensitivity::OracleResult restore, quantize;
  std::vector<CorrelationRow> correlations;
  std::string regime;
  double regime_ratio = 0.0;
  std::vector<std::string> warnings;
  nlohmann::json timings = nlohmann::json::object();
  nlohmann::json section;                  ///< the "map" section of results.json

  [[nodiscard]] const ScoreGrid& grid(const std::string& key) const {
    auto it = scores.find(key);
    require<ConfigError>(it != scores.end(), "fragility map: no metric '{}'", key);
    return it->second;
  }
};

namespace detail {

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct MetricName {
  const char* key;
  const char* name;
  const char* description;
};
inline constexpr MetricName kMapMetrics[] = {
    {"D_l", "D_l", "1/2 E_t[(g.dy)^2] per token, model-sampled labels"},
    {"D_l_diag", "D_l diag", "1/2 E_t[sum_i (g_i dy_i)^2] per token, model-sampled labels"},
    {"D_l_data", "D_l (data labels)", "D_l with the data's next tokens as labels"},
    {"feo", "FEO", "E[(g.dy)^2] / (E||g||^2 E||dy||^2), model-sampled labels"},
    {"fisher_trace", "Fisher trace (MC)", "E_t||g_t||^2, model-sampled labels"},
    {"fisher_trace_data", "Fisher trace (empirical)", "E_t||g_t||^2, data labels"},
    {"weight_mse", "weight MSE", "mean((Q(W) - W)^2)"},
    {"hessian_diag", "H-diag (GPTQ proxy)", "1/2 sum dW^2 diag(E[x x^T])"},
    {"fisher_diag", "Fisher diag (empirical)", "1/2 sum dW^2 E_n[(dL_n/dW)^2]"},
    {"nsds", "NSDS", "data-free: kurtosis and spectral entropy of W"},
};

inline nlohmann::json num(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}

}  // namespace detail

/// The result-store key of a setting's metric scores over `bits`.
inline std::string metrics_key(const QuantSetting& q, std::span<const int> bits) {
  std::string k = "metrics/" + q.label(0) + "/";
  for (std::size_t i = 0; i < bits.size(); ++i) k += fmt::format("{}{}", i ? "," : "", bits[i]);
  return k;
}

/// The metric scores of every candidate option, by key ("D_l" per token, "D_l_diag",
/// "D_l_data", "feo", "fisher_trace", "fisher_trace_data", "weight_mse", "hessian_diag",
/// "fisher_diag", "nsds"): from the store under `key`, or two metric passes and NSDS.
inline std::map<std::string, ScoreGrid> metric_scores(const Context& ctx,
                                                      const sensitivity::CandidateSet& cands,
                                                      const std::string& key, ResultStore* store,
                                                      const Progress::Sink& progress,
                                                      nlohmann::json& timings) {
  namespace fs = fragile::sensitivity;
  if (store)
    if (auto j = store->get(key); j && j->is_object()) {
      std::map<std::string, ScoreGrid> out;
      for (const auto& [k, v] : j->items()) out[k] = v.get<ScoreGrid>();
      return out;
    }
  const auto& model = ctx.model();
  auto t0 = std::chrono::steady_clock::now();
  fs::MetricPassOptions mc{.labels = model::LabelSource::kModelSample,
                           .seed = ctx.options().seed,
                           .batch_size = ctx.options().batch};
  mc.needs = fs::needs_of<fs::Visibility, fs::VisibilityDiag, fs::Feo, fs::FisherTrace,
                          fs::HessianDiagProxy, fs::WeightMse>();
  mc.progress = progress;
  const auto pass_mc = fs::metric_pass(model, ctx.calibration(), cands, mc);
  timings["metric_pass_model_labels"] = detail::seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  fs::MetricPassOptions emp = mc;
  emp.labels = model::LabelSource::kData;
  emp.needs = fs::kAllStats;
  const auto pass_emp = fs::metric_pass(model, ctx.calibration(), cands, emp);
  timings["metric_pass_data_labels"] = detail::seconds_since(t0);

  // Per-token units: S^2 (S = scored positions per window) undoes the mean-loss gradient.
  const auto& s0 = pass_mc.layer_stats.front();
  const double S = static_cast<double>(s0.tokens) / static_cast<double>(s0.windows);
  std::map<std::string, ScoreGrid> out;
  auto grid = [&](auto metric, const fs::MetricPassResult& pass, double scale) {
    ScoreGrid g;
    for (std::size_t o = 0; o < cands.options(); ++o) {
      auto v = pass.template scores<decltype(metric)>(o);
      for (auto& x : v) x *= scale;
      g.push_back(std::move(v));
    }
    return g;
  };
  out["D_l"] = grid(fs::Visibility{}, pass_mc, S * S);
  out["D_l_diag"] = grid(fs::VisibilityDiag{}, pass_mc, S * S);
  out["D_l_data"] = grid(fs::Visibility{}, pass_emp, S * S);
  out["feo"] = grid(fs::Feo{}, pass_mc, 1.0);
  out["fisher_trace"] = grid(fs::FisherTrace{}, pass_mc, 1.0);
  out["fisher_trace_data"] = grid(fs::FisherTrace{}, pass_emp, 1.0);
  out["weight_mse"] = grid(fs::WeightMse{}, pass_mc, 1.0);
  out["hessian_diag"] = grid(fs::HessianDiagProxy{}, pass_mc, 1.0);
  out["fisher_diag"] = grid(fs::FisherDiag{}, pass_emp, 1.0);
  std::vector<double> nsds;
  for (const auto& s : fs::nsds_of(model)) nsds.push_back(s.score);
  out["nsds"] = ScoreGrid(cands.options(), nsds);
  if (store) {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& [k, v] : out) j[k] = v;
    store->put(key, j);
  }
  return out;
}

/// Quantizes the candidates of `setting` at `bits` with the context's calibration data.
inline sensitivity::CandidateSet make_candidates(const Context& ctx, const QuantSetting& setting,
                                                 std::span<const int> bits,
                                                 const Progress::Sink& progress) {
  std::vector<sensitivity::CandidateOption> options;
  for (int b : bits) options.push_back({fmt::format("{}bit", b), setting.spec(b)});
  sensitivity::CandidateOptions co;
  co.batch_size = ctx.options().batch;
  co.inputs = setting.inputs;
  co.progress = progress;
  return visit_quantizer(setting.quantizer, [&](const auto& q) {
    return sensitivity::quantize_candidates(ctx.model(), q, options, ctx.calibration(), co);
  });
}

/// The oracle options every sweep of a study shares.
inline sensitivity::OracleOptions<cpu> oracle_options(const Context& ctx, const std::string& label,
                                                 ResultStore* store,
                                                 const eval::Reference<cpu>& reference,
                                                 const Progress::Sink& progress) {
  sensitivity::OracleOptions<cpu> oo;
  oo.bits_label = label;
  oo.batch_size = ctx.options().batch;
  oo.store = store;
  oo.reference = &reference;
  oo.progress = progress;
  return oo;
}

/// Runs the fragility map of `opt.quant` at `opt.bits` on the context's model and data.
inline MapResult run_map(const Context& ctx, const MapOptions& opt, ResultStore* store,
                         const eval::Reference<cpu>& reference) {
  using Clock = std::chrono::steady_clock;
  MapResult r;
  r.quant = opt.quant;
  r.bits = opt.bits;
  r.candidate_bits = candidate_bit_widths(opt.candidate_bits, {opt.bits});
  require<ArgumentError>(opt.bits >= 2 && opt.bits <= 8, "--bits {}: expected 2 to 8", opt.bits);
  require<ArgumentError>(opt.regime_minimal >= 1.0 && opt.regime_catastrophic > opt.regime_minimal,
                         "regime bands: expected 1 <= minimal ({}) < catastrophic ({})",
                         opt.regime_minimal, opt.regime_catastrophic);
  r.bits_option = static_cast<std::size_t>(
      std::find(r.candidate_bits.begin(), r.candidate_bits.end(), opt.bits) -
      r.candidate_bits.begin());
  const auto& model = ctx.model();
  const std::string label = opt.quant.label(opt.bits);

  auto t0 = Clock::now();
  r.candidates = make_candidates(ctx, opt.quant, r.candidate_bits, opt.progress);
  r.timings["quantize_candidates"] = detail::seconds_since(t0);

  r.scores = metric_scores(ctx, r.candidates, metrics_key(opt.quant, r.candidate_bits), store,
                           opt.progress, r.timings);

  const auto fake = r.candidates.dequantized(r.bits_option);
  const auto oo = oracle_options(ctx, label, store, reference, opt.progress);
  t0 = Clock::now();
  r.restore = sensitivity::restore_one(model, ctx.evaluation(), std::span<const MatrixF>(fake), oo);
  r.timings["restore_one"] = detail::seconds_since(t0);
  if (opt.quantize_one) {
    t0 = Clock::now();
    r.quantize = sensitivity::quantize_one(model, ctx.evaluation(), std::span<const MatrixF>(fake), oo);
    r.timings["quantize_one"] = detail::seconds_since(t0);
  }

  for (const auto& li : model.linears())
    r.layers.push_back({li.name, li.block, li.kind,
                        li.parameters()});
  for (const auto& m : detail::kMapMetrics)
    r.metrics.push_back({m.name, m.description, r.grid(m.key)[r.bits_option]});
  std::vector<Column> targets(2);
  targets[0].name = "V_l";
  targets[0].description = "RestoreOne PPL: PPL(all b-bit) - PPL(all b-bit but l)";
  targets[1].name = "V_l^KL";
  targets[1].description = "RestoreOne KL to FP";
  for (const auto& row : r.restore.rows) {
    targets[0].values.push_back(row.delta_ppl);
    targets[1].values.push_back(row.delta_kl);
  }
  t0 = Clock::now();
  r.correlations = correlation_table(r.metrics, targets,
                                     {.bootstrap_resamples = opt.bootstrap, .seed = ctx.options().seed});
  r.timings["correlations"] = detail::seconds_since(t0);

  r.regime_ratio = r.restore.base_ppl / r.restore.fp_ppl;
  r.regime = !std::isfinite(r.regime_ratio)            ? "catastrophic"
             : r.regime_ratio < opt.regime_minimal      ? "minimal"
             : r.regime_ratio > opt.regime_catastrophic ? "catastrophic"
                                                        : "degraded";
  if (r.regime != "degraded")
    r.warnings.push_back(fmt::format(
        "{}: all-quantized PPL is {:.3g}x FP, the {} regime (degraded is {}x to {}x): paper 000 "
        "finds per-layer metrics uninformative outside the degraded regime",
        label, r.regime_ratio, r.regime, opt.regime_minimal, opt.regime_catastrophic));

  using detail::num;
  nlohmann::json layers = nlohmann::json::array();
  for (std::size_t l = 0; l < r.layers.size(); ++l) {
    nlohmann::json metrics = nlohmann::json::object();
    for (const auto& m : r.metrics) metrics[m.name] = num(m.values[l]);
    const auto& v = r.restore.rows[l];
    nlohmann::json row = {{"name", r.layers[l].name},
                          {"block", r.layers[l].block},
                          {"kind", model::linear_kind_name(r.layers[l].kind)},
                          {"parameters", r.layers[l].parameters},
                          {"V_ppl", num(v.delta_ppl)}, {"V_kl", num(v.delta_kl)},
                          {"restored_ppl", num(v.ppl)}, {"restored_top1", num(v.top1)}};
    if (opt.quantize_one) {
      const auto& u = r.quantize.rows[l];
      row["U_ppl"] = num(u.delta_ppl);
      row["U_kl"] = num(u.delta_kl);
      row["U_top1"] = num(u.top1);
    }
    row["metrics"] = std::move(metrics);
    layers.push_back(std::move(row));
  }
  nlohmann::json metrics = nlohmann::json::array();
  for (const auto& m : r.metrics) metrics.push_back({{"name", m.name}, {"description", m.description}});
  nlohmann::json corr = nlohmann::json::array();
  for (const auto& c : r.correlations) corr.push_back(to_json(c));
  r.section = {{"setting", label},
               {"description", opt.quant.describe(opt.bits)},
               {"quantizer", opt.quant.to_json()},
               {"bits", opt.bits},
               {"candidate_bits", r.candidate_bits},
               {"fp_ppl", num(r.restore.fp_ppl)},
               {"base_ppl", num(r.restore.base_ppl)},
               {"base_kl", num(r.restore.base_kl)},
               {"base_top1", num(r.restore.base_top1)},
               {"regime", {{"name", r.regime}, {"ppl_ratio", num(r.regime_ratio)},
                           {"minimal_below", opt.regime_minimal},
                           {"catastrophic_above", opt.regime_catastrophic}}},
               {"oracle_evaluations", r.restore.rows.size() + 1 +
                                          (opt.quantize_one ? r.quantize.rows.size() : 0)},
               {"metrics", std::move(metrics)},
               {"layers", std::move(layers)},
               {"correlations", std::move(corr)}};
  return r;
}

}  // namespace fragile::study
