// A plan as llama.cpp applies it: which ggml quantization type `llama-quantize` should give each
// linear layer's weight in the converted GGUF model.
//
// A layer of b bits maps to a ggml type through a configurable table (GgmlTypeTable). The
// default follows the bit width of the k-quants, llama.cpp's mixed-precision family:
//   2 -> q2_K, 3 -> q3_K, 4 -> q4_K, 5 -> q5_K, 6 -> q6_K, 7 -> q8_0, 8 -> q8_0
// (ggml has no 7-bit type; 7 takes the next wider one, q8_0). A spec such as "2=iq2_xs,3=q3_k"
// overrides entries (type names case-insensitive).
//
// Bits per weight are counted as llama.cpp counts them: 8 * bytes per block / weights per block
// (ggml-common.h's block structs, scales and minima included), e.g. q4_K 8 * 144 / 256 = 4.5.
//
// The recipe is handed to llama-quantize (tools/quantize/quantize.cpp) as `--tensor-type
// PATTERN=TYPE` arguments or a `--tensor-type-file`. llama-quantize lowercases PATTERN, compiles
// it as a std::regex and applies std::regex_search to each GGUF tensor name; the file is read
// token by token on whitespace (`file >> arg`), each token parsed like one argument, so it can
// carry no comments or header. Every pattern here is one tensor's full name with its dots
// escaped, `blk\.3\.attn_q\.weight`: the dots around the block number keep block 3 from
// matching block 13, so each pattern selects exactly one tensor and the order of patterns (first
// match wins in current llama.cpp, the last in older ones) does not matter. Overrides apply only
// when llama-quantize's positional type is a quantized one (e.g. Q4_K_M, which then still decides
// token_embd and output).
//
// A type needs in_features (the GGUF ne[0]) to be a multiple of its block size. When it is not,
// llama-quantize falls back for that tensor (src/llama-quant.cpp, tensor_type_fallback):
// iq1_s, iq1_m, iq2_*, iq3_*, iq4_xs -> iq4_nl; q2_K, q3_K -> q4_0; q4_K -> q5_0; q5_K -> q5_1;
// q6_K -> q8_0; f16 if the fallback does not fit either; no fallback is defined for the 32-weight
// types, and llama-quantize stops. The recipe flags such layers, names the fallback and counts
// it in the effective average.
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/export/plan.hpp"
#include "fragile/io/atomic_file.hpp"
#include "fragile/model/capture.hpp"
#include "fragile/model/config.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fragile::exporting {

// ------------------------------------------------------------------ tensor names

/// llama.cpp's name of a block's linear layer (gguf-py's tensor_mapping, the same for llama,
/// qwen2 and mistral): "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up",
/// "ffn_down".
constexpr std::string_view gguf_linear_suffix(model::LinearKind k) noexcept {
  switch (k) {
    case model::LinearKind::kQ: return "attn_q";
    case model::LinearKind::kK: return "attn_k";
    case model::LinearKind::kV: return "attn_v";
    case model::LinearKind::kO: return "attn_output";
    case model::LinearKind::kGate: return "ffn_gate";
    case model::LinearKind::kUp: return "ffn_up";
    case model::LinearKind::kDown: return "ffn_down";
  }
  return "?";
}

/// The GGUF name of a linear layer's weight: model.layers.3.self_attn.q_proj ->
/// blk.3.attn_q.weight.
inline std::string gguf_tensor_name(const model::LinearInfo& li) {
  return fmt::format("blk.{}.{}.weight", li.block, gguf_linear_suffix(li.kind));
}

// ------------------------------------------------------------------ ggml types

/// A ggml weight type: its name as ggml_type_name spells it, its ggml_type id, and its block
/// layout (ggml-common.h: QK_K = 256 for k- and i-quants, 32 for the legacy ones).
struct GgmlTypeInfo {
  std::string_view name;
  std::uint32_t id = 0;
  std::size_t block_weights = 0;
  std::size_t block_bytes = 0;

  [[nodiscard]] double bits_per_weight() const noexcept {
    return 8.0 * static_cast<double>(block_bytes) / static_cast<double>(block_weights);
  }
};

// sizeof(block_*) from ggml-common.h's static_asserts; ids from ggml.h's enum ggml_type.
inline constexpr GgmlTypeInfo kGgmlTypes[] = {
    {"q2_K", 10, 256, 84},    {"q3_K", 11, 256, 110},  {"q4_K", 12, 256, 144},
    {"q5_K", 13, 256, 176},   {"q6_K", 14, 256, 210},  {"q8_0", 8, 32, 34},
    {"q4_0", 2, 32, 18},      {"q4_1", 3, 32, 20},     {"q5_0", 6, 32, 22},
    {"q5_1", 7, 32, 24},      {"iq1_s", 19, 256, 50},  {"iq1_m", 29, 256, 56},
    {"iq2_xxs", 16, 256, 66}, {"iq2_xs", 17, 256, 74}, {"iq2_s", 22, 256, 82},
    {"iq3_xxs", 18, 256, 98}, {"iq3_s", 21, 256, 110}, {"iq4_xs", 23, 256, 136},
    {"iq4_nl", 20, 32, 18},   {"f16", 1, 1, 2},        {"bf16", 30, 1, 2},
};

