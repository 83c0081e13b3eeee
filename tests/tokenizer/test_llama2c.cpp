// llama2.c tokenizer.bin: hand-checkable merges on a vocabulary built in the test, the O(n log n)
// merge loop against a direct transcription of llama2.c's O(n^2) loop, stories260K's tok512 on
// TinyStories text, and truncated or malformed files.
#include "support/test_data.hpp"
#include "tokenizer/vectors.hpp"

#include <fragile/core/rng.hpp>
#include <fragile/io/tokenizer/tokenizer.hpp>

#include <cstring>
#include <fstream>

using fragile::io::Llama2cTokenizer;
using Ids = std::vector<std::int32_t>;

namespace {

struct Piece {
  std::string text;
  float score;
};

std::vector<std::byte> make_bin(const std::vector<Piece>& pieces, std::int32_t max_len = 0) {
  if (max_len == 0)
    for (const auto& p : pieces) max_len = std::max<std::int32_t>(max_len, static_cast<std::int32_t>(p.text.size()));
  std::vector<std::byte> out;
  auto put = [&](const void* p, std::size_t n) {
    if (n == 0) return;
    const std::size_t at = out.size();
    out.resize(at + n);
    std::memcpy(out.data() + at, p, n);
  };
  put(&max_len, 4);
  for (const auto& p : pieces) {
    const auto len = static_cast<std::int32_t>(p.text.size());
    put(&p.score, 4);
    put(&len, 4);
    put(p.text.data(), p.text.size());
  }
  return out;
}

// The sentencepiece-style layout llama2.c exports: <unk>, BOS, EOS, 256 byte pieces, then words.
std::vector<Piece> base_vocab() {
  std::vector<Piece> v{{"<unk>", 0}, {"\n<s>\n", 0}, {"\n</s>\n", 0}};
  for (int b = 0; b < 256; ++b) v.push_back({fmt::format("<0x{:02X}>", b), 0});
  return v;
}

// llama2.c's encode() written out as it stands: O(n^2) best-pair search, leftmost on ties.
Ids reference_encode(const Llama2cTokenizer& t, std::string_view text, bool bos) {
  Ids tok;
  if (bos) tok.push_back(1);
  if (!text.empty()) tok.push_back(*t.token_id(" "));
  for (std::size_t i = 0; i < text.size();) {
    std::size_t len = 1;
    while (i + len < text.size() && len < 4 && (static_cast<unsigned char>(text[i + len]) & 0xC0) == 0x80) ++len;
    if (auto id = t.token_id(text.substr(i, len))) {
      tok.push_back(*id);
    } else {
      for (std::size_t k = 0; k < len; ++k) tok.push_back(static_cast<unsigned char>(text[i + k]) + 3);
    }
    i += len;
  }
  while (true) {
    float best = -1e10f;
    std::int32_t best_id = -1;
    std::size_t best_i = 0;
    for (std::size_t i = 0; i + 1 < tok.size(); ++i) {
      auto id = t.token_id(t.token(tok[i]) + t.token(tok[i + 1]));
      if (id && t.score(*id) > best) {
        best = t.score(*id);
        best_id = *id;
        best_i = i;
      }
    }
    if (best_id < 0) break;
    tok[best_i] = best_id;
    tok.erase(tok.begin() + static_cast<std::ptrdiff_t>(best_i) + 1);
  }
  return tok;
}

}  // namespace

