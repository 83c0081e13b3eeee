// A read-only, name-indexed set of tensors backed by memory-mapped files.
//
// Every on-disk model format fragile reads (safetensors, single or sharded; llama2.c
// checkpoints) ends up as a TensorStore: the files stay mmapped, each tensor is a validated
// (file, byte range, dtype, shape) entry, and `load_f32` upcasts on demand.
#pragma once

#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>
#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xtensor.hpp>

#include "fragile/core/dtype.hpp"
#include "fragile/core/finite.hpp"
#include "fragile/core/error.hpp"
#include "fragile/core/mapped_file.hpp"

namespace fragile::io {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<std::size_t> shape;
  std::size_t file = 0;    ///< index into the store's files
  std::size_t offset = 0;  ///< absolute byte offset in that file
  std::size_t nbytes = 0;

  [[nodiscard]] std::size_t numel() const noexcept {
    std::size_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

/// Formats a shape as [a, b, c].
inline std::string shape_string(std::span<const std::size_t> shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

class TensorStore {
 public:
  TensorStore() = default;
  explicit TensorStore(std::string description) : description_(std::move(description)) {}

  /// Adds a mapped file; returns its index for add_tensor.
  std::size_t add_file(MappedFile file) {
    files_.push_back(std::make_shared<MappedFile>(std::move(file)));
    return files_.size() - 1;
  }

  /// Registers a tensor after checking that its byte range lies inside its file and matches
  /// numel x itemsize, and that the name is new.
  void add_tensor(TensorInfo info) {
    require<IoError>(info.file < files_.size(), "{}: tensor '{}' refers to file #{} of {}",
                     description_, info.name, info.file, files_.size());
    const auto& f = *files_[info.file];
    std::size_t expected = dtype_size(info.dtype);
    for (auto d : info.shape)
      require<IoError>(!__builtin_mul_overflow(expected, d, &expected),
                       "{}: tensor '{}' has shape {}, whose byte size overflows", f.path().string(),
                       info.name, shape_string(info.shape));
    require<IoError>(info.nbytes == expected,
                     "{}: tensor '{}' ({} {}) needs {} bytes, its byte range holds {}",
                     f.path().string(), info.name, dtype_name(info.dtype), shape_string(info.shape),
                     expected, info.nbytes);
    require<IoError>(info.offset <= f.size() && info.nbytes <= f.size() - info.offset,
                     "{}: tensor '{}' ends at byte {}, file has {}", f.path().string(), info.name,
                     info.offset + info.nbytes, f.size());
    require<IoError>(!index_.contains(info.name), "{}: tensor '{}' appears twice", description_,
                     info.name);
    index_.emplace(info.name, std::move(info));
  }

  void set_metadata(std::string key, std::string value) {
    metadata_[std::move(key)] = std::move(value);
  }

  [[nodiscard]] const std::string& description() const noexcept { return description_; }
  /// Number of mapped files (shards) and each one's mapping.
  [[nodiscard]] std::size_t file_count() const noexcept { return files_.size(); }
  [[nodiscard]] const MappedFile& file(std::size_t i) const {
    require<ArgumentError>(i < files_.size(), "{}: file #{} of {}", description_, i, files_.size());
    return *files_[i];
  }
  [[nodiscard]] std::size_t size() const noexcept { return index_.size(); }
  [[nodiscard]] bool contains(const std::string& name) const { return index_.contains(name); }
  [[nodiscard]] const std::map<std::string, std::string>& metadata() const noexcept {
    return metadata_;
  }

  /// Tensor names in sorted order.
  [[nodiscard]] std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(index_.size());
    for (const auto& [name, info] : index_) out.push_back(name);
    return out;
  }

  [[nodiscard]] const TensorInfo& info(const std::string& name) const {
    auto it = index_.find(name);
    if (it == index_.end()) raise<IoError>("{}: no tensor named '{}'", description_, name);
    return it->second;
  }

  /// The tensor's stored bytes (zero-copy view into the mapped file).
  [[nodiscard]] std::span<const std::byte> bytes(const std::string& name) const {
    const auto& i = info(name);
    return files_[i.file]->bytes().subspan(i.offset, i.nbytes);
  }

  /// Copies the tensor into `dst` as f32 (upcasting bf16/f16), throwing NumericError naming the
  /// tensor if any value is NaN or Inf, and IoError for an integer dtype.
  void read_f32(const std::string& name, std::span<float> dst) const {
    const auto& i = info(name);
    require<ShapeError>(dst.size() == i.numel(), "{}: tensor '{}' has {} elements, buffer has {}",
                        description_, name, i.numel(), dst.size());
    // Integer tensors are codes (a quantized checkpoint), not values: never read them as weights.
    require<IoError>(is_floating(i.dtype),
                     "{}: tensor '{}' is stored as {}; fragile reads values stored as F32, F16 or "
                     "BF16 (a quantized checkpoint is not a source: give its FP original)",
                     description_, name, dtype_name(i.dtype));
    // Convert and check in cache-sized blocks (the check is first_non_finite's vectorised scan).
    const std::byte* src = bytes(name).data();
    const std::size_t item = dtype_size(i.dtype);
    constexpr std::size_t kBlock = 8192;
    for (std::size_t start = 0; start < dst.size(); start += kBlock) {
      const std::size_t n = std::min(kBlock, dst.size() - start);
      float* d = dst.data() + start;
      convert_to_f32(i.dtype, src + start * item, d, n);
      if (const std::size_t k = first_non_finite(d, n); k < n)
        raise<NumericError>("{}: tensor '{}' holds a non-finite value ({}) at flat index {}",
                            description_, name, d[k], start + k);
    }
  }

  /// The tensor as an f32 array of its stored rank.
  [[nodiscard]] xt::xarray<float> load_f32(const std::string& name) const {
    const auto& i = info(name);
    xt::xarray<float> out(std::vector<std::size_t>(i.shape.begin(), i.shape.end()));
    read_f32(name, std::span<float>(out.data(), out.size()));
    return out;
  }

  /// The tensor as an f32 array of rank N; ShapeError if its rank differs.
  template <std::size_t N>
  [[nodiscard]] xt::xtensor<float, N> load_f32(const std::string& name) const {
    const auto& i = info(name);
    require<ShapeError>(i.shape.size() == N, "{}: tensor '{}' has shape {}, expected rank {}",
                        description_, name, shape_string(i.shape), N);
    std::array<std::size_t, N> shape{};
    if constexpr (N > 0) std::copy(i.shape.begin(), i.shape.end(), shape.begin());
    xt::xtensor<float, N> out(shape);
    read_f32(name, std::span<float>(out.data(), out.size()));
    return out;
  }

 private:
  std::string description_ = "tensor store";
  std::vector<std::shared_ptr<const MappedFile>> files_;
  std::map<std::string, TensorInfo> index_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace fragile::io
