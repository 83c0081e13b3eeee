// Shared by the libFuzzer targets: a failed expectation traps (libFuzzer reports it with the
// input), and the targets whose reader takes a path write each input to one scratch file per
// process (parallel workers have their own pids), removed at exit.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

namespace fragile::fuzz {

inline void check(bool ok) {
  if (!ok) __builtin_trap();
}

/// This process's scratch file, `fragile-fuzz-<name>-<pid><extension>` in the temp folder.
inline const std::filesystem::path& scratch_path(std::string_view name, std::string_view extension) {
  static const std::filesystem::path path = [&] {
    auto p = std::filesystem::temp_directory_path() /
             ("fragile-fuzz-" + std::string(name) + "-" + std::to_string(::getpid()) +
              std::string(extension));
    static const std::string to_remove = p.string();
    std::atexit([] { std::remove(to_remove.c_str()); });
    return p;
  }();
  return path;
}

/// Replaces the file at `path` with the input bytes.
inline void write_file(const std::filesystem::path& path, const std::uint8_t* data, std::size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  check(f != nullptr);
  check(size == 0 || std::fwrite(data, 1, size, f) == size);
  check(std::fclose(f) == 0);
}

}  // namespace fragile::fuzz
