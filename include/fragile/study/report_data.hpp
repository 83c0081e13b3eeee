// The results document (results.json, schema "fragile-results/1") as the report reads it: every
// field it uses, checked and typed once, so the tables and plots never meet a wrong-typed value.
// Sections and fields may be absent (a `fragile map` run has no "shootout"); a field that is
// present with the wrong type is a ConfigError naming it, e.g.
//   results: 'map.layers[3].V_ppl' is a string, expected a number or null
// Numbers may be null (the producer writes non-finite values as null): they read as nullopt.
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/model/linear_kind.hpp"
#include "fragile/study/results.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fragile::study {

using Number = std::optional<double>;  ///< nullopt: absent, null (non-finite) or not applicable

struct ReportLayer {
  std::string name;
  std::optional<std::int64_t> block;
  std::optional<model::LinearKind> kind;  ///< absent in results that do not name it
  Number parameters, V_ppl, V_kl, U_ppl, U_kl, U_top1;
  std::vector<std::pair<std::string, Number>> metrics;  ///< "metrics" object, by key

  [[nodiscard]] Number metric(std::string_view key) const {
    for (const auto& [k, v] : metrics)
      if (k == key) return v;
    return std::nullopt;
  }
};

struct ReportMetric {
  std::string name, description;
};

struct ReportCorrelation {
  std::string metric, target;
  Number n, spearman, spearman_p, spearman_ci_low, spearman_ci_high, pearson, pearson_p, kendall,
      kendall_p;
};

struct ReportRegime {
  std::string name;
  Number ppl_ratio, minimal_below, catastrophic_above;
};

struct ReportMap {
  std::string setting, description;
  Number bits, fp_ppl, base_ppl, base_kl, base_top1;
  std::optional<ReportRegime> regime;
  std::vector<ReportMetric> metrics;
  std::vector<ReportLayer> layers;
  std::vector<ReportCorrelation> correlations;
};

struct ReportShootoutRow {
  Number budget;
  std::string configuration, allocator, rule;
  Number achieved_bits, ppl, kl, top1;
  std::vector<std::pair<std::string, Number>> bits_histogram;  ///< bit width -> layer count
};

struct ReportShootout {
  std::string accounting;
  std::vector<double> budgets;
  std::vector<ReportShootoutRow> rows;
};

struct ReportRatioRow {
  std::string setting, ratio, quantization;
  Number achieved_bits, ppl, kl, top1;
};

struct ReportRatios {
  Number loss_evaluations, loss_evaluation_seconds;
  std::vector<ReportRatioRow> rows;
};

struct ReportDataset {
  std::string role;  ///< "calibration" or "evaluation"
  std::string path, protocol;
  Number windows, seqlen, tokens;
};

struct ReportData {
  std::string command, fragile_version, fragile_git;
  std::vector<std::pair<std::string, std::string>> config;  ///< every option, as text
  std::string config_model;                                 ///< config.model, if a string
  std::string model_path, model_architecture, model_fingerprint;
  Number model_parameters, model_linears;
  std::vector<ReportDataset> data;
  std::vector<std::pair<std::string, Number>> timings;
  std::vector<std::string> warnings;
  std::optional<ReportMap> map;
  std::optional<ReportShootout> shootout;
  std::optional<ReportRatios> ratios;

  /// What the report calls the model: its path, else the configured --model, else "model".
  [[nodiscard]] std::string model_name() const {
    if (!model_path.empty()) return model_path;
    if (!config_model.empty()) return config_model;
    return "model";
  }
};


