// SensitivityTable validation and JSON, BlockMatrix checks, Budget capacity and feasible range.
#include "support/test_data.hpp"

#include "alloc/instances.hpp"

#include <fragile/alloc/assignment.hpp>
#include <fragile/alloc/budget.hpp>
#include <fragile/alloc/mckp.hpp>
#include <fragile/sensitivity/table.hpp>

#include <cmath>
#include <limits>

using namespace fragile;
using namespace fragile::test::alloc;
using Catch::Matchers::Contains;

namespace {
SensitivityTable two_layer_table() {
  SensitivityTable t("D_l");
  const auto a = t.add_layer({"model.layers.0.self_attn.q_proj", 0, fragile::model::LinearKind::kQ, 100});
  const auto b = t.add_layer({"model.layers.0.mlp.down_proj", 0, fragile::model::LinearKind::kDown, 300});
  t.add_option(a, {"2bit", 2, 200, 5.0});
  t.add_option(a, {"4bit", 4, 400, 1.0});
  t.add_option(b, {"2bit", 2, 600, 9.0});
  t.add_option(b, {"4bit", 4, 1200, 2.0});
  return t;
}
}  // namespace

TEST_CASE("SensitivityTable validation names the layer and option", "[alloc][table]") {
  SECTION("valid table passes") { CHECK_NOTHROW(two_layer_table().validate()); }
  SECTION("NaN score") {
    auto t = two_layer_table();
    t.set_score(1, 0, std::numeric_limits<double>::quiet_NaN());
    CHECK_THROWS_AS(t.validate(), ConfigError);
    CHECK_THROWS_WITH(t.validate(), Contains("model.layers.0.mlp.down_proj") &&
                                        Contains("'2bit'") && Contains("finite"));
  }
  SECTION("Inf score") {
    auto t = two_layer_table();
    t.set_score(0, 1, std::numeric_limits<double>::infinity());
    CHECK_THROWS_WITH(t.validate(), Contains("q_proj") && Contains("'4bit'"));
  }
  SECTION("missing score") {
    auto t = two_layer_table();
    t.add_option(0, {"8bit", 8, 800, std::nullopt});
    CHECK_THROWS_WITH(t.validate(),
                      Contains("q_proj") && Contains("'8bit'") && Contains("missing"));
    CHECK_NOTHROW(t.validate(/*require_scores=*/false));
    CHECK_THROWS_AS(t.score(0, 2), ConfigError);
  }
  SECTION("layer without options") {
    auto t = two_layer_table();
    t.add_layer({"model.layers.1.mlp.up_proj", 1, fragile::model::LinearKind::kUp, 10});
    CHECK_THROWS_WITH(t.validate(),
                      Contains("model.layers.1.mlp.up_proj") && Contains("no options"));
  }
  SECTION("non-positive parameter count") {
    SensitivityTable t;
    const auto l = t.add_layer({"model.layers.0.mlp.gate_proj", 0, fragile::model::LinearKind::kGate, 0});
    t.add_option(l, {"3bit", 3, 0, 1.0});
    CHECK_THROWS_WITH(t.validate(), Contains("gate_proj") && Contains("parameter count 0"));
  }
  SECTION("empty table") { CHECK_THROWS_AS(SensitivityTable("x").validate(), ConfigError); }
  SECTION("out-of-range indices") {
    auto t = two_layer_table();
    CHECK_THROWS_AS(t.option(0, 7), ArgumentError);
    CHECK_THROWS_AS(t.layer(9), ArgumentError);
  }
  SECTION("layer metrics") {
    auto t = two_layer_table();
    CHECK_THROWS_AS(t.set_layer_metric("fisher_trace", {1.0}), ArgumentError);
    CHECK_THROWS_WITH(t.set_layer_metric("fisher_trace", {1.0, std::nan("")}),
                      Contains("down_proj"));
    CHECK_THROWS_WITH(t.layer_metric("fisher_trace"), Contains("no layer metric 'fisher_trace'"));
  }
}

TEST_CASE("SensitivityTable JSON round trip", "[alloc][table]") {
  auto t = two_layer_table();
  t.set_layer_metric("fisher_trace", {0.5, 2.5});
  auto m = BlockMatrix::zeros(t);
  m.set(0, 0, 0, 0, 10.0);
  m.set(0, 1, 1, 0, -3.25);
  m.set(1, 1, 1, 1, 4.0);
  t.set_interactions(m);
  const nlohmann::json j = t;
  const auto back = j.get<SensitivityTable>();
  REQUIRE(back.num_layers() == 2);
  CHECK(back.score_name() == "D_l");
  CHECK(back.layer(1).name == "model.layers.0.mlp.down_proj");
  CHECK(back.layer(1).parameters == 300);
  CHECK(back.option(1, 1).cost_bits == 1200);
  CHECK(back.score(0, 0) == 5.0);
  CHECK(back.layer_metric("fisher_trace") == std::vector<double>{0.5, 2.5});
  REQUIRE(back.interactions().has_value());
  CHECK(back.interactions()->at(1, 0, 0, 1) == -3.25);
  CHECK(nlohmann::json(back) == j);

  SECTION("negative cost is rejected naming the option") {
    auto bad = j;
    bad["layers"][1]["options"][0]["cost_bits"] = -5;
    CHECK_THROWS_AS(bad.get<SensitivityTable>(), ConfigError);
    CHECK_THROWS_WITH(bad.get<SensitivityTable>(), Contains("down_proj") && Contains("cost_bits"));
  }
  SECTION("missing field") {
    auto bad = j;
    bad["layers"][0].erase("parameters");
    CHECK_THROWS_WITH(bad.get<SensitivityTable>(), Contains("q_proj") && Contains("parameters"));
  }
  SECTION("null score reads back as missing") {
    auto bad = j;
    bad["layers"][0]["options"][1]["score"] = nullptr;
    CHECK_THROWS_WITH(bad.get<SensitivityTable>(), Contains("missing its score"));
  }
}

