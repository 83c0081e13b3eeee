// `fragile quantize`: carries out a plan (export/plan.hpp) and writes what deployment tools
// load, all into one --out folder that appears only when every export succeeded:
//   fake-quant/      the HF checkpoint with dequantized linears (transformers, fragile eval)
//   gptq/            the packed GPTQ checkpoint, mixed widths as GPTQModel `dynamic` overrides
//   llama.cpp/       tensor-types.txt, quantize-args.txt, recipe.json for llama-quantize
//   imatrix.gguf     llama.cpp's importance matrix from the calibration windows
//                    (+ imatrix.windows.json, the windows' token ids)
//   results.json     how it was made, and the deployed weights' PPL, KL and top-1
#pragma once

#include "eval_command.hpp"
#include "study_args.hpp"

#include <fragile/export/fake_quant_checkpoint.hpp>
#include <fragile/export/gptq_checkpoint.hpp>
#include <fragile/export/importance_matrix.hpp>
#include <fragile/export/llama_cpp_recipe.hpp>
#include <fragile/export/plan.hpp>
#include <fragile/export/quantize_plan.hpp>
#include <fragile/export/staged_directory.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace fragile::cli {

inline const std::vector<std::string>& quantize_formats() {
  static const std::vector<std::string> f = {"fake-quant", "gptq", "llama-cpp", "imatrix"};
  return f;
}

struct QuantizeArgs {
  StudyArgs study;
  std::filesystem::path plan;
  std::vector<std::string> formats = quantize_formats();
  bool force = false, skip_eval = false;
  std::string gptq_format = "gptq";
  std::string ggml_types;
};

