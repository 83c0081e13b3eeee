// A tiny randomly initialised Llama-family model built in memory, for runtime and eval tests.
#pragma once

#include <fragile/backend/cpu.hpp>
#include <fragile/core/rng.hpp>
#include <fragile/model/config.hpp>
#include <fragile/model/transformer.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace fragile::test {

struct TinySpec {
  model::Architecture architecture = model::Architecture::kLlama;
  model::RopeStyle rope_style = model::RopeStyle::kHalf;
  bool attention_bias = false;
  bool tie = false;
  std::optional<std::size_t> sliding_window = std::nullopt;
  std::size_t kv_heads = 2;
  double weight_std = 0.3;
  std::uint64_t seed = 42;
};

inline model::ModelConfig tiny_config(const TinySpec& s = {}) {
  model::ModelConfig c;
  c.architecture = s.architecture;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = s.kv_heads;
  c.head_dim = 4;
  c.vocab_size = 32;
  c.max_position_embeddings = 32;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.rope_style = s.rope_style;
  c.tie_word_embeddings = s.tie;
  c.attention_bias = s.attention_bias;
  c.sliding_window = s.sliding_window;
  return c;
}

/// Every tensor the runtime reads, with its shape.
inline std::map<std::string, std::vector<std::size_t>> tiny_shapes(const model::ModelConfig& c) {
  std::map<std::string, std::vector<std::size_t>> shapes;
  shapes["model.embed_tokens.weight"] = {c.vocab_size, c.hidden_size};
  shapes["model.norm.weight"] = {c.hidden_size};
  if (!c.tie_word_embeddings) shapes["lm_head.weight"] = {c.vocab_size, c.hidden_size};
  for (std::size_t i = 0; i < c.num_hidden_layers; ++i) {
    shapes[fmt::format("model.layers.{}.input_layernorm.weight", i)] = {c.hidden_size};
    shapes[fmt::format("model.layers.{}.post_attention_layernorm.weight", i)] = {c.hidden_size};
    for (auto k : model::kAllLinearKinds) {
      const auto [out, in] = model::linear_shape(c, k);
      shapes[model::linear_name(i, k) + ".weight"] = {out, in};
      if (c.attention_bias &&
          (k == model::LinearKind::kQ || k == model::LinearKind::kK || k == model::LinearKind::kV))
        shapes[model::linear_name(i, k) + ".bias"] = {out};
    }
  }
  return shapes;
}

inline model::NamedTensors tiny_weights(const model::ModelConfig& c, const TinySpec& s = {}) {
  Rng rng(s.seed);
  model::NamedTensors w;
  for (const auto& [name, shape] : tiny_shapes(c)) {
    std::size_t n = 1;
    for (auto d : shape) n *= d;
    auto& v = w[name];
    v.resize(n);
    const bool norm = name.find("norm") != std::string::npos;
    const bool bias = name.ends_with(".bias");
    for (auto& x : v)
      x = static_cast<float>(norm ? 1.0 + 0.1 * rng.normal() : (bias ? 0.1 : s.weight_std) * rng.normal());
  }
  return w;
}

template <class B = cpu>
model::Transformer<B> tiny_model(const TinySpec& s = {}) {
  const auto c = tiny_config(s);
  return model::Transformer<B>(c, tiny_weights(c, s));
}

/// `n` windows of `len` ids drawn uniformly from the vocabulary.
inline std::vector<model::TokenIds> random_windows(std::size_t n, std::size_t len, std::size_t vocab,
                                                 std::uint64_t seed = 7) {
  Rng rng(seed);
  std::vector<model::TokenIds> w(n, model::TokenIds(len));
  for (auto& win : w)
    for (auto& id : win) id = static_cast<std::int32_t>(rng.below(vocab));
  return w;
}

}  // namespace fragile::test
