// Byte-level BPE trainer: counts the pre-tokenizer pieces of UTF-8 text (GPT-2 regex by default,
// each piece's bytes mapped to GPT-2's byte symbols), then learns merges by pair frequency and
// writes a Hugging Face tokenizer.json that both fragile's ByteLevelBpeTokenizer and HF
// `tokenizers` load. The algorithm is incremental, as HF's BpeTrainer: pair -> count, pair ->
// words holding it, and a max-heap of pairs with lazy re-validation, so each merge touches only
// the words that contain its pair.
//
// It reproduces Hugging Face tokenizers' BpeTrainer (tokenizers/src/models/bpe/trainer.rs, with
// a ByteLevel pre-tokenizer and initial_alphabet = ByteLevel.alphabet()) merge for merge:
//  - ids: the special tokens first (0..k-1, in the order given), then the 256 byte symbols
//    sorted by code point (not by byte: '!' = byte 33 comes first, 'Ā' = byte 0 is the 189th),
//    then one id per merge whose result is a new string;
//  - the next merge is the pair with the highest count; on equal counts the pair with the
//    smallest (left id, right id), compared left first;
//  - a pair's count is the number of adjacent windows (times word frequency) at counting time,
//    updated by the changes each merge makes, exactly as HF's Word::merge reports them (the
//    merged pair's own count is not zeroed, overlapping windows like "aaa" count twice);
//  - a popped entry whose count is stale is pushed back with the current count; training stops
//    when the vocabulary (specials + alphabet + new strings) reaches vocab_size, when no pair is
//    left, or at the first valid pair whose count is below max(1, min_frequency);
//  - a merge whose result string already exists (a special token's text, or another path) reuses
//    its id and does not grow the vocabulary; a pair merged twice keeps only its later rank, as
//    HF's model holds merges in a map.
// Special tokens in the training text are counted as ordinary text (HF adds them only after
// training). One case is not reproducible: two heap entries with the same pair and count (only
// after an id is reused), whose pop order is an implementation detail of Rust's BinaryHeap.
//   @inproceedings{sennrich2016bpe, title={Neural Machine Translation of Rare Words with Subword
//     Units}, author={Sennrich, Rico and Haddow, Barry and Birch, Alexandra}, booktitle={ACL}, year={2016}}
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/io/atomic_file.hpp"
#include "fragile/io/tokenizer/byte_level_bpe.hpp"
#include "fragile/io/tokenizer/regex.hpp"
#include "fragile/io/utf8.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace fragile::io {

struct BpeTrainerOptions {
  std::size_t vocab_size = 0;               ///< specials + 256 byte symbols + merged tokens
  std::vector<std::string> special_tokens;  ///< ids 0..k-1, in this order
  std::size_t min_frequency = 2;            ///< a pair seen fewer times is never merged
  PreTokenizerPreset preset = PreTokenizerPreset::kGpt2;
  bool add_prefix_space = false;  ///< ByteLevel(add_prefix_space): " " before each fed text
};

/// A trained byte-level BPE: the vocabulary and merges in tokenizer.json form.
struct TrainedBpe {
  ByteLevelBpeTokenizer::Vocab vocab;    ///< in id order, ids 0..n-1; specials first (as text)
  ByteLevelBpeTokenizer::Merges merges;  ///< in rank order, symbol form
  std::vector<AddedToken> special_tokens;
  PreTokenizerPreset preset = PreTokenizerPreset::kGpt2;
  bool add_prefix_space = false;

  /// fragile's tokenizer for this vocabulary (the same one the tokenizer.json loads as).
  [[nodiscard]] ByteLevelBpeTokenizer tokenizer() const {
    ByteLevelBpeTokenizer::Options o;
    o.pattern = std::string(pre_tokenizer_pattern(preset));
    o.added_tokens = special_tokens;
    o.add_prefix_space = add_prefix_space;
    return ByteLevelBpeTokenizer(vocab, merges, std::move(o), "trained byte-level BPE");
  }

