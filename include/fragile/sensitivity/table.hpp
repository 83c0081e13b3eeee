// SensitivityTable: the hand-off between sensitivity metrics and bit allocators.
//
// Per quantized linear layer l: its HF name, transformer block, kind ("q_proj", ...) and
// parameter count; a list of options (a bit width, or a high-impact ratio for the hybrid
// quantizer), each with the exact storage cost in bits of layer l under that option (weights,
// scales, zero points, channel indices: the quantizer's cost model supplies it) and a score
// (lower = better: D_l(b), a loss increase, a PPL). Optional extras: named per-layer scalar
// metrics (Fisher trace, ...) that rank-based allocators read, and the block-diagonal matrix M of
// paper 002 (Eq. 6-8) for the block-QP allocator. Metrics fill it, allocators read it, reports
// serialise it to JSON.
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/model/linear_kind.hpp"

#include <Eigen/Core>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace fragile::sensitivity {

/// One quantized linear layer.
struct LayerInfo {
  std::string name;              ///< HF name, e.g. "model.layers.3.mlp.down_proj"
  std::size_t block = 0;         ///< transformer block index
  model::LinearKind kind = model::LinearKind::kQ;
  std::uint64_t parameters = 0;  ///< weight count (out * in)
};

/// One candidate treatment of a layer.
struct Option {
  std::string label;            ///< "3bit", "r=0.05", ...
  double value = 0.0;           ///< bits, or high-impact ratio
  std::uint64_t cost_bits = 0;  ///< exact storage of the layer under this option
  std::optional<double> score;  ///< lower = better; unset until a metric fills it
};

class SensitivityTable;

/// Paper 002's M (Eq. 6-8), block-diagonal by transformer block: for each block, a dense
/// symmetric matrix over the stacked options of that block's layers (in table order), so
/// M[(l1,m1),(l2,m2)] = Delta_{l1,m1}^T H Delta_{l2,m2}. Entries between two options of the same
/// layer never enter delta^T M delta (one option per layer) and are kept at 0.
class BlockMatrix {
 public:
  BlockMatrix() = default;

  /// All-zero M shaped after `table` (its blocks, layers and options).
  static BlockMatrix zeros(const SensitivityTable& table);

  [[nodiscard]] std::size_t num_blocks() const noexcept { return blocks_.size(); }
  /// Block ids (ascending) as they appear in the table.
  [[nodiscard]] std::size_t block_id(std::size_t k) const { return blocks_.at(k).id; }
  /// Global layer indices of block k, in table order.
  [[nodiscard]] const std::vector<std::size_t>& block_layers(std::size_t k) const {
    return blocks_.at(k).layers;
  }
  [[nodiscard]] const Eigen::MatrixXd& block(std::size_t k) const { return blocks_.at(k).m; }
  [[nodiscard]] Eigen::MatrixXd& block(std::size_t k) { return blocks_.at(k).m; }
  /// Number of layers the matrix was shaped for.
  [[nodiscard]] std::size_t num_layers() const noexcept { return where_.size(); }
  [[nodiscard]] std::size_t block_of_layer(std::size_t l) const { return where_.at(l).first; }
  /// Row of (layer l, option m) inside its block's matrix.
  [[nodiscard]] std::size_t row(std::size_t l, std::size_t m) const {
    require<ArgumentError>(l < where_.size(), "BlockMatrix: layer {} out of range ({} layers)", l,
                           where_.size());
    const auto& b = blocks_[where_[l].first];
    const std::size_t pos = where_[l].second;
    const std::size_t n = b.offsets[pos + 1] - b.offsets[pos];
    require<ArgumentError>(m < n, "BlockMatrix: option {} out of range for layer {} ({} options)",
                           m, l, n);
    return b.offsets[pos] + m;
  }
  /// True when layers l1 and l2 sit in the same block.
  [[nodiscard]] bool same_block(std::size_t l1, std::size_t l2) const {
    return where_.at(l1).first == where_.at(l2).first;
  }
  /// M[(l1,m1),(l2,m2)]; 0 across blocks.
  [[nodiscard]] double at(std::size_t l1, std::size_t m1, std::size_t l2, std::size_t m2) const {
    const std::size_t r1 = row(l1, m1), r2 = row(l2, m2);
    if (!same_block(l1, l2)) return 0.0;
    return blocks_[where_[l1].first].m(static_cast<Eigen::Index>(r1),
                                       static_cast<Eigen::Index>(r2));
  }
  /// Sets M[(l1,m1),(l2,m2)] and its mirror; both layers must share a block.
  void set(std::size_t l1, std::size_t m1, std::size_t l2, std::size_t m2, double v) {
    require<ArgumentError>(same_block(l1, l2),
                           "BlockMatrix: layers {} and {} are in different blocks; M is block-"
                           "diagonal and holds no entry between them",
                           l1, l2);
    const auto r1 = static_cast<Eigen::Index>(row(l1, m1));
    const auto r2 = static_cast<Eigen::Index>(row(l2, m2));
    auto& m = blocks_[where_[l1].first].m;
    m(r1, r2) = v;
    m(r2, r1) = v;
  }

