// Cost of a fragility-oracle sweep against one evaluation: a RestoreOne sweep must cost
// (layers + 1) modified-model evaluations and nothing more. On stories260K (../shared/data,
// RTN 3-bit group 32, GPTQ windows of 128 tokens from TinyStories) when present, else on a small
// random llama2.c-shaped model:
//   BM_one_evaluation   eval::perplexity of the all-quantized model (weight overrides)
//   BM_reference_evaluation[_kl]  the oracle's unit: eval::divergence against a reference made
//                       once, PPL only [with KL and top-1]
//   BM_restore_one      the full RestoreOne sweep, PPL only
//   BM_restore_one_kl   the same with KL and top-1 (one extra LM-head pass over the FP hidden
//                       states per evaluation)
// Counters: evaluations, per_eval_ratio = sweep time / (layers + 1) / eval::perplexity time, and
// per_unit_ratio = the same over the oracle's unit (reference_evaluation[_kl]), both measured in
// the same process just before the sweep; ~1.0 means nothing but evaluations (the sweep also
// makes its FP reference: one forward, +1/(layers+1)). The machine is shared: one thread and
// the median of repetitions give steady figures.
//   OMP_NUM_THREADS=1 build/<dir>/bench/bench_sensitivity --benchmark_filter=oracle \
//     --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
#include "support/harness.hpp"

#include <fragile/backend/cpu.hpp>
#include <fragile/data/windows.hpp>
#include <fragile/eval/perplexity.hpp>
#include <fragile/io/llama2c.hpp>
#include <fragile/io/text.hpp>
#include <fragile/io/tokenizer/llama2c_tokenizer.hpp>
#include <fragile/quant/rtn.hpp>
#include <fragile/sensitivity/oracle.hpp>

#include <benchmark/benchmark.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace {

using namespace fragile;

constexpr std::size_t kSeqlen = 128;
constexpr std::size_t kTokens = 4 * kSeqlen;
constexpr std::size_t kBatch = 4;

struct Setup {
  std::unique_ptr<model::Transformer<cpu>> model;
  std::vector<data::Window> windows;
  std::vector<MatrixF> quantized;
  std::string source;
};

// A random model of stories260K's shape (dim 64, 5 layers, 8 heads / 4 kv heads, hidden 172,
// vocab 512) when the shared data is absent.
std::unique_ptr<model::Transformer<cpu>> random_model() {
  model::ModelConfig c;
  c.hidden_size = 64;
  c.intermediate_size = 172;
  c.num_hidden_layers = 5;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 4;
  c.head_dim = 8;
  c.vocab_size = 512;
  c.max_position_embeddings = 512;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = true;
  model::NamedTensors w;
  Rng rng(3);
  auto add = [&](const std::string& name, std::size_t n, double sd, double mean) {
    auto& v = w[name];
    v.resize(n);
    for (auto& x : v) x = static_cast<float>(mean + sd * rng.normal());
  };
  add("model.embed_tokens.weight", c.vocab_size * c.hidden_size, 0.1, 0.0);
  add("model.norm.weight", c.hidden_size, 0.0, 1.0);
  for (std::size_t i = 0; i < c.num_hidden_layers; ++i) {
    add(fmt::format("model.layers.{}.input_layernorm.weight", i), c.hidden_size, 0.0, 1.0);
    add(fmt::format("model.layers.{}.post_attention_layernorm.weight", i), c.hidden_size, 0.0, 1.0);
    for (auto k : model::kAllLinearKinds) {
      const auto [out, in] = model::linear_shape(c, k);
      add(model::linear_name(i, k) + ".weight", out * in, 0.1, 0.0);
    }
  }
  return std::make_unique<model::Transformer<cpu>>(c, std::move(w));
}

const Setup& setup() {
  static const Setup s = [] {
    Setup s;
    std::vector<data::TokenId> ids;
    const auto dir = bench::data_dir();
    const auto model_path = dir ? *dir / "models/stories260K/stories260K.bin" : std::filesystem::path();
    if (dir && std::filesystem::exists(model_path)) {
      auto ckpt = io::read_llama2c(model_path);
      s.model = std::make_unique<model::Transformer<cpu>>(ckpt.config, ckpt.weights);
      const io::Llama2cTokenizer tok(*dir / "models/stories260K/tok512.bin");
      for (const auto& story : io::read_tinystories(*dir / "text/tinystories/valid_0001-0500.txt")) {
        const auto t = tok.encode(story, true);
        ids.insert(ids.end(), t.begin(), t.end());
        if (ids.size() >= kTokens) break;
      }
      s.source = "stories260K";
    } else {
      s.model = random_model();
      Rng rng(9);
      ids.resize(kTokens);
      for (auto& t : ids) t = static_cast<data::TokenId>(rng.below(512));
      s.source = "random stories260K-shaped model";
    }
    s.windows = data::gptq_eval_windows(ids, kSeqlen, kTokens);
    for (const auto& li : s.model->linears()) {
      const Eigen::Map<const MatrixF> w(s.model->weight(li.index).data(),
                                        static_cast<Eigen::Index>(li.out_features),
                                        static_cast<Eigen::Index>(li.in_features));
      s.quantized.push_back(quant::rtn_quantize(w, {.bits = 3, .group_size = 32}).dequantize());
    }
    return s;
  }();
  return s;
}

