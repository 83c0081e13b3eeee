// The packed GPTQ checkpoint, as AutoGPTQ/GPTQModel write it and transformers/optimum,
// GPTQModel, vLLM and exllamav2 load it. For a linear with weight W (out, in), `b` bits and
// G groups of `group_size` input columns:
//   qweight  I32 (in * b / 32, out)  column n holds W[n, :]'s codes as one little-endian bit
//                                    stream along the input, 32 bits per word (so 3-bit codes
//                                    straddle words, 32 codes per 3 words)
//   qzeros   I32 (G, out * b / 32)   row g: the zero points of group g over the outputs, packed
//                                    the same way; format v1 ("gptq") stores zero - 1, v2
//                                    ("gptq_v2") the zero itself
//   scales   F16 (G, out)
//   g_idx    I32 (in)                g_idx[c] = c / group_size
// and dequantization W^[n, c] = scales[g, n] * (code - zero), g = g_idx[c]: bit for bit the
// deployed weight of export/quantize_plan.hpp (f16 scales, f32 product). Per-channel grids
// (group_size 0) are one group, written as group_size -1.
//
// A mixed-precision plan keeps the most common (bits, group_size, sym) in the
// quantization_config and gives every other layer a GPTQModel `dynamic` override keyed by the
// anchored module-name regex "+:^model\.layers\.0\.self_attn\.q_proj$".
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

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <tuple>
#include <vector>

