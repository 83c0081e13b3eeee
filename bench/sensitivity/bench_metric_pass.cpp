// Cost of the sensitivity metric pass against one forward pass over the same tokens.
//   BM_*_forward        forward + NLL over the calibration windows (the unit of cost)
//   BM_*_forward_backward  forward + backward to every linear's g_l (the floor of any pass)
//   BM_*_pass_all       forward + backward + every metric at 4 bit widths (2, 3, 4, 8; RTN g32),
//                       model-sampled labels: D_l, its diagonal, FEO, Fisher trace, weight MSE,
//                       GPTQ H-diagonal and the per-window empirical Fisher diagonal
//   BM_*_pass_dl        the same without the per-window weight gradients (D_l, FEO, Fisher trace,
//                       H-diagonal, weight MSE)
// Models: stories260K from ../shared/data (skipped when absent), and a Qwen2.5-0.5B-shaped
// model with random weights cut to 4 blocks (GEMM-dominated layers; vocab 151936).
//   OMP_NUM_THREADS=2 build/<dir>/bench/bench_sensitivity --benchmark_filter=stories
#include "support/harness.hpp"

#include <fragile/backend/cpu.hpp>
#include <fragile/data/windows.hpp>
#include <fragile/io/load_model.hpp>
#include <fragile/quant/rtn.hpp>
#include <fragile/sensitivity/pass.hpp>

#include <benchmark/benchmark.h>

#include <cmath>
#include <memory>

namespace {

using namespace fragile;

struct Setup {
  std::unique_ptr<model::Transformer<cpu>> model;
  std::vector<model::TokenIds> tokens;
  std::vector<data::Window> windows;
  sensitivity::CandidateSet candidates;
};

void finish(Setup& s, std::size_t n, std::size_t T, std::uint64_t seed) {
  Rng rng(seed);
  const std::size_t V = s.model->config().vocab_size;
  for (std::size_t i = 0; i < n; ++i) {
    model::TokenIds w(T);
    for (auto& id : w) id = static_cast<std::int32_t>(rng.below(V));
    s.windows.push_back(data::Window{w, 0, i, 1, T});
    s.tokens.push_back(std::move(w));
  }
  const std::vector<int> bits{2, 3, 4, 8};
  quant::QuantSpec base;
  base.group_size = 32;
  s.candidates = sensitivity::quantize_candidates(*s.model, quant::Rtn{},
                                                  sensitivity::bit_options(bits, base), {},
                                                  {.progress = nullptr});
}

const Setup* stories() {
  static const std::unique_ptr<Setup> s = []() -> std::unique_ptr<Setup> {
    const auto dir = bench::data_dir();
    if (!dir) return nullptr;
    const auto path = *dir / "models/stories260K/stories260K.bin";
    if (!std::filesystem::exists(path)) return nullptr;
    auto out = std::make_unique<Setup>();
    const auto ckpt = io::load_model(path);
    out->model = std::make_unique<model::Transformer<cpu>>(ckpt.config, ckpt.weights);
    finish(*out, 8, 256, 3);  // 8 windows of 256 tokens: 2,048 calibration tokens
    return out;
  }();
  return s.get();
}

const Setup* qwen_shaped() {
  static const std::unique_ptr<Setup> s = [] {
    model::ModelConfig c = bench::qwen05_config();
    c.num_hidden_layers = 4;
    model::NamedTensors w;
    auto add = [&](const std::string& name, std::size_t n, float scale, float offset) {
      auto& v = w[name];
      v.resize(n);
      Rng rng = Rng(1).fork(w.size());
      const float a = scale * std::sqrt(3.0f);
      for (auto& x : v) x = offset + a * (2.0f * rng.uniform_f32() - 1.0f);
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
    auto out = std::make_unique<Setup>();
    out->model = std::make_unique<model::Transformer<cpu>>(c, std::move(w));
    finish(*out, 1, 512, 5);
    return out;
  }();
  return s.get();
}

void set_tokens(benchmark::State& state, const Setup& s) {
  std::size_t n = 0;
  for (const auto& w : s.tokens) n += w.size();
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(n * state.iterations()),
                                                  benchmark::Counter::kIsRate);
}

void run_forward(benchmark::State& state, const Setup* s) {
  if (!s) {
    state.SkipWithError("stories260K not found under ../shared/data");
    return;
  }
  for (auto _ : state) benchmark::DoNotOptimize(s->model->token_nll(s->tokens));
  set_tokens(state, *s);
}

void run_pass(benchmark::State& state, const Setup* s, sensitivity::StatNeeds needs) {
  if (!s) {
    state.SkipWithError("stories260K not found under ../shared/data");
    return;
  }
  sensitivity::MetricPassOptions opt;
  opt.needs = needs;
  opt.batch_size = s->windows.size();
  opt.progress = nullptr;
  for (auto _ : state)
    benchmark::DoNotOptimize(sensitivity::metric_pass(*s->model, s->windows, s->candidates, opt));
  set_tokens(state, *s);
}

/// Forward + backward delivering g to an observer that only touches it (the pass's floor).
struct GradientSink {
  double total = 0.0;
  model::CaptureNeeds needs() const { return {.g = true}; }
  void observe(const model::LayerBatch& c) { total += c.g.host()[0]; }
};

void run_backward(benchmark::State& state, const Setup* s) {
  if (!s) {
    state.SkipWithError("stories260K not found under ../shared/data");
    return;
  }
  GradientSink sink;
  model::CaptureOptions co;
  co.labels = model::LabelSource::kModelSample;
  co.batch_size = s->tokens.size();
  for (auto _ : state) benchmark::DoNotOptimize(s->model->capture(s->tokens, co, sink));
  set_tokens(state, *s);
}

constexpr auto kDl = sensitivity::needs_of<sensitivity::Visibility, sensitivity::VisibilityDiag,
                                           sensitivity::Feo, sensitivity::FisherTrace,
                                           sensitivity::HessianDiagProxy, sensitivity::WeightMse>();

void BM_stories_forward(benchmark::State& st) { run_forward(st, stories()); }
void BM_stories_forward_backward(benchmark::State& st) { run_backward(st, stories()); }
void BM_stories_pass_all(benchmark::State& st) { run_pass(st, stories(), sensitivity::kAllStats); }
void BM_stories_pass_dl(benchmark::State& st) { run_pass(st, stories(), kDl); }
void BM_qwen4_forward(benchmark::State& st) { run_forward(st, qwen_shaped()); }
void BM_qwen4_forward_backward(benchmark::State& st) { run_backward(st, qwen_shaped()); }
void BM_qwen4_pass_all(benchmark::State& st) { run_pass(st, qwen_shaped(), sensitivity::kAllStats); }
void BM_qwen4_pass_dl(benchmark::State& st) { run_pass(st, qwen_shaped(), kDl); }

BENCHMARK(BM_stories_forward)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_stories_forward_backward)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_stories_pass_all)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_stories_pass_dl)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_qwen4_forward)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
BENCHMARK(BM_qwen4_forward_backward)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
BENCHMARK(BM_qwen4_pass_all)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
BENCHMARK(BM_qwen4_pass_dl)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();

}  // namespace
