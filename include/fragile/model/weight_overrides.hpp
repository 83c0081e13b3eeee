// Replacement weights for some linear layers of a model (fake-quantized weights, say), applied
// per call without copying or reloading the model. They are host matrices: a backend whose
// memory is not the host's uploads them for the call.
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/model/linear_registry.hpp"

#include <cstddef>
#include <map>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

namespace fragile::model {

/// A set of replacement weights for linear layers, validated against a model's registry.
/// Views (std::span) must outlive the evaluation; owned matrices live in the set. The set must
/// not outlive the model whose registry it was made from (Transformer::make_overrides()).
class WeightOverrides {
 public:
  explicit WeightOverrides(const std::vector<LinearInfo>& registry) : registry_(&registry) {}

  /// Replaces layer `index` by the (rows, cols) row-major matrix `w` (not copied).
  void set(std::size_t index, std::span<const float> w, std::size_t rows, std::size_t cols) {
    const LinearInfo& li = check(index, w.size(), rows, cols);
    entries_[li.index] = Entry{w.data(), {}};
  }
  /// Replaces layer `index` by `w` (moved into the set).
  void set(std::size_t index, std::vector<float> w, std::size_t rows, std::size_t cols) {
    const LinearInfo& li = check(index, w.size(), rows, cols);
    Entry e;
    e.owned = std::move(w);
    e.data = e.owned.data();
    entries_[li.index] = std::move(e);
  }
  /// By HF name ("model.layers.0.self_attn.q_proj").
  void set(std::string_view name, std::span<const float> w, std::size_t rows, std::size_t cols) {
    set(index_of(name), w, rows, cols);
  }
  void set(std::string_view name, std::vector<float> w, std::size_t rows, std::size_t cols) {
    set(index_of(name), std::move(w), rows, cols);
  }

  void erase(std::size_t index) { entries_.erase(index); }
  void clear() noexcept { entries_.clear(); }
  [[nodiscard]] bool contains(std::size_t index) const { return entries_.contains(index); }
  [[nodiscard]] std::size_t size() const noexcept { return entries_.size(); }
  [[nodiscard]] bool empty() const noexcept { return entries_.empty(); }
  /// The replacement weights of layer `index`, or null.
  [[nodiscard]] const float* find(std::size_t index) const {
    auto it = entries_.find(index);
    return it == entries_.end() ? nullptr : it->second.data;
  }
  [[nodiscard]] const std::vector<LinearInfo>* registry() const noexcept { return registry_; }

 private:
  struct Entry {
    const float* data = nullptr;
    std::vector<float> owned;
  };

  std::size_t index_of(std::string_view name) const {
    for (const auto& li : *registry_)
      if (li.name == name) return li.index;
    raise<ArgumentError>("weight override: the model has no linear layer named '{}'", name);
  }

  const LinearInfo& check(std::size_t index, std::size_t size, std::size_t rows,
                          std::size_t cols) const {
    require<ArgumentError>(index < registry_->size(),
                           "weight override: linear index {} out of range (model has {})", index,
                           registry_->size());
    const LinearInfo& li = (*registry_)[index];
    require<ShapeError>(rows == li.out_features && cols == li.in_features,
                        "weight override for '{}': weight is [{}, {}], the layer needs [{}, {}]",
                        li.name, rows, cols, li.out_features, li.in_features);
    require<ShapeError>(size == rows * cols,
                        "weight override for '{}': buffer holds {} values, [{}, {}] needs {}",
                        li.name, size, rows, cols, rows * cols);
    return li;
  }

  const std::vector<LinearInfo>* registry_;
  std::map<std::size_t, Entry> entries_;
};

}  // namespace fragile::model
