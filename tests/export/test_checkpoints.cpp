// The checkpoints `fragile quantize` writes: GPTQ packing (against the layout AutoGPTQ's pack()
// produces, written out here word by word), the packed checkpoint read back from its bytes, the
// fake-quant checkpoint loaded back, and the all-or-nothing output folder.
#include "support/test_data.hpp"

#include <fragile/backend/cpu.hpp>
#include <fragile/export/fake_quant_checkpoint.hpp>
#include <fragile/export/gptq_checkpoint.hpp>
#include <fragile/export/quantize_plan.hpp>
#include <fragile/export/staged_directory.hpp>
#include <fragile/io/load_model.hpp>
#include <fragile/quant/rtn.hpp>

#include <fstream>
#include <random>

namespace {

using namespace fragile;

MatrixF random_weight(Eigen::Index rows, Eigen::Index cols, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, 0.05f);
  MatrixF w(rows, cols);
  for (Eigen::Index i = 0; i < w.size(); ++i) w.data()[i] = d(gen);
  return w;
}

quant::QuantizedWeight deployed(const MatrixF& w, int bits, int group, bool sym) {
  quant::QuantSpec s;
  s.bits = bits;
  s.group_size = group;
  s.symmetric = sym;
  auto q = quant::rtn_quantize(w, s);
  exporting::round_scales_to_f16(q, "test");
  return q;
}

/// AutoGPTQ's pack() loop for one column of input codes (its reference layout, 3-bit case
/// spelled out word by word).
std::vector<std::uint32_t> autogptq_pack_column(const std::vector<std::uint32_t>& v, int bits) {
  std::vector<std::uint32_t> q(v.size() * bits / 32, 0);
  std::size_t i = 0, row = 0;
  while (row < q.size()) {
    if (bits != 3) {
      for (std::size_t j = i; j < i + 32 / bits; ++j) q[row] |= v[j] << (bits * (j - i));
      i += 32 / bits;
      ++row;
    } else {
      for (std::size_t j = i; j < i + 10; ++j) q[row] |= v[j] << (3 * (j - i));
      i += 10;
      q[row] |= v[i] << 30;
      ++row;
      q[row] |= (v[i] >> 2) & 1;
      ++i;
      for (std::size_t j = i; j < i + 10; ++j) q[row] |= v[j] << (3 * (j - i) + 1);
      i += 10;
      q[row] |= v[i] << 31;
      ++row;
      q[row] |= (v[i] >> 1) & 3;
      ++i;
      for (std::size_t j = i; j < i + 10; ++j) q[row] |= v[j] << (3 * (j - i) + 2);
      i += 10;
      ++row;
    }
  }
  return q;
}

/// Tensors of a safetensors file by name: (dtype, shape, bytes), read without fragile's reader.
struct RawTensor {
  std::string dtype;
  std::vector<std::size_t> shape;
  std::string bytes;
};
std::map<std::string, RawTensor> read_raw_safetensors(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::uint64_t n = 0;
  std::memcpy(&n, all.data(), 8);
  const auto h = nlohmann::json::parse(all.substr(8, n));
  std::map<std::string, RawTensor> out;
  for (const auto& [k, v] : h.items()) {
    if (k == "__metadata__") continue;
    const auto b = v["data_offsets"][0].get<std::size_t>(), e = v["data_offsets"][1].get<std::size_t>();
    out[k] = {v["dtype"], v["shape"].get<std::vector<std::size_t>>(), all.substr(8 + n + b, e - b)};
  }
  return out;
}

template <class T>
std::vector<T> as(const std::string& bytes) {
  std::vector<T> v(bytes.size() / sizeof(T));
  std::memcpy(v.data(), bytes.data(), bytes.size());
  return v;
}

}  // namespace

