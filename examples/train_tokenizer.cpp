// train_tokenizer: trains a byte-level BPE tokenizer (io::BpeTrainer, GPT-2 pre-tokenizer) on a
// UTF-8 text file and writes a Hugging Face tokenizer.json; optionally encodes a second file
// with the written tokenizer.json (loaded back, as a user would) and writes its ids one per line.
// tools/check_bpe_trainer.py compares both against Hugging Face `tokenizers`.
#include <fragile/io/text.hpp>
#include <fragile/io/tokenizer/bpe_trainer.hpp>
#include <fragile/io/tokenizer/tokenizer.hpp>

#include <CLI/CLI.hpp>
#include <exception>
#include <fmt/format.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  CLI::App app{"train_tokenizer: byte-level BPE training to a Hugging Face tokenizer.json"};
  fs::path text, out = "tokenizer.json", encode, ids_out;
  fragile::io::BpeTrainerOptions o;
  o.vocab_size = 2048;
  app.add_option("--text", text, "training text (UTF-8)")->required();
  app.add_option("--vocab-size", o.vocab_size, "vocabulary size, special tokens included");
  app.add_option("--special", o.special_tokens, "special token (repeatable; ids 0, 1, ...)");
  app.add_option("--min-frequency", o.min_frequency, "pairs seen fewer times are not merged");
  app.add_flag("--add-prefix-space", o.add_prefix_space, "ByteLevel add_prefix_space");
  app.add_option("--out", out, "tokenizer.json to write");
  app.add_option("--encode", encode, "text to encode with the written tokenizer.json");
  app.add_option("--ids-out", ids_out, "file for the ids of --encode, one per line");
  CLI11_PARSE(app, argc, argv);
  try {
    fragile::require<fragile::ConfigError>(encode.empty() == ids_out.empty(),
                                           "--encode and --ids-out go together");
    const auto corpus = fragile::io::read_text_file(text);
    const auto t0 = Clock::now();
    fragile::io::BpeTrainer trainer(o);
    trainer.feed(corpus);
    const auto t1 = Clock::now();
    const auto trained = trainer.train();
    const auto t2 = Clock::now();
    trained.save(out);
    auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
    fmt::print("{}: {} bytes, {} distinct words counted in {:.2f} s; {} merges, vocab {} in {:.2f} s\n",
               text.string(), corpus.size(), trainer.distinct_words(), secs(t0, t1),
               trained.merges.size(), trained.vocab.size(), secs(t1, t2));
    fmt::print("wrote {}\n", out.string());
    if (!encode.empty()) {
      const auto tok = fragile::io::load_tokenizer(out);
      const auto held_out = fragile::io::read_text_file(encode);
      const auto ids = tok.encode(held_out);
      // The in-memory tokenizer and the one read from the file must agree.
      fragile::require<fragile::Error>(ids == trained.tokenizer().encode(held_out),
                                       "{}: ids differ from the in-memory tokenizer's",
                                       out.string());
      fragile::require<fragile::Error>(tok.decode(ids) == held_out,
                                       "{}: decode(encode(text)) differs from the text",
                                       encode.string());
      std::string lines;
      for (auto id : ids) lines += fmt::format("{}\n", id);
      fragile::io::write_atomically(ids_out, std::string_view(lines));
      fmt::print("{}: {} bytes -> {} tokens ({:.3f} bytes/token), ids in {}\n", encode.string(),
                 held_out.size(), ids.size(),
                 static_cast<double>(held_out.size()) / static_cast<double>(ids.size()),
                 ids_out.string());
    }
  } catch (const std::exception& e) {  // fragile::Error names the input
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
