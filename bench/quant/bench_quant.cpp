// Quantizer throughput. RTN of a 4096 x 4096 f32 weight in GB/s of weights read, with this
// machine's memcpy bandwidth measured in the same binary (counter frac_of_memcpy; target >= 0.3).
// GPTQ (Hessian from 2048 tokens + quantization, 4-bit asymmetric, groups of 128) on
// Llama-2-7B's attention shape and Qwen2.5-0.5B's shapes; with FRAGILE_GPTQ_REFERENCE_JSON
// pointing at the output of tools/gptq_reference_bench.py (the reference PyTorch GPTQ on the
// same CPU), counter x_reference = our seconds / reference seconds (target <= 1.0).
#include "support/harness.hpp"

#include <fragile/quant/gptq.hpp>
#include <fragile/quant/rtn.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace {

using fragile::MatrixF;
namespace fq = fragile::quant;

/// memcpy bandwidth (bytes read per second) on a 64 MiB buffer, best of 5.
double memcpy_bytes_per_second() {
  static const double rate = [] {
    const std::size_t n = std::size_t{64} << 20;
    std::vector<char> a(n, 1), b(n, 2);
    double best = 1e30;
    for (int i = 0; i < 5; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      std::memcpy(b.data(), a.data(), n);
      benchmark::DoNotOptimize(b.data());
      benchmark::ClobberMemory();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return static_cast<double>(n) / best;
  }();
  return rate;
}

void BM_memcpy_64MiB(benchmark::State& state) {
  const std::size_t n = std::size_t{64} << 20;
  std::vector<char> a(n, 1), b(n, 2);
  for (auto _ : state) {
    std::memcpy(b.data(), a.data(), n);
    benchmark::DoNotOptimize(b.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(n));
}
BENCHMARK(BM_memcpy_64MiB)->Unit(benchmark::kMillisecond)->UseRealTime();

template <class Shape>
void BM_rtn(benchmark::State& state) {
  const auto data = fragile::bench::random_matrix(Shape::rows, Shape::cols);
  const auto w = fragile::as_matrix(data.data(), Shape::rows, Shape::cols);
  fq::QuantSpec spec;
  spec.bits = static_cast<int>(state.range(0));
  spec.group_size = 128;
  const double memcpy_rate = memcpy_bytes_per_second();
  for (auto _ : state) {
    auto q = fq::rtn_quantize(w, spec);
    benchmark::DoNotOptimize(q.codes.bytes().data());
  }
  fragile::bench::set_matrix_counters(state, Shape::rows, Shape::cols);
  const double bytes = static_cast<double>(Shape::rows * Shape::cols * sizeof(float));
  state.counters["GB/s"] = benchmark::Counter(bytes * 1e-9 * static_cast<double>(state.iterations()),
                                              benchmark::Counter::kIsRate);
  state.counters["memcpy_GB/s"] = memcpy_rate * 1e-9;
  // RTN reads the weight once; memcpy reads and writes it: compare bytes read per second.
  state.counters["frac_of_memcpy"] = benchmark::Counter(
      bytes / memcpy_rate * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK_TEMPLATE(BM_rtn, fragile::bench::Llama7B_Attn)->Arg(4)->Arg(3)->Unit(benchmark::kMillisecond)->UseRealTime();

double reference_seconds(const std::string& key) {
  const char* path = std::getenv("FRAGILE_GPTQ_REFERENCE_JSON");
  if (path == nullptr || *path == '\0') return 0.0;
  std::ifstream in(path);
  if (!in) return 0.0;
  const auto j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.contains("seconds") || !j["seconds"].contains(key)) return 0.0;
  return j["seconds"][key].get<double>();
}

template <class Shape>
void BM_gptq(benchmark::State& state) {
  const Eigen::Index tokens = 2048;
  const auto data = fragile::bench::random_matrix(Shape::rows, Shape::cols, 1);
  const auto w = fragile::as_matrix(data.data(), Shape::rows, Shape::cols);
  fragile::Rng rng(2);
  MatrixF x(tokens, static_cast<Eigen::Index>(Shape::cols));
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<float>(rng.normal());
  fq::QuantSpec spec;
  spec.bits = 4;
  spec.group_size = 128;
  for (auto _ : state) {
    fq::HessianAccumulator h(x.cols());
    h.add(x);
    fq::LayerCapture cap;
    cap.with_hessian(h);
    auto q = fq::Gptq{}.quantize(w, spec, cap);
    benchmark::DoNotOptimize(q.codes.bytes().data());
  }
  fragile::bench::set_matrix_counters(state, Shape::rows, Shape::cols);
  const double ref = reference_seconds(std::to_string(Shape::rows) + "x" + std::to_string(Shape::cols));
  if (ref > 0.0) {
    // seconds per iteration / reference seconds
    state.counters["x_reference"] = benchmark::Counter(
        ref, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
    state.counters["reference_s"] = ref;
  }
}
BENCHMARK_TEMPLATE(BM_gptq, fragile::bench::Qwen05_Attn)->Unit(benchmark::kSecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_gptq, fragile::bench::Qwen05_Mlp)->Unit(benchmark::kSecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_gptq, fragile::bench::Qwen05_Down)->Unit(benchmark::kSecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_gptq, fragile::bench::Llama7B_Attn)->Unit(benchmark::kSecond)->UseRealTime()->Iterations(1);

}  // namespace
