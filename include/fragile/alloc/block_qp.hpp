// BlockQP: paper 002's layer-wise high-impact-ratio optimisation (Eq. 5-9, Algorithm 1).
//
// Each layer l takes one option m (a high-impact ratio from {0.02, 0.05, 0.1, 0.15, 0.2}, or a
// bit width); delta is the concatenation of the one-hot vectors delta_l, and the objective is
// delta^T M delta with M = D H D^T (Eq. 6 carries a factor 1/2, Eq. 9 drops it; the argmin is
// the same), block-diagonal by transformer block (H_ij ~ 0 across blocks, Sec. 3.2). The
// constraint is the table's exact cost: sum_l cost(l, m_l) <= budget (Eq. 9 writes it as b^H / b^N
// times ratio times parameters; the table's cost model is that and also counts scales, zero
// points and channel indices).
//
// MBuilder (Algorithm 1, lines 7-18) fills M from a loss callable
//     double loss(std::span<const std::pair<std::size_t, std::size_t>> perturbed)
// returning L(theta + sum of Delta_{l,m} for the (layer l, option m) pairs listed), every other
// layer at its base theta; the empty list gives L(theta). Paper 002 uses the reconstruction loss
// of Eq. 3 on calibration windows, with f the output the callable chooses (OmniQuant-style block
// output or the model's logits; the callable decides and should say which). Then
//   M[(l,m),(l,m)]     = 2 (L(theta + Delta_lm) - L(theta))                               (Eq. 7)
//   M[(l1,m1),(l2,m2)] = L(theta + D_l1m1 + D_l2m2) + L(theta) - L(theta + D_l1m1)
//                        - L(theta + D_l2m2)     for l1 != l2 in the same block           (Eq. 8)
// and 0 across blocks and between two options of one layer (never selected together). For a
// quadratic L(theta + Delta) = L(theta) + 1/2 Delta^T H Delta both are exact. Loss evaluations:
//   1 + sum_l |B_l| + sum_blocks sum_{l1 < l2 in block} |B_l1| |B_l2|
// e.g. 5 blocks x 7 linears x 5 options (stories260K): 1 + 175 + 5 x 21 x 25 = 2801;
// Llama-2-7B (32 x 7 x 5): 1 + 1120 + 32 x 21 x 25 = 17921.
//
// Solver (separate, testable on any M): each block's option combinations are enumerated into a
// Pareto frontier of (cost, objective); blocks are merged by the exact Pareto-frontier DP over
// integer costs (detail/frontier.hpp). The result is the exact minimum of delta^T M delta as
// BlockMatrix::objective sums it. Above `max_block_combinations` combinations in a block, or a
// merged frontier above `max_states`, a heuristic runs instead: Lagrangian relaxation of the
// budget (bisection on lambda; a block that is too big to enumerate is minimised by coordinate
// descent and bounded below by the sum of its per-layer and per-pair minima), then a best-
// improvement local search over single-layer changes that keep the budget. It reports the best
// Lagrangian dual value as `lower_bound`, so objective - lower_bound bounds its gap.
//
// @inproceedings{paper002_high_impact_ratio, title={Layer-wise High-Impact Parameter Ratio
//   Optimization in Post-Training Quantization for Large Language Models}, note={paper 002 in
//   ../shared/papers; Eq. 5-9, Algorithm 1}}
#pragma once

#include "fragile/alloc/allocator.hpp"
#include "fragile/alloc/detail/frontier.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <limits>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

namespace fragile::alloc {

using sensitivity::BlockMatrix;

/// The (layer, option) pairs a loss evaluation perturbs.
using Perturbation = std::span<const std::pair<std::size_t, std::size_t>>;

template <class F>
concept PerturbedLoss = std::invocable<F&, Perturbation> &&
                        std::convertible_to < std::invoke_result_t<F&, Perturbation>,
double > ;

/// Builds paper 002's M from loss evaluations (see the header comment for the formulae).
struct MBuilder {
  struct Result {
    BlockMatrix m;
    double base_loss = 0.0;
    std::uint64_t evaluations = 0;
  };

