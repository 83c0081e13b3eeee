// safetensors reader/writer: round trips for every dtype, shards, exact upcasts, and golden files
// written by the reference Python package (tools/make_safetensors_fixtures.py).
#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "fragile/io/safetensors.hpp"
#include "support/test_data.hpp"

using fragile::DType;
using fragile::io::open_safetensors;
using fragile::io::parse_safetensors_header;
using fragile::io::SafetensorsWriter;
namespace fs = std::filesystem;

namespace {

std::vector<std::byte> to_bytes(const void* p, std::size_t n) {
  std::vector<std::byte> out(n);
  if (n) std::memcpy(out.data(), p, n);
  return out;
}

std::vector<float> ramp(std::size_t n, float scale) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i)
    v[i] = scale * (static_cast<float>(i) - static_cast<float>(n) / 3.0f) +
           0.001f * static_cast<float>(i % 7);
  return v;
}

std::vector<std::byte> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<char> c((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return to_bytes(c.data(), c.size());
}

std::vector<std::uint16_t> as_u16(std::span<const std::byte> b) {
  std::vector<std::uint16_t> out(b.size() / 2);
  if (!out.empty()) std::memcpy(out.data(), b.data(), out.size() * 2);
  return out;
}

/// All values of a tensor as f32 bit patterns, without the finiteness check of read_f32.
std::vector<std::uint32_t> f32_bits(const fragile::io::TensorStore& s, const std::string& name) {
  const auto& i = s.info(name);
  std::vector<float> v(i.numel());
  fragile::convert_to_f32(i.dtype, s.bytes(name).data(), v.data(), v.size());
  std::vector<std::uint32_t> out;
  for (float f : v) out.push_back(std::bit_cast<std::uint32_t>(f));
  return out;
}

}  // namespace

TEST_CASE("safetensors round trip of every dtype, scalars, empty tensors and metadata",
          "[io][safetensors]") {
  const auto dir = fragile::test::scratch_dir("safetensors_roundtrip");
  const auto f32 = ramp(24, 0.37f);
  const auto f16 = ramp(30, 0.011f);
  const auto bf16 = ramp(64, 1.7f);
  const std::vector<std::int8_t> i8 = {-128, -7, 0, 5, 127, 1};
  const std::vector<std::uint8_t> u8 = {0, 200, 255, 17, 3};
  const float scalar = -3.75f;

  SafetensorsWriter w;
  w.add("w.f32", DType::kF32, {2, 3, 4}, f32);
  w.add("w.f16", DType::kF16, {5, 6}, f16);
  w.add("w.bf16", DType::kBF16, {64}, bf16);
  w.add_raw("q.i8", DType::kI8, {2, 3}, to_bytes(i8.data(), i8.size()));
  w.add_raw("q.u8", DType::kU8, {5}, to_bytes(u8.data(), u8.size()));
  w.add("scalar", DType::kF32, {}, std::span<const float>(&scalar, 1));
  w.add("empty", DType::kBF16, {0, 4}, std::span<const float>());
  w.add_raw("empty.u8", DType::kU8, {3, 0}, std::span<const std::byte>());
  w.set_metadata("format", "pt");
  w.set_metadata("quant", "{\"bits\": 4}");
  REQUIRE(w.size() == 8);

  const auto path = dir / "m.safetensors";
  w.write(path);
  // Nothing but the target is left behind (the temporary file was renamed).
  REQUIRE(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);

  const auto store = open_safetensors(path);
  REQUIRE(store.size() == 8);
  CHECK(store.metadata().at("format") == "pt");
  CHECK(store.metadata().at("quant") == "{\"bits\": 4}");
  CHECK(store.info("w.f32").shape == std::vector<std::size_t>{2, 3, 4});
  CHECK(store.info("w.f16").dtype == DType::kF16);
  CHECK(store.info("scalar").shape.empty());
  CHECK(store.info("empty").numel() == 0);

  const auto a = store.load_f32<3>("w.f32");
  for (std::size_t k = 0; k < f32.size(); ++k) CHECK(a.data()[k] == f32[k]);
  const auto b = store.load_f32("w.f16");
  for (std::size_t k = 0; k < f16.size(); ++k)
    CHECK(b.data()[k] == fragile::f16_to_f32(fragile::f32_to_f16(f16[k])));
  const auto c = store.load_f32<1>("w.bf16");
  for (std::size_t k = 0; k < bf16.size(); ++k)
    CHECK(c(k) == fragile::bf16_to_f32(fragile::f32_to_bf16(bf16[k])));
  // Integer tensors are codes: reading one as values is refused, naming it and its dtype.
  CHECK_THROWS_AS(store.load_f32<2>("q.i8"), fragile::IoError);
  CHECK_THROWS_WITH(store.load_f32<2>("q.i8"), Catch::Contains("'q.i8' is stored as I8"));
  CHECK(std::memcmp(store.bytes("q.i8").data(), i8.data(), i8.size()) == 0);
  CHECK(std::memcmp(store.bytes("q.u8").data(), u8.data(), u8.size()) == 0);
  CHECK(store.load_f32<0>("scalar")() == scalar);
  CHECK(store.load_f32("empty").size() == 0);
  CHECK(store.bytes("empty.u8").empty());

  // Layout: 8-aligned header, each tensor aligned to its itemsize, as the reference writes.
  const auto bytes = read_file(path);
  const auto header = parse_safetensors_header(bytes, path.string());
  CHECK(header.data_offset % 8 == 0);
  for (const auto& t : header.tensors) CHECK(t.offset % fragile::dtype_size(t.dtype) == 0);
  CHECK(header.data_offset + w.data_bytes() == bytes.size());

  // Overwriting an existing file works and stays atomic.
  SafetensorsWriter w2;
  w2.add("only", DType::kF32, {1}, std::span<const float>(&scalar, 1));
  w2.write(path);
  CHECK(open_safetensors(path).names() == std::vector<std::string>{"only"});
  CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);
}

