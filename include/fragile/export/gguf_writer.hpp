// A minimal GGUF v3 writer (ggml's container format; docs/gguf.md of ggml-org/ggml), enough for
// the files fragile hands to llama.cpp: scalar u32 and string metadata, string arrays, and F32
// tensors. Little-endian, as llama.cpp reads it:
//
//   "GGUF", u32 version = 3, u64 tensor_count, u64 kv_count,
//   kv_count x (string key, u32 value type, value)     string = u64 byte length, bytes (no NUL)
//                                                      array  = u32 element type, u64 count, values
//   tensor_count x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset)
//   zero padding to the alignment, then each tensor's data at its offset (relative to the start
//   of the data section), each padded with zeros to the alignment.
//
// ne[0] is the fastest-varying dimension (a row-major (rows, cols) matrix is ne = [cols, rows]).
// The layout follows ggml's own writer (src/gguf.cpp, gguf_write_out) byte for byte: KVs and
// tensors in insertion order, offsets packed with padding, the file ending padded, and n_dims
// as ggml_n_dims counts it (trailing dimensions of 1 dropped, at least one kept), so a file
// written here equals the one ggml writes for the same content.
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/io/atomic_file.hpp"

#include <bit>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fragile::exporting {

inline constexpr std::uint32_t kGgufVersion = 3;
inline constexpr std::uint32_t kGgufDefaultAlignment = 32;  ///< GGUF_DEFAULT_ALIGNMENT
inline constexpr std::size_t kGgufMaxKeyBytes = 65535;      ///< the spec's key limit
inline constexpr std::size_t kGgmlMaxNameBytes = 63;        ///< GGML_MAX_NAME (64) with its NUL
inline constexpr std::size_t kGgmlMaxDims = 4;              ///< GGML_MAX_DIMS

/// gguf_metadata_value_type (the ones this writer emits).
enum class GgufValueType : std::uint32_t { kUint32 = 4, kString = 8, kArray = 9 };

/// ggml_type of a tensor (the one this writer emits).
inline constexpr std::uint32_t kGgmlTypeF32 = 0;

class GgufWriter {
 public:
  /// `alignment` other than the default is recorded as "general.alignment" (u32), as llama.cpp
  /// reads it; it must be a power of two.
  explicit GgufWriter(std::uint32_t alignment = kGgufDefaultAlignment) : alignment_(alignment) {
    require<ArgumentError>(alignment > 0 && (alignment & (alignment - 1)) == 0,
                           "gguf: alignment {} is not a power of two", alignment);
    if (alignment != kGgufDefaultAlignment) add_u32("general.alignment", alignment);
  }

  void add_u32(std::string key, std::uint32_t value) {
    Kv kv = new_kv(std::move(key), GgufValueType::kUint32);
    put_u32(kv.value, value);
    kvs_.push_back(std::move(kv));
  }

  void add_string(std::string key, std::string_view value) {
    Kv kv = new_kv(std::move(key), GgufValueType::kString);
    put_string(kv.value, value);
    kvs_.push_back(std::move(kv));
  }

  void add_string_array(std::string key, std::span<const std::string> values) {
    Kv kv = new_kv(std::move(key), GgufValueType::kArray);
    put_u32(kv.value, static_cast<std::uint32_t>(GgufValueType::kString));
    put_u64(kv.value, values.size());
    for (const auto& v : values) put_string(kv.value, v);
    kvs_.push_back(std::move(kv));
  }