  /// Loss evaluations build() makes for `table`'s layers, blocks and options.
  [[nodiscard]] static std::uint64_t evaluations(const sensitivity::SensitivityTable& table) {
    const auto shape = BlockMatrix::zeros(table);
    std::uint64_t n = 1;
    for (std::size_t l = 0; l < table.num_layers(); ++l) n += table.num_options(l);
    for (std::size_t k = 0; k < shape.num_blocks(); ++k) {
      const auto& layers = shape.block_layers(k);
      for (std::size_t i = 0; i < layers.size(); ++i)
        for (std::size_t j = i + 1; j < layers.size(); ++j)
          n += static_cast<std::uint64_t>(table.num_options(layers[i])) *
               table.num_options(layers[j]);
    }
    return n;
  }

  template <class Loss>
  [[nodiscard]] Result build(const sensitivity::SensitivityTable& table, Loss&& loss) const {
    static_assert(PerturbedLoss<Loss>,
                  "MBuilder::build: the loss must be callable as "
                  "double(std::span<const std::pair<std::size_t, std::size_t>>)");
    require<ConfigError>(table.num_layers() > 0, "MBuilder: the table has no layers");
    Result r;
    r.m = BlockMatrix::zeros(table);
    std::vector<std::pair<std::size_t, std::size_t>> pert;
    auto eval = [&]() {
      const double v = static_cast<double>(loss(Perturbation(pert.data(), pert.size())));
      ++r.evaluations;
      if (!std::isfinite(v)) {
        std::string what;
        for (const auto& [l, m] : pert)
          what += fmt::format("{}('{}', {})", what.empty() ? "" : " + ", table.layer(l).name,
                              table.option(l, m).label);
        raise<NumericError>("MBuilder: loss is {} for perturbation [{}], expected finite", v,
                            what.empty() ? std::string("none") : what);
      }
      return v;
    };
    pert.clear();
    r.base_loss = eval();
    std::vector<std::vector<double>> single(table.num_layers());
    for (std::size_t l = 0; l < table.num_layers(); ++l)
      for (std::size_t m = 0; m < table.num_options(l); ++m) {
        pert.assign({{l, m}});
        single[l].push_back(eval());
        r.m.set(l, m, l, m, 2.0 * (single[l][m] - r.base_loss));
      }
    for (std::size_t k = 0; k < r.m.num_blocks(); ++k) {
      const auto& layers = r.m.block_layers(k);
      for (std::size_t i = 0; i < layers.size(); ++i)
        for (std::size_t j = i + 1; j < layers.size(); ++j) {
          const std::size_t l1 = layers[i], l2 = layers[j];
          for (std::size_t m1 = 0; m1 < table.num_options(l1); ++m1)
            for (std::size_t m2 = 0; m2 < table.num_options(l2); ++m2) {
              pert.assign({{l1, m1}, {l2, m2}});
              const double both = eval();
              r.m.set(l1, m1, l2, m2, both + r.base_loss - single[l1][m1] - single[l2][m2]);
            }
        }
    }
    return r;
  }
};

struct BlockQP {
  static constexpr std::string_view name = "BlockQP";
  /// Largest number of option combinations enumerated exactly in one block (5^7 = 78125 for a
  /// Llama block with 5 options); above it the Lagrangian heuristic runs.
  std::uint64_t max_block_combinations = std::uint64_t{1} << 20;
  /// Largest merged Pareto frontier for the exact DP; above it the heuristic runs (0 forces it).
  std::size_t max_states = std::size_t{1} << 22;
  /// Bisection steps on the Lagrange multiplier (heuristic only).
  std::size_t lagrange_iterations = 100;

  /// Uses table.interactions() as M; without it M = diag(score) (no interactions: then the
  /// result equals MCKP's optimum, and a note says so).
  [[nodiscard]] BitAssignment allocate(const SensitivityTable& table, const Budget& budget) const {
    if (table.interactions()) return solve(table, *table.interactions(), budget);
    table.validate();
    BlockMatrix m = BlockMatrix::zeros(table);
    for (std::size_t l = 0; l < table.num_layers(); ++l)
      for (std::size_t o = 0; o < table.num_options(l); ++o) m.set(l, o, l, o, table.score(l, o));
    BitAssignment a = solve(table, m, budget);
    a.notes.insert(a.notes.begin(), "table has no interactions: M = diag(score)");
    return a;
  }

