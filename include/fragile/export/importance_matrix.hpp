// The importance matrix llama.cpp's quantizers weight their rounding error with (llama-imatrix,
// tools/imatrix/imatrix.cpp): for every linear layer l and input column j, the sum over all
// calibration token rows t of x_l,t,j^2, and the number of rows summed. llama-quantize divides
// one by the other, so the file stores sums, not means.
//
// The GGUF layout is llama-imatrix's current one (save_imatrix):
//   KV   general.type = "imatrix", imatrix.datasets = [strings], imatrix.chunk_count (u32:
//        windows seen), imatrix.chunk_size (u32: tokens per window), in that order;
//   per linear weight, in order of its sorted GGUF name, `<name>.in_sum2` (F32, ne =
//   [in_features, 1]) then `<name>.counts` (F32, ne = [1, 1]).
// Newer llama-imatrix builds also write `<name>.in_sum` (the sum of x), which llama-quantize
// does not read; fragile does not write it.
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/data/windows.hpp"
#include "fragile/export/gguf_writer.hpp"
#include "fragile/export/llama_cpp_recipe.hpp"
#include "fragile/model/capture.hpp"
#include "fragile/model/transformer.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace fragile::exporting {

struct ImportanceLayer {
  model::LinearInfo linear;
  std::vector<double> sum_x2;  ///< per input column: sum over token rows of x^2
  std::uint64_t rows = 0;      ///< token rows summed
};

struct ImportanceMatrix {
  std::vector<ImportanceLayer> layers;  ///< the model's linears() order
  std::size_t windows = 0;              ///< calibration windows (llama.cpp's chunks)
  std::size_t seq_len = 0;              ///< tokens per window
};

/// Capture observer accumulating sum x^2 per input column (in double) and the rows seen, for
/// every linear layer it is given.
class ImportanceAccumulator {
 public:
  explicit ImportanceAccumulator(const std::vector<model::LinearInfo>& linears) {
    layers_.reserve(linears.size());
    for (const auto& li : linears) layers_.push_back({li, std::vector<double>(li.in_features, 0.0), 0});
  }

  [[nodiscard]] model::CaptureNeeds needs() const noexcept { return {.x = true}; }

  void observe(const model::LayerBatch& c) {
    require<ArgumentError>(c.layer && c.layer->index < layers_.size() && c.x,
                           "importance matrix: capture of an unknown layer or without x");
    auto& l = layers_[c.layer->index];
    const std::size_t in = l.linear.in_features;
    const float* xs = c.x.host().data();
    for (std::size_t r = 0; r < c.rows(); ++r) {
      const float* x = xs + r * in;
      for (std::size_t j = 0; j < in; ++j) l.sum_x2[j] += static_cast<double>(x[j]) * x[j];
    }
    l.rows += c.rows();
  }

  [[nodiscard]] const std::vector<ImportanceLayer>& layers() const noexcept { return layers_; }
  [[nodiscard]] std::vector<ImportanceLayer> take() && { return std::move(layers_); }

 private:
  std::vector<ImportanceLayer> layers_;
};

static_assert(model::CaptureObserver<ImportanceAccumulator>);

/// NumericError naming the layer (HF and GGUF names) and the column for a non-finite sum, or a
/// layer that did not see windows * seq_len token rows.
inline void check_importance_matrix(const ImportanceMatrix& m) {
  for (const auto& l : m.layers) {
    for (std::size_t j = 0; j < l.sum_x2.size(); ++j)
      require<NumericError>(std::isfinite(l.sum_x2[j]),
                            "importance matrix: layer '{}' ({}) has a non-finite sum of x^2 ({}) "
                            "at input column {}", l.linear.name, gguf_tensor_name(l.linear),
                            l.sum_x2[j], j);
    require<NumericError>(l.rows == m.windows * m.seq_len,
                          "importance matrix: layer '{}' ({}) saw {} token rows, expected {} ({} "
                          "windows of {})", l.linear.name, gguf_tensor_name(l.linear), l.rows,
                          m.windows * m.seq_len, m.windows, m.seq_len);
  }
}

/// One forward pass over `windows` (all of one length), `batch_size` windows at a time, then
/// check_importance_matrix.
template <class B>
ImportanceMatrix collect_importance_matrix(const model::Transformer<B>& model,
                                           std::span<const data::Window> windows,
                                           std::size_t batch_size) {
  require<ArgumentError>(!windows.empty(), "importance matrix: no calibration windows");
  require<ArgumentError>(batch_size > 0, "importance matrix: batch_size must be positive");
  std::vector<model::TokenIds> tokens;
  tokens.reserve(windows.size());
  for (const auto& w : windows) tokens.push_back(w.tokens);
  ImportanceAccumulator acc(model.linears());
  model::CaptureOptions opt;
  opt.batch_size = batch_size;
  model.capture(tokens, opt, acc);
  ImportanceMatrix m;
  m.windows = windows.size();
  m.seq_len = windows.front().size();
  m.layers = std::move(acc).take();
  check_importance_matrix(m);
  return m;
}

/// Writes `m` as llama-imatrix's GGUF file (atomically). `datasets` names the calibration data
/// (llama-imatrix records its text files); `chunk_size` is the tokens per window and must equal
/// m.seq_len. ArgumentError / NumericError naming the layer for an empty or non-finite entry.
inline void write_imatrix_gguf(const std::filesystem::path& path, const ImportanceMatrix& m,
                               const std::vector<std::string>& datasets, std::uint32_t chunk_size) {
  require<ArgumentError>(!m.layers.empty(), "imatrix '{}': the importance matrix has no layers",
                         path.string());
  require<ArgumentError>(chunk_size > 0 && chunk_size == m.seq_len,
                         "imatrix '{}': chunk_size {} differs from the {} tokens per window the "
                         "matrix was collected on", path.string(), chunk_size, m.seq_len);
  require<ArgumentError>(m.windows <= std::numeric_limits<std::uint32_t>::max(),
                         "imatrix '{}': {} windows do not fit imatrix.chunk_count (u32)",
                         path.string(), m.windows);
  GgufWriter w;
  w.add_string("general.type", "imatrix");
  w.add_string_array("imatrix.datasets", datasets);
  w.add_u32("imatrix.chunk_count", static_cast<std::uint32_t>(m.windows));
  w.add_u32("imatrix.chunk_size", chunk_size);

  std::vector<std::pair<std::string, const ImportanceLayer*>> order;
  for (const auto& l : m.layers) order.emplace_back(gguf_tensor_name(l.linear), &l);
  std::sort(order.begin(), order.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [name, l] : order) {
    require<ArgumentError>(l->rows > 0 && l->sum_x2.size() == l->linear.in_features,
                           "imatrix '{}': layer '{}' has no data ({} rows, {} of {} columns)",
                           path.string(), l->linear.name, l->rows, l->sum_x2.size(),
                           l->linear.in_features);
    std::vector<float> sums(l->sum_x2.size());
    for (std::size_t j = 0; j < sums.size(); ++j) {
      sums[j] = static_cast<float>(l->sum_x2[j]);
      require<NumericError>(std::isfinite(sums[j]),
                            "imatrix '{}': layer '{}' ({}) has a sum of x^2 of {} at input column "
                            "{}, not a finite float", path.string(), l->linear.name, name,
                            l->sum_x2[j], j);
    }
    const float count = static_cast<float>(l->rows);
    w.add_tensor_f32(name + ".in_sum2", {l->linear.in_features, 1}, sums);
    w.add_tensor_f32(name + ".counts", {1, 1}, std::span<const float>(&count, 1));
  }
  w.write(path);
}

}  // namespace fragile::exporting
