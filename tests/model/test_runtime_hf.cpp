// Transformer<B>, on every backend, against golden dumps of Hugging Face transformers
// (tools/make_hf_fixtures.py): logits, per-window losses, every linear layer's input x, output
// gradient g = dL/dy and weight gradient dL/dW, for Llama, Llama 3 (rope scaling), Qwen2 (bias,
// tied, sharded), Mistral (sliding window) and Qwen2 with per-layer sliding windows (full
// attention in block 0, a 5-key window from block 1 on: max_window_layers). Loaded through
// io::open_safetensors + io::read_hf_config, as users do.
#include "support/backends.hpp"
#include "support/test_data.hpp"

#include <fragile/backend/cpu.hpp>
#include <fragile/io/hf_config.hpp>
#include <fragile/io/safetensors.hpp>
#include <fragile/model/transformer.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace {

using fragile::model::Transformer;
using fragile::model::TokenIds;

/// ||a - b|| / ||b|| (Frobenius).
double rel_error(const float* a, const float* b, std::size_t n) {
  double num = 0.0, den = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

struct Recorder {
  fragile::model::CaptureNeeds want;
  std::map<std::string, std::vector<float>> x, g, dw;
  fragile::model::CaptureNeeds needs() const { return want; }
  void observe(const fragile::model::LayerBatch& c) {
    const auto& li = *c.layer;
    auto keep = [](std::vector<float>& dst, const fragile::backend::TensorView& v) {
      const auto h = v.host();
      dst.assign(h.begin(), h.end());
    };
    if (c.x) keep(x[li.name], c.x);
    if (c.g) keep(g[li.name], c.g);
    if (c.weight_grad) keep(dw[li.name], c.weight_grad);
  }
};

struct Golden {
  std::vector<TokenIds> windows;
  std::vector<double> window_loss;
  double loss = 0.0;
};

Golden read_golden(const std::filesystem::path& dir) {
  std::ifstream in(dir / "golden.json");
  REQUIRE(in);
  const auto j = nlohmann::json::parse(in);
  Golden g;
  for (const auto& row : j.at("input_ids")) g.windows.push_back(row.get<TokenIds>());
  g.window_loss = j.at("window_loss").get<std::vector<double>>();
  g.loss = j.at("loss").get<double>();
  return g;
}

}  // namespace

TEMPLATE_TEST_CASE("runtime: forward and backward match Hugging Face transformers",
                   "[model][runtime]", FRAGILE_TEST_BACKENDS) {
  using fragile::test::tolerance;
  using B_ = TestType;
  const std::string arch =
      GENERATE(as<std::string>{}, "llama", "llama3", "qwen2", "mistral", "qwen2_swa");
  INFO("architecture " << arch);
  const auto dir = fragile::test::source_dir() / "fixtures" / "hf" / arch;
  const auto config = fragile::io::read_hf_config(dir / "config.json");
  const auto store = fragile::io::open_safetensors(dir);
  const auto golden_t = fragile::io::open_safetensors(dir / "golden.safetensors");
  const Golden golden = read_golden(dir);
  const Transformer<B_> model(config, store);
  const std::size_t B = golden.windows.size(), T = golden.windows[0].size();

  SECTION("the config's attention window of every block") {
    if (arch == "qwen2_swa") {
      CHECK_FALSE(config.attention_window(0).has_value());
      CHECK(config.attention_window(1) == std::optional<std::size_t>(5));
      CHECK(config.attention_window(2) == std::optional<std::size_t>(5));
    }
  }

  SECTION("registry") {
    REQUIRE(model.linears().size() == 7 * config.num_hidden_layers);
    CHECK(model.linears()[9].name == "model.layers.1.self_attn.v_proj");
    CHECK(model.linears()[9].block == 1);
    CHECK(model.linear("model.layers.0.mlp.down_proj").in_features == config.intermediate_size);
    for (const auto& li : model.linears()) CHECK(golden_t.contains("x." + li.name));
  }

  SECTION("logits and per-token NLL") {
    const auto logits = model.logits(golden.windows);
    const auto ref = golden_t.load_f32("logits");
    REQUIRE(logits.size() == ref.size());
    CHECK(rel_error(logits.data(), ref.data(), ref.size()) < tolerance<B_>(1e-4));

    const auto nll = model.token_nll(golden.windows);
    REQUIRE(nll.size() == B * (T - 1));
    for (std::size_t b = 0; b < B; ++b) {
      double mean = 0.0;
      for (std::size_t t = 0; t + 1 < T; ++t) mean += nll[b * (T - 1) + t];
      mean /= static_cast<double>(T - 1);
      CHECK(std::abs(mean - golden.window_loss[b]) / golden.window_loss[b] < tolerance<B_>(1e-5));
    }
  }

  SECTION("x_l, g_l and dL/dW of every linear layer") {
    Recorder rec;
    rec.want = {.x = true, .g = true, .weight_grad = true};
    fragile::model::CaptureOptions opt;
    opt.batch_size = B;  // one batch: dL/dW sums both windows, as the fixture's loss does
    const auto summary = model.capture(golden.windows, opt, rec);
    CHECK(summary.windows == B);
    CHECK(summary.scored_tokens == B * (T - 1));
    CHECK(std::abs(summary.mean_window_loss * B - golden.loss) / golden.loss < tolerance<B_>(1e-5));
    REQUIRE(rec.x.size() == model.linears().size());
    REQUIRE(rec.g.size() == model.linears().size());
    for (const auto& li : model.linears()) {
      INFO(li.name);
      const auto xr = golden_t.load_f32("x." + li.name);
      const auto gr = golden_t.load_f32("g." + li.name);
      const auto dwr = golden_t.load_f32("dw." + li.name);
      REQUIRE(rec.x[li.name].size() == xr.size());
      REQUIRE(rec.g[li.name].size() == gr.size());
      REQUIRE(rec.dw[li.name].size() == dwr.size());
      CHECK(rel_error(rec.x[li.name].data(), xr.data(), xr.size()) < tolerance<B_>(1e-3));
      CHECK(rel_error(rec.g[li.name].data(), gr.data(), gr.size()) < tolerance<B_>(1e-3));
      CHECK(rel_error(rec.dw[li.name].data(), dwr.data(), dwr.size()) < tolerance<B_>(1e-3));
    }
  }

  SECTION("batching does not change g: one window per batch gives the same g_l") {
    Recorder one, all;
    one.want = all.want = {.g = true};
    fragile::model::CaptureOptions opt;
    opt.batch_size = 1;
    model.capture(golden.windows, opt, one);
    opt.batch_size = B;
    model.capture(golden.windows, opt, all);
    // With batch 1 the recorder keeps the last batch (window B-1): compare that window's rows.
    for (const auto& li : model.linears()) {
      const auto& a = one.g[li.name];
      const auto& b = all.g[li.name];
      REQUIRE(a.size() * B == b.size());
      CHECK(rel_error(a.data(), b.data() + (B - 1) * a.size(), a.size()) < tolerance<B_>(1e-5));
    }
  }
}
