// libFuzzer target for the tokenizers: arbitrary bytes into (0) byte-level BPE encode with added
// tokens, (1) encode_ordinary, (2) the llama2.c tokenizer.bin parser followed by encode/decode,
// (3) the tokenizer.json reader. Only fragile::Error may escape; anything else (a crash, a
// sanitizer report, another exception, a failed round trip) is a finding. Seeds, one or more per
// mode ('0'..'3' as the first byte): tests/fuzz/corpus/tokenizer/ (tools/make_fuzz_corpus.py).
//   build/fuzz/tests/fuzz/fuzz_tokenizer -max_total_time=60 tests/fuzz/corpus/tokenizer
#include <fragile/io/tokenizer/tokenizer.hpp>

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace {

using fragile::io::ByteLevelBpeTokenizer;

// 256 byte symbols plus a few merges that chain (" t", " th", " the", "in", "ing", ...) and
// special tokens that share prefixes, so the fuzzer reaches merges and longest-match splitting.
const ByteLevelBpeTokenizer& small_bpe() {
  static const ByteLevelBpeTokenizer tok = [] {
    ByteLevelBpeTokenizer::Vocab vocab;
    for (int b = 0; b < 256; ++b)
      vocab.emplace_back(fragile::io::bytes_to_symbols(std::string(1, static_cast<char>(b))), b);
    const std::pair<const char*, const char*> raw[] = {
        {" ", "t"}, {" t", "h"}, {" th", "e"}, {"i", "n"}, {"in", "g"}, {"e", "r"}, {" ", " "},
        {"  ", "  "}, {"\n", "\n"}, {"\xC3", "\xA9"}, {"1", "2"}, {"'", "s"}, {"a", "a"}, {"aa", "aa"}};
    ByteLevelBpeTokenizer::Merges merges;
    std::int32_t next = 256;
    for (const auto& [a, b] : raw) {
      const std::string sa = fragile::io::bytes_to_symbols(a), sb = fragile::io::bytes_to_symbols(b);
      merges.emplace_back(sa, sb);
      vocab.emplace_back(sa + sb, next++);
    }
    ByteLevelBpeTokenizer::Options o;
    o.pattern = std::string(fragile::io::kQwen2Pattern);
    o.added_tokens = {{"<|end|>", 400, true}, {"<|end|>x", 401, true}, {"<", 402, false}};
    return ByteLevelBpeTokenizer(vocab, merges, std::move(o), "fuzz vocab");
  }();
  return tok;
}

void check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const int mode = data[0] % 4;
  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    switch (mode) {
      case 0:
      case 1: {
        const auto& tok = small_bpe();
        // The whole input (usually an ArgumentError for bad UTF-8), then its valid prefix.
        try {
          (void)tok.encode(input);
        } catch (const fragile::Error&) {
        }
        const auto bad = fragile::io::find_invalid_utf8(input);
        const auto text = input.substr(0, bad.value_or(input.size()));
        const auto ids = mode == 0 ? tok.encode(text) : tok.encode_ordinary(text);
        check(tok.decode(ids) == text);
        break;
      }
      case 2: {
        const fragile::io::Llama2cTokenizer tok(
            std::span<const std::byte>(reinterpret_cast<const std::byte*>(data + 1), size - 1),
            "fuzz tokenizer.bin");
        for (const char* text : {"", "a b", "héllo\t€ 12"}) {
          const auto ids = tok.encode(text, true, true);
          (void)tok.decode(ids);
        }
        break;
      }
      case 3: {
        const auto j = nlohmann::json::parse(input, nullptr, /*allow_exceptions=*/false);
        if (j.is_discarded()) break;
        const auto tok = ByteLevelBpeTokenizer::from_tokenizer_json(j, "fuzz tokenizer.json");
        (void)tok.decode(tok.encode("Hello, world! 123 <|end|>"));
        break;
      }
    }
  } catch (const fragile::Error&) {
  }
  return 0;
}
