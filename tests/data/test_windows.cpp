// Evaluation and calibration windows: hand-checkable counts and indices for the GPTQ and
// llama.cpp protocols (indices as in llama.cpp's tools/perplexity/perplexity.cpp), seeded
// sampling (deterministic per seed, seeds differ, offsets in GPTQ's randint range), bad input.
#include "support/test_data.hpp"

#include <fragile/data/windows.hpp>

#include <numeric>
#include <set>

using fragile::ArgumentError;
using namespace fragile::data;

namespace {

std::vector<TokenId> iota_tokens(std::size_t n, TokenId start = 0) {
  std::vector<TokenId> t(n);
  std::iota(t.begin(), t.end(), start);
  return t;
}

template <class F>
std::string argument_error(F&& f) {
  try {
    f();
  } catch (const ArgumentError& e) {
    return e.what();
  }
  FAIL("expected an ArgumentError");
  return {};
}

}  // namespace

TEST_CASE("windows: GPTQ protocol cuts non-overlapping windows and drops the tail", "[windows]") {
  const auto tokens = iota_tokens(95);
  const auto w = gptq_eval_windows(tokens, 10);
  REQUIRE(w.size() == 9);  // 95 / 10, the last 5 tokens dropped
  for (std::size_t i = 0; i < w.size(); ++i) {
    CHECK(w[i].offset == i * 10);
    CHECK(w[i].size() == 10);
    CHECK(w[i].tokens.front() == static_cast<TokenId>(i * 10));
    CHECK(w[i].tokens.back() == static_cast<TokenId>(i * 10 + 9));
    CHECK(w[i].target_begin == 1);
    CHECK(w[i].target_end == 10);
    CHECK(w[i].num_targets() == 9);
    CHECK(w[i].targets().front() == static_cast<TokenId>(i * 10 + 1));
  }
  CHECK(count_targets(w) == 81);
  CHECK(gptq_eval_windows(iota_tokens(100), 10).size() == 10);
  CHECK(gptq_eval_windows(iota_tokens(10), 10).size() == 1);
  // Token budget: whole windows within it; 0 = all.
  CHECK(gptq_eval_windows(tokens, 10, 35).size() == 3);
  CHECK(gptq_eval_windows(tokens, 10, 10).size() == 1);
  CHECK(gptq_eval_windows(tokens, 10, 1000).size() == 9);
  CHECK(gptq_eval_windows(tokens, 10, 0).size() == 9);
}

TEST_CASE("windows: llama.cpp protocol scores the second half and puts BOS first", "[windows]") {
  const auto tokens = iota_tokens(100, 1000);
  const TokenId bos = 1;
  const auto w = llamacpp_eval_windows(tokens, 16, bos);
  REQUIRE(w.size() == 6);  // n_chunk = 100 / 16
  for (std::size_t i = 0; i < w.size(); ++i) {
    CHECK(w[i].offset == i * 16);
    CHECK(w[i].tokens.front() == bos);
    CHECK(w[i].tokens[1] == static_cast<TokenId>(1000 + i * 16 + 1));
    CHECK(w[i].tokens.back() == static_cast<TokenId>(1000 + i * 16 + 15));
    // first = n_ctx/2 = 8: logits 8..14 scored against tokens 9..15, n_ctx - 1 - first = 7.
    CHECK(w[i].target_begin == 9);
    CHECK(w[i].target_end == 16);
    CHECK(w[i].num_targets() == 7);
    CHECK(w[i].targets().front() == static_cast<TokenId>(1000 + i * 16 + 9));
  }
  CHECK(count_targets(w) == 42);

  const auto no_bos = llamacpp_eval_windows(tokens, 16, std::nullopt);
  CHECK(no_bos[2].tokens.front() == 1032);
  const auto odd = llamacpp_eval_windows(tokens, 17, bos);
  CHECK(odd.size() == 5);
  CHECK(odd[0].target_begin == 9);  // first = 17/2 = 8
  CHECK(odd[0].num_targets() == 8);  // 17 - 1 - 8
  CHECK(llamacpp_eval_windows(tokens, 16, bos, 40).size() == 2);
  CHECK(llamacpp_eval_windows(iota_tokens(32), 16, bos).size() == 2);  // exactly 2*n_ctx
}

