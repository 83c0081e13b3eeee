// study::run_ratios (paper 002's high-impact-ratio study) on the embedded model with short windows
// and few candidates: four rows per setting, BlockQP within the uniform ratio's storage and at
// least as good on M, a rerun resumes every loss evaluation from the store with the same section,
// and bad options are ArgumentErrors naming the option.
#include "support/test_data.hpp"

#include <fragile/eval/divergence.hpp>
#include <fragile/study/context.hpp>
#include <fragile/study/ratios.hpp>
#include <fragile/study/result_store.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace {

using namespace fragile;

study::ContextOptions small_context() {
  const auto dir = test::source_dir().parent_path() / "examples" / "models" / "kjv-tiny";
  study::ContextOptions o;
  o.model = dir;
  o.calib = dir / "calib.txt";
  o.eval = dir / "eval.txt";
  o.text_format = study::TextFormat::kPlain;
  o.seqlen = 32;
  o.calib_windows = 4;
  o.eval_tokens = 1024;
  o.batch = 4;
  return o;
}

study::RatiosOptions small_options() {
  study::RatiosOptions o;
  o.ratios = {0.05, 0.1, 0.2};
  o.uniform_ratio = 0.1;
  o.settings = {{2, 3}, {3, 4}};
  o.loss_windows = 1;
  o.activation_windows = 2;
  o.adaround_iterations = 20;
  o.lwc_epochs = 1;
  o.hybrid_m = true;  // both Ms (the default); the shared-M mode is checked from the same store
  o.progress = {};
  return o;
}

const study::RatiosRow& row_of(const study::RatiosResult& r, const std::string& setting,
                               const std::string& ratio, const std::string& quantization) {
  const auto it = std::find_if(r.rows.begin(), r.rows.end(), [&](const study::RatiosRow& x) {
    return x.setting == setting && x.ratio == ratio && x.quantization == quantization;
  });
  REQUIRE(it != r.rows.end());
  return *it;
}

}  // namespace

