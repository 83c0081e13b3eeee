// HF config.json reader: every fixture written by transformers (tools/make_config_fixtures.py)
// must give the values transformers itself derives (expected.json), and broken files must fail
// with a ConfigError naming the field and the file.
#include "support/test_data.hpp"

#include <fragile/io/hf_config.hpp>

#include <cstdint>
#include <fstream>
#include <limits>
#include <string>

using fragile::ConfigError;
using fragile::DType;
using fragile::io::parse_hf_config;
using fragile::io::read_hf_config;
using fragile::model::Architecture;
using fragile::model::RopeScaling;
using nlohmann::json;

namespace {

std::filesystem::path fixtures() { return fragile::test::source_dir() / "fixtures" / "configs"; }

json read_json(const std::filesystem::path& p) {
  std::ifstream in(p);
  REQUIRE(in);
  return json::parse(in);
}

/// A valid 5.x-layout Llama config to break field by field.
json base_config() {
  return json{{"model_type", "llama"},
              {"hidden_size", 64},
              {"intermediate_size", 172},
              {"num_hidden_layers", 2},
              {"num_attention_heads", 8},
              {"num_key_value_heads", 4},
              {"vocab_size", 512},
              {"max_position_embeddings", 256},
              {"rms_norm_eps", 1e-5},
              {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 10000.0}}},
              {"dtype", "bfloat16"}};
}

/// Runs parse_hf_config and returns the ConfigError message (fails the test if none is thrown).
std::string error_of(const json& j, const char* source = "/models/x/config.json") {
  try {
    (void)parse_hf_config(j, source);
  } catch (const ConfigError& e) {
    return e.what();
  }
  FAIL("expected a ConfigError for " << j.dump());
  return {};
}

}  // namespace

TEST_CASE("hf_config: every transformers-written fixture matches transformers' derived values",
          "[hf_config]") {
  const json expected = read_json(fixtures() / "expected.json");
  REQUIRE(expected.at("configs").size() == 13);
  for (const auto& [name, e] : expected.at("configs").items()) {
    INFO("fixture " << name);
    const auto c = read_hf_config(fixtures() / name);
    const std::string type = e.at("model_type");
    CHECK(fragile::model::architecture_name(c.architecture) == type);
    CHECK(c.hidden_size == e.at("hidden_size").get<std::size_t>());
    CHECK(c.intermediate_size == e.at("intermediate_size").get<std::size_t>());
    CHECK(c.num_hidden_layers == e.at("num_hidden_layers").get<std::size_t>());
    CHECK(c.num_attention_heads == e.at("num_attention_heads").get<std::size_t>());
    CHECK(c.num_key_value_heads == e.at("num_key_value_heads").get<std::size_t>());
    CHECK(c.head_dim == e.at("head_dim").get<std::size_t>());
    CHECK(c.vocab_size == e.at("vocab_size").get<std::size_t>());
    CHECK(c.max_position_embeddings == e.at("max_position_embeddings").get<std::size_t>());
    CHECK(c.rms_norm_eps == e.at("rms_norm_eps").get<double>());
    CHECK(c.tie_word_embeddings == e.at("tie_word_embeddings").get<bool>());
    CHECK(c.rope_theta == e.at("rope_theta").get<double>());
    CHECK(c.rope_style == fragile::model::RopeStyle::kHalf);
    CHECK(c.attention_bias == (type == "qwen2"));
    if (e.at("rope_type") == "llama3") {
      REQUIRE(c.rope_scaling.type == RopeScaling::Type::kLlama3);
      CHECK(c.rope_scaling.factor == e.at("rope_factor").get<double>());
      CHECK(c.rope_scaling.low_freq_factor == e.at("rope_low_freq_factor").get<double>());
      CHECK(c.rope_scaling.high_freq_factor == e.at("rope_high_freq_factor").get<double>());
      CHECK(c.rope_scaling.original_max_position_embeddings ==
            e.at("rope_original_max_position_embeddings").get<std::size_t>());
    } else {
      CHECK(e.at("rope_type") == "default");
      CHECK(c.rope_scaling.type == RopeScaling::Type::kNone);
    }
    if (e.at("sliding_window").is_null()) {
      CHECK_FALSE(c.sliding_window.has_value());
      for (std::size_t l = 0; l < c.num_hidden_layers; ++l) CHECK_FALSE(c.attention_window(l));
    } else {
      REQUIRE(c.sliding_window.has_value());
      CHECK(*c.sliding_window == e.at("sliding_window").get<std::size_t>());
      const auto first = e.at("first_sliding_window_layer").get<std::size_t>();
      CHECK(c.first_sliding_window_layer == first);
      for (std::size_t l = 0; l < c.num_hidden_layers; ++l)
        CHECK(c.attention_window(l).has_value() == (l >= first));
    }
    const DType dtype = e.at("dtype").is_null()              ? DType::kF32
                        : e.at("dtype") == "bfloat16"        ? DType::kBF16
                        : e.at("dtype") == "float16"         ? DType::kF16
                                                             : DType::kF32;
    CHECK(c.torch_dtype == dtype);
    if (e.at("bos_token_id").is_null()) CHECK_FALSE(c.bos_token_id.has_value());
    else CHECK(c.bos_token_id == e.at("bos_token_id").get<int>());
    CHECK(c.eos_token_ids == e.at("eos_token_ids").get<std::vector<int>>());
    if (!c.eos_token_ids.empty()) CHECK(c.eos_token_id == c.eos_token_ids.front());
  }
}

