// `fragile shootout`: the fragility map plus every allocator at one or more budgets
// (study/shootout.hpp), each allocation evaluated by PPL, KL and top-1 on held-out text.
#pragma once

#include "map_command.hpp"

#include <fragile/study/shootout.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <functional>
#include <memory>

namespace fragile::cli {

struct ShootoutArgs {
  MapArgs map;
  std::vector<double> budgets{3.0, 4.0};
  std::string accounting = "paper";
  double fraction = 0.2;
  bool oracle_mckp = true;
};

inline void add_shootout_command(CLI::App& app, std::function<int()>& action) {
  auto a = std::make_shared<ShootoutArgs>();
  auto* c = app.add_subcommand("shootout", "allocation shootout: every allocator at each budget "
                                           "(includes the fragility map)");
  add_map_options(c, a->map);
  c->add_option("--budget", a->budgets, "average bits per weight (one or more)")
      ->check(CLI::Range(1.0, 32.0, "1 to 32"));
  c->add_option("--budget-accounting", a->accounting,
                "paper: weight bits only; exact: with scales, zero points and indices")
      ->check(CLI::IsMember({"paper", "exact"}));
  c->add_option("--protect-fraction", a->fraction, "share of layers the split allocators protect")
      ->check(CLI::Range(0.01, 0.99, "0.01 to 0.99"));
  c->add_flag("--oracle-mckp,!--no-oracle-mckp", a->oracle_mckp,
              "MCKP on QuantizeOne U_l at every width (layers x widths evaluations)");
  c->callback([a, &action] {
    action = [a] {
      study::ShootoutOptions so;
      so.budgets = a->budgets;
      so.accounting = a->accounting == "exact" ? study::BudgetAccounting::kExact
                                               : study::BudgetAccounting::kPaper;
      so.fraction = a->fraction;
      so.oracle_mckp = a->oracle_mckp;
      so.progress = a->map.study.progress();
      const auto mo = a->map.map_options(study::shootout_bit_widths(so.budgets));
      if (so.accounting == study::BudgetAccounting::kPaper)
        for (double B : so.budgets) check_paper_budget(B, mo.candidate_bits);
      MapRun run;
      start_map_run(run, a->map, mo, "shootout", {{"shootout", {{"budgets", so.budgets},
                                                                {"accounting", a->accounting},
                                                                {"fraction", so.fraction}}}});
      const auto s = study::run_shootout(*run.ctx, run.map, so, &*run.store, *run.reference);
      run.doc.config["budget"] = a->budgets;
      run.doc.config["budget_accounting"] = a->accounting;
      run.doc.config["protect_fraction"] = a->fraction;
      run.doc.config["oracle_mckp"] = a->oracle_mckp;
      run.doc.sections["shootout"] = s.section;
      for (const auto& [k, v] : s.timings.items()) run.doc.run["timings"][k] = v;
      run.doc.run["allocation_evaluations_computed"] = s.evaluations;
      if (!a->map.study.quiet) {
        print_map_summary(run.map);
        fmt::print("\n{:>6} {:<9} {:<20} {:>8} {:>10} {:>8} {:>7}\n", "budget", "config",
                   "allocator", "bits", "PPL", "KL", "top-1");
        for (const auto& r : s.rows)
          fmt::print("{:>6} {:<9} {:<20} {:>8.4f} {:>10.4f} {:>8.4f} {:>7.4f}\n", r.budget,
                     r.configuration, r.allocator, r.achieved, r.ppl, r.kl, r.top1);
      }
      return finish_run(run, a->map.study);
    };
  });
}

}  // namespace fragile::cli