  /// Hugging Face tokenizer.json text, laid out as `tokenizers` saves it (pretty): for the GPT-2
  /// preset the bytes equal those of HF's own trained tokenizer. The same TrainedBpe always gives
  /// the same bytes.
  [[nodiscard]] std::string tokenizer_json() const {
    using J = nlohmann::ordered_json;  // keeps HF's key order and the vocab in id order
    J added = J::array();
    for (const auto& t : special_tokens)
      added.push_back({{"id", t.id}, {"content", t.content}, {"single_word", false},
                       {"lstrip", false}, {"rstrip", false}, {"normalized", false},
                       {"special", t.special}});
    auto byte_level = [&](bool prefix, bool trim, bool regex) {
      return J{{"type", "ByteLevel"}, {"add_prefix_space", prefix}, {"trim_offsets", trim},
               {"use_regex", regex}};
    };
    J pre;
    if (preset == PreTokenizerPreset::kGpt2) {
      pre = byte_level(add_prefix_space, true, true);
    } else {
      // Qwen2 / Llama-3 layout: the family's regex as a Split, then ByteLevel without its own.
      pre = {{"type", "Sequence"},
             {"pretokenizers",
              J::array({J{{"type", "Split"},
                          {"pattern", {{"Regex", std::string(pre_tokenizer_pattern(preset))}}},
                          {"behavior", "Isolated"},
                          {"invert", false}},
                        byte_level(add_prefix_space, false, false)})}};
    }
    J v = J::object();
    for (const auto& [symbols, id] : vocab) v[symbols] = id;
    J m = J::array();
    for (const auto& [a, b] : merges) m.push_back(J::array({a, b}));
    J j;
    j["version"] = "1.0";
    j["truncation"] = nullptr;
    j["padding"] = nullptr;
    j["added_tokens"] = std::move(added);
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = std::move(pre);
    j["post_processor"] = byte_level(true, false, true);
    j["decoder"] = byte_level(true, true, true);
    j["model"] = {{"type", "BPE"},
                  {"dropout", nullptr},
                  {"unk_token", nullptr},
                  {"continuing_subword_prefix", nullptr},
                  {"end_of_word_suffix", nullptr},
                  {"fuse_unk", false},
                  {"byte_fallback", false},
                  {"ignore_merges", false},
                  {"vocab", std::move(v)},
                  {"merges", std::move(m)}};
    return j.dump(2);  // no trailing newline: byte for byte what tokenizers saves
  }

  /// Writes tokenizer_json() to `path` atomically (temporary file + rename). IoError naming the
  /// path when its folder is missing or the write fails.
  void save(const std::filesystem::path& path) const {
    const auto dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
    require<IoError>(std::filesystem::is_directory(dir),
                     "cannot write tokenizer '{}': folder '{}' does not exist", path.string(),
                     dir.string());
    write_atomically(path, std::string_view(tokenizer_json()));
  }
};

class BpeTrainer {
 public:
  /// Validates the options: ArgumentError when vocab_size is below 256 + the number of special
  /// tokens, or a special token is empty, not UTF-8, given twice, or holds one of the byte-level
  /// symbols U+0080..U+0143 (its vocab entry would decode to other bytes).
  explicit BpeTrainer(BpeTrainerOptions options)
      : options_(std::move(options)), regex_(std::string(pre_tokenizer_pattern(options_.preset))) {
    const std::size_t k = options_.special_tokens.size();
    require<ArgumentError>(options_.vocab_size >= 256 + k,
                           "BpeTrainer: vocab_size {} is smaller than the 256 byte symbols + {} "
                           "special tokens = {}",
                           options_.vocab_size, k, 256 + k);
    require<ArgumentError>(options_.vocab_size <= kMaxVocab,
                           "BpeTrainer: vocab_size {} exceeds the id limit {}", options_.vocab_size,
                           kMaxVocab);
    std::unordered_set<std::string> seen;
    for (std::size_t i = 0; i < k; ++i) {
      const auto& t = options_.special_tokens[i];
      require<ArgumentError>(!t.empty(), "BpeTrainer: special token {} is empty", i);
      require_utf8(t, "BpeTrainer special token");
      // vocab keys in symbol form would read such a code point back as the byte it stands for.
      for (std::size_t j = 0; j < t.size();) {
        const auto cp = next_code_point(t, j);
        require<ArgumentError>(cp < 0x80 || code_point_to_byte(cp) < 0,
                               "BpeTrainer: special token '{}' contains U+{:04X}, a byte-level "
                               "symbol (expected ASCII or code points above U+0143)",
                               t, cp);
      }
      require<ArgumentError>(seen.insert(t).second,
                             "BpeTrainer: special token '{}' is given twice (positions {} and {})",
                             t, std::find(options_.special_tokens.begin(),
                                          options_.special_tokens.end(), t) -
                                    options_.special_tokens.begin(),
                             i);
    }
  }

  /// Counts the pre-tokenizer pieces of one text (a document; add_prefix_space applies to each).
  /// ArgumentError naming the byte offset when `text` is not UTF-8.
  void feed(std::string_view text) {
    require_utf8(text, "BpeTrainer training text");
    fed_bytes_ += text.size();
    if (text.empty()) return;
    std::string prefixed;
    if (options_.add_prefix_space && text.front() != ' ') {
      prefixed = " ";
      prefixed += text;
      text = prefixed;
    }
    regex_.split(text, [&](std::string_view piece, bool) { ++words_[std::string(piece)]; });
  }

