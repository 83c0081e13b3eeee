// fragility_study: paper 000's question, which per-layer score predicts which linear layers
// are fragile at b bits, as its method section states it, on any checkpoint (default: the
// embedded model; `fragility_study stories260K 3` for the shared data's).
//   1. Quantize every linear with RTN at {2, 3, 4, 8} bits (asymmetric min-max, groups of 32).
//   2. One calibration pass with labels sampled from the model (the Monte-Carlo true Fisher)
//      gives D_l, FEO, the Fisher trace and the GPTQ proxy; one with the data's labels the
//      empirical Fisher; NSDS needs no data.
//   3. The oracle: V_l = PPL(all linears at b bits) - PPL(all but l), on held-out text.
//   4. Rank correlation of every score with V_l.
#include <fragile/study/fragility_map.hpp>

#include <exception>
#include <fmt/format.h>

#include <cstdlib>

int main(int argc, char** argv) try {
  namespace study = fragile::study;
  study::ContextOptions data;
  data.model = argc > 1 ? argv[1] : "kjv-tiny";
  data.calib_windows = 64;
  data.eval_tokens = 16384;
  const study::Context ctx(data);

  study::MapOptions map;                       // 1.
  map.quant = {.quantizer = study::QuantizerKind::kRtn, .group_size = 32};
  map.bits = argc > 2 ? std::atoi(argv[2]) : 2;
  map.candidate_bits = {2, 3, 4, 8};
  const auto reference = fragile::eval::make_reference(ctx.model(), ctx.evaluation(),
                                                       {.batch_size = 8});
  const auto result = study::run_map(ctx, map, /*store=*/nullptr, reference);  // 2. and 3.

  fmt::print("{}: FP PPL {:.3f}, all {}-bit {:.3f} ({} regime)\n\n", data.model.string(),
             result.restore.fp_ppl, map.bits, result.restore.base_ppl, result.regime);
  for (const auto& c : result.correlations)    // 4.
    if (c.target == "V_l")
      fmt::print("{:<26} rho = {:+.3f}  p = {:.1e}  95% CI [{:+.2f}, {:+.2f}]\n", c.metric,
                 c.spearman.statistic, c.spearman.p_value, c.spearman_ci.lower,
                 c.spearman_ci.upper);
  return 0;
} catch (const std::exception& e) {  // fragile::Error names the input
  fmt::print(stderr, "error: {}\n", e.what());
  return 1;
}
