// Exact multiple-choice knapsack by Pareto-frontier merging over integer costs.
//
// Groups (a layer for MCKP, a transformer block for BlockQP) each offer items (cost in bits,
// value); exactly one item per group is taken; minimise the sum of values with total cost <=
// capacity. Costs are shifted by each group's cheapest item and divided by the GCD of all
// shifted costs, so the DP runs over a small integer range. After each group the partial
// solutions are pruned to a Pareto frontier (ascending cost, strictly decreasing value) and
//   - states that cannot be completed within capacity (cost + 0 > capacity) are dropped;
//   - all states whose every completion fits (cost + max remaining <= capacity) collapse into
//     the best of them (its completions are the same set);
//   - states whose value plus the LP-relaxation bound of the remaining groups (convex hulls,
//     Sinha & Zoltners 1979) exceeds a feasible incumbent (the truncated LP walk) by more than
//     1e-9 x sum_g max|value| are dropped (the margin dwarfs the bound's rounding error).
// Values are summed group by group in group order, and floating-point addition is monotone, so
// pruning never discards the exact minimum of that summation order. Ties: the first state in
// (parent, item) order is kept, so results are identical across runs.
#pragma once

#include "fragile/core/error.hpp"

#include <algorithm>
#include <cmath>
#include <iterator>
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

/// LP relaxation of the groups k..G-1 (Sinha & Zoltners 1979): the lower convex hull of each
/// group's (units, value) items, all hull segments of the suffix sorted by slope. at(k, c) is a
/// lower bound on the best value of groups k.. with c units left; incumbent() is the feasible
/// point reached by taking segments in slope order until the next one does not fit.
class SuffixLpBound {
 public:
  SuffixLpBound(const std::vector<std::vector<Item>>& groups,
                const std::vector<std::vector<std::uint64_t>>& units) {
    const std::size_t G = groups.size();
    base_.assign(G + 1, 0.0);
    cum_u_.resize(G + 1);
    cum_v_.resize(G + 1);
    slope_.resize(G + 1);
    vertex_.resize(G);
    std::vector<std::vector<Seg>> segs(G);
    for (std::size_t k = 0; k < G; ++k) {
      // Lower hull of the Pareto points (u ascending, v strictly decreasing).
      std::vector<std::size_t> hull;
      for (std::size_t i = 0; i < units[k].size(); ++i) {
        while (hull.size() >= 2) {
          const std::size_t a = hull[hull.size() - 2], b = hull.back();
          const double ux = static_cast<double>(units[k][b] - units[k][a]);
          const double vx = groups[k][b].value - groups[k][a].value;
          const double uy = static_cast<double>(units[k][i] - units[k][a]);
          const double vy = groups[k][i].value - groups[k][a].value;
          if (ux * vy - vx * uy <= 0.0)
            hull.pop_back();  // b is not strictly below a-i
          else
            break;
        }
        hull.push_back(i);
      }
      vertex_[k] = hull;
      for (std::size_t h = 1; h < hull.size(); ++h) {
        const double du = static_cast<double>(units[k][hull[h]] - units[k][hull[h - 1]]);
        const double dv = groups[k][hull[h]].value - groups[k][hull[h - 1]].value;
        segs[k].push_back({dv / du, du, dv, static_cast<std::uint32_t>(k)});
      }
    }
    std::vector<Seg> suffix, merged;
    for (std::size_t k = G; k-- > 0;) {
      base_[k] = base_[k + 1] + groups[k].front().value;
      merged.clear();
      std::merge(segs[k].begin(), segs[k].end(), suffix.begin(), suffix.end(),
                 std::back_inserter(merged), [](const Seg& a, const Seg& b) {
                   if (a.slope != b.slope) return a.slope < b.slope;
                   return a.group < b.group;
                 });
      std::swap(suffix, merged);
      auto& cu = cum_u_[k];
      auto& cv = cum_v_[k];
      auto& sl = slope_[k];
      cu.assign(1, 0.0);
      cv.assign(1, 0.0);
      sl.clear();
      for (const Seg& sg : suffix) {
        cu.push_back(cu.back() + sg.du);
        cv.push_back(cv.back() + sg.dv);
        sl.push_back(sg.slope);
      }
      if (k == 0) order_ = suffix;
    }
    cum_u_[G].assign(1, 0.0);
    cum_v_[G].assign(1, 0.0);
  }