inline int run_quantize(const QuantizeArgs& a) {
  set_threads(a.study.threads);
  io::require_regular_file(a.plan, "--plan");
  const auto wants = [&](const char* f) {
    return std::find(a.formats.begin(), a.formats.end(), f) != a.formats.end();
  };
  // Everything that can be checked before the work is: the target, the table, the plan.
  exporting::StagedDirectory staged(a.study.out, a.force, "--out");
  const auto table = [&] {
    try {
      return exporting::GgmlTypeTable::parse(a.ggml_types);
    } catch (const ConfigError& e) {
      raise<ArgumentError>("--ggml-types: {}", e.what());
    }
  }();
  const auto plan = exporting::Plan::read(a.plan);
  const study::Context ctx(a.study.context_options());
  const auto& model = ctx.model();
  const auto layers = plan.for_model(model, a.plan.string(), ctx.weights_hash());
  const auto setting = exporting::plan_quant_setting(plan, a.plan.string(), a.study.quant_setting());
  const auto format = a.gptq_format == "gptq_v2" ? exporting::GptqFormat::kV2
                                                 : exporting::GptqFormat::kV1;
  if (wants("gptq")) exporting::require_gptq_source(ctx.options().model);  // before quantizing

  const bool quiet = a.study.quiet;
  auto say = [&](const std::string& s) {
    if (!quiet) fmt::print("{}\n", s);
  };
  nlohmann::json exports = nlohmann::json::object();
  std::vector<quant::QuantizedWeight> weights;
  if (wants("fake-quant") || wants("gptq") || !a.skip_eval)
    weights = exporting::quantize_plan(model, layers, setting, ctx.calibration(),
                                       {.batch_size = ctx.options().batch,
                                        .progress = a.study.progress()});
  const auto meta = nlohmann::json{{"quantizer", {fmt::format("fragile:{}", kVersion)}},
                                   {"fragile_plan", a.plan.filename().string()}};
  if (wants("fake-quant")) {
    const auto dir = staged.path() / "fake-quant";
    std::filesystem::create_directories(dir);
    const auto r = exporting::write_fake_quant_checkpoint(dir, ctx.checkpoint(),
                                                          ctx.options().model, model.linears(),
                                                          weights);
    exports["fake-quant"] = {{"path", "fake-quant"}, {"dtype", std::string(dtype_name(r.dtype))},
                             {"dtype_reason", r.dtype_reason}, {"tensor_bytes", r.tensor_bytes},
                             {"files", r.files}};
    say(fmt::format("fake-quant/  {} tensors ({}), {:.1f} MB", dtype_name(r.dtype),
                    r.dtype_reason, r.tensor_bytes / 1e6));
  }
  if (wants("gptq")) {
    const auto dir = staged.path() / "gptq";
    std::filesystem::create_directories(dir);
    const auto r = exporting::write_gptq_checkpoint(dir, ctx.checkpoint(), ctx.options().model,
                                                    model.linears(), weights, format, meta);
    exports["gptq"] = {{"path", "gptq"}, {"quantization_config", r.quantization_config},
                       {"tensor_bytes", r.tensor_bytes}};
    say(fmt::format("gptq/        {} {}-bit g{} base, {} dynamic overrides, {:.1f} MB",
                    exporting::gptq_format_name(format),
                    r.quantization_config["bits"].get<int>(),
                    r.quantization_config["group_size"].get<int>(), r.overrides,
                    r.tensor_bytes / 1e6));
  }
  if (wants("llama-cpp")) {
    const auto recipe = exporting::make_llama_cpp_recipe(model.linears(), layers, table);
    exporting::write_llama_cpp_recipe(staged.path() / "llama.cpp", recipe);
    exports["llama-cpp"] = {{"path", "llama.cpp"},
                            {"average_bits_per_weight", recipe.average_bits_per_weight},
                            {"fallbacks", recipe.warnings()}};
    say(fmt::format("llama.cpp/   {} tensor-type overrides, {:.4f} bits/weight as llama.cpp "
                    "counts them", recipe.entries.size(), recipe.average_bits_per_weight));
    if (const auto w = recipe.warnings(); !w.empty())
      say(fmt::format("  warning: {} of {} tensors will fall back to another type in "
                      "llama-quantize (see recipe.json), e.g. {}", w.size(),
                      recipe.entries.size(), w.front()));
  }
  if (wants("imatrix")) {
    const auto im = exporting::collect_importance_matrix(model, ctx.calibration(),
                                                         ctx.options().batch);
    exporting::write_imatrix_gguf(staged.path() / "imatrix.gguf", im,
                                  {ctx.options().calib.filename().string()},
                                  static_cast<std::uint32_t>(ctx.options().seqlen));
    nlohmann::json windows = nlohmann::json::array();
    for (const auto& w : ctx.calibration()) windows.push_back(w.tokens);
    io::write_atomically(staged.path() / "imatrix.windows.json",
                         std::string_view(nlohmann::json{{"seq_len", ctx.options().seqlen},
                                                         {"windows", windows}}
                                              .dump() + "\n"));
    exports["imatrix"] = {{"path", "imatrix.gguf"}, {"windows", ctx.calibration().size()},
                          {"chunk_size", ctx.options().seqlen}};
    say(fmt::format("imatrix.gguf {} linears, {} windows of {} tokens", model.linears().size(),
                    ctx.calibration().size(), ctx.options().seqlen));
  }

  nlohmann::json what = {{"plan", a.plan.string()}, {"budget", plan.budget}};
  if (!a.skip_eval) {
    std::vector<MatrixF> w;
    w.reserve(weights.size());
    for (const auto& q : weights) w.push_back(q.dequantize());
    evaluate_weights(ctx, w, what);
    if (!quiet) print_evaluation(what);
  }
  study::ResultsDocument doc;
  doc.command = "quantize";
  doc.config = a.study.echo();
  doc.config["plan"] = a.plan.string();
  doc.config["formats"] = a.formats;
  doc.config["gptq_format"] = a.gptq_format;
  doc.config["ggml_types"] = a.ggml_types;
  doc.sections["exports"] = exports;
  doc.sections["evaluation"] = what;
  doc.run["options"] = a.study.run_echo();
  doc.run["options"]["force"] = a.force;
  study::write_results(staged.path(), doc.to_json(ctx.describe()));
  staged.commit();
  say(fmt::format("wrote {}", staged.target().string()));
  return 0;
}

inline void add_quantize_command(CLI::App& app, std::function<int()>& action) {
  auto a = std::make_shared<QuantizeArgs>();
  auto* c = app.add_subcommand("quantize", "carry out a plan: fake-quant and packed GPTQ "
                                           "checkpoints, a llama.cpp recipe, an importance matrix");
  add_study_options(c, a->study);
  c->add_option("--plan", a->plan, "a plan written by fragile allocate")->required();
  c->add_option("--format", a->formats, "what to write (default: all)")
      ->check(CLI::IsMember(quantize_formats()));
  c->add_flag("--force", a->force, "replace an existing --out folder");
  c->add_flag("--skip-eval", a->skip_eval, "do not evaluate the quantized model");
  c->add_option("--gptq-format", a->gptq_format,
                "gptq (v1, zero points minus one: vLLM, exllamav2, transformers; GPTQModel for "
                "symmetric grids) or gptq_v2 (GPTQModel)")
      ->check(CLI::IsMember({"gptq", "gptq_v2"}));
  c->add_option("--ggml-types", a->ggml_types,
                "bits to llama.cpp types, e.g. 2=iq2_xs,3=q3_K (default 2=q2_K 3=q3_K 4=q4_K "
                "5=q5_K 6=q6_K 7,8=q8_0)");
  c->callback([a, &action] { action = [a] { return run_quantize(*a); }; });
}

}  // namespace fragile::cli
