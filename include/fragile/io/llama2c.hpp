// llama2.c checkpoint reader (legacy "v0" export of karpathy/llama2.c, e.g. the tinyllamas
// stories15M / stories260K models).
//
// Layout (little-endian): 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
// seq_len; a negative vocab_size means an unshared classifier), then float32 arrays, each
// row-major [out][in]:
//   token_embedding [vocab][dim], rms_att [L][dim], wq [L][n_heads*hs][dim],
//   wk [L][n_kv*hs][dim], wv [L][n_kv*hs][dim], wo [L][dim][n_heads*hs], rms_ffn [L][dim],
//   w1 [L][hidden][dim], w2 [L][dim][hidden], w3 [L][hidden][dim], rms_final [dim],
//   freq_cis_real [seq_len][hs/2], freq_cis_imag [seq_len][hs/2] (legacy, skipped),
//   wcls [vocab][dim] (only when unshared)
// with hs = dim / n_heads. The file stays mmapped; each array is registered in a TensorStore
// under its Hugging Face name (w1 = gate_proj, w2 = down_proj, w3 = up_proj). The weights are
// kept as exported: llama2.c rotates adjacent pairs (x[2i], x[2i+1]), so the config says
// RopeStyle::kInterleaved instead of permuting wq/wk into HF's rotate_half order.
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/core/mapped_file.hpp"
#include "fragile/io/tensor_store.hpp"
#include "fragile/model/config.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

namespace fragile::io {

/// A model description plus its weights, indexed by HF tensor name.
struct Checkpoint {
  model::ModelConfig config;
  TensorStore weights;
};

/// llama2.c's fixed RMSNorm epsilon (run.c: `ss += 1e-5f`).
inline constexpr double kLlama2cRmsNormEps = 1e-5;
/// llama2.c's RoPE base (run.c: `powf(10000.0f, head_dim / (float)head_size)`).
inline constexpr double kLlama2cRopeTheta = 10000.0;
/// First int32 of the later "version 1/2" exports ('ak42'), which this reader does not handle.
inline constexpr std::uint32_t kLlama2cVersionedMagic = 0x616b3432;

/// The 7-int32 header of a v0 checkpoint.
struct Llama2cHeader {
  std::int32_t dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0,
               vocab_size = 0, seq_len = 0;
};

namespace detail {

/// a * b, IoError naming `what` on overflow.
inline std::size_t checked_mul(std::size_t a, std::size_t b, const std::string& what) {
  std::size_t r = 0;
  if (__builtin_mul_overflow(a, b, &r))
    raise<IoError>("{}: array sizes overflow ({} x {})", what, a, b);
  return r;
}

}  // namespace detail

/// Reads and validates the header and derives the ModelConfig (no weights).
inline model::ModelConfig llama2c_config(const Llama2cHeader& h, const std::string& source) {
  auto positive = [&](std::int32_t v, const char* field) {
    require<ConfigError>(v > 0, "{}: llama2.c header field '{}' must be positive, got {}", source,
                         field, v);
  };
  positive(h.dim, "dim");
  positive(h.hidden_dim, "hidden_dim");
  positive(h.n_layers, "n_layers");
  positive(h.n_heads, "n_heads");
  positive(h.n_kv_heads, "n_kv_heads");
  require<ConfigError>(h.vocab_size != 0 && h.vocab_size != INT32_MIN,
                       "{}: llama2.c header field 'vocab_size' must be non-zero, got {}", source,
                       h.vocab_size);
  positive(h.seq_len, "seq_len");
  require<ConfigError>(h.dim % h.n_heads == 0,
                       "{}: llama2.c dim ({}) is not a multiple of n_heads ({})", source, h.dim,
                       h.n_heads);
  require<ConfigError>(h.n_heads % h.n_kv_heads == 0,
                       "{}: llama2.c n_heads ({}) is not a multiple of n_kv_heads ({})", source,
                       h.n_heads, h.n_kv_heads);

  model::ModelConfig c;
  c.architecture = model::Architecture::kLlama;
  c.hidden_size = static_cast<std::size_t>(h.dim);
  c.intermediate_size = static_cast<std::size_t>(h.hidden_dim);
  c.num_hidden_layers = static_cast<std::size_t>(h.n_layers);
  c.num_attention_heads = static_cast<std::size_t>(h.n_heads);
  c.num_key_value_heads = static_cast<std::size_t>(h.n_kv_heads);
  c.head_dim = c.hidden_size / c.num_attention_heads;
  c.vocab_size = static_cast<std::size_t>(h.vocab_size < 0 ? -static_cast<std::int64_t>(h.vocab_size)
                                                           : h.vocab_size);
  c.max_position_embeddings = static_cast<std::size_t>(h.seq_len);
  c.rms_norm_eps = kLlama2cRmsNormEps;
  c.rope_theta = kLlama2cRopeTheta;
  c.rope_style = model::RopeStyle::kInterleaved;
  c.tie_word_embeddings = h.vocab_size > 0;
  c.attention_bias = false;
  c.sliding_window.reset();
  c.torch_dtype = DType::kF32;
  // llama2.c's sentencepiece vocabularies: <unk>=0, <s>=1, </s>=2 (run.c: BOS 1, EOS 2).
  c.bos_token_id = 1;
  c.eos_token_id = 2;
  c.eos_token_ids = {2};
  c.validate(source);
  return c;
}

/// Maps a llama2.c v0 checkpoint. Throws IoError (unreadable, wrong size, versioned export) or
/// ConfigError (header values) naming the file and the numbers.
inline Checkpoint read_llama2c(const std::filesystem::path& path) {
  MappedFile file(path);
  const std::string source = path.string();
  constexpr std::size_t kHeaderBytes = 7 * sizeof(std::int32_t);
  require<IoError>(file.size() >= kHeaderBytes,
                   "{}: {} bytes, too short for the 28-byte llama2.c header", source, file.size());
  std::array<std::int32_t, 7> raw{};
  std::memcpy(raw.data(), file.data(), kHeaderBytes);
  require<IoError>(static_cast<std::uint32_t>(raw[0]) != kLlama2cVersionedMagic,
                   "{}: starts with magic 'ak42' (a llama2.c version 1/2 export); only the legacy "
                   "v0 format is supported",
                   source);
  const Llama2cHeader h{raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6]};
  Checkpoint ck{llama2c_config(h, source), TensorStore("llama2.c checkpoint '" + source + "'")};
  const auto& c = ck.config;