TEST_CASE("llama2.c encode: dummy prefix, byte fallback, best-score merges", "[tokenizer]") {
  auto v = base_vocab();  // ids 0..258
  const std::int32_t kSpace = 259, kA = 260, kB = 261, kAB = 262, kSpaceA = 263, kSpaceAB = 264, kE = 265;
  v.push_back({" ", -1});
  v.push_back({"a", -2});
  v.push_back({"b", -3});
  v.push_back({"ab", -10});
  v.push_back({" a", -5});  // beats "ab"
  v.push_back({" ab", -20});
  v.push_back({"é", -4});
  const auto bin = make_bin(v);
  const Llama2cTokenizer t(bin, "tiny tokenizer.bin");
  CHECK(t.vocab_size() == 266);
  CHECK(t.encode("") == Ids{});
  CHECK(t.encode("", true, true) == Ids{1, 2});
  CHECK(t.encode("b") == Ids{kSpace, kB});
  CHECK(t.encode("ab") == Ids{kSpaceAB});        // " a" first, then " a"+"b"
  CHECK(t.encode("ba") == Ids{kSpace, kB, kA});  // "ba" is not a piece
  CHECK(t.encode("bab", true) == Ids{1, kSpace, kB, kAB});
  CHECK(t.encode("é€") == Ids{kSpace, kE, 0xE2 + 3, 0x82 + 3, 0xAC + 3});
  CHECK(t.encode("a\tb") == Ids{kSpaceA, '\t' + 3, kB});
  // Equal scores: the leftmost pair merges first.
  auto w = base_vocab();
  w.push_back({" ", -1});   // 259
  w.push_back({"x", -1});   // 260
  w.push_back({"xx", -1});  // 261
  const Llama2cTokenizer tie(make_bin(w), "tie");
  CHECK(tie.encode("xxx") == Ids{259, 261, 260});

  SECTION("decode as llama2.c prints") {
    CHECK(t.decode(Ids{1, kSpaceAB, kSpace, kB}) == "ab b");  // leading space dropped after BOS
    CHECK(t.decode(Ids{kSpaceAB}) == " ab");
    CHECK(t.decode(Ids{1, 0xE2 + 3, 0x82 + 3, 0xAC + 3, 2}) == "€");
    CHECK(t.decode(t.encode("a\tb é€", true)) == "a\tb é€");
    CHECK_THROWS_AS(t.decode(Ids{266}), fragile::ArgumentError);
    CHECK_THROWS_WITH(t.decode(Ids{3, -1}), Catch::Contains("-1") && Catch::Contains("position 1"));
  }
  SECTION("invalid UTF-8 and missing pieces") {
    CHECK_THROWS_AS(t.encode("a\xC3"), fragile::ArgumentError);
    CHECK_THROWS_AS(t.encode("\xFF"), fragile::ArgumentError);
    const Llama2cTokenizer no_space(make_bin({{"a", 0}, {"b", 0}}), "no space");
    CHECK_THROWS_WITH(no_space.encode("a"), Catch::Contains("dummy prefix"));
    CHECK(no_space.encode("") == Ids{});
    const Llama2cTokenizer one(make_bin({{" ", 0}}), "one token");
    CHECK(one.encode("") == Ids{});
    CHECK_THROWS_WITH(one.encode("", true), Catch::Contains("BOS"));  // id 1 does not exist
    CHECK_THROWS_WITH(one.encode("x"), Catch::Contains("byte"));     // fallback id 'x' + 3
  }
}

TEST_CASE("llama2.c tokenizer.bin validation", "[tokenizer]") {
  auto v = base_vocab();
  v.push_back({" ", -1});
  const auto bin = make_bin(v);
  const auto n = static_cast<std::int32_t>(v.size());
  CHECK(Llama2cTokenizer(bin, "full").vocab_size() == v.size());
  CHECK(Llama2cTokenizer(bin, "full", n).vocab_size() == v.size());
  CHECK(Llama2cTokenizer(bin, "prefix", 10).vocab_size() == 10);  // llama2.c reads only vocab_size tokens
  // Every truncation is an IoError when the count is known; without it only cuts at token
  // boundaries parse (into fewer tokens).
  std::size_t boundaries = 0;
  for (std::size_t cut = 0; cut < bin.size(); ++cut) {
    std::span<const std::byte> part(bin.data(), cut);
    CHECK_THROWS_AS(Llama2cTokenizer(part, "truncated.bin", n), fragile::IoError);
    try {
      Llama2cTokenizer t(part, "truncated.bin");
      ++boundaries;
      CHECK(t.vocab_size() < v.size());
    } catch (const fragile::IoError& e) {
      CHECK_THAT(e.what(), Catch::Contains("truncated.bin"));
    }
  }
  CHECK(boundaries == v.size() - 1);  // cuts after token 0 .. token n-2
  CHECK_THROWS_WITH(Llama2cTokenizer(bin, "big.bin", n + 1), Catch::Contains("big.bin"));
  CHECK_THROWS_AS(Llama2cTokenizer(bin, "neg.bin", -1), fragile::IoError);
  // A token longer than max_token_length, a negative length, a NUL inside a token.
  CHECK_THROWS_WITH(Llama2cTokenizer(make_bin({{"abc", 0}}, 2), "long.bin"), Catch::Contains("length 3"));
  auto neg = make_bin({{"abc", 0}});
  const std::int32_t minus = -7;
  std::memcpy(neg.data() + 8, &minus, 4);
  CHECK_THROWS_WITH(Llama2cTokenizer(neg, "neg.bin"), Catch::Contains("-7"));
  CHECK_THROWS_WITH(Llama2cTokenizer(make_bin({{std::string("a\0b", 3), 0}}), "nul.bin"), Catch::Contains("NUL"));
  CHECK_THROWS_AS(Llama2cTokenizer(make_bin({{"a", 0}}, 0x7fffffff), "huge.bin"), fragile::IoError);
  CHECK_THROWS_AS(Llama2cTokenizer(std::filesystem::path("/nonexistent/tokenizer.bin")), fragile::IoError);
  const auto dir = fragile::test::scratch_dir("llama2c_bin");
  std::ofstream(dir / "tokenizer.bin", std::ios::binary).write(reinterpret_cast<const char*>(bin.data()), 101);  // mid-token
  CHECK_THROWS_WITH(fragile::io::load_tokenizer(dir), Catch::Contains("tokenizer.bin"));
}

