// `fragile ratios`: paper 002's high-impact-ratio study (study/ratios.hpp): uniform vs BlockQP
// ratios of high-impact input channels, each quantized plain (RTN) and hybrid (AdaRound + LWC),
// written as results.json and the report in --out. A killed run continues with --resume.
#pragma once

#include "study_args.hpp"

#include <fragile/backend/cpu.hpp>
#include <fragile/study/ratios.hpp>
#include <fragile/study/report.hpp>
#include <fragile/study/results.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace fragile::cli {

struct RatiosArgs {
  StudyArgs study;
  study::RatiosOptions defaults;
  std::vector<double> ratios = defaults.ratios;
  double uniform_ratio = defaults.uniform_ratio;
  std::string settings = study::format_ratio_settings(defaults.settings);
  std::size_t loss_windows = defaults.loss_windows;
  std::size_t activation_windows = defaults.activation_windows;
  int adaround_iterations = defaults.adaround_iterations;
  int lwc_epochs = defaults.lwc_epochs;
  std::string m_from = defaults.hybrid_m ? "each" : "plain";

  [[nodiscard]] study::RatiosOptions options() const {
    study::RatiosOptions o;
    o.ratios = ratios;
    o.uniform_ratio = uniform_ratio;
    o.settings = study::parse_ratio_settings(settings);
    o.group_size = study.group_size;
    o.loss_windows = loss_windows;
    o.activation_windows = activation_windows;
    o.adaround_iterations = adaround_iterations;
    o.lwc_epochs = lwc_epochs;
    o.hybrid_m = m_from == "each";
    o.progress = study.progress();
    return o;
  }
  /// Every option as given; the shared options this study does not read are left out.
  [[nodiscard]] nlohmann::json echo() const {
    auto j = study.echo();
    for (const char* k : {"quantizer", "bits", "symmetric", "gptq_inputs", "candidate_bits"})
      j.erase(k);
    j["ratios"] = ratios;
    j["uniform_ratio"] = uniform_ratio;
    j["settings"] = settings;
    j["loss_windows"] = loss_windows;
    j["activation_windows"] = activation_windows;
    j["adaround_iterations"] = adaround_iterations;
    j["lwc_epochs"] = lwc_epochs;
    j["m_from"] = m_from;
    return j;
  }
};

inline void print_ratios_table(const study::RatiosResult& r) {
  fmt::print("\n{:<20} {:<14} {:<7} {:>8} {:>8} {:>10} {:>8} {:>7}\n", "setting", "ratio",
             "quant", "budget", "bits", "PPL", "KL", "top-1");
  for (const auto& row : r.rows)
    fmt::print("{:<20} {:<14} {:<7} {:>8.4f} {:>8.4f} {:>10.4f} {:>8.4f} {:>7.4f}\n", row.setting,
               row.ratio, row.quantization, row.budget_bits, row.achieved_bits, row.ppl, row.kl,
               row.top1);
  fmt::print("M: {} loss evaluations ({} computed, {} resumed), {:.1f} s of compute\n",
             r.loss_evaluations, r.loss_evaluations_computed, r.loss_evaluations_resumed,
             r.loss_evaluation_seconds);
}

