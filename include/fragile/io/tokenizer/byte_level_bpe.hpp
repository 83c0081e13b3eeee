// Byte-level BPE tokenizer (GPT-2, Qwen2, Llama-3): UTF-8 text -> bytes mapped to printable code
// points -> pre-tokenizer regex pieces -> BPE merges by rank. Loads a Hugging Face
// `tokenizer.json` or a `vocab.json` + `merges.txt` pair with a pre-tokenizer preset; added and
// special tokens are split out of the text first (longest match).
//   @article{radford2019language, title={Language Models are Unsupervised Multitask Learners},
//     author={Radford, Alec and Wu, Jeffrey and Child, Rewon and Luan, David and Amodei, Dario
//     and Sutskever, Ilya}, year={2019}}
//   @inproceedings{sennrich2016bpe, title={Neural Machine Translation of Rare Words with Subword
//     Units}, author={Sennrich, Rico and Haddow, Barry and Birch, Alexandra}, booktitle={ACL}, year={2016}}
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/io/input_file.hpp"
#include "fragile/io/tokenizer/regex.hpp"
#include "fragile/io/utf8.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace fragile::io {

/// The pre-tokenizer regexes of the model families, as their tokenizer.json files define them.
enum class PreTokenizerPreset { kGpt2, kQwen2, kLlama3 };

inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

inline constexpr std::string_view pre_tokenizer_pattern(PreTokenizerPreset preset) {
  switch (preset) {
    case PreTokenizerPreset::kGpt2: return kGpt2Pattern;
    case PreTokenizerPreset::kQwen2: return kQwen2Pattern;
    case PreTokenizerPreset::kLlama3: return kLlama3Pattern;
  }
  return kGpt2Pattern;
}

/// A token matched verbatim in the text before pre-tokenization (e.g. "<|endoftext|>").
struct AddedToken {
  std::string content;
  std::int32_t id = 0;
  bool special = false;
};

/// Normalizer named by a tokenizer.json. NFC is recorded, not applied: fragile carries no Unicode
/// normalization tables, so input must already be NFC (true of almost all text in practice).
enum class Normalization { kNone, kNfc };

/// GPT-2's reversible byte -> code point map: printable Latin-1 bytes map to themselves, the other
/// 68 bytes to U+0100.. in byte order, so that every byte has a visible, non-space symbol.
inline const std::array<std::uint32_t, 256>& byte_to_code_point() {
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    std::uint32_t next = 256;
    for (std::uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      t[b] = printable ? b : next++;
    }
    return t;
  }();
  return table;
}

/// Inverse of byte_to_code_point(): byte for a code point, or -1 when it is none of the 256.
inline int code_point_to_byte(std::uint32_t cp) {
  static const std::array<std::int16_t, 324> table = [] {
    std::array<std::int16_t, 324> t{};
    t.fill(-1);
    const auto& fwd = byte_to_code_point();
    for (int b = 0; b < 256; ++b) t[fwd[b]] = static_cast<std::int16_t>(b);
    return t;
  }();
  return cp < table.size() ? table[cp] : -1;
}

/// Maps raw bytes to their byte-level symbol string (the form vocab.json keys take).
inline std::string bytes_to_symbols(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  const auto& fwd = byte_to_code_point();
  for (char c : bytes) append_utf8(out, fwd[static_cast<unsigned char>(c)]);
  return out;
}

class ByteLevelBpeTokenizer {
 public:
  /// Vocabulary entries in symbol form (as in vocab.json) with their ids, and merges as pairs of
  /// symbol strings in rank order.
  using Vocab = std::vector<std::pair<std::string, std::int32_t>>;
  using Merges = std::vector<std::pair<std::string, std::string>>;

  struct Options {
    std::string pattern = std::string(kGpt2Pattern);  ///< pre-tokenizer regex; empty: none
    std::vector<AddedToken> added_tokens;
    bool add_prefix_space = false;  ///< ByteLevel(add_prefix_space): " " before each segment
    bool ignore_merges = false;     ///< a piece found whole in the vocab is one token (Llama-3)
    Normalization normalization = Normalization::kNone;
  };

