// Random and hand-made allocation instances plus brute-force references for the alloc tests.
#pragma once

#include <fragile/alloc/budget.hpp>
#include <fragile/core/rng.hpp>
#include <fragile/sensitivity/table.hpp>

#include <Eigen/Core>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace fragile::test::alloc {

using sensitivity::BlockMatrix;
using sensitivity::LayerInfo;
using sensitivity::Option;
using sensitivity::SensitivityTable;

struct InstanceShape {
  std::size_t blocks = 2;
  std::size_t layers_per_block = 2;
  std::size_t min_options = 1, max_options = 4;
  bool integer_scores = false;  ///< small integers: many exact ties
  bool equal_costs = false;     ///< several options share a cost
};

/// Random table: layer parameters multiples of 64; option cost = params x bits + groups x 32
/// (scale + zero), bits 2..8 (random, possibly repeated when equal_costs); scores random and
/// not necessarily monotone in cost.
inline SensitivityTable random_table(Rng& rng, const InstanceShape& s) {
  SensitivityTable t("random");
  for (std::size_t b = 0; b < s.blocks; ++b)
    for (std::size_t i = 0; i < s.layers_per_block; ++i) {
      const std::uint64_t params = 64 * (1 + rng.below(16));
      const std::size_t l =
          t.add_layer({fmt::format("model.layers.{}.l{}", b, i), b, fragile::model::kAllLinearKinds[i % 7], params});
      const std::size_t n = s.min_options + rng.below(s.max_options - s.min_options + 1);
      for (std::size_t o = 0; o < n; ++o) {
        const std::uint64_t bits = s.equal_costs ? 2 + rng.below(2) : 2 + rng.below(7);
        const std::uint64_t cost = params * bits + (params / 64) * 32;
        const double score = s.integer_scores ? static_cast<double>(rng.below(5))
                                              : rng.uniform(0.0, 10.0) / static_cast<double>(bits);
        t.add_option(
            l, Option{fmt::format("o{}b{}", o, bits), static_cast<double>(bits), cost, score});
      }
    }
  return t;
}

/// Enumerates every assignment (first layer fastest); calls f(choice).
template <class F>
void for_each_assignment(const SensitivityTable& t, F&& f) {
  std::vector<std::size_t> choice(t.num_layers(), 0);
  for (;;) {
    f(choice);
    std::size_t i = 0;
    for (; i < choice.size(); ++i) {
      if (++choice[i] < t.num_options(i)) break;
      choice[i] = 0;
    }
    if (i == choice.size()) return;
  }
}

inline std::uint64_t total_cost(const SensitivityTable& t, const std::vector<std::size_t>& c) {
  std::uint64_t s = 0;
  for (std::size_t l = 0; l < c.size(); ++l) s += t.cost(l, c[l]);
  return s;
}

/// Brute-force minimum of sum_l score (summed in layer order) under `capacity`.
inline std::optional<double> brute_force_additive(const SensitivityTable& t,
                                                  std::uint64_t capacity) {
  std::optional<double> best;
  for_each_assignment(t, [&](const std::vector<std::size_t>& c) {
    if (total_cost(t, c) > capacity) return;
    double v = 0.0;
    for (std::size_t l = 0; l < c.size(); ++l) v += t.score(l, c[l]);
    if (!best || v < *best) best = v;
  });
  return best;
}

/// Dense delta^T M delta over all options of all layers (independent of BlockMatrix::objective).
inline Eigen::MatrixXd dense(const SensitivityTable& t, const BlockMatrix& m) {
  std::vector<std::size_t> offset{0};
  for (std::size_t l = 0; l < t.num_layers(); ++l)
    offset.push_back(offset.back() + t.num_options(l));
  const auto n = static_cast<Eigen::Index>(offset.back());
  Eigen::MatrixXd d = Eigen::MatrixXd::Zero(n, n);
  for (std::size_t l1 = 0; l1 < t.num_layers(); ++l1)
    for (std::size_t l2 = 0; l2 < t.num_layers(); ++l2)
      for (std::size_t o1 = 0; o1 < t.num_options(l1); ++o1)
        for (std::size_t o2 = 0; o2 < t.num_options(l2); ++o2)
          d(static_cast<Eigen::Index>(offset[l1] + o1),
            static_cast<Eigen::Index>(offset[l2] + o2)) = m.at(l1, o1, l2, o2);
  return d;
}

inline double quadratic_objective(const SensitivityTable& t, const Eigen::MatrixXd& d,
                                  const std::vector<std::size_t>& c) {
  Eigen::VectorXd x = Eigen::VectorXd::Zero(d.rows());
  std::size_t off = 0;
  for (std::size_t l = 0; l < c.size(); ++l) {
    x(static_cast<Eigen::Index>(off + c[l])) = 1.0;
    off += t.num_options(l);
  }
  return x.dot(d * x);
}

/// Brute-force minimum of delta^T M delta (dense) under `capacity`.
inline std::optional<double> brute_force_quadratic(const SensitivityTable& t, const BlockMatrix& m,
                                                   std::uint64_t capacity) {
  const Eigen::MatrixXd d = dense(t, m);
  std::optional<double> best;
  for_each_assignment(t, [&](const std::vector<std::size_t>& c) {
    if (total_cost(t, c) > capacity) return;
    const double v = quadratic_objective(t, d, c);
    if (!best || v < *best) best = v;
  });
  return best;
}

/// Random symmetric block matrix; `integer` gives small integer entries (ties), and negative
/// off-diagonal entries are always possible.
inline BlockMatrix random_block_matrix(Rng& rng, const SensitivityTable& t, bool integer) {
  BlockMatrix m = BlockMatrix::zeros(t);
  for (std::size_t l1 = 0; l1 < t.num_layers(); ++l1)
    for (std::size_t l2 = l1; l2 < t.num_layers(); ++l2) {
      if (!m.same_block(l1, l2)) continue;
      for (std::size_t o1 = 0; o1 < t.num_options(l1); ++o1)
        for (std::size_t o2 = 0; o2 < t.num_options(l2); ++o2) {
          if (l1 == l2 && o1 != o2) continue;
          double v = integer ? static_cast<double>(rng.below(7)) - 2.0 : rng.uniform(-1.0, 3.0);
          if (l1 == l2) v = integer ? static_cast<double>(rng.below(9)) : rng.uniform(0.0, 5.0);
          m.set(l1, o1, l2, o2, v);
        }
    }
  return m;
}

/// A budget drawn uniformly (in total bits) inside the feasible range of `t`.
inline fragile::alloc::Budget random_budget(Rng& rng, const SensitivityTable& t) {
  const auto r = fragile::alloc::cost_range(t);
  return fragile::alloc::Budget::total_bits(r.min_bits + rng.below(r.max_bits - r.min_bits + 1));
}

}  // namespace fragile::test::alloc
