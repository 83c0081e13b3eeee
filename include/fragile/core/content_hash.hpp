// Content hashes for run fingerprints: XXH3-64 (Debian's libxxhash-dev, used header-only) over
// file bytes and token streams. A study's fingerprint must change whenever a number it reports
// could: hashing the bytes, not the paths or sizes, is what makes resume safe. XXH3 reads a
// multi-gigabyte checkpoint at memory speed (about 10x a byte-wise FNV loop).
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/core/mapped_file.hpp"

#define XXH_INLINE_ALL
// GCC 12 reports its own AVX-512 intrinsics as maybe-uninitialized inside XXH3's AVX-512 loop;
// the AVX2 loop is as fast on checkpoint-sized inputs, which are read from memory anyway.
#if defined(__AVX512F__) && !defined(XXH_VECTOR)
#define XXH_VECTOR 2 /* XXH_AVX2 */
#endif
#include <xxhash.h>

#include <fmt/format.h>

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace fragile {

/// Incremental XXH3-64 over any number of byte ranges.
class ContentHash {
 public:
  ContentHash() : state_(XXH3_createState()) {
    require<Error>(state_ != nullptr, "ContentHash: out of memory");
    XXH3_64bits_reset(state_);
  }
  ~ContentHash() { XXH3_freeState(state_); }
  ContentHash(const ContentHash&) = delete;
  ContentHash& operator=(const ContentHash&) = delete;

  ContentHash& bytes(const void* data, std::size_t size) {
    XXH3_64bits_update(state_, data, size);
    return *this;
  }
  template <class T>
  ContentHash& values(std::span<const T> v) {
    return bytes(v.data(), v.size_bytes());
  }
  /// The file's bytes (mapped, so the whole file is never copied).
  ContentHash& file(const std::filesystem::path& path) {
    const MappedFile f(path);
    return bytes(f.data(), f.size());
  }

  [[nodiscard]] std::uint64_t digest() const { return XXH3_64bits_digest(state_); }
  [[nodiscard]] std::string hex() const { return fmt::format("{:016x}", digest()); }

 private:
  XXH3_state_t* state_;
};

}  // namespace fragile
