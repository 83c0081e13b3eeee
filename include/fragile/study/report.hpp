// The study report: renders a results document (results.json, see report_data.hpp) into a
// folder a person can open:
//   layers.csv, correlations.csv, shootout.csv, ratios.csv   exact numbers, RFC 4180
//   plots/*.svg                                               gnuplot (report_plots.hpp)
//   summary.md, index.html                                    the same sections, two formats
// Every file is written atomically, and the same document gives the same bytes in every file
// (no timestamps, fixed number formats, gnuplot's SVG is deterministic). Sections the
// document lacks (no shootout, no ratios) are left out, and their files from an earlier render
// into the same folder are removed, so the folder always describes the document it came from.
// Without gnuplot the plots are skipped with a warning; the pages say so.
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/io/atomic_file.hpp"
#include "fragile/study/gnuplot.hpp"
#include "fragile/study/report_data.hpp"
#include "fragile/study/report_format.hpp"
#include "fragile/study/report_page.hpp"
#include "fragile/study/report_plots.hpp"
#include "fragile/study/report_tables.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fragile::study {

struct ReportOptions {
  std::string gnuplot = "gnuplot";  ///< executable (PATH lookup or a path); empty = no plots
  std::chrono::seconds gnuplot_timeout{120};  ///< per plot, then gnuplot is killed
};

struct ReportFiles {
  std::vector<std::filesystem::path> written;  ///< in the order written
  std::vector<std::string> warnings;           ///< about the rendering (not the study's)
};

inline constexpr std::string_view kGnuplotNotFound = "gnuplot not found: plots skipped";

