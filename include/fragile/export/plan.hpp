// A quantization plan: the bits (and grid) of every quantized linear layer, with what justified
// it (budget, metric, allocator) and the model it was made for. Versioned JSON
// ("fragile_plan": 1), read back by `fragile eval --plan` and the library.
//
//   {"fragile_plan": 1, "fragile": {"version", "git"},
//    "model": {"architecture", "weights_xxh3"},
//    "quantizer": {"quantizer", "group_size", "symmetric", "inputs"},
//    "budget": {"bits_per_weight", "accounting", "achieved_bits_paper", "achieved_bits_exact"},
//    "metric": "D_l", "allocator": "MCKP",
//    "layers": [{"name": "model.layers.0.self_attn.q_proj", "bits": 3, "group_size": 128,
//                "symmetric": false, "quantizer": "rtn", "storage_bits": 123456}, ...]}
//
// "quantizer" holds the plan-wide quantizer, its grid, its inputs and its hyperparameters; a
// layer's own "quantizer" (a name: rtn, gptq, adaround, lwc) overrides the plan-wide one for
// that layer. The full schema, field by field, is in docs/export.md.
//
// Reading checks every layer against the model: a name the model lacks, a layer listed twice or
// missing, a width outside 2..8, or another model's weights hash is an error naming it.
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/io/atomic_file.hpp"
#include "fragile/io/text.hpp"
#include "fragile/model/transformer.hpp"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace fragile::exporting {

inline constexpr int kPlanVersion = 1;

struct PlanLayer {
  std::string name;
  int bits = 4;
  int group_size = 128;
  bool symmetric = false;
  std::uint64_t storage_bits = 0;  ///< exact storage under the quantizer's cost model
  std::string quantizer;           ///< empty: the plan's quantizer
};

struct Plan {
  nlohmann::json fragile = nlohmann::json::object();
  std::string architecture;
  std::string weights_xxh3;  ///< of the model the plan was made for
  nlohmann::json quantizer = nlohmann::json::object();
  nlohmann::json budget = nlohmann::json::object();
  std::string metric, allocator;
  std::vector<PlanLayer> layers;

  [[nodiscard]] nlohmann::json to_json() const {
    nlohmann::json ls = nlohmann::json::array();
    for (const auto& l : layers) {
      nlohmann::json e = {{"name", l.name}, {"bits", l.bits}, {"group_size", l.group_size},
                          {"symmetric", l.symmetric}, {"storage_bits", l.storage_bits}};
      if (!l.quantizer.empty()) e["quantizer"] = l.quantizer;
      ls.push_back(std::move(e));
    }
    return {{"fragile_plan", kPlanVersion}, {"fragile", fragile},
            {"model", {{"architecture", architecture}, {"weights_xxh3", weights_xxh3}}},
            {"quantizer", quantizer}, {"budget", budget}, {"metric", metric},
            {"allocator", allocator}, {"layers", std::move(ls)}};
  }

