// The allocation shootout (paper 000, Sec. 3, generalised): at each budget B, every allocator's
// bit assignment evaluated on held-out text by PPL, KL to FP and top-1 agreement.
//
// b is the largest candidate width whose uniform assignment fits B, b+ the next wider and b- the
// next narrower candidate (b+1 and b-1 with the default candidates). The split allocators rank
// layers by a metric and protect 20% at b+, in paper 000's two configurations, reported apart:
//   "protect": the protected layers at b+, the rest at b, no demotion: the average rises above B;
//   "matched": the same, then the lowest-ranked unprotected layers are demoted to b-, one step at
//              a time, until the average is within B (alloc::BinarySplit's rule).
// Split allocators: Fisher-gated (top 20% by MC Fisher trace), inverse-Fisher (bottom 20%),
// D_l-, weight-MSE- and NSDS-gated (top 20%), and the oracle's V_l-gated split (the paper's
// reference). Budgeted allocators ("optimal" configuration): uniform b, greedy marginal D_l,
// MCKP on D_l, and MCKP on the oracle's QuantizeOne U_l^KL measured at every candidate width
// (an upper reference: the best additive allocation the oracle knows).
//
// Budget accounting: "paper" counts weight bits only (B = 3 is uniform 3-bit); "exact" counts
// the stored scales, zero points and indices as well (the quantizer's cost model). Every row
// reports its achieved average under both.
#pragma once

#include "fragile/backend/cpu.hpp"
#include "fragile/alloc/binary_split.hpp"
#include "fragile/alloc/budget.hpp"
#include "fragile/alloc/greedy_marginal.hpp"
#include "fragile/alloc/mckp.hpp"
#include "fragile/eval/divergence.hpp"
#include "fragile/sensitivity/oracle.hpp"
#include "fragile/study/context.hpp"
#include "fragile/study/fragility_map.hpp"
#include "fragile/study/result_store.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace fragile::study {

enum class BudgetAccounting { kPaper, kExact };

inline std::string_view accounting_name(BudgetAccounting a) noexcept {
  return a == BudgetAccounting::kPaper ? "paper" : "exact";
}

struct ShootoutOptions {
  std::vector<double> budgets = {3.0, 4.0};
  BudgetAccounting accounting = BudgetAccounting::kPaper;
  double fraction = 0.2;  ///< share of layers the split allocators protect
  /// MCKP on U_l^KL (QuantizeOne at every candidate width: layers x widths evaluations).
  bool oracle_mckp = true;
  Progress::Sink progress = Progress::default_sink();
};

/// The candidate widths a shootout needs beside the map's: b-1, b, b+1 around each budget
/// (paper accounting; with exact accounting the neighbours found are used).
inline std::vector<int> shootout_bit_widths(const std::vector<double>& budgets) {
  std::vector<int> out;
  for (double B : budgets) {
    const int b = static_cast<int>(std::floor(B + 1e-9));
    for (int x : {b - 1, b, b + 1})
      if (x >= 2 && x <= 8) out.push_back(x);
  }
  return out;
}

struct ShootoutRow {
  double budget = 0;
  std::string configuration;  ///< "protect", "matched", "optimal"
  std::string allocator;
  std::string rule;
  std::vector<int> bits;      ///< per layer
  double achieved = 0, achieved_paper = 0, achieved_exact = 0;
  double ppl = 0, kl = 0, top1 = 0;
  std::vector<std::string> notes;
};

struct ShootoutResult {
  std::vector<ShootoutRow> rows;
  std::size_t evaluations = 0;  ///< allocation evaluations computed (not read back)
  nlohmann::json timings = nlohmann::json::object();
  nlohmann::json section;
};

namespace detail {

/// A SensitivityTable over the map's candidates: costs by `accounting`, scores from `score`
/// ([option][layer]; none when empty).
inline alloc::SensitivityTable shootout_table(const MapResult& map, BudgetAccounting accounting,
                                              const ScoreGrid* score, std::string score_name) {
  alloc::SensitivityTable t(std::move(score_name));
  for (std::size_t l = 0; l < map.layers.size(); ++l) {
    t.add_layer(map.layers[l]);
    for (std::size_t o = 0; o < map.candidate_bits.size(); ++o) {
      const auto& c = map.candidates.at(l, o);
      const std::uint64_t cost = accounting == BudgetAccounting::kPaper
                                     ? static_cast<std::uint64_t>(map.candidate_bits[o]) *
                                           map.layers[l].parameters
                                     : c.cost_bits;
      std::optional<double> s;
      if (score) s = (*score)[o][l];
      t.add_option(l, {c.label, static_cast<double>(map.candidate_bits[o]), cost, s});
    }
  }
  return t;
}

inline double average_bits(const MapResult& map, const std::vector<std::size_t>& option,
                           BudgetAccounting accounting) {
  double cost = 0, params = 0;
  for (std::size_t l = 0; l < option.size(); ++l) {
    const double n = static_cast<double>(map.layers[l].parameters);
    cost += accounting == BudgetAccounting::kPaper
                ? map.candidate_bits[option[l]] * n
                : static_cast<double>(map.candidates.at(l, option[l]).cost_bits);
    params += n;
  }
  return cost / params;
}

}  // namespace detail

