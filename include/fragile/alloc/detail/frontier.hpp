// Exact multiple-choice knapsack by Pareto-frontier merging over integer costs.
//
// Groups (a layer for MCKP, a transformer block for BlockQP) each offer items (cost in bits,
// value); exactly one item per group is taken; minimise the sum of values with total cost <=
// capacity. Costs are shifted by each group's cheapest item and divided by the GCD of all
// shifted costs, so the DP runs over a small integer range. After each group the partial
// solutions are pruned to a Pareto frontier (ascending cost, strictly decreasing value) and
//   - states that cannot be completed within capacity (cost + 0 > capacity) are dropped;
//   - all states whose every completion fits (cost + max remaining <= capacity) collapse into
//     the best of them (its completions are the same set).
// Values are summed group by group in group order, and floating-point addition is monotone, so
// pruning never discards the exact minimum of that summation order. Ties: the first state in
// (parent, item) order is kept, so results are identical across runs.
#pragma once

#include "fragile/core/error.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <optional>
#include <vector>

namespace fragile::alloc::detail {

struct Item {
  std::uint64_t cost = 0;
  double value = 0.0;
  std::uint32_t id = 0;  ///< caller's index (option, or combination of a block)
};

/// Sorts by (cost, value, id) and keeps the Pareto frontier: ascending cost, strictly
/// decreasing value (an item no better than a cheaper or equally cheap one is dropped).
inline std::vector<Item> pareto_frontier(std::vector<Item> items) {
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    if (a.cost != b.cost) return a.cost < b.cost;
    if (a.value != b.value) return a.value < b.value;
    return a.id < b.id;
  });
  std::vector<Item> out;
  for (const Item& it : items)
    if (out.empty() || it.value < out.back().value) out.push_back(it);
  return out;
}

struct MergeResult {
  double value = 0.0;
  std::uint64_t cost = 0;
  std::vector<std::uint32_t> choice;  ///< item id per group
  std::size_t largest_frontier = 0;   ///< most states held after any group
  std::uint64_t cost_unit = 1;        ///< the GCD the costs were reduced by
};

