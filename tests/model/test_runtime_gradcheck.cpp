// Finite differences against the backward pass: for every linear layer of tiny models (each
// architecture feature: GQA, q/k/v bias, tied head, sliding window, both RoPE styles), the
// directional derivative of L = sum_n (window n mean cross-entropy) along a random direction D
// of W_l, by central differences through weight overrides, equals <dL/dW_l, D> from the backward
// (which is sum_t g_l,t x_l,t^T, so this checks g_l in every direction the weights reach).
#include "support/backends.hpp"
#include "support/test_data.hpp"
#include "support/tiny_transformer.hpp"

#include <cmath>
#include <map>
#include <string>
#include <vector>

namespace {

using namespace fragile;

struct GradRecorder {
  std::map<std::size_t, std::vector<float>> dw;
  model::CaptureNeeds needs() const { return {.weight_grad = true}; }
  void observe(const model::LayerBatch& c) {
    const auto h = c.weight_grad.host();
    REQUIRE(h.size() == c.layer->parameters());
    dw[c.layer->index].assign(h.begin(), h.end());
  }
};

template <class B>
double total_loss(const model::Transformer<B>& m, const std::vector<model::TokenIds>& w,
                  const model::WeightOverrides* ov) {
  const auto nll = m.token_nll(w, ov);
  const std::size_t per = w[0].size() - 1;
  double loss = 0.0;
  for (std::size_t b = 0; b < w.size(); ++b) {
    double s = 0.0;
    for (std::size_t t = 0; t < per; ++t) s += nll[b * per + t];
    loss += s / static_cast<double>(per);
  }
  return loss;
}

template <class B>
void check_model(const test::TinySpec& spec) {
  const auto m = test::tiny_model<B>(spec);
  const auto windows = test::random_windows(2, 12, m.config().vocab_size);
  GradRecorder rec;
  model::CaptureOptions opt;
  opt.batch_size = 2;
  m.capture(windows, opt, rec);
  REQUIRE(rec.dw.size() == m.linears().size());
  Rng rng(99);
  const float eps = 2e-2f;
  for (const auto& li : m.linears()) {
    INFO(li.name);
    const auto w = m.weight(li.index);
    std::vector<float> dir(w.size());
    double norm = 0.0;
    for (auto& d : dir) {
      d = static_cast<float>(rng.normal());
      norm += static_cast<double>(d) * d;
    }
    for (auto& d : dir) d = static_cast<float>(d / std::sqrt(norm));
    std::vector<float> plus(w.size()), minus(w.size());
    for (std::size_t k = 0; k < w.size(); ++k) {
      plus[k] = w[k] + eps * dir[k];
      minus[k] = w[k] - eps * dir[k];
    }
    auto ov = m.make_overrides();
    ov.set(li.index, std::span<const float>(plus), li.out_features, li.in_features);
    const double lp = total_loss(m, windows, &ov);
    ov.set(li.index, std::span<const float>(minus), li.out_features, li.in_features);
    const double lm = total_loss(m, windows, &ov);
    const double fd = (lp - lm) / (2.0 * eps);
    double analytic = 0.0;
    for (std::size_t k = 0; k < w.size(); ++k) analytic += static_cast<double>(rec.dw[li.index][k]) * dir[k];
    CHECK(std::abs(fd - analytic) <= 2e-2 * std::abs(analytic) + 3e-4);
  }
}

}  // namespace

TEMPLATE_TEST_CASE("runtime: backward agrees with central finite differences", "[model][runtime][gradcheck]", FRAGILE_TEST_BACKENDS) {
  SECTION("llama, rotate_half, GQA") { check_model<TestType>({}); }
  SECTION("qwen2-like: q/k/v bias, tied head, single kv head") {
    check_model<TestType>({.attention_bias = true, .tie = true, .kv_heads = 1});
  }
  SECTION("mistral-like: sliding window 5, interleaved RoPE, MHA") {
    check_model<TestType>({.architecture = model::Architecture::kMistral,
                 .rope_style = model::RopeStyle::kInterleaved, .sliding_window = 5, .kv_heads = 4});
  }
}

TEMPLATE_TEST_CASE("runtime: the finite-difference check detects a wrong gradient", "[model][runtime][gradcheck]", FRAGILE_TEST_BACKENDS) {
  // Guard against a vacuous tolerance: a gradient scaled by 1.1 must fail the same criterion.
  const auto m = test::tiny_model<TestType>({});
  const auto windows = test::random_windows(2, 12, m.config().vocab_size);
  GradRecorder rec;
  model::CaptureOptions opt;
  opt.batch_size = 2;
  m.capture(windows, opt, rec);
  const auto& li = m.linears()[3];
  const auto w = m.weight(li.index);
  const auto& dw = rec.dw[li.index];
  std::size_t k = 0;  // the entry with the largest gradient
  for (std::size_t i = 1; i < dw.size(); ++i)
    if (std::abs(dw[i]) > std::abs(dw[k])) k = i;
  std::vector<float> plus(w.begin(), w.end()), minus(w.begin(), w.end());
  const float eps = 2e-2f;
  plus[k] += eps;
  minus[k] -= eps;
  auto ov = m.make_overrides();
  ov.set(li.index, std::span<const float>(plus), li.out_features, li.in_features);
  const double lp = total_loss(m, windows, &ov);
  ov.set(li.index, std::span<const float>(minus), li.out_features, li.in_features);
  const double lm = total_loss(m, windows, &ov);
  const double fd = (lp - lm) / (2.0 * eps);
  const double analytic = dw[k];
  REQUIRE(std::abs(analytic) > 1e-2);
  CHECK(std::abs(fd - analytic) <= 2e-2 * std::abs(analytic) + 3e-4);
  CHECK_FALSE(std::abs(fd - 1.1 * analytic) <= 2e-2 * std::abs(analytic) + 3e-4);
}
