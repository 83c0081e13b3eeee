// The report's plots as gnuplot scripts (data inline, as datablocks), one per SVG:
//   metric_<name>.svg       each map metric (x) against V_l (y), Spearman rho and p in the key
//   fragility_heatmap.svg   V_ppl per layer: rows = block, columns = layer kind
//   shootout_ppl.svg, shootout_kl.svg   PPL / KL against the bit budget, one line per
//                           (allocator, configuration)
//   v_distribution.svg      histogram of V_l, negative values in their own colour
//   d_vs_ukl.svg            D_l against U_l^KL on log-log axes with y = x
// A plot whose data is absent (no shootout, no D_l) is not made. Missing values are left out.
#pragma once

#include "fragile/model/linear_kind.hpp"
#include "fragile/study/gnuplot.hpp"
#include "fragile/study/report_data.hpp"
#include "fragile/study/report_format.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fragile::study {

struct ReportPlot {
  std::string file;     ///< name under plots/, e.g. "fragility_heatmap.svg"
  std::string caption;  ///< alt text and caption
  int height = 480;     ///< SVG height (a long key or many blocks need more)
  std::string script;   ///< gnuplot commands; render_svg adds the terminal and output
};

namespace detail {

using Points = std::vector<std::pair<double, double>>;

/// A file-name-safe form of a metric name: "Fisher trace (MC)" -> "Fisher_trace_MC".
inline std::string slug(std::string_view s) {
  std::string out;
  for (const char c : s) {
    const bool keep =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
    if (keep) {
      out += c;
    } else if (!out.empty() && out.back() != '_') {
      out += '_';
    }
  }
  while (!out.empty() && out.back() == '_') out.pop_back();
  return out.empty() ? "metric" : out;
}

/// Lines joined by gnuplot's "\n" inside one string expression (a two-line title).
inline std::string gnuplot_lines(const std::vector<std::string>& lines) {
  std::string out;
  for (std::size_t i = 0; i < lines.size(); ++i)
    out += (i ? ".\"\\n\"." : "") + gnuplot_quote(lines[i]);
  return out;
}

inline std::string datablock(std::string_view name, const std::vector<std::vector<double>>& rows) {
  std::string out = fmt::format("${} << EOD\n", name);
  for (const auto& r : rows) {
    for (std::size_t i = 0; i < r.size(); ++i) {
      if (i) out += ' ';
      out += exact_text(r[i]);
    }
    out += '\n';
  }
  return out + "EOD\n";
}

inline std::string datablock(std::string_view name, const Points& pts) {
  std::vector<std::vector<double>> rows;
  for (const auto& [x, y] : pts) rows.push_back({x, y});
  return datablock(name, rows);
}

/// Log scale when every value is positive and they span more than two decades.
inline bool wants_log(const std::vector<double>& v) {
  if (v.empty()) return false;
  const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  return *lo > 0 && *hi / *lo > 100.0;
}

inline std::vector<double> xs(const Points& p) {
  std::vector<double> v;
  for (const auto& q : p) v.push_back(q.first);
  return v;
}

/// The kinds present, in transformer order: the heatmap's columns.
inline std::vector<model::LinearKind> kind_order(const std::vector<ReportLayer>& layers) {
  std::vector<model::LinearKind> out;
  for (const auto k : model::kAllLinearKinds)
    if (std::any_of(layers.begin(), layers.end(), [&](const auto& l) { return l.kind == k; }))
      out.push_back(k);
  return out;
}

inline const ReportCorrelation* find_correlation(const ReportMap& m, std::string_view metric,
                                                 std::string_view target) {
  for (const auto& c : m.correlations)
    if (c.metric == metric && c.target == target) return &c;
  return nullptr;
}

/// Grid, key under the plot, and a margin so no point sits on the border.
inline constexpr const char* kCommon =
    "set grid\nset key below\nset offsets graph 0.05, graph 0.05, graph 0.05, graph 0.05\n";

inline ReportPlot metric_plot(const ReportMap& m, const ReportMetric& metric, std::string file) {
  Points pts;
  for (const auto& l : m.layers) {
    const Number x = l.metric(metric.name);
    if (is_finite(x) && is_finite(l.V_ppl)) pts.emplace_back(*x, *l.V_ppl);
  }
  if (pts.empty()) return {};
  std::string key = fmt::format("{} layers", pts.size());
  if (const auto* c = find_correlation(m, metric.name, "V_l"))
    key += fmt::format(": Spearman ρ = {} (p = {})", readable_text(c->spearman),
                       p_text(c->spearman_p));
  ReportPlot p;
  p.file = std::move(file);
  p.caption = fmt::format("{} against V_l", metric.name);
  std::string s = kCommon;
  s += fmt::format("set title {}\n", gnuplot_quote(p.caption));
  s += fmt::format("set xlabel {}\nset ylabel \"V_l (V_ppl)\"\n", gnuplot_quote(metric.name));
  if (wants_log(xs(pts))) s += "set logscale x\nset format x \"%g\"\n";
  s += "set xzeroaxis linetype -1 linecolor rgb '#999999'\n";
  s += datablock("points", pts);
  s += fmt::format("plot $points using 1:2 with points pointtype 7 pointsize 0.8 "
                   "linecolor rgb '#1f77b4' title {}\n", gnuplot_quote(key));
  p.script = std::move(s);
  return p;
}

inline ReportPlot heatmap_plot(const ReportMap& m) {
  const auto kinds = kind_order(m.layers);
  std::set<std::int64_t> block_set;
  for (const auto& l : m.layers)
    if (l.block && l.kind && is_finite(l.V_ppl)) block_set.insert(*l.block);
  if (block_set.empty()) return {};
  const std::vector<std::int64_t> blocks(block_set.begin(), block_set.end());
  std::vector<std::vector<double>> cells;  // column index, row index, V_ppl
  double lo = 0, hi = 0;
  for (const auto& l : m.layers) {
    if (!l.block || !l.kind || !is_finite(l.V_ppl)) continue;
    const auto col = std::find(kinds.begin(), kinds.end(), *l.kind) - kinds.begin();
    const auto row = std::lower_bound(blocks.begin(), blocks.end(), *l.block) - blocks.begin();
    cells.push_back({double(col), double(row), *l.V_ppl});
    lo = std::min(lo, *l.V_ppl);
    hi = std::max(hi, *l.V_ppl);
  }
  const bool missing = cells.size() < kinds.size() * blocks.size();
  ReportPlot p;
  p.file = "fragility_heatmap.svg";
  p.caption = "Fragility V_ppl per layer (rows: block, columns: layer kind)";
  p.height = std::clamp(160 + 24 * int(blocks.size()), 480, 2000);
  std::string s = fmt::format("set title {}\n",
                              gnuplot_lines(missing ? std::vector<std::string>{p.caption,
                                                                               "grey: no value"}
                                                    : std::vector<std::string>{p.caption}));
  s += "set xlabel \"layer kind\"\nset ylabel \"block\"\nset cblabel \"V_ppl\"\n";
  s += "set xtics (";
  for (std::size_t i = 0; i < kinds.size(); ++i)
    s += fmt::format("{}{} {}", i ? ", " : "", gnuplot_quote(model::linear_kind_name(kinds[i])), i);
  s += ")\n";
  // Every block labelled while they fit; past 40 rows every k-th.
  const std::size_t every = (blocks.size() + 39) / 40;
  s += "set ytics (";
  for (std::size_t i = 0, n = 0; i < blocks.size(); i += every, ++n)
    s += fmt::format("{}\"{}\" {}", n ? ", " : "", blocks[i], i);
  s += ")\n";
  s += fmt::format("set xrange [-0.5:{}]\nset yrange [{}:-0.5]\n", kinds.size() - 0.5,
                   blocks.size() - 0.5);
  // Diverging palette around 0 when V_l takes both signs, white to red (or blue) otherwise.
  if (lo < 0 && hi > 0) {
    const double a = std::max(-lo, hi);
    s += fmt::format("set cbrange [{}:{}]\nset palette defined (0 '#2166ac', 0.5 '#f7f7f7', "
                     "1 '#b2182b')\n", exact_text(-a), exact_text(a));
  } else if (lo < 0) {
    s += fmt::format("set cbrange [{}:0]\nset palette defined (0 '#2166ac', 1 '#f7f7f7')\n",
                     exact_text(lo));
  } else {
    s += fmt::format("set cbrange [0:{}]\nset palette defined (0 '#f7f7f7', 1 '#b2182b')\n",
                     exact_text(hi > 0 ? hi : 1.0));
  }
  s += "set object 1 rectangle from graph 0,0 to graph 1,1 behind fillcolor rgb '#cccccc' "
       "fillstyle solid noborder\n";
  s += datablock("cells", cells);
  s += "plot $cells using 1:2:(0.5):(0.5):3 with boxxy fillcolor palette fillstyle solid "
       "noborder notitle\n";
  p.script = std::move(s);
  return p;
}

/// PPL (kl = false) or KL (kl = true) against the budget, one line per (allocator, config).
inline ReportPlot shootout_plot(const ReportShootout& so, bool kl) {
  std::vector<std::pair<std::string, Points>> series;  // in order of first appearance
  std::set<double> budgets;
  for (const auto& r : so.rows) {
    const Number y = kl ? r.kl : r.ppl;
    if (!is_finite(r.budget) || !is_finite(y)) continue;
    const std::string name = r.allocator.empty() ? r.configuration
                             : r.configuration.empty() ? r.allocator
                                                       : r.allocator + ": " + r.configuration;
    auto it = std::find_if(series.begin(), series.end(), [&](auto& e) { return e.first == name; });
    if (it == series.end()) it = series.insert(series.end(), {name, {}});
    it->second.emplace_back(*r.budget, *y);
    budgets.insert(*r.budget);
  }
  if (series.empty()) return {};
  ReportPlot p;
  p.file = kl ? "shootout_kl.svg" : "shootout_ppl.svg";
  p.caption = kl ? "KL divergence from the full-precision model against the bit budget"
                 : "Perplexity against the bit budget";
  p.height = 440 + 18 * int(series.size());
  std::string s = kCommon;
  s += fmt::format("set title {}\nset xlabel \"budget (average bits per weight{})\"\n",
                   gnuplot_quote(p.caption),
                   so.accounting.empty() ? "" : ", " + so.accounting + " accounting");
  s += kl ? "set ylabel \"KL (nats per token)\"\n" : "set ylabel \"PPL\"\n";
  s += "set key vertical maxcols 1\n";
  if (budgets.size() <= 12) {
    s += "set xtics (";
    std::size_t i = 0;
    for (const double b : budgets) s += fmt::format("{}{}", i++ ? ", " : "", exact_text(b));
    s += ")\n";
  }
  std::vector<double> all_y;
  for (auto& [name, pts] : series) {
    std::stable_sort(pts.begin(), pts.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& q : pts) all_y.push_back(q.second);
  }
  if (wants_log(all_y)) s += "set logscale y\nset format y \"%g\"\n";
  std::string plot = "plot ";
  for (std::size_t i = 0; i < series.size(); ++i) {
    s += datablock(fmt::format("s{}", i), series[i].second);
    plot += fmt::format("{}$s{} using 1:2 with linespoints linewidth 2 title {}", i ? ", " : "",
                        i, gnuplot_quote(series[i].first));
  }
  s += plot + "\n";
  p.script = std::move(s);
  return p;
}

/// Histogram of V_ppl. Bin edges are multiples of the bin width, so 0 is an edge and every
/// bin is either all negative or all non-negative; the negative ones get their own colour.
inline ReportPlot distribution_plot(const ReportMap& m) {
  std::vector<double> v;
  for (const auto& l : m.layers)
    if (is_finite(l.V_ppl)) v.push_back(*l.V_ppl);
  if (v.empty()) return {};
  const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  double span = *hi - *lo;
  if (!(span > 0)) span = *lo != 0 ? std::abs(*lo) : 1.0;
  const double bins = std::clamp(std::ceil(std::sqrt(double(v.size()))), 5.0, 40.0);
  const double width = span / bins;
  std::map<long long, int> neg, pos;  // bin index floor(v / width) -> layers
  for (const double x : v) (x < 0 ? neg : pos)[(long long)std::floor(x / width)]++;
  auto rows = [&](const std::map<long long, int>& h) {
    std::vector<std::vector<double>> r;
    for (const auto& [i, n] : h) r.push_back({(double(i) + 0.5) * width, double(n)});
    return r;
  };
  std::size_t n_neg = 0;
  for (const auto& [i, n] : neg) n_neg += std::size_t(n);
  ReportPlot p;
  p.file = "v_distribution.svg";
  p.caption = fmt::format("Distribution of V_l over {} layers ({} negative)", v.size(), n_neg);
  std::string s = kCommon;
  s += fmt::format("set title {}\n", gnuplot_quote(p.caption));
  s += "set xlabel \"V_l (V_ppl)\"\nset ylabel \"layers\"\n";
  s += fmt::format("set boxwidth {} absolute\nset style fill solid 0.8 border rgb '#333333'\n"
                   "set yrange [0:*]\nset offsets graph 0.02, graph 0.02, graph 0.1, 0\n",
                   exact_text(width));
  std::string plot = "plot ";
  if (!neg.empty()) {
    s += datablock("negative", rows(neg));
    plot += fmt::format("$negative using 1:2 with boxes linecolor rgb '#d95f02' title \"V_l < 0 "
                        "({} layers)\"", n_neg);
  }
  if (!pos.empty()) {
    s += datablock("positive", rows(pos));
    plot += fmt::format("{}$positive using 1:2 with boxes linecolor rgb '#7570b3' title \"V_l >= "
                        "0 ({} layers)\"", neg.empty() ? "" : ", ", v.size() - n_neg);
  }
  s += plot + "\n";
  p.script = std::move(s);
  return p;
}

/// D_l (per token) against U_l^KL on log-log axes, with y = x: how well the second-order
/// visibility predicts the measured KL of quantizing one layer.
inline ReportPlot d_vs_ukl_plot(const ReportMap& m) {
  Points pts;
  std::size_t non_positive = 0, missing = 0, with_d = 0;
  for (const auto& l : m.layers) {
    const Number d = l.metric("D_l");
    if (d) ++with_d;
    if (!is_finite(d) || !is_finite(l.U_kl)) {
      ++missing;
    } else if (*d <= 0 || *l.U_kl <= 0) {
      ++non_positive;
    } else {
      pts.emplace_back(*d, *l.U_kl);
    }
  }
  if (with_d == 0 || pts.empty()) return {};
  double lo = INFINITY, hi = 0;
  for (const auto& [x, y] : pts) lo = std::min({lo, x, y}), hi = std::max({hi, x, y});
  ReportPlot p;
  p.file = "d_vs_ukl.svg";
  p.caption = "D_l (per token) against U_l^KL";
  std::vector<std::string> title = {p.caption};
  std::string note = fmt::format("layers omitted: {} (value <= 0 on an axis)", non_positive);
  if (missing) note += fmt::format("; {} without both values", missing);
  title.push_back(note);
  std::string s = kCommon;
  s += fmt::format("set title {}\n", gnuplot_lines(title));
  s += "set xlabel \"D_l (nats per token)\"\nset ylabel \"U_l^KL (nats per token)\"\n";
  s += "set logscale xy\nset format x \"%g\"\nset format y \"%g\"\n";
  s += fmt::format("set xrange [{0}:{1}]\nset yrange [{0}:{1}]\n", exact_text(lo / 2),
                   exact_text(hi * 2));
  s += datablock("points", pts);
  s += fmt::format("plot $points using 1:2 with points pointtype 7 pointsize 0.8 linecolor rgb "
                   "'#1f77b4' title \"{} layers\", x with lines dashtype 2 linecolor rgb "
                   "'#333333' title \"y = x\"\n", pts.size());
  p.script = std::move(s);
  return p;
}

}  // namespace detail

/// Every plot `d` has data for, in report order.
inline std::vector<ReportPlot> report_plots(const ReportData& d) {
  std::vector<ReportPlot> out;
  auto add = [&](ReportPlot p) {
    if (!p.script.empty()) out.push_back(std::move(p));
  };
  if (d.map) {
    std::set<std::string> used;
    for (const auto& metric : d.map->metrics) {
      // Distinct names can share a slug ("a b", "a_b"): number the later ones.
      std::string base = "metric_" + detail::slug(metric.name), file = base;
      for (int i = 2; used.contains(file); ++i) file = fmt::format("{}_{}", base, i);
      used.insert(file);
      add(detail::metric_plot(*d.map, metric, file + ".svg"));
    }
    add(detail::heatmap_plot(*d.map));
    add(detail::distribution_plot(*d.map));
    add(detail::d_vs_ukl_plot(*d.map));
  }
  if (d.shootout) {
    add(detail::shootout_plot(*d.shootout, false));
    add(detail::shootout_plot(*d.shootout, true));
  }
  return out;
}

}  // namespace fragile::study
