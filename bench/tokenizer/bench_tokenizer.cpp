// Encoding speed of the byte-level BPE tokenizers on WikiText-2 raw test text (skipped when the
// data folder is absent). The label carries the id count and an FNV-1a hash of the ids (int32
// little endian) so that tools/bench_tokenizer_peer.py can check HF `tokenizers` gives the same.
#include "support/harness.hpp"

#include <fragile/io/tokenizer/tokenizer.hpp>

#include <fmt/format.h>

#include <fstream>
#include <memory>
#include <sstream>

namespace {

using fragile::io::ByteLevelBpeTokenizer;
using fragile::io::PreTokenizerPreset;

std::optional<std::string> wikitext() {
  auto dir = fragile::bench::data_dir();
  if (!dir) return std::nullopt;
  std::ifstream in(*dir / "text/wikitext-2-raw/wiki.test.raw", std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::uint64_t fnv1a(const std::vector<std::int32_t>& ids) {
  std::uint64_t h = 1469598103934665603ull;
  for (std::int32_t id : ids) {
    const auto u = static_cast<std::uint32_t>(id);
    for (int k = 0; k < 4; ++k) {
      h ^= (u >> (8 * k)) & 0xFFu;
      h *= 1099511628211ull;
    }
  }
  return h;
}

void bench_encode(benchmark::State& state, const char* folder, PreTokenizerPreset preset, bool cold) {
  const auto text = wikitext();
  const auto dir = fragile::bench::data_dir();
  if (!text || !dir || !std::filesystem::exists(*dir / "tokenizers" / folder / "vocab.json")) {
    state.SkipWithError("skipped: WikiText-2 raw or the tokenizer files are absent");
    return;
  }
  const auto tok = ByteLevelBpeTokenizer::from_vocab_merges(
      *dir / "tokenizers" / folder / "vocab.json", *dir / "tokenizers" / folder / "merges.txt", preset);
  std::vector<std::int32_t> ids;
  for (auto _ : state) {
    if (cold) {
      state.PauseTiming();
      tok.clear_cache();
      state.ResumeTiming();
    }
    ids = tok.encode(*text);
    benchmark::DoNotOptimize(ids.data());
  }
  const auto n = static_cast<double>(ids.size()) * static_cast<double>(state.iterations());
  state.counters["tokens/s"] = benchmark::Counter(n, benchmark::Counter::kIsRate);
  state.SetBytesProcessed(static_cast<std::int64_t>(text->size()) * state.iterations());
  state.SetLabel(fmt::format("ids={} fnv={:016x}", ids.size(), fnv1a(ids)));
}

// The text's lines encoded one by one (what HF's encode_batch(lines) does, on one thread).
void bench_encode_lines(benchmark::State& state, const char* folder, PreTokenizerPreset preset) {
  const auto text = wikitext();
  const auto dir = fragile::bench::data_dir();
  if (!text || !dir || !std::filesystem::exists(*dir / "tokenizers" / folder / "vocab.json")) {
    state.SkipWithError("skipped: WikiText-2 raw or the tokenizer files are absent");
    return;
  }
  const auto tok = ByteLevelBpeTokenizer::from_vocab_merges(
      *dir / "tokenizers" / folder / "vocab.json", *dir / "tokenizers" / folder / "merges.txt", preset);
  std::vector<std::string_view> lines;
  for (std::size_t pos = 0; pos <= text->size();) {
    auto end = text->find('\n', pos);
    if (end == std::string::npos) end = text->size();
    lines.emplace_back(text->data() + pos, end - pos);
    pos = end + 1;
  }
  std::size_t tokens = 0;
  for (auto _ : state) {
    tokens = 0;
    for (auto line : lines) tokens += tok.encode(line).size();
    benchmark::DoNotOptimize(tokens);
  }
  state.counters["tokens/s"] = benchmark::Counter(
      static_cast<double>(tokens) * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.SetLabel(fmt::format("lines={} ids={}", lines.size(), tokens));
}

}  // namespace

BENCHMARK_CAPTURE(bench_encode_lines, gpt2_wikitext2_lines, "gpt2", PreTokenizerPreset::kGpt2)
    ->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK_CAPTURE(bench_encode_lines, qwen2_wikitext2_lines, "qwen2", PreTokenizerPreset::kQwen2)
    ->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK_CAPTURE(bench_encode, gpt2_wikitext2, "gpt2", PreTokenizerPreset::kGpt2, false)
    ->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK_CAPTURE(bench_encode, qwen2_wikitext2, "qwen2", PreTokenizerPreset::kQwen2, false)
    ->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK_CAPTURE(bench_encode, gpt2_wikitext2_cold_cache, "gpt2", PreTokenizerPreset::kGpt2, true)
    ->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK_CAPTURE(bench_encode, qwen2_wikitext2_cold_cache, "qwen2", PreTokenizerPreset::kQwen2, true)
    ->Unit(benchmark::kMillisecond)->MinTime(2.0);
