// libFuzzer target for the resumable result store: arbitrary bytes as the store file, opened
// with a fixed fingerprint (the seeds carry it), every key read back, one record put, then the
// file reopened. Only fragile::Error may escape; another exception, a crash or a sanitizer
// report is a finding, and so is a put that does not read back after reopening: a store that
// opened must stay a store that opens. Seeds: tests/fuzz/corpus/result_store/.
//   build/fuzz/tests/fuzz/fuzz_result_store -max_total_time=60 tests/fuzz/corpus/result_store
#include "fuzz_support.hpp"

#include <fragile/study/result_store.hpp>

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace {

// The fingerprint the seeds of tests/fuzz/corpus/result_store/ are written under.
constexpr const char* kFingerprint = "fuzz-fingerprint";

}  // namespace

using fragile::fuzz::check;
using fragile::fuzz::scratch_path;
using fragile::fuzz::write_file;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto& path = scratch_path("result-store", ".jsonl");
  write_file(path, data, size);
  try {
    std::vector<std::string> keys;
    std::string put_key = "fuzz";
    nlohmann::json value = 1;
    {
      fragile::study::ResultStore store(path, kFingerprint);
      keys = store.keys();
      check(store.size() == keys.size());
      for (const auto& key : keys) {
        const auto v = store.get(key);
        check(v.has_value() && store.contains(key));
      }
      // Put a value the file itself held, under a new key or over its first one.
      if (!keys.empty() && size % 2 == 0) put_key = keys.front();
      if (!keys.empty()) value = *store.get(keys.back());
      store.put(put_key, value);
      if (std::find(keys.begin(), keys.end(), put_key) == keys.end()) keys.push_back(put_key);
      check(store.keys() == keys && *store.get(put_key) == value);
    }
    const fragile::study::ResultStore reopened(path, kFingerprint);
    check(reopened.keys() == keys && *reopened.get(put_key) == value);
  } catch (const fragile::Error&) {
  }
  return 0;
}
