// Byte-level BPE on hand-checkable vocabularies built in the test, tokenizer.json parsing, the
// PCRE2 wrapper, and bad input.
#include "support/test_data.hpp"
#include "tokenizer/vectors.hpp"

#include <fragile/io/tokenizer/tokenizer.hpp>

#include <nlohmann/json.hpp>

#include <fstream>

using fragile::io::ByteLevelBpeTokenizer;
using fragile::io::PreTokenizerPreset;
using fragile::io::Regex;
using Ids = std::vector<std::int32_t>;

namespace {

// 256 byte symbols with ids 0..255 in byte order, then the given merges with ids 256, 257, ...
ByteLevelBpeTokenizer tiny(const std::vector<std::pair<std::string, std::string>>& merges_raw,
                           ByteLevelBpeTokenizer::Options o = {}) {
  ByteLevelBpeTokenizer::Vocab vocab;
  for (int b = 0; b < 256; ++b)
    vocab.emplace_back(fragile::io::bytes_to_symbols(std::string(1, static_cast<char>(b))), b);
  ByteLevelBpeTokenizer::Merges merges;
  std::int32_t next = 256;
  for (const auto& [a, b] : merges_raw) {
    merges.emplace_back(fragile::io::bytes_to_symbols(a), fragile::io::bytes_to_symbols(b));
    vocab.emplace_back(fragile::io::bytes_to_symbols(a + b), next++);
  }
  return ByteLevelBpeTokenizer(vocab, merges, std::move(o), "tiny vocab");
}

std::vector<std::string> split_all(const Regex& re, std::string_view text) {
  std::vector<std::string> pieces;
  re.split(text, [&](std::string_view p, bool) { pieces.emplace_back(p); });
  return pieces;
}

void write_file(const std::filesystem::path& p, std::string_view bytes) {
  std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

TEST_CASE("GPT-2 byte to code point map", "[tokenizer]") {
  const auto& m = fragile::io::byte_to_code_point();
  CHECK(m['!'] == '!');
  CHECK(m[' '] == 0x120);   // 'Ġ'
  CHECK(m['\n'] == 0x10A);  // 'Ċ'
  CHECK(m[0] == 0x100);
  CHECK(m[0xAD] == 0x143);  // soft hyphen is remapped
  CHECK(m[0xFF] == 0xFF);
  for (int b = 0; b < 256; ++b) CHECK(fragile::io::code_point_to_byte(m[b]) == b);
  CHECK(fragile::io::bytes_to_symbols(" a\n") == "\xC4\xA0" "a" "\xC4\x8A");
}

TEST_CASE("Regex wraps PCRE2 with Unicode classes", "[tokenizer]") {
  const Regex gpt2(std::string(fragile::io::kGpt2Pattern));
  CHECK(split_all(gpt2, "Hello world's  3.14 Äpfel\n\n") ==
        std::vector<std::string>{"Hello", " world", "'s", " ", " 3", ".", "14", " Äpfel", "\n\n"});
  const Regex qwen(std::string(fragile::io::kQwen2Pattern));
  CHECK(split_all(qwen, "12345 I'LL") == std::vector<std::string>{"1", "2", "3", "4", "5", " I", "'LL"});
  const Regex llama3(std::string(fragile::io::kLlama3Pattern));
  CHECK(split_all(llama3, "12345") == std::vector<std::string>{"123", "45"});
  // Text between matches is reported too, so the pieces always concatenate to the input.
  const Regex digits("\\p{N}+");
  std::vector<std::pair<std::string, bool>> parts;
  digits.split("ab12cd٣4", [&](std::string_view p, bool m) { parts.emplace_back(p, m); });
  CHECK(parts == std::vector<std::pair<std::string, bool>>{{"ab", false}, {"12", true}, {"cd", false}, {"٣4", true}});
  // An empty match must not loop forever.
  CHECK(split_all(Regex("x*"), "ab") == std::vector<std::string>{"a", "b"});
  CHECK_THROWS_AS(Regex("(unclosed"), fragile::ConfigError);
  CHECK_THROWS_WITH(Regex("a{2,1}"), Catch::Contains("a{2,1}"));
}

TEST_CASE("BPE merges by rank, leftmost first", "[tokenizer]") {
  ByteLevelBpeTokenizer::Options o;
  o.pattern.clear();  // no pre-tokenizer: the whole text is one piece
  SECTION("lower rank wins over position") {
    const auto t = tiny({{"b", "c"}, {"a", "b"}}, o);  // bc = 256, ab = 257
    CHECK(t.encode("abc") == Ids{'a', 256});
    CHECK(t.encode("abab") == Ids{257, 257});
  }
  SECTION("equal pairs merge left to right") {
    const auto t = tiny({{"a", "a"}}, o);
    CHECK(t.encode("aaa") == Ids{256, 'a'});
    CHECK(t.encode("aaaa") == Ids{256, 256});
  }
  SECTION("merges chain") {
    const auto t = tiny({{"a", "b"}, {"ab", "c"}, {"abc", "abc"}}, o);
    CHECK(t.encode("abcabc") == Ids{258});
    CHECK(t.encode("abcab") == Ids{257, 256});
    CHECK(t.decode(Ids{258, 'x'}) == "abcabcx");
  }
}

TEST_CASE("pre-tokenizer pieces are merged separately", "[tokenizer]") {
  const auto t = tiny({{" ", "a"}, {"a", "b"}});  // GPT-2 regex; " a" = 256, "ab" = 257
  // " ab" is one piece: " a" ranks first, so "b" is left alone.
  CHECK(t.encode("ab ab") == Ids{257, 256, 'b'});
  // "\n" and " " never join across the regex boundary.
  CHECK(t.encode("a\n a") == Ids{'a', '\n', 256});
  CHECK(t.decode(t.encode("ab ab")) == "ab ab");
  CHECK(t.encode("") == Ids{});
  // Multi-byte characters fall back to their bytes.
  CHECK(t.encode("é") == Ids{0xC3, 0xA9});
  CHECK(t.decode(Ids{0xC3}) == "\xC3");  // partial UTF-8 is allowed out of decode
}

TEST_CASE("added tokens are split out first, longest match", "[tokenizer]") {
  ByteLevelBpeTokenizer::Options o;
  o.added_tokens = {{"<|a|>", 300, true}, {"<|a|>x", 301, true}, {"<", 302, false}};
  const auto t = tiny({{"a", "b"}}, o);
  CHECK(t.encode("ab<|a|>xab") == Ids{256, 301, 256});
  CHECK(t.encode("<|a|>ab<|a|") == Ids{300, 256, 302, '|', 'a', '|'});
  CHECK(t.encode_ordinary("<|a|>") == Ids{'<', '|', 'a', '|', '>'});
  CHECK(t.decode(Ids{300, 256}) == "<|a|>ab");
  CHECK(t.token_id("<|a|>x") == 301);
  CHECK(t.token_id("ab") == 256);
  CHECK_FALSE(t.token_id("abc").has_value());
  CHECK(t.vocab_size() == 303);
  ByteLevelBpeTokenizer::Options bad;
  bad.added_tokens = {{"\xC3", 300, true}};  // half of "é": would split "é" in two
  CHECK_THROWS_WITH(tiny({}, bad), Catch::Contains("not valid UTF-8"));
}

TEST_CASE("tokenizer.json: merges in both forms, Split + ByteLevel, ignore_merges", "[tokenizer]") {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[fragile::io::bytes_to_symbols(std::string(1, static_cast<char>(b)))] = b;
  vocab["ab"] = 256;
  vocab["abc"] = 257;
  vocab["cd"] = 258;  // no merge makes "cd": only ignore_merges can produce it
  nlohmann::json j = {
      {"version", "1.0"},
      {"added_tokens", {{{"id", 259}, {"content", "<|end|>"}, {"special", true}}}},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", "\\p{L}+|\\s+"}}}, {"behavior", "Isolated"}, {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"vocab", vocab},
        {"merges", {"a b", nlohmann::json::array({"ab", "c"})}}}}};
  const auto dir = fragile::test::scratch_dir("tokenizer_json");
  write_file(dir / "tokenizer.json", j.dump());
  const auto t = ByteLevelBpeTokenizer::from_tokenizer_json(dir / "tokenizer.json");
  CHECK(t.normalization() == fragile::io::Normalization::kNfc);
  CHECK(t.pattern() == "\\p{L}+|\\s+");
  CHECK(t.merge_count() == 2);
  CHECK(t.encode("abc cd<|end|>") == Ids{257, ' ', 'c', 'd', 259});