  [[nodiscard]] double at(std::size_t k, double cap) const {
    const auto& cu = cum_u_[k];
    const std::size_t n =
        static_cast<std::size_t>(std::upper_bound(cu.begin(), cu.end(), cap) - cu.begin()) - 1;
    double v = base_[k] + cum_v_[k][n];
    if (n < slope_[k].size()) v += (cap - cu[n]) * slope_[k][n];
    return v;
  }

  /// Item index per group of the truncated LP walk (feasible: total units <= R).
  [[nodiscard]] std::vector<std::size_t> incumbent(double R) const {
    std::vector<std::size_t> taken(vertex_.size(), 0);
    double used = 0.0;
    for (const Seg& sg : order_) {
      if (used + sg.du > R) break;
      used += sg.du;
      ++taken[sg.group];
    }
    std::vector<std::size_t> item(vertex_.size());
    for (std::size_t k = 0; k < vertex_.size(); ++k) item[k] = vertex_[k][taken[k]];
    return item;
  }

 private:
  struct Seg {
    double slope, du, dv;
    std::uint32_t group;
  };
  std::vector<double> base_;
  std::vector<std::vector<double>> cum_u_, cum_v_, slope_;
  std::vector<std::vector<std::size_t>> vertex_;
  std::vector<Seg> order_;
};

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

  // Bound pruning: a state whose value plus the LP bound of the remaining groups exceeds a
  // feasible incumbent (by more than rounding can explain) cannot lead to the optimum.
  const SuffixLpBound lp(groups, units);
  double incumbent = 0.0, scale = 0.0;
  {
    const auto inc = lp.incumbent(static_cast<double>(R));
    std::uint64_t used = 0;
    for (std::size_t k = 0; k < G; ++k) {
      incumbent += groups[k][inc[k]].value;
      used += units[k][inc[k]];
      double mx = 0.0;
      for (const Item& it : groups[k]) mx = std::max(mx, std::abs(it.value));
      scale += mx;
    }
    if (used > R) incumbent = std::numeric_limits<double>::infinity();  // rounding guard
  }
  const double prune_above = incumbent + 1e-9 * scale;

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
    // Dense array over the cost range when it is not much wider than the candidate count,
    // otherwise sort the candidates (a narrow frontier over a wide cost range).
    const std::uint64_t candidates = static_cast<std::uint64_t>(cur_u.size()) * uk.size();
    if (width <= kDenseLimit && width <= 8 * candidates + 1024) {
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
      // k-way merge of the shifted lists cur + item j (each strictly ascending in cost), popped
      // in (cost, value, parent, item) order: the same survivors as the dense path.
      auto later = [&](const Cand& a, const Cand& b) {
        if (a.u != b.u) return a.u > b.u;
        if (a.v != b.v) return a.v > b.v;
        if (a.p != b.p) return a.p > b.p;
        return a.i > b.i;
      };
      cands.clear();
      for (std::size_t j = 0; j < uk.size(); ++j)
        if (cur_u[0] + uk[j] <= R)
          cands.push_back(
              {cur_u[0] + uk[j], cur_v[0] + items[j].value, 0, static_cast<std::uint32_t>(j)});
      std::make_heap(cands.begin(), cands.end(), later);
      double running = kInf;
      while (!cands.empty()) {
        std::pop_heap(cands.begin(), cands.end(), later);
        const Cand c = cands.back();
        cands.pop_back();
        if (c.v < running) {
          running = c.v;
          next_u.push_back(c.u);
          next_v.push_back(c.v);
          par.push_back(c.p);
          itm.push_back(c.i);
        }
        const std::size_t np = static_cast<std::size_t>(c.p) + 1;
        if (np < cur_u.size() && cur_u[np] + uk[c.i] <= R) {
          cands.push_back({cur_u[np] + uk[c.i], cur_v[np] + items[c.i].value,
                           static_cast<std::uint32_t>(np), c.i});
          std::push_heap(cands.begin(), cands.end(), later);
        }
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
    {
      std::size_t kept = 0;
      for (std::size_t i = 0; i < next_u.size(); ++i) {
        const double bound = next_v[i] + lp.at(k + 1, static_cast<double>(R - next_u[i]));
        if (bound > prune_above) continue;
        next_u[kept] = next_u[i];
        next_v[kept] = next_v[i];
        par[kept] = par[i];
        itm[kept] = itm[i];
        ++kept;
      }
      next_u.resize(kept);
      next_v.resize(kept);
      par.resize(kept);
      itm.resize(kept);
      require<NumericError>(kept > 0,
                            "merge_frontiers: bound pruning emptied the frontier at "
                            "group {} (internal error)",
                            k);
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