TEST_CASE("gptq: qweight is AutoGPTQ's packing, and unpacking gives the deployed weight bit for "
          "bit", "[export][gptq]") {
  for (int bits : {2, 3, 4, 8}) {
    for (int group : {0, 32}) {
      for (bool sym : {false, true}) {
        const auto w = random_weight(64, 96, static_cast<unsigned>(bits * 100 + group));
        const auto q = deployed(w, bits, group, sym);
        for (auto f : {exporting::GptqFormat::kV1, exporting::GptqFormat::kV2}) {
          if (f == exporting::GptqFormat::kV1 && (q.zeros.array() == 0).any()) continue;
          const auto p = exporting::pack_gptq(q, f, "layer");
          INFO(bits << " bits, group " << group << ", sym " << sym);
          REQUIRE(p.qweight.size() == 96u * bits / 32 * 64);
          REQUIRE(p.g_idx.size() == 96u);
          CHECK(p.g_idx[95] == (group ? 2 : 0));
          // Every output column's words are AutoGPTQ's pack() of its codes.
          for (Eigen::Index n = 0; n < 64; n += 21) {
            std::vector<std::uint32_t> codes(96);
            for (Eigen::Index c = 0; c < 96; ++c) codes[c] = static_cast<std::uint32_t>(q.code(n, c));
            const auto ref = autogptq_pack_column(codes, bits);
            for (std::size_t k = 0; k < ref.size(); ++k)
              CHECK(static_cast<std::uint32_t>(p.qweight[k * 64 + n]) == ref[k]);
          }
          const auto back = exporting::unpack_gptq(p, f);
          const MatrixF deq = q.dequantize();
          CHECK(std::memcmp(back.data(), deq.data(), back.size() * sizeof(float)) == 0);
        }
      }
    }
  }
}

TEST_CASE("gptq: shapes that do not pack and zero points v1 cannot store are named errors",
          "[export][gptq]") {
  const auto q = deployed(random_weight(64, 40, 1), 3, 0, false);  // 40 x 3 bits: 3.75 words
  CHECK_THROWS_WITH(exporting::pack_gptq(q, exporting::GptqFormat::kV1, "model.layers.0.mlp.up_proj"),
                    Catch::Contains("model.layers.0.mlp.up_proj") &&
                        Catch::Contains("40 input features x 3 bits"));
  // A group of non-negative weights has zero point 0 under min-max.
  MatrixF w = random_weight(32, 32, 2).cwiseAbs();
  const auto z = deployed(w, 4, 0, false);
  REQUIRE((z.zeros.array() == 0).any());
  CHECK_THROWS_WITH(exporting::pack_gptq(z, exporting::GptqFormat::kV1, "L"),
                    Catch::Contains("zero point 0") && Catch::Contains("gptq_v2"));
  const auto p = exporting::pack_gptq(z, exporting::GptqFormat::kV2, "L");
  const auto back = exporting::unpack_gptq(p, exporting::GptqFormat::kV2);
  const MatrixF deq = z.dequantize();
  CHECK(std::memcmp(back.data(), deq.data(), back.size() * sizeof(float)) == 0);
}

