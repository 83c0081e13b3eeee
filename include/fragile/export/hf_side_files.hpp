// The config and tokenizer files a Hugging Face model folder carries beside its weights, which
// every checkpoint fragile exports copies unchanged.
#pragma once

#include "fragile/io/atomic_file.hpp"
#include "fragile/io/hf_writer.hpp"

#include <filesystem>
#include <string>
#include <vector>

namespace fragile::exporting {

inline constexpr const char* kHfSideFiles[] = {
    "generation_config.json", "tokenizer.json",  "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json",      "vocab.json",      "merges.txt",            "tokenizer.model",
    "chat_template.jinja",    "chat_template.json"};

/// Copies the side files `from` has into `to`; returns their names.
inline std::vector<std::string> copy_hf_side_files(const std::filesystem::path& from,
                                                   const std::filesystem::path& to) {
  std::vector<std::string> copied;
  for (const char* f : kHfSideFiles)
    if (std::filesystem::is_regular_file(from / f)) {
      io::write_atomically(to / f, std::string_view(io::read_input_file(from / f,
                                                                                 "model file")));
      copied.emplace_back(f);
    }
  return copied;
}

}  // namespace fragile::exporting
