// llama2.c v0 checkpoints: stories260K's shapes and values (cross-checked by reading the raw
// file here, independently of the reader), synthetic checkpoints whose every float encodes its
// own position (so a wrong offset or order shows), and broken files.
#include "support/test_data.hpp"

#include <fragile/io/llama2c.hpp>

#include <cstdint>
#include <fstream>
#include <numeric>
#include <vector>

using fragile::ConfigError;
using fragile::IoError;
using fragile::io::read_llama2c;

namespace {

/// Reads float number `index` (counted from the end of the 28-byte header) straight from disk.
float raw_float(const std::filesystem::path& p, std::size_t index) {
  std::ifstream in(p, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(28 + 4 * index));
  float v = 0;
  in.read(reinterpret_cast<char*>(&v), sizeof v);
  REQUIRE(in);
  return v;
}

float stored(const fragile::io::TensorStore& s, const std::string& name, std::size_t flat) {
  const auto bytes = s.bytes(name);
  REQUIRE(flat * 4 + 4 <= bytes.size());
  float v = 0;
  std::memcpy(&v, bytes.data() + flat * 4, 4);
  return v;
}

/// Writes header + `n_floats` floats whose value is their index (exact below 2^24).
void write_checkpoint(const std::filesystem::path& p, std::array<std::int32_t, 7> header,
                      std::size_t n_floats) {
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(header.data()), sizeof header);
  for (std::size_t i = 0; i < n_floats; ++i) {
    const auto v = static_cast<float>(i);
    out.write(reinterpret_cast<const char*>(&v), sizeof v);
  }
}

/// Float count of a well-formed checkpoint (header fields as llama2.c defines them).
std::size_t float_count(std::array<std::int32_t, 7> h) {
  const std::size_t dim = h[0], hid = h[1], L = h[2], nh = h[3], nkv = h[4], seq = h[6];
  const std::size_t vocab = static_cast<std::size_t>(std::abs(h[5]));
  const std::size_t hs = dim / nh;
  std::size_t n = vocab * dim + L * (2 * dim + dim * nh * hs + 2 * dim * nkv * hs + nh * hs * dim +
                                     3 * dim * hid) +
                  dim + seq * hs;
  if (h[5] < 0) n += vocab * dim;
  return n;
}

std::string message_of(const std::filesystem::path& p) {
  try {
    (void)read_llama2c(p);
  } catch (const fragile::Error& e) {
    return e.what();
  }
  FAIL("no error for " << p);
  return {};
}

}  // namespace

