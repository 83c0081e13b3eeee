// The report's tables, built from the results document: the CSV files (every number exact, so
// they read back to the same doubles) and the summary tables of summary.md / index.html
// (4 significant digits, combined columns such as "rho (p)").
#pragma once

#include "fragile/model/linear_kind.hpp"
#include "fragile/study/report_data.hpp"
#include "fragile/study/report_format.hpp"
#include "fragile/study/table.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace fragile::study {

using NumberText = std::string (*)(const Number&);

/// The metric columns of layers.csv: map.metrics in order, then any other key of a layer's
/// "metrics" object (so nothing the producer wrote is dropped).
inline std::vector<std::string> metric_columns(const ReportMap& m) {
  std::vector<std::string> out;
  auto add = [&](const std::string& name) {
    if (std::find(out.begin(), out.end(), name) == out.end()) out.push_back(name);
  };
  for (const auto& metric : m.metrics) add(metric.name);
  for (const auto& l : m.layers)
    for (const auto& [k, v] : l.metrics) add(k);
  return out;
}

inline std::string block_text(const ReportLayer& l) {
  return l.block ? fmt::format("{}", *l.block) : kNotAvailable;
}

inline std::string kind_text(const ReportLayer& l) {
  return l.kind ? std::string(model::linear_kind_name(*l.kind)) : std::string();
}

/// One row per layer: name, block, kind, parameters, V_ppl, V_kl, U_ppl, U_kl, the metrics.
inline TextTable layers_table(const ReportMap& m, NumberText num) {
  TextTable t;
  t.header = {"name", "block", "kind", "parameters", "V_ppl", "V_kl", "U_ppl", "U_kl"};
  const auto metrics = metric_columns(m);
  t.header.insert(t.header.end(), metrics.begin(), metrics.end());
  t.numeric = {false, true, false};
  t.numeric.resize(t.header.size(), true);
  for (const auto& l : m.layers) {
    std::vector<std::string> r = {l.name,         block_text(l), kind_text(l), num(l.parameters),
                                  num(l.V_ppl),   num(l.V_kl),   num(l.U_ppl), num(l.U_kl)};
    for (const auto& name : metrics) r.push_back(num(l.metric(name)));
    t.rows.push_back(std::move(r));
  }
  return t;
}

inline TextTable correlations_csv(const ReportMap& m) {
  TextTable t;
  t.header = {"metric",  "target",    "n",       "spearman", "spearman_p", "spearman_ci_low",
              "spearman_ci_high", "pearson", "pearson_p", "kendall",  "kendall_p"};
  for (const auto& c : m.correlations)
    t.rows.push_back({c.metric, c.target, exact_text(c.n), exact_text(c.spearman),
                      exact_text(c.spearman_p), exact_text(c.spearman_ci_low),
                      exact_text(c.spearman_ci_high), exact_text(c.pearson),
                      exact_text(c.pearson_p), exact_text(c.kendall), exact_text(c.kendall_p)});
  return t;
}

/// "2:22 3:6": layers per bit width.
inline std::string histogram_text(const ReportShootoutRow& r, NumberText num) {
  std::string out;
  for (const auto& [bits, n] : r.bits_histogram)
    out += (out.empty() ? "" : " ") + bits + ":" + num(n);
  return out;
}

inline TextTable shootout_csv(const ReportShootout& s) {
  TextTable t;
  t.header = {"budget", "configuration", "allocator", "rule", "achieved_bits",
              "ppl",    "kl",            "top1",      "bits_histogram"};
  for (const auto& r : s.rows)
    t.rows.push_back({exact_text(r.budget), r.configuration, r.allocator, r.rule,
                      exact_text(r.achieved_bits), exact_text(r.ppl), exact_text(r.kl),
                      exact_text(r.top1), histogram_text(r, exact_text)});
  return t;
}

inline TextTable ratios_table(const ReportRatios& r, NumberText num) {
  TextTable t;
  t.header = {"setting", "ratio", "quantization", "achieved_bits", "ppl", "kl", "top1"};
  t.numeric = {false, false, false, true, true, true, true};
  for (const auto& row : r.rows)
    t.rows.push_back({row.setting, row.ratio, row.quantization, num(row.achieved_bits),
                      num(row.ppl), num(row.kl), num(row.top1)});
  return t;
}

// ---- summary tables ----

/// "0.5 (0.01)": a statistic with its p-value.
inline std::string with_p(const Number& v, const Number& p) {
  return readable_text(v) + " (" + p_text(p) + ")";
}

inline TextTable correlation_summary(const ReportMap& m) {
  TextTable t;
  t.header = {"metric", "target", "n", "Spearman ρ (p)", "95% CI", "Pearson r (p)",
              "Kendall τ (p)"};
  t.numeric = {false, false, true, true, true, true, true};
  for (const auto& c : m.correlations) {
    const std::string ci = (is_finite(c.spearman_ci_low) || is_finite(c.spearman_ci_high))
                               ? fmt::format("[{}, {}]", readable_text(c.spearman_ci_low),
                                             readable_text(c.spearman_ci_high))
                               : kNotAvailable;
    t.rows.push_back({c.metric, c.target, count_text(c.n), with_p(c.spearman, c.spearman_p), ci,
                      with_p(c.pearson, c.pearson_p), with_p(c.kendall, c.kendall_p)});
  }
  return t;
}