model::WeightOverrides all_quantized(const Setup& s) {
  auto ov = s.model->make_overrides();
  for (const auto& li : s.model->linears())
    ov.set(li.index,
           std::span<const float>(s.quantized[li.index].data(),
                                  static_cast<std::size_t>(s.quantized[li.index].size())),
           li.out_features, li.in_features);
  return ov;
}

double one_evaluation(const Setup& s, const model::WeightOverrides& ov) {
  return eval::perplexity(*s.model, s.windows, {.batch_size = kBatch, .overrides = &ov}).perplexity;
}

/// Mean seconds of fn() over `reps` (after one warm-up).
template <class Fn>
double mean_seconds(Fn&& fn, int reps) {
  fn();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
}

void BM_one_evaluation(benchmark::State& state) {
  const Setup& s = setup();
  state.SetLabel(s.source);
  const auto ov = all_quantized(s);
  for (auto _ : state) benchmark::DoNotOptimize(one_evaluation(s, ov));
  state.counters["tokens"] = static_cast<double>(data::count_targets(s.windows));
}

// The oracle's unit of work: one modified forward against a reference made once.
void reference_evaluation(benchmark::State& state, bool kl) {
  const Setup& s = setup();
  state.SetLabel(s.source);
  const auto ov = all_quantized(s);
  const auto ref = eval::make_reference(*s.model, s.windows, {.batch_size = kBatch});
  for (auto _ : state)
    benchmark::DoNotOptimize(eval::divergence(*s.model, s.windows, ref, &ov, {.divergence = kl}));
}
void BM_reference_evaluation(benchmark::State& state) { reference_evaluation(state, false); }
void BM_reference_evaluation_kl(benchmark::State& state) { reference_evaluation(state, true); }

void restore_one_sweep(benchmark::State& state, bool kl) {
  const Setup& s = setup();
  state.SetLabel(s.source);
  sensitivity::OracleOptions<cpu> o;
  o.bits_label = "rtn3g32";
  o.batch_size = kBatch;
  o.divergence = kl;
  o.progress = nullptr;
  // The FP reference is made once per sweep (shared sweeps pass it in); it is part of the cost.
  std::size_t evaluations = 0, fp = 0;
  double sweep_seconds = 0.0;
  const auto ov = all_quantized(s);
  const double one = mean_seconds([&] { benchmark::DoNotOptimize(one_evaluation(s, ov)); }, 10);
  const auto ref = eval::make_reference(*s.model, s.windows, {.batch_size = kBatch});
  const double unit = mean_seconds([&] {
    benchmark::DoNotOptimize(eval::divergence(*s.model, s.windows, ref, &ov, {.divergence = kl}));
  }, 10);
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = sensitivity::restore_one(*s.model, s.windows, std::span<const MatrixF>(s.quantized), o);
    sweep_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    evaluations = r.evaluations;
    fp = r.fp_evaluations;
    benchmark::DoNotOptimize(r.rows.data());
  }
  const auto layers = static_cast<double>(s.model->linears().size());
  state.counters["evaluations"] = static_cast<double>(evaluations);
  state.counters["fp_evaluations"] = static_cast<double>(fp);
  state.counters["one_eval_ms"] = 1e3 * one;
  const double per_sweep = sweep_seconds / static_cast<double>(state.iterations());
  state.counters["per_eval_ratio"] = per_sweep / (layers + 1.0) / one;
  state.counters["per_unit_ratio"] = per_sweep / (layers + 1.0) / unit;
}

void BM_restore_one(benchmark::State& state) { restore_one_sweep(state, false); }
void BM_restore_one_kl(benchmark::State& state) { restore_one_sweep(state, true); }

}  // namespace

BENCHMARK(BM_one_evaluation)->Name("oracle/one_evaluation")->Unit(benchmark::kMillisecond);
BENCHMARK(BM_reference_evaluation)->Name("oracle/reference_evaluation")->Unit(benchmark::kMillisecond);
BENCHMARK(BM_reference_evaluation_kl)->Name("oracle/reference_evaluation_kl")->Unit(benchmark::kMillisecond);
BENCHMARK(BM_restore_one)->Name("oracle/restore_one")->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_restore_one_kl)->Name("oracle/restore_one_kl")->Unit(benchmark::kMillisecond)->Iterations(3);