TEST_CASE("windows: calibration sampling is seeded and stays in GPTQ's range", "[windows]") {
  const auto tokens = iota_tokens(64);
  const auto a = sample_calibration_windows(tokens, 128, 60, 7);
  const auto b = sample_calibration_windows(tokens, 128, 60, 7);
  const auto c = sample_calibration_windows(tokens, 128, 60, 8);
  REQUIRE(a.size() == 128);
  std::vector<std::size_t> oa, ob, oc;
  std::set<std::size_t> seen;
  for (std::size_t i = 0; i < a.size(); ++i) {
    oa.push_back(a[i].offset);
    ob.push_back(b[i].offset);
    oc.push_back(c[i].offset);
    seen.insert(a[i].offset);
    // randint(0, N - seqlen - 1): offsets 0..3 of 64 - 60 = 4 possible.
    CHECK(a[i].offset <= 3);
    CHECK(a[i].size() == 60);
    CHECK(a[i].tokens.front() == static_cast<TokenId>(a[i].offset));
    CHECK(a[i].tokens.back() == static_cast<TokenId>(a[i].offset + 59));
    CHECK(a[i].target_begin == 1);
    CHECK(a[i].target_end == 60);
  }
  CHECK(oa == ob);
  CHECK(oa != oc);
  CHECK(seen == std::set<std::size_t>{0, 1, 2, 3});

  // One more token than seqlen leaves a single offset.
  for (const auto& w : sample_calibration_windows(iota_tokens(11), 5, 10, 3)) CHECK(w.offset == 0);
  // A long stream: different seeds give different windows, same seed the same.
  const auto long_tokens = iota_tokens(100000);
  const auto x = sample_calibration_windows(long_tokens, 16, 512, 1);
  const auto y = sample_calibration_windows(long_tokens, 16, 512, 2);
  std::size_t same = 0;
  for (std::size_t i = 0; i < x.size(); ++i) same += x[i].offset == y[i].offset;
  CHECK(same < 2);
  // Budget: at most floor(budget / seqlen) windows.
  CHECK(sample_calibration_windows(long_tokens, 16, 512, 1, 2048).size() == 4);
  CHECK(sample_calibration_windows(long_tokens, 16, 512, 1, 1 << 20).size() == 16);
  CHECK(sample_calibration_windows(long_tokens, 16, 512, 1, 2048)[3].offset == x[3].offset);
}

TEST_CASE("windows: document sampler draws only documents longer than seqlen", "[windows]") {
  const std::vector<std::vector<TokenId>> docs = {iota_tokens(3, 0), iota_tokens(50, 100),
                                                  iota_tokens(10, 200), iota_tokens(40, 300)};
  const auto w = sample_calibration_windows(std::span<const std::vector<TokenId>>(docs), 200, 10, 5);
  REQUIRE(w.size() == 200);
  std::set<std::size_t> used;
  for (const auto& x : w) {
    used.insert(x.document);
    const auto& d = docs[x.document];
    CHECK(d.size() > 10);
    CHECK(x.offset + 10 < d.size());  // randint(0, len - seqlen - 1)
    CHECK(x.tokens.front() == d[x.offset]);
    CHECK(x.tokens.back() == d[x.offset + 9]);
  }
  CHECK(used == std::set<std::size_t>{1, 3});
  const auto again = sample_calibration_windows(std::span<const std::vector<TokenId>>(docs), 200, 10, 5);
  for (std::size_t i = 0; i < w.size(); ++i) CHECK(w[i].tokens == again[i].tokens);
  CHECK_THAT(argument_error([&] {
               (void)sample_calibration_windows(std::span<const std::vector<TokenId>>(docs), 1, 50, 5);
             }),
             Catch::Contains("none of 4 documents") && Catch::Contains("longest: 50"));
}

TEST_CASE("windows: bad arguments name the numbers", "[windows][bad]") {
  const auto t = iota_tokens(100);
  CHECK_THAT(argument_error([&] { (void)gptq_eval_windows(t, 0); }), Catch::Contains("got 0"));
  CHECK_THAT(argument_error([&] { (void)gptq_eval_windows(iota_tokens(9), 10); }),
             Catch::Contains("9 tokens") && Catch::Contains("window of 10"));
  CHECK_THAT(argument_error([&] { (void)gptq_eval_windows(t, 10, 9); }),
             Catch::Contains("budget 9") && Catch::Contains("10 tokens"));
  CHECK_THAT(argument_error([&] { (void)llamacpp_eval_windows(t, 0, 1); }), Catch::Contains("got 0"));
  CHECK_THAT(argument_error([&] { (void)llamacpp_eval_windows(iota_tokens(31), 16, 1); }),
             Catch::Contains("2*n_ctx = 32") && Catch::Contains("got 31"));
  CHECK_THAT(argument_error([&] { (void)llamacpp_eval_windows(t, 16, 1, 8); }),
             Catch::Contains("budget 8"));
  CHECK_THAT(argument_error([&] { (void)sample_calibration_windows(t, 4, 0, 1); }),
             Catch::Contains("got 0"));
  CHECK_THAT(argument_error([&] { (void)sample_calibration_windows(t, 0, 10, 1); }),
             Catch::Contains("must be positive"));
  CHECK_THAT(argument_error([&] { (void)sample_calibration_windows(iota_tokens(10), 1, 10, 1); }),
             Catch::Contains("10 tokens") && Catch::Contains("seqlen = 10"));
  CHECK_THAT(argument_error([&] { (void)sample_calibration_windows(t, 4, 10, 1, 5); }),
             Catch::Contains("budget 5"));
}
