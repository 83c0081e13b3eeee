// One quantizer setting of a study: which quantizer, its grid (group size, symmetry) and, for
// quantizers that read data, where their inputs come from. Names each setting in result-store
// keys and reports ("rtn3g32", "gptq3g128-prefix", "rtn2pc-sym").
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/quant/adaround.hpp"
#include "fragile/quant/gptq.hpp"
#include "fragile/quant/lwc.hpp"
#include "fragile/quant/rtn.hpp"
#include "fragile/quant/spec.hpp"
#include "fragile/sensitivity/candidates.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace fragile::study {

enum class QuantizerKind { kRtn, kGptq, kAdaRound, kLwc };

inline std::string_view quantizer_name(QuantizerKind k) noexcept {
  switch (k) {
    case QuantizerKind::kGptq: return "gptq";
    case QuantizerKind::kAdaRound: return "adaround";
    case QuantizerKind::kLwc: return "lwc";
    default: return "rtn";
  }
}

inline std::optional<QuantizerKind> parse_quantizer(std::string_view s) {
  for (auto k : {QuantizerKind::kRtn, QuantizerKind::kGptq, QuantizerKind::kAdaRound,
                 QuantizerKind::kLwc})
    if (s == quantizer_name(k)) return k;
  return std::nullopt;
}

/// Calls f(quantizer policy) with the policy object of `k` (default hyperparameters).
template <class F>
decltype(auto) visit_quantizer(QuantizerKind k, F&& f) {
  switch (k) {
    case QuantizerKind::kGptq: return f(quant::Gptq{});
    case QuantizerKind::kAdaRound: return f(quant::AdaRound{});
    case QuantizerKind::kLwc: return f(quant::Lwc{});
    default: return f(quant::Rtn{});
  }
}

/// The hyperparameters of quantizer `k` as fragile runs it (its policy's defaults), for plans
/// and reports.
inline nlohmann::json quantizer_hyperparameters(QuantizerKind k) {
  switch (k) {
    case QuantizerKind::kGptq: {
      const quant::Gptq g;
      return {{"block_size", g.block_size}, {"damp_percent", g.damp}, {"act_order", g.act_order},
              {"static_groups", g.static_groups}};
    }
    case QuantizerKind::kAdaRound: {
      const quant::AdaRound a;
      return {{"iterations", a.iterations}, {"lr", a.lr}, {"reg_lambda", a.reg_lambda},
              {"beta_start", a.beta_start}, {"beta_end", a.beta_end}, {"warmup", a.warmup},
              {"zeta", a.zeta}, {"gamma", a.gamma}, {"seed", a.seed}};
    }
    case QuantizerKind::kLwc: {
      const quant::Lwc l;
      return {{"epochs", l.epochs}, {"batch_tokens", l.batch_tokens}, {"lr", l.lr},
              {"weight_decay", l.weight_decay}, {"init", l.init}, {"seed", l.seed}};
    }
    default:
      return {{"rounding", "nearest, ties to even"}, {"clip", "min-max"}};
  }
}

struct QuantSetting {
  QuantizerKind quantizer = QuantizerKind::kRtn;
  int group_size = 128;  ///< along in_features; 0 = per output channel
  bool symmetric = false;
  sensitivity::CandidateInputs inputs = sensitivity::CandidateInputs::kFullPrecision;

  [[nodiscard]] bool reads_data() const noexcept { return quantizer != QuantizerKind::kRtn; }

  [[nodiscard]] quant::QuantSpec spec(int bits) const {
    quant::QuantSpec s;
    s.bits = bits;
    s.group_size = group_size;
    s.symmetric = symmetric;
    return s;
  }
  /// "rtn3g32", "gptq3pc-sym-prefix".
  [[nodiscard]] std::string label(int bits) const {
    std::string s = fmt::format("{}{}{}", quantizer_name(quantizer), bits,
                                group_size > 0 ? fmt::format("g{}", group_size) : "pc");
    if (symmetric) s += "-sym";
    if (reads_data() && inputs == sensitivity::CandidateInputs::kQuantizedPrefix) s += "-prefix";
    return s;
  }
  /// "RTN 3-bit, group 32, asymmetric".
  [[nodiscard]] std::string describe(int bits) const {
    std::string q(quantizer_name(quantizer));
    for (auto& c : q) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (quantizer == QuantizerKind::kAdaRound) q = "AdaRound";
    if (quantizer == QuantizerKind::kLwc) q = "LWC";
    std::string s = fmt::format("{} {}-bit, {}, {}", q, bits,
                                group_size > 0 ? fmt::format("group {}", group_size)
                                               : std::string("per output channel"),
                                symmetric ? "symmetric" : "asymmetric");
    if (reads_data())
      s += inputs == sensitivity::CandidateInputs::kFullPrecision
               ? ", inputs from the FP model"
               : ", inputs from the quantized prefix (sequential)";
    return s;
  }
  [[nodiscard]] nlohmann::json to_json() const {
    return {{"quantizer", std::string(quantizer_name(quantizer))},
            {"group_size", group_size},
            {"symmetric", symmetric},
            {"inputs", std::string(sensitivity::candidate_inputs_name(inputs))}};
  }
};

}  // namespace fragile::study