  /// Builds from in-memory tables; `source` names them in error messages. Throws IoError for a
  /// duplicate id, an id outside [0, 2^24), or a merge whose parts or result are not in the vocab.
  ByteLevelBpeTokenizer(const Vocab& vocab, const Merges& merges, Options options,
                        std::string source = "byte-level BPE")
      : source_(std::move(source)), options_(std::move(options)) {
    for (const auto& [symbols, id] : vocab) add_vocab_entry(symbols, id);
    merges_.reserve(merges.size());
    for (std::size_t r = 0; r < merges.size(); ++r) {
      const auto& [a, b] = merges[r];
      const auto ia = vocab_.find(a), ib = vocab_.find(b), iab = vocab_.find(a + b);
      require<IoError>(ia != vocab_.end() && ib != vocab_.end() && iab != vocab_.end(),
                       "{}: merge {} ('{}' '{}') uses a token that is not in the vocabulary",
                       source_, r, a, b);
      // The first (lowest-rank) occurrence of a pair wins, as in Hugging Face tokenizers.
      merges_.try_emplace(pair_key(ia->second, ib->second),
                          Merge{static_cast<std::int32_t>(r), iab->second});
    }
    const auto& fwd = byte_to_code_point();
    for (int b = 0; b < 256; ++b) {
      std::string s;
      append_utf8(s, fwd[b]);
      auto it = vocab_.find(s);
      byte_id_[b] = it == vocab_.end() ? -1 : it->second;
    }
    for (auto& t : options_.added_tokens) {
      require<IoError>(!t.content.empty(), "{}: added token {} is empty", source_, t.id);
      // Splitting text at a token that is not whole UTF-8 could cut a character in two.
      require<IoError>(!find_invalid_utf8(t.content), "{}: added token {} is not valid UTF-8",
                       source_, t.id);
      require<IoError>(t.id >= 0 && t.id < kMaxId, "{}: added token '{}' has id {} outside [0, {})",
                       source_, t.content, t.id, kMaxId);
      ensure_size(t.id);
      // An added token may repeat a vocab entry (GPT-2's <|endoftext|>), never replace one.
      require<IoError>(!has_[t.id] || pieces_[t.id] == t.content,
                       "{}: added token '{}' reuses id {} of another token", source_, t.content,
                       t.id);
      has_[t.id] = 1;
      pieces_[t.id] = t.content;
      added_by_byte_[static_cast<unsigned char>(t.content[0])].push_back(&t - options_.added_tokens.data());
    }
    for (auto& list : added_by_byte_) {
      std::stable_sort(list.begin(), list.end(), [&](std::size_t x, std::size_t y) {
        return options_.added_tokens[x].content.size() > options_.added_tokens[y].content.size();
      });
    }
    if (!options_.pattern.empty()) regex_ = std::make_unique<Regex>(options_.pattern);
    cache_ = std::make_unique<Cache>();
  }

  /// Loads `vocab.json` + `merges.txt` (with or without a "#version" first line) and uses the
  /// pre-tokenizer regex of `preset`.
  static ByteLevelBpeTokenizer from_vocab_merges(const std::filesystem::path& vocab_json,
                                                 const std::filesystem::path& merges_txt,
                                                 PreTokenizerPreset preset,
                                                 std::vector<AddedToken> added_tokens = {}) {
    const auto j = read_json(vocab_json);
    Options o;
    o.pattern = std::string(pre_tokenizer_pattern(preset));
    o.added_tokens = std::move(added_tokens);
    return ByteLevelBpeTokenizer(parse_vocab(j, vocab_json.string()), read_merges_txt(merges_txt),
                                 std::move(o), vocab_json.string());
  }

