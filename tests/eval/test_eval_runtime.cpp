// eval::perplexity (GPTQ and llama.cpp protocols) and eval::divergence (KL, top-1 agreement)
// against brute-force computations from full logits of tiny models.
#include "support/backends.hpp"
#include "support/test_data.hpp"
#include "support/tiny_transformer.hpp"

#include <fragile/eval/divergence.hpp>
#include <fragile/eval/perplexity.hpp>

#include <cmath>
#include <vector>

namespace {

using namespace fragile;

std::vector<data::TokenId> stream(std::size_t n, std::size_t vocab) {
  Rng rng(3);
  std::vector<data::TokenId> s(n);
  for (auto& t : s) t = static_cast<data::TokenId>(rng.below(vocab));
  return s;
}

/// log softmax of one row of logits, in double.
std::vector<double> log_softmax(const float* row, std::size_t v) {
  double mx = row[0];
  for (std::size_t j = 1; j < v; ++j) mx = std::max(mx, static_cast<double>(row[j]));
  double s = 0.0;
  for (std::size_t j = 0; j < v; ++j) s += std::exp(row[j] - mx);
  std::vector<double> out(v);
  for (std::size_t j = 0; j < v; ++j) out[j] = row[j] - mx - std::log(s);
  return out;
}

}  // namespace

TEMPLATE_TEST_CASE("eval perplexity: GPTQ and llama.cpp protocols", "[eval][perplexity]", FRAGILE_TEST_BACKENDS) {
  const auto m = test::tiny_model<TestType>({});
  const std::size_t V = m.config().vocab_size;
  const auto tokens = stream(70, V);

  const auto gw = data::gptq_eval_windows(tokens, 8);  // 8 windows, tail of 6 dropped
  REQUIRE(gw.size() == 8);
  double mean_of_means = 0.0;
  for (const auto& w : gw) {
    const auto logits = m.logits(std::vector<model::TokenIds>{w.tokens});
    double s = 0.0;
    for (std::size_t t = 1; t < 8; ++t) s -= log_softmax(&logits[(t - 1) * V], V)[w.tokens[t]];
    mean_of_means += s / 7.0;
  }
  mean_of_means /= 8.0;
  for (std::size_t batch : {1u, 3u, 8u}) {
    const auto r = eval::perplexity(m, gw, {.protocol = eval::PerplexityProtocol::kGptq, .batch_size = batch});
    CHECK(r.windows == 8);
    CHECK(r.tokens == 56);
    CHECK(r.perplexity == Approx(std::exp(mean_of_means)).epsilon(1e-5));
  }

  const auto lw = data::llamacpp_eval_windows(tokens, 8, 1);
  double total = 0.0;
  std::size_t count = 0;
  for (const auto& w : lw) {
    const auto logits = m.logits(std::vector<model::TokenIds>{w.tokens});
    for (std::size_t t = 5; t < 8; ++t, ++count) total -= log_softmax(&logits[(t - 1) * V], V)[w.tokens[t]];
  }
  const auto r = eval::perplexity(m, lw, {.protocol = eval::PerplexityProtocol::kLlamaCpp, .batch_size = 4});
  CHECK(r.tokens == count);
  CHECK(r.perplexity == Approx(std::exp(total / static_cast<double>(count))).epsilon(1e-5));

  CHECK_THROWS_AS(eval::perplexity(m, std::span<const data::Window>{}), ArgumentError);
  auto broken = gw;
  broken[2].target_end = 99;
  CHECK_THROWS_AS(eval::perplexity(m, broken), ArgumentError);
}

TEMPLATE_TEST_CASE("eval divergence: KL, top-1 agreement and NLL against full logits", "[eval][divergence]", FRAGILE_TEST_BACKENDS) {
  auto m = test::tiny_model<TestType>({.tie = true});
  m.options().head_chunk_rows = 3;  // chunks straddle windows
  const std::size_t V = m.config().vocab_size;
  const auto windows = data::gptq_eval_windows(stream(40, V), 10);

  const auto same = eval::divergence(m, windows, m.make_overrides(), {.batch_size = 2});
  CHECK(same.tokens == 4 * 9);
  CHECK(same.mean_kl < 1e-7);
  CHECK(same.top1_agreement == 1.0);
  CHECK(same.base_mean_nll == Approx(same.modified_mean_nll).epsilon(1e-7));

  auto ov = m.make_overrides();
  for (std::size_t l : {2u, 5u, 11u}) {
    const auto& li = m.linears()[l];
    const auto w = m.weight(l);
    std::vector<float> q(w.begin(), w.end());
    for (auto& v : q) v = std::round(v * 2.0f) / 2.0f;
    ov.set(l, std::move(q), li.out_features, li.in_features);
  }
  const auto r = eval::divergence(m, windows, ov, {.batch_size = 3});
  double kl = 0.0, nll_p = 0.0, nll_q = 0.0;
  std::size_t agree = 0, n = 0;
  std::vector<float> token_kl;
  for (const auto& w : windows) {
    const std::vector<model::TokenIds> one{w.tokens};
    const auto lp = m.logits(one), lq = m.logits(one, &ov);
    for (std::size_t t = w.target_begin; t < w.target_end; ++t, ++n) {
      const auto a = log_softmax(&lp[(t - 1) * V], V), b = log_softmax(&lq[(t - 1) * V], V);
      double k = 0.0;
      std::size_t ia = 0, ib = 0;
      for (std::size_t j = 0; j < V; ++j) {
        k += std::exp(a[j]) * (a[j] - b[j]);
        if (a[j] > a[ia]) ia = j;
        if (b[j] > b[ib]) ib = j;
      }
      kl += k;
      token_kl.push_back(static_cast<float>(k));
      agree += ia == ib;
      nll_p -= a[w.tokens[t]];
      nll_q -= b[w.tokens[t]];
    }
  }
  REQUIRE(r.tokens == n);
  CHECK(r.mean_kl > 1e-3);
  CHECK(r.mean_kl == Approx(kl / n).epsilon(1e-4));
  CHECK(r.top1_agreement == Approx(static_cast<double>(agree) / n));
  CHECK(r.top1_agreement < 1.0);
  CHECK(r.base_mean_nll == Approx(nll_p / n).epsilon(1e-5));
  CHECK(r.modified_mean_nll == Approx(nll_q / n).epsilon(1e-5));
  REQUIRE(r.token_kl.size() == n);
  for (std::size_t i = 0; i < n; ++i) CHECK(r.token_kl[i] == Approx(token_kl[i]).margin(1e-5).epsilon(1e-3));

  // Perplexity of the overridden model through PerplexityOptions agrees with the divergence NLL.
  const auto p = eval::perplexity(m, windows, {.protocol = eval::PerplexityProtocol::kLlamaCpp, .overrides = &ov});
  CHECK(p.mean_nll == Approx(r.modified_mean_nll).epsilon(1e-5));
}