TEST_CASE("llama2c: stories260K loads with the documented shapes", "[llama2c]") {
  FRAGILE_REQUIRE_DATA_FILE(path, "models/stories260K/stories260K.bin");
  const auto ck = read_llama2c(path);
  const auto& c = ck.config;
  CHECK(c.architecture == fragile::model::Architecture::kLlama);
  CHECK(c.hidden_size == 64);
  CHECK(c.intermediate_size == 172);
  CHECK(c.num_hidden_layers == 5);
  CHECK(c.num_attention_heads == 8);
  CHECK(c.num_key_value_heads == 4);
  CHECK(c.head_dim == 8);
  CHECK(c.vocab_size == 512);
  CHECK(c.max_position_embeddings == 512);
  CHECK(c.tie_word_embeddings);
  CHECK(c.rope_style == fragile::model::RopeStyle::kInterleaved);
  CHECK(c.rope_theta == 10000.0);
  CHECK(c.rms_norm_eps == 1e-5);
  CHECK_FALSE(c.sliding_window.has_value());

  const auto& w = ck.weights;
  CHECK(w.size() == 1 + 5 * 9 + 1);
  CHECK_FALSE(w.contains("lm_head.weight"));
  using Shape = std::vector<std::size_t>;
  CHECK(w.info("model.embed_tokens.weight").shape == Shape{512, 64});
  CHECK(w.info("model.norm.weight").shape == Shape{64});
  for (std::size_t l = 0; l < 5; ++l) {
    for (auto kind : fragile::model::kAllLinearKinds) {
      const auto [out, in] = fragile::model::linear_shape(c, kind);
      CHECK(w.info(fragile::model::linear_name(l, kind) + ".weight").shape == Shape{out, in});
    }
    CHECK(w.info(fmt::format("model.layers.{}.input_layernorm.weight", l)).shape == Shape{64});
    CHECK(w.info(fmt::format("model.layers.{}.post_attention_layernorm.weight", l)).shape ==
          Shape{64});
  }
  CHECK(w.info("model.layers.0.self_attn.k_proj.weight").shape == Shape{32, 64});
  CHECK(w.info("model.layers.0.mlp.down_proj.weight").shape == Shape{64, 172});

  // Independent offsets, in floats after the header (llama2.c's memory_map_weights order).
  const std::size_t emb = 512 * 64, rms = 5 * 64, wq = 5 * 64 * 64, wk = 5 * 64 * 32;
  const std::size_t wo = 5 * 64 * 64, w1 = 5 * 64 * 172;
  const std::size_t at_wq = emb + rms, at_wk = at_wq + wq, at_wv = at_wk + wk, at_wo = at_wv + wk;
  const std::size_t at_rms_ffn = at_wo + wo, at_w1 = at_rms_ffn + rms, at_w2 = at_w1 + w1;
  const std::size_t at_w3 = at_w2 + w1, at_final = at_w3 + w1;
  CHECK(stored(w, "model.embed_tokens.weight", 3 * 64 + 5) == raw_float(path, 3 * 64 + 5));
  CHECK(stored(w, "model.layers.2.input_layernorm.weight", 7) == raw_float(path, emb + 2 * 64 + 7));
  CHECK(stored(w, "model.layers.2.self_attn.q_proj.weight", 7 * 64 + 11) ==
        raw_float(path, at_wq + 2 * 64 * 64 + 7 * 64 + 11));
  CHECK(stored(w, "model.layers.3.self_attn.k_proj.weight", 31 * 64 + 63) ==
        raw_float(path, at_wk + 3 * 32 * 64 + 31 * 64 + 63));
  CHECK(stored(w, "model.layers.1.self_attn.v_proj.weight", 0) == raw_float(path, at_wv + 32 * 64));
  CHECK(stored(w, "model.layers.4.self_attn.o_proj.weight", 5) ==
        raw_float(path, at_wo + 4 * 64 * 64 + 5));
  CHECK(stored(w, "model.layers.0.post_attention_layernorm.weight", 1) ==
        raw_float(path, at_rms_ffn + 1));
  CHECK(stored(w, "model.layers.1.mlp.gate_proj.weight", 171 * 64) ==
        raw_float(path, at_w1 + 172 * 64 + 171 * 64));
  CHECK(stored(w, "model.layers.4.mlp.down_proj.weight", 64 * 172 - 1) ==
        raw_float(path, at_w2 + 5 * 64 * 172 - 1));
  CHECK(stored(w, "model.layers.2.mlp.up_proj.weight", 10) == raw_float(path, at_w3 + 2 * 172 * 64 + 10));
  CHECK(stored(w, "model.norm.weight", 63) == raw_float(path, at_final + 63));

  // The norms of a trained model are not zero or identical; load_f32 yields finite values.
  const auto norm = w.load_f32<1>("model.norm.weight");
  CHECK(norm(0) != norm(1));
  const auto q = w.load_f32<2>("model.layers.0.self_attn.q_proj.weight");
  CHECK(q.shape()[0] == 64);
  CHECK(q(7, 11) == stored(w, "model.layers.0.self_attn.q_proj.weight", 7 * 64 + 11));
}

TEST_CASE("llama2c: every array sits at its own offset (synthetic checkpoints)", "[llama2c]") {
  const auto dir = fragile::test::scratch_dir("llama2c_synthetic");
  for (bool shared : {true, false}) {
    INFO("shared classifier: " << shared);
    const std::array<std::int32_t, 7> h{16, 24, 2, 4, 2, shared ? 10 : -10, 6};
    const auto p = dir / (shared ? "shared.bin" : "unshared.bin");
    write_checkpoint(p, h, float_count(h));
    const auto ck = read_llama2c(p);
    CHECK(ck.config.tie_word_embeddings == shared);
    CHECK(ck.config.vocab_size == 10);
    CHECK(ck.config.head_dim == 4);
    CHECK(ck.weights.contains("lm_head.weight") == !shared);
    // Every float's value is its index, so the first element of each tensor is its offset.
    const std::size_t L = 2, dim = 16, hid = 24, kv = 8;
    std::size_t off = 0;
    auto expect = [&](const std::string& name, std::size_t per_layer_numel, bool stacked) {
      for (std::size_t l = 0; l < (stacked ? L : 1); ++l) {
        const auto full = stacked ? fmt::format("model.layers.{}.{}.weight", l, name) : name;
        INFO(full);
        CHECK(stored(ck.weights, full, 0) == static_cast<float>(off));
        CHECK(ck.weights.info(full).numel() == per_layer_numel);
        off += per_layer_numel;
      }
    };
    expect("model.embed_tokens.weight", 10 * dim, false);
    expect("input_layernorm", dim, true);
    expect("self_attn.q_proj", dim * dim, true);
    expect("self_attn.k_proj", kv * dim, true);
    expect("self_attn.v_proj", kv * dim, true);
    expect("self_attn.o_proj", dim * dim, true);
    expect("post_attention_layernorm", dim, true);
    expect("mlp.gate_proj", hid * dim, true);
    expect("mlp.down_proj", dim * hid, true);
    expect("mlp.up_proj", hid * dim, true);
    expect("model.norm.weight", dim, false);
    off += 6 * 4;  // freq_cis_real + freq_cis_imag: seq_len x head_dim/2 each
    if (!shared) expect("lm_head.weight", 10 * dim, false);
    CHECK((off + 7) * 4 == std::filesystem::file_size(p));
  }
}

