// Shared helpers of the quant tests: a minimal .npy (f32, C order, v1) reader for the committed
// reference fixtures, and seeded synthetic weights / activations.
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/core/rng.hpp"
#include "fragile/core/tensor.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <string>
#include <vector>

namespace fragile::test {

inline std::filesystem::path gptq_fixture_dir() { return source_dir() / "fixtures" / "gptq"; }

/// Reads a 2-d little-endian f32 C-order .npy file.
inline MatrixF read_npy_f32(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) raise<IoError>("npy: cannot open '{}'", path.string());
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() < 10 || std::memcmp(bytes.data(), "\x93NUMPY", 6) != 0)
    raise<IoError>("npy: '{}' is not a .npy file", path.string());
  const auto header_len = static_cast<std::size_t>(static_cast<unsigned char>(bytes[8]) |
                                                   (static_cast<unsigned char>(bytes[9]) << 8));
  const std::string header(bytes.data() + 10, header_len);
  if (header.find("'<f4'") == std::string::npos || header.find("'fortran_order': False") == std::string::npos)
    raise<IoError>("npy: '{}' is not little-endian f32 in C order: {}", path.string(), header);
  std::smatch m;
  if (!std::regex_search(header, m, std::regex(R"(\(\s*(\d+)\s*,\s*(\d+)\s*\))")))
    raise<IoError>("npy: '{}' is not 2-d: {}", path.string(), header);
  const auto rows = std::stol(m[1]), cols = std::stol(m[2]);
  const std::size_t offset = 10 + header_len;
  if (bytes.size() != offset + static_cast<std::size_t>(rows * cols) * 4)
    raise<IoError>("npy: '{}' has {} bytes, expected {}", path.string(), bytes.size(),
                   offset + static_cast<std::size_t>(rows * cols) * 4);
  MatrixF out(rows, cols);
  std::memcpy(out.data(), bytes.data() + offset, static_cast<std::size_t>(rows * cols) * 4);
  return out;
}

inline nlohmann::json gptq_manifest() {
  std::ifstream in(gptq_fixture_dir() / "manifest.json");
  if (!in) raise<IoError>("fixture manifest '{}' is missing", (gptq_fixture_dir() / "manifest.json").string());
  return nlohmann::json::parse(in);
}

/// N(0, std^2) weights with ~1% entries 6x larger.
inline MatrixF synthetic_weight(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed,
                                double std = 0.02) {
  Rng rng(seed);
  MatrixF w(rows, cols);
  for (Eigen::Index r = 0; r < rows; ++r)
    for (Eigen::Index c = 0; c < cols; ++c) {
      double v = rng.normal(0.0, std);
      if (rng.uniform() < 0.01) v *= 6.0;
      w(r, c) = static_cast<float>(v);
    }
  return w;
}

/// Correlated activations (tokens, cols) with a few outlier channels (x8), like LLM inputs.
inline MatrixF synthetic_activations(Eigen::Index tokens, Eigen::Index cols, std::uint64_t seed) {
  Rng rng(seed);
  MatrixF z(tokens, cols), mix(cols, cols);
  for (Eigen::Index i = 0; i < z.size(); ++i) z.data()[i] = static_cast<float>(rng.normal());
  for (Eigen::Index i = 0; i < mix.size(); ++i)
    mix.data()[i] = static_cast<float>(0.5 * rng.normal() / std::sqrt(static_cast<double>(cols)));
  mix += MatrixF::Identity(cols, cols);
  MatrixF x = z * mix;
  for (Eigen::Index c = 0; c < cols; c += 29) x.col(c) *= 8.0f;
  return x;
}

}  // namespace fragile::test