namespace fragile::exporting {

enum class GptqFormat {
  kV1,  ///< "gptq": zero points stored minus one (every loader reads it; a zero of 0 cannot be
        ///< stored)
  kV2,  ///< "gptq_v2": zero points as they are (GPTQModel)
};

inline std::string_view gptq_format_name(GptqFormat f) noexcept {
  return f == GptqFormat::kV2 ? "gptq_v2" : "gptq";
}

/// One linear layer in GPTQ's packed layout (row-major arrays, shapes as in the header).
struct GptqPacked {
  std::size_t in = 0, out = 0, groups = 0;
  int bits = 0, group_size = 0;  ///< group_size -1: one group per output row
  std::vector<std::int32_t> qweight, qzeros, g_idx;
  std::vector<std::uint16_t> scales;  ///< f16 bits
};

namespace detail {

inline std::uint32_t load_le32(const std::uint8_t* p) noexcept {
  std::uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

/// Packs `n` values of `bits` bits each as one little-endian bit stream into 32-bit words.
template <class Get>
void pack_stream(std::size_t n, int bits, std::int32_t* words, Get&& value) {
  std::uint64_t acc = 0;
  int filled = 0;
  std::size_t w = 0;
  for (std::size_t i = 0; i < n; ++i) {
    acc |= static_cast<std::uint64_t>(value(i)) << filled;
    filled += bits;
    if (filled >= 32) {
      words[w++] = static_cast<std::int32_t>(static_cast<std::uint32_t>(acc));
      acc >>= 32;
      filled -= 32;
    }
  }
}

}  // namespace detail

/// Packs one quantized weight (its scales already f16 values, see quantize_plan) into `p`,
/// reusing its buffers. ConfigError naming `layer` when the shape cannot be packed or a zero
/// point cannot be stored.
inline void pack_gptq(const quant::QuantizedWeight& q, GptqFormat format, const std::string& layer,
                      GptqPacked& p) {
  p.in = static_cast<std::size_t>(q.cols);
  p.out = static_cast<std::size_t>(q.rows);
  p.bits = q.bits;
  p.groups = static_cast<std::size_t>(q.groups.num_groups);
  p.group_size = q.groups.group_size >= q.cols ? -1 : static_cast<int>(q.groups.group_size);
  const auto b = static_cast<std::size_t>(q.bits);
  require<ConfigError>(q.bits == 2 || q.bits == 3 || q.bits == 4 || q.bits == 8,
                       "layer '{}': {}-bit weights have no GPTQ packing (2, 3, 4 or 8 bits)",
                       layer, q.bits);
  require<ConfigError>(p.in * b % 32 == 0,
                       "layer '{}': {} input features x {} bits is not a whole number of 32-bit "
                       "words, which GPTQ's qweight needs", layer, p.in, q.bits);
  require<ConfigError>(p.out * b % 32 == 0,
                       "layer '{}': {} output features x {} bits is not a whole number of 32-bit "
                       "words, which GPTQ's qzeros needs", layer, p.out, q.bits);

  // qweight is the transpose of the rows' bit streams read as 32-bit words, done in tiles
  // that fit L1 on both sides.
  const std::size_t words = p.in * b / 32, out = p.out;
  p.qweight.resize(words * out);
  const std::uint8_t* codes = q.codes.bytes().data();
  const auto row_bytes = static_cast<std::size_t>(q.codes.row_bytes());
  std::int32_t* dst = p.qweight.data();
  constexpr std::size_t kTile = 8;
  const auto word_tiles = static_cast<std::ptrdiff_t>((words + kTile - 1) / kTile);
#pragma omp parallel for schedule(static) if (words * out > (1u << 18))
  for (std::ptrdiff_t t = 0; t < word_tiles; ++t) {
    const std::size_t w0 = static_cast<std::size_t>(t) * kTile, w1 = std::min(w0 + kTile, words);
    for (std::size_t r0 = 0; r0 < out; r0 += kTile) {
      const std::size_t r1 = std::min(r0 + kTile, out);
      for (std::size_t w = w0; w < w1; ++w) {
        std::int32_t* d = dst + w * out;
        const std::uint8_t* src = codes + 4 * w;
        for (std::size_t r = r0; r < r1; ++r)
          d[r] = static_cast<std::int32_t>(detail::load_le32(src + r * row_bytes));
      }
    }
  }

  const int offset = format == GptqFormat::kV1 ? 1 : 0;
  const unsigned mask = (1u << q.bits) - 1u;
  p.qzeros.resize(p.groups * p.out * b / 32);
  p.scales.resize(p.groups * p.out);
  for (std::size_t g = 0; g < p.groups; ++g) {
    detail::pack_stream(p.out, q.bits, p.qzeros.data() + g * p.out * b / 32, [&](std::size_t n) {
      const int z = static_cast<int>(q.zeros(static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(g)));
      if (z - offset < 0)
        raise<ConfigError>("layer '{}': row {}, group {} has zero point 0, which GPTQ's v1 format "
                           "cannot store (it stores zero - 1); write format gptq_v2",
                           layer, n, g);
      return static_cast<unsigned>(z - offset) & mask;
    });
    for (std::size_t n = 0; n < p.out; ++n)
      p.scales[g * p.out + n] =
          f32_to_f16(q.scales(static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(g)));
  }
  p.g_idx.resize(p.in);
  for (std::size_t c = 0; c < p.in; ++c)
    p.g_idx[c] = static_cast<std::int32_t>(q.groups.group_of(static_cast<Eigen::Index>(c)));
}

inline GptqPacked pack_gptq(const quant::QuantizedWeight& q, GptqFormat format,
                            const std::string& layer) {
  GptqPacked p;
  pack_gptq(q, format, layer, p);
  return p;
}

/// Dequantizes a packed layer as a GPTQ loader does (the inverse of pack_gptq), (out, in)
/// row-major: the test of pack_gptq, and what tools/check_gptq_export.py recomputes in Python.
inline std::vector<float> unpack_gptq(const GptqPacked& p, GptqFormat format) {
  const auto b = static_cast<std::size_t>(p.bits);
  const unsigned mask = (1u << p.bits) - 1u;
  auto field = [&](const std::int32_t* words, std::size_t i) {
    const std::size_t bit = i * b;
    std::uint64_t v = static_cast<std::uint32_t>(words[bit / 32]);
    if (bit % 32 + b > 32) v |= static_cast<std::uint64_t>(static_cast<std::uint32_t>(words[bit / 32 + 1])) << 32;
    return static_cast<unsigned>(v >> (bit % 32)) & mask;
  };
  std::vector<float> w(p.out * p.in);
  std::vector<std::int32_t> column(p.in * b / 32);
  for (std::size_t n = 0; n < p.out; ++n) {
    for (std::size_t k = 0; k < column.size(); ++k) column[k] = p.qweight[k * p.out + n];
    for (std::size_t c = 0; c < p.in; ++c) {
      const auto g = static_cast<std::size_t>(p.g_idx[c]);
      const auto z = static_cast<float>(field(p.qzeros.data() + g * p.out * b / 32, n) +
                                        (format == GptqFormat::kV1 ? 1u : 0u));
      const float s = f16_to_f32(p.scales[g * p.out + n]);
      w[n * p.in + c] = s * (static_cast<float>(field(column.data(), c)) - z);
    }
  }
  return w;
}

/// What write_gptq_checkpoint wrote.
struct GptqCheckpoint {
  nlohmann::json quantization_config;
  std::size_t tensor_bytes = 0;
  std::size_t overrides = 0;  ///< dynamic entries
};

namespace detail {
inline std::string regex_escape(const std::string& s) {
  std::string r;
  for (char c : s) {
    if (std::strchr(".^$|()[]{}*+?\\", c)) r += '\\';
    r += c;
  }
  return r;
}
}  // namespace detail

/// ConfigError unless `source_path` is a Hugging Face model folder: a GPTQ checkpoint carries
/// its config and tokenizer files. Callers may check before quantizing.
inline void require_gptq_source(const std::filesystem::path& source_path) {
  require<ConfigError>(std::filesystem::is_directory(source_path),
                       "GPTQ export: '{}' is a llama2.c checkpoint; GPTQ checkpoints are written "
                       "from Hugging Face model folders (write the fake-quant checkpoint, a "
                       "Hugging Face folder, and quantize that)", source_path.string());
}

/// Writes the packed GPTQ checkpoint of `source` (a HF folder at `source_path`) into the empty
/// folder `dir`. Tensors other than the quantized linears keep their bytes and dtype.
inline GptqCheckpoint write_gptq_checkpoint(const std::filesystem::path& dir,
                                            const io::Checkpoint& source,
                                            const std::filesystem::path& source_path,
                                            const std::vector<model::LinearInfo>& linears,
                                            const std::vector<quant::QuantizedWeight>& weights,
                                            GptqFormat format, const nlohmann::json& meta = {}) {
  namespace fs = std::filesystem;
  require_gptq_source(source_path);
  require<ArgumentError>(weights.size() == linears.size(),
                         "write_gptq_checkpoint: {} weights for {} linear layers", weights.size(),
                         linears.size());
  std::error_code ec;
  fs::create_directories(dir, ec);
  require<IoError>(!ec, "cannot create the export folder '{}': {}", dir.string(), ec.message());
  // The most common grid is the base; the rest are dynamic overrides.
  using Grid = std::tuple<int, int, bool>;
  std::map<Grid, std::size_t> count;
  auto grid_of = [&](const quant::QuantizedWeight& q) {
    return Grid{q.bits, q.groups.group_size >= q.cols ? -1 : static_cast<int>(q.groups.group_size),
                q.symmetric};
  };
  for (const auto& q : weights) ++count[grid_of(q)];
  Grid base{};
  std::size_t best = 0;
  for (const auto& [g, n] : count)
    if (n > best) best = n, base = g;

  io::SafetensorsWriter writer;
  writer.set_metadata("format", "pt");
  std::map<std::string, std::size_t> linear_of;
  for (const auto& li : linears) linear_of[li.name + ".weight"] = li.index;
  auto bytes_of = [](const auto& v) {
    return std::span<const std::byte>(reinterpret_cast<const std::byte*>(v.data()),
                                      v.size() * sizeof(v[0]));
  };
  nlohmann::ordered_json dynamic = nlohmann::ordered_json::object();
  GptqPacked p;  // one set of buffers for every layer
  for (const auto& name : source.weights.names()) {
    const auto& info = source.weights.info(name);
    auto it = linear_of.find(name);
    if (it == linear_of.end()) {
      writer.add_raw(name, info.dtype, info.shape, source.weights.bytes(name));
      continue;
    }
    const auto& li = linears[it->second];
    const auto& q = weights[it->second];
    pack_gptq(q, format, li.name, p);
    const auto b = static_cast<std::size_t>(p.bits);
    writer.add_raw(li.name + ".qweight", DType::kI32, {p.in * b / 32, p.out}, bytes_of(p.qweight));
    writer.add_raw(li.name + ".qzeros", DType::kI32, {p.groups, p.out * b / 32}, bytes_of(p.qzeros));
    writer.add_raw(li.name + ".scales", DType::kF16, {p.groups, p.out}, bytes_of(p.scales));
    writer.add_raw(li.name + ".g_idx", DType::kI32, {p.in}, bytes_of(p.g_idx));
    if (const auto g = grid_of(q); g != base) {
      nlohmann::ordered_json o;
      if (std::get<0>(g) != std::get<0>(base)) o["bits"] = std::get<0>(g);
      if (std::get<1>(g) != std::get<1>(base)) o["group_size"] = std::get<1>(g);
      if (std::get<2>(g) != std::get<2>(base)) o["sym"] = std::get<2>(g);
      dynamic["+:^" + detail::regex_escape(li.name) + "$"] = o;
    }
  }
  GptqCheckpoint out;
  out.tensor_bytes = writer.data_bytes();
  out.overrides = dynamic.size();
  nlohmann::ordered_json qc;
  qc["quant_method"] = "gptq";
  qc["checkpoint_format"] = std::string(gptq_format_name(format));
  qc["bits"] = std::get<0>(base);
  qc["group_size"] = std::get<1>(base);
  qc["sym"] = std::get<2>(base);
  qc["desc_act"] = false;
  qc["static_groups"] = false;
  qc["true_sequential"] = true;
  qc["lm_head"] = false;
  if (!dynamic.empty()) qc["dynamic"] = dynamic;
  qc["meta"] = meta.is_null() ? nlohmann::ordered_json::object() : nlohmann::ordered_json(meta);
  out.quantization_config = nlohmann::json::parse(qc.dump());

  writer.write(dir / "model.safetensors");
  auto cfg = nlohmann::ordered_json::parse(
      io::read_input_file(source_path / "config.json", "config.json"));
  cfg["quantization_config"] = qc;
  io::write_atomically(dir / "config.json", std::string_view(cfg.dump(2) + "\n"));
  io::write_atomically(dir / "quantize_config.json", std::string_view(qc.dump(2) + "\n"));
  copy_hf_side_files(source_path, dir);
  return out;
}

}  // namespace fragile::exporting