  /// Distinct pre-tokenized words counted so far.
  [[nodiscard]] std::size_t distinct_words() const noexcept { return words_.size(); }

  /// Learns the merges from everything fed. ArgumentError when no text was fed.
  [[nodiscard]] TrainedBpe train() const {
    require<ArgumentError>(!words_.empty(),
                           "BpeTrainer: the training text is empty ({} bytes fed), expected some "
                           "text to count",
                           fed_bytes_);
    State s;
    init_vocab(s);
    init_words(s);
    count_pairs(s);
    merge_loop(s);
    return result(s);
  }

 private:
  static constexpr std::size_t kMaxVocab = std::size_t{1} << 24;

  using Pair = std::uint64_t;  // (left id << 32) | right id: orders as (left, right)
  static Pair pair_of(std::uint32_t a, std::uint32_t b) noexcept {
    return (static_cast<std::uint64_t>(a) << 32) | b;
  }
  static std::uint32_t left(Pair p) noexcept { return static_cast<std::uint32_t>(p >> 32); }
  static std::uint32_t right(Pair p) noexcept { return static_cast<std::uint32_t>(p); }

  // A heap entry carries the words it will merge in, as HF's does: a pair pushed again later
  // (new occurrences) gets a second entry holding only the new words.
  struct Entry {
    std::uint64_t count;
    Pair pair;
    std::vector<std::uint32_t> words;  // ascending, distinct
  };
  // Max-heap order: higher count first, then the smaller pair.
  static bool heap_less(const Entry& a, const Entry& b) noexcept {
    return a.count != b.count ? a.count < b.count : a.pair > b.pair;
  }

  struct State {
    std::vector<std::string> key;  // id -> vocab key (symbol form; specials as their text)
    std::unordered_map<std::string, std::uint32_t> id_of;  // key -> id
    std::array<std::uint32_t, 256> byte_id{};
    std::vector<std::vector<std::uint32_t>> words;  // symbol ids of each distinct word
    std::vector<std::int64_t> counts;               // word frequencies
    std::unordered_map<Pair, std::int64_t> pair_counts;
    std::vector<Entry> heap;
    std::vector<std::pair<Pair, std::uint32_t>> merges;  // pair -> result id, in merge order
  };

  // Id of `key`, added as the next id when new. Keys are HF's strings: a merge result that
  // equals an existing token (another path, or a special token's text) gets that token's id.
  static std::uint32_t add_token(State& s, std::string key) {
    if (auto it = s.id_of.find(key); it != s.id_of.end()) return it->second;
    const auto id = static_cast<std::uint32_t>(s.key.size());
    s.id_of.emplace(key, id);
    s.key.push_back(std::move(key));
    return id;
  }

  void init_vocab(State& s) const {
    for (const auto& t : options_.special_tokens) add_token(s, t);
    // HF sorts the initial alphabet by code point for determinism; ids follow that order.
    std::array<int, 256> order{};
    for (int b = 0; b < 256; ++b) order[b] = b;
    const auto& cp = byte_to_code_point();
    std::sort(order.begin(), order.end(), [&](int x, int y) { return cp[x] < cp[y]; });
    for (int b : order) {
      s.byte_id[b] = add_token(s, bytes_to_symbols(std::string(1, static_cast<char>(b))));
    }
  }

