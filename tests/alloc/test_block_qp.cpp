// BlockQP (paper 002) against brute-force enumeration of delta^T M delta; MBuilder on synthetic
// quadratic losses whose M is known exactly.
#include "support/test_data.hpp"

#include "alloc/instances.hpp"

#include <fragile/alloc/block_qp.hpp>
#include <fragile/alloc/mckp.hpp>

#include <cmath>

using namespace fragile;
using namespace fragile::test::alloc;
using Catch::Matchers::Contains;

namespace {
void check_qp(const SensitivityTable& t, const BlockMatrix& m, const alloc::Budget& budget,
              bool integer) {
  const std::uint64_t cap = budget.capacity(t);
  const auto opt = brute_force_quadratic(t, m, cap);
  REQUIRE(opt.has_value());
  const auto a = alloc::BlockQP{}.solve(t, m, budget);
  CHECK(a.optimal);
  CHECK(a.total_cost_bits <= cap);
  CHECK(total_cost(t, a.option) == a.total_cost_bits);
  const double direct = quadratic_objective(t, dense(t, m), a.option);
  if (integer) {
    CHECK(a.objective == *opt);
    CHECK(direct == *opt);
  } else {
    CHECK(a.objective == Approx(*opt).epsilon(1e-12).margin(1e-12));
    CHECK(direct == Approx(*opt).epsilon(1e-12).margin(1e-12));
  }
  // The heuristic path: valid, within budget, and its dual bound is below the optimum.
  for (const auto& h :
       {alloc::BlockQP{.max_block_combinations = 0}, alloc::BlockQP{.max_states = 0}}) {
    const auto b = h.solve(t, m, budget);
    CHECK(b.total_cost_bits <= cap);
    CHECK(b.objective >= *opt - 1e-9 * (1.0 + std::abs(*opt)));
    REQUIRE(b.lower_bound.has_value());
    CHECK(*b.lower_bound <= *opt + 1e-9 * (1.0 + std::abs(*opt)));
    CHECK_THAT(b.notes.back(), Contains("Lagrangian dual bound"));
  }
}
}  // namespace

TEST_CASE("BlockQP equals brute force on random instances", "[alloc][blockqp]") {
  Rng rng(1234);
  for (int it = 0; it < 150; ++it) {
    InstanceShape s;
    s.blocks = 1 + rng.below(3);
    s.layers_per_block = 1 + rng.below(3);
    s.max_options = 1 + rng.below(4);
    const auto t = random_table(rng, s);
    if (t.num_layers() > 7) continue;
    const bool integer = it % 2 == 1;
    const auto m = random_block_matrix(rng, t, integer);
    check_qp(t, m, random_budget(rng, t), integer);
  }
}

TEST_CASE("BlockQP on adversarial instances", "[alloc][blockqp]") {
  Rng rng(77);
  SECTION("ties, equal costs, negative M entries, boundary budgets") {
    for (int it = 0; it < 60; ++it) {
      const auto t = random_table(rng, {2, 3, 2, 3, true, true});
      const auto m = random_block_matrix(rng, t, true);
      const auto r = alloc::cost_range(t);
      check_qp(t, m, alloc::Budget::total_bits(r.min_bits), true);
      check_qp(t, m, alloc::Budget::total_bits(r.max_bits), true);
      check_qp(t, m, random_budget(rng, t), true);
    }
  }
  SECTION("interaction flips the additive choice") {
    // Two layers in one block; alone each prefers its 4-bit option, together those clash.
    SensitivityTable t("loss");
    const auto a = t.add_layer({"model.layers.0.self_attn.q_proj", 0, fragile::model::LinearKind::kQ, 10});
    const auto b = t.add_layer({"model.layers.0.self_attn.k_proj", 0, fragile::model::LinearKind::kK, 10});
    for (auto l : {a, b}) {
      t.add_option(l, {"r=0.02", 0.02, 30, std::nullopt});
      t.add_option(l, {"r=0.2", 0.2, 40, std::nullopt});
    }
    auto m = BlockMatrix::zeros(t);
    m.set(a, 0, a, 0, 4.0);
    m.set(a, 1, a, 1, 1.0);
    m.set(b, 0, b, 0, 4.0);
    m.set(b, 1, b, 1, 1.0);
    m.set(a, 1, b, 1, 5.0);   // both high: 1 + 1 + 10 = 12
    m.set(a, 0, b, 1, -2.0);  // low a, high b: 4 + 1 - 4 = 1
    const auto res = alloc::BlockQP{}.solve(t, m, alloc::Budget::total_bits(80));
    CHECK(res.objective == 1.0);
    CHECK(res.option == std::vector<std::size_t>{0, 1});
  }
}

