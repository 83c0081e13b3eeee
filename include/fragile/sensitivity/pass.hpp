// One calibration pass that fills score(l, o) of every metric for every linear layer l and every
// candidate option o (bit widths, specs) of a CandidateSet made by any quantizer.
//
//   auto cands  = sensitivity::quantize_candidates(model, quant::Rtn{}, sensitivity::bit_options(bits, spec));
//   auto result = sensitivity::metric_pass(model, calibration, cands);
//   SensitivityTable d = result.table<sensitivity::Visibility>();   // for any allocator
//
// Per layer and batch the pass forms dW_o = Q_o(W) - W for all options at once, multiplies the
// batch's inputs by the stacked errors once (dy for every option, in row chunks so memory stays
// bounded), and reduces the sums of metrics.hpp in double. The per-row partial sums are kept
// and added in row order, so the result does not depend on the thread count.
// Labels: LabelSource::kModelSample (default, paper 000's procedure: labels drawn from the
// model's own predictions, the Monte-Carlo true Fisher) or kData (empirical Fisher).
#pragma once

#include "fragile/backend/backend.hpp"
#include "fragile/core/error.hpp"
#include "fragile/core/tensor.hpp"
#include "fragile/data/windows.hpp"
#include "fragile/model/capture.hpp"
#include "fragile/model/transformer.hpp"
#include "fragile/sensitivity/candidates.hpp"
#include "fragile/sensitivity/metrics.hpp"
#include "fragile/sensitivity/nsds.hpp"
#include "fragile/sensitivity/table.hpp"
#include "fragile/study/progress.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace fragile::sensitivity {

/// Every sum: what metric_pass collects unless told otherwise.
inline constexpr StatNeeds kAllStats{true, true, true, true};

struct MetricPassOptions {
  model::LabelSource labels = model::LabelSource::kModelSample;
  std::uint64_t seed = 0;        ///< for kModelSample
  std::size_t batch_size = 1;    ///< windows per forward/backward
  StatNeeds needs = kAllStats;   ///< e.g. needs_of<Visibility, FisherTrace>()
  std::size_t row_chunk_floats = std::size_t{1} << 22;  ///< bound on the dy buffer (floats)
  study::Progress::Sink progress = study::Progress::default_sink();
};

/// The sums of one pass; metrics turn them into scores.
class MetricPassResult {
 public:
  std::vector<LayerInfo> layers;          ///< one per delivered linear layer, model order
  std::vector<std::size_t> linear_index;  ///< Transformer::linears() index of each layer
  std::vector<std::string> option_labels;
  std::vector<double> option_values;
  std::vector<std::vector<std::uint64_t>> cost_bits;  ///< [layer][option]
  std::vector<LayerStats> layer_stats;
  std::vector<std::vector<OptionStats>> option_stats;  ///< [layer][option]
  StatNeeds needs{};
  model::LabelSource labels = model::LabelSource::kModelSample;
  double mean_window_loss = 0.0;

  [[nodiscard]] std::size_t num_layers() const noexcept { return layers.size(); }
  [[nodiscard]] std::size_t num_options() const noexcept { return option_labels.size(); }

  /// Scores of metric M for option `o`, one per layer.
  template <SensitivityMetric M>
  [[nodiscard]] std::vector<double> scores(std::size_t o) const {
    check<M>(o);
    std::vector<double> v(layers.size());
    for (std::size_t l = 0; l < layers.size(); ++l)
      v[l] = M::score(layer_stats[l], option_stats[l][o]);
    return v;
  }

  /// A SensitivityTable of metric M: every layer, every option with its storage cost.
  template <SensitivityMetric M>
  [[nodiscard]] SensitivityTable table() const {
    check<M>(0);
    SensitivityTable t{std::string(M::name)};
    for (std::size_t l = 0; l < layers.size(); ++l) {
      t.add_layer(layers[l]);
      for (std::size_t o = 0; o < option_labels.size(); ++o)
        t.add_option(l, Option{option_labels[o], option_values[o], cost_bits[l][o],
                               M::score(layer_stats[l], option_stats[l][o])});
    }
    return t;
  }

