// A plan carried out: every linear layer quantized as the plan says, in the form deployment
// stores it. Both checkpoints fragile writes (fake-quant and packed GPTQ) and `fragile eval
// --plan` use these weights, so the numbers fragile reports for a plan are those of the files.
//
// Deployed form: scales are rounded to f16 after quantization, as GPTQ checkpoints store them
// (the codes and zero points are kept; the budget already charges 16 bits per scale). The
// dequantized weight is then f16(scale) * (code - zero), computed in f32.
#pragma once

#include "fragile/core/dtype.hpp"
#include "fragile/core/error.hpp"
#include "fragile/export/plan.hpp"
#include "fragile/quant/result.hpp"
#include "fragile/sensitivity/candidates.hpp"
#include "fragile/study/quant_setting.hpp"

#include <cmath>
#include <map>
#include <span>
#include <string>
#include <tuple>
#include <vector>

namespace fragile::exporting {

/// Rounds every scale of `q` to f16 (nearest even). `layer` names it in the error for a scale
/// beyond f16's range.
inline void round_scales_to_f16(quant::QuantizedWeight& q, const std::string& layer) {
  for (Eigen::Index r = 0; r < q.scales.rows(); ++r)
    for (Eigen::Index g = 0; g < q.scales.cols(); ++g) {
      const float h = f16_to_f32(f32_to_f16(q.scales(r, g)));
      require<ConfigError>(std::isfinite(h),
                           "layer '{}': scale {} of row {}, group {} exceeds f16's range "
                           "(65504); the weights cannot be stored with f16 scales",
                           layer, q.scales(r, g), r, g);
      q.scales(r, g) = h;
    }
}

/// The plan-wide quantizer setting of `plan`, starting from `base` (the caller's defaults).
inline study::QuantSetting plan_quant_setting(const Plan& plan, const std::string& source,
                                              study::QuantSetting base = {}) {
  const auto& q = plan.quantizer;
  if (q.contains("quantizer")) {
    const auto k = q["quantizer"].is_string()
                       ? study::parse_quantizer(q["quantizer"].get<std::string>())
                       : std::nullopt;
    require<ConfigError>(k.has_value(), "plan '{}': quantizer.quantizer is {}, expected rtn, "
                         "gptq, adaround or lwc", source, q["quantizer"].dump());
    base.quantizer = *k;
  }
  if (q.contains("inputs")) {
    require<ConfigError>(q["inputs"] == "fp" || q["inputs"] == "quantized-prefix",
                         "plan '{}': quantizer.inputs is {}, expected \"fp\" or "
                         "\"quantized-prefix\"", source, q["inputs"].dump());
    base.inputs = q["inputs"] == "quantized-prefix"
                      ? sensitivity::CandidateInputs::kQuantizedPrefix
                      : sensitivity::CandidateInputs::kFullPrecision;
  }
  return base;
}

struct PlanQuantizeOptions {
  std::size_t batch_size = 1;
  study::Progress::Sink progress = {};
};

/// Quantizes every linear of `model` as `layers` (registry order, from Plan::for_model) says:
/// one quantizer pass per distinct (quantizer, bits, grid). Returns the deployed weights.
template <class B>
std::vector<quant::QuantizedWeight> quantize_plan(const model::Transformer<B>& model,
                                                  const std::vector<PlanLayer>& layers,
                                                  const study::QuantSetting& setting,
                                                  std::span<const data::Window> calibration,
                                                  const PlanQuantizeOptions& options = {}) {
  const auto& linears = model.linears();
  require<ArgumentError>(layers.size() == linears.size(),
                         "quantize_plan: {} plan layers for a model with {} linear layers",
                         layers.size(), linears.size());
  using Key = std::tuple<study::QuantizerKind, int, int, bool>;
  std::map<Key, std::vector<std::size_t>> by_spec;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    auto kind = setting.quantizer;
    if (!layers[l].quantizer.empty()) {
      const auto k = study::parse_quantizer(layers[l].quantizer);
      require<ConfigError>(k.has_value(), "plan layer '{}': quantizer '{}' is not rtn, gptq, "
                           "adaround or lwc", layers[l].name, layers[l].quantizer);
      kind = *k;
    }
    by_spec[{kind, layers[l].bits, layers[l].group_size, layers[l].symmetric}].push_back(l);
  }
  std::vector<quant::QuantizedWeight> out(layers.size());
  for (const auto& [key, ls] : by_spec) {
    study::QuantSetting s = setting;
    s.quantizer = std::get<0>(key);
    s.group_size = std::get<2>(key);
    s.symmetric = std::get<3>(key);
    const sensitivity::CandidateOption option{fmt::format("{}bit", std::get<1>(key)),
                                              s.spec(std::get<1>(key))};
    sensitivity::CandidateOptions co;
    co.layers = ls;
    co.batch_size = options.batch_size;
    co.inputs = s.inputs;
    co.progress = options.progress;
    auto cands = study::visit_quantizer(s.quantizer, [&](const auto& quantizer) {
      return sensitivity::quantize_candidates(
          model, quantizer, std::span<const sensitivity::CandidateOption>(&option, 1),
          calibration, co);
    });
    for (auto l : ls) {
      const auto* q = std::get_if<quant::QuantizedWeight>(&cands.at(l, 0).weight);
      require<ConfigError>(q != nullptr, "layer '{}': the {} quantizer gave no uniform grid to "
                           "export", layers[l].name, study::quantizer_name(s.quantizer));
      out[l] = *q;
      round_scales_to_f16(out[l], layers[l].name);
    }
  }
  return out;
}

}  // namespace fragile::exporting
