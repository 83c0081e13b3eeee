// What every `fragile` subcommand shares: output folder checks that name the option (input
// files: io::require_regular_file),
// the thread count, TTY detection for progress, and a content hash for run fingerprints.
#pragma once

#include <fragile/backend/cpu.hpp>
#include <CLI/CLI.hpp>
#include <fragile/core/error.hpp>
#include <fragile/study/context.hpp>

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace fragile::cli {

inline constexpr std::string_view kVersion = "0.1.0";

/// Creates the output folder. An existing non-empty one is refused unless the run resumes.
inline void prepare_out_dir(const std::filesystem::path& dir, bool resume) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(dir, ec)) {
    require<IoError>(fs::is_directory(dir, ec), "--out '{}' exists and is not a directory",
                     dir.string());
    require<IoError>(resume || fs::is_empty(dir, ec),
                     "--out '{}' is not empty (add --resume to continue its run, or choose "
                     "another folder)", dir.string());
    return;
  }
  fs::create_directories(dir, ec);
  require<IoError>(!ec, "--out '{}': cannot create the folder: {}", dir.string(), ec.message());
}

inline void set_threads(int threads) {
#if defined(_OPENMP)
  if (threads > 0) omp_set_num_threads(threads);
#else
  (void)threads;
#endif
}

inline bool stderr_is_tty() { return ::isatty(STDERR_FILENO) == 1; }

/// FNV-1a over the bytes of `ids` (a content fingerprint, not a cryptographic hash).
template <class T>
std::uint64_t fnv1a64(std::span<const T> ids) {
  std::uint64_t h = 1469598103934665603ull;
  const auto* p = reinterpret_cast<const unsigned char*>(ids.data());
  for (std::size_t i = 0; i < ids.size_bytes(); ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}
template <class T, class A>
std::uint64_t fnv1a64(const std::vector<T, A>& v) {
  return fnv1a64(std::span<const T>(v));
}

template <class Model>
std::size_t parameter_count(Model& m) {
  std::size_t n = 0;
  for (const auto& p : m.parameters()) n += p.value.size();
  return n;
}

/// Every unsigned option of `app` and its subcommands refuses a negative value: CLI11 converts
/// "-1" to 2^64-1 for an unsigned field, which would read as "no limit".
inline void refuse_negative_unsigned(CLI::App& app) {
  const CLI::Validator non_negative(
      [](std::string& v) {
        const auto first = v.find_first_not_of(" \t");
        return first != std::string::npos && v[first] == '-'
                   ? std::string("expected a non-negative integer, got ") + v
                   : std::string();
      },
      "", "NON_NEGATIVE");
  for (CLI::Option* o : app.get_options())
    if (o->get_type_name().rfind("UINT", 0) == 0) o->check(non_negative);
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
    refuse_negative_unsigned(*sub);
}

}  // namespace fragile::cli
