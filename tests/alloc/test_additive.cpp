// MCKP and GreedyMarginal against brute-force enumeration; BinarySplit's documented rule.
#include "support/test_data.hpp"

#include "alloc/instances.hpp"

#include <fragile/alloc/binary_split.hpp>
#include <fragile/alloc/greedy_marginal.hpp>
#include <fragile/alloc/mckp.hpp>

#include <algorithm>
#include <array>
#include <cmath>

using namespace fragile;
using namespace fragile::test::alloc;
using Catch::Matchers::Contains;

namespace {
double max_single_gain(const SensitivityTable& t) {
  double g = 0.0;
  for (std::size_t l = 0; l < t.num_layers(); ++l) {
    double lo = t.score(l, 0), hi = lo;
    for (std::size_t o = 0; o < t.num_options(l); ++o) {
      lo = std::min(lo, t.score(l, o));
      hi = std::max(hi, t.score(l, o));
    }
    g = std::max(g, hi - lo);
  }
  return g;
}

void check_instance(const SensitivityTable& t, const alloc::Budget& budget) {
  const std::uint64_t cap = budget.capacity(t);
  const auto opt = brute_force_additive(t, cap);
  REQUIRE(opt.has_value());
  const auto m = alloc::MCKP{}.allocate(t, budget);
  CHECK(m.objective == *opt);  // exact: the same layer-order summation
  CHECK(m.total_cost_bits <= cap);
  CHECK(total_cost(t, m.option) == m.total_cost_bits);
  CHECK(m.optimal);
  const auto g = alloc::GreedyMarginal{}.allocate(t, budget);
  CHECK(g.total_cost_bits <= cap);
  CHECK(g.objective >= *opt);
  REQUIRE(g.lower_bound.has_value());
  const double tol = 1e-12 * (1.0 + std::abs(*opt));
  CHECK(*g.lower_bound <= *opt + tol);                    // LP bound is a true lower bound
  CHECK(g.objective - *opt <= max_single_gain(t) + tol);  // documented worst case
  if (g.optimal) CHECK(g.objective == Approx(*opt).margin(tol));
}
}  // namespace

TEST_CASE("MCKP equals brute force; greedy within its bound (random)", "[alloc][mckp]") {
  Rng rng(20261122);
  for (int it = 0; it < 300; ++it) {
    InstanceShape s;
    s.blocks = 1 + rng.below(3);
    s.layers_per_block = 1 + rng.below(3);
    s.max_options = 1 + rng.below(5);
    const auto t = random_table(rng, s);
    if (t.num_layers() > 7) continue;
    check_instance(t, random_budget(rng, t));
  }
}

TEST_CASE("MCKP and greedy on adversarial instances", "[alloc][mckp]") {
  Rng rng(99);
  SECTION("integer scores (ties) and equal costs") {
    for (int it = 0; it < 200; ++it) {
      InstanceShape s{2, 3, 1, 4, true, it % 2 == 0};
      const auto t = random_table(rng, s);
      check_instance(t, random_budget(rng, t));
    }
  }
  SECTION("budget exactly at the boundaries") {
    for (int it = 0; it < 50; ++it) {
      const auto t = random_table(rng, {2, 2, 1, 4, it % 3 == 0, false});
      const auto r = alloc::cost_range(t);
      check_instance(t, alloc::Budget::total_bits(r.min_bits));
      check_instance(t, alloc::Budget::total_bits(r.max_bits));
      check_instance(t, alloc::Budget::average(r.min_average()));
      check_instance(t, alloc::Budget::average(r.max_average()));
    }
  }
  SECTION("zero-gain and worse-but-costlier options") {
    SensitivityTable t("s");
    for (int l = 0; l < 4; ++l) {
      const auto i = t.add_layer({fmt::format("l{}", l), 0, fragile::model::LinearKind::kQ, 100});
      t.add_option(i, {"2", 2, 200, 3.0});
      t.add_option(i, {"3", 3, 300, 3.0});  // zero gain
      t.add_option(i, {"4", 4, 400, 4.0});  // worse and costlier
      t.add_option(i, {"8", 8, 800, 1.0 + 0.25 * l});
    }
    for (std::uint64_t cap = 800; cap <= 3200; cap += 100)
      check_instance(t, alloc::Budget::total_bits(cap));
    const auto g = alloc::GreedyMarginal{}.allocate(t, alloc::Budget::total_bits(800));
    CHECK(std::all_of(g.option.begin(), g.option.end(), [](std::size_t o) { return o == 0; }));
  }
}

