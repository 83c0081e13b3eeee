// safetensors reader and writer: single files and HF-style shards (model.safetensors.index.json).
//
// Format (https://huggingface.co/docs/safetensors): 8-byte little-endian header length N, N
// bytes of UTF-8 JSON mapping tensor names to {"dtype", "shape", "data_offsets": [begin, end]}
// (offsets relative to the data section that starts at 8 + N) plus an optional string map
// "__metadata__", then the data section. Reading validates everything the reference library
// validates (and reports the file, tensor and numbers on failure): the tensors' byte ranges
// must match shape x itemsize, stay inside the file, not overlap, and cover the data section
// without holes. The files stay mmapped inside the returned TensorStore.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <limits>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <set>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "fragile/core/dtype.hpp"
#include "fragile/core/error.hpp"
#include "fragile/io/input_file.hpp"
#include "fragile/core/mapped_file.hpp"
#include "fragile/io/atomic_file.hpp"
#include "fragile/io/tensor_store.hpp"

namespace fragile::io {

/// Largest header the reader accepts (the reference implementation's limit).
inline constexpr std::size_t kSafetensorsMaxHeaderBytes = 100'000'000;

/// File name of the index of a sharded checkpoint.
inline constexpr std::string_view kSafetensorsIndexName = "model.safetensors.index.json";

/// A parsed and validated safetensors header. Each tensor's `offset` is absolute (from the start
/// of the file) and `file` is 0; tensors are sorted by offset.
struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  std::size_t data_offset = 0;  ///< 8 + header length: where the data section starts
};

