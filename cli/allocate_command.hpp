// `fragile allocate`: a plan (export/plan.hpp) for one budget, metric and allocator, from one
// calibration pass: --out/plan.json, with --out/results.json recording how it was made.
#pragma once

#include "study_args.hpp"

#include <fragile/alloc/binary_split.hpp>
#include <fragile/alloc/greedy_marginal.hpp>
#include <fragile/alloc/mckp.hpp>
#include <fragile/export/plan.hpp>
#include <fragile/study/fragility_map.hpp>
#include <fragile/study/shootout.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <functional>
#include <map>
#include <memory>

namespace fragile::cli {

struct AllocateArgs {
  StudyArgs study;
  double budget = 3.0;
  std::string accounting = "paper";
  std::string metric = "D_l";
  std::string allocator = "mckp";
  double fraction = 0.2;
  std::string protect = "highest";
};

/// Metric names the CLI accepts, to their score keys (study::metric_scores).
inline const std::map<std::string, std::string>& allocate_metrics() {
  static const std::map<std::string, std::string> m = {
      {"D_l", "D_l"},           {"D_l_diag", "D_l_diag"},
      {"D_l_data", "D_l_data"}, {"fisher_trace", "fisher_trace"},
      {"fisher_trace_data", "fisher_trace_data"}, {"weight_mse", "weight_mse"},
      {"hessian_diag", "hessian_diag"}, {"fisher_diag", "fisher_diag"},
      {"nsds", "nsds"},         {"feo", "feo"}};
  return m;
}

inline int run_allocate(const AllocateArgs& a) {
  const auto bits = study::candidate_bit_widths(a.study.candidate_bits, {a.study.bits});
  if (a.accounting == "paper") check_paper_budget(a.budget, bits);
  set_threads(a.study.threads);
  prepare_out_dir(a.study.out, a.study.resume);
  const study::Context ctx(a.study.context_options());
  const auto quant = a.study.quant_setting();
  auto store = open_study_store(a.study, ctx, {{"quant", quant.to_json()}, {"bits", bits},
                                               {"seed", ctx.options().seed}});
  nlohmann::json timings = nlohmann::json::object();
  study::MapResult map;  // the pieces a shootout table reads: candidates, layers, scores
  map.quant = quant;
  map.candidate_bits = bits;
  map.candidates = study::make_candidates(ctx, quant, bits, a.study.progress());
  map.scores = study::metric_scores(ctx, map.candidates, study::metrics_key(quant, bits), &store,
                                    a.study.progress(), timings);
  for (const auto& li : ctx.model().linears())
    map.layers.push_back({li.name, li.block, li.kind,
                          li.parameters()});
  const auto accounting = a.accounting == "exact" ? study::BudgetAccounting::kExact
                                                  : study::BudgetAccounting::kPaper;
  const auto& grid = map.grid(allocate_metrics().at(a.metric));
  const auto table = study::detail::shootout_table(map, accounting, &grid, a.metric);
  const auto budget = alloc::Budget::average(a.budget);
  alloc::BitAssignment as;
  if (a.allocator == "mckp") {
    as = alloc::MCKP{}.allocate(table, budget);
  } else if (a.allocator == "greedy") {
    as = alloc::GreedyMarginal{}.allocate(table, budget);
  } else {  // binary-split at b / b+ around the budget, ranked by the metric at b
    const std::size_t b = static_cast<std::size_t>(
        std::upper_bound(bits.begin(), bits.end(), static_cast<int>(std::floor(a.budget + 1e-9))) -
        bits.begin());
    require<BudgetError>(b > 0, "--budget {}: below the narrowest candidate width {}", a.budget,
                         bits.front());
    alloc::BinarySplit split;
    split.fraction = a.fraction;
    split.lo = bits[b - 1];
    split.hi = b < bits.size() ? bits[b] : bits[b - 1];
    split.protect = a.protect == "lowest" ? alloc::BinarySplit::Protect::kLowest
                                          : alloc::BinarySplit::Protect::kHighest;
    as = split.allocate(table, budget, grid[b - 1]);
  }

  exporting::Plan plan;
  plan.fragile = study::build_info();
  plan.architecture = std::string(model::architecture_name(ctx.config().architecture));
  plan.weights_xxh3 = ctx.weights_hash();
  plan.quantizer = quant.to_json();
  plan.quantizer["hyperparameters"] = study::quantizer_hyperparameters(quant.quantizer);
  plan.metric = a.metric;
  plan.allocator = as.allocator;
  plan.budget = {{"bits_per_weight", a.budget}, {"accounting", a.accounting},
                 {"achieved_bits_paper", study::detail::average_bits(map, as.option,
                                                                     study::BudgetAccounting::kPaper)},
                 {"achieved_bits_exact", study::detail::average_bits(map, as.option,
                                                                     study::BudgetAccounting::kExact)}};
  for (std::size_t l = 0; l < map.layers.size(); ++l)
    plan.layers.push_back({map.layers[l].name, bits[as.option[l]], quant.group_size,
                           quant.symmetric, map.candidates.at(l, as.option[l]).cost_bits,
                           std::string(study::quantizer_name(quant.quantizer))});
  plan.write(a.study.out / "plan.json");

  study::ResultsDocument doc;
  doc.command = "allocate";
  doc.config = a.study.echo();
  doc.config["budget"] = a.budget;
  doc.config["budget_accounting"] = a.accounting;
  doc.config["metric"] = a.metric;
  doc.config["allocator"] = a.allocator;
  doc.sections["allocation"] = {{"plan", "plan.json"}, {"assignment", as},
                                {"budget", plan.budget}};
  doc.run["timings"] = timings;
  doc.run["options"] = a.study.run_echo();
  study::write_results(a.study.out, doc.to_json(ctx.describe()));
  if (!a.study.quiet) {
    std::map<int, int> hist;
    for (const auto& l : plan.layers) ++hist[l.bits];
    std::string h;
    for (const auto& [b, n] : hist) h += fmt::format("{}{} x {}-bit", h.empty() ? "" : ", ", n, b);
    fmt::print("{} on {}: {} ({:.4f} bits/weight {}, {:.4f} exact)\nwrote {}\n", as.allocator,
               a.metric, h, plan.budget["achieved_bits_paper"].get<double>(), "paper",
               plan.budget["achieved_bits_exact"].get<double>(),
               (a.study.out / "plan.json").string());
  }
  return 0;
}

inline void add_allocate_command(CLI::App& app, std::function<int()>& action) {
  auto a = std::make_shared<AllocateArgs>();
  auto* c = app.add_subcommand("allocate", "write a plan: bits per layer for a budget, a metric "
                                           "and an allocator");
  add_study_options(c, a->study);
  c->add_option("--budget", a->budget, "average bits per weight")->check(CLI::Range(1.0, 32.0));
  c->add_option("--budget-accounting", a->accounting,
                "paper: weight bits only; exact: with scales, zero points and indices")
      ->check(CLI::IsMember({"paper", "exact"}));
  std::vector<std::string> metrics;
  for (const auto& [k, v] : allocate_metrics()) metrics.push_back(k);
  c->add_option("--metric", a->metric, "the allocator's score")->check(CLI::IsMember(metrics));
  c->add_option("--allocator", a->allocator,
                "mckp (exact optimum), greedy (marginal score per bit), binary-split (protect a "
                "share at the next wider width)")
      ->check(CLI::IsMember({"mckp", "greedy", "binary-split"}));
  c->add_option("--protect-fraction", a->fraction, "binary-split: share of layers protected")
      ->check(CLI::Range(0.0, 1.0));
  c->add_option("--protect", a->protect, "binary-split: protect the highest- or lowest-scored")
      ->check(CLI::IsMember({"highest", "lowest"}));
  c->callback([a, &action] { action = [a] { return run_allocate(*a); }; });
}

}  // namespace fragile::cli
