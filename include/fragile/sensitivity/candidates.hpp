// The candidate quantizations Q_o(W_l) of every linear layer l under every option o (a bit width,
// or any QuantSpec), made once by one quantizer policy and read by the metric pass and the
// oracles: "nothing is recomputed per allocator".
//
// Results that are plain uniform grids (RTN, GPTQ, LWC: quant::QuantizedWeight) stay packed
// (bits/8 bytes per weight plus scales), so four bit widths of a model cost about half its FP32
// size; other results (AdaRound, the channel-split hybrid) are kept dequantized.
// Quantizers that read data (GPTQ's H, AdaRound's activations) get one capture pass over the
// calibration windows first.
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/core/tensor.hpp"
#include "fragile/data/windows.hpp"
#include "fragile/model/transformer.hpp"
#include "fragile/quant/hessian.hpp"
#include "fragile/quant/quantizer.hpp"
#include "fragile/quant/result.hpp"
#include "fragile/quant/spec.hpp"
#include "fragile/study/progress.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace fragile::sensitivity {

/// One candidate: a label ("3bit"), its option value (bits), its storage and the weight.
struct Candidate {
  std::string label;
  double value = 0.0;
  std::uint64_t cost_bits = 0;
  std::variant<quant::QuantizedWeight, MatrixF> weight;

  /// Writes Q(W) (out, in) into `out`.
  void dequantize_into(Eigen::Ref<MatrixF> out) const {
    if (const auto* q = std::get_if<quant::QuantizedWeight>(&weight)) {
      q->dequantize_into(out);
    } else {
      const auto& m = std::get<MatrixF>(weight);
      require<ShapeError>(out.rows() == m.rows() && out.cols() == m.cols(),
                          "Candidate '{}': output is ({}, {}), expected ({}, {})", label,
                          out.rows(), out.cols(), m.rows(), m.cols());
      out = m;
    }
  }
  /// (rows, cols) of Q(W), without dequantizing.
  [[nodiscard]] std::pair<Eigen::Index, Eigen::Index> shape() const {
    if (const auto* q = std::get_if<quant::QuantizedWeight>(&weight)) return {q->rows, q->cols};
    const auto& m = std::get<MatrixF>(weight);
    return {m.rows(), m.cols()};
  }
  [[nodiscard]] MatrixF dequantize() const {
    if (const auto* m = std::get_if<MatrixF>(&weight)) return *m;
    return std::get<quant::QuantizedWeight>(weight).dequantize();
  }

};

/// Candidates of every linear layer (indexed like Transformer::linears()), options in the same
/// order for every layer.
class CandidateSet {
 public:
  CandidateSet() = default;
  CandidateSet(std::size_t layers, std::vector<std::string> labels, std::vector<double> values)
      : labels_(std::move(labels)), values_(std::move(values)), c_(layers) {
    require<ArgumentError>(labels_.size() == values_.size() && !labels_.empty(),
                           "CandidateSet: {} labels and {} values, expected the same non-zero "
                           "number", labels_.size(), values_.size());
  }

  [[nodiscard]] std::size_t layers() const noexcept { return c_.size(); }
  [[nodiscard]] std::size_t options() const noexcept { return labels_.size(); }
  [[nodiscard]] const std::vector<std::string>& labels() const noexcept { return labels_; }
  [[nodiscard]] const std::vector<double>& values() const noexcept { return values_; }

  void set(std::size_t layer, std::vector<Candidate> per_option) {
    require<ArgumentError>(layer < c_.size(), "CandidateSet: layer {} out of range ({})", layer,
                           c_.size());
    require<ArgumentError>(per_option.size() == labels_.size(),
                           "CandidateSet: layer {} got {} candidates, expected {}", layer,
                           per_option.size(), labels_.size());
    c_[layer] = std::move(per_option);
  }
  [[nodiscard]] bool has(std::size_t layer) const { return layer < c_.size() && !c_[layer].empty(); }
  [[nodiscard]] const Candidate& at(std::size_t layer, std::size_t option) const {
    require<ArgumentError>(has(layer), "CandidateSet: layer {} has no candidates", layer);
    require<ArgumentError>(option < labels_.size(), "CandidateSet: option {} out of range ({})",
                           option, labels_.size());
    return c_[layer][option];
  }
  /// Q_o(W_l) of every layer (empty matrices where a layer has none): for weight overrides.
  [[nodiscard]] std::vector<MatrixF> dequantized(std::size_t option) const {
    std::vector<MatrixF> out(c_.size());
    for (std::size_t l = 0; l < c_.size(); ++l)
      if (has(l)) out[l] = at(l, option).dequantize();
    return out;
  }

 private:
  std::vector<std::string> labels_;
  std::vector<double> values_;
  std::vector<std::vector<Candidate>> c_;
};

/// One option of a candidate set: its label and the spec handed to the quantizer.
struct CandidateOption {
  std::string label;
  quant::QuantSpec spec;
};

