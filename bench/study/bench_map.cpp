// The fragility map as bare library calls (study::Context, the FP reference, study::run_map;
// no result store, no results.json, no report) on stories260K with the CLI's default setting
// for it (RTN 3-bit, group 128 = per output channel at its width 64; 32 calibration windows and
// 32,768 evaluation tokens of 512), else on the embedded model. It is the baseline of the CLI's
// overhead, measured interleaved with `fragile map` by ../shared/bench/ab (BENCHMARKS.md):
//   ab -n 3 'build/default/bench/bench_study --benchmark_filter=BM_map_library' \
//           'build/default/cli/fragile map --model stories260K --quiet --out $(mktemp -d)/m'
#include "support/harness.hpp"

#include <fragile/study/fragility_map.hpp>

namespace {

void BM_map_library(benchmark::State& state) {
  namespace study = fragile::study;
  const bool stories = fragile::bench::data_dir() &&
                       std::filesystem::exists(*fragile::bench::data_dir() /
                                               "models/stories260K/stories260K.bin");
  for (auto _ : state) {
    study::ContextOptions o;
    o.model = stories ? "stories260K" : (std::filesystem::path(FRAGILE_SOURCE_DIR) /
                                         "examples/models/kjv-tiny");
    if (!stories) {
      o.calib = o.model / "calib.txt";
      o.eval = o.model / "eval.txt";
    }
    const study::Context ctx(o);
    const auto ref = fragile::eval::make_reference(
        ctx.model(), ctx.evaluation(), {.batch_size = ctx.options().batch});
    study::MapOptions m;
    m.progress = {};
    const auto r = study::run_map(ctx, m, nullptr, ref);
    benchmark::DoNotOptimize(r.correlations.data());
    state.counters["oracle_evaluations"] = static_cast<double>(r.restore.evaluations +
                                                               r.quantize.evaluations);
  }
}
BENCHMARK(BM_map_library)->Iterations(1)->Unit(benchmark::kSecond);

}  // namespace