TEST_CASE("checkpoints: GPTQ and fake-quant folders of a mixed plan on kjv-tiny", "[export]") {
  const auto src = test::source_dir().parent_path() / "examples/models/kjv-tiny";
  const auto ckpt = io::load_model(src);
  const model::Transformer<cpu> m(ckpt.config, ckpt.weights);
  std::vector<quant::QuantizedWeight> weights;
  for (const auto& li : m.linears()) {
    std::vector<float> w(li.parameters());
    ckpt.weights.read_f32(li.name + ".weight", w);
    const Eigen::Map<const MatrixF> wm(w.data(), li.out_features, li.in_features);
    weights.push_back(deployed(wm, li.index % 3 == 0 ? 4 : 3, li.index == 5 ? 0 : 32, false));
  }
  const auto root = test::scratch_dir("export_checkpoints");

  exporting::write_gptq_checkpoint(root / "gptq", ckpt, src, m.linears(), weights,
                                   exporting::GptqFormat::kV1);
  const auto cfg = nlohmann::json::parse(std::ifstream(root / "gptq/config.json"));
  const auto& qc = cfg["quantization_config"];
  CHECK(qc["bits"] == 3);
  CHECK(qc["group_size"] == 32);
  CHECK(qc["checkpoint_format"] == "gptq");
  CHECK(qc["dynamic"]["+:^model\\.layers\\.0\\.self_attn\\.q_proj$"]["bits"] == 4);
  CHECK(qc["dynamic"]["+:^model\\.layers\\.0\\.mlp\\.up_proj$"]["group_size"] == -1);
  CHECK(!qc["dynamic"].contains("+:^model\\.layers\\.0\\.self_attn\\.k_proj$"));
  CHECK(nlohmann::json::parse(std::ifstream(root / "gptq/quantize_config.json")) == qc);
  CHECK(std::filesystem::exists(root / "gptq/tokenizer.json"));
  const auto raw = read_raw_safetensors(root / "gptq/model.safetensors");
  for (const auto& li : m.linears()) {
    INFO(li.name);
    REQUIRE(raw.contains(li.name + ".qweight"));
    CHECK(!raw.contains(li.name + ".weight"));
    const auto& q = weights[li.index];
    exporting::GptqPacked p;
    p.in = li.in_features;
    p.out = li.out_features;
    p.bits = q.bits;
    p.groups = static_cast<std::size_t>(q.groups.num_groups);
    CHECK(raw.at(li.name + ".qweight").shape ==
          std::vector<std::size_t>{p.in * p.bits / 32, p.out});
    CHECK(raw.at(li.name + ".scales").dtype == "F16");
    CHECK(raw.at(li.name + ".scales").shape == std::vector<std::size_t>{p.groups, p.out});
    p.qweight = as<std::int32_t>(raw.at(li.name + ".qweight").bytes);
    p.qzeros = as<std::int32_t>(raw.at(li.name + ".qzeros").bytes);
    p.scales = as<std::uint16_t>(raw.at(li.name + ".scales").bytes);
    p.g_idx = as<std::int32_t>(raw.at(li.name + ".g_idx").bytes);
    const auto back = exporting::unpack_gptq(p, exporting::GptqFormat::kV1);
    const MatrixF deq = q.dequantize();
    CHECK(std::memcmp(back.data(), deq.data(), back.size() * sizeof(float)) == 0);
  }
  CHECK(raw.at("model.embed_tokens.weight").bytes.size() ==
        ckpt.weights.info("model.embed_tokens.weight").nbytes);

  const auto fq = exporting::write_fake_quant_checkpoint(root / "fq", ckpt, src, m.linears(), weights);
  CHECK(fq.dtype == DType::kF32);
  const auto back = io::load_model(root / "fq");
  for (const auto& name : ckpt.weights.names()) {
    INFO(name);
    std::vector<float> a(ckpt.weights.info(name).numel()), b(a.size());
    back.weights.read_f32(name, b);
    bool linear = false;
    for (const auto& li : m.linears())
      if (li.name + ".weight" == name) {
        const MatrixF deq = weights[li.index].dequantize();
        CHECK(std::memcmp(b.data(), deq.data(), b.size() * sizeof(float)) == 0);
        linear = true;
      }
    if (!linear) {
      ckpt.weights.read_f32(name, a);
      CHECK(a == b);
    }
  }
  std::ifstream c1(src / "config.json"), c2(root / "fq/config.json");
  CHECK(std::string(std::istreambuf_iterator<char>(c1), {}) ==
        std::string(std::istreambuf_iterator<char>(c2), {}));
}

