// libFuzzer target for the llama2.c checkpoint reader: arbitrary bytes written to a file and
// mapped as a v0 checkpoint. Only fragile::Error may escape; another exception, a crash or a
// sanitizer report is a finding. The reader maps a path (there is no in-memory entry point), so
// each input goes through one scratch file per process. A checkpoint that is accepted must
// promise what the runtime relies on: the arrays tile the file after the header, in bounds, and
// every weight reads back as f32. Seeds: tests/fuzz/corpus/llama2c/ (tools/make_fuzz_corpus.py).
//   build/fuzz/tests/fuzz/fuzz_llama2c -max_total_time=60 tests/fuzz/corpus/llama2c
#include "fuzz_support.hpp"

#include <fragile/io/llama2c.hpp>

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

using fragile::fuzz::check;
using fragile::fuzz::scratch_path;
using fragile::fuzz::write_file;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto& path = scratch_path("llama2c", ".bin");
  write_file(path, data, size);
  try {
    const auto ck = fragile::io::read_llama2c(path);
    const auto& c = ck.config;
    check(c.rope_style == fragile::model::RopeStyle::kInterleaved);
    check(c.q_dim() == c.hidden_size && c.head_dim * c.num_attention_heads == c.hidden_size);
    // 9 arrays per layer, the embedding, the final norm and (when unshared) the classifier.
    const std::size_t tensors = 9 * c.num_hidden_layers + 2 + (c.tie_word_embeddings ? 0 : 1);
    check(ck.weights.size() == tensors && ck.weights.file_count() == 1);
    std::size_t bytes = 7 * sizeof(std::int32_t) + c.max_position_embeddings * c.head_dim * 4;
    for (const auto& name : ck.weights.names()) {
      const auto& info = ck.weights.info(name);
      check(info.offset + info.nbytes <= size && info.nbytes == info.numel() * sizeof(float));
      bytes += info.nbytes;
      try {
        (void)ck.weights.load_f32(name);  // NaN/Inf bytes are a NumericError naming the tensor
      } catch (const fragile::NumericError&) {
      }
    }
    check(bytes == size);
  } catch (const fragile::Error&) {
  }
  return 0;
}