namespace detail {
constexpr bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}
}  // namespace detail

/// The type named `name` (case-insensitive), or nullopt.
inline std::optional<GgmlTypeInfo> find_ggml_type(std::string_view name) noexcept {
  for (const auto& t : kGgmlTypes)
    if (detail::iequals(t.name, name)) return t;
  return std::nullopt;
}

/// "q2_K, q3_K, ...": every type find_ggml_type knows, for error messages.
inline std::string known_ggml_types() {
  std::string known;
  for (const auto& t : kGgmlTypes) known += fmt::format("{}{}", known.empty() ? "" : ", ", t.name);
  return known;
}

/// The type named `name`; ConfigError listing the known names otherwise.
inline GgmlTypeInfo ggml_type(std::string_view name) {
  if (auto t = find_ggml_type(name)) return *t;
  raise<ConfigError>("llama.cpp type '{}' is not a known ggml weight type (expected one of {})",
                     name, known_ggml_types());
}

/// What llama-quantize quantizes a tensor of `in_features` columns to when `type` does not fit
/// it (tensor_type_fallback); nullopt when `type` fits, the fallback's name otherwise, an empty
/// string when llama.cpp defines no fallback (it stops).
inline std::optional<std::string> ggml_fallback(const GgmlTypeInfo& type, std::size_t in_features) {
  if (in_features % type.block_weights == 0) return std::nullopt;
  std::string_view to;
  for (std::string_view n : {"iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s",
                             "iq4_xs"})
    if (type.name == n) to = "iq4_nl";
  if (type.name == "q2_K" || type.name == "q3_K") to = "q4_0";
  if (type.name == "q4_K") to = "q5_0";
  if (type.name == "q5_K") to = "q5_1";
  if (type.name == "q6_K") to = "q8_0";
  if (to.empty()) return std::string();
  if (in_features % ggml_type(to).block_weights != 0) to = "f16";
  return std::string(to);
}

/// Bits (2..8) -> ggml type.
class GgmlTypeTable {
 public:
  static constexpr int kMinBits = 2, kMaxBits = 8;

  GgmlTypeTable() {
    constexpr std::string_view defaults[] = {"q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "q8_0", "q8_0"};
    for (int b = kMinBits; b <= kMaxBits; ++b) types_[slot(b)] = ggml_type(defaults[slot(b)]);
  }

  /// The defaults with the entries of `spec` ("2=iq2_xs,3=q3_k"; empty: none) replaced.
  /// ConfigError naming the spec and the entry for a malformed entry, a width outside 2..8 or
  /// an unknown type.
  static GgmlTypeTable parse(std::string_view spec) {
    GgmlTypeTable t;
    if (trim(spec).empty()) return t;
    for (std::size_t pos = 0; pos <= spec.size();) {
      const std::size_t end = std::min(spec.find(',', pos), spec.size());
      const std::string_view entry = trim(spec.substr(pos, end - pos));
      pos = end + 1;
      const std::size_t eq = entry.find('=');
      require<ConfigError>(eq != std::string_view::npos,
                           "llama.cpp type table '{}': entry '{}' is not BITS=TYPE", spec, entry);
      const std::string_view bits = trim(entry.substr(0, eq));
      const std::string_view name = trim(entry.substr(eq + 1));
      bool digits = !bits.empty() && bits.size() <= 2;
      int b = 0;
      for (char c : bits) {
        digits = digits && c >= '0' && c <= '9';
        b = b * 10 + (c - '0');
      }
      require<ConfigError>(digits && b >= kMinBits && b <= kMaxBits,
                           "llama.cpp type table '{}': width '{}' in '{}' is not {} to {}", spec,
                           bits, entry, kMinBits, kMaxBits);
      const auto type = find_ggml_type(name);
      require<ConfigError>(type.has_value(),
                           "llama.cpp type table '{}': type '{}' in '{}' is not a known ggml "
                           "weight type (expected one of {})", spec, name, entry,
                           known_ggml_types());
      t.types_[slot(b)] = *type;
    }
    return t;
  }

  [[nodiscard]] const GgmlTypeInfo& type_for(int bits) const {
    require<ConfigError>(bits >= kMinBits && bits <= kMaxBits,
                         "llama.cpp type table: {} bits has no type, expected {} to {}", bits,
                         kMinBits, kMaxBits);
    return types_[slot(bits)];
  }

  /// {"2": {"type": "q2_K", "ggml_type": 10, "block_weights": 256, "block_bytes": 84,
  ///        "bits_per_weight": 2.625}, ...}
  [[nodiscard]] nlohmann::json to_json() const {
    nlohmann::json j = nlohmann::json::object();
    for (int b = kMinBits; b <= kMaxBits; ++b) j[std::to_string(b)] = type_json(types_[slot(b)]);
    return j;
  }

  static nlohmann::json type_json(const GgmlTypeInfo& t) {
    return {{"type", std::string(t.name)}, {"ggml_type", t.id}, {"block_weights", t.block_weights},
            {"block_bytes", t.block_bytes}, {"bits_per_weight", t.bits_per_weight()}};
  }

 private:
  static constexpr std::size_t slot(int bits) noexcept { return static_cast<std::size_t>(bits - kMinBits); }
  static constexpr std::string_view trim(std::string_view s) noexcept {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
  }

  std::array<GgmlTypeInfo, kMaxBits - kMinBits + 1> types_{};
};

// ------------------------------------------------------------------ the recipe

struct LlamaCppRecipeEntry {
  std::string hf_name;    ///< "model.layers.3.self_attn.q_proj"
  std::string gguf_name;  ///< "blk.3.attn_q.weight"
  int bits = 0;
  GgmlTypeInfo type;
  double bits_per_weight = 0.0;  ///< of `type`
  std::size_t parameters = 0;
  std::size_t in_features = 0;
  /// in_features is not a multiple of type's block: llama-quantize uses `fallback_type` instead
  /// ("" when it defines none and stops).
  bool falls_back = false;
  std::string fallback_type;
  std::string warning;  ///< empty unless falls_back
};

struct LlamaCppRecipe {
  std::vector<LlamaCppRecipeEntry> entries;  ///< in the model's linears() order
  GgmlTypeTable table;
  double average_bits_per_weight = 0.0;  ///< parameter-weighted, over the types asked for
  /// The same after llama-quantize's fallbacks; nullopt when some layer has none (it stops).
  std::optional<double> effective_average_bits_per_weight;
  std::size_t parameters = 0;  ///< quantized weights in all

