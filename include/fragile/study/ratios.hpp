// Paper 002's high-impact-ratio study (Sec. 3.2-3.3, the ablation of Table 4): per linear layer,
// which share r of its input channels to quantize at b_H bits while the rest go to b_N bits.
//   1. channel importance: the mean empirical Fisher diagonal of each weight column, from one
//      capture pass over the calibration windows (sensitivity/channel_importance.hpp);
//   2. for every layer and candidate ratio r, the channel split (quant::ChannelSplit): the top r
//      of columns at b_H, the rest at b_N, quantized "plain" (RTN for both parts) and "hybrid"
//      (AdaRound on the high-impact part, LWC on the rest: Sec. 3.3);
//   3. M (Eq. 6-8) from loss evaluations through weight overrides (alloc::MBuilder); the loss is
//      the mean KL(P_FP || P_Q) per token on the first `loss_windows` calibration windows: Eq. 3's
//      reconstruction of the model output, zero with zero gradient at the FP weights as Eq. 2
//      assumes (the calibration NLL has a first-order term that Eq. 2 drops);
//   4. the budget is the exact storage (codes, scales, zero points, channel indices) of the
//      uniform reference ratio, and BlockQP (Eq. 9) redistributes the ratios within it;
//   5. four rows per setting, each evaluated on the evaluation windows by PPL, KL to FP and
//      top-1 agreement: uniform and BlockQP ratios, each quantized plain and hybrid.
// By default the hybrid rows get their own M, built from the hybrid's Delta (Eq. 5 takes Delta
// from the scheme that is deployed). With `hybrid_m` off, M comes from the plain split only and
// BlockQP's ratios are applied with the hybrid, as Sec. 3.3 can be read ("based on the optimal
// ratio ... determined by our quadratic optimization"): half the loss evaluations, and AdaRound +
// LWC run on the chosen ratios only. The rows' rules say which M chose them.
//
// Resume: every loss evaluation (with the seconds it took) and every row evaluation goes to the
// result store; a rerun reads them back and skips the hybrid quantization when nothing needs it.
// The section is a pure function of the inputs and the store: its `loss_evaluation_seconds` is
// the compute time recorded with each stored evaluation, so a resumed run writes the same bytes;
// this run's wall times are in `timings`.
#pragma once

#include "fragile/backend/cpu.hpp"
#include "fragile/alloc/block_qp.hpp"
#include "fragile/alloc/budget.hpp"
#include "fragile/core/error.hpp"
#include "fragile/core/tensor.hpp"
#include "fragile/eval/divergence.hpp"
#include "fragile/quant/adaround.hpp"
#include "fragile/quant/hybrid.hpp"
#include "fragile/quant/lwc.hpp"
#include "fragile/quant/rtn.hpp"
#include "fragile/sensitivity/channel_importance.hpp"
#include "fragile/sensitivity/oracle.hpp"
#include "fragile/study/context.hpp"
#include "fragile/study/progress.hpp"
#include "fragile/study/result_store.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fragile::study {

/// One bit setting of the split: b_N for the normal channels, b_H for the high-impact ones.
struct RatioSetting {
  int normal_bits = 2;  ///< b_N
  int high_bits = 3;    ///< b_H
  /// "W2 (b_N=2, b_H=3)".
  [[nodiscard]] std::string label() const {
    return fmt::format("W{} (b_N={}, b_H={})", normal_bits, normal_bits, high_bits);
  }
};

/// "2:3,3:4" (b_N:b_H pairs, comma-separated) as settings; ArgumentError naming --settings.
inline std::vector<RatioSetting> parse_ratio_settings(std::string_view text) {
  std::vector<RatioSetting> out;
  auto number = [&](std::string_view s, std::string_view item) {
    int v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    require<ArgumentError>(ec == std::errc() && end == s.data() + s.size() && !s.empty(),
                           "--settings '{}': '{}' is not a b_N:b_H pair of bit widths (e.g. "
                           "2:3,3:4)", text, item);
    return v;
  };
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    const std::string_view item = text.substr(start, comma - start);
    const std::size_t colon = item.find(':');
    require<ArgumentError>(colon != std::string_view::npos,
                           "--settings '{}': '{}' is not a b_N:b_H pair of bit widths (e.g. "
                           "2:3,3:4)", text, item);
    out.push_back({number(item.substr(0, colon), item), number(item.substr(colon + 1), item)});
    start = comma + 1;
  }
  return out;
}