namespace detail {

/// dtypes the safetensors format defines that fragile does not read.
inline bool is_other_safetensors_dtype(std::string_view name) {
  static constexpr std::array<std::string_view, 15> kOther = {
      "BOOL",    "U16",     "I16",     "U32", "I32",     "U64",     "I64", "F64",
      "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4",  "F6_E2M3", "F6_E3M2", "C64"};
  return std::find(kOther.begin(), kOther.end(), name) != kOther.end();
}

/// Short description of a JSON value's type for error messages (never dumps input).
inline std::string json_kind(const nlohmann::json& v) {
  if (v.is_number_unsigned()) return fmt::format("the integer {}", v.get<std::uint64_t>());
  if (v.is_number_integer()) return fmt::format("the integer {}", v.get<std::int64_t>());
  if (v.is_number_float()) return fmt::format("the number {}", v.get<double>());
  return fmt::format("a JSON {}", v.type_name());
}

/// numel x itemsize, or false on overflow.
inline bool checked_nbytes(std::span<const std::size_t> shape, std::size_t itemsize,
                           std::size_t& out) {
  std::size_t n = itemsize;
  for (auto d : shape)
    if (__builtin_mul_overflow(n, d, &n)) return false;
  out = n;
  return true;
}

inline std::uint64_t load_le64(const std::byte* p) noexcept {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | std::to_integer<std::uint64_t>(p[i]);
  return v;
}

/// One tensor entry of the header, validated except for its placement among the others.
inline TensorInfo parse_tensor_entry(const std::string& name, const nlohmann::json& entry,
                                     std::size_t data_size, std::size_t data_offset,
                                     std::string_view what) {
  require<IoError>(entry.is_object(), "{}: tensor '{}': header entry is {}, expected an object",
                   what, name, json_kind(entry));
  TensorInfo info;
  info.name = name;

  auto dt = entry.find("dtype");
  require<IoError>(dt != entry.end(), "{}: tensor '{}': missing field 'dtype'", what, name);
  require<IoError>(dt->is_string(), "{}: tensor '{}': 'dtype' is {}, expected a string", what, name,
                   json_kind(*dt));
  const auto& dname = dt->get_ref<const std::string&>();
  if (is_other_safetensors_dtype(dname))
    raise<IoError>(
        "{}: tensor '{}': dtype '{}' is not supported by fragile (expected F32, F16, BF16, I8 or "
        "U8)",
        what, name, dname);
  info.dtype = parse_dtype(dname, fmt::format("{}: tensor '{}'", what, name));

  auto sh = entry.find("shape");
  require<IoError>(sh != entry.end(), "{}: tensor '{}': missing field 'shape'", what, name);
  require<IoError>(sh->is_array(), "{}: tensor '{}': 'shape' is {}, expected an array", what, name,
                   json_kind(*sh));
  for (std::size_t k = 0; k < sh->size(); ++k) {
    const auto& d = (*sh)[k];
    require<IoError>(d.is_number_unsigned(),
                     "{}: tensor '{}': shape entry {} is {}, expected a non-negative integer", what,
                     name, k, json_kind(d));
    const auto v = d.get<std::uint64_t>();
    require<IoError>(v <= std::numeric_limits<std::size_t>::max(),
                     "{}: tensor '{}': shape entry {} is {}, too large", what, name, k, v);
    info.shape.push_back(static_cast<std::size_t>(v));
  }
  std::size_t expected = 0;
  require<IoError>(checked_nbytes(info.shape, dtype_size(info.dtype), expected),
                   "{}: tensor '{}': shape {} x {} bytes overflows the size type", what, name,
                   shape_string(info.shape), dtype_size(info.dtype));

  auto off = entry.find("data_offsets");
  require<IoError>(off != entry.end(), "{}: tensor '{}': missing field 'data_offsets'", what, name);
  require<IoError>(off->is_array() && off->size() == 2,
                   "{}: tensor '{}': 'data_offsets' is {}, expected an array [begin, end]", what,
                   name,
                   off->is_array() ? fmt::format("an array of {}", off->size()) : json_kind(*off));
  for (std::size_t k = 0; k < 2; ++k)
    require<IoError>((*off)[k].is_number_unsigned(),
                     "{}: tensor '{}': data_offsets[{}] is {}, expected a non-negative integer",
                     what, name, k, json_kind((*off)[k]));
  const auto begin = (*off)[0].get<std::uint64_t>();
  const auto end = (*off)[1].get<std::uint64_t>();
  require<IoError>(begin <= end, "{}: tensor '{}': data_offsets [{}, {}] end before they begin",
                   what, name, begin, end);
  require<IoError>(end <= data_size,
                   "{}: tensor '{}': data_offsets [{}, {}] end beyond the data section ({} bytes)",
                   what, name, begin, end, data_size);
  require<IoError>(end - begin == expected,
                   "{}: tensor '{}': {} {} needs {} bytes, data_offsets [{}, {}] hold {}", what,
                   name, dtype_name(info.dtype), shape_string(info.shape), expected, begin, end,
                   end - begin);
  info.offset = data_offset + static_cast<std::size_t>(begin);
  info.nbytes = static_cast<std::size_t>(end - begin);
  return info;
}

}  // namespace detail