TEST_CASE("safetensors writer rejects bad arguments", "[io][safetensors]") {
  SafetensorsWriter w;
  std::vector<float> v(6, 1.0f);
  CHECK_THROWS_AS(w.add("x", DType::kF32, {2, 2}, v), fragile::ShapeError);
  CHECK_THROWS_AS(w.add("x", DType::kI8, {6}, v), fragile::ArgumentError);
  w.add("x", DType::kF32, {2, 3}, v);
  CHECK_THROWS_AS(w.add("x", DType::kF32, {2, 3}, v), fragile::ArgumentError);
  CHECK_THROWS_AS(w.add("__metadata__", DType::kF32, {6}, v), fragile::ArgumentError);
  CHECK_THROWS_AS(w.add_raw("r", DType::kBF16, {3}, std::vector<std::byte>(5)),
                  fragile::ShapeError);
  CHECK_THROWS_AS(w.add("huge", DType::kF32, {std::size_t{1} << 40, std::size_t{1} << 40}, v),
                  fragile::ShapeError);
  CHECK_THROWS_AS(w.write_sharded(fragile::test::scratch_dir("st_bad_args"), 0),
                  fragile::ArgumentError);
  w.add("bad\xff\xfeutf8", DType::kF32, {6}, v);
  const auto dir = fragile::test::scratch_dir("st_bad_utf8");
  CHECK_THROWS_WITH(w.write(dir / "x.safetensors"), Catch::Contains("valid UTF-8"));
  CHECK(fs::is_empty(dir));
}

