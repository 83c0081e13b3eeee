// `fragile report`: re-renders the report of a study folder from its results.json (CSV tables,
// plots/*.svg, summary.md, index.html; see fragile/study/report.hpp), e.g. after editing a
// plot or on a machine that has gnuplot. The study commands write the same report themselves.
#pragma once

#include "cli_support.hpp"

#include <fragile/io/text.hpp>
#include <fragile/study/report.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>

namespace fragile::cli {

struct ReportArgs {
  std::filesystem::path out;
  std::string gnuplot = "gnuplot";
  bool quiet = false;
};

inline int run_report(const ReportArgs& a) {
  const auto path = a.out / "results.json";
  io::require_regular_file(path, "--out");
  nlohmann::json results;
  try {
    results = nlohmann::json::parse(io::read_text_file(path));
  } catch (const nlohmann::json::parse_error& e) {
    raise<ConfigError>("'{}' is not valid JSON: {}", path.string(), e.what());
  }
  study::ReportOptions opt;
  opt.gnuplot = a.gnuplot;
  study::ReportFiles files;
  try {
    files = study::write_report(results, a.out, opt);
  } catch (const ConfigError& e) {
    raise<ConfigError>("'{}': {}", path.string(), e.what());  // name the file, too
  }
  for (const auto& w : files.warnings) fmt::print(stderr, "fragile report: warning: {}\n", w);
  if (!a.quiet) fmt::print("wrote {}\n", (a.out / "index.html").string());
  return 0;
}

inline void add_report_command(CLI::App& app, std::function<int()>& action) {
  auto a = std::make_shared<ReportArgs>();
  auto* c = app.add_subcommand("report", "render a study folder's results.json as tables, plots, "
                                         "summary.md and index.html");
  c->add_option("--out", a->out, "study folder holding results.json (the report is written there)")
      ->required();
  c->add_option("--gnuplot", a->gnuplot, "gnuplot executable (empty: no plots)");
  c->add_flag("--quiet", a->quiet, "print nothing but warnings and errors");
  c->callback([a, &action] { action = [a] { return run_report(*a); }; });
}

}  // namespace fragile::cli