/// Parses and validates the header of a safetensors file given the whole file's bytes. `what`
/// names the file in error messages. Throws IoError on any malformed input; never reads outside
/// `file_bytes`.
inline SafetensorsHeader parse_safetensors_header(std::span<const std::byte> file_bytes,
                                                  std::string_view what) {
  const std::size_t size = file_bytes.size();
  require<IoError>(size >= 8,
                   "{}: file is {} bytes, shorter than the 8-byte header length of safetensors",
                   what, size);
  const std::uint64_t n = detail::load_le64(file_bytes.data());
  require<IoError>(n >= 2, "{}: header length {} is too small (at least 2, for '{{}}')", what, n);
  require<IoError>(n <= kSafetensorsMaxHeaderBytes,
                   "{}: header length {} exceeds the limit of {} bytes", what, n,
                   kSafetensorsMaxHeaderBytes);
  require<IoError>(n <= size - 8, "{}: header length {} runs past the end of the file ({} bytes)",
                   what, n, size);

  const auto* text = reinterpret_cast<const char*>(file_bytes.data() + 8);
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(text, text + n);
  } catch (const nlohmann::json::exception& e) {
    raise<IoError>("{}: header is not valid JSON ({})", what, e.what());
  }
  require<IoError>(root.is_object(), "{}: header is {}, expected a JSON object", what,
                   detail::json_kind(root));

  SafetensorsHeader out;
  out.data_offset = 8 + static_cast<std::size_t>(n);
  const std::size_t data_size = size - out.data_offset;
  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      require<IoError>(value.is_object(), "{}: '__metadata__' is {}, expected a string map", what,
                       detail::json_kind(value));
      for (const auto& [mk, mv] : value.items()) {
        require<IoError>(mv.is_string(),
                         "{}: '__metadata__' entry '{}' is {}, expected a string (the "
                         "'__metadata__' must map strings to strings)",
                         what, mk, detail::json_kind(mv));
        out.metadata.emplace(mk, mv.get<std::string>());
      }
      continue;
    }
    out.tensors.push_back(detail::parse_tensor_entry(key, value, data_size, out.data_offset, what));
  }

  // Byte ranges must tile the data section exactly: sorted by (begin, end), each starts where
  // the previous ended. Empty tensors may sit at any boundary.
  std::sort(out.tensors.begin(), out.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.offset, a.nbytes, a.name) < std::tie(b.offset, b.nbytes, b.name);
  });
  std::size_t pos = 0;
  const TensorInfo* prev = nullptr;
  for (const auto& t : out.tensors) {
    const std::size_t begin = t.offset - out.data_offset;
    if (begin < pos)
      raise<IoError>(
          "{}: tensor '{}' (data_offsets [{}, {}]) overlaps tensor '{}' (data_offsets [{}, {}])",
          what, t.name, begin, begin + t.nbytes, prev->name, prev->offset - out.data_offset, pos);
    if (begin > pos)
      raise<IoError>(
          "{}: hole in the data section: bytes [{}, {}) belong to no tensor (next tensor '{}')",
          what, pos, begin, t.name);
    pos = begin + t.nbytes;
    prev = &t;
  }
  require<IoError>(pos == data_size,
                   "{}: hole in the data section: bytes [{}, {}) after the last tensor belong to "
                   "no tensor",
                   what, pos, data_size);
  return out;
}

namespace detail {

inline std::string read_text_file(const std::filesystem::path& p) {
  return read_input_file(p, "safetensors index");
}

inline bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

/// Maps one safetensors file into `store` and registers its tensors; returns the header.
inline SafetensorsHeader add_safetensors_file(TensorStore& store, const std::filesystem::path& p) {
  MappedFile file(p);
  SafetensorsHeader header = parse_safetensors_header(file.bytes(), p.string());
  const std::size_t index = store.add_file(std::move(file));
  for (auto info : header.tensors) {
    info.file = index;
    store.add_tensor(std::move(info));
  }
  return header;
}

inline TensorStore open_safetensors_index(const std::filesystem::path& index_path) {
  const std::string where = index_path.string();
  const std::string text = read_text_file(index_path);
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    raise<IoError>("{}: index is not valid JSON ({})", where, e.what());
  }
  require<IoError>(root.is_object(), "{}: index is {}, expected a JSON object", where,
                   json_kind(root));
  auto wm = root.find("weight_map");
  require<IoError>(wm != root.end(), "{}: index has no 'weight_map'", where);
  require<IoError>(wm->is_object(), "{}: 'weight_map' is {}, expected an object", where,
                   json_kind(*wm));

  // shard file name -> tensors the index puts there
  std::map<std::string, std::set<std::string>> shards;
  std::map<std::string, std::string> shard_of;
  for (const auto& [tensor, shard] : wm->items()) {
    require<IoError>(shard.is_string(), "{}: weight_map entry '{}' is {}, expected a file name",
                     where, tensor, json_kind(shard));
    const auto& s = shard.get_ref<const std::string&>();
    const std::filesystem::path sp(s);
    require<IoError>(
        !s.empty() && sp.is_relative() &&
            std::none_of(sp.begin(), sp.end(), [](const auto& c) { return c == ".."; }),
        "{}: weight_map entry '{}' names shard '{}', expected a file name relative "
        "to the index's folder",
        where, tensor, s);
    shards[s].insert(tensor);
    shard_of.emplace(tensor, s);
  }

