// The llama.cpp export: the GGUF writer (parsed back byte by byte here), llama.cpp's tensor
// names, the bits -> ggml type table, the llama-quantize recipe files, and the importance matrix
// against sums of x^2 computed independently on the embedded model.
#include "support/test_data.hpp"

#include <fragile/backend/cpu.hpp>
#include <fragile/export/gguf_writer.hpp>
#include <fragile/export/importance_matrix.hpp>
#include <fragile/export/llama_cpp_recipe.hpp>
#include <fragile/io/load_model.hpp>
#include <fragile/io/text.hpp>
#include <fragile/io/tokenizer/tokenizer.hpp>

#include <nlohmann/json.hpp>

#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <regex>
#include <sstream>
#include <variant>

namespace {

using namespace fragile;

// ------------------------------------------------------------------ a GGUF reader for the tests

struct ParsedTensor {
  std::string name;
  std::vector<std::uint64_t> ne;
  std::uint32_t type = 0;
  std::uint64_t offset = 0;
  std::vector<float> values;
};

using KvValue = std::variant<std::uint32_t, std::string, std::vector<std::string>>;

struct ParsedGguf {
  std::uint32_t version = 0;
  std::vector<std::pair<std::string, KvValue>> kvs;
  std::vector<ParsedTensor> tensors;
  std::size_t data_start = 0;
  std::size_t size = 0;
};

// Reads what GgufWriter writes, independently of it (spec: ggml docs/gguf.md); REQUIREs on
// anything unexpected.
ParsedGguf parse_gguf(const std::vector<std::byte>& b, std::size_t alignment = 32) {
  std::size_t p = 0;
  auto need = [&](std::size_t n) { REQUIRE(p + n <= b.size()); };
  auto u32 = [&] {
    need(4);
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= std::uint32_t(std::to_integer<unsigned>(b[p + i])) << (8 * i);
    p += 4;
    return v;
  };
  auto u64 = [&] {
    need(8);
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= std::uint64_t(std::to_integer<unsigned>(b[p + i])) << (8 * i);
    p += 8;
    return v;
  };
  auto str = [&] {
    const auto n = u64();
    need(n);
    std::string s(reinterpret_cast<const char*>(b.data() + p), n);
    p += n;
    return s;
  };
  ParsedGguf g;
  need(4);
  REQUIRE(std::memcmp(b.data(), "GGUF", 4) == 0);
  p = 4;
  g.version = u32();
  const auto n_tensors = u64();
  const auto n_kv = u64();
  for (std::uint64_t i = 0; i < n_kv; ++i) {
    auto key = str();
    const auto type = u32();
    if (type == 4) {
      g.kvs.emplace_back(key, u32());
    } else if (type == 8) {
      g.kvs.emplace_back(key, str());
    } else {
      REQUIRE(type == 9);
      REQUIRE(u32() == 8);
      std::vector<std::string> a(u64());
      for (auto& s : a) s = str();
      g.kvs.emplace_back(key, a);
    }
  }
  for (std::uint64_t i = 0; i < n_tensors; ++i) {
    ParsedTensor t;
    t.name = str();
    t.ne.resize(u32());
    for (auto& d : t.ne) d = u64();
    t.type = u32();
    t.offset = u64();
    g.tensors.push_back(std::move(t));
  }
  g.data_start = (p + alignment - 1) / alignment * alignment;
  for (std::size_t i = p; i < g.data_start; ++i) REQUIRE(std::to_integer<int>(b.at(i)) == 0);
  for (auto& t : g.tensors) {
    REQUIRE(t.type == 0);
    REQUIRE(t.offset % alignment == 0);
    std::uint64_t n = 1;
    for (auto d : t.ne) n *= d;
    p = g.data_start + t.offset;
    t.values.resize(n);
    for (auto& v : t.values) v = std::bit_cast<float>(u32());
  }
  g.size = b.size();
  return g;
}

std::vector<std::byte> read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> c((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> b(c.size());
  std::memcpy(b.data(), c.data(), c.size());
  return b;
}

std::filesystem::path kjv_dir() { return test::source_dir().parent_path() / "examples/models/kjv-tiny"; }

model::LinearInfo linear(std::size_t block, model::LinearKind kind, std::size_t in, std::size_t out) {
  model::LinearInfo li;
  li.name = model::linear_name(block, kind);
  li.block = block;
  li.kind = kind;
  li.in_features = in;
  li.out_features = out;
  return li;
}

exporting::PlanLayer plan_layer(const std::string& name, int bits) {
  exporting::PlanLayer l;
  l.name = name;
  l.bits = bits;
  return l;
}

}  // namespace

// ------------------------------------------------------------------ GGUF writer

TEST_CASE("gguf: header, metadata, tensor infos, alignment and data parse back", "[export][gguf]") {
  exporting::GgufWriter w;
  w.add_string("general.type", "imatrix");
  w.add_string_array("imatrix.datasets", std::vector<std::string>{"calib.txt", "more.txt"});
  w.add_u32("imatrix.chunk_count", 7);
  const std::vector<float> a = {1.5f, -2.25f, 3e-8f};  // 12 bytes: the next offset is padded
  const std::vector<float> m = {0, 1, 2, 3, 4, 5};
  w.add_tensor_f32("a", {3, 1}, a);
  w.add_tensor_f32("m", {3, 2}, m);  // (2 rows, 3 columns): ne[0] = 3 is the fastest
  const auto bytes = w.bytes();
  const auto g = parse_gguf(bytes);

  CHECK(g.version == 3);
  REQUIRE(g.kvs.size() == 3);
  CHECK(g.kvs[0].first == "general.type");
  CHECK(std::get<std::string>(g.kvs[0].second) == "imatrix");
  CHECK(g.kvs[1].first == "imatrix.datasets");
  CHECK(std::get<std::vector<std::string>>(g.kvs[1].second) ==
        std::vector<std::string>{"calib.txt", "more.txt"});
  CHECK(std::get<std::uint32_t>(g.kvs[2].second) == 7u);
  REQUIRE(g.tensors.size() == 2);
  CHECK(g.tensors[0].name == "a");
  CHECK(g.tensors[0].ne == std::vector<std::uint64_t>{3});  // ggml_n_dims drops trailing 1s
  CHECK(g.tensors[0].offset == 0);
  CHECK(g.tensors[0].values == a);
  CHECK(g.tensors[1].ne == std::vector<std::uint64_t>{3, 2});
  CHECK(g.tensors[1].offset == 32);
  CHECK(g.tensors[1].values == m);
  CHECK(g.data_start % 32 == 0);
  CHECK(g.size == g.data_start + 32 + 32);  // each tensor padded, the last one too
  // The exact header bytes: magic, version, counts, then the first KV.
  const unsigned char head[] = {'G', 'G', 'U', 'F', 3, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0,
                                3,   0,   0,   0,   0, 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0};
  for (std::size_t i = 0; i < sizeof head; ++i) CHECK(std::to_integer<unsigned>(bytes[i]) == head[i]);

  const auto dir = test::scratch_dir("gguf_roundtrip");
  w.write(dir / "x.gguf");
  CHECK(read_bytes(dir / "x.gguf") == bytes);
}

TEST_CASE("gguf: another alignment is recorded, and bad names and shapes are errors", "[export][gguf]") {
  exporting::GgufWriter w64(64);
  w64.add_tensor_f32("t", {1}, std::vector<float>{1.0f});
  w64.add_tensor_f32("u", {2}, std::vector<float>{2.0f, 3.0f});
  const auto g = parse_gguf(w64.bytes(), 64);
  REQUIRE(g.kvs.size() == 1);
  CHECK(g.kvs[0].first == "general.alignment");
  CHECK(std::get<std::uint32_t>(g.kvs[0].second) == 64u);
  CHECK(g.tensors[1].offset == 64);
  CHECK(g.tensors[1].values == std::vector<float>{2.0f, 3.0f});
  CHECK_THROWS_WITH(exporting::GgufWriter(48), Catch::Contains("48 is not a power of two"));

  exporting::GgufWriter w;
  w.add_u32("k", 1);
  CHECK_THROWS_WITH(w.add_string("k", "x"), Catch::Contains("key 'k' added twice"));
  CHECK_THROWS_WITH(w.add_u32(std::string(65536, 'a'), 1), Catch::Contains("65536 bytes"));
  w.add_tensor_f32("t", {2}, std::vector<float>{1, 2});
  CHECK_THROWS_WITH(w.add_tensor_f32("t", {1}, std::vector<float>{1}),
                    Catch::Contains("tensor 't' added twice"));
  CHECK_THROWS_WITH(w.add_tensor_f32(std::string(64, 'n'), {1}, std::vector<float>{1}),
                    Catch::Contains("64 bytes, expected 1 to 63"));
  w.add_tensor_f32(std::string(63, 'n'), {1}, std::vector<float>{1});
  CHECK_THROWS_WITH(w.add_tensor_f32("s", {2, 2}, std::vector<float>{1, 2, 3}),
                    Catch::Contains("tensor 's' has 3 values, its extents hold 4"));
  CHECK_THROWS_WITH(w.add_tensor_f32("s", {1, 1, 1, 1, 1}, std::vector<float>{1}),
                    Catch::Contains("5 dimensions"));
  w.add_tensor_f32("s", {2, 2}, std::vector<float>{1, 2, 3, 4});  // the failed adds left no trace
}

// ------------------------------------------------------------------ names, types, recipe

TEST_CASE("llama.cpp: GGUF tensor names of the seven linear kinds", "[export][llama_cpp]") {
  const std::map<model::LinearKind, std::string> want = {
      {model::LinearKind::kQ, "blk.3.attn_q.weight"},        {model::LinearKind::kK, "blk.3.attn_k.weight"},
      {model::LinearKind::kV, "blk.3.attn_v.weight"},        {model::LinearKind::kO, "blk.3.attn_output.weight"},
      {model::LinearKind::kGate, "blk.3.ffn_gate.weight"},   {model::LinearKind::kUp, "blk.3.ffn_up.weight"},
      {model::LinearKind::kDown, "blk.3.ffn_down.weight"}};
  for (auto k : model::kAllLinearKinds) {
    INFO(model::linear_suffix(k));
    CHECK(exporting::gguf_tensor_name(linear(3, k, 8, 8)) == want.at(k));
  }
  CHECK(exporting::gguf_tensor_name(linear(17, model::LinearKind::kDown, 8, 8)) == "blk.17.ffn_down.weight");

  // The registry of a real model names its layers the same way.
  const auto ckpt = io::load_model(kjv_dir());
  const model::Transformer<cpu> m(ckpt.config, ckpt.weights);
  CHECK(exporting::gguf_tensor_name(m.linear("model.layers.2.self_attn.o_proj")) == "blk.2.attn_output.weight");
  CHECK(exporting::gguf_tensor_name(m.linear("model.layers.0.mlp.gate_proj")) == "blk.0.ffn_gate.weight");
}

TEST_CASE("llama.cpp: the bits -> ggml type table, its overrides and bad specs", "[export][llama_cpp]") {
  const exporting::GgmlTypeTable t;
  const std::map<int, std::pair<std::string, double>> want = {
      {2, {"q2_K", 2.625}}, {3, {"q3_K", 3.4375}}, {4, {"q4_K", 4.5}}, {5, {"q5_K", 5.5}},
      {6, {"q6_K", 6.5625}}, {7, {"q8_0", 8.5}},   {8, {"q8_0", 8.5}}};
  for (const auto& [bits, tw] : want) {
    INFO(bits);
    CHECK(t.type_for(bits).name == tw.first);
    CHECK(t.type_for(bits).bits_per_weight() == tw.second);
  }
  CHECK(t.type_for(4).id == 12);
  CHECK_THROWS_WITH(t.type_for(9), Catch::Contains("9 bits has no type"));
  CHECK_THROWS_WITH(t.type_for(1), Catch::Contains("1 bits has no type"));

  // Block sizes and bytes as ggml-common.h's static_asserts give them.
  const std::map<std::string, std::pair<std::size_t, std::size_t>> blocks = {
      {"q2_K", {256, 84}},    {"q3_K", {256, 110}},  {"q4_K", {256, 144}},  {"q5_K", {256, 176}},
      {"q6_K", {256, 210}},   {"q8_0", {32, 34}},    {"q4_0", {32, 18}},    {"q4_1", {32, 20}},
      {"q5_0", {32, 22}},     {"q5_1", {32, 24}},    {"iq2_xxs", {256, 66}}, {"iq2_xs", {256, 74}},
      {"iq2_s", {256, 82}},   {"iq3_xxs", {256, 98}}, {"iq3_s", {256, 110}}, {"iq4_xs", {256, 136}},
      {"iq4_nl", {32, 18}},   {"f16", {1, 2}},       {"bf16", {1, 2}},      {"iq1_s", {256, 50}},
      {"iq1_m", {256, 56}}};
  for (const auto& [name, bb] : blocks) {
    INFO(name);
    const auto ty = exporting::ggml_type(name);
    CHECK(ty.block_weights == bb.first);
    CHECK(ty.block_bytes == bb.second);
  }
  CHECK(std::size(exporting::kGgmlTypes) == blocks.size());
  CHECK(exporting::ggml_type("IQ2_XS").name == "iq2_xs");

  const auto o = exporting::GgmlTypeTable::parse("2=iq2_xs,3=q3_k, 8 = Q4_0 ");
  CHECK(o.type_for(2).name == "iq2_xs");
  CHECK(o.type_for(2).bits_per_weight() == 74.0 * 8 / 256);
  CHECK(o.type_for(3).name == "q3_K");  // the canonical spelling, whatever the case given
  CHECK(o.type_for(8).name == "q4_0");
  CHECK(o.type_for(4).name == "q4_K");  // not overridden
  CHECK(exporting::GgmlTypeTable::parse("").type_for(2).name == "q2_K");

  using Catch::Contains;
  CHECK_THROWS_WITH(exporting::GgmlTypeTable::parse("9=q4_K"), Contains("width '9' in '9=q4_K' is not 2 to 8"));
  CHECK_THROWS_WITH(exporting::GgmlTypeTable::parse("1=q2_K"), Contains("width '1'"));
  CHECK_THROWS_WITH(exporting::GgmlTypeTable::parse("x=q2_K"), Contains("width 'x'"));
  CHECK_THROWS_WITH(exporting::GgmlTypeTable::parse("4=q9_K"),
                    Contains("type 'q9_K' in '4=q9_K' is not a known ggml weight type") && Contains("iq4_nl"));
  CHECK_THROWS_WITH(exporting::GgmlTypeTable::parse("4=f32"), Contains("type 'f32'"));
  CHECK_THROWS_WITH(exporting::GgmlTypeTable::parse("4q4_K"), Contains("entry '4q4_K' is not BITS=TYPE"));
  CHECK_THROWS_WITH(exporting::GgmlTypeTable::parse("2=q2_K,"), Contains("entry '' is not BITS=TYPE"));
  CHECK_THROWS_WITH(exporting::GgmlTypeTable::parse("2="), Contains("type '' in '2='"));
  CHECK_THROWS_WITH(exporting::GgmlTypeTable::parse("2=q2_K,3"), Contains("llama.cpp type table '2=q2_K,3'"));
}

TEST_CASE("llama.cpp: recipe entries, fallback warnings and the average bits per weight",
          "[export][llama_cpp]") {
  using K = model::LinearKind;
  const std::vector<model::LinearInfo> ls = {linear(0, K::kQ, 256, 64), linear(0, K::kK, 128, 32),
                                             linear(0, K::kDown, 352, 128), linear(1, K::kUp, 40, 16),
                                             linear(1, K::kV, 128, 8)};
  std::vector<exporting::PlanLayer> plan;
  for (int b : {4, 4, 2, 6, 3}) plan.push_back(plan_layer(ls[plan.size()].name, b));
  const auto table = exporting::GgmlTypeTable::parse("3=iq3_s");
  const auto r = exporting::make_llama_cpp_recipe(ls, plan, table);
  REQUIRE(r.entries.size() == 5);
  const auto& e = r.entries;
  CHECK(e[0].gguf_name == "blk.0.attn_q.weight");
  CHECK(e[0].hf_name == "model.layers.0.self_attn.q_proj");
  CHECK(e[0].type.name == "q4_K");
  CHECK(e[0].bits_per_weight == 4.5);
  CHECK(e[0].parameters == 256 * 64);
  CHECK_FALSE(e[0].falls_back);  // 256 columns: one q4_K block per row
  CHECK(e[1].falls_back);        // 128 columns: half a block
  CHECK(e[1].fallback_type == "q5_0");
  CHECK_THAT(e[1].warning, Catch::Contains("blk.0.attn_k.weight") && Catch::Contains("in_features 128") &&
                               Catch::Contains("falls back to q5_0"));
  CHECK(e[2].type.name == "q2_K");
  CHECK(e[2].fallback_type == "q4_0");  // 352 = 11 * 32
  CHECK(e[3].fallback_type == "f16");   // 40 columns fit neither q6_K nor q8_0
  CHECK(e[4].type.name == "iq3_s");
  CHECK(e[4].fallback_type == "iq4_nl");
  CHECK(r.warnings().size() == 4);

  const double n = 256 * 64 + 128 * 32 + 352 * 128 + 40 * 16 + 128 * 8;
  CHECK(r.parameters == n);
  CHECK(r.average_bits_per_weight ==
        Approx((256 * 64 * 4.5 + 128 * 32 * 4.5 + 352 * 128 * 2.625 + 40 * 16 * 6.5625 +
                128 * 8 * 110 * 8.0 / 256) / n).epsilon(1e-14));
  REQUIRE(r.effective_average_bits_per_weight.has_value());
  CHECK(*r.effective_average_bits_per_weight ==
        Approx((256 * 64 * 4.5 + 128 * 32 * 5.5 + 352 * 128 * 4.5 + 40 * 16 * 16.0 + 128 * 8 * 4.5) / n)
            .epsilon(1e-14));

  // A 32-weight type that does not fit has no fallback: llama-quantize stops.
  const auto q8 = exporting::make_llama_cpp_recipe({ls[3]}, {plan_layer(ls[3].name, 8)});
  CHECK(q8.entries[0].falls_back);
  CHECK(q8.entries[0].fallback_type.empty());
  CHECK_THAT(q8.entries[0].warning, Catch::Contains("no fallback for q8_0 and stops"));
  CHECK_FALSE(q8.effective_average_bits_per_weight.has_value());
  CHECK(q8.to_json()["effective_average_bits_per_weight"].is_null());

  auto swapped = plan;
  std::swap(swapped[0], swapped[1]);
  CHECK_THROWS_WITH(exporting::make_llama_cpp_recipe(ls, swapped, table),
                    Catch::Contains("plan layer 0 is 'model.layers.0.self_attn.k_proj', expected "
                                    "'model.layers.0.self_attn.q_proj'"));
  plan.pop_back();
  CHECK_THROWS_WITH(exporting::make_llama_cpp_recipe(ls, plan, table), Catch::Contains("4 plan layers for 5"));
  plan.push_back(plan_layer(ls[4].name, 9));
  CHECK_THROWS_WITH(exporting::make_llama_cpp_recipe(ls, plan, table),
                    Catch::Contains("'model.layers.1.self_attn.v_proj' has 9 bits"));
}

TEST_CASE("llama.cpp: the tensor-type file, the arguments and the recipe folder", "[export][llama_cpp]") {
  const auto ckpt = io::load_model(kjv_dir());
  const model::Transformer<cpu> m(ckpt.config, ckpt.weights);
  std::vector<exporting::PlanLayer> plan;
  for (const auto& li : m.linears()) plan.push_back(plan_layer(li.name, 2 + static_cast<int>(li.index % 7)));
  const auto r = exporting::make_llama_cpp_recipe(m.linears(), plan);
  const auto file = r.tensor_type_file();

  // One PATTERN=TYPE line per layer, nothing else (llama-quantize tokenizes on whitespace).
  std::istringstream in(file);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  REQUIRE(lines.size() == m.linears().size());
  CHECK(file.back() == '\n');
  CHECK(lines[0] == "blk\\.0\\.attn_q\\.weight=q2_K");
  CHECK(lines[8] == "blk\\.1\\.attn_k\\.weight=q3_K");  // index 8: 2 + 8 % 7 bits
  std::vector<std::string> names;
  for (const auto& li : m.linears()) names.push_back(exporting::gguf_tensor_name(li));
  names.push_back("blk.13.attn_q.weight");  // a block number containing another
  names.push_back("blk.0.attn_q_norm.weight");
  for (std::size_t i = 0; i < lines.size(); ++i) {
    INFO(lines[i]);
    CHECK(lines[i].find_first_of(" \t#") == std::string::npos);
    const auto eq = lines[i].rfind('=');
    const std::string pattern = lines[i].substr(0, eq), type = lines[i].substr(eq + 1);
    CHECK(exporting::find_ggml_type(type).has_value());
    CHECK(type == r.entries[i].type.name);
    // What llama-quantize does: lowercase, std::regex, regex_search on every GGUF name.
    std::string lower = pattern;
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    CHECK(lower == pattern);
    const std::regex re(lower);
    std::size_t matched = 0;
    for (const auto& n : names)
      if (std::regex_search(n, re)) {
        ++matched;
        CHECK(n == r.entries[i].gguf_name);
      }
    CHECK(matched == 1);
  }

  const auto args = r.arguments();
  REQUIRE(args.size() == 2 * lines.size());
  for (std::size_t i = 0; i < lines.size(); ++i) {
    CHECK(args[2 * i] == "--tensor-type");
    CHECK(args[2 * i + 1] == lines[i]);
  }

  const auto dir = test::scratch_dir("llama_cpp_recipe") / "recipe";
  exporting::write_llama_cpp_recipe(dir, r);
  CHECK(io::read_text_file(dir / "tensor-types.txt") == file);
  const auto qa = io::read_text_file(dir / "quantize-args.txt");
  CHECK(qa.rfind("--tensor-type\n'blk\\.0\\.attn_q\\.weight=q2_K'\n--tensor-type\n", 0) == 0);
  const auto j = nlohmann::json::parse(io::read_text_file(dir / "recipe.json"));
  CHECK(j["fragile_llama_cpp_recipe"] == 1);
  REQUIRE(j["layers"].size() == m.linears().size());
  CHECK(j["layers"][3]["name"] == "model.layers.0.self_attn.o_proj");
  CHECK(j["layers"][3]["gguf_name"] == "blk.0.attn_output.weight");
  CHECK(j["layers"][3]["bits"] == 5);
  CHECK(j["layers"][3]["type"] == "q5_K");
  CHECK(j["layers"][3]["bits_per_weight"] == 5.5);
  CHECK(j["layers"][3]["falls_back"] == true);  // kjv-tiny's 128 columns are half a k-quant block
  CHECK(j["layers"][3]["fallback_type"] == "q5_1");
  CHECK(j["table"]["7"]["type"] == "q8_0");
  CHECK(j["average_bits_per_weight"].get<double>() == Approx(r.average_bits_per_weight));
  CHECK(j["warnings"].size() == r.warnings().size());
}

// ------------------------------------------------------------------ importance matrix

TEST_CASE("imatrix: sums of x^2 equal an independent computation on kjv-tiny, and its GGUF file",
          "[export][imatrix]") {
  const auto ckpt = io::load_model(kjv_dir());
  const model::Transformer<cpu> m(ckpt.config, ckpt.weights);
  const auto tok = io::load_tokenizer(kjv_dir() / "tokenizer.json");
  const auto ids = tok.encode(io::read_text_file(kjv_dir() / "calib.txt"));
  const std::size_t T = 32;
  const auto windows = data::sample_calibration_windows(ids, 3, T, 7);
  REQUIRE(windows.size() == 3);

  const auto im = exporting::collect_importance_matrix(m, windows, 2);
  REQUIRE(im.layers.size() == m.linears().size());
  CHECK(im.windows == 3);
  CHECK(im.seq_len == T);
  for (const auto& l : im.layers) CHECK(l.rows == 3 * T);

  // Block 0's q/k/v input, from the weights alone: rmsnorm(embedding) * input_layernorm.
  const auto& c = ckpt.config;
  const std::size_t C = c.hidden_size;
  std::vector<float> emb(c.vocab_size * C), g1(C);
  ckpt.weights.read_f32("model.embed_tokens.weight", emb);
  ckpt.weights.read_f32("model.layers.0.input_layernorm.weight", g1);
  std::vector<double> want(C, 0.0);
  for (const auto& w : windows)
    for (auto id : w.tokens) {
      const float* e = emb.data() + static_cast<std::size_t>(id) * C;
      double ms = 0.0;
      for (std::size_t j = 0; j < C; ++j) ms += double(e[j]) * e[j];
      const double r = 1.0 / std::sqrt(ms / double(C) + c.rms_norm_eps);
      for (std::size_t j = 0; j < C; ++j) {
        const double x = e[j] * r * g1[j];
        want[j] += x * x;
      }
    }
  for (std::size_t k = 0; k < 3; ++k) {  // q, k, v
    INFO(im.layers[k].linear.name);
    for (std::size_t j = 0; j < C; ++j) CHECK(im.layers[k].sum_x2[j] == Approx(want[j]).epsilon(1e-5));
  }

  // Every layer: a brute-force sum over the x a plain capture delivers.
  struct KeepX {
    std::map<std::size_t, std::vector<double>> sums;
    model::CaptureNeeds needs() const { return {.x = true}; }
    void observe(const model::LayerBatch& cap) {
      auto& s = sums[cap.layer->index];
      s.resize(cap.layer->in_features, 0.0);
      const float* xs = cap.x.host().data();
      for (std::size_t r = 0; r < cap.rows(); ++r)
        for (std::size_t j = 0; j < s.size(); ++j) {
          const double x = xs[r * s.size() + j];
          s[j] += x * x;
        }
    }
  } keep;
  std::vector<model::TokenIds> tokens;
  for (const auto& w : windows) tokens.push_back(w.tokens);
  m.capture(tokens, model::CaptureOptions{.batch_size = 1}, keep);
  for (const auto& l : im.layers) {
    INFO(l.linear.name);
    REQUIRE(keep.sums[l.linear.index].size() == l.sum_x2.size());
    for (std::size_t j = 0; j < l.sum_x2.size(); ++j)
      // batches of 2 windows there, 1 here: the products' blocking, hence rounding, differs
      CHECK(l.sum_x2[j] == Approx(keep.sums[l.linear.index][j]).epsilon(1e-5));
  }

  // The GGUF file: llama-imatrix's keys, names (sorted), shapes, sums and counts.
  const auto dir = test::scratch_dir("imatrix");
  exporting::write_imatrix_gguf(dir / "imatrix.gguf", im, {"calib.txt"}, T);
  const auto g = parse_gguf(read_bytes(dir / "imatrix.gguf"));
  REQUIRE(g.kvs.size() == 4);
  CHECK(g.kvs[0].first == "general.type");
  CHECK(std::get<std::string>(g.kvs[0].second) == "imatrix");
  CHECK(g.kvs[1].first == "imatrix.datasets");
  CHECK(std::get<std::vector<std::string>>(g.kvs[1].second) == std::vector<std::string>{"calib.txt"});
  CHECK(g.kvs[2].first == "imatrix.chunk_count");
  CHECK(std::get<std::uint32_t>(g.kvs[2].second) == 3u);
  CHECK(g.kvs[3].first == "imatrix.chunk_size");
  CHECK(std::get<std::uint32_t>(g.kvs[3].second) == T);
  REQUIRE(g.tensors.size() == 2 * im.layers.size());
  std::map<std::string, const exporting::ImportanceLayer*> by_name;
  for (const auto& l : im.layers) by_name[exporting::gguf_tensor_name(l.linear)] = &l;
  auto it = by_name.begin();
  for (std::size_t i = 0; i < g.tensors.size(); i += 2, ++it) {
    const auto& [name, l] = *it;
    INFO(name);
    CHECK(g.tensors[i].name == name + ".in_sum2");
    CHECK(g.tensors[i].ne == std::vector<std::uint64_t>{l->linear.in_features});
    REQUIRE(g.tensors[i].values.size() == l->sum_x2.size());
    for (std::size_t j = 0; j < l->sum_x2.size(); ++j)
      CHECK(g.tensors[i].values[j] == static_cast<float>(l->sum_x2[j]));
    CHECK(g.tensors[i + 1].name == name + ".counts");
    CHECK(g.tensors[i + 1].ne == std::vector<std::uint64_t>{1});
    CHECK(g.tensors[i + 1].values == std::vector<float>{float(3 * T)});
  }
  CHECK(g.tensors[0].name == "blk.0.attn_k.weight.in_sum2");  // sorted: attn_k before attn_output

  CHECK_THROWS_WITH(exporting::write_imatrix_gguf(dir / "bad.gguf", im, {}, T + 1),
                    Catch::Contains("chunk_size 33 differs from the 32 tokens per window"));
  CHECK_FALSE(std::filesystem::exists(dir / "bad.gguf"));
}

TEST_CASE("imatrix: a non-finite sum is an error naming the layer", "[export][imatrix]") {
  const auto li = linear(2, model::LinearKind::kUp, 3, 4);
  exporting::ImportanceAccumulator acc({li});
  const std::vector<float> x = {1.0f, 2.0f, 3.0f, 1e30f, 1e30f, 0.0f};  // 2 rows
  model::LayerBatch cap;
  cap.layer = &li;
  cap.windows = 1;
  cap.seq_len = 2;
  cap.x = backend::TensorView::of<cpu>(x.data(), x.size());
  acc.observe(cap);
  exporting::ImportanceMatrix im;
  im.windows = 1;
  im.seq_len = 2;
  im.layers = acc.layers();
  CHECK(im.layers[0].rows == 2);
  CHECK(im.layers[0].sum_x2[0] == 1.0 + double(1e30f) * double(1e30f));
  CHECK(im.layers[0].sum_x2[2] == 9.0);
  exporting::check_importance_matrix(im);  // finite in double
  CHECK_THROWS_WITH(exporting::write_imatrix_gguf(test::scratch_dir("imatrix_inf") / "x.gguf", im, {}, 2),
                    Catch::Contains("'model.layers.2.mlp.up_proj' (blk.2.ffn_up.weight)") &&
                        Catch::Contains("not a finite float"));
  im.layers[0].sum_x2[1] = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(exporting::check_importance_matrix(im),
                    Catch::Contains("layer 'model.layers.2.mlp.up_proj' (blk.2.ffn_up.weight) has a "
                                    "non-finite sum of x^2 (inf) at input column 1"));
  im.layers[0].sum_x2[1] = 0.0;
  im.seq_len = 3;
  CHECK_THROWS_WITH(exporting::check_importance_matrix(im), Catch::Contains("saw 2 token rows, expected 3"));
}
