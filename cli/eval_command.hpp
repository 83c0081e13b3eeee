// `fragile eval`: PPL, KL to FP and top-1 agreement of a plan (--plan: each layer quantized as
// the plan says, with f16 scales as deployed) or of a quantized checkpoint (--checkpoint: its
// linear weights evaluated in place of the FP model's; every other tensor must equal the FP
// model's).
#pragma once

#include "study_args.hpp"

#include <fragile/eval/divergence.hpp>
#include <fragile/export/plan.hpp>
#include <fragile/export/quantize_plan.hpp>
#include <fragile/study/fragility_map.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <functional>
#include <map>
#include <memory>
#include <tuple>

namespace fragile::cli {

struct EvalArgs {
  StudyArgs study;
  std::filesystem::path plan, checkpoint;
};

/// Q(W) of every linear as the plan says, in its deployed form (exporting::quantize_plan: what
/// `fragile quantize` writes).
inline std::vector<MatrixF> plan_weights(const study::Context& ctx, const exporting::Plan& plan,
                                         const std::string& source, const StudyArgs& a) {
  const auto layers = plan.for_model(ctx.model(), source, ctx.weights_hash());
  const auto q = exporting::quantize_plan(
      ctx.model(), layers, exporting::plan_quant_setting(plan, source, a.quant_setting()),
      ctx.calibration(), {.batch_size = ctx.options().batch, .progress = a.progress()});
  std::vector<MatrixF> out;
  out.reserve(q.size());
  for (const auto& w : q) out.push_back(w.dequantize());
  return out;
}

/// The linear weights of a quantized checkpoint, after checking that it is the FP model
/// otherwise (same shapes, identical non-linear tensors).
inline std::vector<MatrixF> checkpoint_weights(const study::Context& ctx,
                                               const std::filesystem::path& path) {
  const auto q = io::load_model(path);
  const auto& fp = ctx.checkpoint();
  std::map<std::string, std::size_t> linear;
  for (const auto& li : ctx.model().linears()) linear[li.name + ".weight"] = li.index;
  std::vector<MatrixF> out(linear.size());
  for (const auto& name : fp.weights.names()) {
    require<ConfigError>(q.weights.contains(name), "--checkpoint '{}': no tensor '{}'",
                         path.string(), name);
    require<ShapeError>(q.weights.info(name).shape == fp.weights.info(name).shape,
                        "--checkpoint '{}': tensor '{}' is {}, the model's is {}", path.string(),
                        name, io::shape_string(q.weights.info(name).shape),
                        io::shape_string(fp.weights.info(name).shape));
    const auto& info = fp.weights.info(name);
    std::size_t n = 1;
    for (auto d : info.shape) n *= d;
    std::vector<float> a(n), b(n);  // read_f32 rejects non-finite values, naming the tensor
    fp.weights.read_f32(name, a);
    q.weights.read_f32(name, b);
    if (auto it = linear.find(name); it != linear.end()) {
      const auto& li = ctx.model().linears()[it->second];
      out[it->second] = Eigen::Map<const MatrixF>(b.data(), static_cast<Eigen::Index>(li.out_features),
                                                  static_cast<Eigen::Index>(li.in_features));
    } else {
      require<ConfigError>(a == b, "--checkpoint '{}': tensor '{}' differs from the FP model's "
                           "(only linear layers may be quantized)", path.string(), name);
    }
  }
  return out;
}

/// PPL, KL and top-1 of `w` (every linear's weight) against the FP model, into `what`.
inline void evaluate_weights(const study::Context& ctx, const std::vector<MatrixF>& w,
                             nlohmann::json& what) {
  const auto& model = ctx.model();
  const auto ref = eval::make_reference(model, ctx.evaluation(),
                                        {.protocol = ctx.options().protocol,
                                         .batch_size = ctx.options().batch});
  auto ov = model.make_overrides();
  for (const auto& li : model.linears())
    ov.set(li.index, std::span<const float>(w[li.index].data(), static_cast<std::size_t>(w[li.index].size())),
           li.out_features, li.in_features);
  const auto d = eval::divergence(model, ctx.evaluation(), ref, &ov);
  what["fp_ppl"] = ref.perplexity.perplexity;
  what["ppl"] = d.perplexity.perplexity;
  what["kl"] = d.mean_kl;
  what["top1"] = d.top1_agreement;
  what["tokens"] = d.perplexity.tokens;
}

inline void print_evaluation(const nlohmann::json& what) {
  fmt::print("FP PPL {:.4f} | quantized PPL {:.4f} | KL {:.5f} | top-1 {:.4f} ({} tokens)\n",
             what["fp_ppl"].get<double>(), what["ppl"].get<double>(), what["kl"].get<double>(),
             what["top1"].get<double>(), what["tokens"].get<std::size_t>());
}

inline int run_eval(const EvalArgs& a) {
  require<ArgumentError>(a.plan.empty() != a.checkpoint.empty(),
                         "fragile eval: give exactly one of --plan FILE or --checkpoint DIR");
  set_threads(a.study.threads);
  if (!a.study.out.empty()) prepare_out_dir(a.study.out, true);
  if (!a.plan.empty()) io::require_regular_file(a.plan, "--plan");
  const study::Context ctx(a.study.context_options());
  std::vector<MatrixF> w;
  nlohmann::json what;
  if (!a.plan.empty()) {
    const auto plan = exporting::Plan::read(a.plan);
    w = plan_weights(ctx, plan, a.plan.string(), a.study);
    what = {{"plan", a.plan.string()}, {"budget", plan.budget}};
  } else {
    w = checkpoint_weights(ctx, a.checkpoint);
    what = {{"checkpoint", a.checkpoint.string()}};
  }
  evaluate_weights(ctx, w, what);
  print_evaluation(what);
  if (!a.study.out.empty()) {
    study::ResultsDocument doc;
    doc.command = "eval";
    doc.config = a.study.echo();
    doc.config["plan"] = a.plan.string();
    doc.config["checkpoint"] = a.checkpoint.string();
    doc.sections["evaluation"] = what;
    doc.run["options"] = a.study.run_echo();
    study::write_results(a.study.out, doc.to_json(ctx.describe()));
  }
  return 0;
}

inline void add_eval_command(CLI::App& app, std::function<int()>& action) {
  auto a = std::make_shared<EvalArgs>();
  auto* c = app.add_subcommand("eval", "PPL, KL and top-1 of a plan or a quantized checkpoint "
                                       "against the FP model");
  add_study_options(c, a->study, /*needs_out=*/false);
  c->add_option("--plan", a->plan, "a plan written by fragile allocate");
  c->add_option("--checkpoint", a->checkpoint, "a fake-quantized checkpoint of --model");
  c->callback([a, &action] { action = [a] { return run_eval(*a); }; });
}

}  // namespace fragile::cli
