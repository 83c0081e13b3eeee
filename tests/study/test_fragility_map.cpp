// study::Context, the fragility map and the shootout on the embedded model (small windows):
// the map's V_l and U_l against brute-force perplexities, D_l per token against the measured
// QuantizeOne KL (paper 000's second-order decomposition), resume from the store giving the
// same section, the shootout's budget rules, and the context's input errors and content
// fingerprint.
#include "support/test_data.hpp"

#include <fragile/backend/cpu.hpp>
#include <fragile/eval/perplexity.hpp>
#include <fragile/io/tokenizer/bpe_trainer.hpp>
#include <fragile/study/context.hpp>
#include <fragile/study/fragility_map.hpp>
#include <fragile/study/open_store.hpp>
#include <fragile/study/shootout.hpp>

#include <algorithm>
#include <fstream>
#include <numeric>

namespace {

using namespace fragile;

std::filesystem::path kjv() { return test::source_dir().parent_path() / "examples/models/kjv-tiny"; }

study::ContextOptions small_context() {
  study::ContextOptions o;
  o.model = kjv();
  o.calib = kjv() / "calib.txt";
  o.eval = kjv() / "eval.txt";
  o.seqlen = 64;
  o.calib_windows = 8;
  o.eval_tokens = 64 * 6;
  o.batch = 4;
  return o;
}

study::MapOptions rtn2() {
  study::MapOptions m;
  m.quant.group_size = 32;
  m.bits = 2;
  m.candidate_bits = {2, 3, 4, 8};
  m.bootstrap = 200;
  m.progress = {};
  return m;
}

eval::Reference<cpu> reference_of(const study::Context& ctx) {
  return eval::make_reference(ctx.model(), ctx.evaluation(), {.batch_size = ctx.options().batch});
}

double ppl_with(const study::Context& ctx, const std::vector<const MatrixF*>& w) {
  auto ov = ctx.model().make_overrides();
  for (std::size_t l = 0; l < w.size(); ++l)
    if (w[l]) {
      const auto& li = ctx.model().linears()[l];
      ov.set(l, std::span<const float>(w[l]->data(), static_cast<std::size_t>(w[l]->size())),
             li.out_features, li.in_features);
    }
  return eval::perplexity(ctx.model(), ctx.evaluation(), {.batch_size = 4, .overrides = &ov})
      .perplexity;
}

}  // namespace

TEST_CASE("fragility map: V_l and U_l equal brute-force perplexities, resume gives the same "
          "section", "[study][map]") {
  const study::Context ctx(small_context());
  const auto ref = reference_of(ctx);
  const auto dir = test::scratch_dir("map_resume");
  study::MapResult first;
  {
    auto store = study::open_store(dir / "store.jsonl", {{"test", 1}});
    first = study::run_map(ctx, rtn2(), &store, ref);
  }
  const std::size_t L = ctx.model().linears().size();
  REQUIRE(first.restore.rows.size() == L);
  REQUIRE(first.quantize.rows.size() == L);
  REQUIRE(first.section["layers"].size() == L);
  REQUIRE(first.section["correlations"].size() == first.metrics.size() * 2);

  // Brute force for two layers: PPL(all 2-bit) - PPL(all but l), PPL(only l) - PPL(FP).
  const auto fake = first.candidates.dequantized(first.bits_option);
  std::vector<const MatrixF*> all(L);
  for (std::size_t l = 0; l < L; ++l) all[l] = &fake[l];
  const double base = ppl_with(ctx, all), fp = ppl_with(ctx, std::vector<const MatrixF*>(L));
  // eval::divergence and eval::perplexity reduce the log-softmax in different orders: float
  // rounding, ~1e-8 of the PPL.
  CHECK(first.restore.base_ppl == Approx(base).epsilon(1e-7));
  CHECK(first.restore.fp_ppl == Approx(fp).epsilon(1e-7));
  for (std::size_t l : {std::size_t{0}, L - 1}) {
    auto but = all;
    but[l] = nullptr;
    std::vector<const MatrixF*> only(L);
    only[l] = &fake[l];
    CHECK(first.restore.rows[l].delta_ppl == Approx(base - ppl_with(ctx, but)).margin(1e-7 * base));
    CHECK(first.quantize.rows[l].delta_ppl == Approx(ppl_with(ctx, only) - fp).margin(1e-7 * base));
  }

  // A rerun on the same store computes nothing and reports the same numbers.
  auto store = study::open_store(dir / "store.jsonl", {{"test", 1}});
  const auto again = study::run_map(ctx, rtn2(), &store, ref);
  CHECK(again.restore.evaluations == 0);
  CHECK(again.quantize.evaluations == 0);
  CHECK(!again.timings.contains("metric_pass_model_labels"));  // metric scores read back
  CHECK(again.section.dump() == first.section.dump());
}

TEST_CASE("fragility map: D_l per token approximates the measured QuantizeOne KL",
          "[study][map]") {
  // Second order in dW: at 8 bits the perturbation is small and 1/2 E[(g.dy)^2] with
  // model-sampled labels should match KL(FP || only l quantized) per token.
  const study::Context ctx(small_context());
  const auto ref = reference_of(ctx);
  auto opt = rtn2();
  opt.bits = 8;
  const auto m = study::run_map(ctx, opt, nullptr, ref);
  std::vector<double> ratio;
  for (std::size_t l = 0; l < m.layers.size(); ++l)
    ratio.push_back(m.grid("D_l")[m.bits_option][l] / m.quantize.rows[l].delta_kl);
  std::sort(ratio.begin(), ratio.end());
  const double median = ratio[ratio.size() / 2];
  // Different windows (calibration vs evaluation) and a Monte-Carlo estimate: agreement to
  // within a factor of 2 is the decomposition; the unscaled (mean-loss) D_l is ~S^2 = 3969x off.
  CHECK(median > 0.5);
  CHECK(median < 2.0);
}