  void init_words(State& s) const {
    // Sorted, so that word indices (and the heap pushes that follow them) do not depend on hashing.
    std::vector<const std::pair<const std::string, std::int64_t>*> sorted;
    sorted.reserve(words_.size());
    for (const auto& w : words_) sorted.push_back(&w);
    std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->first < b->first; });
    s.words.reserve(sorted.size());
    s.counts.reserve(sorted.size());
    for (const auto* w : sorted) {
      auto& syms = s.words.emplace_back();
      syms.reserve(w->first.size());
      for (char c : w->first) syms.push_back(s.byte_id[static_cast<unsigned char>(c)]);
      s.counts.push_back(w->second);
    }
  }

  static void count_pairs(State& s) {
    std::unordered_map<Pair, std::vector<std::uint32_t>> where;
    for (std::size_t i = 0; i < s.words.size(); ++i) {
      const auto& w = s.words[i];
      for (std::size_t k = 0; k + 1 < w.size(); ++k) {
        const Pair p = pair_of(w[k], w[k + 1]);
        s.pair_counts[p] += s.counts[i];
        auto& list = where[p];
        if (list.empty() || list.back() != i) list.push_back(static_cast<std::uint32_t>(i));
      }
    }
    s.heap.reserve(where.size());
    for (auto& [p, list] : where) {
      const auto c = s.pair_counts[p];
      if (c > 0) s.heap.push_back({static_cast<std::uint64_t>(c), p, std::move(list)});
    }
    std::make_heap(s.heap.begin(), s.heap.end(), heap_less);
  }

  // Replaces every non-overlapping (a, b), left to right, by c, and reports the pair changes as
  // HF's Word::merge does (including pairs with a c formed earlier in the same pass).
  static void merge_word(std::vector<std::uint32_t>& w, std::uint32_t a, std::uint32_t b,
                         std::uint32_t c, std::vector<std::pair<Pair, int>>& changes) {
    for (std::size_t i = 0; i < w.size(); ++i) {
      if (w[i] != a || i + 1 >= w.size() || w[i + 1] != b) continue;
      if (i > 0) {
        changes.emplace_back(pair_of(w[i - 1], a), -1);
        changes.emplace_back(pair_of(w[i - 1], c), 1);
      }
      w[i] = c;
      w.erase(w.begin() + static_cast<std::ptrdiff_t>(i) + 1);
      if (i + 1 < w.size()) {
        changes.emplace_back(pair_of(b, w[i + 1]), -1);
        changes.emplace_back(pair_of(c, w[i + 1]), 1);
      }
    }
  }

  void merge_loop(State& s) const {
    std::vector<std::pair<Pair, int>> changes;
    std::map<Pair, std::vector<std::uint32_t>> where;  // ordered: deterministic heap pushes
    auto push = [&](Entry e) {
      s.heap.push_back(std::move(e));
      std::push_heap(s.heap.begin(), s.heap.end(), heap_less);
    };
    while (s.key.size() < options_.vocab_size && !s.heap.empty()) {
      std::pop_heap(s.heap.begin(), s.heap.end(), heap_less);
      Entry top = std::move(s.heap.back());
      s.heap.pop_back();
      // Stale entry: its pair's count changed since the push. (HF compares as u64.)
      const auto current = static_cast<std::uint64_t>(s.pair_counts[top.pair]);
      if (top.count != current) {
        top.count = current;
        push(std::move(top));
        continue;
      }
      if (top.count < 1 || top.count < options_.min_frequency) break;
      const std::uint32_t a = left(top.pair), b = right(top.pair);
      const std::uint32_t c = add_token(s, s.key[a] + s.key[b]);
      s.merges.emplace_back(top.pair, c);
      for (const std::uint32_t i : top.words) {
        changes.clear();
        merge_word(s.words[i], a, b, c, changes);
        for (const auto& [p, delta] : changes) {
          s.pair_counts[p] += delta * s.counts[i];
          if (delta > 0) {
            auto& list = where[p];
            if (list.empty() || list.back() != i) list.push_back(i);
          }
        }
      }
      for (auto& [p, list] : where) {
        const auto cnt = s.pair_counts[p];
        if (cnt > 0) push({static_cast<std::uint64_t>(cnt), p, std::move(list)});
      }
      where.clear();
    }
  }

  TrainedBpe result(const State& s) const {
    TrainedBpe t;
    t.preset = options_.preset;
    t.add_prefix_space = options_.add_prefix_space;
    t.vocab.reserve(s.key.size());
    for (std::size_t id = 0; id < s.key.size(); ++id)
      t.vocab.emplace_back(s.key[id], static_cast<std::int32_t>(id));
    for (std::size_t i = 0; i < options_.special_tokens.size(); ++i)
      t.special_tokens.push_back({options_.special_tokens[i], static_cast<std::int32_t>(i), true});
    // A pair merged twice keeps its last rank (HF's model maps pair -> rank).
    std::unordered_map<Pair, std::size_t> last;
    for (std::size_t r = 0; r < s.merges.size(); ++r) last[s.merges[r].first] = r;
    for (std::size_t r = 0; r < s.merges.size(); ++r) {
      const Pair p = s.merges[r].first;
      if (last[p] == r) t.merges.emplace_back(s.key[left(p)], s.key[right(p)]);
    }
    return t;
  }

  BpeTrainerOptions options_;
  Regex regex_;
  std::unordered_map<std::string, std::int64_t> words_;  // piece bytes -> occurrences
  std::size_t fed_bytes_ = 0;
};

/// Trains on one text (one document). See BpeTrainer.
inline TrainedBpe train_bpe(std::string_view text, BpeTrainerOptions options) {
  BpeTrainer trainer(std::move(options));
  trainer.feed(text);
  return trainer.train();
}

}  // namespace fragile::io