namespace detail {

/// "degraded (PPL ratio 1.64; minimal below 1.1, catastrophic above 10)".
inline std::string regime_text(const ReportRegime& r) {
  std::vector<std::string> groups;
  if (is_finite(r.ppl_ratio)) groups.push_back("PPL ratio " + readable_text(r.ppl_ratio));
  std::string bounds;
  if (is_finite(r.minimal_below)) bounds = "minimal below " + readable_text(r.minimal_below);
  if (is_finite(r.catastrophic_above))
    bounds += fmt::format("{}catastrophic above {}", bounds.empty() ? "" : ", ",
                          readable_text(r.catastrophic_above));
  if (!bounds.empty()) groups.push_back(bounds);
  std::string s = r.name.empty() ? "unnamed" : r.name;
  for (std::size_t i = 0; i < groups.size(); ++i) s += (i ? "; " : " (") + groups[i];
  return groups.empty() ? s : s + ")";
}

inline std::string dataset_text(const ReportDataset& d) {
  std::string s = d.path.empty() ? "(path not recorded)" : d.path;
  s += fmt::format(": {} windows × {} tokens, {} tokens", count_text(d.windows),
                   count_text(d.seqlen), count_text(d.tokens));
  if (!d.protocol.empty()) s += ", " + d.protocol + " protocol";
  return s;
}

inline PageSection overview_section(const ReportData& d) {
  std::vector<std::pair<std::string, std::string>> kv = {{"model", d.model_name()}};
  if (!d.model_architecture.empty()) kv.emplace_back("architecture", d.model_architecture);
  if (d.model_parameters) kv.emplace_back("parameters", count_text(d.model_parameters));
  if (d.model_linears) kv.emplace_back("quantized linear layers", count_text(d.model_linears));
  if (d.map) {
    const auto& m = *d.map;
    std::string setting = m.setting.empty() ? kNotAvailable : m.setting;
    if (!m.description.empty()) setting += ": " + m.description;
    kv.emplace_back("setting", setting);
    kv.emplace_back("FP PPL", readable_text(m.fp_ppl));
    kv.emplace_back("base PPL (all layers quantized)", readable_text(m.base_ppl));
    kv.emplace_back("base KL (nats per token)", readable_text(m.base_kl));
    if (m.base_top1) kv.emplace_back("base top-1 agreement", readable_text(m.base_top1));
    if (m.regime) kv.emplace_back("regime", regime_text(*m.regime));
  }
  for (const auto& ds : d.data) kv.emplace_back(ds.role + " data", dataset_text(ds));
  PageSection s = page_section("overview", "Overview");
  s.tables.push_back(key_value_table(kv));
  return s;
}

inline std::vector<PageFigure> figures(const std::vector<ReportPlot>& plots,
                                       const std::vector<std::string>& written,
                                       auto&& select) {
  std::vector<PageFigure> out;
  for (const auto& p : plots)
    if (select(p.file) && std::find(written.begin(), written.end(), p.file) != written.end())
      out.push_back({"plots/" + p.file, p.caption, 720, p.height});
  return out;
}

inline Page report_page(const ReportData& d, const std::vector<ReportPlot>& plots,
                        const std::vector<std::string>& plotted,
                        const std::vector<std::string>& report_warnings,
                        const std::vector<std::string>& csv_files) {
  Page page;
  page.title = "fragile report: " + d.model_name();
  if (d.map && !d.map->setting.empty()) page.title += ", " + d.map->setting;
  page.sections.push_back(overview_section(d));

  if (!d.warnings.empty() || !report_warnings.empty()) {
    PageSection s = page_section("warnings", "Warnings");
    s.items = d.warnings;
    for (const auto& w : report_warnings) s.items.push_back("report: " + w);
    page.sections.push_back(std::move(s));
  }

  auto starts = [](std::string_view prefix) {
    return [prefix](const std::string& f) { return f.starts_with(prefix); };
  };
  if (d.map) {
    const auto& m = *d.map;
    if (!m.correlations.empty() || !m.metrics.empty()) {
      PageSection s = page_section("correlations", "Which metric predicts fragility");
      for (const auto& metric : m.metrics)
        s.items.push_back(metric.description.empty() ? metric.name
                                                     : metric.name + ": " + metric.description);
      if (!m.correlations.empty()) s.tables.push_back(correlation_summary(m));
      s.figures = figures(plots, plotted, starts("metric_"));
      auto dk = figures(plots, plotted, starts("d_vs_ukl"));
      s.figures.insert(s.figures.end(), dk.begin(), dk.end());
      page.sections.push_back(std::move(s));
    }
    if (!m.layers.empty()) {
      PageSection s = page_section("fragile-layers", "Most fragile layers");
      s.paragraphs.push_back(fmt::format("Layers with V_l < 0: {} of {}.", negative_v_count(m),
                                         m.layers.size()));
      s.tables.push_back(top_layers_table(m, 10));
      s.figures = figures(plots, plotted, [](const std::string& f) {
        return f == "fragility_heatmap.svg" || f == "v_distribution.svg";
      });
      page.sections.push_back(std::move(s));
      PageSection k = page_section("kinds", "Fragility by layer kind");
      k.tables.push_back(kind_table(m));
      page.sections.push_back(std::move(k));
    }
  }
  if (d.shootout) {
    PageSection s = page_section("shootout", "Allocator shootout");
    if (!d.shootout->accounting.empty())
      s.paragraphs.push_back("Bit accounting: " + d.shootout->accounting + ".");
    s.tables.push_back(shootout_summary(*d.shootout));
    s.figures = figures(plots, plotted, starts("shootout_"));
    page.sections.push_back(std::move(s));
  }
  if (d.ratios) {
    PageSection s = page_section("ratios", "High-impact ratio optimization");
    if (d.ratios->loss_evaluations || d.ratios->loss_evaluation_seconds)
      s.paragraphs.push_back(fmt::format("{} loss evaluations, {} s.",
                                         count_text(d.ratios->loss_evaluations),
                                         readable_text(d.ratios->loss_evaluation_seconds)));
    s.tables.push_back(ratios_table(*d.ratios, readable_text));
    page.sections.push_back(std::move(s));
  }

  PageSection run = page_section("run", "Run");
  std::vector<std::pair<std::string, std::string>> info;
  if (!d.command.empty()) info.emplace_back("command", "fragile " + d.command);
  if (!d.fragile_version.empty() || !d.fragile_git.empty())
    info.emplace_back("fragile", d.fragile_version +
                                     (d.fragile_git.empty() ? "" : " (" + d.fragile_git + ")"));
  if (!d.model_fingerprint.empty()) info.emplace_back("model fingerprint", d.model_fingerprint);
  for (const auto& [k, v] : d.timings) info.emplace_back("time: " + k + " (s)", readable_text(v));
  if (!info.empty()) run.tables.push_back(key_value_table(info));
  if (!d.config.empty()) run.tables.push_back(key_value_table(d.config, "option", "value"));
  for (const auto& f : csv_files) run.links.emplace_back(f, f);
  if (!run.tables.empty() || !run.links.empty()) page.sections.push_back(std::move(run));
  return page;
}

/// Removes `path` if it exists (a report file the document no longer has).
inline void remove_stale(const std::filesystem::path& path) {
  std::error_code ec;
  std::filesystem::remove(path, ec);
  require<IoError>(!ec, "report: cannot remove the stale '{}': {}", path.string(), ec.message());
}

inline void make_dir(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(dir, ec)) {
    require<IoError>(fs::is_directory(dir, ec), "report: '{}' exists and is not a directory",
                     dir.string());
    return;
  }
  fs::create_directories(dir, ec);
  require<IoError>(!ec, "report: cannot create the folder '{}': {}", dir.string(), ec.message());
}

}  // namespace detail

