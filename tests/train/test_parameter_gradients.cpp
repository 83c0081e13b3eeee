// Parameter gradients of the whole model (embeddings, norms, q/k/v biases, every linear, the LM
// head) and AdamW with clipping and the cosine schedule, against PyTorch: the Hugging Face
// fixtures' loss and every parameter's gradient (HF's causal-LM loss, labels = input_ids), and
// the parameters after torch.optim.AdamW steps (tools/make_train_fixtures.py). Then central
// finite differences along a random direction of every parameter tensor of tiny models.
#include "support/test_data.hpp"
#include "support/tiny_transformer.hpp"

#include <fragile/backend/cpu.hpp>
#include <fragile/io/hf_config.hpp>
#include <fragile/io/safetensors.hpp>
#include <fragile/model/transformer.hpp>
#include <fragile/train/adamw.hpp>
#include <fragile/train/schedule.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

namespace {

using namespace fragile;

/// ||a - b|| / ||b||.
double rel_error(std::span<const float> a, std::span<const float> b) {
  double num = 0.0, den = 0.0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

nlohmann::json read_json(const std::filesystem::path& p) {
  std::ifstream in(p);
  REQUIRE(in);
  return nlohmann::json::parse(in);
}

std::vector<model::TokenIds> golden_windows(const std::filesystem::path& dir) {
  std::vector<model::TokenIds> w;
  const auto j = read_json(dir / "golden.json");
  for (const auto& row : j.at("input_ids"))
    w.push_back(row.get<model::TokenIds>());
  return w;
}

}  // namespace

TEST_CASE("train: parameter gradients match PyTorch autograd", "[train][gradients]") {
  const std::string arch = GENERATE(as<std::string>{}, "llama", "qwen2");
  INFO("architecture " << arch);
  const auto dir = test::source_dir() / "fixtures" / "hf" / arch;
  model::Transformer<cpu> m(io::read_hf_config(dir / "config.json"), io::open_safetensors(dir));
  const auto golden = io::open_safetensors(dir / "train_golden.safetensors");
  const auto meta = read_json(dir / "train_golden.json");
  const auto windows = golden_windows(dir);

  auto params = m.parameters();
  const auto names = meta.at("parameters").get<std::vector<std::string>>();
  REQUIRE(params.size() == names.size());
  for (std::size_t i = 0; i < params.size(); ++i) CHECK(params[i].name == names[i]);

  auto grads = m.make_gradients();
  const double loss = m.accumulate_gradients(windows, grads);
  CHECK(std::abs(loss - meta.at("loss").get<double>()) < 1e-5 * loss);
  for (std::size_t i = 0; i < params.size(); ++i) {
    INFO(params[i].name);
    const auto ref = golden.load_f32("grad." + params[i].name);
    REQUIRE(ref.size() == grads.tensors[i].size());
    CHECK(rel_error(grads.tensors[i], ref) < 2e-5);
  }

  SECTION("gradients accumulate over calls") {
    m.accumulate_gradients(windows, grads);
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto ref = golden.load_f32("grad." + params[i].name);
      std::vector<float> twice(ref.size());
      for (std::size_t k = 0; k < ref.size(); ++k) twice[k] = 2.0f * ref[k];
      CHECK(rel_error(grads.tensors[i], twice) < 2e-5);
    }
  }

  SECTION("AdamW with clipping and the cosine schedule equals torch.optim.AdamW") {
    const auto& hp = meta.at("hyperparameters");
    train::AdamW opt(params, {hp.at("beta1"), hp.at("beta2"), hp.at("eps"), hp.at("weight_decay")});
    const train::CosineSchedule lr{hp.at("lr"), hp.at("min_lr"), hp.at("warmup"), hp.at("steps")};
    const auto step_losses = meta.at("step_losses").get<std::vector<double>>();
    const auto norms = meta.at("grad_norms").get<std::vector<double>>();
    const auto rates = meta.at("learning_rates").get<std::vector<double>>();
    for (std::size_t s = 0; s < lr.steps; ++s) {
      INFO("step " << s);
      grads.zero();
      const double l = m.accumulate_gradients(windows, grads);
      CHECK(std::abs(l - step_losses[s]) < 1e-4 * step_losses[s]);
      const double norm = train::clip_gradients(grads, hp.at("clip"));
      CHECK(std::abs(norm - norms[s]) < 1e-4 * norms[s]);
      CHECK(std::abs(lr(s) - rates[s]) < 1e-12);
      opt.step(params, grads, lr(s));
    }
    for (const auto& p : params) {
      INFO(p.name);
      // k_proj's bias shifts every key of a head alike, which softmax ignores but for RoPE's
      // rotation, so some of its elements have gradients near zero; Adam's normalised step
      // m / sqrt(v) turns f32 rounding there into full-size differences of the update.
      const double tol = p.name.ends_with("k_proj.bias") ? 1e-2 : 1e-4;
      CHECK(rel_error(p.value, golden.load_f32("after." + p.name)) < tol);
    }
  }
}

TEST_CASE("train: parameter gradients equal central finite differences", "[train][gradients]") {
  // Tiny models covering GQA, q/k/v bias, tied and untied heads and both RoPE styles.
  test::TinySpec qwen;
  qwen.architecture = model::Architecture::kQwen2;
  qwen.attention_bias = true;
  qwen.tie = true;
  test::TinySpec llama;
  llama.rope_style = model::RopeStyle::kInterleaved;
  llama.kv_heads = 4;
  const bool first = GENERATE(true, false);
  const test::TinySpec spec = first ? qwen : llama;
  auto m = test::tiny_model(spec);
  const auto windows = test::random_windows(2, 10, m.config().vocab_size, 5);
  auto grads = m.make_gradients();
  m.accumulate_gradients(windows, grads);
  auto params = m.parameters();
  auto mean_loss = [&] {
    const auto nll = m.token_nll(windows);
    double s = 0.0;
    for (float v : nll) s += v;
    return s / static_cast<double>(nll.size());
  };
  Rng rng(17);
  for (std::size_t i = 0; i < params.size(); ++i) {
    INFO(params[i].name);
    auto value = params[i].value;
    std::vector<float> dir(value.size()), saved(value.begin(), value.end());
    double norm = 0.0, analytic = 0.0;
    for (auto& d : dir) d = static_cast<float>(rng.normal()), norm += static_cast<double>(d) * d;
    for (std::size_t k = 0; k < dir.size(); ++k) {
      dir[k] = static_cast<float>(dir[k] / std::sqrt(norm));
      analytic += static_cast<double>(dir[k]) * grads.tensors[i][k];
    }
    const float eps = 1e-2f;
    for (std::size_t k = 0; k < dir.size(); ++k) value[k] = saved[k] + eps * dir[k];
    const double lp = mean_loss();
    for (std::size_t k = 0; k < dir.size(); ++k) value[k] = saved[k] - eps * dir[k];
    const double lm = mean_loss();
    std::copy(saved.begin(), saved.end(), value.begin());
    const double numeric = (lp - lm) / (2.0 * eps);
    CHECK(std::abs(numeric - analytic) < 2e-3 * std::max(1.0, std::abs(analytic)) + 1e-4);
  }
}

TEST_CASE("train: gradients refuse a set made for another model", "[train][gradients]") {
  auto a = test::tiny_model();
  test::TinySpec other;
  other.tie = true;
  auto b = test::tiny_model(other);
  auto grads = b.make_gradients();
  const auto windows = test::random_windows(1, 6, a.config().vocab_size, 1);
  CHECK_THROWS_AS(a.accumulate_gradients(windows, grads), ArgumentError);
}
