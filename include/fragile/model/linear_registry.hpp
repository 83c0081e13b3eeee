// The registry of a model's linear layers: what each one is (HF name, block, kind, shape), in
// the model's order, and the lookups that code would otherwise do with index arithmetic.
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/model/config.hpp"

#include <array>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace fragile::model {

/// One linear layer of the model: registry entry.
struct LinearInfo {
  std::string name;          ///< HF module name, e.g. "model.layers.3.mlp.up_proj"
  std::size_t index = 0;     ///< position in Transformer::linears() (block-major, HF kind order)
  std::size_t block = 0;
  LinearKind kind = LinearKind::kQ;
  std::size_t in_features = 0;
  std::size_t out_features = 0;
  bool has_bias = false;

  /// Weight parameters (bias excluded: it is never quantized).
  [[nodiscard]] std::size_t parameters() const noexcept { return in_features * out_features; }
};

/// The first layer of a block (in HF order) that reads the same input as `k`: q, k and v read
/// the attention norm's output, gate and up the MLP norm's; o and down read their own.
constexpr LinearKind input_source(LinearKind k) noexcept {
  switch (k) {
    case LinearKind::kK:
    case LinearKind::kV: return LinearKind::kQ;
    case LinearKind::kUp: return LinearKind::kGate;
    default: return k;
  }
}

/// Every linear layer of a model, block-major in HF order, with lookups by name and by
/// (block, kind).
class LinearRegistry {
 public:
  /// Appends the next layer; its index is its position.
  const LinearInfo& add(std::size_t block, LinearKind kind, std::size_t in, std::size_t out,
                        bool bias) {
    if (by_block_.size() <= block) by_block_.resize(block + 1, kAbsentBlock);
    by_block_[block][static_cast<std::size_t>(kind)] = all_.size();
    all_.push_back(LinearInfo{linear_name(block, kind), all_.size(), block, kind, in, out, bias});
    return all_.back();
  }

  [[nodiscard]] const std::vector<LinearInfo>& all() const noexcept { return all_; }
  [[nodiscard]] std::size_t size() const noexcept { return all_.size(); }

  /// The layer of `kind` in `block`.
  [[nodiscard]] const LinearInfo& at(std::size_t block, LinearKind kind) const {
    const std::size_t i = block < by_block_.size()
                              ? by_block_[block][static_cast<std::size_t>(kind)]
                              : kAbsent;
    require<ArgumentError>(i != kAbsent, "linear registry: block {} has no {}", block,
                           linear_suffix(kind));
    return all_[i];
  }

  /// The layer named `name`; ArgumentError naming it if there is none.
  [[nodiscard]] const LinearInfo& named(std::string_view name) const {
    for (const auto& li : all_)
      if (li.name == name) return li;
    raise<ArgumentError>("the model has no linear layer named '{}'", name);
  }

 private:
  static constexpr std::size_t kAbsent = static_cast<std::size_t>(-1);
  static constexpr std::array<std::size_t, std::size(kAllLinearKinds)> kAbsentBlock = [] {
    std::array<std::size_t, std::size(kAllLinearKinds)> a{};
    a.fill(kAbsent);
    return a;
  }();

  std::vector<LinearInfo> all_;
  std::vector<std::array<std::size_t, std::size(kAllLinearKinds)>> by_block_;
};

}  // namespace fragile::model