  /// delta^T M delta for one option per layer (summed block by block, in block order).
  [[nodiscard]] double objective(const std::vector<std::size_t>& choice) const;

  /// Checks shape against `table`, finiteness and symmetry (|M - M^T| <= 1e-9 max|M|, exact
  /// symmetry is then restored by the caller through symmetrize()).
  void validate(const SensitivityTable& table) const;
  /// Replaces each block by (M + M^T)/2.
  void symmetrize() {
    for (auto& b : blocks_) b.m = (0.5 * (b.m + b.m.transpose())).eval();
  }

 private:
  struct Block {
    std::size_t id = 0;
    std::vector<std::size_t> layers;
    std::vector<std::size_t> offsets;  // size layers+1: first row of each layer's options
    Eigen::MatrixXd m;
  };
  std::vector<Block> blocks_;
  std::vector<std::pair<std::size_t, std::size_t>> where_;  // layer -> (block k, position)
};

/// Per layer: description + options (cost, score); see the header comment.
class SensitivityTable {
 public:
  SensitivityTable() = default;
  /// `score_name` says what the scores are ("D_l", "loss_increase", "V_l", ...).
  explicit SensitivityTable(std::string score_name) : score_name_(std::move(score_name)) {}

  [[nodiscard]] const std::string& score_name() const noexcept { return score_name_; }
  void set_score_name(std::string s) { score_name_ = std::move(s); }

  /// Appends a layer; returns its index.
  std::size_t add_layer(LayerInfo info) {
    layers_.push_back(std::move(info));
    options_.emplace_back();
    return layers_.size() - 1;
  }
  /// Appends an option to layer l; returns its index within the layer.
  std::size_t add_option(std::size_t l, Option option) {
    check_layer(l, "add_option");
    options_[l].push_back(std::move(option));
    return options_[l].size() - 1;
  }
  void set_score(std::size_t l, std::size_t o, double score) {
    option_ref(l, o, "set_score").score = score;
  }

  [[nodiscard]] std::size_t num_layers() const noexcept { return layers_.size(); }
  [[nodiscard]] std::size_t num_options(std::size_t l) const {
    check_layer(l, "num_options");
    return options_[l].size();
  }
  [[nodiscard]] const LayerInfo& layer(std::size_t l) const {
    check_layer(l, "layer");
    return layers_[l];
  }
  [[nodiscard]] const std::vector<LayerInfo>& layers() const noexcept { return layers_; }
  [[nodiscard]] const Option& option(std::size_t l, std::size_t o) const {
    return const_cast<SensitivityTable*>(this)->option_ref(l, o, "option");
  }
  [[nodiscard]] const std::vector<Option>& options(std::size_t l) const {
    check_layer(l, "options");
    return options_[l];
  }
  [[nodiscard]] std::uint64_t cost(std::size_t l, std::size_t o) const {
    return option(l, o).cost_bits;
  }
  /// score(l, o); throws ConfigError when it was never set.
  [[nodiscard]] double score(std::size_t l, std::size_t o) const {
    const Option& opt = option(l, o);
    require<ConfigError>(opt.score.has_value(),
                         "SensitivityTable: score of layer '{}' option '{}' was never set",
                         layers_[l].name, opt.label);
    return *opt.score;
  }
  /// Index of the option of layer l whose value equals `value` exactly, if any.
  [[nodiscard]] std::optional<std::size_t> find_option(std::size_t l, double value) const {
    const auto& opts = options(l);
    for (std::size_t o = 0; o < opts.size(); ++o)
      if (opts[o].value == value) return o;
    return std::nullopt;
  }