  j["model"]["ignore_merges"] = true;
  write_file(dir / "tokenizer.json", j.dump());
  const auto any = fragile::io::load_tokenizer(dir);  // finds tokenizer.json in the folder
  CHECK(any.encode("abc cd<|end|>") == Ids{257, ' ', 258, 259});
  CHECK(any.decode(any.encode("abc cd<|end|>")) == "abc cd<|end|>");
  CHECK_FALSE(any.bos_id().has_value());

  SECTION("a Split on a literal String, quoted even when it holds \\E") {
    auto lit = j;
    lit["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"String", "b\\Ec"}};
    const auto t2 = ByteLevelBpeTokenizer::from_tokenizer_json(lit, "literal split");
    // Pieces "a", "b\\Ec", "d": "a"+"b" never meet, so no merge applies.
    CHECK(t2.encode("ab\\Ecd") == Ids{'a', 'b', '\\', 'E', 'c', 'd'});
    CHECK(t.encode("ab\\Ecd") == Ids{256, '\\', 'E', 'c', 'd'});
  }
  SECTION("unsupported parts are ConfigErrors naming the file") {
    auto bad = j;
    bad["normalizer"] = {{"type", "NFKC"}};
    write_file(dir / "bad.json", bad.dump());
    CHECK_THROWS_AS(ByteLevelBpeTokenizer::from_tokenizer_json(dir / "bad.json"), fragile::ConfigError);
    CHECK_THROWS_WITH(ByteLevelBpeTokenizer::from_tokenizer_json(dir / "bad.json"), Catch::Contains("bad.json") && Catch::Contains("NFKC"));
    bad = j;
    bad["model"]["type"] = "WordPiece";
    write_file(dir / "bad.json", bad.dump());
    CHECK_THROWS_AS(ByteLevelBpeTokenizer::from_tokenizer_json(dir / "bad.json"), fragile::ConfigError);
    bad = j;
    bad["pre_tokenizer"] = {{"type", "Whitespace"}};
    write_file(dir / "bad.json", bad.dump());
    CHECK_THROWS_AS(ByteLevelBpeTokenizer::from_tokenizer_json(dir / "bad.json"), fragile::ConfigError);
    bad = j;
    bad["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(\\p{L}";
    write_file(dir / "bad.json", bad.dump());
    CHECK_THROWS_AS(ByteLevelBpeTokenizer::from_tokenizer_json(dir / "bad.json"), fragile::ConfigError);
  }
  SECTION("malformed content is an IoError naming the file") {
    write_file(dir / "bad.json", R"({"model": {"type": "BPE", "vocab": {"a": 0})");
    CHECK_THROWS_AS(ByteLevelBpeTokenizer::from_tokenizer_json(dir / "bad.json"), fragile::IoError);
    CHECK_THROWS_WITH(ByteLevelBpeTokenizer::from_tokenizer_json(dir / "bad.json"), Catch::Contains("invalid JSON"));
    auto bad = j;
    bad["model"]["merges"].push_back("a zz");
    write_file(dir / "bad.json", bad.dump());
    CHECK_THROWS_WITH(ByteLevelBpeTokenizer::from_tokenizer_json(dir / "bad.json"), Catch::Contains("merge 2"));
    bad = j;
    bad["model"]["merges"].push_back("abc");
    write_file(dir / "bad.json", bad.dump());
    CHECK_THROWS_AS(ByteLevelBpeTokenizer::from_tokenizer_json(dir / "bad.json"), fragile::IoError);
    bad = j;
    bad["model"]["vocab"]["zz"] = 3;  // id 3 already belongs to byte 3
    write_file(dir / "bad.json", bad.dump());
    CHECK_THROWS_WITH(ByteLevelBpeTokenizer::from_tokenizer_json(dir / "bad.json"), Catch::Contains("id 3"));
    bad = j;
    bad["model"]["vocab"]["zz"] = -5;
    write_file(dir / "bad.json", bad.dump());
    CHECK_THROWS_AS(ByteLevelBpeTokenizer::from_tokenizer_json(dir / "bad.json"), fragile::IoError);
    bad = j;
    bad["added_tokens"][0]["id"] = 5;  // clashes with byte 5
    write_file(dir / "bad.json", bad.dump());
    CHECK_THROWS_AS(ByteLevelBpeTokenizer::from_tokenizer_json(dir / "bad.json"), fragile::IoError);
    CHECK_THROWS_AS(ByteLevelBpeTokenizer::from_tokenizer_json(dir / "absent.json"), fragile::IoError);
  }
}

TEST_CASE("vocab.json + merges.txt, with and without #version", "[tokenizer]") {
  const auto dir = fragile::test::scratch_dir("vocab_merges");
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[fragile::io::bytes_to_symbols(std::string(1, static_cast<char>(b)))] = b;
  vocab["Ġt"] = 256;
  vocab["Ġthe"] = 257;
  vocab["he"] = 258;
  write_file(dir / "vocab.json", vocab.dump());
  for (const char* header : {"#version: 0.2\n", ""}) {
    write_file(dir / "merges.txt", std::string(header) + "Ġ t\r\nh e\n\nĠt he\n");
    const auto t = ByteLevelBpeTokenizer::from_vocab_merges(dir / "vocab.json", dir / "merges.txt", PreTokenizerPreset::kGpt2);
    CHECK(t.merge_count() == 3);
    CHECK(t.encode("the the") == Ids{'t', 258, 257});
  }
  write_file(dir / "merges.txt", "Ġ t\nh e x\n");
  CHECK_THROWS_WITH(ByteLevelBpeTokenizer::from_vocab_merges(dir / "vocab.json", dir / "merges.txt", PreTokenizerPreset::kGpt2),
                    Catch::Contains("merges.txt") && Catch::Contains("line") && Catch::Contains("2"));
  write_file(dir / "vocab.json", "[1, 2]");
  CHECK_THROWS_AS(ByteLevelBpeTokenizer::from_vocab_merges(dir / "vocab.json", dir / "merges.txt", PreTokenizerPreset::kGpt2), fragile::IoError);
}

TEST_CASE("invalid UTF-8 and unknown ids are ArgumentErrors", "[tokenizer]") {
  const auto t = tiny({{"a", "b"}});
  for (std::string bad : {std::string("a\xFF"), std::string("\xC3"), std::string("\xC0\xAF"),
                          std::string("\xED\xA0\x80"), std::string("\xF4\x90\x80\x80"), std::string("ok\x80")}) {
    CHECK_THROWS_AS(t.encode(bad), fragile::ArgumentError);
  }
  CHECK_THROWS_WITH(t.encode("ab\xFE"), Catch::Contains("offset 2"));
  CHECK_THROWS_AS(t.decode(Ids{257}), fragile::ArgumentError);
  CHECK_THROWS_AS(t.decode(Ids{-1}), fragile::ArgumentError);
  CHECK_THROWS_WITH(t.decode(Ids{1, 2, 999}), Catch::Contains("999") && Catch::Contains("position 2"));
  // A vocabulary without some byte cannot encode it.
  ByteLevelBpeTokenizer::Vocab v{{"a", 0}};
  const ByteLevelBpeTokenizer small(v, {}, {}, "one-token vocab");
  CHECK(small.encode("aa") == Ids{0, 0});
  CHECK_THROWS_WITH(small.encode("b"), Catch::Contains("0x62"));
}

TEST_CASE("qwen2 tokenizer.json form: vectors, special tokens, round trips", "[tokenizer][data]") {
  FRAGILE_REQUIRE_DATA_FILE(vocab_path, "tokenizers/qwen2/vocab.json");
  FRAGILE_REQUIRE_DATA_FILE(merges_path, "tokenizers/qwen2/merges.txt");
  FRAGILE_REQUIRE_DATA_FILE(inp, "tokenizers/test-vectors/ggml-vocab-qwen2.gguf.inp");
  FRAGILE_REQUIRE_DATA_FILE(out, "tokenizers/test-vectors/ggml-vocab-qwen2.gguf.out");
  // Assemble the tokenizer.json Qwen2 ships (merges in the [a, b] array form of tokenizers >= 0.20).
  nlohmann::json merges = nlohmann::json::array();
  {
    std::ifstream in(merges_path);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty() || line.rfind("#version", 0) == 0) continue;
      const auto sp = line.find(' ');
      merges.push_back({line.substr(0, sp), line.substr(sp + 1)});
    }
  }
  nlohmann::json j = {
      {"added_tokens",
       {{{"id", 151643}, {"content", "<|endoftext|>"}, {"special", true}},
        {{"id", 151644}, {"content", "<|im_start|>"}, {"special", true}},
        {{"id", 151645}, {"content", "<|im_end|>"}, {"special", true}}}},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", std::string(fragile::io::kQwen2Pattern)}}}, {"behavior", "Isolated"}, {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}}}}}},
      {"model", {{"type", "BPE"}, {"vocab", nlohmann::json::parse(fragile::test::read_all(vocab_path))}, {"merges", merges}}}};
  const auto t = ByteLevelBpeTokenizer::from_tokenizer_json(j, "qwen2 tokenizer.json");
  CHECK(t.vocab_size() == 151646);
  for (const auto& c : fragile::test::read_vocab_cases(inp, out)) {
    CHECK(t.encode(c.text) == c.ids);
    CHECK(t.decode(c.ids) == c.text);
  }
  CHECK(t.encode("<|im_start|>user\nHi<|im_end|>") == Ids{151644, 872, 198, 13048, 151645});
  CHECK(t.decode(Ids{151644, 872}) == "<|im_start|>user");
}