TEST_CASE("BlockQP errors, determinism, and the diagonal case", "[alloc][blockqp]") {
  Rng rng(8);
  const auto t = random_table(rng, {3, 3, 2, 4, false, false});
  const auto m = random_block_matrix(rng, t, false);
  const auto budget = random_budget(rng, t);
  const auto a1 = alloc::BlockQP{}.solve(t, m, budget), a2 = alloc::BlockQP{}.solve(t, m, budget);
  CHECK(a1.option == a2.option);
  CHECK(a1.objective == a2.objective);

  SECTION("non-symmetric M") {
    auto bad = m;
    bad.block(0)(0, bad.block(0).rows() - 1) += 1.0;
    CHECK_THROWS_WITH(alloc::BlockQP{}.solve(t, bad, budget), Contains("not symmetric"));
  }
  SECTION("NaN in M") {
    auto bad = m;
    bad.block(1)(0, 0) = std::nan("");
    CHECK_THROWS_AS(alloc::BlockQP{}.solve(t, bad, budget), ConfigError);
  }
  SECTION("M shaped for another table (missing options)") {
    auto other = t;
    other.add_option(0, {"extra", 9, 1, 0.0});
    CHECK_THROWS_WITH(alloc::BlockQP{}.solve(other, m, budget), Contains("options in M"));
  }
  SECTION("infeasible budget") {
    CHECK_THROWS_AS(
        alloc::BlockQP{}.solve(t, m, alloc::Budget::total_bits(alloc::cost_range(t).min_bits - 1)),
        BudgetError);
  }
  SECTION("allocate() reads the table's interactions; without them M = diag(score) = MCKP") {
    const auto d = alloc::BlockQP{}.allocate(t, budget);
    CHECK_THAT(d.notes.front(), Contains("M = diag(score)"));
    CHECK(d.objective == Approx(alloc::MCKP{}.allocate(t, budget).objective).epsilon(1e-12));
    auto with = t;
    with.set_interactions(m);
    CHECK(alloc::BlockQP{}.allocate(with, budget).objective == a1.objective);
  }
}

