// The metric pass on stories260K equals PyTorch autograd in float64 (tools/sensitivity_reference.py:
// the independent llama2.c port, retain_grad on every linear output, GPTQ's RTN written out in
// torch) for every metric, every linear layer and bits {2, 3, 4, 8}, data labels: agreement is
// ~3e-6 relative at worst; the test allows 1e-4.
// Skipped when the shared data is absent.
#include "support/test_data.hpp"

#include <fragile/backend/cpu.hpp>
#include <fragile/io/llama2c.hpp>
#include <fragile/quant/rtn.hpp>
#include <fragile/sensitivity/pass.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>

using namespace fragile;

TEST_CASE("metrics: stories260K metric pass equals PyTorch autograd", "[sensitivity][metrics][data]") {
  FRAGILE_REQUIRE_DATA_FILE(model_path, "models/stories260K/stories260K.bin");
  std::ifstream in(test::source_dir() / "fixtures/sensitivity/stories260k_metrics.json");
  REQUIRE(in);
  const auto ref = nlohmann::json::parse(in);
  const auto seqlen = ref.at("seqlen").get<std::size_t>();
  const auto tokens = ref.at("tokens").get<std::vector<data::TokenId>>();
  std::vector<data::Window> windows;
  for (std::size_t i = 0; i < ref.at("windows").get<std::size_t>(); ++i)
    windows.push_back(data::Window{{tokens.begin() + i * seqlen, tokens.begin() + (i + 1) * seqlen},
                                   i * seqlen, 0, 1, seqlen});

  auto ckpt = io::read_llama2c(model_path);
  const model::Transformer<cpu> model(ckpt.config, ckpt.weights);
  quant::QuantSpec base;
  base.group_size = ref.at("group_size").get<int>();
  base.symmetric = ref.at("symmetric").get<bool>();
  const auto bits = ref.at("bits").get<std::vector<int>>();
  const auto cands = sensitivity::quantize_candidates(model, quant::Rtn{},
                                                      sensitivity::bit_options(bits, base), {},
                                                      {.progress = nullptr});
  const auto r = sensitivity::metric_pass(
      model, windows, cands,
      {.labels = model::LabelSource::kData, .batch_size = 2, .progress = nullptr});
  CHECK(r.mean_window_loss == Approx(ref.at("mean_window_loss").get<double>()).epsilon(1e-5));

  const auto& layers = ref.at("layers");
  REQUIRE(layers.size() == r.num_layers());
  double worst = 0.0;
  std::string worst_what;
  auto check = [&](double got, double want, double tol, const std::string& what) {
    const double e = std::abs(got - want) / std::abs(want);
    if (e > worst) {
      worst = e;
      worst_what = what;
    }
    INFO(what << ": fragile " << got << ", torch " << want);
    CHECK(e < tol);
  };
  using namespace sensitivity;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const auto& L = layers[l];
    REQUIRE(L.at("name").get<std::string>() == r.layers[l].name);
    check(r.scores<FisherTrace>(0)[l], L.at("fisher_trace").get<double>(), 1e-4,
          r.layers[l].name + " fisher_trace");
    for (std::size_t o = 0; o < bits.size(); ++o) {
      const auto& O = L.at("options")[o];
      const std::string at = r.layers[l].name + " " + std::to_string(bits[o]) + "bit ";
      check(r.scores<Visibility>(o)[l], O.at("D_l").get<double>(), 1e-4, at + "D_l");
      check(r.scores<VisibilityDiag>(o)[l], O.at("D_l_diag").get<double>(), 1e-4, at + "D_l_diag");
      check(r.scores<Feo>(o)[l], O.at("feo").get<double>(), 1e-4, at + "feo");
      check(r.scores<WeightMse>(o)[l], O.at("weight_mse").get<double>(), 1e-6, at + "weight_mse");
      check(r.scores<HessianDiagProxy>(o)[l], O.at("hessian_diag").get<double>(), 1e-4,
            at + "hessian_diag");
      check(r.scores<FisherDiag>(o)[l], O.at("fisher_diag").get<double>(), 1e-4, at + "fisher_diag");
    }
  }
  WARN("largest relative difference to torch float64: " << worst << " (" << worst_what << ")");
}