TEST_CASE("llama2c: broken checkpoints give clear errors", "[llama2c][bad]") {
  const auto dir = fragile::test::scratch_dir("llama2c_bad");
  const std::array<std::int32_t, 7> good{16, 24, 2, 4, 2, 10, 6};
  const std::size_t n = float_count(good);

  const auto truncated = dir / "truncated.bin";
  write_checkpoint(truncated, good, n - 1);
  CHECK_THROWS_AS(read_llama2c(truncated), IoError);
  CHECK_THAT(message_of(truncated),
             Catch::Contains("truncated.bin") && Catch::Contains(std::to_string(28 + 4 * n)) &&
                 Catch::Contains(std::to_string(28 + 4 * (n - 1))));
  const auto longer = dir / "longer.bin";
  write_checkpoint(longer, good, n + 1);
  CHECK_THAT(message_of(longer), Catch::Contains("must be " + std::to_string(28 + 4 * n) + " bytes"));
  // Sign flipped: an unshared classifier is expected but absent.
  const auto unshared = dir / "unshared_missing.bin";
  auto flipped = good;
  flipped[5] = -10;
  write_checkpoint(unshared, flipped, n);
  CHECK_THROWS_AS(read_llama2c(unshared), IoError);

  const auto header_only = dir / "short.bin";
  std::ofstream(header_only, std::ios::binary) << "0123456789";
  CHECK_THAT(message_of(header_only), Catch::Contains("10 bytes") && Catch::Contains("header"));
  const auto empty = dir / "empty.bin";
  std::ofstream(empty, std::ios::binary).close();
  CHECK_THROWS_AS(read_llama2c(empty), IoError);
  CHECK_THROWS_AS(read_llama2c(dir / "absent.bin"), IoError);

  const auto magic = dir / "v1.bin";
  write_checkpoint(magic, {0x616b3432, 1, 64, 8, 8, 4, 4}, 16);
  CHECK_THAT(message_of(magic), Catch::Contains("ak42"));

  struct Case {
    std::array<std::int32_t, 7> header;
    const char* fragment;
  };
  const Case cases[] = {
      {{0, 24, 2, 4, 2, 10, 6}, "'dim' must be positive, got 0"},
      {{16, 0, 2, 4, 2, 10, 6}, "'hidden_dim' must be positive, got 0"},
      {{16, 24, -1, 4, 2, 10, 6}, "'n_layers' must be positive, got -1"},
      {{16, 24, 2, 0, 2, 10, 6}, "'n_heads' must be positive, got 0"},
      {{16, 24, 2, 4, 0, 10, 6}, "'n_kv_heads' must be positive, got 0"},
      {{16, 24, 2, 4, 2, 0, 6}, "'vocab_size' must be non-zero"},
      {{16, 24, 2, 4, 2, 10, 0}, "'seq_len' must be positive, got 0"},
      {{16, 24, 2, 5, 5, 10, 6}, "dim (16) is not a multiple of n_heads (5)"},
      {{16, 24, 2, 4, 3, 10, 6}, "n_heads (4) is not a multiple of n_kv_heads (3)"},
      {{6, 24, 2, 2, 2, 10, 6}, "head_dim must be even"},
  };
  for (const auto& [header, fragment] : cases) {
    INFO(fragment);
    const auto p = dir / "header.bin";
    write_checkpoint(p, header, 64);
    CHECK_THROWS_AS(read_llama2c(p), ConfigError);
    CHECK_THAT(message_of(p), Catch::Contains(fragment) && Catch::Contains("header.bin"));
  }
  // Huge header values must not overflow into a small expected size.
  const auto huge = dir / "huge.bin";
  write_checkpoint(huge, {1 << 30, 1 << 30, 1 << 30, 2, 2, 1 << 30, 1 << 30}, 4);
  CHECK_THROWS_AS(read_llama2c(huge), IoError);
}
