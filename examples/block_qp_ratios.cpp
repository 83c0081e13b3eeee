// block_qp_ratios: paper 002's method, end to end (study/ratios.hpp does the work).
//   Sec. 3.1  each linear layer's input channels are ranked by their mean empirical Fisher
//             information, from one gradient pass over calibration text;
//   Sec. 3.2  a share r of each layer's channels, r from B = {0.02, 0.05, 0.1, 0.15, 0.2}, is
//             quantized at b_H bits and the rest at b_N; M = D H D^T comes from calibration-loss
//             evaluations of single and paired perturbations within each block (Eq. 7-8), and
//             delta^T M delta is minimised within the storage of a uniform r = 0.1 (Eq. 9);
//   Sec. 3.3  the hybrid quantizes the high-impact channels by AdaRound, the rest by LWC;
//   Table 4   uniform vs optimised ratios, each with plain (RTN) and hybrid quantization.
// Default model: the embedded kjv-tiny; `--model stories260K` uses the shared data.
#include <fragile/eval/divergence.hpp>
#include <fragile/study/context.hpp>
#include <fragile/study/ratios.hpp>

#include <CLI/CLI.hpp>
#include <exception>
#include <fmt/format.h>

int main(int argc, char** argv) {
  CLI::App app{"block_qp_ratios: paper 002's layer-wise high-impact ratio optimisation"};
  fragile::study::ContextOptions co;
  fragile::study::RatiosOptions ro;
  std::string settings = fragile::study::format_ratio_settings(ro.settings);
  app.add_option("--model", co.model, "kjv-tiny, stories260K, or a model path");
  app.add_option("--calib-windows", co.calib_windows, "calibration windows (Fisher importance)");
  app.add_option("--eval-tokens", co.eval_tokens, "evaluation tokens (0: the whole text)");
  app.add_option("--settings", settings, "b_N:b_H pairs, e.g. 2:3,3:4");
  app.add_option("--loss-windows", ro.loss_windows, "calibration windows of M's loss");
  CLI11_PARSE(app, argc, argv);

  try {
    ro.settings = fragile::study::parse_ratio_settings(settings);
    const fragile::study::Context ctx(co);
    const auto reference = fragile::eval::make_reference(ctx.model(), ctx.evaluation(),
                                                         {.batch_size = co.batch});
    const auto r = fragile::study::run_ratios(ctx, ro, nullptr, reference);

    fmt::print("{}: FP PPL {:.4f}; {}\n", ctx.options().model.string(),
               reference.perplexity.perplexity, r.section["loss"].get<std::string>());
    fmt::print("M: {} loss evaluations in {:.1f} s\n\n", r.loss_evaluations,
               r.loss_evaluation_seconds);
    fmt::print("{:<20} {:<14} {:<7} {:>8} {:>8} {:>10} {:>8} {:>7}\n", "setting", "ratio",
               "quant", "budget", "bits/w", "PPL", "KL", "top-1");
    for (const auto& row : r.rows)
      fmt::print("{:<20} {:<14} {:<7} {:>8.4f} {:>8.4f} {:>10.4f} {:>8.4f} {:>7.4f}\n",
                 row.setting, row.ratio, row.quantization, row.budget_bits, row.achieved_bits,
                 row.ppl, row.kl, row.top1);
  } catch (const std::exception& e) {  // fragile::Error names the input
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
