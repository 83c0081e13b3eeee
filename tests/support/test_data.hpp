// Test helpers: the shared real-data folder (skipped cleanly when absent) and scratch folders.
#pragma once

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>

namespace fragile::test {

/// ../shared/data (or $FRAGILE_DATA_DIR) when it exists.
inline std::optional<std::filesystem::path> data_dir() {
  std::filesystem::path dir = FRAGILE_DATA_DIR_DEFAULT;
  if (const char* env = std::getenv("FRAGILE_DATA_DIR"); env && *env) dir = env;
  if (!std::filesystem::is_directory(dir)) return std::nullopt;
  return dir;
}

/// A file below the data folder, or nullopt (with a message) when it is absent.
inline std::optional<std::filesystem::path> data_file(const std::string& relative) {
  auto dir = data_dir();
  if (!dir || !std::filesystem::exists(*dir / relative)) {
    // CI sets FRAGILE_REQUIRE_DATA: there a missing file fails instead of skipping.
    if (const char* req = std::getenv("FRAGILE_REQUIRE_DATA"); req && *req && *req != '0')
      FAIL("shared data file '" << relative << "' is absent and FRAGILE_REQUIRE_DATA is set");
    // ctest reports the test as skipped on this line (SKIP_REGULAR_EXPRESSION).
    WARN("skipped: shared data file '" << relative << "' is absent (set FRAGILE_DATA_DIR)");
    return std::nullopt;
  }
  return *dir / relative;
}

/// A fresh, empty scratch folder for one test.
inline std::filesystem::path scratch_dir(const std::string& name) {
  std::filesystem::path base = std::filesystem::temp_directory_path() / "fragile-tests";
  if (const char* env = std::getenv("FRAGILE_TEST_TMP"); env && *env) base = env;
  auto dir = base / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

/// Source folder of the tests (committed fixtures live below it).
inline std::filesystem::path source_dir() { return FRAGILE_TEST_SOURCE_DIR; }

}  // namespace fragile::test

/// Declares `var` as the path of a shared data file, or returns from the test (skipped) if absent.
#define FRAGILE_REQUIRE_DATA_FILE(var, relative)   \
  const auto var##_opt = ::fragile::test::data_file(relative); \
  if (!var##_opt) return;                          \
  const std::filesystem::path var = *var##_opt
