// safetensors load throughput: a Llama-2-7B MLP weight (4096 x 11008) stored as BF16, read from
// the mmapped file into f32 (upcast + finiteness check), beside memcpy of the same f32 output in
// the same binary as the bandwidth ceiling. "bytes_per_second" counts bytes read plus bytes
// written, so the rows compare directly. The file is written once to the temp folder; the page
// cache is warm after the first iteration, so this measures memory, not disk.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>

#include "fragile/io/safetensors.hpp"
#include "support/harness.hpp"

namespace {

constexpr std::size_t kRows = 4096, kCols = 11008;

/// The temp file with one BF16 and one F32 tensor; removed at exit.
struct BenchFile {
  std::filesystem::path path;
  fragile::io::TensorStore store;
  BenchFile() {
    path = std::filesystem::temp_directory_path() /
           fmt::format("fragile-bench-safetensors-{}.safetensors", ::getpid());
    const auto w = fragile::bench::random_matrix(kRows, kCols);
    fragile::io::SafetensorsWriter writer;
    writer.add("w.bf16", fragile::DType::kBF16, {kRows, kCols}, w);
    writer.add("w.f32", fragile::DType::kF32, {kRows, kCols}, w);
    writer.write(path);
    store = fragile::io::open_safetensors(path);
  }
  ~BenchFile() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
};

BenchFile& bench_file() {
  static BenchFile f;
  return f;
}

void set_bytes(benchmark::State& state, std::size_t bytes_per_iteration) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(bytes_per_iteration));
}

void BM_safetensors_read_f32(benchmark::State& state, const std::string& name) {
  const auto& store = bench_file().store;
  std::vector<float> out(kRows * kCols);
  for (auto _ : state) {
    store.read_f32(name, out);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, store.info(name).nbytes + out.size() * sizeof(float));
}

/// The upcast alone (no finiteness check), from the mapped bytes.
void BM_convert_bf16_to_f32(benchmark::State& state) {
  const auto& store = bench_file().store;
  const auto src = store.bytes("w.bf16");
  std::vector<float> out(kRows * kCols);
  for (auto _ : state) {
    fragile::convert_to_f32(fragile::DType::kBF16, src.data(), out.data(), out.size());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, src.size() + out.size() * sizeof(float));
}

/// Peer: memcpy of the f32 output size, the same binary's memory bandwidth.
void BM_memcpy_f32(benchmark::State& state) {
  std::vector<float> src(kRows * kCols, 1.0f), dst(kRows * kCols);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), src.size() * sizeof(float));
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, 2 * src.size() * sizeof(float));
}

/// Opening: mmap + header parse + validation (data untouched).
void BM_open_safetensors(benchmark::State& state) {
  const auto path = bench_file().path;
  for (auto _ : state) benchmark::DoNotOptimize(fragile::io::open_safetensors(path));
}

}  // namespace

BENCHMARK_CAPTURE(BM_safetensors_read_f32, bf16, std::string("w.bf16"))
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_safetensors_read_f32, f32, std::string("w.f32"))
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_convert_bf16_to_f32)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_memcpy_f32)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_open_safetensors)->Unit(benchmark::kMicrosecond)->UseRealTime();
