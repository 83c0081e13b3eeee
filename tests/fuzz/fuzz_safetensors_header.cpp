// libFuzzer target for the safetensors header parser: any byte string must either parse or throw
// a fragile::Error, never crash, leak or trip ASan/UBSan.
// Seeds: tests/fuzz/corpus/safetensors_header/ (tools/make_safetensors_fixtures.py).
//   build/fuzz/tests/fuzz/fuzz_safetensors_header -max_total_time=60 tests/fuzz/corpus/safetensors_header
#include <cstddef>
#include <cstdint>

#include "fragile/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  try {
    const auto header = fragile::io::parse_safetensors_header(bytes, "fuzz");
    // A header that parses promises in-bounds, tiling byte ranges: check that promise.
    std::size_t pos = header.data_offset;
    for (const auto& t : header.tensors) {
      if (t.offset != pos || t.nbytes != t.numel() * fragile::dtype_size(t.dtype)) __builtin_trap();
      pos += t.nbytes;
    }
    if (pos != size) __builtin_trap();
  } catch (const fragile::Error&) {
  }
  return 0;
}