  /// Parses a plan; ConfigError naming `source` and the field for anything malformed.
  static Plan from_json(const nlohmann::json& j, const std::string& source) {
    auto field = [&](const nlohmann::json& o, const char* k, const char* where) -> const nlohmann::json& {
      require<ConfigError>(o.is_object() && o.contains(k), "plan '{}': {} has no \"{}\"", source,
                           where, k);
      return o[k];
    };
    require<ConfigError>(j.is_object(), "plan '{}': not a JSON object", source);
    const auto& version = field(j, "fragile_plan", "the document");
    require<ConfigError>(version.is_number_integer() && version.get<int>() == kPlanVersion,
                         "plan '{}': version {} is not supported (expected {})", source,
                         version.dump(), kPlanVersion);
    Plan p;
    if (j.contains("fragile")) p.fragile = j["fragile"];
    const auto& m = field(j, "model", "the document");
    require<ConfigError>(field(m, "weights_xxh3", "\"model\"").is_string(),
                         "plan '{}': model.weights_xxh3 must be a string", source);
    p.weights_xxh3 = m["weights_xxh3"];
    if (m.contains("architecture") && m["architecture"].is_string()) p.architecture = m["architecture"];
    if (j.contains("quantizer")) p.quantizer = j["quantizer"];
    if (j.contains("budget")) p.budget = j["budget"];
    if (j.contains("metric") && j["metric"].is_string()) p.metric = j["metric"];
    if (j.contains("allocator") && j["allocator"].is_string()) p.allocator = j["allocator"];
    const auto& ls = field(j, "layers", "the document");
    require<ConfigError>(ls.is_array() && !ls.empty(), "plan '{}': \"layers\" must be a non-empty "
                         "array", source);
    for (std::size_t i = 0; i < ls.size(); ++i) {
      const auto where = fmt::format("layers[{}]", i);
      PlanLayer l;
      const auto& name = field(ls[i], "name", where.c_str());
      const auto& bits = field(ls[i], "bits", where.c_str());
      require<ConfigError>(name.is_string(), "plan '{}': {}.name must be a string", source, where);
      require<ConfigError>(bits.is_number_integer(), "plan '{}': {}.bits must be an integer",
                           source, where);
      l.name = name;
      l.bits = bits;
      if (ls[i].contains("group_size")) {
        require<ConfigError>(ls[i]["group_size"].is_number_integer() &&
                                 ls[i]["group_size"].get<long long>() >= 0,
                             "plan '{}': {}.group_size must be a non-negative integer", source,
                             where);
        l.group_size = ls[i]["group_size"];
      }
      if (ls[i].contains("symmetric")) {
        require<ConfigError>(ls[i]["symmetric"].is_boolean(),
                             "plan '{}': {}.symmetric must be true or false", source, where);
        l.symmetric = ls[i]["symmetric"];
      }
      if (ls[i].contains("quantizer")) {
        require<ConfigError>(ls[i]["quantizer"].is_string(),
                             "plan '{}': {}.quantizer must be a string (rtn, gptq, adaround or "
                             "lwc)", source, where);
        l.quantizer = ls[i]["quantizer"];
      }
      if (ls[i].contains("storage_bits") && ls[i]["storage_bits"].is_number_unsigned())
        l.storage_bits = ls[i]["storage_bits"];
      p.layers.push_back(std::move(l));
    }
    return p;
  }

  static Plan read(const std::filesystem::path& path) {
    const auto text = io::read_text_file(path);
    const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    require<ConfigError>(!j.is_discarded(), "plan '{}': not valid JSON", path.string());
    return from_json(j, path.string());
  }
  void write(const std::filesystem::path& path) const {
    io::write_atomically(path, std::string_view(to_json().dump(2) + "\n"));
  }

  /// The plan's layer for every linear of `model` (registry order), after checking names,
  /// duplicates, coverage, widths and, when `weights_xxh3` is given, the model's weights hash.
  template <class B>
  [[nodiscard]] std::vector<PlanLayer> for_model(const model::Transformer<B>& model,
                                                 const std::string& source,
                                                 const std::string& model_weights_xxh3 = {}) const {
    require<ConfigError>(model_weights_xxh3.empty() || model_weights_xxh3 == weights_xxh3,
                         "plan '{}' was made for another model (weights hash {}, this model's "
                         "is {})", source, weights_xxh3, model_weights_xxh3);
    std::map<std::string, std::size_t> index;
    for (const auto& li : model.linears()) index[li.name] = li.index;
    std::vector<PlanLayer> out(model.linears().size());
    std::vector<char> seen(out.size(), 0);
    for (const auto& l : layers) {
      auto it = index.find(l.name);
      require<ConfigError>(it != index.end(), "plan '{}': layer '{}' is not a linear layer of "
                           "this model", source, l.name);
      require<ConfigError>(!seen[it->second], "plan '{}': layer '{}' is listed twice", source,
                           l.name);
      require<ConfigError>(l.bits >= 2 && l.bits <= 8,
                           "plan '{}': layer '{}' has {} bits, expected 2 to 8", source, l.name,
                           l.bits);
      seen[it->second] = 1;
      out[it->second] = l;
    }
    for (const auto& li : model.linears())
      require<ConfigError>(seen[li.index], "plan '{}': no entry for layer '{}'", source, li.name);
    return out;
  }
};

}  // namespace fragile::exporting