TEST_CASE("hf_config: a config.json path and its folder give the same config", "[hf_config]") {
  const auto a = read_hf_config(fixtures() / "qwen2_tiny");
  const auto b = read_hf_config(fixtures() / "qwen2_tiny" / "config.json");
  CHECK(a.architecture == Architecture::kQwen2);
  CHECK(b.architecture == Architecture::kQwen2);
  CHECK(a.vocab_size == b.vocab_size);
  CHECK(a.q_dim() == 64);
  CHECK(a.kv_dim() == 16);
}

TEST_CASE("hf_config: 4.x and 5.x layouts of the same model agree", "[hf_config]") {
  json v5 = base_config();
  v5["rope_parameters"] = {{"rope_type", "llama3"},        {"rope_theta", 500000.0},
                           {"factor", 8.0},                {"low_freq_factor", 1.0},
                           {"high_freq_factor", 4.0},      {"original_max_position_embeddings", 128}};
  json v4 = base_config();
  v4.erase("rope_parameters");
  v4.erase("dtype");
  v4["torch_dtype"] = "bfloat16";
  v4["rope_theta"] = 500000.0;
  v4["rope_scaling"] = {{"type", "llama3"},          {"factor", 8.0},
                        {"low_freq_factor", 1.0},    {"high_freq_factor", 4.0},
                        {"original_max_position_embeddings", 128}};  // legacy "type" key
  const auto a = parse_hf_config(v5, "v5");
  const auto b = parse_hf_config(v4, "v4");
  CHECK(a.rope_theta == 500000.0);
  CHECK(b.rope_theta == 500000.0);
  CHECK(a.rope_scaling.type == RopeScaling::Type::kLlama3);
  CHECK(b.rope_scaling.type == RopeScaling::Type::kLlama3);
  CHECK(a.rope_scaling.factor == b.rope_scaling.factor);
  CHECK(a.torch_dtype == DType::kBF16);
  CHECK(b.torch_dtype == DType::kBF16);

  SECTION("llama3 without original_max_position_embeddings takes max_position_embeddings") {
    v5["rope_parameters"].erase("original_max_position_embeddings");
    CHECK(parse_hf_config(v5, "v5").rope_scaling.original_max_position_embeddings == 256);
  }
  SECTION("null rope blocks and rope type default mean plain RoPE at rope_theta") {
    v4["rope_scaling"] = nullptr;
    const auto c = parse_hf_config(v4, "v4");
    CHECK(c.rope_scaling.type == RopeScaling::Type::kNone);
    CHECK(c.rope_theta == 500000.0);
    json none = base_config();
    none.erase("rope_parameters");
    CHECK(parse_hf_config(none, "none").rope_theta == 10000.0);  // the class default
  }
  SECTION("an empty rope_scaling defers to rope_parameters (transformers: rope_scaling or ...)") {
    v5["rope_scaling"] = json::object();
    CHECK(parse_hf_config(v5, "v5").rope_scaling.type == RopeScaling::Type::kLlama3);
    v5["rope_scaling"] = {{"rope_type", "default"}};
    CHECK(parse_hf_config(v5, "v5").rope_scaling.type == RopeScaling::Type::kNone);
  }
  SECTION("a rope_theta inside the block wins over the top-level one, as in transformers") {
    v5["rope_theta"] = 1.0;
    CHECK(parse_hf_config(v5, "v5").rope_theta == 500000.0);
  }
}

