#pragma once
// The kinds of a block's linear layers and their names.

#include <optional>
#include <string_view>

namespace fragile::model {

/// The seven linear layers of a block, in HF order.
enum class LinearKind { kQ, kK, kV, kO, kGate, kUp, kDown };

inline constexpr LinearKind kAllLinearKinds[] = {LinearKind::kQ,    LinearKind::kK,
                                                 LinearKind::kV,    LinearKind::kO,
                                                 LinearKind::kGate, LinearKind::kUp,
                                                 LinearKind::kDown};

/// "self_attn.q_proj", ..., "mlp.down_proj".
constexpr std::string_view linear_suffix(LinearKind k) noexcept {
  switch (k) {
    case LinearKind::kQ: return "self_attn.q_proj";
    case LinearKind::kK: return "self_attn.k_proj";
    case LinearKind::kV: return "self_attn.v_proj";
    case LinearKind::kO: return "self_attn.o_proj";
    case LinearKind::kGate: return "mlp.gate_proj";
    case LinearKind::kUp: return "mlp.up_proj";
    case LinearKind::kDown: return "mlp.down_proj";
  }
  return "?";
}

/// The kind's name in tables, reports and results files: "q_proj", ..., "down_proj".
constexpr std::string_view linear_kind_name(LinearKind k) noexcept {
  const std::string_view s = linear_suffix(k);
  return s.substr(s.find('.') + 1);
}

/// The kind named `name` ("q_proj", ..., "down_proj", or its suffix "self_attn.q_proj", which
/// results files written before the kinds had short names hold), or nullopt.
constexpr std::optional<LinearKind> parse_linear_kind(std::string_view name) noexcept {
  for (const auto k : kAllLinearKinds)
    if (linear_kind_name(k) == name || linear_suffix(k) == name) return k;
  return std::nullopt;
}

}  // namespace fragile::model