namespace detail {

/// "a string", "an array"...: how an error names what it found.
inline std::string kind_of(const nlohmann::json& j) {
  const std::string t = j.type_name();
  return (t == "array" || t == "object" ? "an " : "a ") + t;
}

/// The member `key` of `obj`, or nullptr when absent or null.
inline const nlohmann::json* member(const nlohmann::json& obj, std::string_view key) {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

inline const nlohmann::json* object_at(const nlohmann::json& obj, std::string_view key,
                                       const std::string& path) {
  const auto* j = member(obj, key);
  require<ConfigError>(!j || j->is_object(), "results: '{}' is {}, expected an object", path,
                       j ? kind_of(*j) : "");
  return j;
}

inline const nlohmann::json* array_at(const nlohmann::json& obj, std::string_view key,
                                      const std::string& path) {
  const auto* j = member(obj, key);
  require<ConfigError>(!j || j->is_array(), "results: '{}' is {}, expected an array", path,
                       j ? kind_of(*j) : "");
  return j;
}

/// `j` (an object member or an array element; nullptr or null when absent) as a number.
inline Number as_number(const nlohmann::json* j, const std::string& path) {
  if (!j || j->is_null()) return std::nullopt;
  require<ConfigError>(j->is_number(), "results: '{}' is {}, expected a number or null", path,
                       kind_of(*j));
  return j->get<double>();
}

inline Number number_at(const nlohmann::json& obj, std::string_view key, const std::string& path) {
  return as_number(member(obj, key), path);
}

inline std::string as_string(const nlohmann::json* j, const std::string& path, bool required) {
  const bool present = j && !j->is_null();
  require<ConfigError>(present || !required, "results: '{}' is missing, expected a string", path);
  if (!present) return {};
  require<ConfigError>(j->is_string(), "results: '{}' is {}, expected a string", path,
                       kind_of(*j));
  return j->get<std::string>();
}

inline std::string string_at(const nlohmann::json& obj, std::string_view key,
                             const std::string& path, bool required = false) {
  return as_string(member(obj, key), path, required);
}

/// A config value as one line of text: strings as they are, numbers in their shortest exact
/// form, null as "n/a", arrays and objects as compact JSON.
inline std::string scalar_text(const nlohmann::json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_null()) return "n/a";
  if (j.is_number_float()) return fmt::format("{}", j.get<double>());
  return j.dump();
}

inline std::vector<std::pair<std::string, Number>> number_object(const nlohmann::json& obj,
                                                                 std::string_view key,
                                                                 const std::string& path) {
  std::vector<std::pair<std::string, Number>> out;
  if (const auto* o = object_at(obj, key, path))
    for (const auto& [k, v] : o->items()) out.emplace_back(k, number_at(*o, k, path + "." + k));
  return out;
}

template <class F>
void each_object(const nlohmann::json& array, const std::string& path, F&& f) {
  for (std::size_t i = 0; i < array.size(); ++i) {
    const auto item_path = fmt::format("{}[{}]", path, i);
    require<ConfigError>(array[i].is_object(), "results: '{}' is {}, expected an object",
                         item_path, kind_of(array[i]));
    f(array[i], item_path);
  }
}

inline ReportLayer read_layer(const nlohmann::json& j, const std::string& p) {
  ReportLayer l;
  l.name = string_at(j, "name", p + ".name", /*required=*/true);
  if (const auto* b = member(j, "block")) {
    require<ConfigError>(b->is_number_integer(), "results: '{}.block' is {}, expected an integer",
                         p, kind_of(*b));
    l.block = b->get<std::int64_t>();
  }
  if (const auto kind = string_at(j, "kind", p + ".kind"); !kind.empty()) {
    l.kind = model::parse_linear_kind(kind);
    require<ConfigError>(l.kind.has_value(),
                         "results: '{}.kind' is '{}', expected one of q_proj, k_proj, v_proj, "
                         "o_proj, gate_proj, up_proj, down_proj",
                         p, kind);
  }
  l.parameters = number_at(j, "parameters", p + ".parameters");
  l.V_ppl = number_at(j, "V_ppl", p + ".V_ppl");
  l.V_kl = number_at(j, "V_kl", p + ".V_kl");
  l.U_ppl = number_at(j, "U_ppl", p + ".U_ppl");
  l.U_kl = number_at(j, "U_kl", p + ".U_kl");
  l.U_top1 = number_at(j, "U_top1", p + ".U_top1");
  l.metrics = number_object(j, "metrics", p + ".metrics");
  return l;
}

inline ReportCorrelation read_correlation(const nlohmann::json& j, const std::string& p) {
  ReportCorrelation c;
  c.metric = string_at(j, "metric", p + ".metric", true);
  c.target = string_at(j, "target", p + ".target", true);
  c.n = number_at(j, "n", p + ".n");
  c.spearman = number_at(j, "spearman", p + ".spearman");
  c.spearman_p = number_at(j, "spearman_p", p + ".spearman_p");
  if (const auto* ci = array_at(j, "spearman_ci", p + ".spearman_ci")) {
    require<ConfigError>(ci->size() == 2, "results: '{}.spearman_ci' has {} entries, expected 2",
                         p, ci->size());
    c.spearman_ci_low = as_number(&(*ci)[0], p + ".spearman_ci[0]");
    c.spearman_ci_high = as_number(&(*ci)[1], p + ".spearman_ci[1]");
  }
  c.pearson = number_at(j, "pearson", p + ".pearson");
  c.pearson_p = number_at(j, "pearson_p", p + ".pearson_p");
  c.kendall = number_at(j, "kendall", p + ".kendall");
  c.kendall_p = number_at(j, "kendall_p", p + ".kendall_p");
  return c;
}

inline ReportMap read_map(const nlohmann::json& j) {
  ReportMap m;
  m.setting = string_at(j, "setting", "map.setting");
  m.description = string_at(j, "description", "map.description");
  m.bits = number_at(j, "bits", "map.bits");
  m.fp_ppl = number_at(j, "fp_ppl", "map.fp_ppl");
  m.base_ppl = number_at(j, "base_ppl", "map.base_ppl");
  m.base_kl = number_at(j, "base_kl", "map.base_kl");
  m.base_top1 = number_at(j, "base_top1", "map.base_top1");
  if (const auto* r = object_at(j, "regime", "map.regime")) {
    m.regime = ReportRegime{string_at(*r, "name", "map.regime.name"),
                            number_at(*r, "ppl_ratio", "map.regime.ppl_ratio"),
                            number_at(*r, "minimal_below", "map.regime.minimal_below"),
                            number_at(*r, "catastrophic_above", "map.regime.catastrophic_above")};
  }
  if (const auto* a = array_at(j, "metrics", "map.metrics"))
    each_object(*a, "map.metrics", [&](const nlohmann::json& o, const std::string& p) {
      m.metrics.push_back({string_at(o, "name", p + ".name", true),
                           string_at(o, "description", p + ".description")});
    });
  if (const auto* a = array_at(j, "layers", "map.layers"))
    each_object(*a, "map.layers", [&](const nlohmann::json& o, const std::string& p) {
      m.layers.push_back(read_layer(o, p));
    });
  if (const auto* a = array_at(j, "correlations", "map.correlations"))
    each_object(*a, "map.correlations", [&](const nlohmann::json& o, const std::string& p) {
      m.correlations.push_back(read_correlation(o, p));
    });
  return m;
}

inline ReportShootout read_shootout(const nlohmann::json& j) {
  ReportShootout s;
  s.accounting = string_at(j, "accounting", "shootout.accounting");
  if (const auto* a = array_at(j, "budgets", "shootout.budgets"))
    for (std::size_t i = 0; i < a->size(); ++i)
      if (auto b = as_number(&(*a)[i], fmt::format("shootout.budgets[{}]", i)))
        s.budgets.push_back(*b);
  if (const auto* a = array_at(j, "rows", "shootout.rows"))
    each_object(*a, "shootout.rows", [&](const nlohmann::json& o, const std::string& p) {
      ReportShootoutRow r;
      r.budget = number_at(o, "budget", p + ".budget");
      r.configuration = string_at(o, "configuration", p + ".configuration");
      r.allocator = string_at(o, "allocator", p + ".allocator");
      r.rule = string_at(o, "rule", p + ".rule");
      r.achieved_bits = number_at(o, "achieved_bits", p + ".achieved_bits");
      r.ppl = number_at(o, "ppl", p + ".ppl");
      r.kl = number_at(o, "kl", p + ".kl");
      r.top1 = number_at(o, "top1", p + ".top1");
      r.bits_histogram = number_object(o, "bits_histogram", p + ".bits_histogram");
      s.rows.push_back(std::move(r));
    });
  return s;
}

inline ReportRatios read_ratios(const nlohmann::json& j) {
  ReportRatios r;
  r.loss_evaluations = number_at(j, "loss_evaluations", "ratios.loss_evaluations");
  r.loss_evaluation_seconds =
      number_at(j, "loss_evaluation_seconds", "ratios.loss_evaluation_seconds");
  if (const auto* a = array_at(j, "rows", "ratios.rows"))
    each_object(*a, "ratios.rows", [&](const nlohmann::json& o, const std::string& p) {
      r.rows.push_back({string_at(o, "setting", p + ".setting"),
                        string_at(o, "ratio", p + ".ratio"),
                        string_at(o, "quantization", p + ".quantization"),
                        number_at(o, "achieved_bits", p + ".achieved_bits"),
                        number_at(o, "ppl", p + ".ppl"), number_at(o, "kl", p + ".kl"),
                        number_at(o, "top1", p + ".top1")});
    });
  return r;
}

}  // namespace detail

