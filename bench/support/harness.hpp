// Benchmark templates: benchmark a new policy over the weight shapes of real models in one line.
//
//   template <class Shape> void BM_my_quantizer(benchmark::State& state) {
//     auto w = fragile::bench::random_matrix(Shape::rows, Shape::cols);   // (out, in)
//     for (auto _ : state) benchmark::DoNotOptimize(my_quantize(w));
//     fragile::bench::set_matrix_counters(state, Shape::rows, Shape::cols);
//   }
//   FRAGILE_BENCHMARK_MODEL_SHAPES(BM_my_quantizer);
#pragma once

#include "fragile/core/rng.hpp"
#include "fragile/model/config.hpp"

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <vector>

namespace fragile::bench {

/// A linear layer's weight shape (out_features x in_features) taken from a real model.
template <std::size_t Rows, std::size_t Cols>
struct Shape {
  static constexpr std::size_t rows = Rows;
  static constexpr std::size_t cols = Cols;
};

using Qwen05_Attn = Shape<896, 896>;         // Qwen2.5-0.5B q_proj / o_proj
using Qwen05_Mlp = Shape<4864, 896>;         // Qwen2.5-0.5B gate_proj / up_proj (896 -> 4864)
using Qwen05_Down = Shape<896, 4864>;        // Qwen2.5-0.5B down_proj
using Llama7B_Attn = Shape<4096, 4096>;      // Llama-2-7B q/k/v/o_proj
using Llama7B_Mlp = Shape<11008, 4096>;      // Llama-2-7B gate_proj / up_proj
using Llama7B_Down = Shape<4096, 11008>;     // Llama-2-7B down_proj

/// Qwen2.5-0.5B's configuration (24 blocks; callers that want fewer set num_hidden_layers).
inline model::ModelConfig qwen05_config() {
  model::ModelConfig c;
  c.architecture = model::Architecture::kQwen2;
  c.hidden_size = 896;
  c.intermediate_size = 4864;
  c.num_hidden_layers = 24;
  c.num_attention_heads = 14;
  c.num_key_value_heads = 2;
  c.head_dim = 64;
  c.vocab_size = 151936;
  c.max_position_embeddings = 32768;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 1000000.0;
  c.tie_word_embeddings = true;
  c.attention_bias = true;
  return c;
}

/// Row-major (rows x cols) matrix with N(0, 0.02^2) entries (typical LLM weight scale).
inline std::vector<float> random_matrix(std::size_t rows, std::size_t cols, std::uint64_t seed = 1) {
  Rng rng(seed);
  std::vector<float> m(rows * cols);
  for (auto& v : m) v = static_cast<float>(rng.normal(0.0, 0.02));
  return m;
}

/// Reports weights/s and bytes/s of f32 weights processed per iteration.
inline void set_matrix_counters(benchmark::State& state, std::size_t rows, std::size_t cols) {
  const auto n = static_cast<double>(rows * cols);
  state.counters["weights/s"] =
      benchmark::Counter(n * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(rows * cols * sizeof(float)));
}

/// ../shared/data (or $FRAGILE_DATA_DIR) when present.
inline std::optional<std::filesystem::path> data_dir() {
  std::filesystem::path dir = FRAGILE_DATA_DIR_DEFAULT;
  if (const char* env = std::getenv("FRAGILE_DATA_DIR"); env && *env) dir = env;
  if (!std::filesystem::is_directory(dir)) return std::nullopt;
  return dir;
}

}  // namespace fragile::bench

/// Registers BM<Shape> for the attention and MLP shapes of Qwen2.5-0.5B and Llama-2-7B.
#define FRAGILE_BENCHMARK_MODEL_SHAPES(BM)                                     \
  BENCHMARK_TEMPLATE(BM, ::fragile::bench::Qwen05_Attn)->Unit(benchmark::kMillisecond);  \
  BENCHMARK_TEMPLATE(BM, ::fragile::bench::Qwen05_Mlp)->Unit(benchmark::kMillisecond);   \
  BENCHMARK_TEMPLATE(BM, ::fragile::bench::Llama7B_Attn)->Unit(benchmark::kMillisecond); \
  BENCHMARK_TEMPLATE(BM, ::fragile::bench::Llama7B_Mlp)->Unit(benchmark::kMillisecond)
