#include "support/test_data.hpp"

#include <fragile/core/rng.hpp>
#include <fragile/sensitivity/nsds.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <vector>

namespace sn = fragile::sensitivity;

TEST_CASE("NSDS building blocks match scipy / numpy references") {
  std::ifstream in(fragile::test::source_dir() / "fixtures/sensitivity/nsds_reference.json");
  REQUIRE(in.good());
  const auto doc = nlohmann::json::parse(in);
  for (const auto& m : doc["matrices"]) {
    const auto w = m["w"].get<std::vector<float>>();
    const std::size_t rows = m["rows"], cols = m["cols"];
    CHECK(sn::excess_kurtosis(w) == Approx(m["kurtosis"].get<double>()).epsilon(1e-9));
    const auto s = sn::singular_values(w.data(), rows, cols);
    const auto want = m["singular_values"].get<std::vector<double>>();
    REQUIRE(s.size() == want.size());
    for (std::size_t i = 0; i < s.size(); ++i)
      CHECK(s[i] == Approx(want[i]).epsilon(1e-6).margin(1e-6 * want[0]));
  }
  const auto v = doc["mad_input"].get<std::vector<double>>();
  const double med = doc["median"], mad = doc["mad_normal"];
  CHECK(sn::median(v) == Approx(med).epsilon(1e-14));
  const auto p = sn::mad_sigmoid(v);
  for (std::size_t i = 0; i < v.size(); ++i)
    CHECK(p[i] == Approx(1.0 / (1.0 + std::exp(-(v[i] - med) / mad))).epsilon(1e-9));
}

TEST_CASE("spectral entropy: 1 for an isotropic spectrum, ~0 for rank one") {
  const std::vector<double> flat(8, 2.0);
  CHECK(sn::spectral_entropy(flat) == Approx(1.0));
  const std::vector<double> spike{5.0, 0.0, 0.0, 0.0};
  CHECK(sn::spectral_entropy(spike) == Approx(0.0).margin(1e-15));
  const std::vector<double> zero(3, 0.0);
  CHECK_THROWS_AS(sn::spectral_entropy(zero), fragile::NumericError);
}

TEST_CASE("soft_or and MAD-sigmoid edge cases") {
  const std::vector<double> p{0.5, 0.5};
  CHECK(sn::soft_or(p) == Approx(0.75));
  const std::vector<double> bad{1.5};
  CHECK_THROWS_AS(sn::soft_or(bad), fragile::ArgumentError);
  const std::vector<double> same(5, 3.0);
  for (double x : sn::mad_sigmoid(same)) CHECK(x == 0.5);
}

TEST_CASE("NSDS ranks a heavy-tailed, full-rank module above a Gaussian low-rank one") {
  fragile::Rng rng(11);
  const std::size_t r = 32, c = 24;
  auto gaussian = [&] {
    std::vector<float> w(r * c);
    for (auto& x : w) x = static_cast<float>(rng.normal(0, 0.02));
    return w;
  };
  std::vector<std::vector<float>> weights;
  for (int i = 0; i < 4; ++i) weights.push_back(gaussian());
  auto heavy = gaussian();
  for (std::size_t i = 0; i < heavy.size(); i += 37) heavy[i] *= 25.0f;  // outliers
  weights.push_back(heavy);
  std::vector<float> low(r * c);  // rank 1 plus tiny noise
  for (std::size_t i = 0; i < r; ++i)
    for (std::size_t j = 0; j < c; ++j)
      low[i * c + j] = 0.02f * std::sin(float(i)) * std::cos(float(j)) + 1e-5f * float(rng.normal());
  weights.push_back(low);
  std::vector<sn::NsdsModule> modules;
  for (std::size_t i = 0; i < weights.size(); ++i)
    modules.push_back({"m" + std::to_string(i), weights[i].data(), r, c, i % 2 == 1});
  const auto scores = sn::nsds_scores(modules);
  REQUIRE(scores.size() == 6);
  for (std::size_t i = 0; i < 4; ++i) CHECK(scores[4].score > scores[i].score);
  CHECK(scores[5].structural < scores[0].structural);
  CHECK(scores[5].score < scores[4].score);
  const auto again = sn::nsds_scores(modules);
  for (std::size_t i = 0; i < 6; ++i) CHECK(again[i].score == scores[i].score);
  sn::NsdsOptions bad;
  bad.writer_weight = 2.0;
  CHECK_THROWS_AS(sn::nsds_scores(modules, bad), fragile::ConfigError);
}

TEST_CASE("NSDS of an all-zero layer is a NumericError naming the layer") {
  fragile::Rng rng(3);
  std::vector<float> a(64), zero(64, 0.0f);
  for (auto& x : a) x = static_cast<float>(rng.normal(0, 0.02));
  const std::vector<sn::NsdsModule> modules = {{"model.layers.0.mlp.up_proj", a.data(), 8, 8, false},
                                               {"model.layers.0.mlp.down_proj", zero.data(), 8, 8, true}};
  CHECK_THROWS_AS(sn::nsds_scores(modules), fragile::NumericError);
  CHECK_THROWS_WITH(sn::nsds_scores(modules),
                    Catch::Contains("layer 'model.layers.0.mlp.down_proj'") &&
                        Catch::Contains("constant"));
}