TEST_CASE("safetensors sharded round trip", "[io][safetensors]") {
  const auto dir = fragile::test::scratch_dir("safetensors_sharded");
  SafetensorsWriter w;
  std::map<std::string, std::vector<float>> values;
  for (int layer = 0; layer < 5; ++layer) {
    const auto name = fmt::format("model.layers.{}.mlp.up_proj.weight", layer);
    values[name] = ramp(16 * 8, 0.01f * static_cast<float>(layer + 1));
    w.add(name, DType::kBF16, {16, 8}, values[name]);  // 256 bytes each
  }
  values["model.norm.weight"] = ramp(16, 1.0f);
  w.add("model.norm.weight", DType::kF32, {16}, values["model.norm.weight"]);  // 64 bytes
  w.set_metadata("format", "pt");

  const auto entry = w.write_sharded(dir, 600);  // 2 layers per shard, norm joins the last
  CHECK(entry == dir / "model.safetensors.index.json");
  for (const char* f : {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                        "model-00003-of-00003.safetensors"})
    CHECK(fs::is_regular_file(dir / f));

  std::ifstream in(entry);
  const auto index = nlohmann::json::parse(in);
  CHECK(index["metadata"]["total_size"].get<std::size_t>() == 5 * 256 + 64);
  CHECK(index["weight_map"]["model.layers.4.mlp.up_proj.weight"] ==
        "model-00003-of-00003.safetensors");
  CHECK(index["weight_map"]["model.norm.weight"] == "model-00003-of-00003.safetensors");
  CHECK(index["weight_map"]["model.layers.0.mlp.up_proj.weight"] ==
        "model-00001-of-00003.safetensors");

  for (const auto& p : {dir, entry}) {
    const auto store = open_safetensors(p);
    CHECK(store.file_count() == 3);
    CHECK(store.size() == 6);
    CHECK(store.metadata().at("format") == "pt");
    for (const auto& [name, v] : values) {
      const auto t = store.load_f32(name);
      REQUIRE(t.size() == v.size());
      for (std::size_t k = 0; k < v.size(); ++k) {
        const float expect = store.info(name).dtype == DType::kF32
                                 ? v[k]
                                 : fragile::bf16_to_f32(fragile::f32_to_bf16(v[k]));
        CHECK(t.data()[k] == expect);
      }
    }
  }

  // One shard: model.safetensors and no index, as transformers writes it.
  const auto dir1 = fragile::test::scratch_dir("safetensors_one_shard");
  w.write_sharded(dir1, 600);  // sharded first: its index must not shadow the single file
  REQUIRE(fs::exists(dir1 / "model.safetensors.index.json"));
  CHECK(w.write_sharded(dir1, 1 << 20) == dir1 / "model.safetensors");
  CHECK(!fs::exists(dir1 / "model.safetensors.index.json"));
  CHECK(open_safetensors(dir1).size() == 6);
}

TEST_CASE("safetensors upcast of bf16 and f16 is exact on known values", "[io][safetensors]") {
  // (stored bits, exact value)
  const std::vector<std::pair<std::uint16_t, float>> bf16 = {
      {0x3f80, 1.0f},      {0xc020, -2.5f},     {0x4049, 3.140625f},
      {0x0000, 0.0f},      {0x8000, -0.0f},     {0x7f7f, 0x1.fep127f},
      {0x0080, 0x1p-126f}, {0x0001, 0x1p-133f}, {0x3c00, 0.0078125f}};
  const std::vector<std::pair<std::uint16_t, float>> f16 = {
      {0x3c00, 1.0f},     {0xc000, -2.0f},      {0x7bff, 65504.0f},    {0x0400, 0x1p-14f},
      {0x0001, 0x1p-24f}, {0x03ff, 0x3ffp-24f}, {0x3555, 0x1.554p-2f}, {0x8001, -0x1p-24f}};
  const auto dir = fragile::test::scratch_dir("safetensors_upcast");
  SafetensorsWriter w;
  std::vector<std::uint16_t> b, h;
  for (auto [bits, v] : bf16) b.push_back(bits);
  for (auto [bits, v] : f16) h.push_back(bits);
  w.add_raw("b", DType::kBF16, {b.size()}, to_bytes(b.data(), 2 * b.size()));
  w.add_raw("h", DType::kF16, {h.size()}, to_bytes(h.data(), 2 * h.size()));
  const std::uint16_t inf = 0x7c00;
  w.add_raw("inf", DType::kF16, {1}, to_bytes(&inf, 2));
  w.write(dir / "u.safetensors");
  const auto s = open_safetensors(dir / "u.safetensors");
  const auto tb = s.load_f32<1>("b");
  for (std::size_t k = 0; k < bf16.size(); ++k)
    CHECK(std::bit_cast<std::uint32_t>(tb(k)) == std::bit_cast<std::uint32_t>(bf16[k].second));
  const auto th = s.load_f32<1>("h");
  for (std::size_t k = 0; k < f16.size(); ++k)
    CHECK(std::bit_cast<std::uint32_t>(th(k)) == std::bit_cast<std::uint32_t>(f16[k].second));
  // Non-finite weights are reported, naming the tensor.
  CHECK_THROWS_WITH(s.load_f32("inf"), Catch::Contains("'inf'") && Catch::Contains("non-finite"));
  CHECK_THROWS_AS(s.load_f32<2>("b"), fragile::ShapeError);

  // The offending index is reported exactly, also beyond the first conversion block.
  std::vector<float> big(20000, 0.5f);
  big[15001] = std::numeric_limits<float>::quiet_NaN();
  SafetensorsWriter w2;
  w2.add("big", DType::kBF16, {100, 200}, big);
  w2.write(dir / "nan.safetensors");
  CHECK_THROWS_WITH(open_safetensors(dir / "nan.safetensors").load_f32("big"),
                    Catch::Contains("'big' holds a non-finite value (nan) at flat index 15001"));
  CHECK_THROWS_WITH(s.info("nope"), Catch::Contains("no tensor named 'nope'"));
}