  TensorStore store(where);
  if (auto md = root.find("metadata"); md != root.end()) {
    require<IoError>(md->is_object(), "{}: 'metadata' is {}, expected an object", where,
                     json_kind(*md));
    for (const auto& [k, v] : md->items())
      store.set_metadata(k, v.is_string() ? v.get<std::string>() : v.dump());
  }
  const auto dir = index_path.parent_path();
  for (const auto& [shard, expected] : shards) {
    const auto path = dir / shard;
    require<IoError>(std::filesystem::is_regular_file(path),
                     "{}: shard '{}' named in the index (for tensor '{}') is missing", where,
                     path.string(), *expected.begin());
    MappedFile file;
    SafetensorsHeader header;
    try {
      file = MappedFile(path);
      header = parse_safetensors_header(file.bytes(), path.string());
    } catch (const IoError& e) {
      raise<IoError>("{}: {}", where, e.what());  // say which index led to the bad shard
    }
    const std::size_t index = store.add_file(std::move(file));
    std::set<std::string> found;
    for (auto info : header.tensors) {
      auto it = shard_of.find(info.name);
      require<IoError>(it != shard_of.end(),
                       "{}: tensor '{}' in shard '{}' is not listed in the index", where, info.name,
                       shard);
      require<IoError>(it->second == shard,
                       "{}: tensor '{}' is in shard '{}' but the index names shard '{}'", where,
                       info.name, shard, it->second);
      found.insert(info.name);
      info.file = index;
      store.add_tensor(std::move(info));
    }
    for (const auto& name : expected)
      require<IoError>(found.contains(name),
                       "{}: the index names tensor '{}' in shard '{}', which does not hold it",
                       where, name, shard);
    for (const auto& [k, v] : header.metadata)
      if (!store.metadata().contains(k)) store.set_metadata(k, v);
  }
  return store;
}

}  // namespace detail

/// Opens a safetensors checkpoint: a `.safetensors` file, a `*.safetensors.index.json`
/// (sharded), or a folder holding `model.safetensors.index.json` (preferred) or
/// `model.safetensors` (or else exactly one index or one .safetensors file). Each file is
/// mmapped once and stays mapped in the store. Throws IoError naming the file and tensor.
inline TensorStore open_safetensors(const std::filesystem::path& p) {
  namespace fs = std::filesystem;
  require<IoError>(fs::exists(p), "safetensors: '{}' does not exist", p.string());
  if (fs::is_directory(p)) {
    if (fs::is_regular_file(p / kSafetensorsIndexName))
      return detail::open_safetensors_index(p / kSafetensorsIndexName);
    if (fs::is_regular_file(p / "model.safetensors"))
      return open_safetensors(p / "model.safetensors");
    std::vector<fs::path> indices, files;
    for (const auto& e : fs::directory_iterator(p)) {
      if (!e.is_regular_file()) continue;
      const auto name = e.path().filename().string();
      if (detail::ends_with(name, ".safetensors.index.json")) indices.push_back(e.path());
      if (detail::ends_with(name, ".safetensors")) files.push_back(e.path());
    }
    if (indices.size() == 1) return detail::open_safetensors_index(indices.front());
    require<IoError>(indices.empty(),
                     "safetensors: '{}' holds {} *.safetensors.index.json files, "
                     "cannot tell which to open",
                     p.string(), indices.size());
    require<IoError>(files.size() == 1,
                     "safetensors: '{}' holds no {} or model.safetensors and {} *.safetensors "
                     "files (expected exactly one)",
                     p.string(), kSafetensorsIndexName, files.size());
    return open_safetensors(files.front());
  }
  if (detail::ends_with(p.filename().string(), ".json")) return detail::open_safetensors_index(p);
  TensorStore store(p.string());
  auto header = detail::add_safetensors_file(store, p);
  for (auto& [k, v] : header.metadata) store.set_metadata(k, v);
  return store;
}

