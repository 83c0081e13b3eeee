// The in-memory description of a Llama-family decoder (Llama, Qwen2, Mistral, llama2.c).
// Every loader (HF config.json, llama2.c header) fills this one struct; the runtime reads only it.
#pragma once

#include "fragile/backend/backend.hpp"
#include "fragile/core/dtype.hpp"
#include "fragile/core/error.hpp"
#include "fragile/model/linear_kind.hpp"

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fragile::model {

enum class Architecture { kLlama, kQwen2, kMistral };

constexpr std::string_view architecture_name(Architecture a) noexcept {
  switch (a) {
    case Architecture::kLlama: return "llama";
    case Architecture::kQwen2: return "qwen2";
    case Architecture::kMistral: return "mistral";
  }
  return "?";
}

/// How RoPE pairs the dimensions of a head (a kernel parameter, so the backend defines it).
using RopeStyle = backend::RopeStyle;

struct RopeScaling {
  enum class Type { kNone, kLlama3 };
  Type type = Type::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  std::size_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  Architecture architecture = Architecture::kLlama;
  std::size_t hidden_size = 0;
  std::size_t intermediate_size = 0;
  std::size_t num_hidden_layers = 0;
  std::size_t num_attention_heads = 0;
  std::size_t num_key_value_heads = 0;
  std::size_t head_dim = 0;
  std::size_t vocab_size = 0;
  std::size_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  RopeStyle rope_style = RopeStyle::kHalf;
  bool tie_word_embeddings = false;
  bool attention_bias = false;           ///< q/k/v projections carry a bias (Qwen2)
  std::optional<std::size_t> sliding_window;  ///< Mistral; nullopt = full causal attention
  /// Layers with index >= this attend within `sliding_window` (0 for Mistral: every layer;
  /// Qwen2's `max_window_layers`); ignored when sliding_window is nullopt.
  std::size_t first_sliding_window_layer = 0;
  DType torch_dtype = DType::kF32;       ///< storage dtype of the checkpoint
  std::optional<int> bos_token_id;
  std::optional<int> eos_token_id;      ///< the first of eos_token_ids
  std::vector<int> eos_token_ids;       ///< all end-of-sequence ids (Llama 3 lists several)

  [[nodiscard]] std::size_t q_dim() const noexcept { return num_attention_heads * head_dim; }
  [[nodiscard]] std::size_t kv_dim() const noexcept { return num_key_value_heads * head_dim; }

  /// The attention window of block `layer`, or nullopt for full causal attention.
  [[nodiscard]] std::optional<std::size_t> attention_window(std::size_t layer) const noexcept {
    if (sliding_window && layer >= first_sliding_window_layer) return sliding_window;
    return std::nullopt;
  }

  /// Checks internal consistency; throws ConfigError naming `source` and the offending field.
  void validate(std::string_view source) const {
    auto positive = [&](std::size_t v, std::string_view field) {
      require<ConfigError>(v > 0, "{}: '{}' must be positive, got {}", source, field, v);
    };
    positive(hidden_size, "hidden_size");
    positive(intermediate_size, "intermediate_size");
    positive(num_hidden_layers, "num_hidden_layers");
    positive(num_attention_heads, "num_attention_heads");
    positive(num_key_value_heads, "num_key_value_heads");
    positive(head_dim, "head_dim");
    positive(vocab_size, "vocab_size");
    positive(max_position_embeddings, "max_position_embeddings");
    require<ConfigError>(num_attention_heads % num_key_value_heads == 0,
                         "{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                         source, num_attention_heads, num_key_value_heads);
    require<ConfigError>(head_dim % 2 == 0, "{}: head_dim must be even for RoPE, got {}", source,
                         head_dim);
    require<ConfigError>(rms_norm_eps > 0.0, "{}: rms_norm_eps must be positive, got {}", source,
                         rms_norm_eps);
    require<ConfigError>(rope_theta > 0.0, "{}: rope_theta must be positive, got {}", source,
                         rope_theta);
  }

  /// ConfigError naming `source` and the dimensions unless every f32 weight of the model is
  /// addressable: q_dim(), kv_dim(), linear_shape() and the weight count wrap silently in
  /// size_t, and a caller would size tensors and buffers from the wrapped values. Readers of
  /// untrusted configs call it (llama2.c checks its array sizes against the file instead).
  void require_addressable_weights(std::string_view source) const {
    bool overflow = false;
    auto mul = [&](std::size_t a, std::size_t b) {
      std::size_t r = 0;
      overflow |= __builtin_mul_overflow(a, b, &r);
      return r;
    };
    auto add = [&](std::size_t a, std::size_t b) {
      std::size_t r = 0;
      overflow |= __builtin_add_overflow(a, b, &r);
      return r;
    };
    const std::size_t q = mul(num_attention_heads, head_dim);
    const std::size_t kv = mul(num_key_value_heads, head_dim);
    const std::size_t block =
        add(add(mul(2, hidden_size), mul(2, mul(q, hidden_size))),
            add(mul(2, mul(kv, hidden_size)), mul(3, mul(intermediate_size, hidden_size))));
    const std::size_t weights = add(add(mul(num_hidden_layers, block), hidden_size),
                                    mul(tie_word_embeddings ? 1 : 2, mul(vocab_size, hidden_size)));
    (void)mul(weights, sizeof(float));
    require<ConfigError>(!overflow,
                         "{}: the weights of this config overflow the address space (hidden_size "
                         "{}, intermediate_size {}, num_hidden_layers {}, num_attention_heads {}, "
                         "num_key_value_heads {}, head_dim {}, vocab_size {})",
                         source, hidden_size, intermediate_size, num_hidden_layers,
                         num_attention_heads, num_key_value_heads, head_dim, vocab_size);
  }
};

/// HF module name of a block's linear layer, e.g. "model.layers.3.mlp.up_proj".
inline std::string linear_name(std::size_t block, LinearKind k) {
  return fmt::format("model.layers.{}.{}", block, linear_suffix(k));
}

/// (out_features, in_features) of a linear layer under `c`.
inline std::pair<std::size_t, std::size_t> linear_shape(const ModelConfig& c, LinearKind k) {
  switch (k) {
    case LinearKind::kQ: return {c.q_dim(), c.hidden_size};
    case LinearKind::kK:
    case LinearKind::kV: return {c.kv_dim(), c.hidden_size};
    case LinearKind::kO: return {c.hidden_size, c.q_dim()};
    case LinearKind::kGate:
    case LinearKind::kUp: return {c.intermediate_size, c.hidden_size};
    case LinearKind::kDown: return {c.hidden_size, c.intermediate_size};
  }
  return {0, 0};
}

}  // namespace fragile::model
