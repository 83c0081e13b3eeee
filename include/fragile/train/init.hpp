// Fresh weights for a model to be trained, as transformers' _init_weights draws them for the
// Llama family: every matrix (embeddings, linears, LM head) from N(0, initializer_range^2),
// norm weights 1, biases 0. Seeded: each tensor draws from Rng(seed).fork(its index in HF
// order), so the weights do not depend on the thread count.
#pragma once

#include "fragile/core/rng.hpp"
#include "fragile/model/config.hpp"
#include "fragile/model/transformer.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace fragile::train {

/// Every tensor `c` needs, initialised (HF names).
inline model::NamedTensors init_weights(const model::ModelConfig& c, std::uint64_t seed,
                                        double initializer_range = 0.02) {
  c.validate("init_weights");
  model::NamedTensors w;
  std::uint64_t stream = 0;
  const Rng base(seed);
  auto normal = [&](const std::string& name, std::size_t n) {
    Rng rng = base.fork(stream++);
    auto& v = w[name];
    v.resize(n);
    for (auto& x : v) x = static_cast<float>(initializer_range * rng.normal());
  };
  auto constant = [&](const std::string& name, std::size_t n, float value) {
    ++stream;
    w[name].assign(n, value);
  };
  const std::size_t C = c.hidden_size;
  normal("model.embed_tokens.weight", c.vocab_size * C);
  for (std::size_t i = 0; i < c.num_hidden_layers; ++i) {
    for (auto k : model::kAllLinearKinds) {
      const auto [out, in] = model::linear_shape(c, k);
      normal(model::linear_name(i, k) + ".weight", out * in);
      const bool qkv = k == model::LinearKind::kQ || k == model::LinearKind::kK ||
                       k == model::LinearKind::kV;
      if (c.attention_bias && qkv) constant(model::linear_name(i, k) + ".bias", out, 0.0f);
    }
    constant(fmt::format("model.layers.{}.input_layernorm.weight", i), C, 1.0f);
    constant(fmt::format("model.layers.{}.post_attention_layernorm.weight", i), C, 1.0f);
  }
  constant("model.norm.weight", C, 1.0f);
  if (!c.tie_word_embeddings) normal("lm_head.weight", c.vocab_size * C);
  return w;
}

/// The model's parameters as named tensors (for writing a checkpoint).
template <class Model>
model::NamedTensors named_tensors(Model& m) {
  model::NamedTensors out;
  for (const auto& p : m.parameters()) out[p.name].assign(p.value.begin(), p.value.end());
  return out;
}

}  // namespace fragile::train
