// export::Plan: round trip through JSON, and every malformed or mismatched plan an error that
// names the layer or field.
#include "support/test_data.hpp"

#include <fragile/backend/cpu.hpp>
#include <fragile/export/plan.hpp>
#include <fragile/io/load_model.hpp>

namespace {

using namespace fragile;

exporting::Plan plan_of(const model::Transformer<cpu>& m) {
  exporting::Plan p;
  p.weights_xxh3 = "00000000deadbeef";
  p.metric = "D_l";
  p.allocator = "MCKP";
  for (const auto& li : m.linears())
    p.layers.push_back({li.name, li.index % 2 ? 3 : 4, 32, false, 1000 + li.index, "rtn"});
  return p;
}

}  // namespace

TEST_CASE("plan: JSON round trip and checks against the model", "[study][plan]") {
  const auto ckpt = io::load_model(test::source_dir().parent_path() / "examples/models/kjv-tiny");
  const model::Transformer<cpu> m(ckpt.config, ckpt.weights);
  const auto p = plan_of(m);
  const auto dir = test::scratch_dir("plan");
  p.write(dir / "plan.json");
  const auto q = exporting::Plan::read(dir / "plan.json");
  CHECK(q.to_json() == p.to_json());
  const auto layers = q.for_model(m, "plan.json", "00000000deadbeef");
  REQUIRE(layers.size() == m.linears().size());
  CHECK(layers[1].bits == 3);
  CHECK(layers[2].group_size == 32);

  CHECK_THROWS_WITH(q.for_model(m, "plan.json", "0123456789abcdef"),
                    Catch::Contains("made for another model"));
  auto bad = p;
  bad.layers[3].name = "model.layers.9.mlp.up_proj";
  CHECK_THROWS_WITH(bad.for_model(m, "x"), Catch::Contains("'model.layers.9.mlp.up_proj' is not a linear"));
  bad = p;
  bad.layers[3].name = bad.layers[2].name;
  CHECK_THROWS_WITH(bad.for_model(m, "x"), Catch::Contains("listed twice"));
  bad = p;
  bad.layers[0].bits = 9;
  CHECK_THROWS_WITH(bad.for_model(m, "x"), Catch::Contains("9 bits, expected 2 to 8"));
  bad = p;
  bad.layers.pop_back();
  CHECK_THROWS_WITH(bad.for_model(m, "x"), Catch::Contains("no entry for layer"));

  auto j = p.to_json();
  j["fragile_plan"] = 2;
  CHECK_THROWS_WITH(exporting::Plan::from_json(j, "x"), Catch::Contains("version 2 is not supported"));
  j = p.to_json();
  j["layers"][0].erase("bits");
  CHECK_THROWS_WITH(exporting::Plan::from_json(j, "x"), Catch::Contains("layers[0] has no \"bits\""));
}