  [[nodiscard]] nlohmann::json to_json() const {
    nlohmann::json j;
    j["labels"] = labels == model::LabelSource::kData ? "data" : "model_sample";
    j["mean_window_loss"] = mean_window_loss;
    j["options"] = option_labels;
    j["option_values"] = option_values;
    auto& ls = j["layers"] = nlohmann::json::array();
    for (std::size_t l = 0; l < layers.size(); ++l) {
      const auto& s = layer_stats[l];
      nlohmann::json o = nlohmann::json::array();
      for (std::size_t k = 0; k < option_labels.size(); ++k) {
        const auto& q = option_stats[l][k];
        o.push_back({{"cost_bits", cost_bits[l][k]}, {"weight_sse", q.weight_sse},
                     {"gdy2", q.gdy2}, {"gdy2_diag", q.gdy2_diag}, {"dy2", q.dy2},
                     {"input_power", q.input_power}, {"fisher_diag", q.fisher_diag}});
      }
      ls.push_back({{"name", layers[l].name}, {"block", layers[l].block},
                    {"kind", model::linear_kind_name(layers[l].kind)}, {"parameters", s.parameters},
                    {"tokens", s.tokens}, {"positions", s.positions}, {"windows", s.windows},
                    {"g2", s.g2}, {"options", o}});
    }
    return j;
  }

 private:
  template <SensitivityMetric M>
  void check(std::size_t o) const {
    require<ArgumentError>(o < option_labels.size() || (o == 0 && option_labels.empty()),
                           "MetricPassResult: option {} out of range ({} options)", o,
                           option_labels.size());
    const StatNeeds n = M::needs;
    require<ConfigError>((!n.gradients || needs.gradients) &&
                             (!n.output_error || needs.output_error) &&
                             (!n.input_power || needs.input_power) &&
                             (!n.weight_grad_sq || needs.weight_grad_sq),
                         "MetricPassResult: metric '{}' needs sums this pass did not collect "
                         "(run metric_pass with needs including needs_of<{}>())",
                         M::name, M::name);
  }
};

/// The capture observer behind metric_pass, usable on its own in any capture pass (e.g. beside
/// a model::GramAccumulator, so GPTQ's H and the metric sums come from one pass). It sums
/// over every layer of `linears` that has candidates; weights[i] is linear i's FP weight (host).
/// The per-token work (dy = x dW^T, the row sums) runs on backend B, in B's memory.
template <class B>
class MetricAccumulator {
 public:
  MetricAccumulator(const std::vector<model::LinearInfo>& linears, std::vector<const float*> weights,
                    const CandidateSet& candidates, StatNeeds needs,
                    std::size_t row_chunk_floats = std::size_t{1} << 22)
      : cands_(candidates), weights_(std::move(weights)), slot_(linears.size(), kNone),
        chunk_floats_(row_chunk_floats) {
    require<ArgumentError>(candidates.layers() == linears.size() && weights_.size() == linears.size(),
                           "MetricAccumulator: {} linears, {} weights and a candidate set of {} "
                           "layers; expected the same number", linears.size(), weights_.size(),
                           candidates.layers());
    require<ArgumentError>(chunk_floats_ > 0, "MetricAccumulator: row_chunk_floats must be positive");
    r_.needs = needs;
    r_.option_labels = candidates.labels();
    r_.option_values = candidates.values();
    for (const auto& li : linears) {
      if (!candidates.has(li.index)) continue;
      require<ArgumentError>(weights_[li.index] != nullptr, "MetricAccumulator: no weight for '{}'",
                             li.name);
      slot_[li.index] = r_.layers.size();
      r_.layers.push_back(LayerInfo{li.name, li.block, li.kind, li.parameters()});
      r_.linear_index.push_back(li.index);
      std::vector<std::uint64_t> costs;
      for (std::size_t k = 0; k < candidates.options(); ++k) {
        const auto& c = candidates.at(li.index, k);
        const auto [rows, cols] = c.shape();
        require<ShapeError>(rows == static_cast<Eigen::Index>(li.out_features) &&
                                cols == static_cast<Eigen::Index>(li.in_features),
                            "MetricAccumulator: candidate '{}' of '{}' is ({}, {}), expected ({}, {})",
                            c.label, li.name, rows, cols, li.out_features, li.in_features);
        costs.push_back(c.cost_bits);
      }
      r_.cost_bits.push_back(std::move(costs));
    }
    require<ArgumentError>(!r_.layers.empty(), "MetricAccumulator: the candidate set holds no layer");
    r_.layer_stats.assign(r_.layers.size(), LayerStats{});
    for (std::size_t l = 0; l < r_.layers.size(); ++l) r_.layer_stats[l].parameters = r_.layers[l].parameters;
    r_.option_stats.assign(r_.layers.size(), std::vector<OptionStats>(candidates.options()));
  }