/// Options {bits}bit for each bit width, on top of `base` (group size, symmetry, clip).
inline std::vector<CandidateOption> bit_options(std::span<const int> bits,
                                                const quant::QuantSpec& base = {}) {
  std::vector<CandidateOption> out;
  for (int b : bits) {
    quant::QuantSpec s = base;
    s.bits = b;
    out.push_back({std::to_string(b) + "bit", s});
  }
  return out;
}

/// Where a data-reading quantizer's inputs come from.
enum class CandidateInputs {
  /// One capture pass of the FP model: every layer sees FP inputs (the metrics' view: each
  /// layer's error in the otherwise-FP model).
  kFullPrecision,
  /// GPTQ's sequential protocol: block b's layers see the inputs of the model whose blocks
  /// 0..b-1 are already quantized under the same option (one capture pass per block and option).
  kQuantizedPrefix,
};

inline std::string_view candidate_inputs_name(CandidateInputs i) noexcept {
  return i == CandidateInputs::kFullPrecision ? "fp" : "quantized-prefix";
}

struct CandidateOptions {
  std::vector<std::size_t> layers = {};  ///< linear indices; empty = all
  CandidateInputs inputs = CandidateInputs::kFullPrecision;  ///< for data-reading quantizers
  std::size_t batch_size = 1;            ///< windows per forward of the calibration pass
  study::Progress::Sink progress = study::Progress::default_sink();
};

namespace detail {
template <class R>
Candidate make_candidate(const CandidateOption& opt, R&& r) {
  Candidate c;
  c.label = opt.label;
  c.value = opt.spec.bits;
  c.cost_bits = r.storage_bits();
  if constexpr (std::is_same_v<std::remove_cvref_t<R>, quant::QuantizedWeight>)
    c.weight = std::forward<R>(r);
  else
    c.weight = MatrixF(r.dequantize());
  return c;
}

/// Collects each selected layer's activations (for quantizers that read them) and H.
struct CalibrationCollector {
  std::vector<std::size_t> layers;
  bool keep_x = false;
  std::vector<quant::HessianAccumulator> h;
  std::vector<MatrixF> x;  // rows appended batch by batch

  [[nodiscard]] model::CaptureNeeds needs() const noexcept { return {.x = true}; }
  void observe(const model::LayerBatch& c) {
    const std::size_t i = slot(c.layer->index);
    if (i == layers.size()) return;
    const auto in = static_cast<Eigen::Index>(c.layer->in_features);
    const auto rows = static_cast<Eigen::Index>(c.rows());
    Eigen::Map<const MatrixF> xm(c.x.host().data(), rows, in);
    if (h[i].in_features() == 0) h[i] = quant::HessianAccumulator(in, c.layer->name);
    h[i].add(xm);
    if (keep_x) {
      MatrixF& m = x[i];
      const Eigen::Index r0 = m.rows();
      m.conservativeResize(r0 + rows, in);
      m.bottomRows(rows) = xm;
    }
  }
  [[nodiscard]] std::size_t slot(std::size_t index) const {
    for (std::size_t i = 0; i < layers.size(); ++i)
      if (layers[i] == index) return i;
    return layers.size();
  }
};
}  // namespace detail

namespace detail {
/// kQuantizedPrefix: per option, block by block, each block's layers quantized from the
/// inputs of the model whose earlier blocks already carry this option's candidates.
template <class B, quant::Quantizer Q>
CandidateSet quantize_candidates_sequential(const model::Transformer<B>& model, const Q& quantizer,
                                            std::span<const CandidateOption> options,
                                            std::span<const data::Window> calibration,
                                            const std::vector<std::size_t>& layers,
                                            const CandidateOptions& opt,
                                            std::vector<std::string> labels,
                                            std::vector<double> values) {
  const auto& linears = model.linears();
  std::vector<model::TokenIds> tokens;
  for (const auto& w : calibration) tokens.push_back(w.tokens);
  std::vector<std::size_t> blocks;
  for (auto l : layers)
    if (std::find(blocks.begin(), blocks.end(), linears[l].block) == blocks.end())
      blocks.push_back(linears[l].block);
  std::sort(blocks.begin(), blocks.end());
  std::vector<std::vector<Candidate>> per_layer(linears.size());
  study::Progress progress("quantize candidates (quantized prefix)", options.size() * layers.size(),
                           0, opt.progress);
  for (const auto& o : options) {
    auto ov = model.make_overrides();
    std::vector<MatrixF> fake(linears.size());
    for (auto b : blocks) {
      std::vector<std::size_t> in_block;
      for (auto l : layers)
        if (linears[l].block == b) in_block.push_back(l);
      CalibrationCollector calib{in_block, quant::has(Q::needs, quant::Needs::kActivations),
                                 std::vector<quant::HessianAccumulator>(in_block.size()),
                                 std::vector<MatrixF>(in_block.size())};
      model::CaptureOptions co;
      co.batch_size = opt.batch_size;
      co.layers = in_block;
      model.capture_with(tokens, co, &ov, calib);
      for (std::size_t i = 0; i < in_block.size(); ++i) {
        const auto& li = linears[in_block[i]];
        const auto w = model.weight(li.index);
        Eigen::Map<const MatrixF> wm(w.data(), static_cast<Eigen::Index>(li.out_features),
                                     static_cast<Eigen::Index>(li.in_features));
        quant::LayerCapture capture(li.name);
        capture.with_hessian(calib.h[i]);
        if (calib.keep_x) capture.with_activations(calib.x[i]);
        per_layer[li.index].push_back(make_candidate(o, quantizer.quantize(wm, o.spec, capture)));
        fake[li.index] = per_layer[li.index].back().dequantize();
        progress.tick(li.name);
      }
      // The next block sees this block quantized.
      for (auto l : in_block)
        ov.set(l, std::span<const float>(fake[l].data(), static_cast<std::size_t>(fake[l].size())),
               linears[l].out_features, linears[l].in_features);
    }
  }
  CandidateSet set(linears.size(), std::move(labels), std::move(values));
  for (auto l : layers) set.set(l, std::move(per_layer[l]));
  return set;
}
}  // namespace detail

