// Hugging Face `config.json` reader for the Llama, Qwen2 and Mistral families.
//
// Fills model::ModelConfig from the JSON that transformers' `save_pretrained` writes, in both
// layouts: 4.x (top-level `rope_theta`, `rope_scaling`, `torch_dtype`) and 5.x (a
// `rope_parameters` block holding rope_type / rope_theta / factor ..., and `dtype`).
// Nothing is guessed: a required field that is absent, a field of the wrong JSON type, an
// unknown model_type or a value fragile does not model is a ConfigError naming the field and
// the file. Where transformers itself defines a default, that family's default applies,
// exactly as its config class (transformers 5.x, same values as 4.x) does:
//
//   field                  | llama                 | qwen2                     | mistral
//   -----------------------+-----------------------+---------------------------+----------------------
//   hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, vocab_size,
//   max_position_embeddings, rms_norm_eps           : required (no default taken)
//   num_key_value_heads    | absent/null: n_heads  | absent: 32, null: n_heads | absent: 8, null: n_heads
//   head_dim               | absent/null: hidden/heads (all three; Qwen2 reads it via getattr)
//   hidden_act             | "silu" (only "silu" is supported)
//   tie_word_embeddings    | false                 | false                     | false
//   attention_bias         | false (true rejected: | always true for q/k/v     | no field: false
//                          |  it also biases o_proj)| (hard-coded in Qwen2Attention)
//   mlp_bias               | false (true rejected) | -                         | -
//   rope_theta             | 10000                 | 10000                     | 10000
//   rope type              | "default" (none)      | "default"                 | "default"
//   llama3 original_max_position_embeddings | absent: max_position_embeddings (transformers'
//                            standardize_rope_params)
//   sliding_window         | -                     | only if use_sliding_window | absent: 4096, null:
//                          |                       | (default false); window    |  full attention
//                          |                       | absent: 4096; layers >=    |  (all layers)
//                          |                       | max_window_layers (28) or  |
//                          |                       | as `layer_types` says      |
//   bos_token_id           | 1                     | none                      | 1
//   eos_token_id           | 2                     | none                      | 2
//   dtype / torch_dtype    | absent: F32 (transformers then loads float32)
//
// RoPE: `rope_scaling` (4.x) takes precedence over `rope_parameters` (5.x), and a rope_theta
// inside that block over the top-level one, as transformers' convert_rope_params_to_dict does;
// the legacy key "type" is read when "rope_type" is absent. Supported types: "default" (or a
// null / empty block) and "llama3"; "linear", "dynamic", "yarn", "longrope", ... are rejected.
#pragma once

#include "fragile/core/dtype.hpp"
#include "fragile/core/error.hpp"
#include "fragile/io/input_file.hpp"
#include "fragile/model/config.hpp"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fragile::io {

namespace detail {

/// Typed, field-naming access to one JSON object of a config file.
class JsonFields {
 public:
  JsonFields(const nlohmann::json& object, std::string_view source, std::string prefix = "")
      : j_(object), source_(source), prefix_(std::move(prefix)) {}

  /// Present and not null.
  [[nodiscard]] bool has(const char* key) const {
    auto it = j_.find(key);
    return it != j_.end() && !it->is_null();
  }
  [[nodiscard]] bool present(const char* key) const { return j_.contains(key); }

  [[nodiscard]] std::string name(const char* key) const { return prefix_ + key; }

  [[nodiscard]] const nlohmann::json& at(const char* key) const {
    require<ConfigError>(has(key), "{}: required field '{}' is missing", source_, name(key));
    return j_.at(key);
  }

  [[nodiscard]] std::size_t size(const char* key) const {
    const auto& v = at(key);
    require<ConfigError>(v.is_number_integer(), "{}: field '{}' must be an integer, got {}",
                         source_, name(key), v.dump());
    require<ConfigError>(v.is_number_unsigned() || v.get<std::int64_t>() >= 0,
                         "{}: field '{}' must be non-negative, got {}", source_, name(key),
                         v.dump());
    return v.get<std::size_t>();
  }
  [[nodiscard]] std::size_t size_or(const char* key, std::size_t fallback) const {
    return has(key) ? size(key) : fallback;
  }

