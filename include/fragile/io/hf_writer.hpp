// Hugging Face model directory writer: the inverse of read_hf_config + open_safetensors.
//
// write_hf_model(dir, config, tensors, options) writes what transformers' save_pretrained
// writes for LlamaForCausalLM / Qwen2ForCausalLM / MistralForCausalLM in the transformers 5
// layout, so that AutoModelForCausalLM.from_pretrained(dir) loads it and computes what fragile
// computes:
//   config.json             hf_config_json(config): keys sorted, `dtype` (not torch_dtype), a
//                           `rope_parameters` block (rope_theta, rope_type, llama3 factors)
//   generation_config.json  bos/eos ids as GenerationConfig.from_model_config writes them
//   model.safetensors       f32 tensors under HF names, metadata {"format": "pt"}
//   tokenizer.json          copied from options.tokenizer_json (when set), and
//   tokenizer_config.json   {"backend": "tokenizers", "tokenizer_class": "TokenizersBackend",
//                           special-token strings, model_max_length} as transformers 5 writes
//                           for a tokenizer built from a tokenizer.json alone
// Every file is written atomically (io::write_atomically). Reading the directory back gives a
// ModelConfig equal to `config` in every field the runtime reads; torch_dtype becomes F32 (the
// tensors are stored as f32; hf_config_json alone writes the config's dtype) and rope_style
// kHalf (see below).
//
// Fields the config class has but fragile does not model get the class defaults that
// save_pretrained writes (attention_dropout 0, initializer_range 0.02, use_cache, pad_token_id
// null, pretraining_tp 1): they do not change the forward pass.
//
// llama2.c checkpoints (RopeStyle::kInterleaved) rotate adjacent pairs (x[2i], x[2i+1]); HF
// rotates (x[i], x[i + d/2]) and has no setting for the other layout. write_hf_model therefore
// permutes the rows of every q_proj / k_proj weight (and bias) within each head, new row i =
// old row 2i and new row d/2 + i = old row 2i + 1 (what transformers' convert_llama_weights_to_hf
// does to Meta checkpoints), and writes a rotate_half config: q.k per head is unchanged, so the
// model computes the same function (up to f32 summation order in attention scores).
// hf_config_json alone refuses kInterleaved, since the JSON would be wrong for unpermuted weights.
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/io/input_file.hpp"
#include "fragile/io/atomic_file.hpp"
#include "fragile/io/safetensors.hpp"
#include "fragile/model/config.hpp"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fragile::io {

/// The transformers release whose save_pretrained layout this writer reproduces.
inline constexpr std::string_view kHfWriterTransformersVersion = "5.23.0";

struct HfWriteOptions {
  /// A tokenizer.json to copy beside the model (and describe in tokenizer_config.json).
  std::optional<std::filesystem::path> tokenizer_json;
  /// Special-token strings for tokenizer_config.json (null there when absent).
  std::optional<std::string> bos_token, eos_token, pad_token, unk_token;
  /// tokenizer_config.json's model_max_length; absent: the config's max_position_embeddings.
  std::optional<std::size_t> model_max_length;
  /// Allow writing into a directory that already holds files (they are replaced or kept).
  bool overwrite = false;
};

namespace detail {

/// HF config class name per family ("LlamaForCausalLM", ...).
inline std::string_view hf_architecture_class(model::Architecture a) {
  switch (a) {
    case model::Architecture::kLlama: return "LlamaForCausalLM";
    case model::Architecture::kQwen2: return "Qwen2ForCausalLM";
    case model::Architecture::kMistral: return "MistralForCausalLM";
  }
  return "?";
}

/// config.json's name of a storage dtype.
inline std::string_view hf_dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "float32";
    case DType::kF16: return "float16";
    case DType::kBF16: return "bfloat16";
    default: break;
  }
  raise<ConfigError>("hf_config_json: torch_dtype {} is not a floating-point checkpoint dtype "
                     "(expected F32, F16 or BF16)",
                     dtype_name(t));
}

inline nlohmann::json optional_id(const std::optional<int>& id) {
  return id ? nlohmann::json(*id) : nlohmann::json(nullptr);
}

/// eos_token_id as transformers writes it: one id, a list when there are several, or null.
inline nlohmann::json eos_json(const model::ModelConfig& c) {
  if (c.eos_token_ids.size() > 1) return c.eos_token_ids;
  if (c.eos_token_ids.size() == 1) return c.eos_token_ids.front();
  return optional_id(c.eos_token_id);
}

