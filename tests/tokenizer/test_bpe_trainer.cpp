// Byte-level BPE trainer: merges on corpora small enough to derive by hand (the expected lists
// are also what Hugging Face tokenizers' BpeTrainer learns on them), id layout, round trips,
// tokenizer.json written and loaded back, determinism, and bad input.
#include "support/test_data.hpp"

#include <fragile/io/tokenizer/bpe_trainer.hpp>
#include <fragile/io/tokenizer/tokenizer.hpp>

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

using fragile::io::BpeTrainer;
using fragile::io::BpeTrainerOptions;
using fragile::io::train_bpe;
using Merges = fragile::io::ByteLevelBpeTokenizer::Merges;
using Ids = std::vector<std::int32_t>;

namespace {

BpeTrainerOptions opts(std::size_t vocab_size, std::size_t min_frequency,
                       std::vector<std::string> specials = {}) {
  BpeTrainerOptions o;
  o.vocab_size = vocab_size;
  o.min_frequency = min_frequency;
  o.special_tokens = std::move(specials);
  return o;
}

std::int32_t id_of(const fragile::io::TrainedBpe& t, const std::string& symbols) {
  for (const auto& [s, id] : t.vocab)
    if (s == symbols) return id;
  return -1;
}

// Deterministic pseudo-English from a fixed LCG, with punctuation, numbers and line breaks.
std::string synthetic_corpus(std::size_t words, std::uint32_t seed) {
  static const char* kWords[] = {"the",  "and",   "of",    "in",     "lord",  "said", "unto",
                                 "he",   "that",  "shall", "thou",   "thee",  "them", "his",
                                 "king", "house", "land",  "people", "went",  "came", "day",
                                 "upon", "before", "also", "which",  "there", "city", "hand"};
  static const char* kSyllables[] = {"ba", "ri", "to", "ne", "ka", "lu", "mi", "so", "de",
                                     "fa", "gi", "po", "ru", "ve", "th", "an", "er", "qu"};
  std::string out;
  std::uint32_t x = seed;
  auto next = [&] { return (x = x * 1664525u + 1013904223u) >> 8; };
  for (std::size_t i = 0; i < words; ++i) {
    // Half common words, half made of 1-3 syllables (thousands of distinct words to merge).
    if (next() % 2 == 0) {
      out += kWords[next() % std::size(kWords)];
    } else {
      for (auto n = 1 + next() % 3; n > 0; --n) out += kSyllables[next() % std::size(kSyllables)];
    }
    next();
    const auto r = (x >> 12) % 16;
    out += r == 0 ? ".\n" : r == 1 ? ", " : r == 2 ? " 12 " : " ";
  }
  return out;
}

std::string read_all(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("BPE trainer ids: specials first, then the byte symbols by code point", "[tokenizer][bpe_trainer]") {
  const auto t = train_bpe("xy xy ab ab", opts(300, 2, {"<s>", "<pad>"}));
  REQUIRE(t.vocab.size() == 2 + 256 + 3);
  for (std::size_t i = 0; i < t.vocab.size(); ++i) CHECK(t.vocab[i].second == static_cast<std::int32_t>(i));
  CHECK(t.vocab[0].first == "<s>");
  CHECK(t.vocab[1].first == "<pad>");
  CHECK(id_of(t, "!") == 2);                 // byte 33 = U+0021, the lowest code point
  CHECK(id_of(t, "\xC4\x80") == 2 + 188);    // 'Ā' = byte 0 = U+0100, after the 188 printable bytes
  CHECK(id_of(t, "\xC4\xA0") == 2 + 220);    // 'Ġ' = byte 32 = U+0120
  CHECK(id_of(t, "\xC3\xBF") == 2 + 187);    // 'ÿ' = byte 255, the last printable one
  CHECK(id_of(t, "ab") == 258);              // merges follow the alphabet
  REQUIRE(t.special_tokens.size() == 2);
  CHECK(t.special_tokens[1].content == "<pad>");
  CHECK(t.special_tokens[1].id == 1);
  CHECK(t.special_tokens[1].special);
}

TEST_CASE("BPE trainer merges on hand-derived corpora", "[tokenizer][bpe_trainer]") {
  SECTION("\"aaabdaaabac\": overlapping windows, stale counts, ties by ids") {
    // a a a b d a a a b a c: aa 4 windows -> merge; aa's leftover count (2) is stale and never
    // used again. ab 2 ties aa+a 2: (a, b) has the smaller ids. Then aa+ab 2. Four pairs tie at
    // 1: (a,c) < (d,aaab) < (aaab,a) < (aaab,d) by ids -- string order would take (aaab, d)
    // before (d, aaab), first-occurrence order would take (aaab, d) first too.
    const auto t = train_bpe("aaabdaaabac", opts(400, 1));
    CHECK(t.merges == Merges{{"a", "a"}, {"a", "b"}, {"aa", "ab"}, {"a", "c"}, {"d", "aaab"},
                             {"aaab", "daaab"}, {"aaabdaaab", "ac"}});
    CHECK(t.vocab.size() == 256 + 7);
    CHECK(t.vocab.back().first == "aaabdaaabac");
  }
  SECTION("\"xy xy ab ab\": a three-way tie, then min_frequency stops") {
    // Words "xy", " xy", " ab" x2: (x,y) (a,b) (Ġ,a) all count 2. By ids (a,b) < (x,y) < (Ġ,a);
    // first occurrence would pick (x,y), byte order (' ', a). (Ġ,a) drops to 0 after (a,b),
    // (Ġ,ab) reaches 2; (Ġ,xy) stays at 1 < min_frequency.
    const auto t = train_bpe("xy xy ab ab", opts(400, 2));
    CHECK(t.merges == Merges{{"a", "b"}, {"x", "y"}, {"\xC4\xA0", "ab"}});
    CHECK(train_bpe("xy xy ab ab", opts(400, 3)).merges.empty());
    CHECK(train_bpe("xy xy ab ab", opts(400, 1)).merges.size() == 4);
  }
  SECTION("vocab_size stops training, special tokens included in it") {
    CHECK(train_bpe("aaabdaaabac", opts(258, 1)).merges == Merges{{"a", "a"}, {"a", "b"}});
    CHECK(train_bpe("aaabdaaabac", opts(259, 1, {"<s>"})).merges == Merges{{"a", "a"}, {"a", "b"}});
    CHECK(train_bpe("aaabdaaabac", opts(256, 1)).merges.empty());
  }
  SECTION("a merge that spells a special token reuses its id") {
    // As HF: the vocabulary is keyed by string, so (a, b) -> "ab" is the special token 0 and
    // the vocabulary does not grow (2 + 256 + 6 for 7 merges).
    const auto t = train_bpe("xy xy ab ab abab xab", opts(300, 1, {"ab", "<s>"}));
    CHECK(t.merges == Merges{{"a", "b"}, {"\xC4\xA0", "ab"}, {"x", "y"}, {"x", "ab"},
                             {"\xC4\xA0", "xy"}, {"\xC4\xA0", "xab"}, {"\xC4\xA0" "ab", "ab"}});
    CHECK(t.vocab.size() == 264);
    CHECK(id_of(t, "ab") == 0);
    CHECK(t.tokenizer().encode_ordinary("ab abab") == Ids{0, 263});
  }
  SECTION("add_prefix_space puts a space before each text") {
    auto o = opts(400, 1);
    o.add_prefix_space = true;
    CHECK(train_bpe("ab", o).merges == Merges{{"a", "b"}, {"\xC4\xA0", "ab"}});
    CHECK(train_bpe(" ab", o).merges == Merges{{"a", "b"}, {"\xC4\xA0", "ab"}});
    CHECK(train_bpe("ab", opts(400, 1)).merges == Merges{{"a", "b"}});
  }
  SECTION("several documents count together, each pre-tokenized alone") {
    BpeTrainer tr(opts(400, 2));
    tr.feed("xy xy");
    tr.feed(" ab ab");
    CHECK(tr.distinct_words() == 3);
    CHECK(tr.train().merges == Merges{{"a", "b"}, {"x", "y"}, {"\xC4\xA0", "ab"}});
  }
}

TEST_CASE("BPE trainer: the trained tokenizer round-trips unseen text", "[tokenizer][bpe_trainer]") {
  const auto corpus = synthetic_corpus(20000, 1);
  const auto t = train_bpe(corpus, opts(600, 2, {"<|endoftext|>"}));
  CHECK(t.vocab.size() == 600);
  const auto tok = t.tokenizer();
  const std::string unseen = synthetic_corpus(500, 7) +
                             "Zebras (and 3.14159 émigrés) never appeared; \t tabs\r\n\n  é中文 \x01.";
  const auto ids = tok.encode(unseen);
  CHECK(tok.decode(ids) == unseen);
  // Learned merges compress: well under one token per byte on in-distribution text.
  const auto in_dist = synthetic_corpus(500, 7);
  CHECK(tok.encode(in_dist).size() * 3 < in_dist.size());
  CHECK(tok.encode("the lord").size() <= 2);
}

TEST_CASE("BPE trainer: special tokens are single ids", "[tokenizer][bpe_trainer]") {
  const auto corpus = synthetic_corpus(3000, 3);
  const auto t = train_bpe(corpus, opts(400, 2, {"<|endoftext|>", "<pad>"}));
  const auto tok = t.tokenizer();
  const auto ids = tok.encode("the king<|endoftext|>the city<pad>");
  CHECK(std::count(ids.begin(), ids.end(), 0) == 1);
  CHECK(std::count(ids.begin(), ids.end(), 1) == 1);
  CHECK(ids.back() == 1);
  const auto before = tok.encode("the king"), after = tok.encode("the city");
  Ids expected = before;
  expected.push_back(0);
  expected.insert(expected.end(), after.begin(), after.end());
  expected.push_back(1);
  CHECK(ids == expected);
  CHECK(tok.decode(ids) == "the king<|endoftext|>the city<pad>");
}

TEST_CASE("BPE trainer: tokenizer.json loads back and encodes identically", "[tokenizer][bpe_trainer]") {
  const auto dir = fragile::test::scratch_dir("bpe_trainer_json");
  const auto corpus = synthetic_corpus(8000, 5);
  const std::string probe = synthetic_corpus(300, 11) + " émigré<|endoftext|>\n\n 42<中 😀>ok";
  SECTION("GPT-2 preset") {
    const auto t = train_bpe(corpus, opts(500, 2, {"<|endoftext|>", "<中 😀>"}));
    t.save(dir / "tokenizer.json");
    const auto loaded = fragile::io::load_tokenizer(dir / "tokenizer.json");
    CHECK(loaded.vocab_size() == 500);
    CHECK(loaded.encode(probe) == t.tokenizer().encode(probe));
    CHECK(loaded.decode(loaded.encode(probe)) == probe);
    // The Hugging Face layout the brief asks for.
    const auto j = nlohmann::json::parse(read_all(dir / "tokenizer.json"));
    CHECK(j["model"]["type"] == "BPE");
    CHECK(j["model"]["merges"].size() == t.merges.size());
    CHECK(j["model"]["merges"][0].is_array());
    CHECK(j["normalizer"].is_null());
    CHECK(j["pre_tokenizer"]["type"] == "ByteLevel");
    CHECK(j["pre_tokenizer"]["add_prefix_space"] == false);
    CHECK(j["pre_tokenizer"]["use_regex"] == true);
    CHECK(j["decoder"]["type"] == "ByteLevel");
    CHECK(j["post_processor"]["type"] == "ByteLevel");
    CHECK(j["post_processor"]["trim_offsets"] == false);
    REQUIRE(j["added_tokens"].size() == 2);
    CHECK(j["added_tokens"][0]["content"] == "<|endoftext|>");
    CHECK(j["added_tokens"][0]["id"] == 0);
    CHECK(j["added_tokens"][0]["special"] == true);
    CHECK(j["model"]["vocab"]["<|endoftext|>"] == 0);
    CHECK(j["added_tokens"][1]["content"] == "<中 😀>");
    const auto ids = loaded.encode(probe);
    CHECK(std::count(ids.begin(), ids.end(), 1) == 1);
    // No temporary file is left beside it.
    CHECK(std::distance(std::filesystem::directory_iterator(dir), {}) == 1);
  }
  SECTION("GPT-2 preset with add_prefix_space") {
    auto o = opts(500, 2);
    o.add_prefix_space = true;
    const auto t = train_bpe(corpus, o);
    t.save(dir / "tokenizer.json");
    const auto j = nlohmann::json::parse(read_all(dir / "tokenizer.json"));
    CHECK(j["pre_tokenizer"]["add_prefix_space"] == true);
    const auto loaded = fragile::io::load_tokenizer(dir / "tokenizer.json");
    CHECK(loaded.encode(probe) == t.tokenizer().encode(probe));
    CHECK(loaded.encode("king") == loaded.encode(" king"));
  }
  SECTION("Qwen2 preset and add_prefix_space") {
    auto o = opts(500, 2);
    o.preset = fragile::io::PreTokenizerPreset::kQwen2;
    o.add_prefix_space = true;
    const auto t = train_bpe(corpus, o);
    t.save(dir / "tokenizer.json");
    const auto loaded = fragile::io::ByteLevelBpeTokenizer::from_tokenizer_json(dir / "tokenizer.json");
    CHECK(loaded.pattern() == std::string(fragile::io::kQwen2Pattern));
    CHECK(loaded.encode(probe) == t.tokenizer().encode(probe));
    CHECK(loaded.encode("king") == loaded.encode(" king"));
  }
}

TEST_CASE("BPE trainer: the same input gives a byte-identical tokenizer.json", "[tokenizer][bpe_trainer]") {
  const auto dir = fragile::test::scratch_dir("bpe_trainer_determinism");
  const auto corpus = synthetic_corpus(6000, 9);
  train_bpe(corpus, opts(450, 2, {"<s>"})).save(dir / "a.json");
  train_bpe(corpus, opts(450, 2, {"<s>"})).save(dir / "b.json");
  const auto a = read_all(dir / "a.json");
  CHECK(a.size() > 1000);
  CHECK(a == read_all(dir / "b.json"));
  // Saving over an existing file replaces it whole.
  train_bpe("aaabdaaabac", opts(300, 1)).save(dir / "a.json");
  CHECK(read_all(dir / "a.json") == train_bpe("aaabdaaabac", opts(300, 1)).tokenizer_json());
}

TEST_CASE("BPE trainer rejects bad input", "[tokenizer][bpe_trainer]") {
  using fragile::ArgumentError;
  CHECK_THROWS_AS(BpeTrainer(opts(257, 2, {"<s>", "<pad>"})), ArgumentError);
  CHECK_THROWS_WITH(BpeTrainer(opts(257, 2, {"<s>", "<pad>"})),
                    Catch::Contains("257") && Catch::Contains("2 special") && Catch::Contains("258"));
  CHECK_NOTHROW(BpeTrainer(opts(258, 2, {"<s>", "<pad>"})));
  CHECK_THROWS_AS(BpeTrainer(opts(0, 2)), ArgumentError);
  CHECK_THROWS_WITH(BpeTrainer(opts(300, 2, {"<s>", "<pad>", "<s>"})),
                    Catch::Contains("'<s>'") && Catch::Contains("twice"));
  CHECK_THROWS_AS(BpeTrainer(opts(300, 2, {""})), ArgumentError);
  CHECK_THROWS_AS(BpeTrainer(opts(300, 2, {"\xFF"})), ArgumentError);
  CHECK_THROWS_WITH(BpeTrainer(opts(300, 2, {"<\xC3\xA9>"})), Catch::Contains("U+00E9"));
  CHECK_NOTHROW(BpeTrainer(opts(300, 2, {"<\xE4\xB8\xAD \xF0\x9F\x98\x80>"})));
  CHECK_THROWS_AS(train_bpe("", opts(300, 2)), ArgumentError);
  CHECK_THROWS_WITH(train_bpe("", opts(300, 2)), Catch::Contains("empty"));
  BpeTrainer tr(opts(300, 2));
  CHECK_THROWS_AS(tr.train(), ArgumentError);
  CHECK_THROWS_AS(tr.feed("ok \xC3("), ArgumentError);
  const auto missing = fragile::test::scratch_dir("bpe_trainer_bad") / "no" / "such" / "tokenizer.json";
  CHECK_THROWS_AS(train_bpe("ab ab", opts(300, 1)).save(missing), fragile::IoError);
  CHECK_THROWS_WITH(train_bpe("ab ab", opts(300, 1)).save(missing), Catch::Contains(missing.string()));
}