/// The inverse of parse_ratio_settings: "2:3,3:4".
inline std::string format_ratio_settings(const std::vector<RatioSetting>& settings) {
  std::string out;
  for (const auto& s : settings)
    out += fmt::format("{}{}:{}", out.empty() ? "" : ",", s.normal_bits, s.high_bits);
  return out;
}

/// Defaults: the paper's candidates and settings; windows and iterations sized so that the whole
/// study on the embedded kjv-tiny takes about 70 s on 2 cores.
struct RatiosOptions {
  std::vector<double> ratios = {0.02, 0.05, 0.1, 0.15, 0.2};  ///< paper 002's B (Sec. 4.1)
  double uniform_ratio = 0.1;  ///< the fixed-ratio reference; its storage is the budget
  std::vector<RatioSetting> settings = {{2, 3}, {3, 4}};  ///< the paper's W2 and W3 choices
  int group_size = 128;                ///< along each part's columns; 0 = per output channel
  std::size_t loss_windows = 2;        ///< first calibration windows of M's loss; 0 = all
  std::size_t activation_windows = 16; ///< first calibration windows AdaRound/LWC read; 0 = all
  int adaround_iterations = 500;       ///< paper: 5000 on Llama-2
  int lwc_epochs = 10;
  bool hybrid_m = true;                ///< the hybrid rows' own M (else the plain M's ratios)
  Progress::Sink progress = Progress::default_sink();
};

/// ArgumentError naming the option (as the CLI spells it) and what was expected.
inline void check_ratios_options(const RatiosOptions& o) {
  require<ArgumentError>(!o.ratios.empty(), "--ratios: no candidate ratio given");
  for (std::size_t i = 0; i < o.ratios.size(); ++i) {
    const double r = o.ratios[i];
    require<ArgumentError>(std::isfinite(r) && r >= 0.0 && r <= 1.0,
                           "--ratios {}: expected shares of input channels in [0, 1]", r);
    for (std::size_t j = 0; j < i; ++j)
      require<ArgumentError>(o.ratios[j] != r, "--ratios: {} is given twice", r);
  }
  require<ArgumentError>(
      std::find(o.ratios.begin(), o.ratios.end(), o.uniform_ratio) != o.ratios.end(),
      "--uniform-ratio {}: expected one of the candidate ratios (--ratios {})", o.uniform_ratio,
      fmt::join(o.ratios, " "));
  require<ArgumentError>(!o.settings.empty(), "--settings: no b_N:b_H setting given");
  for (const auto& s : o.settings) {
    require<ArgumentError>(s.normal_bits >= 2 && s.high_bits <= 8,
                           "--settings {}:{}: expected bit widths from 2 to 8", s.normal_bits,
                           s.high_bits);
    require<ArgumentError>(s.high_bits > s.normal_bits,
                           "--settings {}:{}: b_H ({}) must exceed b_N ({})", s.normal_bits,
                           s.high_bits, s.high_bits, s.normal_bits);
  }
  for (std::size_t i = 0; i < o.settings.size(); ++i)
    for (std::size_t j = 0; j < i; ++j)
      require<ArgumentError>(o.settings[i].normal_bits != o.settings[j].normal_bits ||
                                 o.settings[i].high_bits != o.settings[j].high_bits,
                             "--settings: {}:{} is given twice", o.settings[i].normal_bits,
                             o.settings[i].high_bits);
  require<ArgumentError>(o.group_size >= 0, "--group-size {}: expected 0 (per output channel) "
                         "or a positive number of columns", o.group_size);
  require<ArgumentError>(o.adaround_iterations >= 0, "--adaround-iterations {}: expected >= 0",
                         o.adaround_iterations);
  require<ArgumentError>(o.lwc_epochs >= 0, "--lwc-epochs {}: expected >= 0", o.lwc_epochs);
}

