// A model's trainable tensors as an optimiser sees them, their gradients, and named f32 tensors
// for building a model in memory (tests, benchmarks, converters).
#pragma once

#include <cmath>
#include <cstddef>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace fragile::model {

/// Named f32 tensors (HF names) for building a model in memory: tests, benchmarks, converters.
using NamedTensors = std::map<std::string, std::vector<float>, std::less<>>;

/// One tensor of the model that training updates: its HF name, shape and storage (row-major).
struct Parameter {
  std::string name;
  std::vector<std::size_t> shape;
  std::span<float> value;
  /// Weight decay applies to matrices (embeddings and linears), not to norms or biases.
  [[nodiscard]] bool is_matrix() const noexcept { return shape.size() == 2; }
};

/// Gradients of every parameter, in the order of Transformer::parameters().
struct ParameterGradients {
  std::vector<std::vector<float>> tensors;

  void zero() {
    for (auto& t : tensors) std::fill(t.begin(), t.end(), 0.0f);
  }
  /// The global L2 norm over every tensor (accumulated in double).
  [[nodiscard]] double norm() const {
    double ss = 0.0;
    for (const auto& t : tensors)
      for (float v : t) ss += static_cast<double>(v) * v;
    return std::sqrt(ss);
  }
};

}  // namespace fragile::model