  /// Loads a Hugging Face tokenizer.json whose model is BPE with a ByteLevel pre-tokenizer (alone,
  /// or after a Split regex), e.g. GPT-2, Qwen2/2.5, Llama-3. Anything else is a ConfigError.
  static ByteLevelBpeTokenizer from_tokenizer_json(const std::filesystem::path& path) {
    const auto j = read_json(path);
    const std::string src = path.string();
    return from_tokenizer_json(j, src);
  }

  /// Same from an already parsed tokenizer.json; `source` names it in errors.
  static ByteLevelBpeTokenizer from_tokenizer_json(const nlohmann::json& j, const std::string& src) {
    require<ConfigError>(j.is_object(), "{}: expected a JSON object at top level", src);
    const auto model_it = j.find("model");
    require<ConfigError>(model_it != j.end() && model_it->is_object(), "{}: no 'model' object",
                         src);
    const auto& m = *model_it;
    const std::string type = string_field(m, "type", "BPE", src);
    require<ConfigError>(type == "BPE", "{}: model.type is '{}', expected 'BPE'", src, type);
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      if (auto it = m.find(key); it != m.end() && !it->is_null())
        require<ConfigError>(it->is_string() && it->get<std::string>().empty(),
                             "{}: model.{} is not supported (expected null)", src, key);
    }
    if (auto it = m.find("dropout"); it != m.end() && !it->is_null())
      require<ConfigError>(it->is_number() && it->get<double>() == 0.0,
                           "{}: model.dropout is not supported (expected null)", src);
    if (auto it = m.find("byte_fallback"); it != m.end())
      require<ConfigError>(it->is_boolean() && !it->get<bool>(),
                           "{}: model.byte_fallback=true is not supported by byte-level BPE", src);
    const auto vocab_it = m.find("vocab");
    require<ConfigError>(vocab_it != m.end(), "{}: no 'model.vocab'", src);
    Vocab vocab = parse_vocab(*vocab_it, src + " model.vocab");
    Merges merges;
    if (auto it = m.find("merges"); it != m.end()) {
      require<IoError>(it->is_array(), "{}: model.merges is not an array", src);
      merges.reserve(it->size());
      for (std::size_t r = 0; r < it->size(); ++r) {
        const auto& e = (*it)[r];
        if (e.is_string()) {
          merges.push_back(split_merge(e.get<std::string>(), src, r));
        } else {
          require<IoError>(e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string(),
                           "{}: model.merges[{}] is neither \"a b\" nor [\"a\", \"b\"]", src, r);
          merges.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
        }
      }
    }
    Options o;
    o.ignore_merges = bool_field(m, "ignore_merges", false, src);
    if (auto it = j.find("added_tokens"); it != j.end() && !it->is_null()) {
      require<IoError>(it->is_array(), "{}: added_tokens is not an array", src);
      for (const auto& t : *it) {
        require<IoError>(t.is_object() && t.contains("id") && t["id"].is_number_integer() &&
                             t.contains("content") && t["content"].is_string(),
                         "{}: an added_tokens entry lacks an integer 'id' or string 'content'", src);
        const auto id = t["id"].get<std::int64_t>();
        require<IoError>(id >= 0 && id < kMaxId, "{}: added token id {} outside [0, {})", src, id,
                         kMaxId);
        const auto content = t["content"].get<std::string>();
        require_utf8(content, src + " added token");
        o.added_tokens.push_back({content, static_cast<std::int32_t>(id),
                                  bool_field(t, "special", false, src)});
      }
    }
    if (auto it = j.find("normalizer"); it != j.end() && !it->is_null()) {
      const std::string nt = it->is_object() ? string_field(*it, "type", "", src) : std::string("?");
      require<ConfigError>(nt == "NFC", "{}: normalizer '{}' is not supported (null or NFC)", src,
                           nt);
      o.normalization = Normalization::kNfc;
    }
    o.pattern.clear();
    bool byte_level = false;
    auto pre_tokenizer = [&](const nlohmann::json& p) {
      require<ConfigError>(p.is_object(), "{}: pre_tokenizer entry is not an object", src);
      const std::string pt = string_field(p, "type", "", src);
      if (pt == "ByteLevel") {
        byte_level = true;
        o.add_prefix_space = bool_field(p, "add_prefix_space", false, src);
        if (bool_field(p, "use_regex", true, src)) {
          require<ConfigError>(o.pattern.empty(), "{}: two pre-tokenizer regexes", src);
          o.pattern = std::string(kGpt2Pattern);
        }
      } else if (pt == "Split") {
        require<ConfigError>(!byte_level, "{}: Split after ByteLevel is not supported", src);
        require<ConfigError>(o.pattern.empty(), "{}: two pre-tokenizer regexes", src);
        require<ConfigError>(string_field(p, "behavior", "", src) == "Isolated" &&
                                 !bool_field(p, "invert", false, src),
                             "{}: only Split(behavior=Isolated, invert=false) is supported", src);
        const auto pat = p.find("pattern");
        require<ConfigError>(pat != p.end() && pat->is_object(), "{}: Split has no pattern", src);
        if (auto r = pat->find("Regex"); r != pat->end() && r->is_string()) {
          o.pattern = r->get<std::string>();
        } else if (auto s = pat->find("String"); s != pat->end() && s->is_string()) {
          // Literal: quote it, closing and reopening the quote around any "\E" inside.
          std::string lit = s->get<std::string>(), quoted = "\\Q";
          for (std::size_t k = 0; k < lit.size(); ++k) {
            if (lit.compare(k, 2, "\\E") == 0) {
              quoted += "\\E\\\\E\\Q";
              ++k;
            } else {
              quoted += lit[k];
            }
          }
          o.pattern = quoted + "\\E";
        } else {
          raise<ConfigError>("{}: Split pattern is neither {{\"Regex\"}} nor {{\"String\"}}", src);
        }
        require<ConfigError>(!o.pattern.empty(), "{}: Split pattern is empty", src);
      } else {
        raise<ConfigError>("{}: pre-tokenizer '{}' is not supported (ByteLevel, Split)", src, pt);
      }
    };
    const auto pre_it = j.find("pre_tokenizer");
    require<ConfigError>(pre_it != j.end() && pre_it->is_object(),
                         "{}: no pre_tokenizer; byte-level BPE needs a ByteLevel pre-tokenizer", src);
    if (string_field(*pre_it, "type", "", src) == "Sequence") {
      const auto list = pre_it->find("pretokenizers");
      require<ConfigError>(list != pre_it->end() && list->is_array(),
                           "{}: Sequence pre_tokenizer has no 'pretokenizers' array", src);
      for (const auto& p : *list) pre_tokenizer(p);
    } else {
      pre_tokenizer(*pre_it);
    }
    require<ConfigError>(byte_level, "{}: pre_tokenizer has no ByteLevel step", src);
    return ByteLevelBpeTokenizer(vocab, merges, std::move(o), src);
  }

  ByteLevelBpeTokenizer(ByteLevelBpeTokenizer&&) noexcept = default;
  ByteLevelBpeTokenizer& operator=(ByteLevelBpeTokenizer&&) noexcept = default;

  /// Token ids of UTF-8 `text`; added/special tokens in the text become their ids. Throws
  /// ArgumentError for invalid UTF-8 or a byte with no token in the vocabulary.
  [[nodiscard]] std::vector<std::int32_t> encode(std::string_view text) const {
    return encode_impl(text, true);
  }

  /// Like encode(), but added/special tokens in the text are treated as ordinary text.
  [[nodiscard]] std::vector<std::int32_t> encode_ordinary(std::string_view text) const {
    return encode_impl(text, false);
  }

  /// The bytes that `ids` stand for (may be partial UTF-8 when `ids` cut a character). Throws
  /// ArgumentError naming the first id that is not in the vocabulary.
  [[nodiscard]] std::string decode(std::span<const std::int32_t> ids) const {
    std::string out;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const std::int32_t id = ids[i];
      require<ArgumentError>(id >= 0 && static_cast<std::size_t>(id) < has_.size() && has_[id],
                             "{}: token id {} at position {} is not in the vocabulary (size {})",
                             source_, id, i, has_.size());
      out += pieces_[id];
    }
    return out;
  }

  /// One more than the largest token id (vocab and added tokens).
  [[nodiscard]] std::size_t vocab_size() const noexcept { return has_.size(); }
  /// Id of a vocab token given as raw text (e.g. " the") or of an added token, if any.
  [[nodiscard]] std::optional<std::int32_t> token_id(std::string_view text) const {
    for (const auto& t : options_.added_tokens)
      if (t.content == text) return t.id;
    if (auto it = vocab_.find(bytes_to_symbols(text)); it != vocab_.end()) return it->second;
    return std::nullopt;
  }
  /// Raw bytes of token `id` (ArgumentError when absent).
  [[nodiscard]] const std::string& token_bytes(std::int32_t id) const {
    require<ArgumentError>(id >= 0 && static_cast<std::size_t>(id) < has_.size() && has_[id],
                           "{}: token id {} is not in the vocabulary", source_, id);
    return pieces_[id];
  }
  [[nodiscard]] const std::string& pattern() const noexcept { return options_.pattern; }
  [[nodiscard]] const std::vector<AddedToken>& added_tokens() const noexcept {
    return options_.added_tokens;
  }
  [[nodiscard]] Normalization normalization() const noexcept { return options_.normalization; }
  [[nodiscard]] std::size_t merge_count() const noexcept { return merges_.size(); }
  [[nodiscard]] const std::string& source() const noexcept { return source_; }
  /// Forgets the memo of merged pieces (for cold-start measurements).
  void clear_cache() const {
    std::lock_guard lock(cache_->mutex);
    cache_->map.clear();
  }

 private:
  static constexpr std::int64_t kMaxId = std::int64_t{1} << 24;
  static constexpr std::size_t kMaxCachedPiece = 64;     // bytes
  static constexpr std::size_t kMaxCacheEntries = 1 << 18;

  struct Merge {
    std::int32_t rank;
    std::int32_t id;
  };
  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  struct Cache {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<std::int32_t>, StringHash, std::equal_to<>> map;
  };

  static std::uint64_t pair_key(std::int32_t a, std::int32_t b) noexcept {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) |
           static_cast<std::uint32_t>(b);
  }

  static nlohmann::json read_json(const std::filesystem::path& path) {
    const std::string text = read_input_file(path, "tokenizer file");
    try {
      return nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      raise<IoError>("{}: invalid JSON: {}", path.string(), e.what());
    }
  }

  static std::string string_field(const nlohmann::json& o, const char* key, const char* fallback,
                                  const std::string& src) {
    auto it = o.find(key);
    if (it == o.end() || it->is_null()) return fallback;
    require<ConfigError>(it->is_string(), "{}: field '{}' is not a string", src, key);
    return it->get<std::string>();
  }

  static bool bool_field(const nlohmann::json& o, const char* key, bool fallback,
                         const std::string& src) {
    auto it = o.find(key);
    if (it == o.end() || it->is_null()) return fallback;
    require<ConfigError>(it->is_boolean(), "{}: field '{}' is not a boolean", src, key);
    return it->get<bool>();
  }

  static Vocab parse_vocab(const nlohmann::json& j, const std::string& src) {
    require<IoError>(j.is_object(), "{}: vocabulary is not a JSON object of token -> id", src);
    Vocab v;
    v.reserve(j.size());
    for (auto it = j.begin(); it != j.end(); ++it) {
      require<IoError>(it.value().is_number_integer(), "{}: token '{}' has a non-integer id", src,
                       it.key());
      const auto id = it.value().get<std::int64_t>();
      require<IoError>(id >= 0 && id < kMaxId, "{}: token '{}' has id {} outside [0, {})", src,
                       it.key(), id, kMaxId);
      v.emplace_back(it.key(), static_cast<std::int32_t>(id));
    }
    return v;
  }

  static std::pair<std::string, std::string> split_merge(std::string_view line,
                                                         const std::string& src, std::size_t n) {
    const auto sp = line.find(' ');
    require<IoError>(sp != std::string_view::npos && sp > 0 && sp + 1 < line.size() &&
                         line.find(' ', sp + 1) == std::string_view::npos,
                     "{}: merge {} '{}' is not two tokens separated by one space", src, n, line);
    return {std::string(line.substr(0, sp)), std::string(line.substr(sp + 1))};
  }

  static Merges read_merges_txt(const std::filesystem::path& path) {
    auto in = open_input_file(path, "merges file");
    Merges merges;
    std::string line;
    std::size_t line_no = 0;
    while (std::getline(in, line)) {
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line_no == 1 && line.rfind("#version", 0) == 0) continue;
      if (line.empty()) continue;
      merges.push_back(split_merge(line, path.string() + " line", line_no));
    }
    return merges;
  }

  void ensure_size(std::int32_t id) {
    if (static_cast<std::size_t>(id) >= has_.size()) {
      has_.resize(static_cast<std::size_t>(id) + 1, 0);
      pieces_.resize(static_cast<std::size_t>(id) + 1);
    }
  }

  void add_vocab_entry(const std::string& symbols, std::int32_t id) {
    require<IoError>(id >= 0 && id < kMaxId, "{}: token '{}' has id {} outside [0, {})", source_,
                     symbols, id, kMaxId);
    require_utf8(symbols, source_ + " vocabulary entry");
    ensure_size(id);
    require<IoError>(!has_[id], "{}: id {} is given to two tokens (second: '{}')", source_, id,
                     symbols);
    require<IoError>(vocab_.emplace(symbols, id).second, "{}: token '{}' appears twice", source_,
                     symbols);
    has_[id] = 1;
    // Symbols outside the 256 byte symbols are kept as their own UTF-8 (as HF's ByteLevel does).
    std::string bytes;
    for (std::size_t i = 0; i < symbols.size();) {
      const std::size_t start = i;
      const int b = code_point_to_byte(next_code_point(symbols, i));
      if (b >= 0) bytes.push_back(static_cast<char>(b));
      else bytes.append(symbols, start, i - start);
    }
    pieces_[id] = std::move(bytes);
  }

  std::vector<std::int32_t> encode_impl(std::string_view text, bool split_added) const {
    require_utf8(text, source_ + " encode");
    std::vector<std::int32_t> out;
    out.reserve(text.size() / 3 + 4);
    std::size_t seg = 0, i = 0;
    const bool any_added = split_added && !options_.added_tokens.empty();
    while (any_added && i < text.size()) {
      const auto& cands = added_by_byte_[static_cast<unsigned char>(text[i])];
      const AddedToken* hit = nullptr;
      for (std::size_t k : cands) {
        const auto& t = options_.added_tokens[k];
        if (text.compare(i, t.content.size(), t.content) == 0) {
          hit = &t;  // longest first
          break;
        }
      }
      if (!hit) {
        ++i;
        continue;
      }
      encode_segment(text.substr(seg, i - seg), out);
      out.push_back(hit->id);
      i += hit->content.size();
      seg = i;
    }
    encode_segment(text.substr(seg), out);
    return out;
  }

  void encode_segment(std::string_view seg, std::vector<std::int32_t>& out) const {
    if (seg.empty()) return;
    std::string prefixed;
    if (options_.add_prefix_space && seg.front() != ' ') {
      prefixed = " ";
      prefixed += seg;
      seg = prefixed;
    }
    if (!regex_) {
      encode_piece(seg, out);
      return;
    }
    regex_->split(seg, [&](std::string_view piece, bool) { encode_piece(piece, out); });
  }

  void encode_piece(std::string_view piece, std::vector<std::int32_t>& out) const {
    const bool cacheable = piece.size() <= kMaxCachedPiece;
    if (cacheable) {
      std::lock_guard lock(cache_->mutex);
      if (auto it = cache_->map.find(piece); it != cache_->map.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    const std::size_t first = out.size();
    bpe(piece, out);
    if (cacheable) {
      std::lock_guard lock(cache_->mutex);
      if (cache_->map.size() >= kMaxCacheEntries) cache_->map.clear();
      cache_->map.emplace(std::string(piece),
                          std::vector<std::int32_t>(out.begin() + static_cast<std::ptrdiff_t>(first),
                                                    out.end()));
    }
  }

  // Merges the lowest-rank adjacent pair first (leftmost among equal ranks) until none applies.
  // Symbols live in a linked list; stale heap entries are skipped when popped.
  void bpe(std::string_view piece, std::vector<std::int32_t>& out) const {
    if (options_.ignore_merges) {
      if (auto it = vocab_.find(bytes_to_symbols(piece)); it != vocab_.end()) {
        out.push_back(it->second);
        return;
      }
    }
    const std::size_t n = piece.size();
    std::vector<std::int32_t> sym(n);
    for (std::size_t k = 0; k < n; ++k) {
      const auto b = static_cast<unsigned char>(piece[k]);
      require<ArgumentError>(byte_id_[b] >= 0, "{}: byte 0x{:02X} has no token in the vocabulary",
                             source_, static_cast<unsigned>(b));
      sym[k] = byte_id_[b];
    }
    if (n == 1) {
      out.push_back(sym[0]);
      return;
    }
    std::vector<std::int32_t> next(n), prev(n);
    for (std::size_t k = 0; k < n; ++k) {
      next[k] = k + 1 < n ? static_cast<std::int32_t>(k + 1) : -1;
      prev[k] = static_cast<std::int32_t>(k) - 1;
    }
    struct Cand {
      std::int32_t rank, left, left_id, right_id;
      bool operator<(const Cand& o) const noexcept {  // max-heap: lowest rank, then leftmost
        return rank != o.rank ? rank > o.rank : left > o.left;
      }
    };
    std::vector<Cand> storage;
    storage.reserve(n);
    std::priority_queue<Cand> heap(std::less<Cand>(), std::move(storage));
    auto push = [&](std::int32_t l) {
      if (l < 0 || next[l] < 0) return;
      auto it = merges_.find(pair_key(sym[l], sym[next[l]]));
      if (it != merges_.end()) heap.push({it->second.rank, l, sym[l], sym[next[l]]});
    };
    for (std::size_t k = 0; k + 1 < n; ++k) push(static_cast<std::int32_t>(k));
    while (!heap.empty()) {
      const Cand c = heap.top();
      heap.pop();
      const std::int32_t r = next[c.left];
      if (sym[c.left] != c.left_id || r < 0 || sym[r] != c.right_id) continue;  // stale
      sym[c.left] = merges_.find(pair_key(c.left_id, c.right_id))->second.id;
      sym[r] = -1;
      next[c.left] = next[r];
      if (next[r] >= 0) prev[next[r]] = c.left;
      push(prev[c.left]);
      push(c.left);
    }
    for (std::int32_t k = 0; k >= 0; k = next[k]) out.push_back(sym[k]);
  }

  std::string source_;
  Options options_;
  std::unordered_map<std::string, std::int32_t> vocab_;  // symbol form -> id
  std::unordered_map<std::uint64_t, Merge> merges_;       // (left id, right id) -> rank, result
  std::vector<std::string> pieces_;                        // id -> raw bytes
  std::vector<std::uint8_t> has_;                          // id -> present
  std::array<std::int32_t, 256> byte_id_{};
  std::array<std::vector<std::size_t>, 256> added_by_byte_;  // first byte -> added tokens, longest first
  std::unique_ptr<Regex> regex_;
  std::unique_ptr<Cache> cache_;
};

}  // namespace fragile::io