  /// Total parameter count of all layers.
  [[nodiscard]] std::uint64_t total_parameters() const noexcept {
    std::uint64_t n = 0;
    for (const auto& l : layers_) n += l.parameters;
    return n;
  }

  /// Named per-layer scalar metrics (e.g. "fisher_trace"), one value per layer.
  void set_layer_metric(const std::string& name, std::vector<double> values) {
    require<ArgumentError>(values.size() == layers_.size(),
                           "SensitivityTable: metric '{}' has {} values, table has {} layers", name,
                           values.size(), layers_.size());
    for (std::size_t l = 0; l < values.size(); ++l)
      require<ConfigError>(std::isfinite(values[l]),
                           "SensitivityTable: metric '{}' of layer '{}' is {}, expected finite",
                           name, layers_[l].name, values[l]);
    layer_metrics_[name] = std::move(values);
  }
  [[nodiscard]] const std::vector<double>& layer_metric(const std::string& name) const {
    auto it = layer_metrics_.find(name);
    if (it == layer_metrics_.end()) {
      std::string known;
      for (const auto& [k, v] : layer_metrics_) known += (known.empty() ? "" : ", ") + k;
      raise<ConfigError>("SensitivityTable: no layer metric '{}' (table has: {})", name,
                         known.empty() ? std::string("none") : known);
    }
    return it->second;
  }
  [[nodiscard]] const std::map<std::string, std::vector<double>>& layer_metrics() const noexcept {
    return layer_metrics_;
  }

  /// Paper 002's block-diagonal M (optional; BlockQP reads it).
  void set_interactions(BlockMatrix m) {
    m.validate(*this);
    m.symmetrize();
    interactions_ = std::move(m);
  }
  [[nodiscard]] const std::optional<BlockMatrix>& interactions() const noexcept {
    return interactions_;
  }

  /// Throws ConfigError naming the layer and option for: no layers, a non-positive parameter
  /// count, a layer without options, an unset / NaN / Inf score, or a total cost that overflows.
  /// (Costs are unsigned, so they cannot be negative here; JSON input rejects negative costs.)
  /// `require_scores = false` skips the score checks (a table whose objective is M alone).
  void validate(bool require_scores = true) const {
    require<ConfigError>(!layers_.empty(), "SensitivityTable ('{}'): the table has no layers",
                         score_name_);
    std::uint64_t max_total = 0;
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      const auto& info = layers_[l];
      require<ConfigError>(info.parameters > 0,
                           "SensitivityTable: layer {} '{}' has parameter count 0, expected > 0", l,
                           info.name);
      require<ConfigError>(!options_[l].empty(), "SensitivityTable: layer {} '{}' has no options",
                           l, info.name);
      std::uint64_t layer_max = 0;
      for (const auto& opt : options_[l]) {
        if (require_scores || opt.score.has_value()) {
          require<ConfigError>(opt.score.has_value(),
                               "SensitivityTable: layer '{}' option '{}' is missing its score",
                               info.name, opt.label);
          require<ConfigError>(std::isfinite(*opt.score),
                               "SensitivityTable: layer '{}' option '{}' has score {}, expected a "
                               "finite number",
                               info.name, opt.label, *opt.score);
        }
        require<ConfigError>(
            std::isfinite(opt.value),
            "SensitivityTable: layer '{}' option '{}' has value {}, expected finite", info.name,
            opt.label, opt.value);
        layer_max = std::max(layer_max, opt.cost_bits);
      }
      constexpr std::uint64_t kHalf = std::numeric_limits<std::uint64_t>::max() >> 1;
      require<ConfigError>(layer_max <= kHalf && max_total <= kHalf - layer_max,
                           "SensitivityTable: total cost overflows 63 bits at layer '{}'",
                           info.name);
      max_total += layer_max;
    }
    if (interactions_) interactions_->validate(*this);
  }

 private:
  void check_layer(std::size_t l, const char* what) const {
    require<ArgumentError>(l < layers_.size(),
                           "SensitivityTable::{}: layer index {} out of range ({} layers)", what, l,
                           layers_.size());
  }
  Option& option_ref(std::size_t l, std::size_t o, const char* what) {
    check_layer(l, what);
    require<ArgumentError>(
        o < options_[l].size(),
        "SensitivityTable::{}: option index {} out of range for layer '{}' ({} options)", what, o,
        layers_[l].name, options_[l].size());
    return options_[l][o];
  }

  std::string score_name_;
  std::vector<LayerInfo> layers_;
  std::vector<std::vector<Option>> options_;
  std::map<std::string, std::vector<double>> layer_metrics_;
  std::optional<BlockMatrix> interactions_;
};