/// config.json for `c` regardless of its rope_style (the caller permutes q/k when needed).
inline nlohmann::json hf_config_json_half(const model::ModelConfig& c) {
  using model::Architecture;
  constexpr std::string_view where = "hf_config_json";
  c.validate(where);
  const bool llama = c.architecture == Architecture::kLlama;
  const bool qwen2 = c.architecture == Architecture::kQwen2;
  const bool mistral = c.architecture == Architecture::kMistral;
  // Which biases the HF class has is fixed by the family; fragile biases q/k/v only.
  if (qwen2)
    require<ConfigError>(c.attention_bias,
                         "{}: a qwen2 config needs attention_bias (Qwen2Attention always biases "
                         "q/k/v), got false",
                         where);
  else
    require<ConfigError>(!c.attention_bias,
                         "{}: a {} config with attention_bias cannot be written: its HF class "
                         "biases q/k/v and o_proj (llama) or nothing (mistral); only qwen2 "
                         "biases exactly q/k/v",
                         where, model::architecture_name(c.architecture));
  // A window starting at or past the last layer is full attention everywhere (as the reader
  // treats it).
  const bool sliding = c.sliding_window && c.first_sliding_window_layer < c.num_hidden_layers;
  if (mistral && sliding)
    require<ConfigError>(c.first_sliding_window_layer == 0,
                         "{}: a mistral config slides every layer, got "
                         "first_sliding_window_layer {} (only qwen2 has max_window_layers)",
                         where, c.first_sliding_window_layer);
  if (llama && sliding)
    raise<ConfigError>("{}: a llama config has no sliding window, got sliding_window {}", where,
                       *c.sliding_window);
  if (c.eos_token_id && !c.eos_token_ids.empty())
    require<ConfigError>(*c.eos_token_id == c.eos_token_ids.front(),
                         "{}: eos_token_id ({}) must be the first of eos_token_ids ({})", where,
                         *c.eos_token_id, c.eos_token_ids.front());

  nlohmann::json j;  // std::map keys: sorted, as save_pretrained (sort_keys=True) writes
  j["architectures"] = {std::string(hf_architecture_class(c.architecture))};
  j["model_type"] = std::string(model::architecture_name(c.architecture));
  j["attention_dropout"] = 0.0;
  j["bos_token_id"] = optional_id(c.bos_token_id);
  j["eos_token_id"] = eos_json(c);
  j["pad_token_id"] = nullptr;
  j["dtype"] = std::string(hf_dtype_name(c.torch_dtype));
  j["head_dim"] = c.head_dim;
  j["hidden_act"] = "silu";
  j["hidden_size"] = c.hidden_size;
  j["initializer_range"] = 0.02;
  j["intermediate_size"] = c.intermediate_size;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["transformers_version"] = std::string(kHfWriterTransformersVersion);
  j["use_cache"] = true;
  j["vocab_size"] = c.vocab_size;

  nlohmann::json rope;
  rope["rope_theta"] = c.rope_theta;
  if (c.rope_scaling.type == model::RopeScaling::Type::kLlama3) {
    const auto& s = c.rope_scaling;
    rope["rope_type"] = "llama3";
    rope["factor"] = s.factor;
    rope["low_freq_factor"] = s.low_freq_factor;
    rope["high_freq_factor"] = s.high_freq_factor;
    rope["original_max_position_embeddings"] = s.original_max_position_embeddings;
  } else {
    rope["rope_type"] = "default";
  }
  j["rope_parameters"] = std::move(rope);

  if (llama) {
    j["attention_bias"] = false;
    j["mlp_bias"] = false;
    j["pretraining_tp"] = 1;
  }
  if (mistral) j["sliding_window"] = sliding ? nlohmann::json(*c.sliding_window) : nullptr;
  if (qwen2) {
    // Qwen2Config: sliding_window is kept only with use_sliding_window, and layer i slides
    // when i >= max_window_layers (28 is the class default, written when nothing slides).
    j["use_sliding_window"] = sliding;
    j["sliding_window"] = sliding ? nlohmann::json(*c.sliding_window) : nullptr;
    j["max_window_layers"] = sliding ? c.first_sliding_window_layer : std::size_t{28};
    nlohmann::json types = nlohmann::json::array();
    for (std::size_t i = 0; i < c.num_hidden_layers; ++i)
      types.push_back(sliding && i >= c.first_sliding_window_layer ? "sliding_attention"
                                                                   : "full_attention");
    j["layer_types"] = std::move(types);
  }
  return j;
}

