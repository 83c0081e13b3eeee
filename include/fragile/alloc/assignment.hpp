// BitAssignment: what an allocator returns, one option index per layer plus what a report needs
// (achieved average bits, objective, the allocator's name, bounds it can certify, and notes on
// every adjustment it made). JSON-serialisable.
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/sensitivity/table.hpp"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace fragile::alloc {

struct BitAssignment {
  std::string allocator;                  ///< "MCKP", "GreedyMarginal", ...
  std::vector<std::size_t> option;        ///< chosen option index per layer
  std::vector<double> value;              ///< the chosen option's value (bits or ratio) per layer
  std::uint64_t total_cost_bits = 0;      ///< sum of the chosen options' costs
  std::uint64_t parameters = 0;           ///< total weights
  std::uint64_t capacity_bits = 0;        ///< the budget in bits
  double budget_bits_per_weight = 0.0;    ///< the requested average
  double achieved_bits_per_weight = 0.0;  ///< total_cost_bits / parameters, never above budget
  double objective = 0.0;                 ///< sum_l score(l, option_l), or delta^T M delta
  /// A certified lower bound on the optimum objective, when the allocator has one (greedy's
  /// LP relaxation, BlockQP's Lagrangian dual); objective - lower_bound bounds its gap.
  std::optional<double> lower_bound;
  bool optimal = false;            ///< true when the objective is the proven optimum
  std::vector<std::string> notes;  ///< adjustments and diagnostics, in order
};

/// Fills the fields derived from `option` (value, costs, achieved average and, when
/// `sum_scores`, objective = sum of the chosen scores).
inline void finish_assignment(BitAssignment& a, const sensitivity::SensitivityTable& t,
                              std::uint64_t capacity, double budget_average,
                              bool sum_scores = true) {
  require<ArgumentError>(a.option.size() == t.num_layers(),
                         "BitAssignment: {} options chosen for {} layers", a.option.size(),
                         t.num_layers());
  a.value.resize(t.num_layers());
  a.total_cost_bits = 0;
  a.parameters = 0;
  double objective = 0.0;
  for (std::size_t l = 0; l < t.num_layers(); ++l) {
    const auto& opt = t.option(l, a.option[l]);
    a.value[l] = opt.value;
    a.total_cost_bits += opt.cost_bits;
    a.parameters += t.layer(l).parameters;
    if (sum_scores) objective += t.score(l, a.option[l]);
  }
  if (sum_scores) a.objective = objective;
  a.capacity_bits = capacity;
  a.budget_bits_per_weight = budget_average;
  a.achieved_bits_per_weight =
      static_cast<double>(a.total_cost_bits) / static_cast<double>(a.parameters);
  require<BudgetError>(a.total_cost_bits <= capacity,
                       "{}: assignment costs {} bits, over the budget of {} bits (internal error)",
                       a.allocator, a.total_cost_bits, capacity);
}

inline void to_json(nlohmann::json& j, const BitAssignment& a) {
  j = {{"allocator", a.allocator},
       {"option", a.option},
       {"value", a.value},
       {"total_cost_bits", a.total_cost_bits},
       {"parameters", a.parameters},
       {"capacity_bits", a.capacity_bits},
       {"budget_bits_per_weight", a.budget_bits_per_weight},
       {"achieved_bits_per_weight", a.achieved_bits_per_weight},
       {"objective", a.objective},
       {"optimal", a.optimal},
       {"notes", a.notes}};
  j["lower_bound"] = a.lower_bound ? nlohmann::json(*a.lower_bound) : nlohmann::json(nullptr);
}

inline void from_json(const nlohmann::json& j, BitAssignment& a) {
  try {
    a.allocator = j.at("allocator").get<std::string>();
    a.option = j.at("option").get<std::vector<std::size_t>>();
    a.value = j.at("value").get<std::vector<double>>();
    a.total_cost_bits = j.at("total_cost_bits").get<std::uint64_t>();
    a.parameters = j.at("parameters").get<std::uint64_t>();
    a.capacity_bits = j.at("capacity_bits").get<std::uint64_t>();
    a.budget_bits_per_weight = j.at("budget_bits_per_weight").get<double>();
    a.achieved_bits_per_weight = j.at("achieved_bits_per_weight").get<double>();
    a.objective = j.at("objective").get<double>();
    a.optimal = j.at("optimal").get<bool>();
    a.notes = j.at("notes").get<std::vector<std::string>>();
    a.lower_bound.reset();
    if (j.contains("lower_bound") && !j.at("lower_bound").is_null())
      a.lower_bound = j.at("lower_bound").get<double>();
  } catch (const nlohmann::json::exception& e) {
    raise<ConfigError>("BitAssignment JSON: missing or mistyped field ({})", e.what());
  }
  require<ConfigError>(a.value.size() == a.option.size(),
                       "BitAssignment JSON: {} values for {} options", a.value.size(),
                       a.option.size());
}

}  // namespace fragile::alloc