/// Checks and reads `results`; ConfigError naming the first malformed field.
inline ReportData read_report_data(const nlohmann::json& results) {
  using namespace detail;
  require<ConfigError>(results.is_object(), "results: the document is {}, expected an object",
                       kind_of(results));
  ReportData d;
  if (const auto* s = member(results, "schema")) {
    require<ConfigError>(s->is_string() && s->get<std::string>() == kResultsSchema,
                         "results: 'schema' is {}, expected \"{}\"", s->dump(), kResultsSchema);
  }
  d.command = string_at(results, "command", "command");
  if (const auto* f = object_at(results, "fragile", "fragile")) {
    d.fragile_version = string_at(*f, "version", "fragile.version");
    d.fragile_git = string_at(*f, "git", "fragile.git");
  }
  if (const auto* c = object_at(results, "config", "config")) {
    for (const auto& [k, v] : c->items()) d.config.emplace_back(k, scalar_text(v));
    if (const auto* m = member(*c, "model"); m && m->is_string())
      d.config_model = m->get<std::string>();
  }
  if (const auto* m = object_at(results, "model", "model")) {
    d.model_path = string_at(*m, "path", "model.path");
    d.model_architecture = string_at(*m, "architecture", "model.architecture");
    d.model_fingerprint = string_at(*m, "fingerprint", "model.fingerprint");
    d.model_parameters = number_at(*m, "parameters", "model.parameters");
    d.model_linears = number_at(*m, "linears", "model.linears");
  }
  if (const auto* data = object_at(results, "data", "data"))
    for (const char* role : {"calibration", "evaluation"}) {
      const std::string p = std::string("data.") + role;
      if (const auto* s = object_at(*data, role, p))
        d.data.push_back({role, string_at(*s, "path", p + ".path"),
                          string_at(*s, "protocol", p + ".protocol"),
                          number_at(*s, "windows", p + ".windows"),
                          number_at(*s, "seqlen", p + ".seqlen"),
                          number_at(*s, "tokens", p + ".tokens")});
    }
  d.timings = number_object(results, "timings", "timings");
  if (const auto* w = array_at(results, "warnings", "warnings"))
    for (std::size_t i = 0; i < w->size(); ++i)
      d.warnings.push_back(as_string(&(*w)[i], fmt::format("warnings[{}]", i), true));
  if (const auto* m = object_at(results, "map", "map")) d.map = read_map(*m);
  if (const auto* s = object_at(results, "shootout", "shootout")) d.shootout = read_shootout(*s);
  if (const auto* r = object_at(results, "ratios", "ratios")) d.ratios = read_ratios(*r);
  return d;
}

}  // namespace fragile::study