struct RatiosRow {
  std::string setting;       ///< RatioSetting::label()
  std::string ratio;         ///< "uniform r=0.1" or "BlockQP"
  std::string quantization;  ///< "plain" or "hybrid"
  std::string rule;
  std::string m;             ///< whose M chose (BlockQP) or scores (uniform) the ratios
  std::vector<double> ratios;       ///< per layer
  std::vector<std::size_t> option;  ///< per layer, index into the candidate ratios
  double budget_bits = 0, achieved_bits = 0;  ///< exact storage per weight
  double objective = 0;                       ///< delta^T M delta on `m`'s M
  double ppl = 0, kl = 0, top1 = 0;
};

struct RatiosResult {
  std::vector<RatiosRow> rows;
  std::uint64_t loss_evaluations = 0;           ///< every M's, computed or read back
  std::uint64_t loss_evaluations_computed = 0;
  std::uint64_t loss_evaluations_resumed = 0;
  double loss_evaluation_seconds = 0;           ///< their compute time, as the store recorded it
  std::size_t evaluations_computed = 0, evaluations_resumed = 0;  ///< rows on held-out text
  nlohmann::json timings = nlohmann::json::object();  ///< this run's wall times
  nlohmann::json section;                              ///< the "ratios" section of results.json
};

namespace detail {

/// Capture observer keeping each layer's inputs of the first `windows` windows.
struct FirstWindowInputs {
  std::size_t windows = 0;
  std::vector<MatrixF> x;  // per linear, (tokens, in)

  [[nodiscard]] model::CaptureNeeds needs() const noexcept { return {.x = true}; }
  void observe(const model::LayerBatch& c) {
    if (!c.x || c.first_window >= windows) return;
    const std::size_t keep = std::min(c.windows, windows - c.first_window);
    const auto rows = static_cast<Eigen::Index>(keep * c.seq_len);
    const auto in = static_cast<Eigen::Index>(c.layer->in_features);
    MatrixF& m = x.at(c.layer->index);
    const Eigen::Index r0 = m.rows();
    m.conservativeResize(r0 + rows, in);
    m.bottomRows(rows) = Eigen::Map<const MatrixF>(c.x.host().data(), rows, in);
  }
};

/// The (layer, ratio) splits of one setting under one quantization, filled on demand: Q(W) and
/// its storage (an empty matrix until quantized).
struct SplitSet {
  std::vector<std::vector<MatrixF>> fake;        // [layer][ratio]
  std::vector<std::vector<std::uint64_t>> cost;  // [layer][ratio], bits