TEST_CASE("hf_config: absent versus null follows each family's config class", "[hf_config]") {
  json q = base_config();
  q["model_type"] = "qwen2";
  q["num_attention_heads"] = 32;
  q.erase("num_key_value_heads");
  CHECK(parse_hf_config(q, "q").num_key_value_heads == 32);  // Qwen2Config default
  q["num_key_value_heads"] = nullptr;
  CHECK(parse_hf_config(q, "q").num_key_value_heads == 32);  // None -> num_attention_heads
  q["num_attention_heads"] = 16;
  CHECK(parse_hf_config(q, "q").num_key_value_heads == 16);

  json m = base_config();
  m["model_type"] = "mistral";
  m["num_attention_heads"] = 16;
  m.erase("num_key_value_heads");
  CHECK(parse_hf_config(m, "m").num_key_value_heads == 8);  // MistralConfig default
  m["num_key_value_heads"] = nullptr;
  CHECK(parse_hf_config(m, "m").num_key_value_heads == 16);
  CHECK(parse_hf_config(m, "m").sliding_window == 4096u);
  m["sliding_window"] = nullptr;
  CHECK_FALSE(parse_hf_config(m, "m").sliding_window.has_value());

  json l = base_config();
  l.erase("num_key_value_heads");
  CHECK(parse_hf_config(l, "l").num_key_value_heads == 8);
  l["head_dim"] = 16;
  CHECK(parse_hf_config(l, "l").head_dim == 16);
  CHECK(parse_hf_config(l, "l").q_dim() == 128);
}

TEST_CASE("hf_config: Qwen2 sliding window follows use_sliding_window and layer_types",
          "[hf_config]") {
  json q = base_config();
  q["model_type"] = "qwen2";
  q["num_hidden_layers"] = 4;
  q["sliding_window"] = 32;
  q["max_window_layers"] = 1;
  CHECK_FALSE(parse_hf_config(q, "q").sliding_window.has_value());  // use_sliding_window false
  q["use_sliding_window"] = true;
  auto c = parse_hf_config(q, "q");
  CHECK(c.sliding_window == 32u);
  CHECK(c.first_sliding_window_layer == 1);
  CHECK_FALSE(c.attention_window(0));
  CHECK(c.attention_window(3) == 32u);
  q["layer_types"] = {"full_attention", "full_attention", "full_attention", "sliding_attention"};
  CHECK(parse_hf_config(q, "q").first_sliding_window_layer == 3);
  q["layer_types"] = {"sliding_attention", "full_attention", "full_attention", "full_attention"};
  CHECK_THAT(error_of(q), Catch::Contains("layer_types") && Catch::Contains("full_attention at layer 1"));
  q["layer_types"] = {"full_attention"};
  CHECK_THAT(error_of(q), Catch::Contains("'layer_types' must be a list of 4"));
  q.erase("layer_types");
  q["max_window_layers"] = 4;  // no layer at or beyond it: full attention everywhere
  CHECK_FALSE(parse_hf_config(q, "q").sliding_window.has_value());
}

TEST_CASE("hf_config: missing required fields are named with the file", "[hf_config][bad]") {
  for (const char* field : {"model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
                            "num_attention_heads", "vocab_size", "max_position_embeddings",
                            "rms_norm_eps"}) {
    INFO(field);
    json j = base_config();
    j.erase(field);
    const auto msg = error_of(j);
    CHECK_THAT(msg, Catch::Contains(std::string("'") + field + "'") &&
                        Catch::Contains("/models/x/config.json") && Catch::Contains("missing"));
    j[field] = nullptr;  // null is as absent for a required field
    CHECK_THAT(error_of(j), Catch::Contains(std::string("'") + field + "'"));
  }
}

TEST_CASE("hf_config: wrong JSON types are errors naming the field", "[hf_config][bad]") {
  const std::vector<std::pair<std::string, json>> cases = {
      {"hidden_size", "64"},          {"hidden_size", 64.5},
      {"num_hidden_layers", -2},      {"vocab_size", true},
      {"rms_norm_eps", "1e-5"},       {"tie_word_embeddings", "yes"},
      {"tie_word_embeddings", 1},     {"model_type", 3},
      {"num_key_value_heads", "4"},   {"head_dim", json::array()},
      {"rope_parameters", "default"}, {"dtype", 16},
      {"eos_token_id", "2"},          {"bos_token_id", json::array({1})},
      {"rope_theta", "1e4"},
  };
  for (const auto& [field, value] : cases) {
    INFO(field << " = " << value.dump());
    json j = base_config();
    if (field == "rope_theta") j.erase("rope_parameters");
    j[field] = value;
    CHECK_THAT(error_of(j), Catch::Contains("'" + field + "'"));
  }
  json j = base_config();
  j["rope_parameters"]["rope_theta"] = "big";
  CHECK_THAT(error_of(j), Catch::Contains("'rope_parameters.rope_theta'"));
}