  /// Minimises delta^T M delta for the table's options and costs under `budget`.
  [[nodiscard]] BitAssignment solve(const SensitivityTable& table, const BlockMatrix& m_in,
                                    const Budget& budget) const {
    table.validate(/*require_scores=*/false);
    m_in.validate(table);
    BlockMatrix m = m_in;
    m.symmetrize();
    const std::uint64_t capacity = budget.capacity(table);
    const std::size_t K = m.num_blocks();

    BitAssignment a;
    a.allocator = std::string(name);
    a.option.assign(table.num_layers(), 0);

    // Enumerate every block that fits max_block_combinations.
    std::vector<std::vector<detail::Item>> frontiers(K);
    bool enumerable = true;
    std::uint64_t largest_block = 0;
    for (std::size_t k = 0; k < K; ++k) {
      const std::uint64_t n = combinations(table, m, k);
      largest_block = std::max(largest_block, n);
      if (n > max_block_combinations || n > std::numeric_limits<std::uint32_t>::max()) {
        enumerable = false;
        continue;
      }
      frontiers[k] = enumerate_block(table, m, k);
    }
    if (enumerable) {
      const auto r = detail::merge_frontiers(frontiers, capacity, max_states);
      if (r) {
        for (std::size_t k = 0; k < K; ++k) decode(table, m, k, r->choice[k], a.option);
        finish_assignment(a, table, capacity, budget.bits_per_weight(table), false);
        a.objective = m.objective(a.option);
        a.lower_bound = a.objective;
        a.optimal = true;
        a.notes.push_back(fmt::format(
            "exact: {} blocks enumerated (largest {} combinations), largest merged frontier {} "
            "states, cost unit {} bits",
            K, largest_block, r->largest_frontier, r->cost_unit));
        return a;
      }
      a.notes.push_back(
          fmt::format("merged frontier exceeds max_states = {}; heuristic used", max_states));
    } else {
      a.notes.push_back(
          fmt::format("a block has {} combinations > max_block_combinations = {}; "
                      "heuristic used",
                      largest_block, max_block_combinations));
    }
    heuristic(table, m, capacity, frontiers, a);
    finish_assignment(a, table, capacity, budget.bits_per_weight(table), false);
    a.objective = m.objective(a.option);
    a.optimal = a.lower_bound && a.objective <= *a.lower_bound;
    a.notes.push_back(fmt::format("Lagrangian dual bound {}, gap {}", *a.lower_bound,
                                  a.objective - *a.lower_bound));
    return a;
  }

 private:
  static std::uint64_t combinations(const SensitivityTable& t, const BlockMatrix& m,
                                    std::size_t k) {
    std::uint64_t n = 1;
    for (std::size_t l : m.block_layers(k)) {
      const std::uint64_t c = t.num_options(l);
      if (n > std::numeric_limits<std::uint64_t>::max() / c)
        return std::numeric_limits<std::uint64_t>::max();
      n *= c;
    }
    return n;
  }

  /// Writes the options of combination `id` of block k (first layer varies fastest).
  static void decode(const SensitivityTable& t, const BlockMatrix& m, std::size_t k,
                     std::uint64_t id, std::vector<std::size_t>& option) {
    for (std::size_t l : m.block_layers(k)) {
      option[l] = static_cast<std::size_t>(id % t.num_options(l));
      id /= t.num_options(l);
    }
  }

  /// Block k's value, summed exactly as BlockMatrix::objective does.
  static double block_value(const Eigen::MatrixXd& b, const std::vector<Eigen::Index>& rows) {
    double v = 0.0;
    for (std::size_t i = 0; i < rows.size(); ++i) v += b(rows[i], rows[i]);
    for (std::size_t i = 0; i < rows.size(); ++i)
      for (std::size_t j = i + 1; j < rows.size(); ++j) v += 2.0 * b(rows[i], rows[j]);
    return v;
  }