  /// An F32 tensor with extents `ne` (ne[0] fastest) and `values` in that order.
  void add_tensor_f32(std::string name, std::vector<std::uint64_t> ne, std::span<const float> values) {
    require<ArgumentError>(!name.empty() && name.size() <= kGgmlMaxNameBytes,
                           "gguf: tensor name '{}' is {} bytes, expected 1 to {} (ggml's "
                           "GGML_MAX_NAME)", name, name.size(), kGgmlMaxNameBytes);
    require<ArgumentError>(!tensor_names_.contains(name), "gguf: tensor '{}' added twice", name);
    require<ShapeError>(!ne.empty() && ne.size() <= kGgmlMaxDims,
                        "gguf: tensor '{}' has {} dimensions, expected 1 to {}", name, ne.size(),
                        kGgmlMaxDims);
    std::uint64_t n = 1;
    for (auto d : ne) {
      require<ShapeError>(d > 0, "gguf: tensor '{}' has an empty dimension", name);
      n *= d;
    }
    require<ShapeError>(n == values.size(), "gguf: tensor '{}' has {} values, its extents hold {}",
                        name, values.size(), n);
    tensor_names_.insert(name);
    // ggml_n_dims: trailing 1s are implied.
    while (ne.size() > 1 && ne.back() == 1) ne.pop_back();
    Tensor t{std::move(name), std::move(ne), kGgmlTypeF32, {}};
    t.data.reserve(values.size() * 4);
    for (float v : values) put_u32(t.data, std::bit_cast<std::uint32_t>(v));
    tensors_.push_back(std::move(t));
  }

  /// The whole file.
  [[nodiscard]] std::vector<std::byte> bytes() const {
    std::vector<std::byte> out;
    for (char c : std::string_view("GGUF")) out.push_back(static_cast<std::byte>(c));
    put_u32(out, kGgufVersion);
    put_u64(out, tensors_.size());
    put_u64(out, kvs_.size());
    for (const auto& kv : kvs_) {
      put_string(out, kv.key);
      put_u32(out, static_cast<std::uint32_t>(kv.type));
      out.insert(out.end(), kv.value.begin(), kv.value.end());
    }
    std::uint64_t offset = 0;
    for (const auto& t : tensors_) {
      put_string(out, t.name);
      put_u32(out, static_cast<std::uint32_t>(t.ne.size()));
      for (auto d : t.ne) put_u64(out, d);
      put_u32(out, t.ggml_type);
      put_u64(out, offset);
      offset += padded(t.data.size());
    }
    pad(out);
    for (const auto& t : tensors_) {
      out.insert(out.end(), t.data.begin(), t.data.end());
      pad(out);
    }
    return out;
  }

  /// Writes the file atomically (readers see the old file or the whole new one).
  void write(const std::filesystem::path& path) const {
    const auto b = bytes();
    io::write_atomically(path, std::span<const std::byte>(b));
  }

  [[nodiscard]] std::uint32_t alignment() const noexcept { return alignment_; }

 private:
  struct Kv {
    std::string key;
    GgufValueType type;
    std::vector<std::byte> value;  ///< encoded value (after the type)
  };
  struct Tensor {
    std::string name;
    std::vector<std::uint64_t> ne;
    std::uint32_t ggml_type;
    std::vector<std::byte> data;
  };

  Kv new_kv(std::string key, GgufValueType type) {
    require<ArgumentError>(!key.empty() && key.size() <= kGgufMaxKeyBytes,
                           "gguf: key '{}' is {} bytes, expected 1 to {}", key.substr(0, 80),
                           key.size(), kGgufMaxKeyBytes);
    require<ArgumentError>(keys_.insert(key).second, "gguf: key '{}' added twice", key);
    return Kv{std::move(key), type, {}};
  }

  [[nodiscard]] std::uint64_t padded(std::uint64_t n) const noexcept {
    return (n + alignment_ - 1) / alignment_ * alignment_;
  }
  void pad(std::vector<std::byte>& out) const { out.resize(padded(out.size()), std::byte{0}); }

  static void put_u32(std::vector<std::byte>& out, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xffu));
  }
  static void put_u64(std::vector<std::byte>& out, std::uint64_t v) {
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xffu));
  }
  static void put_string(std::vector<std::byte>& out, std::string_view s) {
    put_u64(out, s.size());
    for (char c : s) out.push_back(static_cast<std::byte>(c));
  }

  std::uint32_t alignment_;
  std::vector<Kv> kvs_;
  std::vector<Tensor> tensors_;
  std::set<std::string, std::less<>> keys_, tensor_names_;
};

}  // namespace fragile::exporting