inline BlockMatrix BlockMatrix::zeros(const SensitivityTable& table) {
  BlockMatrix bm;
  std::map<std::size_t, std::size_t> index;  // block id -> k
  for (const auto& info : table.layers()) index.emplace(info.block, 0);
  std::size_t k = 0;
  for (auto& [id, kk] : index) {
    kk = k++;
    bm.blocks_.push_back(Block{id, {}, {0}, {}});
  }
  bm.where_.resize(table.num_layers());
  for (std::size_t l = 0; l < table.num_layers(); ++l) {
    auto& b = bm.blocks_[index[table.layer(l).block]];
    bm.where_[l] = {index[table.layer(l).block], b.layers.size()};
    b.layers.push_back(l);
    b.offsets.push_back(b.offsets.back() + table.num_options(l));
  }
  for (auto& b : bm.blocks_) {
    const auto n = static_cast<Eigen::Index>(b.offsets.back());
    b.m = Eigen::MatrixXd::Zero(n, n);
  }
  return bm;
}

inline double BlockMatrix::objective(const std::vector<std::size_t>& choice) const {
  require<ArgumentError>(choice.size() == where_.size(),
                         "BlockMatrix::objective: {} choices for {} layers", choice.size(),
                         where_.size());
  double total = 0.0;
  std::vector<Eigen::Index> rows;
  for (const auto& b : blocks_) {
    rows.clear();
    for (std::size_t l : b.layers) rows.push_back(static_cast<Eigen::Index>(row(l, choice[l])));
    double v = 0.0;
    for (std::size_t i = 0; i < rows.size(); ++i) v += b.m(rows[i], rows[i]);
    for (std::size_t i = 0; i < rows.size(); ++i)
      for (std::size_t j = i + 1; j < rows.size(); ++j) v += 2.0 * b.m(rows[i], rows[j]);
    total += v;
  }
  return total;
}