/// Renders `results` (a results.json document) into `out_dir`: the CSV tables, plots/*.svg,
/// summary.md and index.html. ConfigError naming the field if the document is malformed
/// (nothing is written then); IoError naming the path if a file cannot be written or gnuplot
/// fails.
inline ReportFiles write_report(const nlohmann::json& results,
                                const std::filesystem::path& out_dir,
                                const ReportOptions& options = {}) {
  namespace fs = std::filesystem;
  const ReportData d = read_report_data(results);
  ReportFiles files;
  detail::make_dir(out_dir);
  auto write = [&](const fs::path& path, const std::string& text) {
    io::write_atomically(path, std::string_view(text));
    files.written.push_back(path);
  };

  // Tables.
  std::vector<std::pair<std::string, std::optional<TextTable>>> csv = {
      {"layers.csv", d.map && !d.map->layers.empty()
                         ? std::optional(layers_table(*d.map, exact_text)) : std::nullopt},
      {"correlations.csv", d.map && !d.map->correlations.empty()
                               ? std::optional(correlations_csv(*d.map)) : std::nullopt},
      {"shootout.csv", d.shootout ? std::optional(shootout_csv(*d.shootout)) : std::nullopt},
      {"ratios.csv", d.ratios ? std::optional(ratios_table(*d.ratios, exact_text)) : std::nullopt}};
  std::vector<std::string> csv_written;
  for (const auto& [name, table] : csv) {
    if (table) {
      write(out_dir / name, to_csv(*table));
      csv_written.push_back(name);
    } else {
      detail::remove_stale(out_dir / name);
    }
  }

  // Plots.
  const auto plots = report_plots(d);
  const fs::path plot_dir = out_dir / "plots";
  std::vector<std::string> plotted;
  if (!plots.empty() && options.gnuplot.empty()) {
    files.warnings.emplace_back("no gnuplot executable given: plots skipped");
  } else if (!plots.empty()) {
    detail::make_dir(plot_dir);
    for (const auto& p : plots) {
      GnuplotOptions g{options.gnuplot, 720, p.height, options.gnuplot_timeout};
      if (render_svg(plot_dir / p.file, p.script, g) == GnuplotStatus::kNotFound) {
        files.warnings.emplace_back(kGnuplotNotFound);
        break;
      }
      files.written.push_back(plot_dir / p.file);
      plotted.push_back(p.file);
    }
  }
  // SVGs an earlier render left (a metric or a shootout the document no longer has).
  std::error_code ec;
  std::vector<fs::path> stale;
  for (fs::directory_iterator it(plot_dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->path().extension() == ".svg" &&
        std::find(plotted.begin(), plotted.end(), it->path().filename().string()) == plotted.end())
      stale.push_back(it->path());
  for (const auto& p : stale) detail::remove_stale(p);

  // Pages.
  const Page page = detail::report_page(d, plots, plotted, files.warnings, csv_written);
  write(out_dir / "summary.md", to_markdown(page));
  write(out_dir / "index.html", to_html(page));
  return files;
}

}  // namespace fragile::study
