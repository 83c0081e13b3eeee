// Transformer<cpu> throughput on a Qwen2.5-0.5B-shaped model with random weights (hidden 896,
// intermediate 4864, 24 layers, 14 heads / 2 kv heads, vocab 151936, tied embeddings), one
// window of T = 512 tokens:
//   BM_forward_nll       forward + chunked NLL (what perplexity evaluation runs)
//   BM_forward_backward  forward + loss + backward to every linear layer's g_l, delivered to an
//                        observer (what a D_l / Fisher capture pass runs)
//   BM_sgemm_2048        the CPU backend's GEMM on 2048 x 2048 x 2048: the peak the passes' GFLOP/s
//                        are read against
// Counters: tokens/s, GFLOP/s of the model's products (linears, LM head and attention; the
// backward counts its input-gradient products once more), peak RSS of the process (run one
// benchmark per process with --benchmark_filter to read its peak) and the f32 weight bytes.
// The PyTorch peer is tools/bench_runtime_peer.py (same shapes, same thread count).
//   OMP_NUM_THREADS=2 build/<dir>/bench/bench_model --benchmark_filter=BM_forward_nll
#include "support/harness.hpp"

#include <fragile/backend/cpu.hpp>
#include <fragile/model/transformer.hpp>

#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <cmath>
#include <memory>

namespace {

using namespace fragile;

constexpr std::size_t kT = 512;

std::size_t weight_count = 0;

const model::Transformer<cpu>& qwen05() {
  static const auto model = [] {
    const auto c = bench::qwen05_config();
    model::NamedTensors w;
    auto add = [&](const std::string& name, std::size_t n, float scale, float offset) {
      auto& v = w[name];
      v.resize(n);
      Rng rng = Rng(1).fork(w.size());
      const float a = scale * std::sqrt(3.0f);  // uniform with standard deviation `scale`
      for (auto& x : v) x = offset + a * (2.0f * rng.uniform_f32() - 1.0f);
      weight_count += n;
    };
    add("model.embed_tokens.weight", c.vocab_size * c.hidden_size, 0.02f, 0.0f);
    add("model.norm.weight", c.hidden_size, 0.0f, 1.0f);
    for (std::size_t i = 0; i < c.num_hidden_layers; ++i) {
      add(fmt::format("model.layers.{}.input_layernorm.weight", i), c.hidden_size, 0.0f, 1.0f);
      add(fmt::format("model.layers.{}.post_attention_layernorm.weight", i), c.hidden_size, 0.0f, 1.0f);
      for (auto k : model::kAllLinearKinds) {
        const auto [out, in] = model::linear_shape(c, k);
        add(model::linear_name(i, k) + ".weight", out * in, 0.02f, 0.0f);
        if (k == model::LinearKind::kQ || k == model::LinearKind::kK || k == model::LinearKind::kV)
          add(model::linear_name(i, k) + ".bias", out, 0.02f, 0.0f);
      }
    }
    return std::make_unique<model::Transformer<cpu>>(c, std::move(w));
  }();
  return *model;
}

std::vector<model::TokenIds> windows() {
  Rng rng(5);
  std::vector<model::TokenIds> w(1, model::TokenIds(kT));
  for (auto& id : w[0]) id = static_cast<std::int32_t>(rng.below(151936));
  return w;
}

/// Multiply-add flops of one forward over a causal window of kT tokens: the linear layers, the
/// LM head over every position, and attention's QK^T and AV.
double forward_flops() {
  const auto c = bench::qwen05_config();
  double linear = 0.0;
  for (auto k : model::kAllLinearKinds) {
    const auto [out, in] = model::linear_shape(c, k);
    linear += static_cast<double>(out * in);
  }
  const double T = static_cast<double>(kT), L = static_cast<double>(c.num_hidden_layers);
  const double attention = 4.0 * static_cast<double>(c.num_attention_heads * c.head_dim) *
                           (T * (T + 1.0) / 2.0);
  return 2.0 * T * (L * linear + static_cast<double>(c.vocab_size * c.hidden_size)) + L * attention;
}

void set_counters(benchmark::State& state, double flops_per_pass) {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(kT * state.iterations()),
                                                  benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] = benchmark::Counter(
      flops_per_pass * 1e-9 * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["peak_rss_MB"] = static_cast<double>(ru.ru_maxrss) / 1024.0;
  state.counters["weights_MB"] = static_cast<double>(weight_count * sizeof(float)) / (1024.0 * 1024.0);
}

void BM_forward_nll(benchmark::State& state) {
  const auto& m = qwen05();
  const auto w = windows();
  for (auto _ : state) benchmark::DoNotOptimize(m.token_nll(w));
  set_counters(state, forward_flops());
}
BENCHMARK(BM_forward_nll)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();

/// Touches every g_l (sum of squares, as a Fisher-trace consumer would).
struct GradientSink {
  double total = 0.0;
  model::CaptureNeeds needs() const { return {.g = true}; }
  void observe(const model::LayerBatch& c) {
    const std::size_t n = c.rows() * c.layer->out_features;
    const float* g = c.g.host().data();
    double s = 0.0;
    for (std::size_t i = 0; i < n; ++i) s += static_cast<double>(g[i]) * g[i];
    total += s;
  }
};

void BM_forward_backward(benchmark::State& state) {
  const auto& m = qwen05();
  const auto w = windows();
  GradientSink sink;
  for (auto _ : state) benchmark::DoNotOptimize(m.capture(w, {}, sink));
  set_counters(state, 2.0 * forward_flops());
}
BENCHMARK(BM_forward_backward)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();

void BM_sgemm_2048(benchmark::State& state) {
  constexpr std::size_t n = 2048;
  const auto a = bench::random_matrix(n, n, 1), b = bench::random_matrix(n, n, 2);
  std::vector<float> c(n * n);
  using Ops = backend::Ops<cpu>;
  for (auto _ : state) {
    Ops::gemm(backend::Trans::kN, backend::Trans::kN, n, n, n, 1.0f, a.data(), n, b.data(), n,
              0.0f, c.data(), n);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(
      2.0 * n * n * n * 1e-9 * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_sgemm_2048)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