  static std::vector<detail::Item> enumerate_block(const SensitivityTable& t, const BlockMatrix& m,
                                                   std::size_t k) {
    const auto& layers = m.block_layers(k);
    const auto& b = m.block(k);
    const std::uint64_t n = combinations(t, m, k);
    std::vector<std::size_t> digit(layers.size(), 0);
    std::vector<Eigen::Index> rows(layers.size());
    std::vector<detail::Item> items;
    items.reserve(static_cast<std::size_t>(n));
    for (std::uint64_t id = 0; id < n; ++id) {
      std::uint64_t cost = 0;
      for (std::size_t i = 0; i < layers.size(); ++i) {
        rows[i] = static_cast<Eigen::Index>(m.row(layers[i], digit[i]));
        cost += t.cost(layers[i], digit[i]);
      }
      items.push_back({cost, block_value(b, rows), static_cast<std::uint32_t>(id)});
      for (std::size_t i = 0; i < layers.size(); ++i) {  // odometer, first layer fastest
        if (++digit[i] < t.num_options(layers[i])) break;
        digit[i] = 0;
      }
    }
    return detail::pareto_frontier(std::move(items));
  }

  /// Change in delta^T M delta when layer l moves to option o (others fixed).
  static double move_delta(const BlockMatrix& m, const std::vector<std::size_t>& opt, std::size_t l,
                           std::size_t o) {
    const std::size_t k = m.block_of_layer(l);
    const auto& b = m.block(k);
    const auto r0 = static_cast<Eigen::Index>(m.row(l, opt[l]));
    const auto r1 = static_cast<Eigen::Index>(m.row(l, o));
    double d = b(r1, r1) - b(r0, r0);
    for (std::size_t j : m.block_layers(k)) {
      if (j == l) continue;
      const auto rj = static_cast<Eigen::Index>(m.row(j, opt[j]));
      d += 2.0 * (b(r1, rj) - b(r0, rj));
    }
    return d;
  }

