// One entry point for every checkpoint fragile reads: a Hugging Face model directory
// (config.json + model.safetensors or a sharded index) or a llama2.c .bin checkpoint. Both give
// an io::Checkpoint: the ModelConfig plus the mmapped weights under HF tensor names.
#pragma once

#include "fragile/io/hf_config.hpp"
#include "fragile/io/llama2c.hpp"
#include "fragile/io/safetensors.hpp"
#include "fragile/io/tokenizer/tokenizer.hpp"

#include <filesystem>
#include <optional>

namespace fragile::io {

/// Loads `path`: a directory with config.json (HF), a config.json file (its directory), or a
/// llama2.c checkpoint file. Throws IoError naming the path when it is none of these.
inline Checkpoint load_model(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  require<IoError>(fs::exists(path), "model '{}' does not exist", path.string());
  fs::path dir = path;
  if (fs::is_regular_file(path) && path.filename() == "config.json") dir = path.parent_path();
  if (fs::is_directory(dir)) {
    require<IoError>(fs::exists(dir / "config.json"),
                     "model directory '{}' has no config.json (expected a Hugging Face model "
                     "directory or a llama2.c .bin file)",
                     dir.string());
    Checkpoint c{read_hf_config(dir / "config.json"), open_safetensors(dir)};
    return c;
  }
  return read_llama2c(path);
}

/// The tokenizer that belongs to a model path, if one is found beside it: tokenizer.json /
/// vocab.json + merges.txt in a HF directory; tok<vocab>.bin or tokenizer.bin beside a llama2.c
/// checkpoint (tinyllamas' naming, e.g. stories260K.bin with tok512.bin).
inline std::optional<std::filesystem::path> find_tokenizer(const std::filesystem::path& model_path,
                                                           const model::ModelConfig& config) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::is_directory(model_path) ? model_path : model_path.parent_path();
  for (const fs::path& candidate :
       {dir / "tokenizer.json", dir / "vocab.json", dir / fmt::format("tok{}.bin", config.vocab_size),
        dir / "tokenizer.bin"})
    if (fs::exists(candidate)) return candidate.filename() == "vocab.json" ? dir : candidate;
  return std::nullopt;
}

}  // namespace fragile::io
