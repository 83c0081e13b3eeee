// eval::make_reference + eval::divergence(model, windows, reference, overrides): one forward of
// the modified model gives the same perplexity as eval::perplexity and the same KL / top-1 as
// eval::divergence (which reruns the FP forward), under both protocols, bit for bit: all three
// are the one streamed evaluation, and the runtime repeats itself exactly.
#include "support/backends.hpp"
#include "support/test_data.hpp"
#include "support/tiny_transformer.hpp"

#include <fragile/eval/divergence.hpp>
#include <fragile/eval/perplexity.hpp>

#include <cmath>
#include <vector>

namespace {

using namespace fragile;

std::vector<data::TokenId> token_stream(std::size_t n, std::size_t vocab) {
  Rng rng(11);
  std::vector<data::TokenId> s(n);
  for (auto& t : s) t = static_cast<data::TokenId>(rng.below(vocab));
  return s;
}

/// Overrides that perturb every other linear layer by a fixed pattern.
template <class B>
model::WeightOverrides perturbed(const model::Transformer<B>& m) {
  auto ov = m.make_overrides();
  for (const auto& li : m.linears()) {
    if (li.index % 2) continue;
    const auto w = m.weight(li.index);
    std::vector<float> p(w.begin(), w.end());
    for (std::size_t k = 0; k < p.size(); ++k) p[k] += (k % 3 == 0 ? 0.05f : -0.02f);
    ov.set(li.index, std::move(p), li.out_features, li.in_features);
  }
  return ov;
}

}  // namespace

TEMPLATE_TEST_CASE("eval reference: one modified forward equals perplexity() and divergence()",
          "[eval][divergence][reference]", FRAGILE_TEST_BACKENDS) {
  const auto m = test::tiny_model<TestType>({});
  const auto tokens = token_stream(200, m.config().vocab_size);
  const auto ov = perturbed(m);

  SECTION("GPTQ protocol, batches of 3") {
    const auto windows = data::gptq_eval_windows(tokens, 16);  // 12 windows
    const auto ref = eval::make_reference(m, windows, {.protocol = eval::PerplexityProtocol::kGptq,
                                                       .batch_size = 3});
    CHECK(ref.tokens == 12 * 15);
    CHECK(ref.scored.hidden.size() == ref.tokens * m.config().hidden_size);
    const auto fp = eval::perplexity(m, windows, {.batch_size = 3});
    CHECK(ref.perplexity.perplexity == fp.perplexity);
    for (std::size_t w = 0; w < windows.size(); ++w)
      CHECK(ref.perplexity.window_nll[w] == fp.window_nll[w]);

    const auto r = eval::divergence(m, windows, ref, &ov, {.keep_token_kl = true});
    const auto pp = eval::perplexity(m, windows, {.batch_size = 3, .overrides = &ov});
    const auto dv = eval::divergence(m, windows, ov, {.batch_size = 3});
    CHECK(r.perplexity.perplexity == pp.perplexity);
    CHECK(r.perplexity.tokens == pp.tokens);
    CHECK(std::abs(r.perplexity.perplexity / ref.perplexity.perplexity - 1.0) > 1e-3);  // it shows
    CHECK(r.mean_kl == dv.mean_kl);
    CHECK(r.mean_kl > 1e-4);
    CHECK(r.top1_agreement == dv.top1_agreement);
    REQUIRE(r.token_kl.size() == dv.token_kl.size());
    for (std::size_t i = 0; i < r.token_kl.size(); ++i)
      CHECK(r.token_kl[i] == dv.token_kl[i]);

    // The unmodified model against its own reference: KL 0, full agreement, FP perplexity.
    const auto same = eval::divergence(m, windows, ref, nullptr);
    CHECK(same.mean_kl == 0.0);
    CHECK(same.top1_agreement == 1.0);
    CHECK(same.perplexity.perplexity == ref.perplexity.perplexity);

    // PPL only: no KL.
    const auto ppl_only = eval::divergence(m, windows, ref, &ov, {.divergence = false});
    CHECK(std::isnan(ppl_only.mean_kl));
    CHECK(ppl_only.perplexity.perplexity == r.perplexity.perplexity);
  }
  SECTION("llama.cpp protocol") {
    const auto windows = data::llamacpp_eval_windows(tokens, 16, 1);
    const auto ref = eval::make_reference(
        m, windows, {.protocol = eval::PerplexityProtocol::kLlamaCpp, .batch_size = 2});
    const auto r = eval::divergence(m, windows, ref, &ov);
    const auto pp = eval::perplexity(
        m, windows, {.protocol = eval::PerplexityProtocol::kLlamaCpp, .batch_size = 2, .overrides = &ov});
    const auto dv = eval::divergence(m, windows, ov, {.batch_size = 2});
    CHECK(r.perplexity.tokens == pp.tokens);
    CHECK(r.perplexity.perplexity == pp.perplexity);
    CHECK(r.mean_kl == dv.mean_kl);
    CHECK(r.top1_agreement == dv.top1_agreement);
  }
  SECTION("a reference of other windows is refused") {
    const auto windows = data::gptq_eval_windows(tokens, 16);
    const auto ref = eval::make_reference(m, windows);
    const auto fewer = std::span<const data::Window>(windows).first(5);
    CHECK_THROWS_AS(eval::divergence(m, fewer, ref, &ov), ArgumentError);
    auto shifted = windows;
    shifted[4].tokens[7] = (shifted[4].tokens[7] + 1) % 32;
    CHECK_THROWS_WITH(eval::divergence(m, shifted, ref, &ov),
                      Catch::Contains("the reference's is"));
    CHECK_THROWS_AS(eval::make_reference(m, std::span<const data::Window>{}), ArgumentError);
  }
}
