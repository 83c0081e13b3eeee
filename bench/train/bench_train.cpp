// Training throughput: one optimiser step (forward, backward to every parameter, clipping,
// AdamW) of the embedded default model's shape (Llama family, hidden 128, 4 blocks, 4 heads,
// 2 KV heads, intermediate 352, vocab 1024, tied) on batches of 16 x 128 tokens. The peer is
// tools/bench_train_peer.py (transformers LlamaForCausalLM + torch.optim.AdamW, same shapes).
// items_per_second counts trained (predicted) tokens.
#include <fragile/backend/cpu.hpp>
#include <fragile/train/adamw.hpp>
#include <fragile/train/init.hpp>
#include <fragile/train/trainer.hpp>

#include <benchmark/benchmark.h>

#include <vector>

namespace {

using namespace fragile;

model::ModelConfig embedded_shape(std::size_t hidden, std::size_t layers, std::size_t inter) {
  model::ModelConfig c;
  c.hidden_size = hidden;
  c.num_hidden_layers = layers;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = hidden / 4;
  c.intermediate_size = inter;
  c.vocab_size = 1024;
  c.max_position_embeddings = 128;
  c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = true;
  return c;
}

void BM_train_step(benchmark::State& state) {
  const auto c = embedded_shape(static_cast<std::size_t>(state.range(0)), 4,
                                static_cast<std::size_t>(state.range(1)));
  const std::size_t B = 16, T = 128;
  model::Transformer<cpu> m(c, train::init_weights(c, 1));
  std::vector<data::TokenId> stream(200000);
  Rng rng(5);
  for (auto& t : stream) t = static_cast<data::TokenId>(rng.below(c.vocab_size));
  auto params = m.parameters();
  train::AdamW opt(params, {});
  auto grads = m.make_gradients();
  std::size_t step = 0;
  for (auto _ : state) {
    const auto batch = train::sample_batch(stream, T, B, 3, step++);
    grads.zero();
    benchmark::DoNotOptimize(m.accumulate_gradients(batch, grads));
    train::clip_gradients(grads, 1.0);
    opt.step(params, grads, 1e-3);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * B * (T - 1)));
}
BENCHMARK(BM_train_step)->Args({128, 352})->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