/// generation_config.json as GenerationConfig.from_model_config + save_pretrained write it:
/// only the token ids the config sets.
inline nlohmann::json hf_generation_config_json(const model::ModelConfig& c) {
  nlohmann::json j;
  j["_from_model_config"] = true;
  if (c.bos_token_id) j["bos_token_id"] = *c.bos_token_id;
  if (!c.eos_token_ids.empty() || c.eos_token_id) j["eos_token_id"] = eos_json(c);
  j["output_attentions"] = false;
  j["output_hidden_states"] = false;
  j["transformers_version"] = std::string(kHfWriterTransformersVersion);
  j["use_cache"] = true;
  return j;
}

/// tokenizer_config.json as transformers 5 writes it for a tokenizer.json-only tokenizer.
inline nlohmann::json hf_tokenizer_config_json(const model::ModelConfig& c,
                                               const HfWriteOptions& o) {
  auto token = [](const std::optional<std::string>& t) {
    return t ? nlohmann::json(*t) : nlohmann::json(nullptr);
  };
  nlohmann::json j;
  j["backend"] = "tokenizers";
  j["tokenizer_class"] = "TokenizersBackend";
  j["bos_token"] = token(o.bos_token);
  j["eos_token"] = token(o.eos_token);
  j["pad_token"] = token(o.pad_token);
  j["unk_token"] = token(o.unk_token);
  j["model_max_length"] = o.model_max_length.value_or(c.max_position_embeddings);
  return j;
}

/// save_pretrained's JSON text: 2-space indent, sorted keys, trailing newline.
inline std::string hf_json_text(const nlohmann::json& j) { return j.dump(2) + "\n"; }

/// Every tensor `c` needs, with its shape, in HF names.
inline std::map<std::string, std::vector<std::size_t>, std::less<>> hf_tensor_shapes(
    const model::ModelConfig& c) {
  std::map<std::string, std::vector<std::size_t>, std::less<>> s;
  const std::size_t C = c.hidden_size;
  s["model.embed_tokens.weight"] = {c.vocab_size, C};
  s["model.norm.weight"] = {C};
  if (!c.tie_word_embeddings) s["lm_head.weight"] = {c.vocab_size, C};
  for (std::size_t i = 0; i < c.num_hidden_layers; ++i) {
    s[fmt::format("model.layers.{}.input_layernorm.weight", i)] = {C};
    s[fmt::format("model.layers.{}.post_attention_layernorm.weight", i)] = {C};
    for (model::LinearKind k : model::kAllLinearKinds) {
      const auto [out, in] = model::linear_shape(c, k);
      const std::string name = model::linear_name(i, k);
      s[name + ".weight"] = {out, in};
      const bool qkv = k == model::LinearKind::kQ || k == model::LinearKind::kK ||
                       k == model::LinearKind::kV;
      if (c.attention_bias && qkv) s[name + ".bias"] = {out};
    }
  }
  return s;
}

/// Reorders the rows of a q/k projection (heads x head_dim rows of `cols` values) from the
/// interleaved RoPE layout to rotate_half: new row i = old 2i, new row d/2 + i = old 2i + 1.
inline std::vector<float> interleaved_to_half_rows(const std::vector<float>& w, std::size_t heads,
                                                   std::size_t head_dim, std::size_t cols) {
  std::vector<float> out(w.size());
  const std::size_t half = head_dim / 2;
  for (std::size_t h = 0; h < heads; ++h)
    for (std::size_t i = 0; i < head_dim; ++i) {
      const std::size_t from = h * head_dim + (i < half ? 2 * i : 2 * (i - half) + 1);
      const std::size_t to = h * head_dim + i;
      std::copy_n(w.begin() + static_cast<std::ptrdiff_t>(from * cols), cols,
                  out.begin() + static_cast<std::ptrdiff_t>(to * cols));
    }
  return out;
}

}  // namespace detail

/// config.json of `c` in the transformers 5 layout (see the file comment). ConfigError for a
/// config the HF classes cannot express, including RopeStyle::kInterleaved (write_hf_model
/// permutes such weights and writes the rotate_half config).
inline nlohmann::json hf_config_json(const model::ModelConfig& c) {
  require<ConfigError>(c.rope_style == model::RopeStyle::kHalf,
                       "hf_config_json: the config uses interleaved RoPE (llama2.c layout), which "
                       "HF config.json cannot express; the q/k weights must be permuted to the "
                       "rotate_half layout (write_hf_model does this)");
  return detail::hf_config_json_half(c);
}