/// Quantizes every (selected) linear layer of `model` under every option with `quantizer`.
/// `calibration` feeds quantizers that read data (ignored by RTN); it must be non-empty then.
template <class B, quant::Quantizer Q>
CandidateSet quantize_candidates(const model::Transformer<B>& model, const Q& quantizer,
                                 std::span<const CandidateOption> options,
                                 std::span<const data::Window> calibration = {},
                                 const CandidateOptions& opt = {}) {
  require<ArgumentError>(!options.empty(), "quantize_candidates: no options");
  std::vector<std::string> labels;
  std::vector<double> values;
  for (const auto& o : options) {
    quant::validate(o.spec, "quantize_candidates option '" + o.label + "'");
    labels.push_back(o.label);
    values.push_back(o.spec.bits);
  }
  const auto& linears = model.linears();
  std::vector<std::size_t> layers = opt.layers;
  if (layers.empty())
    for (std::size_t l = 0; l < linears.size(); ++l) layers.push_back(l);
  for (auto l : layers)
    require<ArgumentError>(l < linears.size(), "quantize_candidates: layer {} out of range ({})",
                           l, linears.size());

  static_assert(!quant::has(Q::needs, quant::Needs::kGrads),
                "quantize_candidates collects activations and H only; for a quantizer that reads "
                "gradients (channel importance), quantize each layer yourself and fill "
                "CandidateSet::set");
  constexpr bool kReadsData = Q::needs != quant::Needs::kWeights;
  if constexpr (kReadsData) {
    if (opt.inputs == CandidateInputs::kQuantizedPrefix) {
      require<ArgumentError>(!calibration.empty(),
                             "quantize_candidates: the quantizer reads calibration data, but no "
                             "calibration windows were given");
      return detail::quantize_candidates_sequential(model, quantizer, options, calibration, layers,
                                                    opt, labels, values);
    }
  }
  detail::CalibrationCollector calib{layers, quant::has(Q::needs, quant::Needs::kActivations),
                                     std::vector<quant::HessianAccumulator>(layers.size()),
                                     std::vector<MatrixF>(layers.size())};
  if constexpr (kReadsData) {
    require<ArgumentError>(!calibration.empty(),
                           "quantize_candidates: the quantizer reads calibration data, but no "
                           "calibration windows were given");
    std::vector<model::TokenIds> tokens;
    for (const auto& w : calibration) tokens.push_back(w.tokens);
    model::CaptureOptions co;
    co.batch_size = opt.batch_size;
    co.layers = layers;
    model.capture(tokens, co, calib);
  }

  CandidateSet set(linears.size(), labels, values);
  study::Progress progress("quantize candidates", layers.size(), 0, opt.progress);
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const auto& li = linears[layers[i]];
    const auto w = model.weight(li.index);
    Eigen::Map<const MatrixF> wm(w.data(), static_cast<Eigen::Index>(li.out_features),
                                 static_cast<Eigen::Index>(li.in_features));
    quant::LayerCapture capture(li.name);
    if constexpr (kReadsData) {
      capture.with_hessian(calib.h[i]);
      if (calib.keep_x) capture.with_activations(calib.x[i]);
    }
    std::vector<Candidate> per_option;
    for (const auto& o : options)
      per_option.push_back(detail::make_candidate(o, quantizer.quantize(wm, o.spec, capture)));
    set.set(li.index, std::move(per_option));
    if constexpr (kReadsData) {
      calib.h[i] = quant::HessianAccumulator();  // free as we go
      calib.x[i] = MatrixF();
    }
    progress.tick(li.name);
  }
  return set;
}

}  // namespace fragile::sensitivity
