// llama2.c `tokenizer.bin` tokenizer (sentencepiece-style vocabulary with scores), encoding and
// decoding exactly as llama2.c's run.c does: optional BOS (1), the dummy-prefix " " token, one
// token per UTF-8 code point with byte fallback (byte b -> id b + 3), then repeatedly merge the
// adjacent pair whose concatenation is the best-scoring vocabulary entry (leftmost on ties).
// File: int32 max_token_length, then per token float32 score, int32 byte length, bytes.
//   Andrej Karpathy, llama2.c (2023), https://github.com/karpathy/llama2.c
//   @inproceedings{kudo2018sentencepiece, title={SentencePiece: A simple and language independent
//     subword tokenizer and detokenizer for Neural Text Processing}, author={Kudo, Taku and
//     Richardson, John}, booktitle={EMNLP: System Demonstrations}, year={2018}}
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/core/mapped_file.hpp"
#include "fragile/io/utf8.hpp"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace fragile::io {

class Llama2cTokenizer {
 public:
  static constexpr std::int32_t kBos = 1;  ///< fixed ids in llama2.c
  static constexpr std::int32_t kEos = 2;
  static constexpr std::int32_t kByteOffset = 3;  ///< byte b falls back to id b + 3

  /// Reads `path`. With `vocab_size` the file must hold at least that many tokens (llama2.c takes
  /// the count from the checkpoint and ignores what follows); without it the tokens must end
  /// exactly at the end of the file. Throws IoError naming the file and the offending token.
  explicit Llama2cTokenizer(const std::filesystem::path& path,
                            std::optional<std::int32_t> vocab_size = std::nullopt) {
    MappedFile file(path);
    parse(file.bytes(), path.string(), vocab_size);
  }

  /// Parses tokenizer.bin bytes held in memory; `source` names them in errors.
  Llama2cTokenizer(std::span<const std::byte> bytes, std::string source,
                   std::optional<std::int32_t> vocab_size = std::nullopt) {
    parse(bytes, std::move(source), vocab_size);
  }

  /// Token ids of UTF-8 `text` as llama2.c's encode(): BOS first when `bos`, EOS last when `eos`.
  /// Throws ArgumentError for invalid UTF-8, or when the vocabulary lacks " " (needed for the
  /// dummy prefix) or a byte-fallback id.
  [[nodiscard]] std::vector<std::int32_t> encode(std::string_view text, bool bos = false,
                                                 bool eos = false) const {
    require_utf8(text, source_ + " encode");
    std::vector<std::int32_t> tok;
    tok.reserve(text.size() + 3);
    if (bos) tok.push_back(checked(kBos, "BOS"));
    if (!text.empty()) {
      const auto space = lookup(" ");
      require<ArgumentError>(space >= 0, "{}: vocabulary has no \" \" token for the dummy prefix",
                             source_);
      tok.push_back(space);
    }
    // One code point (at most 4 bytes) at a time; byte fallback when it is not a token.
    for (std::size_t i = 0; i < text.size();) {
      std::size_t len = 1;
      while (i + len < text.size() && len < 4 &&
             (static_cast<unsigned char>(text[i + len]) & 0xC0) == 0x80)
        ++len;
      const auto id = lookup(text.substr(i, len));
      if (id >= 0) {
        tok.push_back(id);
      } else {
        for (std::size_t k = 0; k < len; ++k)
          tok.push_back(checked(static_cast<unsigned char>(text[i + k]) + kByteOffset, "byte"));
      }
      i += len;
    }
    merge(tok);
    if (eos) tok.push_back(checked(kEos, "EOS"));
    return tok;
  }