TEST_CASE("GreedyMarginal jumps over a non-convex option and breaks ties deterministically",
          "[alloc][greedy]") {
  SensitivityTable t("D_l");
  const auto a = t.add_layer({"a", 0, fragile::model::LinearKind::kQ, 100});
  const auto b = t.add_layer({"b", 0, fragile::model::LinearKind::kQ, 100});
  t.add_option(a, {"2", 2, 200, 10.0});
  t.add_option(a, {"3", 3, 300, 9.5});  // small gain: next-step greedy would stall here
  t.add_option(a, {"4", 4, 400, 2.0});  // big gain over two steps
  t.add_option(b, {"2", 2, 200, 10.0});
  t.add_option(b, {"4", 4, 400, 6.0});
  const auto g = alloc::GreedyMarginal{.trace = true}.allocate(t, alloc::Budget::total_bits(600));
  CHECK(g.option == std::vector<std::size_t>{2, 0});  // jump a: 2 -> 4 (ratio 0.04 > b's 0.02)
  CHECK(g.objective == 12.0);
  CHECK_THAT(g.notes.front(), Contains("upgrade 'a' 2 -> 4"));

  // Equal ratios and gains: the lower layer index wins.
  SensitivityTable tie("s");
  for (int l = 0; l < 3; ++l) {
    const auto i = tie.add_layer({fmt::format("t{}", l), 0, fragile::model::LinearKind::kQ, 10});
    tie.add_option(i, {"lo", 2, 20, 5.0});
    tie.add_option(i, {"hi", 4, 40, 1.0});
  }
  const auto gt = alloc::GreedyMarginal{}.allocate(tie, alloc::Budget::total_bits(60 + 20));
  CHECK(gt.option == std::vector<std::size_t>{1, 0, 0});
  const auto mt = alloc::MCKP{}.allocate(tie, alloc::Budget::total_bits(80));
  CHECK(mt.objective == 11.0);
}

TEST_CASE("Allocators are deterministic and reject bad input", "[alloc][mckp]") {
  Rng rng(5);
  const auto t = random_table(rng, {4, 7, 5, 5, false, false});
  const auto budget = random_budget(rng, t);
  const auto m1 = alloc::MCKP{}.allocate(t, budget), m2 = alloc::MCKP{}.allocate(t, budget);
  CHECK(m1.option == m2.option);
  CHECK(m1.notes == m2.notes);
  const auto g1 = alloc::GreedyMarginal{}.allocate(t, budget),
             g2 = alloc::GreedyMarginal{}.allocate(t, budget);
  CHECK(g1.option == g2.option);
  CHECK(m1.objective <= g1.objective);
  CHECK_THAT(m1.notes.back(), Contains("GreedyMarginal objective"));

  const auto r = alloc::cost_range(t);
  CHECK_THROWS_AS(alloc::MCKP{}.allocate(t, alloc::Budget::total_bits(r.min_bits - 1)),
                  BudgetError);
  CHECK_THROWS_AS(alloc::GreedyMarginal{}.allocate(t, alloc::Budget::total_bits(r.max_bits + 1)),
                  BudgetError);
  auto bad = t;
  bad.set_score(3, 0, std::nan(""));
  CHECK_THROWS_AS(alloc::MCKP{}.allocate(bad, budget), ConfigError);
  CHECK_THROWS_AS(alloc::GreedyMarginal{}.allocate(bad, budget), ConfigError);
  CHECK_THROWS_AS(alloc::MCKP{.max_states = 0}.allocate(t, budget), ArgumentError);
}