inline void BlockMatrix::validate(const SensitivityTable& table) const {
  require<ConfigError>(where_.size() == table.num_layers(),
                       "BlockMatrix: shaped for {} layers, table has {}", where_.size(),
                       table.num_layers());
  for (std::size_t l = 0; l < table.num_layers(); ++l) {
    const auto& b = blocks_[where_[l].first];
    const std::size_t pos = where_[l].second;
    require<ConfigError>(b.id == table.layer(l).block && b.layers[pos] == l,
                         "BlockMatrix: layer '{}' is in block {} of the table but block {} of M",
                         table.layer(l).name, table.layer(l).block, b.id);
    require<ConfigError>(b.offsets[pos + 1] - b.offsets[pos] == table.num_options(l),
                         "BlockMatrix: layer '{}' has {} options in M, {} in the table",
                         table.layer(l).name, b.offsets[pos + 1] - b.offsets[pos],
                         table.num_options(l));
  }
  for (const auto& b : blocks_) {
    const Eigen::Index n = b.m.rows();
    require<ConfigError>(b.m.cols() == n && static_cast<std::size_t>(n) == b.offsets.back(),
                         "BlockMatrix: block {} is {}x{}, expected {}x{}", b.id, b.m.rows(),
                         b.m.cols(), b.offsets.back(), b.offsets.back());
    double scale = 0.0;
    for (Eigen::Index i = 0; i < n; ++i)
      for (Eigen::Index j = 0; j < n; ++j) {
        require<ConfigError>(std::isfinite(b.m(i, j)),
                             "BlockMatrix: block {} entry ({}, {}) is {}, expected finite", b.id, i,
                             j, b.m(i, j));
        scale = std::max(scale, std::abs(b.m(i, j)));
      }
    auto name_of = [&](Eigen::Index r) {
      std::size_t pos = 0;
      while (b.offsets[pos + 1] <= static_cast<std::size_t>(r)) ++pos;
      return fmt::format("('{}', option {})", table.layer(b.layers[pos]).name,
                         static_cast<std::size_t>(r) - b.offsets[pos]);
    };
    for (Eigen::Index i = 0; i < n; ++i)
      for (Eigen::Index j = i + 1; j < n; ++j)
        require<ConfigError>(std::abs(b.m(i, j) - b.m(j, i)) <= 1e-9 * scale,
                             "BlockMatrix: M is not symmetric in block {}: M[{}, {}] = {} but "
                             "M[{}, {}] = {}",
                             b.id, name_of(i), name_of(j), b.m(i, j), name_of(j), name_of(i),
                             b.m(j, i));
  }
}

// ---- JSON -------------------------------------------------------------------------------

inline void to_json(nlohmann::json& j, const SensitivityTable& t) {
  using nlohmann::json;
  json layers = json::array();
  for (std::size_t l = 0; l < t.num_layers(); ++l) {
    const auto& info = t.layer(l);
    json opts = json::array();
    for (const auto& o : t.options(l)) {
      json jo = {{"label", o.label}, {"value", o.value}, {"cost_bits", o.cost_bits}};
      jo["score"] = o.score ? json(*o.score) : json(nullptr);
      opts.push_back(std::move(jo));
    }
    layers.push_back({{"name", info.name},
                      {"block", info.block},
                      {"kind", model::linear_kind_name(info.kind)},
                      {"parameters", info.parameters},
                      {"options", std::move(opts)}});
  }
  j = {{"score_name", t.score_name()},
       {"layers", std::move(layers)},
       {"layer_metrics", t.layer_metrics()}};
  if (t.interactions()) {
    const auto& m = *t.interactions();
    json blocks = json::array();
    for (std::size_t k = 0; k < m.num_blocks(); ++k) {
      const auto& b = m.block(k);
      json rows = json::array();
      for (Eigen::Index r = 0; r < b.rows(); ++r) {
        json row = json::array();
        for (Eigen::Index c = 0; c < b.cols(); ++c) row.push_back(b(r, c));
        rows.push_back(std::move(row));
      }
      blocks.push_back({{"block", m.block_id(k)}, {"m", std::move(rows)}});
    }
    j["interactions"] = std::move(blocks);
  }
}

namespace detail {
template <class T>
T json_field(const nlohmann::json& j, const char* field, const std::string& where) {
  require<ConfigError>(j.is_object() && j.contains(field),
                       "SensitivityTable JSON: {} lacks field '{}'", where, field);
  try {
    return j.at(field).get<T>();
  } catch (const nlohmann::json::exception& e) {
    raise<ConfigError>("SensitivityTable JSON: {} field '{}' has the wrong type ({})", where, field,
                       e.what());
  }
}
}  // namespace detail