  SplitSet(std::size_t layers, std::size_t ratios)
      : fake(layers, std::vector<MatrixF>(ratios)),
        cost(layers, std::vector<std::uint64_t>(ratios, 0)) {}
  [[nodiscard]] bool has(std::size_t l, std::size_t m) const { return fake[l][m].size() > 0; }
};

using LayerRatio = std::pair<std::size_t, std::size_t>;

/// Quantizes the pairs of `wanted` that `out` lacks with `proto` (a ChannelSplit), in parallel;
/// `inputs` null for quantizers that read only the weight.
template <class Split>
void quantize_splits(SplitSet& out, const std::vector<LayerRatio>& wanted,
                     const model::Transformer<cpu>& model, Split proto, const RatioSetting& s,
                     const RatiosOptions& o, const std::vector<std::vector<float>>& importance,
                     const std::vector<MatrixF>* inputs, const std::string& label) {
  std::vector<LayerRatio> jobs;
  for (const auto& p : wanted)
    if (!out.has(p.first, p.second) &&
        std::find(jobs.begin(), jobs.end(), p) == jobs.end())
      jobs.push_back(p);
  if (jobs.empty()) return;
  const auto& linears = model.linears();
  quant::QuantSpec spec;
  spec.bits = s.normal_bits;
  spec.group_size = o.group_size;
  proto.high_bits = s.high_bits;
  Progress progress(label, jobs.size(), 0, o.progress);
  std::exception_ptr failure;
  const auto n = static_cast<std::int64_t>(jobs.size());
  // Independent, seeded jobs writing distinct slots: the result does not depend on the schedule.
#pragma omp parallel for schedule(dynamic, 1)
  for (std::int64_t job = 0; job < n; ++job) {
    const auto [l, m] = jobs[static_cast<std::size_t>(job)];
    try {
      const auto& li = linears[l];
      Split split = proto;
      split.ratio = o.ratios[m];
      quant::LayerCapture capture(li.name);
      capture.with_channel_importance(importance[l]);
      if (inputs) capture.with_activations((*inputs)[l]);
      const auto w = model.weight(li.index);
      const auto q = split.quantize(as_matrix(w.data(), li.out_features, li.in_features), spec,
                                    capture);
      out.fake[l][m] = q.dequantize();
      out.cost[l][m] = q.storage_bits();
#pragma omp critical(fragile_ratios_progress)
      progress.tick(li.name);
    } catch (...) {
#pragma omp critical(fragile_ratios_failure)
      if (!failure) failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);
}

inline nlohmann::json finite_or_null(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}

inline double elapsed_seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace detail

/// Runs the study on the context's model: see the header comment. `reference` is the FP model on
/// ctx.evaluation() (eval::make_reference); `store` (optional) makes the run resumable.
inline RatiosResult run_ratios(const Context& ctx, const RatiosOptions& opt, ResultStore* store,
                               const eval::Reference<cpu>& reference) {
  using Clock = std::chrono::steady_clock;
  check_ratios_options(opt);
  const auto& model = ctx.model();
  const auto& linears = model.linears();
  const std::size_t L = linears.size(), R = opt.ratios.size();
  const auto calib = ctx.calibration();
  auto first = [&](std::size_t n) {
    return calib.subspan(0, n == 0 ? calib.size() : std::min(n, calib.size()));
  };
  const auto loss_windows = first(opt.loss_windows);
  const auto act_windows = first(opt.activation_windows);
  const std::size_t u = static_cast<std::size_t>(
      std::find(opt.ratios.begin(), opt.ratios.end(), opt.uniform_ratio) - opt.ratios.begin());
  RatiosResult res;

  // 1. Fisher column importance and the layer inputs AdaRound and LWC read: one capture pass.
  auto t0 = Clock::now();
  sensitivity::ChannelImportance fisher(linears);
  detail::FirstWindowInputs inputs{act_windows.size(), std::vector<MatrixF>(L)};
  {
    std::vector<model::TokenIds> tokens;
    for (const auto& w : calib) tokens.push_back(w.tokens);
    model::CaptureOptions co;
    co.batch_size = ctx.options().batch;
    model.capture(std::span<const model::TokenIds>(tokens), co, fisher, inputs);
  }
  std::vector<std::vector<float>> importance;
  for (std::size_t l = 0; l < L; ++l) importance.push_back(fisher.importance(l));
  res.timings["capture"] = detail::elapsed_seconds(t0);

  t0 = Clock::now();
  const auto loss_reference = eval::make_reference(model, loss_windows,
                                                   {.batch_size = ctx.options().batch});
  res.timings["loss_reference"] = detail::elapsed_seconds(t0);

  std::uint64_t parameters = 0;
  for (const auto& li : linears) parameters += li.parameters();
  const std::string ratio_list = fmt::format("{}", fmt::join(opt.ratios, ", "));
  const std::string hybrid_key = fmt::format("adaround{}-lwc{}-a{}", opt.adaround_iterations,
                                             opt.lwc_epochs, act_windows.size());
  nlohmann::json budgets = nlohmann::json::object(), settings = nlohmann::json::array();

  for (const auto& s : opt.settings) {
    const std::string label = s.label();
    const std::string skey = fmt::format("ratios/w{}h{}g{}", s.normal_bits, s.high_bits,
                                         opt.group_size);

    // 2. Every (layer, ratio) split quantized plain now (cheap, and it gives the costs); the
    //    hybrid only where an evaluation needs it (AdaRound + LWC cost more than RTN).
    std::vector<detail::LayerRatio> every;
    for (std::size_t l = 0; l < L; ++l)
      for (std::size_t m = 0; m < R; ++m) every.emplace_back(l, m);
    t0 = Clock::now();
    detail::SplitSet plain(L, R), hybrid(L, R);
    detail::quantize_splits(plain, every, model, quant::ChannelSplit<quant::Rtn, quant::Rtn>{}, s,
                            opt, importance, nullptr, "quantize " + label + " plain");
    res.timings[skey + "/quantize_plain"] = detail::elapsed_seconds(t0);
    double hybrid_seconds = 0;
    auto hybrid_splits = [&](const std::vector<detail::LayerRatio>& wanted)
        -> const detail::SplitSet& {
      const auto t1 = Clock::now();
      quant::ChannelSplit<quant::AdaRound, quant::Lwc> proto;
      proto.high.iterations = opt.adaround_iterations;
      proto.normal.epochs = opt.lwc_epochs;
      detail::quantize_splits(hybrid, wanted, model, proto, s, opt, importance, &inputs.x,
                              "quantize " + label + " hybrid");
      // Same grids (RTN's layout for AdaRound, LWC's per group): the plain costs hold.
      for (const auto& [l, m] : wanted)
        require<ConfigError>(hybrid.cost[l][m] == plain.cost[l][m],
                             "ratios {}: the hybrid's storage of '{}' at r={} differs from the "
                             "plain split's", label, linears[l].name, opt.ratios[m]);
      hybrid_seconds += detail::elapsed_seconds(t1);
      return hybrid;
    };

    alloc::SensitivityTable table("delta^T M delta");
    for (std::size_t l = 0; l < L; ++l) {
      const auto& li = linears[l];
      table.add_layer({li.name, li.block, li.kind,
                       li.parameters()});
      for (std::size_t m = 0; m < R; ++m)
        table.add_option(l, {fmt::format("r={}", opt.ratios[m]), opt.ratios[m], plain.cost[l][m],
                             std::nullopt});
    }

    auto overrides = [&](const detail::SplitSet& splits, auto&& pairs) {
      auto ov = model.make_overrides();
      for (const auto& [l, m] : pairs) {
        const MatrixF& f = splits.fake[l][m];
        ov.set(l, std::span<const float>(f.data(), static_cast<std::size_t>(f.size())),
               linears[l].out_features, linears[l].in_features);
      }
      return ov;
    };

    // 3. M from loss evaluations, each stored with the seconds it took.
    auto build_m = [&](const std::string& qkey, const std::string& what, auto&& splits_for) {
      const std::string prefix = fmt::format("{}/{}/kl{}/loss/", skey, qkey, loss_windows.size());
      const std::uint64_t planned = alloc::MBuilder::evaluations(table);
      Progress progress(fmt::format("M of {} {}", label, what), planned, 0, opt.progress);
      const detail::SplitSet* splits = nullptr;  // quantized at the first evaluation not stored
      auto loss = [&](alloc::Perturbation pert) {
        std::string key = prefix;
        if (pert.empty()) key += "base";
        for (std::size_t i = 0; i < pert.size(); ++i)
          key += fmt::format("{}{}@{}", i ? "+" : "", pert[i].first, opt.ratios[pert[i].second]);
        if (store)
          if (auto j = store->get(key); j && j->is_object() && (*j)["loss"].is_number()) {
            ++res.loss_evaluations_resumed;
            res.loss_evaluation_seconds += j->value("seconds", 0.0);
            progress.tick();
            const double stored = (*j)["loss"].get<double>();
            require<IoError>(std::isfinite(stored) && stored >= -1e-9,
                             "result store: '{}' holds loss = {}, not a KL divergence (>= 0); "
                             "delete the store to start over", key, stored);
            return stored;
          }
        const auto t1 = Clock::now();
        if (!splits) splits = &splits_for(every);
        const auto ov = overrides(*splits, pert);
        const double v = eval::divergence(model, loss_windows, loss_reference, &ov).mean_kl;
        const double sec = detail::elapsed_seconds(t1);
        ++res.loss_evaluations_computed;
        res.loss_evaluation_seconds += sec;
        if (store && std::isfinite(v)) store->put(key, {{"loss", v}, {"seconds", sec}});
        progress.tick();
        return v;
      };
      const auto t1 = Clock::now();
      auto built = alloc::MBuilder{}.build(table, loss);
      res.timings[skey + "/" + qkey + "/m"] = detail::elapsed_seconds(t1);
      res.loss_evaluations += built.evaluations;
      return std::move(built.m);
    };
    auto plain_splits = [&](const std::vector<detail::LayerRatio>&) -> const detail::SplitSet& {
      return plain;
    };
    const auto m_plain = build_m("rtn", "plain", plain_splits);
    std::optional<sensitivity::BlockMatrix> m_hybrid;
    if (opt.hybrid_m) m_hybrid = build_m(hybrid_key, "hybrid", hybrid_splits);

    // 4. The budget: the uniform ratio's exact storage; BlockQP redistributes within it.
    std::uint64_t uniform_cost = 0;
    for (std::size_t l = 0; l < L; ++l) uniform_cost += plain.cost[l][u];
    const auto budget = alloc::Budget::total_bits(uniform_cost);
    const double budget_bits = static_cast<double>(uniform_cost) / static_cast<double>(parameters);
    budgets[label] = budget_bits;
    const std::vector<std::size_t> uniform(L, u);

    // 5. The four rows, each evaluated on held-out text (store-backed).
    auto add_row = [&](std::string ratio, bool is_hybrid, std::vector<std::size_t> option,
                       double objective, std::string m_name, std::string rule) {
      RatiosRow row;
      row.setting = label;
      row.ratio = std::move(ratio);
      row.quantization = is_hybrid ? "hybrid" : "plain";
      row.rule = std::move(rule);
      row.m = std::move(m_name);
      row.option = std::move(option);
      std::uint64_t cost = 0;
      for (std::size_t l = 0; l < L; ++l) {
        row.ratios.push_back(opt.ratios[row.option[l]]);
        cost += plain.cost[l][row.option[l]];
      }
      row.budget_bits = budget_bits;
      row.achieved_bits = static_cast<double>(cost) / static_cast<double>(parameters);
      row.objective = objective;
      const std::string key = fmt::format("{}/{}/eval/{}", skey, is_hybrid ? hybrid_key : "rtn",
                                          fmt::join(row.ratios, ","));
      std::optional<sensitivity::OracleEvaluation> e;
      if (store)
        if (auto j = store->get(key)) {
          e = sensitivity::OracleEvaluation::from_stored(*j, key);
          if (!std::isfinite(e->ppl) || !std::isfinite(e->kl)) e.reset();
        }
      if (e) {
        ++res.evaluations_resumed;
      } else {
        std::vector<detail::LayerRatio> pairs;
        for (std::size_t l = 0; l < L; ++l) pairs.emplace_back(l, row.option[l]);
        const auto ov = overrides(is_hybrid ? hybrid_splits(pairs) : plain, pairs);
        const auto d = eval::divergence(model, ctx.evaluation(), reference, &ov);
        e = sensitivity::OracleEvaluation{d.perplexity.perplexity, d.mean_kl, d.top1_agreement};
        ++res.evaluations_computed;
        if (store) store->put(key, e->to_json());
      }
      row.ppl = e->ppl;
      row.kl = e->kl;
      row.top1 = e->top1;
      res.rows.push_back(std::move(row));
    };
    t0 = Clock::now();
    const std::string plain_rule = fmt::format(
        "top-r input channels by Fisher importance at {} bits, the rest at {} bits, RTN for both",
        s.high_bits, s.normal_bits);
    const std::string hybrid_rule = fmt::format(
        "top-r input channels by Fisher importance by AdaRound ({} iterations) at {} bits, the "
        "rest by LWC ({} epochs) at {} bits", opt.adaround_iterations, s.high_bits,
        opt.lwc_epochs, s.normal_bits);
    const std::string qp_rule = fmt::format(
        "per-layer r from {{{}}} minimising delta^T M delta within the uniform r={}'s exact "
        "storage (BlockQP, Eq. 9)", ratio_list, opt.uniform_ratio);
    const std::string uniform_label = fmt::format("uniform r={}", opt.uniform_ratio);
    const alloc::BlockQP qp;
    const auto a_plain = qp.solve(table, m_plain, budget);
    add_row(uniform_label, false, uniform, m_plain.objective(uniform), "plain",
            fmt::format("every layer at r={}: {}", opt.uniform_ratio, plain_rule));
    add_row("BlockQP", false, a_plain.option, a_plain.objective, "plain",
            fmt::format("{}; M from the plain split's loss evaluations; {}", qp_rule, plain_rule));
    const auto& m_h = m_hybrid ? *m_hybrid : m_plain;
    const auto a_hybrid = m_hybrid ? qp.solve(table, *m_hybrid, budget) : a_plain;
    add_row(uniform_label, true, uniform, m_h.objective(uniform), m_hybrid ? "hybrid" : "plain",
            fmt::format("every layer at r={}: {}", opt.uniform_ratio, hybrid_rule));
    add_row("BlockQP", true, a_hybrid.option, a_hybrid.objective, m_hybrid ? "hybrid" : "plain",
            fmt::format("{}; {}; {}", qp_rule,
                        m_hybrid ? "M from the hybrid's own loss evaluations"
                                 : "the plain split's M and ratios, applied with the hybrid",
                        hybrid_rule));
    res.timings[skey + "/allocate_and_evaluate"] = detail::elapsed_seconds(t0);
    res.timings[skey + "/quantize_hybrid"] = hybrid_seconds;
    settings.push_back({{"setting", label}, {"b_N", s.normal_bits}, {"b_H", s.high_bits},
                        {"budget_bits_per_weight", budget_bits},
                        {"loss_evaluations", alloc::MBuilder::evaluations(table) *
                                                 (opt.hybrid_m ? 2 : 1)}});
  }

  nlohmann::json rows = nlohmann::json::array();
  for (const auto& r : res.rows)
    rows.push_back({{"setting", r.setting}, {"ratio", r.ratio}, {"quantization", r.quantization},
                    {"rule", r.rule}, {"m", r.m},
                    {"budget_bits", r.budget_bits}, {"achieved_bits", r.achieved_bits},
                    {"objective", detail::finite_or_null(r.objective)},
                    {"ppl", detail::finite_or_null(r.ppl)}, {"kl", detail::finite_or_null(r.kl)},
                    {"top1", detail::finite_or_null(r.top1)}, {"ratios", r.ratios}});
  nlohmann::json layer_names = nlohmann::json::array();
  for (const auto& li : linears) layer_names.push_back(li.name);
  res.section = {
      {"loss_evaluations", res.loss_evaluations},
      {"loss_evaluation_seconds", res.loss_evaluation_seconds},
      {"budget_bits_per_weight", budgets},
      {"candidate_ratios", opt.ratios},
      {"uniform_ratio", opt.uniform_ratio},
      {"group_size", opt.group_size},
      {"loss", fmt::format("mean KL(P_FP || P_Q) per token on the first {} calibration windows "
                           "({} predictions)", loss_windows.size(),
                           data::count_targets(loss_windows))},
      {"importance", fmt::format("mean empirical Fisher diagonal per input channel, {} "
                                 "calibration windows", calib.size())},
      {"hybrid", {{"high", "AdaRound"}, {"iterations", opt.adaround_iterations},
                  {"normal", "LWC"}, {"epochs", opt.lwc_epochs},
                  {"activation_windows", act_windows.size()}}},
      {"hybrid_m", opt.hybrid_m},
      {"fp_ppl", detail::finite_or_null(reference.perplexity.perplexity)},
      {"settings", settings},
      {"layers", layer_names},
      {"rows", rows}};
  return res;
}

}  // namespace fragile::study