TEST_CASE("BinarySplit follows paper 000's shootout and its documented adjustment",
          "[alloc][binary]") {
  // 5 layers, 100 weights each, options 2/3/4 bits (cost = 100 x bits).
  SensitivityTable t("D_l");
  for (int l = 0; l < 5; ++l) {
    const auto i = t.add_layer(
        {fmt::format("model.layers.{}.mlp.down_proj", l), std::size_t(l), fragile::model::LinearKind::kDown, 100});
    for (int b = 2; b <= 4; ++b)
      t.add_option(i, {fmt::format("{}bit", b), double(b), 100u * b, 1.0 / b});
  }
  t.set_layer_metric("fisher_trace", {5.0, 1.0, 4.0, 2.0, 3.0});  // rank high: 0, 2, 4, 3, 1

  SECTION("Fisher-gated within budget") {
    alloc::BinarySplit split{.fraction = 0.4};
    const auto a = split.allocate(t, alloc::Budget::average(3.4));
    CHECK(a.value == std::vector<double>{4, 3, 4, 3, 3});
    CHECK(a.achieved_bits_per_weight == 3.4);
  }
  SECTION("inverse within budget") {
    alloc::BinarySplit split{.fraction = 0.4, .protect = alloc::BinarySplit::Protect::kLowest};
    const auto a = split.allocate(t, alloc::Budget::average(3.5));
    CHECK(a.value == std::vector<double>{3, 4, 3, 4, 3});
    CHECK_THAT(a.notes.back(), Contains("left unspent"));
  }
  SECTION("demote unprotected, lowest-ranked first, to meet 3.0 average") {
    alloc::BinarySplit split{.fraction = 0.4};
    const auto a = split.allocate(t, alloc::Budget::average(3.0));
    // protected 0 and 2 at 4 bits (+2 x 100 bits over 3.0); layers 1 then 3 fall to 2 bits.
    CHECK(a.value == std::vector<double>{4, 2, 4, 2, 3});
    CHECK(a.total_cost_bits == 1500);
    REQUIRE(a.notes.size() == 3);
    CHECK_THAT(a.notes[1], Contains("layers.1.") && Contains("3bit to 2bit"));
    CHECK_THAT(a.notes[2], Contains("layers.3."));
  }
  SECTION("demote protected first") {
    alloc::BinarySplit split{.fraction = 0.4,
                             .adjust = alloc::BinarySplit::Adjust::kDemoteProtected};
    const auto a = split.allocate(t, alloc::Budget::average(3.0));
    CHECK(a.value == std::vector<double>{3, 3, 3, 3, 3});  // layer 2 (lower-ranked) first, then 0
    CHECK_THAT(a.notes[1], Contains("layers.2."));
  }
  SECTION("cheapest budget forces everyone down, protected last") {
    alloc::BinarySplit split{.fraction = 0.4};
    const auto a = split.allocate(t, alloc::Budget::average(2.0));
    CHECK(a.value == std::vector<double>{2, 2, 2, 2, 2});
    CHECK(a.total_cost_bits == 1000);
  }
  SECTION("errors") {
    CHECK_THROWS_WITH(alloc::BinarySplit{.metric = "nope"}.allocate(t, alloc::Budget::average(3.0)),
                      Contains("no layer metric 'nope'"));
    CHECK_THROWS_WITH(alloc::BinarySplit{.hi = 8}.allocate(t, alloc::Budget::average(3.0)),
                      Contains("has no option with value 8"));
    CHECK_THROWS_AS(alloc::BinarySplit{.fraction = 1.5}.allocate(t, alloc::Budget::average(3.0)),
                    ConfigError);
    CHECK_THROWS_AS(alloc::BinarySplit{}.allocate(t, alloc::Budget::average(1.0)), BudgetError);
  }
  SECTION("never over budget on random tables") {
    Rng rng(3);
    for (int it = 0; it < 100; ++it) {
      SensitivityTable r("r");
      std::vector<double> metric;
      for (int l = 0; l < 12; ++l) {
        const std::uint64_t p = 64 * (1 + rng.below(8));
        const auto i = r.add_layer({fmt::format("l{}", l), 0, fragile::model::LinearKind::kQ, p});
        for (int b = 2; b <= 5; ++b)
          r.add_option(i, {fmt::format("{}", b), double(b), p * b + 16, rng.uniform()});
        metric.push_back(static_cast<double>(rng.below(4)));  // ties in the ranking
      }
      const auto budget = random_budget(rng, r);
      alloc::BinarySplit split{.fraction = rng.uniform(), .hi = 5, .lo = 3};
      const auto a = split.allocate(r, budget, metric);
      CHECK(a.total_cost_bits <= budget.capacity(r));
      CHECK(a.option == split.allocate(r, budget, metric).option);
    }
  }
}

