// The options every study subcommand shares (model and data, quantization, run control), with
// the field's conventions and GPTQ-protocol defaults, and their conversion to library options.
// Every option is echoed into results.json (`echo`).
#pragma once

#include "cli_support.hpp"

#include <fragile/study/context.hpp>
#include <fragile/study/fragility_map.hpp>
#include <fragile/study/open_store.hpp>
#include <fragile/study/quant_setting.hpp>
#include <fragile/study/results.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <vector>

namespace fragile::cli {

struct StudyArgs {
  study::ContextOptions context;
  std::string text_format;  // empty: the named model's, else plain
  std::string protocol = "gptq";
  std::string quantizer = "rtn";
  int bits = 3;
  int group_size = 128;
  bool symmetric = false;
  std::string gptq_inputs = "fp";
  std::vector<int> candidate_bits;
  std::filesystem::path out;
  bool resume = false, quiet = false;
  int threads = 0;
  std::string gnuplot = "gnuplot";

  [[nodiscard]] bool show_progress() const { return !quiet && stderr_is_tty(); }
  [[nodiscard]] study::Progress::Sink progress() const {
    return show_progress() ? study::Progress::default_sink() : study::Progress::Sink{};
  }

  [[nodiscard]] study::ContextOptions context_options() const {
    study::ContextOptions o = context;
    if (text_format == "plain") o.text_format = study::TextFormat::kPlain;
    if (text_format == "tinystories") o.text_format = study::TextFormat::kTinyStories;
    if (text_format == "wikitext2-raw") o.text_format = study::TextFormat::kWikitext2Raw;
    o.protocol = protocol == "llamacpp" ? eval::PerplexityProtocol::kLlamaCpp
                                        : eval::PerplexityProtocol::kGptq;
    return o;
  }
  [[nodiscard]] study::QuantSetting quant_setting() const {
    study::QuantSetting q;
    q.quantizer = *study::parse_quantizer(quantizer);
    q.group_size = group_size;
    q.symmetric = symmetric;
    q.inputs = gptq_inputs == "prefix" ? sensitivity::CandidateInputs::kQuantizedPrefix
                                       : sensitivity::CandidateInputs::kFullPrecision;
    return q;
  }
  static nlohmann::json opt_json(const std::optional<std::size_t>& v) {
    return v ? nlohmann::json(*v) : nlohmann::json("default");
  }
  /// Every option that shapes the results, as given (paths as typed), for results.json's
  /// "config"; how the run was carried out (run_echo) goes to its "run" section.
  [[nodiscard]] nlohmann::json echo() const {
    return {{"model", context.model.string()},      {"tokenizer", context.tokenizer.string()},
            {"calib", context.calib.string()},      {"eval", context.eval.string()},
            {"text_format", text_format},           {"seqlen", context.seqlen},
            {"calib_windows", opt_json(context.calib_windows)},
            {"eval_tokens", opt_json(context.eval_tokens)},
            {"protocol", protocol},                 {"seed", context.seed},
            {"batch", context.batch},               {"quantizer", quantizer},
            {"bits", bits},                         {"group_size", group_size},
            {"symmetric", symmetric},               {"gptq_inputs", gptq_inputs},
            {"candidate_bits", candidate_bits}};
  }
  [[nodiscard]] nlohmann::json run_echo() const {
    return {{"out", out.string()}, {"resume", resume}, {"quiet", quiet}, {"threads", threads},
            {"gnuplot", gnuplot}};
  }
};

/// Registers the shared options on `c`.
inline void add_study_options(CLI::App* c, StudyArgs& a, bool needs_out = true) {
  c->add_option("--model", a.context.model,
                "HF model directory, llama2.c .bin, or a named model: kjv-tiny (embedded "
                "default), stories260K (shared data)");
  c->add_option("--tokenizer", a.context.tokenizer, "tokenizer (default: the one beside the model)");
  c->add_option("--calib", a.context.calib, "calibration text (default: the named model's)");
  c->add_option("--eval", a.context.eval, "evaluation text (default: the named model's)");
  c->add_option("--text-format", a.text_format, "how --calib/--eval are read")
      ->check(CLI::IsMember({"plain", "tinystories", "wikitext2-raw"}));
  c->add_option("--seqlen", a.context.seqlen, "tokens per window (0: the model's context, at most 2048)")
      ->check(CLI::Range(0, 1 << 20, "0 to 1048576"));
  c->add_option("--calib-windows", a.context.calib_windows, "calibration windows (default: 128, GPTQ's; stories260K: 32)")
      ->check(CLI::Range(1, 1 << 20, "1 to 1048576"));
  c->add_option("--eval-tokens", a.context.eval_tokens, "evaluation token budget (0: all; default all, stories260K: 32768)")
      ->check(CLI::Range(std::size_t{0}, std::size_t{1} << 40, "0 to 2^40"));
  c->add_option("--protocol", a.protocol, "perplexity protocol")
      ->check(CLI::IsMember({"gptq", "llamacpp"}));
  c->add_option("--batch", a.context.batch, "windows per forward (does not change the numbers)")
      ->check(CLI::Range(1, 4096, "1 to 4096"));
  c->add_option("--quantizer", a.quantizer, "quantizer of the candidates")
      ->check(CLI::IsMember({"rtn", "gptq", "adaround", "lwc"}));
  c->add_option("--bits", a.bits, "bit width of the oracle and the correlations")
      ->check(CLI::Range(2, 8, "2 to 8"));
  c->add_option("--group-size", a.group_size, "group size along the input (0: per output channel)")
      ->check(CLI::Range(0, 1 << 20, "0 to 1048576"));
  c->add_flag("--symmetric", a.symmetric, "symmetric grid (default: asymmetric min-max, GPTQ's)");
  c->add_option("--gptq-inputs", a.gptq_inputs,
                "inputs of data-reading quantizers: fp (the FP model) or prefix (the quantized "
                "earlier blocks, GPTQ's sequential protocol)")
      ->check(CLI::IsMember({"fp", "prefix"}));
  c->add_option("--candidate-bits", a.candidate_bits,
                "candidate widths of the sensitivity tables (default 2 3 4 8, plus those the "
                "budgets need)")
      ->check(CLI::Range(2, 8, "2 to 8"));
  c->add_option("--seed", a.context.seed, "calibration and label sampling seed");
  c->add_option("--threads", a.threads, "OpenMP threads (0: all cores)")
      ->check(CLI::Range(0, 4096, "0 to 4096"));
  auto* out = c->add_option("--out", a.out, "output directory (results, report, resumable store)");
  if (needs_out) out->required();
  c->add_flag("--resume", a.resume, "continue the run stored in --out");
  c->add_flag("--quiet", a.quiet, "no progress on stderr");
  c->add_option("--gnuplot", a.gnuplot, "gnuplot executable for the plots ('' : none)");
}

/// With paper accounting the feasible budgets are the candidate widths' range: checked before
/// any work, with the range stated.
inline void check_paper_budget(double budget, const std::vector<int>& candidate_bits) {
  require<BudgetError>(budget >= candidate_bits.front() && budget <= candidate_bits.back(),
                       "--budget {}: outside the feasible range [{}, {}] bits/weight (paper "
                       "accounting over the candidate widths)", budget, candidate_bits.front(),
                       candidate_bits.back());
}

/// A study's result store in its --out folder, fingerprinted by content and options.
inline study::ResultStore open_study_store(const StudyArgs& a, const study::Context& ctx,
                                           const nlohmann::json& numeric_options) {
  nlohmann::json fp = numeric_options;
  fp["data fingerprint"] = ctx.fingerprint();
  fp["weights"] = ctx.weights_hash();
  return study::open_store(a.out / "store.jsonl", fp);
}

}  // namespace fragile::cli