inline void from_json(const nlohmann::json& j, SensitivityTable& t) {
  using nlohmann::json;
  t = SensitivityTable(detail::json_field<std::string>(j, "score_name", "the table"));
  const auto layers = detail::json_field<json>(j, "layers", "the table");
  require<ConfigError>(layers.is_array(), "SensitivityTable JSON: 'layers' must be an array");
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const auto& jl = layers[l];
    const std::string where = fmt::format("layer {}", l);
    LayerInfo info;
    info.name = detail::json_field<std::string>(jl, "name", where);
    const std::string lw = fmt::format("layer '{}'", info.name);
    auto non_negative_int = [&](const json& v, const char* field, const std::string& w) {
      require<ConfigError>(v.is_object() && v.contains(field),
                           "SensitivityTable JSON: {} lacks field '{}'", w, field);
      const json& x = v.at(field);
      require<ConfigError>(
          x.is_number_unsigned() || (x.is_number_integer() && x.get<std::int64_t>() >= 0),
          "SensitivityTable JSON: {} field '{}' is {}, expected a non-negative "
          "integer",
          w, field, x.dump());
      return x.get<std::uint64_t>();
    };
    info.block = static_cast<std::size_t>(non_negative_int(jl, "block", lw));
    const auto kind = detail::json_field<std::string>(jl, "kind", lw);
    const auto parsed = model::parse_linear_kind(kind);
    require<ConfigError>(parsed.has_value(),
                         "SensitivityTable JSON: {} field 'kind' is '{}', expected one of q_proj, "
                         "k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj",
                         lw, kind);
    info.kind = *parsed;
    info.parameters = non_negative_int(jl, "parameters", lw);
    const std::size_t li = t.add_layer(info);
    const auto opts = detail::json_field<json>(jl, "options", lw);
    require<ConfigError>(opts.is_array(), "SensitivityTable JSON: {} 'options' must be an array",
                         lw);
    for (std::size_t o = 0; o < opts.size(); ++o) {
      Option opt;
      opt.label =
          detail::json_field<std::string>(opts[o], "label", fmt::format("{} option {}", lw, o));
      const std::string ow = fmt::format("{} option '{}'", lw, opt.label);
      opt.value = detail::json_field<double>(opts[o], "value", ow);
      opt.cost_bits = non_negative_int(opts[o], "cost_bits", ow);
      if (opts[o].contains("score") && !opts[o].at("score").is_null())
        opt.score = detail::json_field<double>(opts[o], "score", ow);
      t.add_option(li, std::move(opt));
    }
  }
  if (j.contains("layer_metrics")) {
    require<ConfigError>(j.at("layer_metrics").is_object(),
                         "SensitivityTable JSON: 'layer_metrics' must be an object");
    for (const auto& [name, values] : j.at("layer_metrics").items()) {
      std::vector<double> v;
      try {
        v = values.get<std::vector<double>>();
      } catch (const nlohmann::json::exception&) {
        raise<ConfigError>("SensitivityTable JSON: layer metric '{}' must be an array of numbers",
                           name);
      }
      t.set_layer_metric(name, std::move(v));
    }
  }
  if (j.contains("interactions")) {
    auto m = BlockMatrix::zeros(t);
    const auto& blocks = j.at("interactions");
    require<ConfigError>(blocks.is_array() && blocks.size() == m.num_blocks(),
                         "SensitivityTable JSON: 'interactions' must list {} blocks",
                         m.num_blocks());
    for (std::size_t k = 0; k < m.num_blocks(); ++k) {
      const auto rows = detail::json_field<std::vector<std::vector<double>>>(
          blocks[k], "m", fmt::format("interactions block {}", k));
      auto& b = m.block(k);
      require<ConfigError>(rows.size() == static_cast<std::size_t>(b.rows()),
                           "SensitivityTable JSON: interactions block {} has {} rows, expected {}",
                           k, rows.size(), b.rows());
      for (Eigen::Index r = 0; r < b.rows(); ++r) {
        require<ConfigError>(
            rows[static_cast<std::size_t>(r)].size() == static_cast<std::size_t>(b.cols()),
            "SensitivityTable JSON: interactions block {} row {} has {} entries, "
            "expected {}",
            k, r, rows[static_cast<std::size_t>(r)].size(), b.cols());
        for (Eigen::Index c = 0; c < b.cols(); ++c)
          b(r, c) = rows[static_cast<std::size_t>(r)][static_cast<std::size_t>(c)];
      }
    }
    t.set_interactions(std::move(m));
  }
  t.validate();
}

}  // namespace fragile::sensitivity