// ---------------------------------------------------------------- writer

/// Collects tensors and writes them as one safetensors file or as HF-style shards with an index.
/// The layout follows the reference implementation: tensors ordered by dtype (decreasing
/// itemsize, so every tensor is aligned to its itemsize) then name, the header padded with
/// spaces to a multiple of 8 bytes; the data section is byte-identical to what the reference
/// writes for the same tensors.
class SafetensorsWriter {
 public:
  /// Adds f32 values stored as `dtype` (F32, F16 or BF16; rounded to nearest even).
  void add(std::string name, DType dtype, std::vector<std::size_t> shape,
           std::span<const float> values) {
    require<ArgumentError>(is_floating(dtype),
                           "SafetensorsWriter: tensor '{}': add() stores F32/F16/BF16, not {}; use "
                           "add_raw for integer data",
                           name, dtype_name(dtype));
    const std::size_t n = checked_numel(name, shape);
    require<ShapeError>(values.size() == n,
                        "SafetensorsWriter: tensor '{}' has shape {} ({} elements), got {} values",
                        name, shape_string(shape), n, values.size());
    std::vector<std::byte> bytes(n * dtype_size(dtype));
    if (dtype == DType::kF32) {
      if (n) std::memcpy(bytes.data(), values.data(), bytes.size());
    } else {
      std::vector<std::uint16_t> half(n);
      if (dtype == DType::kBF16)
        convert_f32_to_bf16(values.data(), half.data(), n);
      else
        convert_f32_to_f16(values.data(), half.data(), n);
      if (n) std::memcpy(bytes.data(), half.data(), bytes.size());
    }
    push(std::move(name), dtype, std::move(shape), std::move(bytes));
  }

  /// Adds a tensor from its stored bytes (little-endian), for any dtype.
  void add_raw(std::string name, DType dtype, std::vector<std::size_t> shape,
               std::span<const std::byte> bytes) {
    const std::size_t n = checked_numel(name, shape);
    require<ShapeError>(bytes.size() == n * dtype_size(dtype),
                        "SafetensorsWriter: tensor '{}' ({} {}) needs {} bytes, got {}", name,
                        dtype_name(dtype), shape_string(shape), n * dtype_size(dtype),
                        bytes.size());
    push(std::move(name), dtype, std::move(shape), {bytes.begin(), bytes.end()});
  }

  /// A lazy tensor's bytes: produce(first_row, rows, dst) writes rows [first_row, first_row +
  /// rows) of the tensor (little-endian, its dtype; a row is everything after the first
  /// dimension) into dst.
  using RowProducer = std::function<void(std::size_t, std::size_t, std::span<std::byte>)>;

  /// Adds a tensor that `produce` computes while the file is written, a few megabytes of rows
  /// at a time on a second thread: a model larger than memory streams to disk through two small
  /// buffers. `produce` must be safe to call from another thread.
  void add_lazy(std::string name, DType dtype, std::vector<std::size_t> shape,
                RowProducer produce) {
    const std::size_t n = checked_numel(name, shape);
    push(std::move(name), dtype, std::move(shape), {}, n * dtype_size(dtype), std::move(produce));
  }

  void set_metadata(std::string key, std::string value) {
    metadata_[std::move(key)] = std::move(value);
  }

  [[nodiscard]] std::size_t size() const noexcept { return tensors_.size(); }

  /// Total bytes of tensor data.
  [[nodiscard]] std::size_t data_bytes() const noexcept {
    std::size_t n = 0;
    for (const auto& t : tensors_) n += t.nbytes;
    return n;
  }