TEST_CASE("llama2.c merge loop matches the O(n^2) transcription on random text", "[tokenizer]") {
  auto v = base_vocab();
  v.push_back({" ", -1});
  // Pieces over a 4-letter alphabet with repeated scores, so ties and chains are common.
  const std::string alphabet = "ab c";
  fragile::Rng rng(7);
  for (int i = 0; i < 60; ++i) {
    std::string p;
    const auto len = 2 + rng.below(4);
    for (std::uint64_t k = 0; k < len; ++k) p += alphabet[rng.below(alphabet.size())];
    bool dup = false;
    for (const auto& q : v) dup = dup || q.text == p;
    if (!dup) v.push_back({p, -static_cast<float>(rng.below(8))});
  }
  const Llama2cTokenizer t(make_bin(v), "random vocab");
  for (int i = 0; i < 300; ++i) {
    std::string s;
    const auto len = rng.below(40);
    for (std::uint64_t k = 0; k < len; ++k) s += alphabet[rng.below(alphabet.size())];
    INFO(s);
    CHECK(t.encode(s, i % 2 == 0) == reference_encode(t, s, i % 2 == 0));
  }
}

TEST_CASE("stories260K tok512 on TinyStories text", "[tokenizer][data]") {
  FRAGILE_REQUIRE_DATA_FILE(bin, "models/stories260K/tok512.bin");
  FRAGILE_REQUIRE_DATA_FILE(text_path, "text/tinystories/valid_0001-0500.txt");
  const Llama2cTokenizer t(bin, 512);
  CHECK(t.vocab_size() == 512);
  const auto any = fragile::io::load_tokenizer(bin);
  REQUIRE(any.get_if<Llama2cTokenizer>() != nullptr);
  CHECK(any.bos_id() == 1);
  const std::string text = fragile::test::read_all(text_path);
  std::size_t stories = 0, tokens = 0, bytes = 0;
  for (std::size_t pos = 0; pos < text.size() && stories < 40;) {
    auto end = text.find("<|endoftext|>", pos);
    if (end == std::string::npos) end = text.size();
    std::string story = text.substr(pos, end - pos);
    pos = end + 13;
    while (!story.empty() && (story.front() == '\n' || story.front() == ' ')) story.erase(0, 1);
    while (!story.empty() && story.back() == '\n') story.pop_back();
    if (story.empty()) continue;
    ++stories;
    const auto ids = t.encode(story, true);
    CHECK(ids.front() == 1);
    CHECK(t.decode(ids) == story);
    if (stories <= 5) CHECK(ids == reference_encode(t, story, true));
    tokens += ids.size();
    bytes += story.size();
  }
  CHECK(stories == 40);
  // A 512-piece vocabulary compresses English to roughly 2-3 bytes per token.
  const double bytes_per_token = static_cast<double>(bytes) / static_cast<double>(tokens);
  CHECK(bytes_per_token > 1.8);
  CHECK(bytes_per_token < 3.5);
  // The pieces themselves: "Once upon a time" starts most stories.
  const auto once = t.encode("Once upon a time", true);
  CHECK(once.size() < 12);
  CHECK(t.decode(once) == "Once upon a time");
}