  [[nodiscard]] std::vector<std::string> warnings() const {
    std::vector<std::string> w;
    for (const auto& e : entries)
      if (e.falls_back) w.push_back(e.warning);
    return w;
  }

  /// The regex llama-quantize matches against `gguf_name`: the name with its dots escaped.
  static std::string pattern(std::string_view gguf_name) {
    std::string p;
    for (char c : gguf_name) {
      if (c == '.') p += '\\';
      p += c;
    }
    return p;
  }

  /// The --tensor-type-file: one `PATTERN=TYPE` line per layer, nothing else.
  [[nodiscard]] std::string tensor_type_file() const {
    std::string s;
    for (const auto& e : entries) s += fmt::format("{}={}\n", pattern(e.gguf_name), e.type.name);
    return s;
  }

  /// The same as llama-quantize arguments: "--tensor-type", "PATTERN=TYPE", ... (argv elements).
  [[nodiscard]] std::vector<std::string> arguments() const {
    std::vector<std::string> a;
    for (const auto& e : entries) {
      a.emplace_back("--tensor-type");
      a.push_back(fmt::format("{}={}", pattern(e.gguf_name), e.type.name));
    }
    return a;
  }

  /// recipe.json: {"fragile_llama_cpp_recipe": 1, "table", "average_bits_per_weight",
  /// "effective_average_bits_per_weight" (null when a fallback is missing), "parameters",
  /// "warnings", "layers": [{"name", "gguf_name", "bits", "type", "ggml_type", "block_weights",
  /// "block_bytes", "bits_per_weight", "parameters", "in_features", "falls_back",
  /// "fallback_type"}]}.
  [[nodiscard]] nlohmann::json to_json() const {
    nlohmann::json layers = nlohmann::json::array();
    for (const auto& e : entries) {
      nlohmann::json l = {{"name", e.hf_name}, {"gguf_name", e.gguf_name}, {"bits", e.bits}};
      l.update(GgmlTypeTable::type_json(e.type));
      l["parameters"] = e.parameters;
      l["in_features"] = e.in_features;
      l["falls_back"] = e.falls_back;
      l["fallback_type"] = e.falls_back ? nlohmann::json(e.fallback_type) : nlohmann::json(nullptr);
      layers.push_back(std::move(l));
    }
    return {{"fragile_llama_cpp_recipe", 1},
            {"table", table.to_json()},
            {"average_bits_per_weight", average_bits_per_weight},
            {"effective_average_bits_per_weight",
             effective_average_bits_per_weight ? nlohmann::json(*effective_average_bits_per_weight)
                                               : nlohmann::json(nullptr)},
            {"parameters", parameters},
            {"warnings", warnings()},
            {"layers", std::move(layers)}};
  }
};

/// The recipe of `layers` (a plan's layers in `linears` order, as Plan::for_model returns them).
/// ConfigError naming the layer when the two disagree or a width has no type.
inline LlamaCppRecipe make_llama_cpp_recipe(const std::vector<model::LinearInfo>& linears,
                                            const std::vector<PlanLayer>& layers,
                                            const GgmlTypeTable& table = {}) {
  require<ConfigError>(linears.size() == layers.size(),
                       "llama.cpp recipe: {} plan layers for {} linear layers", layers.size(),
                       linears.size());
  require<ConfigError>(!linears.empty(), "llama.cpp recipe: no linear layers");
  LlamaCppRecipe r;
  r.table = table;
  double bits = 0.0, effective_bits = 0.0;
  bool effective_known = true;
  for (std::size_t i = 0; i < linears.size(); ++i) {
    const auto& li = linears[i];
    require<ConfigError>(layers[i].name == li.name,
                         "llama.cpp recipe: plan layer {} is '{}', expected '{}' (linears() order)",
                         i, layers[i].name, li.name);
    require<ConfigError>(layers[i].bits >= GgmlTypeTable::kMinBits &&
                             layers[i].bits <= GgmlTypeTable::kMaxBits,
                         "llama.cpp recipe: layer '{}' has {} bits, expected {} to {}", li.name,
                         layers[i].bits, GgmlTypeTable::kMinBits, GgmlTypeTable::kMaxBits);
    LlamaCppRecipeEntry e;
    e.hf_name = li.name;
    e.gguf_name = gguf_tensor_name(li);
    e.bits = layers[i].bits;
    e.type = table.type_for(e.bits);
    e.bits_per_weight = e.type.bits_per_weight();
    e.parameters = li.parameters();
    e.in_features = li.in_features;
    const auto p = static_cast<double>(e.parameters);
    bits += p * e.bits_per_weight;
    if (auto fb = ggml_fallback(e.type, li.in_features)) {
      e.falls_back = true;
      e.fallback_type = *fb;
      if (fb->empty()) {
        effective_known = false;
        e.warning = fmt::format("{} ({}): in_features {} is not a multiple of {}'s block of {}; "
                                "llama-quantize defines no fallback for {} and stops",
                                e.gguf_name, e.hf_name, e.in_features, e.type.name,
                                e.type.block_weights, e.type.name);
      } else {
        const auto to = ggml_type(*fb);
        effective_bits += p * to.bits_per_weight();
        e.warning = fmt::format("{} ({}): in_features {} is not a multiple of {}'s block of {}; "
                                "llama-quantize falls back to {} ({} bpw instead of {})",
                                e.gguf_name, e.hf_name, e.in_features, e.type.name,
                                e.type.block_weights, to.name, to.bits_per_weight(),
                                e.bits_per_weight);
      }
    } else {
      effective_bits += p * e.bits_per_weight;
    }
    r.parameters += e.parameters;
    r.entries.push_back(std::move(e));
  }
  const auto n = static_cast<double>(r.parameters);
  r.average_bits_per_weight = bits / n;
  if (effective_known) r.effective_average_bits_per_weight = effective_bits / n;
  return r;
}

namespace detail {
/// `s` as one POSIX shell word: unchanged when it holds only safe characters, else in single
/// quotes (a quote inside becomes '\'').
inline std::string shell_quote(std::string_view s) {
  bool safe = !s.empty();
  for (char c : s)
    safe = safe && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    std::string_view("-_=+.,:/@%").find(c) != std::string_view::npos);
  if (safe) return std::string(s);
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}
}  // namespace detail

/// Writes, atomically, into `dir` (created if absent):
///   tensor-types.txt   for llama-quantize --tensor-type-file
///   quantize-args.txt  the same as arguments, one shell-quoted argv element per line:
///                        eval "args=($(cat quantize-args.txt))"
///                        llama-quantize "${args[@]}" --imatrix imatrix.gguf in.gguf out.gguf Q4_K_M
///   recipe.json        LlamaCppRecipe::to_json
inline void write_llama_cpp_recipe(const std::filesystem::path& dir, const LlamaCppRecipe& recipe) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  require<IoError>(!ec && std::filesystem::is_directory(dir),
                   "llama.cpp recipe: cannot create folder '{}': {}", dir.string(), ec.message());
  io::write_atomically(dir / "tensor-types.txt", std::string_view(recipe.tensor_type_file()));
  std::string args;
  for (const auto& a : recipe.arguments()) args += detail::shell_quote(a) + "\n";
  io::write_atomically(dir / "quantize-args.txt", std::string_view(args));
  io::write_atomically(dir / "recipe.json", std::string_view(recipe.to_json().dump(2) + "\n"));
}

}  // namespace fragile::exporting