  /// Linear indices this accumulator reads (for CaptureOptions::layers).
  [[nodiscard]] const std::vector<std::size_t>& layers() const noexcept { return r_.linear_index; }
  /// Ticks once per observed layer capture.
  void set_progress(study::Progress* p) noexcept { progress_ = p; }
  [[nodiscard]] const MetricPassResult& result() const noexcept { return r_; }
  [[nodiscard]] MetricPassResult& result() noexcept { return r_; }

  [[nodiscard]] model::CaptureNeeds needs() const noexcept {
    const StatNeeds& n = r_.needs;
    return {.x = n.output_error || n.input_power || n.weight_grad_sq,
            .g = n.gradients,
            .weight_grad_sq = n.weight_grad_sq};
  }

  void observe(const model::LayerBatch& c) {
    require<ArgumentError>(c.layer != nullptr && c.layer->index < slot_.size(),
                           "MetricAccumulator: capture of an unknown layer");
    const std::size_t l = slot_[c.layer->index];
    if (l == kNone) return;
    const auto& li = *c.layer;
    const auto out = static_cast<Eigen::Index>(li.out_features);
    const auto in = static_cast<Eigen::Index>(li.in_features);
    const std::size_t K = cands_.options();
    const StatNeeds& n = r_.needs;
    LayerStats& ls = r_.layer_stats[l];
    auto& os = r_.option_stats[l];

    // dW of every option, stacked: rows [k*out, (k+1)*out).
    dw_.resize(static_cast<Eigen::Index>(K) * out, in);
    Eigen::Map<const MatrixF> w(weights_[li.index], out, in);
    for (std::size_t k = 0; k < K; ++k) {
      auto blk = dw_.middleRows(static_cast<Eigen::Index>(k) * out, out);
      cands_.at(li.index, k).dequantize_into(blk);
      blk -= w;
    }
    if (ls.windows == 0)
      for (std::size_t k = 0; k < K; ++k)
        os[k].weight_sse = dw_.middleRows(static_cast<Eigen::Index>(k) * out, out)
                               .cast<double>().squaredNorm();

    const std::size_t T = c.seq_len, S = c.scored_positions, rows = c.rows();
    const backend::ScoredRows scored{T, S};
    ls.windows += c.windows;
    ls.positions += rows;
    ls.tokens += c.windows * S;

    if (n.gradients) {
      require<ArgumentError>(static_cast<bool>(c.g),
                             "metric pass: layer '{}' delivered no gradients", li.name);
      const auto s = row_sums(rows, [&](double* dst) {
        Ops::scored_square_sums(dst, c.g.data(), rows, li.out_features, 0, scored);
      });
      double g2 = 0.0;
      for (double v : s) g2 += v;
      ls.g2 += g2;
    }
    if (n.input_power || n.weight_grad_sq) {
      const auto dw2 = dw_.cast<double>().array().square().eval();
      if (n.input_power) {
        require<ArgumentError>(static_cast<bool>(c.x),
                               "metric pass: layer '{}' delivered no inputs", li.name);
        const auto power_v = row_sums(li.in_features, [&](double* dst) {
          Ops::column_square_sums(dst, c.x.data(), rows, li.in_features);
        });
        const Eigen::Map<const Eigen::RowVectorXd> power(power_v.data(), in);
        for (std::size_t k = 0; k < K; ++k)
          os[k].input_power +=
              (dw2.middleRows(static_cast<Eigen::Index>(k) * out, out).rowwise() *
               power.array()).sum();
      }
      if (n.weight_grad_sq) {
        require<ArgumentError>(static_cast<bool>(c.weight_grad_sq),
                               "metric pass: layer '{}' delivered no weight gradients", li.name);
        Eigen::Map<const MatrixF> f(c.weight_grad_sq.host().data(), out, in);
        const Eigen::ArrayXXd fd = f.cast<double>().array();
        for (std::size_t k = 0; k < K; ++k)
          os[k].fisher_diag +=
              (dw2.middleRows(static_cast<Eigen::Index>(k) * out, out) * fd).sum();
      }
    }
    if (n.output_error) output_error_sums(c, os, K, out, in);
    require_finite_sums(li, ls, os);
    if (progress_) progress_->tick(li.name);
  }