  /// Text of `ids` as llama2.c prints it: BOS/EOS print nothing, a piece after BOS loses its
  /// leading space, "<0xHH>" pieces are raw bytes. Throws ArgumentError for an id out of range.
  [[nodiscard]] std::string decode(std::span<const std::int32_t> ids) const {
    std::string out;
    std::int32_t prev = -1;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const std::int32_t id = ids[i];
      require<ArgumentError>(id >= 0 && static_cast<std::size_t>(id) < vocab_.size(),
                             "{}: token id {} at position {} is outside [0, {})", source_, id, i,
                             vocab_.size());
      if (id != kBos && id != kEos) {
        std::string_view piece = vocab_[id];
        if (prev == kBos && !piece.empty() && piece.front() == ' ') piece.remove_prefix(1);
        if (auto b = raw_byte(piece)) out.push_back(static_cast<char>(*b));
        else out += piece;
      }
      prev = id;
    }
    return out;
  }

  [[nodiscard]] std::size_t vocab_size() const noexcept { return vocab_.size(); }
  [[nodiscard]] std::int32_t max_token_length() const noexcept { return max_token_length_; }
  [[nodiscard]] const std::string& token(std::int32_t id) const { return vocab_.at(checked(id, "token")); }
  [[nodiscard]] float score(std::int32_t id) const { return scores_.at(checked(id, "token")); }
  /// Id of the vocabulary entry equal to `piece`, if any.
  [[nodiscard]] std::optional<std::int32_t> token_id(std::string_view piece) const {
    const auto id = lookup(piece);
    return id >= 0 ? std::optional<std::int32_t>(id) : std::nullopt;
  }
  [[nodiscard]] const std::string& source() const noexcept { return source_; }

 private:
  // llama2.c starts its search at best_score = -1e10 and needs a strictly greater score.
  static constexpr float kMinScore = -1e10f;

  void parse(std::span<const std::byte> bytes, std::string source,
             std::optional<std::int32_t> vocab_size) {
    source_ = std::move(source);
    const std::size_t n = bytes.size();
    std::size_t pos = 0;
    auto read_i32 = [&](const char* what, std::size_t index) {
      require<IoError>(n - pos >= 4, "{}: truncated at byte {} reading {} of token {} (file has {} bytes)",
                       source_, pos, what, index, n);
      std::int32_t v;
      std::memcpy(&v, bytes.data() + pos, 4);
      pos += 4;
      return v;
    };
    require<IoError>(n >= 4, "{}: {} bytes, expected at least 4 (max_token_length)", source_, n);
    std::memcpy(&max_token_length_, bytes.data(), 4);
    pos = 4;
    require<IoError>(max_token_length_ > 0 && max_token_length_ <= (1 << 20),
                     "{}: max_token_length {} outside [1, 2^20]", source_, max_token_length_);
    if (vocab_size) {
      require<IoError>(*vocab_size > 0, "{}: vocab_size {} must be positive", source_, *vocab_size);
      // Each token needs at least 8 bytes; refuse counts the file cannot hold before allocating.
      require<IoError>(static_cast<std::uint64_t>(*vocab_size) * 8 <= n - 4,
                       "{}: {} bytes cannot hold {} tokens", source_, n, *vocab_size);
    }
    for (std::size_t i = 0; vocab_size ? i < static_cast<std::size_t>(*vocab_size) : pos < n; ++i) {
      float score;
      require<IoError>(n - pos >= 4, "{}: truncated at byte {} reading the score of token {}",
                       source_, pos, i);
      std::memcpy(&score, bytes.data() + pos, 4);
      pos += 4;
      const std::int32_t len = read_i32("the length", i);
      require<IoError>(len >= 0 && len <= max_token_length_,
                       "{}: token {} has length {}, expected 0..max_token_length {}", source_, i,
                       len, max_token_length_);
      require<IoError>(n - pos >= static_cast<std::size_t>(len),
                       "{}: token {} needs {} bytes at offset {}, file has {}", source_, i, len,
                       pos, n);
      std::string piece(reinterpret_cast<const char*>(bytes.data() + pos),
                        static_cast<std::size_t>(len));
      // llama2.c keeps tokens as C strings: a NUL inside one would silently cut it.
      require<IoError>(piece.find('\0') == std::string::npos, "{}: token {} contains a NUL byte",
                       source_, i);
      pos += static_cast<std::size_t>(len);
      vocab_.push_back(std::move(piece));
      scores_.push_back(score);
    }
    require<IoError>(!vocab_.empty(), "{}: no tokens after max_token_length", source_);
    index_.reserve(vocab_.size());
    // Duplicates: the first id wins (llama2.c's bsearch would return an arbitrary one).
    for (std::size_t i = 0; i < vocab_.size(); ++i)
      index_.emplace(vocab_[i], static_cast<std::int32_t>(i));
  }

  std::int32_t checked(std::int32_t id, const char* what) const {
    require<ArgumentError>(id >= 0 && static_cast<std::size_t>(id) < vocab_.size(),
                           "{}: {} id {} is outside the vocabulary of {} tokens", source_, what,
                           id, vocab_.size());
    return id;
  }

  std::int32_t lookup(std::string_view s) const {
    auto it = index_.find(s);
    return it == index_.end() ? -1 : it->second;
  }

  static std::optional<unsigned char> raw_byte(std::string_view p) {
    if (p.size() != 6 || p.substr(0, 3) != "<0x" || p[5] != '>') return std::nullopt;
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    const int hi = hex(p[3]), lo = hex(p[4]);
    if (hi < 0 || lo < 0) return std::nullopt;
    return static_cast<unsigned char>(hi * 16 + lo);
  }

  // llama2.c's loop "merge the best-scoring pair, leftmost on ties, until none" in O(n log n):
  // a heap of candidate pairs over a linked list; entries whose ids changed are skipped.
  void merge(std::vector<std::int32_t>& tok) const {
    const std::size_t n = tok.size();
    if (n < 2) return;
    std::vector<std::int32_t> next(n), prev(n);
    for (std::size_t k = 0; k < n; ++k) {
      next[k] = k + 1 < n ? static_cast<std::int32_t>(k + 1) : -1;
      prev[k] = static_cast<std::int32_t>(k) - 1;
    }
    struct Cand {
      float score;
      std::int32_t left, left_id, right_id, id;
      bool operator<(const Cand& o) const noexcept {  // max-heap: best score, then leftmost
        return score != o.score ? score < o.score : left > o.left;
      }
    };
    std::priority_queue<Cand> heap;
    std::string buf;
    auto push = [&](std::int32_t l) {
      if (l < 0 || next[l] < 0) return;
      const std::int32_t a = tok[l], b = tok[next[l]];
      buf.assign(vocab_[a]);
      buf += vocab_[b];
      const std::int32_t id = lookup(buf);
      if (id >= 0 && scores_[id] > kMinScore) heap.push({scores_[id], l, a, b, id});
    };
    for (std::size_t k = 0; k + 1 < n; ++k) push(static_cast<std::int32_t>(k));
    while (!heap.empty()) {
      const Cand c = heap.top();
      heap.pop();
      const std::int32_t r = next[c.left];
      if (tok[c.left] != c.left_id || r < 0 || tok[r] != c.right_id) continue;  // stale
      tok[c.left] = c.id;
      tok[r] = -1;
      next[c.left] = next[r];
      if (next[r] >= 0) prev[next[r]] = c.left;
      push(prev[c.left]);
      push(c.left);
    }
    std::size_t w = 0;
    for (std::int32_t k = 0; k >= 0; k = next[k]) tok[w++] = tok[k];
    tok.resize(w);
  }

  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };

  std::string source_;
  std::int32_t max_token_length_ = 0;
  std::vector<std::string> vocab_;
  std::vector<float> scores_;
  std::unordered_map<std::string, std::int32_t, StringHash, std::equal_to<>> index_;
};

}  // namespace fragile::io