  /// Writes all tensors to `path` atomically (a temporary file in the same folder, renamed).
  void write(const std::filesystem::path& path) const {
    std::vector<std::size_t> all(tensors_.size());
    for (std::size_t i = 0; i < all.size(); ++i) all[i] = i;
    write_file(path, all);
  }

  /// Writes HF-style shards `model-0000i-of-0000N.safetensors` of at most `max_shard_bytes` of
  /// tensor data each (a larger tensor gets a shard of its own), in insertion order, plus
  /// `model.safetensors.index.json`. With a single shard it writes `model.safetensors` and no
  /// index, as transformers does (removing a stale index there). Returns the path to pass to
  /// open_safetensors.
  std::filesystem::path write_sharded(const std::filesystem::path& dir,
                                      std::size_t max_shard_bytes) const {
    require<ArgumentError>(max_shard_bytes > 0, "SafetensorsWriter: max_shard_bytes must be > 0");
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    require<IoError>(!ec, "cannot create folder '{}': {}", dir.string(), ec.message());
    std::vector<std::vector<std::size_t>> shards;
    std::size_t current = 0;
    for (std::size_t i = 0; i < tensors_.size(); ++i) {
      const std::size_t nb = tensors_[i].nbytes;
      if (shards.empty() || (!shards.back().empty() && current + nb > max_shard_bytes)) {
        shards.emplace_back();
        current = 0;
      }
      shards.back().push_back(i);
      current += nb;
    }
    if (shards.size() <= 1) {
      const auto path = dir / "model.safetensors";
      write_file(path, shards.empty() ? std::vector<std::size_t>{} : shards.front());
      // A stale index from an earlier sharded write would shadow the new file.
      std::filesystem::remove(dir / kSafetensorsIndexName, ec);
      return path;
    }
    nlohmann::ordered_json index;
    index["metadata"]["total_size"] = data_bytes();
    std::map<std::string, std::string> weight_map;
    for (std::size_t s = 0; s < shards.size(); ++s) {
      const auto name = fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shards.size());
      write_file(dir / name, shards[s]);
      for (auto i : shards[s]) weight_map[tensors_[i].name] = name;
    }
    index["weight_map"] = weight_map;
    const auto path = dir / kSafetensorsIndexName;
    const std::string text = index.dump(2) + "\n";
    write_atomically(path, {reinterpret_cast<const std::byte*>(text.data()), text.size()});
    return path;
  }

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<std::size_t> shape;
    std::vector<std::byte> bytes;  // empty for a lazy tensor
    std::size_t nbytes = 0;
    RowProducer produce;           // set for a lazy tensor
  };

  static std::size_t checked_numel(const std::string& name, std::span<const std::size_t> shape) {
    std::size_t nb = 0;
    require<ShapeError>(detail::checked_nbytes(shape, 8, nb),
                        "SafetensorsWriter: tensor '{}': shape {} is too large", name,
                        shape_string(shape));
    return nb / 8;
  }

  void push(std::string name, DType dtype, std::vector<std::size_t> shape,
            std::vector<std::byte> bytes, std::optional<std::size_t> nbytes = std::nullopt,
            RowProducer produce = {}) {
    require<ArgumentError>(name != "__metadata__", "SafetensorsWriter: '__metadata__' is reserved");
    require<ArgumentError>(!names_.contains(name), "SafetensorsWriter: tensor '{}' added twice",
                           name);
    names_.insert(name);
    const std::size_t nb = nbytes.value_or(bytes.size());
    tensors_.push_back({std::move(name), dtype, std::move(shape), std::move(bytes), nb,
                        std::move(produce)});
  }

  void write_file(const std::filesystem::path& path, std::vector<std::size_t> order) const {
    // The reference orders by its dtype enum (descending): F32, I32, BF16, F16, I8, U8; then by
    // name.
    const auto rank = [](DType t) {
      switch (t) {
        case DType::kF32:
          return 6;
        case DType::kI32:
          return 5;
        case DType::kBF16:
          return 4;
        case DType::kF16:
          return 3;
        case DType::kI8:
          return 2;
        case DType::kU8:
          return 1;
      }
      return 0;
    };
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      const int ra = rank(tensors_[a].dtype), rb = rank(tensors_[b].dtype);
      if (ra != rb) return ra > rb;
      return tensors_[a].name < tensors_[b].name;
    });
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata_.empty()) header["__metadata__"] = metadata_;
    std::size_t pos = 0;
    for (auto i : order) {
      const auto& t = tensors_[i];
      nlohmann::ordered_json e;
      e["dtype"] = std::string(dtype_name(t.dtype));
      e["shape"] = t.shape;
      e["data_offsets"] = {pos, pos + t.nbytes};
      pos += t.nbytes;
      header[t.name] = std::move(e);
    }
    std::string text;
    try {
      text = header.dump();
    } catch (const nlohmann::json::exception& e) {
      raise<ArgumentError>(
          "SafetensorsWriter: cannot write '{}': tensor names and metadata must "
          "be valid UTF-8 ({})",
          path.string(), e.what());
    }
    text.append((8 - text.size() % 8) % 8, ' ');
    // Streamed: the header, then each tensor's bytes (a lazy one through one reused buffer).
    AtomicFileWriter file(path);
    std::array<std::byte, 8> len;
    const std::uint64_t n = text.size();
    for (int k = 0; k < 8; ++k) len[k] = static_cast<std::byte>((n >> (8 * k)) & 0xffu);
    file.write(len);
    file.write(std::as_bytes(std::span<const char>(text.data(), text.size())));
    // Lazy tensors are produced in chunks of about 8 MB on a second thread, one chunk ahead of
    // the writes, so computing and copying into the page cache overlap.
    struct Chunk {
      const Entry* t;
      std::size_t first_row, rows, bytes;
    };
    constexpr std::size_t kChunk = std::size_t{8} << 20;
    std::vector<Chunk> chunks;
    for (auto i : order) {
      const auto& t = tensors_[i];
      if (!t.produce) {
        chunks.push_back({&t, 0, 0, t.nbytes});
        continue;
      }
      const std::size_t rows = t.shape.empty() ? 1 : t.shape[0];
      const std::size_t row_bytes = rows ? t.nbytes / rows : 0;
      const std::size_t step = std::max<std::size_t>(1, row_bytes ? kChunk / row_bytes : rows);
      for (std::size_t r = 0; r < rows; r += step) {
        const std::size_t n = std::min(step, rows - r);
        chunks.push_back({&t, r, n, n * row_bytes});
      }
    }
    std::vector<std::byte> buffers[2];
    auto produce = [&](std::size_t k) {
      const auto& c = chunks[k];
      if (!c.t->produce) return;
      auto& b = buffers[k % 2];
      b.resize(std::max(b.size(), c.bytes));
      c.t->produce(c.first_row, c.rows, std::span<std::byte>(b.data(), c.bytes));
    };
    std::future<void> ahead;
    if (!chunks.empty()) ahead = std::async(std::launch::async, produce, std::size_t{0});
    for (std::size_t k = 0; k < chunks.size(); ++k) {
      ahead.get();  // rethrows the producer's exception
      if (k + 1 < chunks.size()) ahead = std::async(std::launch::async, produce, k + 1);
      const auto& c = chunks[k];
      try {
        file.write(c.t->produce ? std::span<const std::byte>(buffers[k % 2].data(), c.bytes)
                                : std::span<const std::byte>(c.t->bytes));
      } catch (...) {
        if (ahead.valid()) ahead.wait();
        throw;
      }
    }
    file.commit();
  }

  static void write_atomically(const std::filesystem::path& path,
                               std::span<const std::byte> bytes) {
    io::write_atomically(path, bytes);
  }

  std::vector<Entry> tensors_;
  std::set<std::string> names_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace fragile::io
