// Export throughput against its hardware peers, in the same process:
//   BM_pack_gptq/<bits>          packing one 4096 x 4096 layer into GPTQ's qweight/qzeros/scales,
//   BM_memcpy/<bits>             memcpy of as many bytes as that layer's packed codes;
//   BM_write_fake_quant_qwen05   the fake-quant checkpoint of a Qwen2.5-0.5B-shaped model (bf16
//                                source, 4-bit RTN g128, written as f32 with fsync), to compare
//                                with `dd conv=fsync` of the same bytes (BENCHMARKS.md).
// bytes_per_second is the packed codes' bytes (pack, memcpy) or the checkpoint's tensor bytes.
#include "support/harness.hpp"

#include <fragile/backend/cpu.hpp>
#include <fragile/export/fake_quant_checkpoint.hpp>
#include <fragile/export/gptq_checkpoint.hpp>
#include <fragile/export/quantize_plan.hpp>
#include <fragile/io/hf_writer.hpp>
#include <fragile/io/load_model.hpp>
#include <fragile/quant/rtn.hpp>

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <vector>

namespace {

using namespace fragile;

quant::QuantizedWeight layer_4096(int bits) {
  static std::map<int, quant::QuantizedWeight> cache;
  if (auto it = cache.find(bits); it != cache.end()) return it->second;
  std::mt19937 gen(7);
  std::normal_distribution<float> d(0.0f, 0.02f);
  MatrixF w(4096, 4096);
  for (Eigen::Index i = 0; i < w.size(); ++i) w.data()[i] = d(gen);
  quant::QuantSpec s;
  s.bits = bits;
  s.group_size = 128;
  auto q = quant::rtn_quantize(w, s);
  exporting::round_scales_to_f16(q, "bench");
  return cache[bits] = q;
}

void BM_pack_gptq(benchmark::State& state) {
  const auto q = layer_4096(static_cast<int>(state.range(0)));
  exporting::GptqPacked p;  // reused, as memcpy's buffers are
  for (auto _ : state) {
    exporting::pack_gptq(q, exporting::GptqFormat::kV1, "bench", p);
    benchmark::DoNotOptimize(p.qweight.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(q.codes.bytes().size()));
}
BENCHMARK(BM_pack_gptq)->Arg(2)->Arg(3)->Arg(4)->Arg(8)->Unit(benchmark::kMillisecond);

void BM_memcpy(benchmark::State& state) {
  const std::size_t n = 4096u * 4096u * static_cast<std::size_t>(state.range(0)) / 8;
  std::vector<std::uint8_t> a(n, 1), b(n, 0);
  for (auto _ : state) {
    std::memcpy(b.data(), a.data(), n);
    benchmark::DoNotOptimize(b.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n));
}
BENCHMARK(BM_memcpy)->Arg(2)->Arg(3)->Arg(4)->Arg(8)->Unit(benchmark::kMillisecond);

/// A Qwen2.5-0.5B-shaped bf16 HF folder with random weights, made once under $TMPDIR.
std::filesystem::path qwen05_source() {
  namespace fs = std::filesystem;
  const char* tmp = std::getenv("TMPDIR");
  const fs::path dir = fs::path(tmp && *tmp ? tmp : "/tmp") / "fragile-bench-qwen05-bf16";
  if (fs::exists(dir / "model.safetensors")) return dir;
  model::ModelConfig c = bench::qwen05_config();
  c.torch_dtype = DType::kBF16;
  fs::create_directories(dir);
  io::SafetensorsWriter w;
  std::mt19937 gen(3);
  std::normal_distribution<float> d(0.0f, 0.02f);
  for (const auto& [name, shape] : io::detail::hf_tensor_shapes(c)) {
    std::size_t n = 1;
    for (auto s : shape) n *= s;
    std::vector<float> v(n);
    for (auto& x : v) x = d(gen);
    w.add(name, DType::kBF16, shape, v);
  }
  w.write(dir / "model.safetensors");
  io::write_atomically(dir / "config.json", std::string_view(io::hf_config_json(c).dump(2)));
  return dir;
}

void BM_write_fake_quant_qwen05(benchmark::State& state) {
  namespace fs = std::filesystem;
  const auto src = qwen05_source();
  const auto ckpt = io::load_model(src);
  const model::Transformer<cpu> m(ckpt.config, ckpt.weights);
  std::vector<quant::QuantizedWeight> weights;
  quant::QuantSpec s;
  s.bits = 4;
  for (const auto& li : m.linears()) {
    std::vector<float> v(li.parameters());
    ckpt.weights.read_f32(li.name + ".weight", v);
    weights.push_back(quant::rtn_quantize(
        Eigen::Map<const MatrixF>(v.data(), li.out_features, li.in_features), s));
    exporting::round_scales_to_f16(weights.back(), li.name);
  }
  const fs::path out = src.parent_path() / "fragile-bench-qwen05-fakequant";
  std::size_t bytes = 0;
  for (auto _ : state) {
    state.PauseTiming();
    fs::remove_all(out);
    ::sync();
    state.ResumeTiming();
    bytes = exporting::write_fake_quant_checkpoint(out, ckpt, src, m.linears(), weights).tensor_bytes;
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes));
  state.counters["tensor_MB"] = static_cast<double>(bytes) / 1e6;
  fs::remove_all(out);
}
BENCHMARK(BM_write_fake_quant_qwen05)->Unit(benchmark::kSecond)->Iterations(1);

}  // namespace