/// Minimum of sum_g value(g, item_g) s.t. sum_g cost <= capacity. `groups` must each hold a
/// Pareto frontier (pareto_frontier). Returns nullopt when a frontier would exceed
/// `max_states`; throws BudgetError when even the cheapest items exceed capacity.
inline std::optional<MergeResult> merge_frontiers(const std::vector<std::vector<Item>>& groups,
                                                  std::uint64_t capacity, std::size_t max_states) {
  const std::size_t G = groups.size();
  require<ArgumentError>(G > 0, "merge_frontiers: no groups");
  std::uint64_t base = 0, g = 0;
  for (std::size_t k = 0; k < G; ++k) {
    require<ArgumentError>(!groups[k].empty(), "merge_frontiers: group {} has no items", k);
    base += groups[k].front().cost;
    for (const Item& it : groups[k]) g = std::gcd(g, it.cost - groups[k].front().cost);
  }
  require<BudgetError>(base <= capacity,
                       "merge_frontiers: cheapest choice costs {} bits, capacity is {}", base,
                       capacity);
  if (g == 0) g = 1;
  const std::uint64_t R = (capacity - base) / g;

  // Reduced items, dropping those that cannot fit on their own.
  std::vector<std::vector<std::uint64_t>> units(G);
  std::vector<std::uint64_t> suffix_max(G + 1, 0);
  for (std::size_t k = 0; k < G; ++k)
    for (const Item& it : groups[k]) {
      const std::uint64_t u = (it.cost - groups[k].front().cost) / g;
      if (u > R) break;
      units[k].push_back(u);
    }
  for (std::size_t k = G; k-- > 0;)
    suffix_max[k] = std::min<std::uint64_t>(R, suffix_max[k + 1] + units[k].back());

  std::vector<std::uint64_t> cur_u{0}, next_u;
  std::vector<double> cur_v{0.0}, next_v;
  std::vector<std::vector<std::uint32_t>> parent(G), item(G);
  std::vector<double> best_v;
  std::vector<std::uint32_t> best_p, best_i;
  constexpr std::uint64_t kDenseLimit = std::uint64_t{1} << 22;
  std::size_t largest = 1;
  constexpr double kInf = std::numeric_limits<double>::infinity();

  struct Cand {
    std::uint64_t u;
    double v;
    std::uint32_t p, i;
  };
  std::vector<Cand> cands;

  for (std::size_t k = 0; k < G; ++k) {
    const auto& uk = units[k];
    const auto& items = groups[k];
    const std::uint64_t lo = cur_u.front();
    const std::uint64_t hi = std::min(R, cur_u.back() + uk.back());
    const std::uint64_t width = hi - lo + 1;
    next_u.clear();
    next_v.clear();
    auto& par = parent[k];
    auto& itm = item[k];
    par.clear();
    itm.clear();
    if (width <= kDenseLimit) {
      best_v.assign(width, kInf);
      best_p.resize(width);
      best_i.resize(width);
      for (std::size_t s = 0; s < cur_u.size(); ++s) {
        const std::uint64_t su = cur_u[s];
        const double sv = cur_v[s];
        for (std::size_t j = 0; j < uk.size(); ++j) {
          const std::uint64_t nu = su + uk[j];
          if (nu > R) break;
          const double nv = sv + items[j].value;
          const std::uint64_t idx = nu - lo;
          if (nv < best_v[idx]) {
            best_v[idx] = nv;
            best_p[idx] = static_cast<std::uint32_t>(s);
            best_i[idx] = static_cast<std::uint32_t>(j);
          }
        }
      }
      double running = kInf;
      for (std::uint64_t idx = 0; idx < width; ++idx)
        if (best_v[idx] < running) {
          running = best_v[idx];
          next_u.push_back(lo + idx);
          next_v.push_back(running);
          par.push_back(best_p[idx]);
          itm.push_back(best_i[idx]);
        }
    } else {
      cands.clear();
      for (std::size_t s = 0; s < cur_u.size(); ++s)
        for (std::size_t j = 0; j < uk.size(); ++j) {
          const std::uint64_t nu = cur_u[s] + uk[j];
          if (nu > R) break;
          cands.push_back({nu, cur_v[s] + items[j].value, static_cast<std::uint32_t>(s),
                           static_cast<std::uint32_t>(j)});
        }
      std::sort(cands.begin(), cands.end(), [](const Cand& a, const Cand& b) {
        if (a.u != b.u) return a.u < b.u;
        if (a.v != b.v) return a.v < b.v;
        if (a.p != b.p) return a.p < b.p;
        return a.i < b.i;
      });
      double running = kInf;
      for (const Cand& c : cands)
        if (c.v < running) {
          running = c.v;
          next_u.push_back(c.u);
          next_v.push_back(c.v);
          par.push_back(c.p);
          itm.push_back(c.i);
        }
    }
    // Collapse the states whose every completion fits into the best of them.
    if (suffix_max[k + 1] <= R) {
      const std::uint64_t T = R - suffix_max[k + 1];
      std::size_t first = 0;
      while (first + 1 < next_u.size() && next_u[first + 1] <= T) ++first;
      if (first > 0) {
        next_u.erase(next_u.begin(), next_u.begin() + static_cast<std::ptrdiff_t>(first));
        next_v.erase(next_v.begin(), next_v.begin() + static_cast<std::ptrdiff_t>(first));
        par.erase(par.begin(), par.begin() + static_cast<std::ptrdiff_t>(first));
        itm.erase(itm.begin(), itm.begin() + static_cast<std::ptrdiff_t>(first));
      }
    }
    largest = std::max(largest, next_u.size());
    // Parent indices are 32-bit.
    if (next_u.size() >
        std::min<std::size_t>(max_states, std::numeric_limits<std::uint32_t>::max()))
      return std::nullopt;
    par.shrink_to_fit();
    itm.shrink_to_fit();
    std::swap(cur_u, next_u);
    std::swap(cur_v, next_v);
  }
  // Pareto order: the last state has the lowest value.
  MergeResult r;
  std::size_t s = cur_u.size() - 1;
  r.value = cur_v[s];
  r.largest_frontier = largest;
  r.cost_unit = g;
  r.choice.resize(G);
  std::uint64_t cost = 0;
  for (std::size_t k = G; k-- > 0;) {
    const Item& it = groups[k][item[k][s]];
    r.choice[k] = it.id;
    cost += it.cost;
    s = parent[k][s];
  }
  r.cost = cost;
  return r;
}

}  // namespace fragile::alloc::detail
