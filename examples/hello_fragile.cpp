// hello_fragile: the policy API in one screen. Pick a quantizer, a metric and an allocator;
// fragile does the rest: candidates at every width, one calibration pass, a bit assignment at
// a 3-bit average budget, and its perplexity against the full-precision model.
#include <fragile/fragile.hpp>

#include <exception>
#include <fmt/format.h>

int main() try {
  using namespace fragile;
  const study::Context ctx({.model = "kjv-tiny", .calib_windows = 32, .eval_tokens = 8192});
  const auto& model = ctx.model();

  const int widths[] = {2, 3, 4};
  const auto candidates = sensitivity::quantize_candidates(
      model, quant::Rtn{}, sensitivity::bit_options(widths, {.group_size = 32}));   // quantizer
  const auto pass = sensitivity::metric_pass(model, ctx.calibration(), candidates);
  const auto table = pass.table<sensitivity::Visibility>();                          // metric
  const auto plan = alloc::MCKP{}.allocate(table, alloc::Budget::average(3.5));     // allocator

  auto quantized = model.make_overrides();
  std::vector<MatrixF> w;
  for (std::size_t l = 0; l < plan.option.size(); ++l) w.push_back(candidates.at(l, plan.option[l]).dequantize());
  for (const auto& li : model.linears())
    quantized.set(li.index, {w[li.index].data(), static_cast<std::size_t>(w[li.index].size())},
                  li.out_features, li.in_features);
  const auto fp = eval::perplexity(model, ctx.evaluation(), {.batch_size = 8});
  const auto q = eval::perplexity(model, ctx.evaluation(), {.batch_size = 8, .overrides = &quantized});
  fmt::print("{:.3f} bits/weight: PPL {:.3f} (FP {:.3f})\n", plan.achieved_bits_per_weight,
             q.perplexity, fp.perplexity);
} catch (const std::exception& e) {  // fragile::Error names the input
  fmt::print(stderr, "error: {}\n", e.what());
  return 1;
}