  [[nodiscard]] double number(const char* key) const {
    const auto& v = at(key);
    require<ConfigError>(v.is_number(), "{}: field '{}' must be a number, got {}", source_,
                         name(key), v.dump());
    return v.get<double>();
  }
  [[nodiscard]] double number_or(const char* key, double fallback) const {
    return has(key) ? number(key) : fallback;
  }

  [[nodiscard]] bool boolean_or(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    const auto& v = j_.at(key);
    require<ConfigError>(v.is_boolean(), "{}: field '{}' must be true or false, got {}", source_,
                         name(key), v.dump());
    return v.get<bool>();
  }

  [[nodiscard]] std::string string(const char* key) const {
    const auto& v = at(key);
    require<ConfigError>(v.is_string(), "{}: field '{}' must be a string, got {}", source_,
                         name(key), v.dump());
    return v.get<std::string>();
  }
  [[nodiscard]] std::string string_or(const char* key, std::string fallback) const {
    return has(key) ? string(key) : fallback;
  }

  /// A token id (int) or, when `allow_list`, a list of them (Llama 3's eos_token_id).
  [[nodiscard]] std::vector<int> token_ids(const char* key, bool allow_list) const {
    const auto& v = at(key);
    auto one = [&](const nlohmann::json& x) {
      require<ConfigError>(x.is_number_integer() && x.get<std::int64_t>() >= 0 &&
                               x.get<std::int64_t>() <= std::numeric_limits<int>::max(),
                           "{}: field '{}' must hold non-negative integer token ids, got {}",
                           source_, name(key), v.dump());
      return x.get<int>();
    };
    std::vector<int> out;
    if (allow_list && v.is_array()) {
      for (const auto& x : v) out.push_back(one(x));
      require<ConfigError>(!out.empty(), "{}: field '{}' is an empty list", source_, name(key));
    } else {
      out.push_back(one(v));
    }
    return out;
  }

  [[nodiscard]] std::string_view source() const noexcept { return source_; }

 private:
  const nlohmann::json& j_;
  std::string_view source_;
  std::string prefix_;
};

inline DType parse_hf_dtype(const std::string& s, std::string_view source, std::string_view field) {
  if (s == "float32") return DType::kF32;
  if (s == "float16") return DType::kF16;
  if (s == "bfloat16") return DType::kBF16;
  raise<ConfigError>("{}: field '{}' is '{}', expected float32, float16 or bfloat16", source,
                     field, s);
}

inline void parse_rope(const JsonFields& top, const nlohmann::json& j, model::ModelConfig& c) {
  const std::string_view source = top.source();
  // 4.x `rope_scaling` wins over 5.x `rope_parameters` (transformers: rope_scaling or ...).
  // Python's `or`: an empty rope_scaling block counts as absent.
  const bool scaling = top.has("rope_scaling") && !j.at("rope_scaling").empty();
  const char* block_key = scaling ? "rope_scaling" : "rope_parameters";
  double theta = top.number_or("rope_theta", 10000.0);
  c.rope_scaling = model::RopeScaling{};
  if (!top.has(block_key)) {
    c.rope_theta = theta;
    return;
  }
  const auto& block = j.at(block_key);
  require<ConfigError>(block.is_object(), "{}: field '{}' must be an object or null, got {}",
                       source, block_key, block.dump());
  JsonFields rope(block, source, std::string(block_key) + ".");
  // Per-layer-type nested blocks (Gemma-style) have no flat rope_theta / rope_type.
  for (const auto& [key, value] : block.items())
    require<ConfigError>(!value.is_object(),
                         "{}: field '{}.{}' is a nested block; per-layer-type RoPE parameters are "
                         "not supported for this family",
                         source, block_key, key);
  if (rope.has("rope_theta")) theta = rope.number("rope_theta");
  c.rope_theta = theta;

  const std::string type = rope.has("rope_type") ? rope.string("rope_type")
                                                 : rope.string_or("type", "default");
  if (rope.has("partial_rotary_factor"))
    require<ConfigError>(rope.number("partial_rotary_factor") == 1.0,
                         "{}: field '{}partial_rotary_factor' is {}; only full rotary (1.0) is "
                         "supported",
                         source, std::string(block_key) + ".", rope.number("partial_rotary_factor"));
  if (type == "default") return;
  if (type == "llama3") {
    auto& s = c.rope_scaling;
    s.type = model::RopeScaling::Type::kLlama3;
    s.factor = rope.number("factor");
    s.low_freq_factor = rope.number("low_freq_factor");
    s.high_freq_factor = rope.number("high_freq_factor");
    s.original_max_position_embeddings =
        rope.size_or("original_max_position_embeddings", c.max_position_embeddings);
    require<ConfigError>(s.factor >= 1.0, "{}: field '{}.factor' must be >= 1, got {}", source,
                         block_key, s.factor);
    require<ConfigError>(s.high_freq_factor > s.low_freq_factor && s.low_freq_factor > 0.0,
                         "{}: '{}' needs 0 < low_freq_factor < high_freq_factor, got {} and {}",
                         source, block_key, s.low_freq_factor, s.high_freq_factor);
    require<ConfigError>(s.original_max_position_embeddings > 0,
                         "{}: field '{}.original_max_position_embeddings' must be positive", source,
                         block_key);
    return;
  }
  raise<ConfigError>("{}: field '{}.rope_type' is '{}', which fragile does not support (supported: "
                     "default, llama3)",
                     source, block_key, type);
}

}  // namespace detail