  static constexpr std::size_t kNone = static_cast<std::size_t>(-1);

 private:
  using Ops = backend::Ops<B>;
  template <class T>
  using Buffer = typename B::template Buffer<T>;

  /// n doubles written by `kernel` into backend memory, on the host.
  template <class Kernel>
  std::vector<double> row_sums(std::size_t n, Kernel&& kernel) {
    if (sums_.size() < n) sums_ = Buffer<double>(n);
    kernel(sums_.data());
    std::vector<double> host(n);
    Ops::download(host.data(), sums_.data(), n);
    return host;
  }

  /// dw_ in backend memory: itself on a host backend, an uploaded copy otherwise.
  const float* dw_on_backend() {
    if constexpr (B::memory == backend::Memory::kHost) {
      return dw_.data();
    } else {
      const auto n = static_cast<std::size_t>(dw_.size());
      if (dw_dev_.size() != n) dw_dev_ = Buffer<float>(n);
      Ops::upload(dw_dev_.data(), dw_.data(), n);
      return dw_dev_.data();
    }
  }

  // A NaN or infinity in a layer's sums (its gradients overflowed in the backward) is named here,
  // with the layer and the sum, rather than after the pass in the statistics.
  void require_finite_sums(const model::LinearInfo& li, const LayerStats& ls,
                           const std::vector<OptionStats>& os) const {
    require<NumericError>(std::isfinite(ls.g2),
                          "metric pass: the output gradients of '{}' are not finite (sum g^2 = "
                          "{}): the backward overflowed", li.name, ls.g2);
    for (std::size_t k = 0; k < os.size(); ++k) {
      const OptionStats& o = os[k];
      const std::pair<const char*, double> sums[] = {
          {"sum (g.dy)^2", o.gdy2},        {"sum (g_i dy_i)^2", o.gdy2_diag},
          {"sum dy^2", o.dy2},             {"input power", o.input_power},
          {"Fisher diagonal", o.fisher_diag}, {"weight SSE", o.weight_sse}};
      for (const auto& [what, v] : sums)
        require<NumericError>(std::isfinite(v),
                              "metric pass: {} of '{}' (candidate {}) is not finite ({}): the "
                              "activations or gradients overflowed", what, li.name, k, v);
    }
  }