TEST_CASE("ratios: uniform vs BlockQP rows, within the budget, resumable", "[ratios]") {
  const study::Context ctx(small_context());
  const auto reference = eval::make_reference(ctx.model(), ctx.evaluation(), {.batch_size = 4});
  const auto opt = small_options();
  const auto dir = test::scratch_dir("ratios_resume");
  study::ResultStore store(dir / "store.jsonl", ctx.fingerprint());
  const auto r = study::run_ratios(ctx, opt, &store, reference);

  // 1 + sum_l |B| + sum_blocks sum_{l1 < l2} |B|^2 evaluations per M; two Ms per setting.
  const std::size_t L = ctx.model().linears().size(), per_m = 1 + L * 3 + 4 * 21 * 9;
  REQUIRE(L == 28);
  CHECK(r.loss_evaluations == 2 * 2 * per_m);
  CHECK(r.loss_evaluations_computed == r.loss_evaluations);
  CHECK(r.loss_evaluations_resumed == 0);
  CHECK(r.section.at("loss_evaluations") == r.loss_evaluations);
  CHECK(r.section.at("loss_evaluation_seconds").get<double>() > 0.0);

  REQUIRE(r.rows.size() == 4 * opt.settings.size());
  REQUIRE(r.section.at("rows").size() == r.rows.size());
  for (const auto& s : opt.settings) {
    const std::string label = s.label();
    for (const char* q : {"plain", "hybrid"}) {
      INFO(label << " " << q);
      const auto& uniform = row_of(r, label, "uniform r=0.1", q);
      const auto& qp = row_of(r, label, "BlockQP", q);
      REQUIRE(uniform.ratios.size() == L);
      REQUIRE(qp.ratios.size() == L);
      for (double x : uniform.ratios) CHECK(x == 0.1);
      CHECK(uniform.achieved_bits == uniform.budget_bits);
      CHECK(qp.budget_bits == uniform.budget_bits);
      CHECK(qp.achieved_bits <= qp.budget_bits);
      CHECK(r.section.at("budget_bits_per_weight").at(label) == uniform.budget_bits);
      // BlockQP is the exact optimum of delta^T M delta, and uniform r is a feasible point.
      CHECK(uniform.m == qp.m);
      CHECK(qp.objective <= uniform.objective);
      CHECK(uniform.objective > 0.0);
      for (const auto* row : {&uniform, &qp}) {
        CHECK(std::isfinite(row->ppl));
        CHECK(row->kl > 0.0);
        CHECK(row->top1 > 0.0);
        CHECK(row->top1 <= 1.0);
      }
    }
    // More high-impact channels at b_H cost more bits than the b_N floor.
    CHECK(row_of(r, label, "uniform r=0.1", "plain").budget_bits > s.normal_bits);
  }

  // A rerun on the same store computes nothing and writes the same section.
  study::ResultStore again(dir / "store.jsonl", ctx.fingerprint());
  const auto r2 = study::run_ratios(ctx, opt, &again, reference);
  CHECK(r2.loss_evaluations_computed == 0);
  CHECK(r2.loss_evaluations_resumed == r.loss_evaluations);
  CHECK(r2.evaluations_computed == 0);
  CHECK(r2.section.dump() == r.section.dump());

  // The plain M's ratios applied with the hybrid: one M per setting, all read back.
  auto shared = opt;
  shared.hybrid_m = false;
  const auto r3 = study::run_ratios(ctx, shared, &again, reference);
  CHECK(r3.loss_evaluations == 2 * per_m);
  CHECK(r3.loss_evaluations_computed == 0);
  for (const auto& s : opt.settings) {
    const auto& plain = row_of(r3, s.label(), "BlockQP", "plain");
    const auto& hybrid = row_of(r3, s.label(), "BlockQP", "hybrid");
    CHECK(hybrid.m == "plain");
    CHECK(hybrid.ratios == plain.ratios);
    CHECK(hybrid.objective == plain.objective);
    CHECK(plain.ratios == row_of(r, s.label(), "BlockQP", "plain").ratios);
  }
}

TEST_CASE("ratios: bad options are ArgumentErrors naming the option", "[ratios]") {
  using Catch::Contains;
  const study::Context ctx(small_context());
  const auto reference = eval::make_reference(ctx.model(), ctx.evaluation(), {.batch_size = 4});
  auto run = [&](const study::RatiosOptions& o) {
    return study::run_ratios(ctx, o, nullptr, reference);
  };

  auto o = small_options();
  o.uniform_ratio = 0.15;
  CHECK_THROWS_AS(run(o), ArgumentError);
  CHECK_THROWS_WITH(run(o), Contains("--uniform-ratio 0.15") && Contains("--ratios 0.05 0.1 0.2"));

  o = small_options();
  o.settings.clear();
  CHECK_THROWS_AS(run(o), ArgumentError);
  CHECK_THROWS_WITH(run(o), Contains("--settings"));

  o = small_options();
  o.settings = {{3, 3}};
  CHECK_THROWS_AS(run(o), ArgumentError);
  CHECK_THROWS_WITH(run(o), Contains("--settings 3:3") && Contains("b_H (3) must exceed b_N (3)"));
  o.settings = {{3, 2}};
  CHECK_THROWS_WITH(run(o), Contains("--settings 3:2"));

  o = small_options();
  o.ratios = {0.1, 1.5};
  CHECK_THROWS_WITH(run(o), Contains("--ratios 1.5"));

  CHECK(study::parse_ratio_settings("2:3,3:4").size() == 2);
  CHECK(study::format_ratio_settings(study::parse_ratio_settings("2:3,3:4")) == "2:3,3:4");
  CHECK_THROWS_AS(study::parse_ratio_settings("2-3"), ArgumentError);
  CHECK_THROWS_WITH(study::parse_ratio_settings("2:3,x:4"),
                    Contains("--settings") && Contains("'x:4'"));
  CHECK_THROWS_WITH(study::parse_ratio_settings(""), Contains("--settings"));
}
