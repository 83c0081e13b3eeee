// Opening an input file. Only regular files are read: open() of a FIFO blocks until a writer
// appears, and a device or a directory would be read as garbage. Errors name the file and what
// it was meant to be ("tokenizer '/x': not a regular file ...").
#pragma once

#include "fragile/core/error.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

namespace fragile::io {

/// IoError unless `path` names an existing regular file (symbolic links followed).
inline void require_regular_file(const std::filesystem::path& path, std::string_view what) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const auto st = fs::status(path, ec);
  require<IoError>(fs::exists(st), "{} '{}': no such file", what, path.string());
  require<IoError>(fs::is_regular_file(st),
                   "{} '{}': not a regular file (a directory, FIFO or device cannot be read)",
                   what, path.string());
}

/// `path` opened for binary reading, after require_regular_file.
inline std::ifstream open_input_file(const std::filesystem::path& path, std::string_view what) {
  require_regular_file(path, what);
  std::ifstream in(path, std::ios::binary);
  require<IoError>(static_cast<bool>(in), "{} '{}': cannot open: {}", what, path.string(),
                   std::strerror(errno));
  return in;
}

/// The whole of `path` as bytes.
inline std::string read_input_file(const std::filesystem::path& path, std::string_view what) {
  auto in = open_input_file(path, what);
  std::ostringstream text;
  text << in.rdbuf();
  require<IoError>(!in.bad(), "{} '{}': read failed", what, path.string());
  return std::move(text).str();
}

}  // namespace fragile::io