/// Runs every allocator at every budget over the map's candidates and scores.
inline ShootoutResult run_shootout(const Context& ctx, const MapResult& map,
                                   const ShootoutOptions& opt, ResultStore* store,
                                   const eval::Reference<cpu>& reference) {
  using Clock = std::chrono::steady_clock;
  require<ArgumentError>(!opt.budgets.empty(), "--budget: no budget given");
  require<ArgumentError>(opt.fraction > 0 && opt.fraction < 1,
                         "--protect-fraction {}: expected a share in (0, 1)", opt.fraction);
  const auto& model = ctx.model();
  const std::size_t L = map.layers.size(), O = map.candidate_bits.size();
  ShootoutResult res;

  // U_l^KL at every candidate width, for the oracle's MCKP (store-backed like every sweep).
  ScoreGrid u_kl(O, std::vector<double>(L, 0.0));
  if (opt.oracle_mckp) {
    const auto t0 = Clock::now();
    for (std::size_t o = 0; o < O; ++o) {
      if (o == map.bits_option && map.quantize.rows.size() == L) {  // the map measured it
        for (std::size_t l = 0; l < L; ++l) u_kl[o][l] = map.quantize.rows[l].delta_kl;
        continue;
      }
      const auto fake = map.candidates.dequantized(o);
      const auto oo = oracle_options(ctx, map.quant.label(map.candidate_bits[o]), store,
                                     reference, opt.progress);
      const auto q = sensitivity::quantize_one(model, ctx.evaluation(),
                                               std::span<const MatrixF>(fake), oo);
      for (std::size_t l = 0; l < L; ++l) u_kl[o][l] = q.rows[l].delta_kl;
    }
    res.timings["quantize_one_all_widths"] = detail::seconds_since(t0);
  }

  const auto& d_l = map.grid("D_l");
  const auto t_alloc = Clock::now();
  std::map<std::string, std::vector<std::size_t>> evaluated_keys;
  auto evaluate = [&](const std::vector<std::size_t>& option) {
    std::string key = "allocation/" + map.quant.label(0) + "/";
    for (std::size_t l = 0; l < L; ++l)
      key += fmt::format("{}{}", l ? "," : "", map.candidate_bits[option[l]]);
    if (store)
      if (auto j = store->get(key)) {
        auto e = sensitivity::OracleEvaluation::from_stored(*j, key);
        if (std::isfinite(e.ppl) && std::isfinite(e.kl)) return e;
      }
    std::vector<MatrixF> fake(L);
    auto ov = model.make_overrides();
    for (std::size_t l = 0; l < L; ++l) {
      fake[l] = map.candidates.at(l, option[l]).dequantize();
      const auto& li = model.linears()[l];
      ov.set(l, std::span<const float>(fake[l].data(), static_cast<std::size_t>(fake[l].size())),
             li.out_features, li.in_features);
    }
    const auto d = eval::divergence(model, ctx.evaluation(), reference, &ov);
    const sensitivity::OracleEvaluation e{d.perplexity.perplexity, d.mean_kl, d.top1_agreement};
    ++res.evaluations;
    if (store) store->put(key, e.to_json());
    return e;
  };

  for (double B : opt.budgets) {
    const auto plain = detail::shootout_table(map, opt.accounting, nullptr, "none");
    const auto budget = alloc::Budget::average(B);
    const std::uint64_t capacity = budget.capacity(plain);  // BudgetError names the range
    // b: the widest candidate whose uniform assignment fits.
    std::optional<std::size_t> b;
    for (std::size_t o = 0; o < O; ++o) {
      std::uint64_t cost = 0;
      for (std::size_t l = 0; l < L; ++l) cost += plain.cost(l, o);
      if (cost <= capacity) b = o;
    }
    const auto range = alloc::cost_range(plain);
    require<BudgetError>(b.has_value(),
                         "--budget {}: no uniform width fits ({} accounting; feasible range "
                         "[{:.4f}, {:.4f}] bits/weight)", B, accounting_name(opt.accounting),
                         range.min_average(), range.max_average());
    const int bb = map.candidate_bits[*b];
    const bool has_up = *b + 1 < O;
    const int up = has_up ? map.candidate_bits[*b + 1] : bb;
    const int down = *b > 0 ? map.candidate_bits[*b - 1] : bb;
    Progress progress(fmt::format("shootout at {} bits", B), 3 + (has_up ? 12 : 6) + opt.oracle_mckp,
                      0, opt.progress);

    auto add_row = [&](std::string configuration, std::string allocator, std::string rule,
                       const alloc::BitAssignment& a) {
      ShootoutRow row;
      row.budget = B;
      row.configuration = std::move(configuration);
      row.allocator = std::move(allocator);
      row.rule = std::move(rule);
      for (auto o : a.option) row.bits.push_back(map.candidate_bits[o]);
      row.achieved_paper = detail::average_bits(map, a.option, BudgetAccounting::kPaper);
      row.achieved_exact = detail::average_bits(map, a.option, BudgetAccounting::kExact);
      row.achieved = opt.accounting == BudgetAccounting::kPaper ? row.achieved_paper
                                                                : row.achieved_exact;
      const auto e = evaluate(a.option);
      row.ppl = e.ppl;
      row.kl = e.kl;
      row.top1 = e.top1;
      row.notes = a.notes;
      res.rows.push_back(std::move(row));
      progress.tick(res.rows.back().allocator);
    };

    // Uniform b.
    {
      alloc::BitAssignment a;
      a.allocator = "uniform";
      a.option.assign(L, *b);
      add_row("optimal", "uniform", fmt::format("every layer at {} bits", bb), a);
    }
    // The split allocators, in both configurations.
    struct Split {
      const char* name;
      const char* metric;
      std::vector<double> values;
      alloc::BinarySplit::Protect protect;
      const char* ranked;
    };
    std::vector<double> v_l;
    for (const auto& row : map.restore.rows) v_l.push_back(row.delta_ppl);
    const std::vector<Split> splits = {
        {"Fisher-gated", "Fisher trace (MC)", map.grid("fisher_trace")[*b],
         alloc::BinarySplit::Protect::kHighest, "top"},
        {"inverse-Fisher", "Fisher trace (MC)", map.grid("fisher_trace")[*b],
         alloc::BinarySplit::Protect::kLowest, "bottom"},
        {"D_l-gated", "D_l", d_l[*b], alloc::BinarySplit::Protect::kHighest, "top"},
        {"weight-MSE-gated", "weight MSE", map.grid("weight_mse")[*b],
         alloc::BinarySplit::Protect::kHighest, "top"},
        {"NSDS-gated", "NSDS", map.grid("nsds")[*b], alloc::BinarySplit::Protect::kHighest, "top"},
        {"oracle V_l-gated", "V_l", v_l, alloc::BinarySplit::Protect::kHighest, "top"},
    };
    const auto scored = detail::shootout_table(map, opt.accounting, &d_l, "D_l");
    for (const auto& s : splits) {
      alloc::BinarySplit split;
      split.fraction = opt.fraction;
      split.hi = up;
      split.lo = bb;
      split.protect = s.protect;
      const std::string base_rule = fmt::format("{} {:.0f}% by {} at {} bits, the rest at {}",
                                                s.ranked, 100 * opt.fraction, s.metric, up, bb);
      if (has_up) {
        const auto a = split.allocate(scored, alloc::Budget::total_bits(range.max_bits), s.values);
        add_row("protect", s.name, base_rule + " (no demotion)", a);
      }
      const auto a = split.allocate(scored, budget, s.values);
      add_row("matched", s.name,
              base_rule + fmt::format("; then the lowest-ranked layers demoted to {} bits until "
                                      "the average is within {}", down, B),
              a);
    }
    // Budgeted allocators on additive scores.
    add_row("optimal", "greedy marginal D_l",
            "from the cheapest widths, the upgrade with the largest D_l decrease per added bit, "
            "while it fits",
            alloc::GreedyMarginal{}.allocate(scored, budget));
    add_row("optimal", "MCKP D_l", "the exact minimum of sum_l D_l(b_l) within the budget",
            alloc::MCKP{}.allocate(scored, budget));
    if (opt.oracle_mckp) {
      const auto oracle = detail::shootout_table(map, opt.accounting, &u_kl, "U_l^KL");
      add_row("optimal", "MCKP oracle U_l",
              "the exact minimum of sum_l U_l^KL(b_l), QuantizeOne KL measured at every width "
              "(upper reference)",
              alloc::MCKP{}.allocate(oracle, budget));
    }
  }
  res.timings["allocations"] = detail::seconds_since(t_alloc);

  nlohmann::json rows = nlohmann::json::array();
  for (const auto& r : res.rows) {
    std::map<std::string, int> hist;
    for (int x : r.bits) ++hist[std::to_string(x)];
    rows.push_back({{"budget", r.budget}, {"configuration", r.configuration},
                    {"allocator", r.allocator}, {"rule", r.rule},
                    {"achieved_bits", detail::num(r.achieved)},
                    {"achieved_bits_paper", detail::num(r.achieved_paper)},
                    {"achieved_bits_exact", detail::num(r.achieved_exact)},
                    {"ppl", detail::num(r.ppl)}, {"kl", detail::num(r.kl)},
                    {"top1", detail::num(r.top1)}, {"bits_histogram", hist},
                    {"layer_bits", r.bits}, {"notes", r.notes}});
  }
  res.section = {{"accounting", std::string(accounting_name(opt.accounting))},
                 {"budgets", opt.budgets},
                 {"protect_fraction", opt.fraction},
                 {"fp_ppl", detail::num(map.restore.fp_ppl)},
                 {"rows", std::move(rows)}};
  return res;
}

}  // namespace fragile::study