  // sum_t (g.dy)^2, sum_t sum_i (g_i dy_i)^2, sum_t ||dy||^2 for every option, over row chunks.
  void output_error_sums(const model::LayerBatch& c, std::vector<OptionStats>& os,
                         std::size_t K, Eigen::Index out, Eigen::Index in) {
    require<ArgumentError>(c.x && c.g, "metric pass: layer '{}' delivered no inputs or gradients",
                           c.layer->name);
    const std::size_t T = c.seq_len, S = c.scored_positions, rows = c.rows();
    const auto o = static_cast<std::size_t>(out), i_ = static_cast<std::size_t>(in);
    const std::size_t width = K * o;
    const std::size_t chunk = std::clamp<std::size_t>(chunk_floats_ / std::max<std::size_t>(width, 1), 1, rows);
    constexpr std::size_t kSums = 3;
    const float* dw = dw_on_backend();
    if (dy_.size() < std::min(chunk, rows) * width) dy_ = Buffer<float>(std::min(chunk, rows) * width);
    for (std::size_t r0 = 0; r0 < rows; r0 += chunk) {
      const std::size_t nr = std::min(chunk, rows - r0);
      Ops::gemm(backend::Trans::kN, backend::Trans::kT, nr, width, i_, 1.0f,
                c.x.data() + r0 * i_, i_, dw, i_, 0.0f, dy_.data(), width);
      const auto part = row_sums(nr * K * kSums, [&](double* dst) {
        Ops::output_error_partials(dst, c.g.data() + r0 * o, dy_.data(), nr, K, o, r0,
                                   backend::ScoredRows{T, S});
      });
      for (std::size_t i = 0; i < nr; ++i)
        for (std::size_t k = 0; k < K; ++k) {
          const double* p = part.data() + (i * K + k) * kSums;
          os[k].gdy2 += p[0];
          os[k].gdy2_diag += p[1];
          os[k].dy2 += p[2];
        }
    }
  }

  const CandidateSet& cands_;
  std::vector<const float*> weights_;
  std::vector<std::size_t> slot_;
  std::size_t chunk_floats_;
  study::Progress* progress_ = nullptr;
  MetricPassResult r_;
  MatrixF dw_;
  Buffer<float> dw_dev_, dy_;
  Buffer<double> sums_;
};



/// Runs one calibration pass over `calibration` and collects the sums of `opt.needs` for every
/// layer that has candidates.
template <class B>
MetricPassResult metric_pass(const model::Transformer<B>& model,
                             std::span<const data::Window> calibration,
                             const CandidateSet& candidates, const MetricPassOptions& opt = {}) {
  require<ArgumentError>(!calibration.empty(), "metric_pass: no calibration windows");
  require<ArgumentError>(opt.batch_size > 0, "metric_pass: batch_size must be positive");
  require<ArgumentError>(opt.row_chunk_floats > 0, "metric_pass: row_chunk_floats must be positive");
  const auto& linears = model.linears();
  std::vector<const float*> weights;
  for (const auto& li : linears) weights.push_back(model.weight(li.index).data());
  MetricAccumulator<B> acc(linears, std::move(weights), candidates, opt.needs, opt.row_chunk_floats);
  MetricPassResult& r = acc.result();
  r.labels = opt.labels;
  model::CaptureOptions co;
  co.labels = opt.labels;
  co.seed = opt.seed;
  co.batch_size = opt.batch_size;
  co.layers = acc.layers();
  const std::size_t batches = (calibration.size() + opt.batch_size - 1) / opt.batch_size;
  const bool data_free = !acc.needs().any();
  study::Progress progress("metric pass", (data_free ? 1 : batches) * r.layers.size(), 0,
                           opt.progress);
  acc.set_progress(&progress);
  if (data_free) {
    // Data-free metrics only (weight MSE): one visit per layer, no forward.
    for (std::size_t idx : co.layers) {
      model::LayerBatch c;
      c.layer = &linears[idx];
      c.seq_len = 1;
      c.scored_positions = 1;
      acc.observe(c);
    }
    return std::move(r);
  }
  std::vector<model::TokenIds> tokens;
  tokens.reserve(calibration.size());
  for (const auto& w : calibration) tokens.push_back(w.tokens);
  const auto summary = model.capture(tokens, co, acc);
  r.mean_window_loss = summary.mean_window_loss;
  return std::move(r);
}

/// NSDS scores (data-free) of every linear layer of `model`, in linears() order.
template <class B>
std::vector<NsdsScore> nsds_of(const model::Transformer<B>& model, const NsdsOptions& options = {}) {
  std::vector<NsdsModule> modules;
  for (const auto& li : model.linears()) {
    const bool writer = li.kind == model::LinearKind::kV || li.kind == model::LinearKind::kO ||
                        li.kind == model::LinearKind::kDown;
    modules.push_back(NsdsModule{li.name, model.weight(li.index).data(), li.out_features,
                                 li.in_features, writer});
  }
  return nsds_scores(modules, options);
}

}  // namespace fragile::sensitivity