TEST_CASE("Llama-2-7B-sized table: MCKP <= greedy, greedy's LP bound <= MCKP", "[alloc][mckp]") {
  // 224 layers (32 blocks x 7 linears), 5 bit widths, exact group-128 costs, convex-ish scores.
  Rng rng(31);
  SensitivityTable t("D_l");
  const std::array<std::pair<std::uint64_t, std::uint64_t>, 7> shapes{{{4096, 4096},
                                                                       {4096, 4096},
                                                                       {4096, 4096},
                                                                       {4096, 4096},
                                                                       {11008, 4096},
                                                                       {11008, 4096},
                                                                       {4096, 11008}}};
  for (std::size_t b = 0; b < 32; ++b)
    for (const auto& [out, in] : shapes) {
      const std::uint64_t n = out * in;
      const auto l = t.add_layer({fmt::format("model.layers.{}.x", b), b, fragile::model::LinearKind::kQ, n});
      const double a = std::exp(rng.normal());
      for (std::uint64_t bits = 2; bits <= 6; ++bits)
        t.add_option(l, {fmt::format("{}bit", bits), double(bits),
                         n * bits + out * ((in + 127) / 128) * (16 + bits),
                         a * std::pow(4.0, -double(bits)) * std::exp(rng.normal(0.0, 0.3))});
    }
  for (double avg : {2.5, 3.0, 3.25, 4.1, 5.9}) {
    const auto budget = alloc::Budget::average(avg);
    const auto m = alloc::MCKP{}.allocate(t, budget);
    const auto g = alloc::GreedyMarginal{}.allocate(t, budget);
    CHECK(m.achieved_bits_per_weight <= avg);
    CHECK(g.achieved_bits_per_weight <= avg);
    CHECK(m.objective <= g.objective);
    REQUIRE(g.lower_bound.has_value());
    CHECK(*g.lower_bound <= m.objective * (1 + 1e-12));
    // MCKP's choice is locally optimal: no single-layer change that fits improves it.
    for (std::size_t l = 0; l < t.num_layers(); ++l)
      for (std::size_t o = 0; o < t.num_options(l); ++o) {
        const std::uint64_t c = m.total_cost_bits - t.cost(l, m.option[l]) + t.cost(l, o);
        if (c <= m.capacity_bits) CHECK(t.score(l, o) >= t.score(l, m.option[l]));
      }
  }
}

TEST_CASE("MCKP equals brute force on medium instances (bound pruning active)", "[alloc][mckp]") {
  Rng rng(424242);
  for (int it = 0; it < 12; ++it) {
    InstanceShape s{3, 3, 3, 4, it % 3 == 0, it % 4 == 1};  // 9 layers, up to 4^9 assignments
    const auto t = random_table(rng, s);
    for (int b = 0; b < 3; ++b) check_instance(t, random_budget(rng, t));
  }
}