inline constexpr std::string_view kSupportedModelTypes = "llama, qwen2, mistral";

/// Builds a ModelConfig from a parsed config.json; `source` names it in error messages.
inline model::ModelConfig parse_hf_config(const nlohmann::json& j, std::string_view source) {
  using model::Architecture;
  require<ConfigError>(j.is_object(), "{}: expected a JSON object at top level, got {}", source,
                       j.type_name());
  detail::JsonFields f(j, source);
  model::ModelConfig c;

  const std::string type = f.string("model_type");
  if (type == "llama") c.architecture = Architecture::kLlama;
  else if (type == "qwen2") c.architecture = Architecture::kQwen2;
  else if (type == "mistral") c.architecture = Architecture::kMistral;
  else
    raise<ConfigError>("{}: model_type '{}' is not supported (supported: {})", source, type,
                       kSupportedModelTypes);
  const bool llama = c.architecture == Architecture::kLlama;
  const bool qwen2 = c.architecture == Architecture::kQwen2;
  const bool mistral = c.architecture == Architecture::kMistral;

  c.hidden_size = f.size("hidden_size");
  c.intermediate_size = f.size("intermediate_size");
  c.num_hidden_layers = f.size("num_hidden_layers");
  c.num_attention_heads = f.size("num_attention_heads");
  c.vocab_size = f.size("vocab_size");
  c.max_position_embeddings = f.size("max_position_embeddings");
  c.rms_norm_eps = f.number("rms_norm_eps");
  require<ConfigError>(c.num_attention_heads > 0, "{}: 'num_attention_heads' must be positive",
                       source);

  // Absent and null differ for Qwen2 and Mistral (class default vs __post_init__).
  if (f.has("num_key_value_heads")) c.num_key_value_heads = f.size("num_key_value_heads");
  else if (f.present("num_key_value_heads") || llama) c.num_key_value_heads = c.num_attention_heads;
  else c.num_key_value_heads = qwen2 ? 32 : 8;

  if (f.has("head_dim")) {
    c.head_dim = f.size("head_dim");
  } else {
    require<ConfigError>(c.hidden_size % c.num_attention_heads == 0,
                         "{}: 'head_dim' is absent and hidden_size ({}) is not a multiple of "
                         "num_attention_heads ({})",
                         source, c.hidden_size, c.num_attention_heads);
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }

  const std::string act = f.string_or("hidden_act", "silu");
  require<ConfigError>(act == "silu", "{}: field 'hidden_act' is '{}'; only 'silu' is supported",
                       source, act);

  c.tie_word_embeddings = f.boolean_or("tie_word_embeddings", false);
  if (llama) {
    require<ConfigError>(!f.boolean_or("attention_bias", false),
                         "{}: field 'attention_bias' is true (Llama biases q/k/v and o_proj); "
                         "fragile supports only bias-free Llama attention",
                         source);
    require<ConfigError>(!f.boolean_or("mlp_bias", false),
                         "{}: field 'mlp_bias' is true; fragile supports only bias-free MLPs",
                         source);
  }
  c.attention_bias = qwen2;

  detail::parse_rope(f, j, c);
  c.rope_style = model::RopeStyle::kHalf;

  c.sliding_window.reset();
  c.first_sliding_window_layer = 0;
  if (mistral) {
    if (!f.present("sliding_window")) c.sliding_window = 4096;
    else if (f.has("sliding_window")) c.sliding_window = f.size("sliding_window");
  } else if (qwen2 && f.boolean_or("use_sliding_window", false)) {
    if (!f.present("sliding_window")) c.sliding_window = 4096;
    else if (f.has("sliding_window")) c.sliding_window = f.size("sliding_window");
    if (c.sliding_window) {
      c.first_sliding_window_layer = f.size_or("max_window_layers", 28);
      if (f.has("layer_types")) {
        // Qwen2Model reads layer_types; fragile models "full below k, sliding from k on".
        const auto& types = j.at("layer_types");
        require<ConfigError>(types.is_array() && types.size() == c.num_hidden_layers,
                             "{}: field 'layer_types' must be a list of {} strings", source,
                             c.num_hidden_layers);
        std::size_t first = types.size();
        for (std::size_t i = 0; i < types.size(); ++i) {
          require<ConfigError>(types[i].is_string(), "{}: field 'layer_types[{}]' must be a string",
                               source, i);
          const auto t = types[i].get<std::string>();
          require<ConfigError>(t == "full_attention" || t == "sliding_attention",
                               "{}: field 'layer_types[{}]' is '{}', expected full_attention or "
                               "sliding_attention",
                               source, i, t);
          if (t == "sliding_attention" && first == types.size()) first = i;
          require<ConfigError>(t == "sliding_attention" || first == types.size(),
                               "{}: field 'layer_types' has full_attention at layer {} after "
                               "sliding_attention at layer {}; only a full prefix then sliding "
                               "layers is supported",
                               source, i, first);
        }
        c.first_sliding_window_layer = first;
      }
      if (c.first_sliding_window_layer >= c.num_hidden_layers) c.sliding_window.reset();
    }
  }
  if (c.sliding_window)
    require<ConfigError>(*c.sliding_window > 0, "{}: field 'sliding_window' must be positive",
                         source);

  // 5.x writes `dtype`, 4.x `torch_dtype`; both must agree when both are present.
  std::optional<DType> dtype;
  for (const char* key : {"dtype", "torch_dtype"}) {
    if (!f.has(key)) continue;
    const DType d = detail::parse_hf_dtype(f.string(key), source, key);
    require<ConfigError>(!dtype || *dtype == d, "{}: fields 'dtype' and 'torch_dtype' disagree",
                         source);
    dtype = d;
  }
  c.torch_dtype = dtype.value_or(DType::kF32);

  const bool has_token_defaults = llama || mistral;
  c.bos_token_id.reset();
  c.eos_token_id.reset();
  c.eos_token_ids.clear();
  if (f.has("bos_token_id")) c.bos_token_id = f.token_ids("bos_token_id", false).front();
  else if (!f.present("bos_token_id") && has_token_defaults) c.bos_token_id = 1;
  if (f.has("eos_token_id")) c.eos_token_ids = f.token_ids("eos_token_id", true);
  else if (!f.present("eos_token_id") && has_token_defaults) c.eos_token_ids = {2};
  if (!c.eos_token_ids.empty()) c.eos_token_id = c.eos_token_ids.front();

  c.validate(source);
  c.require_addressable_weights(source);
  return c;
}

/// Reads `path` (a config.json, or a model folder holding one).
inline model::ModelConfig read_hf_config(const std::filesystem::path& path) {
  const auto file = std::filesystem::is_directory(path) ? path / "config.json" : path;
  const std::string text = read_input_file(file, "HF config");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    raise<ConfigError>("{}: not valid JSON: {}", file.string(), e.what());
  }
  return parse_hf_config(j, file.string());
}

}  // namespace fragile::io