inline void add_ratios_command(CLI::App& app, std::function<int()>& action) {
  auto a = std::make_shared<RatiosArgs>();
  auto* c = app.add_subcommand("ratios", "high-impact ratio study (paper 002): uniform vs "
                                         "BlockQP ratios, plain and hybrid quantization");
  add_study_options(c, a->study);
  c->add_option("--ratios", a->ratios, "candidate shares of high-impact input channels")
      ->check(CLI::Range(0.0, 1.0, "0 to 1"));
  c->add_option("--uniform-ratio", a->uniform_ratio,
                "the fixed-ratio reference (one of --ratios); its storage is the budget");
  c->add_option("--settings", a->settings, "b_N:b_H bit settings, comma-separated (e.g. 2:3,3:4)");
  c->add_option("--loss-windows", a->loss_windows,
                "first calibration windows of M's loss evaluations (0: all)")
      ->check(CLI::Range(0, 1 << 20, "0 to 1048576"));
  c->add_option("--activation-windows", a->activation_windows,
                "first calibration windows AdaRound and LWC read (0: all)")
      ->check(CLI::Range(0, 1 << 20, "0 to 1048576"));
  c->add_option("--adaround-iterations", a->adaround_iterations, "AdaRound steps per part")
      ->check(CLI::Range(0, 1000000, "0 to 1000000"));
  c->add_option("--lwc-epochs", a->lwc_epochs, "LWC epochs per part")
      ->check(CLI::Range(0, 10000, "0 to 10000"));
  c->add_option("--m-from", a->m_from,
                "each: the hybrid rows get their own M; plain: the plain split's M and "
                "ratios, applied with the hybrid (half the loss evaluations)")
      ->check(CLI::IsMember({"each", "plain"}));
  c->callback([a, c, &action] {
    action = [a, c] {
      using Clock = std::chrono::steady_clock;
      const auto start = Clock::now();
      // The bit widths come from --settings and the quantizers are fixed by the method.
      for (const char* o : {"--quantizer", "--bits", "--candidate-bits", "--gptq-inputs",
                            "--symmetric"})
        require<ArgumentError>(c->get_option(o)->count() == 0,
                               "{}: not an option of `fragile ratios` (bit widths come from "
                               "--settings b_N:b_H; the quantizers are RTN, and AdaRound + LWC "
                               "for the hybrid)", o);
      const auto ro = a->options();
      study::check_ratios_options(ro);
      set_threads(a->study.threads);
      prepare_out_dir(a->study.out, a->study.resume);
      auto t0 = Clock::now();
      const study::Context ctx(a->study.context_options());
      const double load_s = study::detail::elapsed_seconds(t0);
      nlohmann::json numeric = a->echo();
      for (const char* k : {"out", "resume", "threads", "batch", "tokenizer", "model", "calib",
                            "eval"})
        numeric.erase(k);  // paths and run control: the content hashes stand for the data
      auto store = open_study_store(a->study, ctx, {{"ratios", numeric}});
      if (a->study.show_progress())
        fmt::print(stderr,
                   "{}: {} linears; {} calibration and {} evaluation windows of {} tokens\n",
                   ctx.options().model.string(), ctx.model().linears().size(),
                   ctx.calibration().size(), ctx.evaluation().size(), ctx.options().seqlen);
      t0 = Clock::now();
      const auto reference = eval::make_reference(
          ctx.model(), ctx.evaluation(),
          {.protocol = ctx.options().protocol, .batch_size = ctx.options().batch});
      const double ref_s = study::detail::elapsed_seconds(t0);
      const auto r = study::run_ratios(ctx, ro, &store, reference);

      study::ResultsDocument doc;
      doc.command = "ratios";
      doc.config = a->echo();
      doc.sections["ratios"] = r.section;
      doc.run["timings"] = r.timings;
      doc.run["timings"]["load"] = load_s;
      doc.run["timings"]["fp_reference"] = ref_s;
      doc.run["loss_evaluations_computed"] = r.loss_evaluations_computed;
      doc.run["loss_evaluations_resumed"] = r.loss_evaluations_resumed;
      doc.run["evaluations_computed"] = r.evaluations_computed;
      doc.run["evaluations_resumed"] = r.evaluations_resumed;
      doc.run["threads"] = backend::cpu_threads();
      if (!a->study.quiet) {
        fmt::print("FP PPL {:.4f}\n", reference.perplexity.perplexity);
        print_ratios_table(r);
      }
      doc.run["timings"]["total"] = study::detail::elapsed_seconds(start);
      const auto json = doc.to_json(ctx.describe());
      study::write_results(a->study.out, json);
      const auto files = study::write_report(json, a->study.out, {.gnuplot = a->study.gnuplot});
      for (const auto& w : files.warnings) fmt::print(stderr, "fragile: warning: {}\n", w);
      if (!a->study.quiet) fmt::print("wrote {}\n", (a->study.out / "index.html").string());
      return 0;
    };
  });
}

}  // namespace fragile::cli