  void heuristic(const SensitivityTable& t, const BlockMatrix& m, std::uint64_t capacity,
                 const std::vector<std::vector<detail::Item>>& frontiers, BitAssignment& a) const {
    const std::size_t K = m.num_blocks();
    // Pairwise lower-bound pieces for blocks that are not enumerated.
    struct Solved {
      double lb = 0.0;
      std::uint64_t cost = 0;
    };
    std::vector<std::size_t> choice(t.num_layers(), 0);
    // Minimises block k's value + lambda * cost: exact over the frontier, or coordinate descent
    // (upper solution) plus the sum of per-layer / per-pair minima (lower bound).
    auto solve_block = [&](std::size_t k, double lambda) -> Solved {
      const auto& layers = m.block_layers(k);
      if (!frontiers[k].empty()) {
        std::size_t best = 0;
        double bv = std::numeric_limits<double>::infinity();
        for (std::size_t i = 0; i < frontiers[k].size(); ++i) {
          const double v =
              frontiers[k][i].value + lambda * static_cast<double>(frontiers[k][i].cost);
          if (v < bv) {
            bv = v;
            best = i;
          }
        }
        decode(t, m, k, frontiers[k][best].id, choice);
        return {bv, frontiers[k][best].cost};
      }
      const auto& b = m.block(k);
      double lb = 0.0;
      for (std::size_t l : layers) {  // start: best diagonal term per layer
        double bv = std::numeric_limits<double>::infinity();
        for (std::size_t o = 0; o < t.num_options(l); ++o) {
          const auto r = static_cast<Eigen::Index>(m.row(l, o));
          const double v = b(r, r) + lambda * static_cast<double>(t.cost(l, o));
          if (v < bv) {
            bv = v;
            choice[l] = o;
          }
        }
        lb += bv;
      }
      for (std::size_t i = 0; i < layers.size(); ++i)
        for (std::size_t j = i + 1; j < layers.size(); ++j) {
          double mn = std::numeric_limits<double>::infinity();
          for (std::size_t o1 = 0; o1 < t.num_options(layers[i]); ++o1)
            for (std::size_t o2 = 0; o2 < t.num_options(layers[j]); ++o2)
              mn = std::min(mn, 2.0 * b(static_cast<Eigen::Index>(m.row(layers[i], o1)),
                                        static_cast<Eigen::Index>(m.row(layers[j], o2))));
          lb += mn;
        }
      for (bool improved = true; improved;) {  // coordinate descent on value + lambda * cost
        improved = false;
        for (std::size_t l : layers)
          for (std::size_t o = 0; o < t.num_options(l); ++o) {
            if (o == choice[l]) continue;
            const double d =
                move_delta(m, choice, l, o) + lambda * (static_cast<double>(t.cost(l, o)) -
                                                        static_cast<double>(t.cost(l, choice[l])));
            if (d < 0.0) {
              choice[l] = o;
              improved = true;
            }
          }
      }
      std::uint64_t cost = 0;
      for (std::size_t l : layers) cost += t.cost(l, choice[l]);
      return {lb, cost};
    };
    const double cap = static_cast<double>(capacity);
    double best_dual = -std::numeric_limits<double>::infinity();
    auto evaluate = [&](double lambda) {
      double lb = 0.0;
      std::uint64_t cost = 0;
      for (std::size_t k = 0; k < K; ++k) {
        const Solved s = solve_block(k, lambda);
        lb += s.lb;
        cost += s.cost;
      }
      best_dual = std::max(best_dual, lb - lambda * cap);
      return cost;
    };
    std::vector<std::size_t> feasible;
    if (evaluate(0.0) <= capacity) {
      feasible = choice;
    } else {
      // Scale for lambda: largest |M| per bit of cost difference.
      double lo = 0.0, hi = 1e-300;
      double mmax = 0.0;
      for (std::size_t k = 0; k < K; ++k) mmax = std::max(mmax, m.block(k).cwiseAbs().maxCoeff());
      hi = std::max(hi, mmax * 1e-12);
      int guard = 0;
      while (evaluate(hi) > capacity && guard++ < 2100 && hi < 1e300) hi *= 2.0;
      feasible = choice;
      for (std::size_t it = 0; it < lagrange_iterations; ++it) {
        const double mid = 0.5 * (lo + hi);
        if (mid <= lo || mid >= hi) break;
        if (evaluate(mid) <= capacity) {
          hi = mid;
          feasible = choice;
        } else {
          lo = mid;
        }
      }
    }
    std::uint64_t used = 0;
    for (std::size_t l = 0; l < t.num_layers(); ++l) used += t.cost(l, feasible[l]);
    if (used > capacity) {  // coordinate descent ended above budget at every lambda: cheapest
      for (std::size_t l = 0; l < t.num_layers(); ++l) {
        std::size_t c = 0;
        for (std::size_t o = 1; o < t.num_options(l); ++o)
          if (t.cost(l, o) < t.cost(l, c)) c = o;
        feasible[l] = c;
      }
      used = 0;
      for (std::size_t l = 0; l < t.num_layers(); ++l) used += t.cost(l, feasible[l]);
      a.notes.push_back(
          "Lagrangian search found no feasible point; local search from the cheapest");
    }
    // Best-improvement local search over single-layer changes within the budget.
    std::size_t moves = 0;
    for (;;) {
      double best_d = 0.0;
      std::size_t bl = 0, bo = 0;
      bool found = false;
      for (std::size_t l = 0; l < t.num_layers(); ++l)
        for (std::size_t o = 0; o < t.num_options(l); ++o) {
          if (o == feasible[l]) continue;
          if (used - t.cost(l, feasible[l]) + t.cost(l, o) > capacity) continue;
          const double d = move_delta(m, feasible, l, o);
          if (d < best_d) {
            best_d = d;
            bl = l;
            bo = o;
            found = true;
          }
        }
      if (!found) break;
      used = used - t.cost(bl, feasible[bl]) + t.cost(bl, bo);
      feasible[bl] = bo;
      ++moves;
    }
    a.option = feasible;
    a.lower_bound = best_dual;
    a.notes.push_back(
        fmt::format("heuristic: Lagrangian bisection then {} local-search moves", moves));
  }
};

static_assert(check_allocator<BlockQP>());

}  // namespace fragile::alloc
