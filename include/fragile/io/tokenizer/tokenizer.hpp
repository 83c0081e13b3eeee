// The common face of fragile's tokenizers: the `Tokenizer` concept (encode UTF-8 text to ids,
// decode ids to bytes, vocab_size), `AnyTokenizer` holding any of them, and load_tokenizer(path)
// which recognises the format: a HF tokenizer.json, a folder with tokenizer.json or
// vocab.json + merges.txt, or a llama2.c tokenizer.bin.
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/io/input_file.hpp"
#include "fragile/io/tokenizer/byte_level_bpe.hpp"
#include "fragile/io/tokenizer/llama2c_tokenizer.hpp"

#include <concepts>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace fragile::io {

template <class T>
concept Tokenizer = requires(const T& t, std::string_view text, std::span<const std::int32_t> ids) {
  { t.encode(text) } -> std::same_as<std::vector<std::int32_t>>;
  { t.decode(ids) } -> std::same_as<std::string>;
  { t.vocab_size() } -> std::convertible_to<std::size_t>;
};

static_assert(Tokenizer<ByteLevelBpeTokenizer>, "ByteLevelBpeTokenizer must model Tokenizer");
static_assert(Tokenizer<Llama2cTokenizer>, "Llama2cTokenizer must model Tokenizer");

/// Any of fragile's tokenizers behind one value type.
class AnyTokenizer {
 public:
  using Variant = std::variant<ByteLevelBpeTokenizer, Llama2cTokenizer>;

  template <Tokenizer T>
    requires std::constructible_from<Variant, T&&>
  AnyTokenizer(T&& t) : v_(std::forward<T>(t)) {}  // NOLINT: implicit by design

  /// Token ids of `text` (no BOS/EOS; use encode_with(bos, eos) for llama2.c's BOS).
  [[nodiscard]] std::vector<std::int32_t> encode(std::string_view text) const {
    return std::visit([&](const auto& t) { return t.encode(text); }, v_);
  }
  [[nodiscard]] std::string decode(std::span<const std::int32_t> ids) const {
    return std::visit([&](const auto& t) { return t.decode(ids); }, v_);
  }
  [[nodiscard]] std::size_t vocab_size() const {
    return std::visit([](const auto& t) { return static_cast<std::size_t>(t.vocab_size()); }, v_);
  }
  /// llama2.c's fixed BOS id (1) for a tokenizer.bin; none for byte-level BPE (those models take
  /// their BOS from the checkpoint's config, if any).
  [[nodiscard]] std::optional<std::int32_t> bos_id() const {
    if (std::holds_alternative<Llama2cTokenizer>(v_)) return Llama2cTokenizer::kBos;
    return std::nullopt;
  }

  [[nodiscard]] const Variant& variant() const noexcept { return v_; }
  template <class T>
  [[nodiscard]] const T* get_if() const noexcept {
    return std::get_if<T>(&v_);
  }

 private:
  Variant v_;
};

static_assert(Tokenizer<AnyTokenizer>, "AnyTokenizer must model Tokenizer");

/// Documents encoded one by one, each preceded by BOS when the tokenizer has one (as llama2.c
/// trains), concatenated into one stream.
inline std::vector<std::int32_t> encode_documents(const AnyTokenizer& tok,
                                                  std::span<const std::string> documents) {
  std::vector<std::int32_t> stream;
  const auto bos = tok.bos_id();
  for (const auto& doc : documents) {
    if (bos) stream.push_back(*bos);
    const auto ids = tok.encode(doc);
    stream.insert(stream.end(), ids.begin(), ids.end());
  }
  return stream;
}

/// Loads the tokenizer at `path`:
///  - a directory: its tokenizer.json, else its vocab.json + merges.txt (with `preset`), else its
///    tokenizer.bin;
///  - a file whose first non-blank byte is '{': a HF tokenizer.json;
///  - any other file: a llama2.c tokenizer.bin.
/// Throws IoError when nothing loadable is found.
inline AnyTokenizer load_tokenizer(const std::filesystem::path& path,
                                   PreTokenizerPreset preset = PreTokenizerPreset::kGpt2) {
  namespace fs = std::filesystem;
  if (fs::is_directory(path)) {
    if (fs::exists(path / "tokenizer.json"))
      return ByteLevelBpeTokenizer::from_tokenizer_json(path / "tokenizer.json");
    if (fs::exists(path / "vocab.json") && fs::exists(path / "merges.txt"))
      return ByteLevelBpeTokenizer::from_vocab_merges(path / "vocab.json", path / "merges.txt",
                                                      preset);
    if (fs::exists(path / "tokenizer.bin")) return Llama2cTokenizer(path / "tokenizer.bin");
    raise<IoError>("'{}': no tokenizer.json, vocab.json + merges.txt, or tokenizer.bin in it",
                   path.string());
  }
  auto in = open_input_file(path, "tokenizer");
  char c = 0;
  while (in.get(c) && (c == ' ' || c == '\n' || c == '\r' || c == '\t')) {
  }
  if (in && c == '{') return ByteLevelBpeTokenizer::from_tokenizer_json(path);
  constexpr std::string_view accepted =
      "accepted: a HF tokenizer.json, a folder with tokenizer.json or vocab.json + merges.txt, "
      "or a llama2.c tokenizer.bin";
  char magic[4] = {};
  in.clear();
  in.seekg(0);
  in.read(magic, 4);
  require<IoError>(std::string_view(magic, 4) != "GGUF",
                   "tokenizer '{}': a GGUF file, not a tokenizer ({})", path.string(), accepted);
  try {
    return Llama2cTokenizer(path);
  } catch (const IoError& e) {
    // A SentencePiece .model is a protobuf whose first field (the pieces) starts with 0x0A.
    if (magic[0] == '\x0a' || path.extension() == ".model")
      raise<IoError>("tokenizer '{}': looks like a SentencePiece model, which fragile does not "
                     "read; save it as tokenizer.json with transformers ({})",
                     path.string(), accepted);
    raise<IoError>("tokenizer '{}': not JSON, and not a llama2.c tokenizer.bin ({}); {}",
                   path.string(), e.what(), accepted);
  }
}

}  // namespace fragile::io
