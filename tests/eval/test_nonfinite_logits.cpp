// A model whose output overflows: a finite weight of 3e38 in one q_proj makes the logits NaN.
// Every kernel that searches the logits (the log-sum-exp, the first argmax) must stop with an
// error naming the problem instead of running off the row (it used to crash with SIGSEGV).
#include "support/test_data.hpp"

#include <fragile/eval/divergence.hpp>
#include <fragile/eval/perplexity.hpp>
#include <fragile/io/load_model.hpp>
#include <fragile/backend/cpu.hpp>

#include <cmath>
#include <limits>
#include <vector>

using namespace fragile;

TEST_CASE("logsumexp_rows: NaN and infinite rows are an error naming the row",
          "[eval][nonfinite]") {
  const std::size_t V = 7;
  std::vector<float> logits(3 * V, 0.5f);
  logits[1] = 2.0f;
  std::vector<float> lse(3);
  std::vector<std::int32_t> arg(3);
  backend::Ops<cpu>::logsumexp_rows(lse.data(), arg.data(), logits.data(), 3, V);
  CHECK(arg[0] == 1);
  CHECK(arg[1] == 0);
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    auto l = logits;
    l[2 * V + 3] = bad;
    CHECK_THROWS_WITH(backend::Ops<cpu>::logsumexp_rows(lse.data(), arg.data(),
                                                    l.data(), 3, V),
                      Catch::Contains("logits are not finite (row 2 of 3)"));
    l[2 * V + 3] = 0.5f;
    for (auto& x : l) x = std::numeric_limits<float>::quiet_NaN();  // all NaN: no maximum at all
    CHECK_THROWS_AS(backend::Ops<cpu>::logsumexp_rows(lse.data(), arg.data(),
                                                  l.data(), 3, V),
                    NumericError);
  }
}

TEST_CASE("eval: a weight of 3e38 gives a NumericError from perplexity and divergence, not a "
          "crash", "[eval][nonfinite]") {
  const auto ckpt = io::load_model(test::source_dir().parent_path() / "examples/models/kjv-tiny");
  const model::Transformer<cpu> m(ckpt.config, ckpt.weights);
  std::vector<data::Window> windows(2);
  for (std::size_t w = 0; w < windows.size(); ++w) {
    for (std::size_t t = 0; t < 16; ++t)
      windows[w].tokens.push_back(static_cast<data::TokenId>((7 * w + 3 * t) % 1000));
    windows[w].target_begin = 1;
    windows[w].target_end = 16;
  }
  const auto ref = eval::make_reference(m, windows, {});
  const auto& q = m.linears().front();
  std::vector<float> w(q.parameters());
  ckpt.weights.read_f32(q.name + ".weight", w);
  w[5] = 3e38f;
  auto ov = m.make_overrides();
  ov.set(q.index, std::span<const float>(w), q.out_features, q.in_features);
  CHECK_THROWS_AS(eval::divergence(m, windows, ref, &ov), NumericError);
  // Caught where it arises: the first residual stream that overflows, named.
  CHECK_THROWS_WITH(eval::divergence(m, windows, ref, &ov),
                    Catch::Contains("after the attention (self_attn) of block 0 (model.layers.0)"));
}
