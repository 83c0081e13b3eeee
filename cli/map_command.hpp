// `fragile map`: the fragility map (study/fragility_map.hpp) of one quantizer setting, written
// as results.json, tables, plots and index.html in --out. A killed run continues with --resume.
#pragma once

#include "study_args.hpp"

#include <fragile/backend/cpu.hpp>
#include <fragile/study/fragility_map.hpp>
#include <fragile/study/report.hpp>
#include <fragile/study/results.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>

namespace fragile::cli {

struct MapArgs {
  StudyArgs study;
  double regime_minimal = 1.5, regime_catastrophic = 25.0;
  std::size_t bootstrap = 2000;

  [[nodiscard]] study::MapOptions map_options(std::vector<int> extra_bits = {}) const {
    study::MapOptions m;
    m.quant = study.quant_setting();
    m.bits = study.bits;
    std::vector<int> cands = study.candidate_bits;
    if (!cands.empty() || !extra_bits.empty()) {
      if (cands.empty()) cands = {2, 3, 4, 8};
      cands.insert(cands.end(), extra_bits.begin(), extra_bits.end());
    }
    m.candidate_bits = study::candidate_bit_widths(cands, {study.bits});
    m.regime_minimal = regime_minimal;
    m.regime_catastrophic = regime_catastrophic;
    m.bootstrap = bootstrap;
    m.progress = study.progress();
    return m;
  }
  [[nodiscard]] nlohmann::json echo() const {
    auto j = study.echo();
    j["regime_minimal"] = regime_minimal;
    j["regime_catastrophic"] = regime_catastrophic;
    j["bootstrap"] = bootstrap;
    return j;
  }
};

inline void add_map_options(CLI::App* c, MapArgs& a) {
  add_study_options(c, a.study);
  c->add_option("--regime-minimal", a.regime_minimal,
                "all-quantized PPL / FP PPL below which the setting is 'minimal'");
  c->add_option("--regime-catastrophic", a.regime_catastrophic,
                "all-quantized PPL / FP PPL above which the setting is 'catastrophic'");
  c->add_option("--bootstrap", a.bootstrap, "bootstrap resamples of the Spearman CI")
      ->check(CLI::Range(10, 1000000, "10 to 1000000"));
}

/// What map and shootout share: context, store, FP reference, map; the caller adds sections.
struct MapRun {
  std::unique_ptr<study::Context> ctx;
  std::optional<study::ResultStore> store;
  std::optional<eval::Reference<cpu>> reference;
  study::MapResult map;
  study::ResultsDocument doc;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
};

inline void start_map_run(MapRun& run, const MapArgs& a, const study::MapOptions& mo,
                          const std::string& command, nlohmann::json numeric_options) {
  using Clock = std::chrono::steady_clock;
  set_threads(a.study.threads);
  prepare_out_dir(a.study.out, a.study.resume);
  auto t0 = Clock::now();
  run.ctx = std::make_unique<study::Context>(a.study.context_options());
  const double load_s = study::detail::seconds_since(t0);
  numeric_options["map"] = {{"quant", mo.quant.to_json()}, {"bits", mo.bits},
                            {"candidate_bits", mo.candidate_bits},
                            {"seed", run.ctx->options().seed}, {"bootstrap", mo.bootstrap}};
  run.store.emplace(open_study_store(a.study, *run.ctx, numeric_options));
  if (a.study.show_progress())
    fmt::print(stderr, "{}: {} linears; {} calibration and {} evaluation windows of {} tokens\n",
               run.ctx->options().model.string(), run.ctx->model().linears().size(),
               run.ctx->calibration().size(), run.ctx->evaluation().size(),
               run.ctx->options().seqlen);
  t0 = Clock::now();
  run.reference.emplace(eval::make_reference(
      run.ctx->model(), run.ctx->evaluation(),
      {.protocol = run.ctx->options().protocol, .batch_size = run.ctx->options().batch}));
  const double ref_s = study::detail::seconds_since(t0);
  run.map = study::run_map(*run.ctx, mo, &*run.store, *run.reference);
  run.doc.command = command;
  run.doc.config = a.echo();
  run.doc.sections["map"] = run.map.section;
  run.doc.warnings = run.map.warnings;
  run.doc.run["timings"] = run.map.timings;
  run.doc.run["timings"]["load"] = load_s;
  run.doc.run["timings"]["fp_reference"] = ref_s;
  run.doc.run["oracle_evaluations_computed"] = run.map.restore.evaluations + run.map.quantize.evaluations;
  run.doc.run["oracle_evaluations_resumed"] = run.map.restore.resumed + run.map.quantize.resumed;
  run.doc.run["threads"] = backend::cpu_threads();
  run.doc.run["options"] = a.study.run_echo();
}

/// results.json, then the report; prints where they are.
inline int finish_run(MapRun& run, const StudyArgs& a) {
  run.doc.run["timings"]["total"] = study::detail::seconds_since(run.start);
  const auto doc = run.doc.to_json(run.ctx->describe());
  study::write_results(a.out, doc);
  const auto files = study::write_report(doc, a.out, {.gnuplot = a.gnuplot});
  for (const auto& w : run.doc.warnings) fmt::print(stderr, "fragile: warning: {}\n", w);
  for (const auto& w : files.warnings) fmt::print(stderr, "fragile: warning: {}\n", w);
  if (!a.quiet) fmt::print("wrote {}\n", (a.out / "index.html").string());
  return 0;
}

inline void print_map_summary(const study::MapResult& m) {
  fmt::print("{}: FP PPL {:.4f}, all quantized {:.4f} ({:.3g}x, {} regime), KL {:.4f}\n",
             m.section["setting"].get<std::string>(), m.restore.fp_ppl, m.restore.base_ppl,
             m.regime_ratio, m.regime, m.restore.base_kl);
  for (const auto& c : m.correlations)
    if (c.target == "V_l")
      fmt::print("  {:<26} Spearman vs V_l {:+.3f} (p {:.2g})\n", c.metric, c.spearman.statistic,
                 c.spearman.p_value);
}

inline void add_map_command(CLI::App& app, std::function<int()>& action) {
  auto a = std::make_shared<MapArgs>();
  auto* c = app.add_subcommand("map", "fragility map: V_l and U_l of every linear layer, every "
                                      "metric, and their correlations");
  add_map_options(c, *a);
  c->callback([a, &action] {
    action = [a] {
      MapRun run;
      start_map_run(run, *a, a->map_options(), "map", {});
      if (!a->study.quiet) print_map_summary(run.map);
      return finish_run(run, a->study);
    };
  });
}

}  // namespace fragile::cli