TEST_CASE("MBuilder recovers a known M from a quadratic loss", "[alloc][mbuilder]") {
  // theta has P coordinates; Delta_{l,m} touches layer l's coordinates only; the loss is
  // L(theta + Delta) = L0 + 1/2 Delta^T H Delta with H dense (cross-block terms included, which
  // the block-diagonal M must drop) -> M[(l1,m1),(l2,m2)] = Delta_l1m1^T H Delta_l2m2 in-block.
  Rng rng(4242);
  SensitivityTable t("loss");
  const std::size_t coords_per_layer = 3;
  std::vector<std::vector<Eigen::VectorXd>> delta;
  const std::size_t blocks = 3, per_block = 3;
  const auto P = static_cast<Eigen::Index>(blocks * per_block * coords_per_layer);
  for (std::size_t b = 0; b < blocks; ++b)
    for (std::size_t i = 0; i < per_block; ++i) {
      const auto l = t.add_layer({fmt::format("model.layers.{}.x{}", b, i), b, fragile::model::LinearKind::kQ, 100});
      delta.emplace_back();
      const std::size_t n = 2 + rng.below(3);
      for (std::size_t o = 0; o < n; ++o) {
        t.add_option(l, {fmt::format("r{}", o), 0.05 * double(o + 1), 100 * (o + 2), std::nullopt});
        Eigen::VectorXd d = Eigen::VectorXd::Zero(P);
        for (std::size_t c = 0; c < coords_per_layer; ++c)
          d(static_cast<Eigen::Index>(l * coords_per_layer + c)) = rng.normal();
        delta.back().push_back(d);
      }
    }
  Eigen::MatrixXd A(P, P);
  for (Eigen::Index i = 0; i < P; ++i)
    for (Eigen::Index j = 0; j < P; ++j) A(i, j) = rng.normal();
  const Eigen::MatrixXd H = A * A.transpose() / static_cast<double>(P);
  const double L0 = 3.5;
  std::uint64_t calls = 0;
  auto loss = [&](alloc::Perturbation pert) {
    ++calls;
    Eigen::VectorXd d = Eigen::VectorXd::Zero(P);
    for (const auto& [l, m] : pert) d += delta[l][m];
    return L0 + 0.5 * d.dot(H * d);
  };
  const auto r = alloc::MBuilder{}.build(t, loss);
  CHECK(r.base_loss == L0);
  CHECK(r.evaluations == calls);
  CHECK(r.evaluations == alloc::MBuilder::evaluations(t));
  double err = 0.0, scale = 0.0;
  for (std::size_t l1 = 0; l1 < t.num_layers(); ++l1)
    for (std::size_t l2 = 0; l2 < t.num_layers(); ++l2)
      for (std::size_t m1 = 0; m1 < t.num_options(l1); ++m1)
        for (std::size_t m2 = 0; m2 < t.num_options(l2); ++m2) {
          double expected = delta[l1][m1].dot(H * delta[l2][m2]);
          if (!r.m.same_block(l1, l2) || (l1 == l2 && m1 != m2)) expected = 0.0;
          err = std::max(err, std::abs(r.m.at(l1, m1, l2, m2) - expected));
          scale = std::max(scale, std::abs(expected));
        }
  CHECK(scale > 0.1);
  CHECK(err <= 1e-12 * scale * 100);
  CHECK_NOTHROW(r.m.validate(t));

  SECTION("evaluation counts for stories260K and Llama-2-7B shapes") {
    auto shaped = [](std::size_t nblocks) {
      SensitivityTable s("x");
      for (std::size_t b = 0; b < nblocks; ++b)
        for (int i = 0; i < 7; ++i) {
          const auto l = s.add_layer({fmt::format("{}.{}", b, i), b, fragile::model::LinearKind::kQ, 1});
          for (double ratio : {0.02, 0.05, 0.1, 0.15, 0.2}) s.add_option(l, {"r", ratio, 1, 0.0});
        }
      return s;
    };
    CHECK(alloc::MBuilder::evaluations(shaped(5)) == 1 + 175 + 5 * 21 * 25);     // 2801
    CHECK(alloc::MBuilder::evaluations(shaped(32)) == 1 + 1120 + 32 * 21 * 25);  // 17921
  }
  SECTION("non-finite loss is an error naming the perturbation") {
    auto bad = [&](alloc::Perturbation pert) {
      return pert.size() == 2 ? std::numeric_limits<double>::quiet_NaN() : 1.0;
    };
    CHECK_THROWS_AS(alloc::MBuilder{}.build(t, bad), NumericError);
    CHECK_THROWS_WITH(alloc::MBuilder{}.build(t, bad),
                      Contains("model.layers.0.x0") && Contains("model.layers.0.x1"));
  }
  SECTION("BlockQP on the built M equals brute force") {
    auto with = t;
    with.set_interactions(r.m);
    const auto budget = random_budget(rng, t);
    const auto opt = brute_force_quadratic(t, r.m, budget.capacity(t));
    REQUIRE(opt);
    CHECK(alloc::BlockQP{}.allocate(with, budget).objective == Approx(*opt).epsilon(1e-12));
  }
}

TEST_CASE("BlockQP equals brute force on medium instances", "[alloc][blockqp]") {
  Rng rng(5150);
  for (int it = 0; it < 6; ++it) {
    const auto t = random_table(rng, {3, 3, 2, 4, it % 2 == 0, false});  // 9 layers
    const bool integer = it % 2 == 0;
    const auto m = random_block_matrix(rng, t, integer);
    const auto budget = random_budget(rng, t);
    const auto opt = brute_force_quadratic(t, m, budget.capacity(t));
    REQUIRE(opt);
    const auto a = alloc::BlockQP{}.solve(t, m, budget);
    if (integer)
      CHECK(a.objective == *opt);
    else
      CHECK(a.objective == Approx(*opt).epsilon(1e-12).margin(1e-12));
    CHECK(a.total_cost_bits <= budget.capacity(t));
  }
}