TEST_CASE("shootout: budget rules of every configuration", "[study][shootout]") {
  const study::Context ctx(small_context());
  const auto ref = reference_of(ctx);
  auto mo = rtn2();
  mo.candidate_bits = study::candidate_bit_widths({2, 3, 4, 8}, {2});
  const auto map = study::run_map(ctx, mo, nullptr, ref);
  study::ShootoutOptions so;
  so.budgets = {3.0};
  so.progress = {};
  const auto s = study::run_shootout(ctx, map, so, nullptr, ref);
  // uniform + 6 splits x 2 configurations + greedy + MCKP + oracle MCKP
  REQUIRE(s.rows.size() == 1 + 12 + 3);
  const auto uniform = s.rows.front();
  CHECK(uniform.allocator == "uniform");
  CHECK(std::all_of(uniform.bits.begin(), uniform.bits.end(), [](int b) { return b == 3; }));
  for (const auto& r : s.rows) {
    INFO(r.allocator << " " << r.configuration);
    if (r.configuration == "protect") {
      CHECK(r.achieved > 3.0);  // protection without demotion raises the average
      CHECK(std::count(r.bits.begin(), r.bits.end(), 4) == 6);  // round(0.2 x 28)
    } else {
      CHECK(r.achieved <= 3.0);
    }
    CHECK(std::isfinite(r.ppl));
    CHECK(r.kl >= 0);
  }
  auto row = [&](const std::string& alloc, const std::string& conf) {
    return *std::find_if(s.rows.begin(), s.rows.end(), [&](const auto& r) {
      return r.allocator == alloc && r.configuration == conf;
    });
  };
  // Fisher-gated protects the top of the Fisher ranking, inverse the bottom: disjoint sets.
  const auto fg = row("Fisher-gated", "protect"), inv = row("inverse-Fisher", "protect");
  for (std::size_t l = 0; l < fg.bits.size(); ++l) CHECK(!(fg.bits[l] == 4 && inv.bits[l] == 4));
  // The matched configuration demotes to b-1 = 2 bits.
  const auto fm = row("Fisher-gated", "matched");
  CHECK(std::count(fm.bits.begin(), fm.bits.end(), 2) > 0);
  // The uniform row's PPL is the all-3-bit model's.
  const auto fake = map.candidates.dequantized(1);
  std::vector<const MatrixF*> all(fake.size());
  for (std::size_t l = 0; l < fake.size(); ++l) all[l] = &fake[l];
  CHECK(uniform.ppl == Approx(ppl_with(ctx, all)).epsilon(1e-7));
  // Outside the feasible range: an error stating the range.
  so.budgets = {1.5};
  CHECK_THROWS_WITH(study::run_shootout(ctx, map, so, nullptr, ref),
                    Catch::Contains("outside the feasible range"));
}

TEST_CASE("context: input errors name the input and what was expected", "[study][context]") {
  auto o = small_context();
  o.model = "/nonexistent/model";
  CHECK_THROWS_WITH(study::Context(o), Catch::Contains("--model '/nonexistent/model'"));
  o = small_context();
  o.eval = "/dev/null";
  CHECK_THROWS_WITH(study::Context(o), Catch::Contains("not a regular file"));
  const auto dir = test::scratch_dir("context_errors");
  {
    std::ofstream(dir / "short.txt") << "In the beginning was the Word.";
  }
  o = small_context();
  o.eval = dir / "short.txt";
  CHECK_THROWS_WITH(study::Context(o), Catch::Contains("shorter than one window"));
  o = small_context();
  o.seqlen = 4096;
  CHECK_THROWS_WITH(study::Context(o), Catch::Contains("the model's context of 128"));
  // A tokenizer with more tokens than the model's embedding.
  io::BpeTrainerOptions bo;
  bo.vocab_size = 1100;
  io::train_bpe(io::read_text_file(kjv() / "eval.txt"), bo).save(dir / "big.json");
  o = small_context();
  o.tokenizer = dir / "big.json";
  CHECK_THROWS_WITH(study::Context(o), Catch::Contains("a tokenizer of another model"));
}

TEST_CASE("context: the fingerprint follows the content, not the path", "[study][context]") {
  const auto dir = test::scratch_dir("context_fingerprint");
  const auto text = io::read_text_file(kjv() / "eval.txt");
  {
    std::ofstream(dir / "eval.txt") << text;
  }
  auto o = small_context();
  o.eval = dir / "eval.txt";
  const std::string a = study::Context(o).fingerprint();
  CHECK(study::Context(small_context()).fingerprint() == a);  // same bytes, other path
  {
    std::ofstream(dir / "eval.txt") << "And" << text.substr(3);  // same size, other bytes
  }
  CHECK(study::Context(o).fingerprint() != a);
  o = small_context();
  o.seed = 1;  // other calibration windows
  CHECK(study::Context(o).fingerprint() != a);
}

TEST_CASE("open_store: resuming under other inputs names what changed", "[study][store]") {
  const auto dir = test::scratch_dir("open_store");
  { auto s = study::open_store(dir / "store.jsonl", {{"bits", 3}, {"data", "abc"}}); }
  CHECK_NOTHROW(study::open_store(dir / "store.jsonl", {{"bits", 3}, {"data", "abc"}}));
  CHECK_THROWS_WITH(study::open_store(dir / "store.jsonl", {{"bits", 2}, {"data", "abc"}}),
                    Catch::Contains("bits 3 -> 2") && !Catch::Contains("data"));
}