TEST_CASE("hf_config: unsupported values are errors naming them", "[hf_config][bad]") {
  json j = base_config();
  j["model_type"] = "gpt2";
  CHECK_THAT(error_of(j), Catch::Contains("'gpt2'") && Catch::Contains("llama, qwen2, mistral"));

  for (const char* type : {"linear", "dynamic", "yarn", "longrope"}) {
    json r = base_config();
    r["rope_parameters"] = {{"rope_type", type}, {"factor", 2.0}, {"rope_theta", 10000.0}};
    CHECK_THAT(error_of(r), Catch::Contains(std::string("'") + type + "'") &&
                                Catch::Contains("default, llama3"));
    json legacy = base_config();
    legacy.erase("rope_parameters");
    legacy["rope_scaling"] = {{"type", type}, {"factor", 2.0}};
    CHECK_THAT(error_of(legacy), Catch::Contains(std::string("'") + type + "'") &&
                                     Catch::Contains("rope_scaling"));
  }
  json l3 = base_config();
  l3["rope_parameters"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}};
  CHECK_THAT(error_of(l3), Catch::Contains("'rope_parameters.high_freq_factor'"));

  json a = base_config();
  a["attention_bias"] = true;
  CHECK_THAT(error_of(a), Catch::Contains("'attention_bias'"));
  json m = base_config();
  m["mlp_bias"] = true;
  CHECK_THAT(error_of(m), Catch::Contains("'mlp_bias'"));
  json act = base_config();
  act["hidden_act"] = "gelu";
  CHECK_THAT(error_of(act), Catch::Contains("'gelu'"));
  json d = base_config();
  d["dtype"] = "float8_e4m3fn";
  CHECK_THAT(error_of(d), Catch::Contains("'float8_e4m3fn'"));
  d["dtype"] = "float16";
  d["torch_dtype"] = "bfloat16";
  CHECK_THAT(error_of(d), Catch::Contains("disagree"));
  json p = base_config();
  p["rope_parameters"]["partial_rotary_factor"] = 0.5;
  CHECK_THAT(error_of(p), Catch::Contains("partial_rotary_factor"));
  json h = base_config();
  h["hidden_size"] = 60;
  CHECK_THAT(error_of(h), Catch::Contains("hidden_size (60)") && Catch::Contains("head_dim"));
  json g = base_config();
  g["num_key_value_heads"] = 3;
  CHECK_THAT(error_of(g), Catch::Contains("num_key_value_heads (3)"));
  json z = base_config();
  z["num_hidden_layers"] = 0;
  CHECK_THAT(error_of(z), Catch::Contains("'num_hidden_layers' must be positive"));
  CHECK_THAT(error_of(json::array()), Catch::Contains("JSON object"));
}

TEST_CASE("hf_config: unreadable files and bad JSON", "[hf_config][bad]") {
  const auto dir = fragile::test::scratch_dir("hf_config_bad");
  CHECK_THROWS_AS(read_hf_config(dir / "absent.json"), fragile::IoError);
  CHECK_THROWS_AS(read_hf_config(dir), fragile::IoError);  // folder without config.json
  std::ofstream(dir / "config.json") << "{\"model_type\": \"llama\", \"hidden_size\": ";
  try {
    (void)read_hf_config(dir);
    FAIL("truncated JSON accepted");
  } catch (const ConfigError& e) {
    CHECK_THAT(e.what(), Catch::Contains("config.json") && Catch::Contains("not valid JSON"));
  }
}

TEST_CASE("hf_config: dimensions whose weights overflow the address space are a ConfigError",
          "[hf_config]") {
  auto heads = base_config();
  heads["num_attention_heads"] = std::uint64_t{1} << 32;
  heads["num_key_value_heads"] = std::uint64_t{1} << 32;
  heads["head_dim"] = std::uint64_t{1} << 32;  // q_dim() = 2^64 wraps to 0
  CHECK_THAT(error_of(heads), Catch::Contains("overflow the address space"));
  auto vocab = base_config();
  vocab["vocab_size"] = std::numeric_limits<std::uint64_t>::max();
  CHECK_THAT(error_of(vocab), Catch::Contains("/models/x/config.json") &&
                                  Catch::Contains("overflow the address space"));
}
