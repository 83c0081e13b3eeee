// The fake-quantized Hugging Face checkpoint: the source model with every quantized linear's
// weight replaced by its dequantized values, loadable by transformers (and by fragile with
// `eval --checkpoint`) as an ordinary model.
//
// From a HF folder: config, generation config and tokenizer files are copied; the tensors keep
// their names, their order of shards (with an index when the source has one) and their dtype
// when every dequantized weight is exact in it. Otherwise every tensor is stored as f32 (exactly)
// and the config's dtype says float32, so that `from_pretrained(dtype="auto")` keeps the
// values. From a llama2.c checkpoint: an f32 HF folder as io::write_hf_model writes it (q/k rows
// permuted to HF's rotate-half layout), without a tokenizer (llama2.c's is not a tokenizer.json).
#pragma once

#include "fragile/core/dtype.hpp"
#include "fragile/core/error.hpp"
#include "fragile/export/hf_side_files.hpp"
#include "fragile/io/atomic_file.hpp"
#include "fragile/io/hf_writer.hpp"
#include "fragile/io/llama2c.hpp"
#include "fragile/io/safetensors.hpp"
#include "fragile/model/capture.hpp"
#include "fragile/quant/result.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace fragile::exporting {

/// What write_fake_quant_checkpoint wrote.
struct FakeQuantCheckpoint {
  DType dtype = DType::kF32;  ///< of the quantized linears (and of every tensor when F32)
  std::string dtype_reason;   ///< why that dtype
  std::size_t tensor_bytes = 0;
  std::vector<std::string> files;  ///< relative to the folder
};

namespace detail {

/// True when every value of `w` is exactly representable in `t`.
inline bool exact_in(DType t, std::span<const float> w) {
  if (t == DType::kF32) return true;
  for (float v : w) {
    const float back = t == DType::kBF16 ? bf16_to_f32(f32_to_bf16(v)) : f16_to_f32(f32_to_f16(v));
    if (back != v) return false;
  }
  return true;
}

/// The f32 values of a tensor stored in a TensorStore.
inline std::vector<float> read_all(const io::TensorStore& store, const std::string& name) {
  std::vector<float> v(store.info(name).numel());
  store.read_f32(name, v);
  return v;
}

}  // namespace detail