TEST_CASE("staged directory: refused without force, nothing left on failure, replaced on commit",
          "[export]") {
  const auto root = test::scratch_dir("export_staged");
  const auto target = root / "out";
  std::filesystem::create_directories(target);
  std::ofstream(target / "old.txt") << "old";
  CHECK_THROWS_WITH(exporting::StagedDirectory(target, false, "--out"),
                    Catch::Contains("--out") && Catch::Contains("--force"));
  try {
    exporting::StagedDirectory s(target, true, "--out");
    std::ofstream(s.path() / "half.txt") << "partial";
    throw std::runtime_error("export failed");
  } catch (const std::runtime_error&) {
  }
  CHECK(std::filesystem::exists(target / "old.txt"));
  CHECK(!std::filesystem::exists(target / "half.txt"));
  std::size_t entries = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(root)) ++entries;
  CHECK(entries == 1);  // no staging folder left beside it
  {
    exporting::StagedDirectory s(target, true, "--out");
    std::ofstream(s.path() / "new.txt") << "new";
    s.commit();
  }
  CHECK(std::filesystem::exists(target / "new.txt"));
  CHECK(!std::filesystem::exists(target / "old.txt"));
}

TEST_CASE("fake-quant checkpoint: a sharded bf16 source gives shards with an index, f32 and "
          "a float32 config", "[export]") {
  const auto src = test::source_dir().parent_path() / "examples/models/kjv-tiny";
  const auto ckpt = io::load_model(src);
  const auto root = test::scratch_dir("export_sharded");
  // The source: kjv-tiny's tensors in bf16, in shards of at most 400 kB, with its config.
  io::SafetensorsWriter w;
  for (const auto& name : ckpt.weights.names()) {
    std::vector<float> v(ckpt.weights.info(name).numel());
    ckpt.weights.read_f32(name, v);
    w.add(name, DType::kBF16, ckpt.weights.info(name).shape, v);
  }
  w.write_sharded(root / "src", 400'000);
  REQUIRE(std::filesystem::exists(root / "src" / io::kSafetensorsIndexName));
  auto cfg = nlohmann::ordered_json::parse(std::ifstream(src / "config.json"));
  cfg["dtype"] = "bfloat16";
  std::ofstream(root / "src/config.json") << cfg.dump(2);
  std::filesystem::copy_file(src / "tokenizer.json", root / "src/tokenizer.json");
  const auto sharded = io::load_model(root / "src");
  const model::Transformer<cpu> m(sharded.config, sharded.weights);
  std::vector<quant::QuantizedWeight> weights;
  for (const auto& li : m.linears()) {
    std::vector<float> v(li.parameters());
    sharded.weights.read_f32(li.name + ".weight", v);
    weights.push_back(deployed(Eigen::Map<const MatrixF>(v.data(), li.out_features, li.in_features),
                               4, 32, false));
  }
  const auto fq = exporting::write_fake_quant_checkpoint(root / "fq", sharded, root / "src",
                                                         m.linears(), weights);
  CHECK(fq.dtype == DType::kF32);
  CHECK_THAT(fq.dtype_reason, Catch::Contains("not exact in the source dtype BF16"));
  CHECK(std::filesystem::exists(root / "fq" / io::kSafetensorsIndexName));
  CHECK(!std::filesystem::exists(root / "fq/model.safetensors"));
  CHECK(nlohmann::json::parse(std::ifstream(root / "fq/config.json"))["dtype"] == "float32");
  CHECK(std::filesystem::exists(root / "fq/tokenizer.json"));
  const auto back = io::load_model(root / "fq");
  for (const auto& name : sharded.weights.names()) {
    INFO(name);
    std::vector<float> a(sharded.weights.info(name).numel()), b(a.size());
    CHECK(back.weights.info(name).dtype == DType::kF32);
    back.weights.read_f32(name, b);
    sharded.weights.read_f32(name, a);
    bool linear = false;
    for (const auto& li : m.linears())
      if (li.name + ".weight" == name) {
        const MatrixF deq = weights[li.index].dequantize();
        CHECK(std::memcmp(b.data(), deq.data(), b.size() * sizeof(float)) == 0);
        linear = true;
      }
    if (!linear) CHECK(a == b);  // bf16 -> f32 is exact
  }
}