TEST_CASE("safetensors golden files written by the reference Python package",
          "[io][safetensors][golden]") {
  const auto fix = fragile::test::source_dir() / "fixtures" / "safetensors";
  std::ifstream in(fix / "expected.json");
  REQUIRE(in);
  const auto expected = nlohmann::json::parse(in);

  const auto single = open_safetensors(fix / "reference.safetensors");
  const auto sharded = open_safetensors(fix / "sharded");
  CHECK(single.file_count() == 1);
  CHECK(sharded.file_count() == 2);
  CHECK(sharded.metadata().at("total_size") == "278");
  for (const auto* store : {&single, &sharded}) {
    CHECK(store->metadata().at("format") == "pt");
    CHECK(store->metadata().at("note") == "fragile golden fixture");
    REQUIRE(store->size() == expected["tensors"].size());
  }

  SafetensorsWriter ours;
  for (const auto& [name, e] : expected["tensors"].items()) {
    INFO("tensor " << name);
    const auto dtype = fragile::parse_dtype(e["dtype"].get<std::string>(), name);
    const auto shape = e["shape"].get<std::vector<std::size_t>>();
    const auto bits = e["bits"].get<std::vector<std::uint32_t>>();
    for (const auto* store : {&single, &sharded}) {
      CHECK(store->info(name).dtype == dtype);
      CHECK(store->info(name).shape == shape);
      CHECK(f32_bits(*store, name) == bits);
    }
    if (e.contains("source_bits")) {
      // Our f32 -> bf16/f16 rounding matches torch's .to(dtype) bit for bit.
      std::vector<float> src;
      for (auto u : e["source_bits"].get<std::vector<std::uint32_t>>())
        src.push_back(std::bit_cast<float>(u));
      std::vector<std::uint16_t> mine(src.size());
      if (dtype == DType::kBF16)
        fragile::convert_f32_to_bf16(src.data(), mine.data(), src.size());
      else
        fragile::convert_f32_to_f16(src.data(), mine.data(), src.size());
      CHECK(mine == as_u16(single.bytes(name)));
      ours.add(name, dtype, shape, src);
    } else {
      const auto raw = single.bytes(name);
      ours.add_raw(name, dtype, shape, raw);
    }
  }
  // Our writer lays the data section out exactly as the reference did.
  for (const auto& [k, v] : single.metadata()) ours.set_metadata(k, v);
  const auto dir = fragile::test::scratch_dir("safetensors_golden");
  ours.write(dir / "ours.safetensors");
  const auto mine = read_file(dir / "ours.safetensors");
  const auto theirs = read_file(fix / "reference.safetensors");
  const auto hm = parse_safetensors_header(mine, "ours");
  const auto ht = parse_safetensors_header(theirs, "reference");
  REQUIRE(hm.tensors.size() == ht.tensors.size());
  for (std::size_t k = 0; k < hm.tensors.size(); ++k) {
    CHECK(hm.tensors[k].name == ht.tensors[k].name);
    CHECK(hm.tensors[k].offset - hm.data_offset == ht.tensors[k].offset - ht.data_offset);
  }
  CHECK(hm.metadata == ht.metadata);
  REQUIRE(mine.size() - hm.data_offset == theirs.size() - ht.data_offset);
  CHECK(std::memcmp(mine.data() + hm.data_offset, theirs.data() + ht.data_offset,
                    mine.size() - hm.data_offset) == 0);
}