/// Writes the fake-quantized checkpoint of `source` (loaded from `source_path`) into the
/// folder `dir` (created if needed); `weights[l]` is the deployed weight of `linears[l]`.
inline FakeQuantCheckpoint write_fake_quant_checkpoint(
    const std::filesystem::path& dir, const io::Checkpoint& source,
    const std::filesystem::path& source_path, const std::vector<model::LinearInfo>& linears,
    const std::vector<quant::QuantizedWeight>& weights) {
  namespace fs = std::filesystem;
  require<ArgumentError>(weights.size() == linears.size(),
                         "write_fake_quant_checkpoint: {} weights for {} linear layers",
                         weights.size(), linears.size());
  std::map<std::string, std::size_t> linear_of;
  for (const auto& li : linears) linear_of[li.name + ".weight"] = li.index;
  auto dequantized = [&](std::size_t l) {
    const auto& q = weights[l];
    require<ShapeError>(static_cast<std::size_t>(q.rows) == linears[l].out_features &&
                            static_cast<std::size_t>(q.cols) == linears[l].in_features,
                        "layer '{}': quantized weight is ({}, {}), the model's is ({}, {})",
                        linears[l].name, q.rows, q.cols, linears[l].out_features,
                        linears[l].in_features);
    std::vector<float> w(static_cast<std::size_t>(q.rows * q.cols));
    q.dequantize_into(Eigen::Map<MatrixF>(w.data(), q.rows, q.cols));
    return w;
  };

  std::error_code ec;
  fs::create_directories(dir, ec);
  require<IoError>(!ec, "cannot create the export folder '{}': {}", dir.string(), ec.message());
  FakeQuantCheckpoint out;
  if (!fs::is_directory(source_path)) {  // llama2.c: through the HF writer, all f32
    std::map<std::string, std::vector<float>, std::less<>> tensors;
    for (const auto& name : source.weights.names()) {
      auto it = linear_of.find(name);
      tensors[name] = it != linear_of.end() ? dequantized(it->second)
                                            : detail::read_all(source.weights, name);
      out.tensor_bytes += tensors[name].size() * sizeof(float);
    }
    io::HfWriteOptions wo;
    wo.overwrite = true;
    io::write_hf_model(dir, source.config, tensors, wo);
    out.dtype = DType::kF32;
    out.dtype_reason = "a llama2.c checkpoint is written as an f32 Hugging Face folder";
    out.files = {"config.json", "generation_config.json", "model.safetensors"};
    return out;
  }

  // The linears' source dtype, kept when every dequantized weight is exact in it (checked
  // layer by layer; the first inexact value settles it).
  DType linear_dtype = source.weights.info(linears.front().name + ".weight").dtype;
  bool exact = is_floating(linear_dtype);
  for (const auto& li : linears) {
    if (!exact || linear_dtype == DType::kF32) break;
    exact = source.weights.info(li.name + ".weight").dtype == linear_dtype &&
            detail::exact_in(linear_dtype, dequantized(li.index));
  }
  const bool all_f32 = !exact || linear_dtype == DType::kF32;
  out.dtype = exact ? linear_dtype : DType::kF32;
  out.dtype_reason = linear_dtype == DType::kF32
                         ? "the source weights are f32"
                         : exact ? fmt::format("every dequantized weight is exact in the source "
                                               "dtype {}", dtype_name(linear_dtype))
                                 : fmt::format("the dequantized weights are not exact in the "
                                               "source dtype {}: every tensor is stored as f32",
                                               dtype_name(linear_dtype));

  // Every tensor is produced as the file is written, one at a time.
  io::SafetensorsWriter writer;
  writer.set_metadata("format", "pt");
  std::size_t source_bytes = 0;
  std::vector<std::size_t> shard_bytes(source.weights.file_count(), 0);  // tensor bytes per file
  for (const auto& name : source.weights.names()) {
    const auto& info = source.weights.info(name);
    source_bytes += info.nbytes;
    shard_bytes[info.file] += info.nbytes;
    if (auto it = linear_of.find(name); it != linear_of.end()) {
      const auto& q = weights[it->second];
      const DType t = out.dtype;
      writer.add_lazy(name, t, info.shape,
                      [&q, t](std::size_t r, std::size_t n, std::span<std::byte> dst) {
        const auto rows = static_cast<Eigen::Index>(n);
        if (t == DType::kF32) {
          q.dequantize_rows_into(static_cast<Eigen::Index>(r), rows,
                                 Eigen::Map<MatrixF>(reinterpret_cast<float*>(dst.data()), rows, q.cols),
                                 /*parallel=*/false);
          return;
        }
        MatrixF w(rows, q.cols);
        q.dequantize_rows_into(static_cast<Eigen::Index>(r), rows, w, /*parallel=*/false);
        auto* h = reinterpret_cast<std::uint16_t*>(dst.data());
        const auto m = static_cast<std::size_t>(w.size());
        if (t == DType::kBF16) convert_f32_to_bf16(w.data(), h, m);
        else convert_f32_to_f16(w.data(), h, m);
      });
    } else {
      // Unquantized tensors: their bytes, or their values as f32 when every tensor becomes f32.
      const auto bytes = source.weights.bytes(name);
      const DType from = info.dtype;
      const DType to = all_f32 && is_floating(from) ? DType::kF32 : from;
      const std::size_t row_bytes = info.shape.empty() || info.shape[0] == 0
                                        ? bytes.size() : bytes.size() / info.shape[0];
      writer.add_lazy(name, to, info.shape,
                      [bytes, from, to, row_bytes](std::size_t r, std::size_t n,
                                                   std::span<std::byte> dst) {
        const auto src = bytes.subspan(r * row_bytes, n * row_bytes);
        if (from == to)
          std::memcpy(dst.data(), src.data(), src.size());
        else
          convert_to_f32(from, src.data(), reinterpret_cast<float*>(dst.data()),
                         src.size() / dtype_size(from));
      });
    }
  }
  out.tensor_bytes = writer.data_bytes();

  // Shards as large as the source's largest (scaled by the dtype change), when it has shards.
  const auto index = source_path / io::kSafetensorsIndexName;
  if (fs::exists(index)) {
    const std::size_t largest =
        std::max<std::size_t>(1, *std::max_element(shard_bytes.begin(), shard_bytes.end()));
    const double scale = source_bytes ? static_cast<double>(out.tensor_bytes) / source_bytes : 1.0;
    const auto max_shard = static_cast<std::size_t>(std::ceil(largest * scale));
    writer.write_sharded(dir, max_shard);
    for (const auto& e : fs::directory_iterator(dir))
      out.files.push_back(e.path().filename().string());
  } else {
    writer.write(dir / "model.safetensors");
    out.files.push_back("model.safetensors");
  }

  // The config, with its dtype made to match when every tensor became f32.
  const auto config_text = io::read_input_file(source_path / "config.json", "config.json");
  if (all_f32 && linear_dtype != DType::kF32) {
    auto cfg = nlohmann::ordered_json::parse(config_text);
    for (const char* key : {"dtype", "torch_dtype"})
      if (cfg.contains(key)) cfg[key] = "float32";
    io::write_atomically(dir / "config.json", std::string_view(cfg.dump(2) + "\n"));
  } else {
    io::write_atomically(dir / "config.json", std::string_view(config_text));
  }
  out.files.push_back("config.json");
  for (auto& f : copy_hf_side_files(source_path, dir)) out.files.push_back(std::move(f));
  std::sort(out.files.begin(), out.files.end());
  out.files.erase(std::unique(out.files.begin(), out.files.end()), out.files.end());
  return out;
}

}  // namespace fragile::exporting