/// The `limit` layers with the largest V_ppl (layers without a value left out; ties keep the
/// document's order).
inline std::vector<const ReportLayer*> most_fragile(const ReportMap& m, std::size_t limit) {
  std::vector<const ReportLayer*> out;
  for (const auto& l : m.layers)
    if (is_finite(l.V_ppl)) out.push_back(&l);
  std::stable_sort(out.begin(), out.end(),
                   [](const auto* a, const auto* b) { return *a->V_ppl > *b->V_ppl; });
  if (out.size() > limit) out.resize(limit);
  return out;
}

inline TextTable top_layers_table(const ReportMap& m, std::size_t limit) {
  TextTable t;
  t.header = {"rank", "layer", "V_ppl", "V_kl", "U_ppl", "U_kl", "parameters"};
  t.numeric = {true, false, true, true, true, true, true};
  std::size_t rank = 0;
  for (const auto* l : most_fragile(m, limit))
    t.rows.push_back({fmt::format("{}", ++rank), l->name, readable_text(l->V_ppl),
                      readable_text(l->V_kl), readable_text(l->U_ppl), readable_text(l->U_kl),
                      count_text(l->parameters)});
  return t;
}

inline std::size_t negative_v_count(const ReportMap& m) {
  return std::size_t(std::count_if(m.layers.begin(), m.layers.end(), [](const auto& l) {
    return is_finite(l.V_ppl) && *l.V_ppl < 0;
  }));
}

/// Mean V_ppl (and V_kl) per layer kind, most fragile kind first.
inline TextTable kind_table(const ReportMap& m) {
  struct Acc {
    double v_sum = 0, kl_sum = 0;
    std::size_t n = 0, n_kl = 0, negative = 0;
  };
  std::map<model::LinearKind, Acc> acc;
  for (const auto& l : m.layers) {
    if (!l.kind || !is_finite(l.V_ppl)) continue;
    auto& a = acc[*l.kind];
    a.v_sum += *l.V_ppl;
    ++a.n;
    if (*l.V_ppl < 0) ++a.negative;
    if (is_finite(l.V_kl)) a.kl_sum += *l.V_kl, ++a.n_kl;
  }
  std::vector<std::pair<model::LinearKind, Acc>> rows(acc.begin(), acc.end());
  std::stable_sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
    return a.second.v_sum / double(a.second.n) > b.second.v_sum / double(b.second.n);
  });
  TextTable t;
  t.header = {"kind", "layers", "mean V_ppl", "mean V_kl", "V_l < 0"};
  t.numeric = {false, true, true, true, true};
  for (const auto& [kind, a] : rows)
    t.rows.push_back({std::string(model::linear_kind_name(kind)), fmt::format("{}", a.n), readable_text(a.v_sum / double(a.n)),
                      a.n_kl ? readable_text(a.kl_sum / double(a.n_kl)) : kNotAvailable,
                      fmt::format("{}", a.negative)});
  return t;
}

/// Rows by budget (ascending), then configuration and allocator in order of first appearance.
inline TextTable shootout_summary(const ReportShootout& s) {
  std::vector<std::string> configs, allocators;
  auto index = [](std::vector<std::string>& seen, const std::string& v) {
    auto it = std::find(seen.begin(), seen.end(), v);
    if (it == seen.end()) it = seen.insert(seen.end(), v);
    return it - seen.begin();
  };
  std::vector<std::pair<std::array<double, 3>, const ReportShootoutRow*>> order;
  for (const auto& r : s.rows)
    order.push_back({{is_finite(r.budget) ? *r.budget : INFINITY,
                      double(index(configs, r.configuration)),
                      double(index(allocators, r.allocator))},
                     &r});
  std::stable_sort(order.begin(), order.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  TextTable t;
  t.header = {"budget", "configuration", "allocator", "rule", "achieved bits", "PPL", "KL",
              "top-1", "layers per bit width"};
  t.numeric = {true, false, false, false, true, true, true, true, false};
  for (const auto& [key, r] : order)
    t.rows.push_back({readable_text(r->budget), r->configuration, r->allocator, r->rule,
                      readable_text(r->achieved_bits), readable_text(r->ppl),
                      readable_text(r->kl), readable_text(r->top1),
                      histogram_text(*r, count_text)});
  return t;
}

inline TextTable key_value_table(const std::vector<std::pair<std::string, std::string>>& kv,
                                 std::string key = "field", std::string value = "value") {
  TextTable t;
  t.header = {std::move(key), std::move(value)};
  for (const auto& [k, v] : kv) t.rows.push_back({k, v});
  return t;
}

}  // namespace fragile::study