  const std::size_t dim = c.hidden_size, hidden = c.intermediate_size, layers = c.num_hidden_layers;
  const std::size_t q_dim = c.q_dim(), kv_dim = c.kv_dim(), vocab = c.vocab_size;
  const std::size_t seq = c.max_position_embeddings, hs = c.head_dim;
  auto mul = [&](std::size_t a, std::size_t b) { return detail::checked_mul(a, b, source); };

  // Total float count, in file order, with overflow checks.
  const std::size_t per_layer = mul(2, dim) + mul(q_dim, dim) + mul(2, mul(kv_dim, dim)) +
                                mul(dim, q_dim) + mul(3, mul(hidden, dim));
  std::size_t floats = mul(vocab, dim);
  auto add = [&](std::size_t n) {
    require<IoError>(floats <= SIZE_MAX - n, "{}: size of arrays overflows", source);
    floats += n;
  };
  add(mul(layers, per_layer));
  add(dim);
  add(mul(seq, hs));  // freq_cis_real + freq_cis_imag, each seq_len x hs/2
  if (!c.tie_word_embeddings) add(mul(vocab, dim));
  const std::size_t expected = kHeaderBytes + mul(floats, sizeof(float));
  require<IoError>(file.size() == expected,
                   "{}: llama2.c checkpoint (dim {}, hidden_dim {}, n_layers {}, n_heads {}, "
                   "n_kv_heads {}, vocab_size {}, seq_len {}) must be {} bytes, file has {}",
                   source, h.dim, h.hidden_dim, h.n_layers, h.n_heads, h.n_kv_heads, h.vocab_size,
                   h.seq_len, expected, file.size());

  const std::size_t f = ck.weights.add_file(std::move(file));
  std::size_t offset = kHeaderBytes;
  auto put = [&](std::string name, std::vector<std::size_t> shape) {
    TensorInfo info{std::move(name), DType::kF32, std::move(shape), f, offset, 0};
    info.nbytes = info.numel() * sizeof(float);
    offset += info.nbytes;
    ck.weights.add_tensor(std::move(info));
  };
  // One stacked [L][...] array per kind: layer l's slice follows layer l-1's.
  auto per_layer_arrays = [&](const char* suffix, std::vector<std::size_t> shape) {
    for (std::size_t l = 0; l < layers; ++l)
      put(fmt::format("model.layers.{}.{}.weight", l, suffix), shape);
  };
  put("model.embed_tokens.weight", {vocab, dim});
  per_layer_arrays("input_layernorm", {dim});
  per_layer_arrays("self_attn.q_proj", {q_dim, dim});
  per_layer_arrays("self_attn.k_proj", {kv_dim, dim});
  per_layer_arrays("self_attn.v_proj", {kv_dim, dim});
  per_layer_arrays("self_attn.o_proj", {dim, q_dim});
  per_layer_arrays("post_attention_layernorm", {dim});
  per_layer_arrays("mlp.gate_proj", {hidden, dim});  // w1
  per_layer_arrays("mlp.down_proj", {dim, hidden});  // w2
  per_layer_arrays("mlp.up_proj", {hidden, dim});    // w3
  put("model.norm.weight", {dim});
  offset += seq * hs * sizeof(float);  // skip freq_cis_real / freq_cis_imag
  if (!c.tie_word_embeddings) put("lm_head.weight", {vocab, dim});

  ck.weights.set_metadata("format", "llama2.c v0");
  ck.weights.set_metadata("rope_style", "interleaved");
  return ck;
}

}  // namespace fragile::io