TEST_CASE("BlockMatrix rejects malformed M", "[alloc][table]") {
  auto t = two_layer_table();
  SensitivityTable other("other");
  const auto l = other.add_layer({"model.layers.5.x", 5, fragile::model::LinearKind::kQ, 10});
  other.add_option(l, {"a", 1, 10, 0.0});
  auto m = BlockMatrix::zeros(t);
  SECTION("non-symmetric") {
    m.block(0)(0, 3) = 1.0;
    CHECK_THROWS_AS(m.validate(t), ConfigError);
    CHECK_THROWS_WITH(m.validate(t), Contains("not symmetric") && Contains("q_proj"));
    CHECK_THROWS_AS(t.set_interactions(m), ConfigError);
  }
  SECTION("NaN entry") {
    m.block(0)(1, 1) = std::nan("");
    CHECK_THROWS_WITH(m.validate(t), Contains("expected finite"));
  }
  SECTION("shape mismatch") { CHECK_THROWS_AS(m.validate(other), ConfigError); }
  SECTION("cross-block set") {
    auto t2 = two_layer_table();
    const auto c = t2.add_layer({"model.layers.1.x", 1, fragile::model::LinearKind::kQ, 10});
    t2.add_option(c, {"a", 1, 10, 0.0});
    auto m2 = BlockMatrix::zeros(t2);
    CHECK(m2.num_blocks() == 2);
    CHECK_THROWS_AS(m2.set(0, 0, 2, 0, 1.0), ArgumentError);
    CHECK(m2.at(0, 0, 2, 0) == 0.0);
  }
}

TEST_CASE("Budget capacity and feasible range", "[alloc][budget]") {
  const auto t = two_layer_table();  // 400 weights, costs 800 .. 1600 bits
  const auto r = alloc::cost_range(t);
  CHECK(r.min_bits == 800);
  CHECK(r.max_bits == 1600);
  CHECK(alloc::Budget::average(2.0).capacity(t) == 800);   // exactly the cheapest
  CHECK(alloc::Budget::average(4.0).capacity(t) == 1600);  // exactly the most expensive
  CHECK(alloc::Budget::average(3.0).capacity(t) == 1200);
  CHECK(alloc::Budget::average(3.0049).capacity(t) == 1201);
  CHECK(alloc::Budget::total_bits(999).capacity(t) == 999);
  CHECK_THROWS_AS(alloc::Budget::average(1.99).capacity(t), BudgetError);
  CHECK_THROWS_WITH(alloc::Budget::average(1.99).capacity(t),
                    Contains("feasible range [2.000000, 4.000000]"));
  CHECK_THROWS_WITH(alloc::Budget::average(4.01).capacity(t), Contains("feasible range"));
  CHECK_THROWS_AS(alloc::Budget::total_bits(799).capacity(t), BudgetError);
  CHECK_THROWS_AS(alloc::Budget::total_bits(1601).capacity(t), BudgetError);
  CHECK_THROWS_AS(alloc::Budget::average(std::nan("")), ArgumentError);
  CHECK_THROWS_AS(alloc::Budget::average(-1.0), ArgumentError);

  SECTION("capacity is the largest total whose average stays within the budget") {
    fragile::Rng rng(7);
    for (int i = 0; i < 200; ++i) {
      auto tt = random_table(rng, {3, 2, 1, 3, false, false});
      const auto rr = alloc::cost_range(tt);
      const double avg = rng.uniform(rr.min_average(), rr.max_average());
      const auto cap = alloc::Budget::average(avg).capacity(tt);
      const double n = static_cast<double>(rr.parameters);
      CHECK(static_cast<double>(cap) / n <= avg);
      if (cap < rr.max_bits) CHECK(static_cast<double>(cap + 1) / n > avg);
    }
  }
}

TEST_CASE("BitAssignment JSON round trip", "[alloc][budget]") {
  const auto t = two_layer_table();
  const auto a = alloc::MCKP{}.allocate(t, alloc::Budget::average(3.0));
  const nlohmann::json j = a;
  const auto b = j.get<alloc::BitAssignment>();
  CHECK(b.option == a.option);
  CHECK(b.value == a.value);
  CHECK(b.objective == a.objective);
  CHECK(b.total_cost_bits == a.total_cost_bits);
  CHECK(b.achieved_bits_per_weight == a.achieved_bits_per_weight);
  CHECK(b.lower_bound == a.lower_bound);
  CHECK(b.notes == a.notes);
  CHECK(b.allocator == "MCKP");
  auto bad = j;
  bad.erase("option");
  CHECK_THROWS_AS(bad.get<alloc::BitAssignment>(), ConfigError);
}