/// Writes a Hugging Face model directory `dir` for `config` and its f32 `tensors` (HF names;
/// exactly the tensors the config needs, each with the config's number of values). Refuses a
/// non-empty existing `dir` unless options.overwrite. Throws ConfigError, ShapeError,
/// ArgumentError or IoError naming the directory, tensor or field.
inline void write_hf_model(const std::filesystem::path& dir, const model::ModelConfig& config,
                           const std::map<std::string, std::vector<float>, std::less<>>& tensors,
                           const HfWriteOptions& options = {}) {
  namespace fs = std::filesystem;
  model::ModelConfig out_config = config;
  const bool permute = config.rope_style == model::RopeStyle::kInterleaved;
  out_config.rope_style = model::RopeStyle::kHalf;
  out_config.torch_dtype = DType::kF32;  // the tensors are stored as f32
  const nlohmann::json config_json = detail::hf_config_json_half(out_config);

  // Check every tensor before touching the disk, so a bad call writes nothing.
  const auto shapes = detail::hf_tensor_shapes(config);
  for (const auto& [name, shape] : shapes) {
    const auto it = tensors.find(name);
    require<ArgumentError>(it != tensors.end(),
                           "write_hf_model: tensor '{}' (shape {}) is missing; a {} model with "
                           "this config needs it",
                           name, shape_string(shape), model::architecture_name(config.architecture));
    std::size_t n = 1;
    for (auto d : shape) n *= d;
    require<ShapeError>(it->second.size() == n,
                        "write_hf_model: tensor '{}' has {} values, shape {} needs {}", name,
                        it->second.size(), shape_string(shape), n);
  }
  for (const auto& [name, values] : tensors)
    require<ArgumentError>(shapes.contains(name),
                           "write_hf_model: tensor '{}' is not part of a {} model with this config "
                           "(tie_word_embeddings {}, attention_bias {}, {} layers)",
                           name, model::architecture_name(config.architecture),
                           config.tie_word_embeddings, config.attention_bias,
                           config.num_hidden_layers);
  if (options.tokenizer_json)
    require<IoError>(fs::is_regular_file(*options.tokenizer_json),
                     "write_hf_model: tokenizer file '{}' does not exist",
                     options.tokenizer_json->string());

  std::error_code ec;
  if (fs::exists(dir, ec)) {
    require<IoError>(fs::is_directory(dir), "write_hf_model: '{}' exists and is not a directory",
                     dir.string());
    require<IoError>(options.overwrite || fs::is_empty(dir),
                     "write_hf_model: directory '{}' is not empty (set overwrite to write into it)",
                     dir.string());
  }
  fs::create_directories(dir, ec);
  require<IoError>(!ec, "write_hf_model: cannot create directory '{}': {}", dir.string(),
                   ec.message());

  SafetensorsWriter writer;
  writer.set_metadata("format", "pt");  // transformers checks this key when present
  for (const auto& [name, shape] : shapes) {
    const auto& values = tensors.find(name)->second;
    const bool q = name.ends_with("self_attn.q_proj.weight") || name.ends_with("self_attn.q_proj.bias");
    const bool k = name.ends_with("self_attn.k_proj.weight") || name.ends_with("self_attn.k_proj.bias");
    if (permute && (q || k)) {
      const std::size_t heads = q ? config.num_attention_heads : config.num_key_value_heads;
      const std::size_t cols = shape.size() == 2 ? shape[1] : 1;
      writer.add(name, DType::kF32, shape,
                 detail::interleaved_to_half_rows(values, heads, config.head_dim, cols));
    } else {
      writer.add(name, DType::kF32, shape, values);
    }
  }
  // A stale index from an earlier sharded model would shadow model.safetensors.
  if (options.overwrite) {
    fs::remove(dir / kSafetensorsIndexName, ec);
  }
  writer.write(dir / "model.safetensors");
  write_atomically(dir / "config.json", std::string_view(detail::hf_json_text(config_json)));
  write_atomically(dir / "generation_config.json",
                   std::string_view(detail::hf_json_text(detail::hf_generation_config_json(out_config))));
  if (options.tokenizer_json) {
    const std::string text = read_input_file(*options.tokenizer_json, "tokenizer file");
    write_atomically(dir / "tokenizer.json", std::string_view(text));
    write_atomically(dir / "tokenizer_config.json",
                     std::string_view(detail::hf_json_text(
                         detail::hf_tokenizer_config_json(out_config, options))));
  }
}

}  // namespace fragile::io
