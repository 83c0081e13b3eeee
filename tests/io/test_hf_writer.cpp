// HF model directory writer: config.json must reproduce, key by key, what transformers 5.23's
// save_pretrained wrote for the committed fixtures (tests/fixtures/hf, tests/fixtures/configs);
// a written model must load back through io::load_model and give bitwise the same logits; the
// llama2.c (interleaved RoPE) layout is permuted to rotate_half; bad inputs fail naming the
// tensor or directory and write nothing.
#include "support/test_data.hpp"
#include "support/tiny_transformer.hpp"

#include <fragile/backend/cpu.hpp>
#include <fragile/io/hf_config.hpp>
#include <fragile/io/hf_writer.hpp>
#include <fragile/io/load_model.hpp>
#include <fragile/io/safetensors.hpp>
#include <fragile/model/transformer.hpp>

#include <nlohmann/json.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using fragile::io::HfWriteOptions;
using fragile::io::hf_config_json;
using fragile::io::write_hf_model;
using fragile::model::ModelConfig;
using fragile::model::NamedTensors;
using fragile::model::Transformer;
using fragile::model::TokenIds;
using nlohmann::json;

/// config.json keys whose value fragile cannot know (not in ModelConfig; they do not change
/// the forward pass) or that name the writing release. Any other difference fails.
const std::set<std::string> kUnknowableKeys = {"initializer_range", "transformers_version"};

fs::path hf_fixture(const std::string& arch) {
  return fragile::test::source_dir() / "fixtures" / "hf" / arch;
}

json read_json(const fs::path& p) {
  std::ifstream in(p);
  REQUIRE(in);
  return json::parse(in);
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE(in);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

/// Every tensor of a checkpoint as f32.
NamedTensors read_tensors(const fragile::io::TensorStore& store) {
  NamedTensors out;
  for (const auto& name : store.names()) {
    auto& v = out[name];
    v.resize(store.info(name).numel());
    store.read_f32(name, v);
  }
  return out;
}

/// Every ModelConfig field the runtime reads.
void check_same_runtime_config(const ModelConfig& a, const ModelConfig& b) {
  CHECK(a.architecture == b.architecture);
  CHECK(a.hidden_size == b.hidden_size);
  CHECK(a.intermediate_size == b.intermediate_size);
  CHECK(a.num_hidden_layers == b.num_hidden_layers);
  CHECK(a.num_attention_heads == b.num_attention_heads);
  CHECK(a.num_key_value_heads == b.num_key_value_heads);
  CHECK(a.head_dim == b.head_dim);
  CHECK(a.vocab_size == b.vocab_size);
  CHECK(a.max_position_embeddings == b.max_position_embeddings);
  CHECK(a.rms_norm_eps == b.rms_norm_eps);
  CHECK(a.rope_theta == b.rope_theta);
  CHECK(a.rope_scaling.type == b.rope_scaling.type);
  if (a.rope_scaling.type != fragile::model::RopeScaling::Type::kNone) {
    CHECK(a.rope_scaling.factor == b.rope_scaling.factor);
    CHECK(a.rope_scaling.low_freq_factor == b.rope_scaling.low_freq_factor);
    CHECK(a.rope_scaling.high_freq_factor == b.rope_scaling.high_freq_factor);
    CHECK(a.rope_scaling.original_max_position_embeddings ==
          b.rope_scaling.original_max_position_embeddings);
  }
  CHECK(a.rope_style == b.rope_style);
  CHECK(a.tie_word_embeddings == b.tie_word_embeddings);
  CHECK(a.attention_bias == b.attention_bias);
  for (std::size_t i = 0; i < a.num_hidden_layers; ++i) CHECK(a.attention_window(i) == b.attention_window(i));
  CHECK(a.bos_token_id == b.bos_token_id);
  CHECK(a.eos_token_id == b.eos_token_id);
  CHECK(a.eos_token_ids == b.eos_token_ids);
}

/// Every key of `fixture` must be in `ours` with an equal value (numbers compare by value),
/// except kUnknowableKeys; with `same_keys`, `ours` may hold no other key either.
void check_keys_match(const json& ours, const json& fixture, bool same_keys) {
  for (const auto& [key, value] : fixture.items()) {
    if (kUnknowableKeys.contains(key)) continue;
    INFO("key '" << key << "': fixture " << value.dump() << ", written "
                 << (ours.contains(key) ? ours.at(key).dump() : std::string("(absent)")));
    REQUIRE(ours.contains(key));
    CHECK(ours.at(key) == value);
  }
  if (same_keys)
    for (const auto& [key, value] : ours.items()) {
      INFO("key '" << key << "' is written but the fixture has no such key");
      CHECK(fixture.contains(key));
    }
}

std::vector<std::uint32_t> bits(const std::vector<float>& v) {
  std::vector<std::uint32_t> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = std::bit_cast<std::uint32_t>(v[i]);
  return out;
}

/// A few windows of the fixtures' vocabulary: the golden ids plus two more lengths.
std::vector<std::vector<TokenIds>> token_windows(const fs::path& dir, std::size_t vocab) {
  std::vector<std::vector<TokenIds>> batches;
  const json golden = read_json(dir / "golden.json");
  std::vector<TokenIds> g;
  for (const auto& row : golden.at("input_ids")) g.push_back(row.get<TokenIds>());
  batches.push_back(g);
  for (std::size_t len : {std::size_t{5}, std::size_t{23}}) {
    std::vector<TokenIds> b(3, TokenIds(len));
    for (std::size_t w = 0; w < b.size(); ++w)
      for (std::size_t t = 0; t < len; ++t)
        b[w][t] = static_cast<std::int32_t>((w * 37 + t * 11 + len) % vocab);
    batches.push_back(b);
  }
  return batches;
}

/// Runs `fn` and returns the message of the `E` it throws (fails the test if none is thrown).
template <class E, class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  FAIL("expected an exception");
  return {};
}

}  // namespace

TEST_CASE("hf_writer: config.json equals save_pretrained's for the model fixtures",
          "[io][hf_writer]") {
  const std::string arch = GENERATE(as<std::string>{}, "llama", "llama3", "qwen2", "mistral");
  INFO("fixture tests/fixtures/hf/" << arch);
  const fs::path dir = hf_fixture(arch);
  const json fixture = read_json(dir / "config.json");
  const ModelConfig config = fragile::io::read_hf_config(dir / "config.json");
  const json ours = hf_config_json(config);
  check_keys_match(ours, fixture, /*same_keys=*/true);
  // What the reader makes of the written JSON is the config it came from.
  const ModelConfig back = fragile::io::parse_hf_config(ours, "written");
  check_same_runtime_config(back, config);
  CHECK(back.torch_dtype == config.torch_dtype);
}

TEST_CASE("hf_writer: config.json reproduces the transformers 5 config fixtures",
          "[io][hf_writer]") {
  // Written from the config classes (no architectures / dtype keys): every key they have must
  // match, including qwen2's layer_types / max_window_layers with a sliding window.
  const std::string name = GENERATE(as<std::string>{}, "llama3_rope", "llama_tied_headdim",
                                    "llama_tiny", "mistral_no_window", "mistral_tiny",
                                    "qwen2_sliding", "qwen2_tiny");
  INFO("fixture tests/fixtures/configs/" << name);
  const fs::path file = fragile::test::source_dir() / "fixtures" / "configs" / name / "config.json";
  const json fixture = read_json(file);
  const ModelConfig config = fragile::io::read_hf_config(file);
  const json ours = hf_config_json(config);
  check_keys_match(ours, fixture, /*same_keys=*/false);
  const ModelConfig back = fragile::io::parse_hf_config(ours, "written");
  check_same_runtime_config(back, config);
  CHECK(back.torch_dtype == config.torch_dtype);
}

TEST_CASE("hf_writer: a written model loads back and gives bitwise the same logits",
          "[io][hf_writer]") {
  const std::string arch = GENERATE(as<std::string>{}, "llama", "llama3", "qwen2", "mistral");
  INFO("fixture tests/fixtures/hf/" << arch);
  const fs::path src = hf_fixture(arch);
  const auto original = fragile::io::load_model(src);
  const NamedTensors tensors = read_tensors(original.weights);

  const fs::path out = fragile::test::scratch_dir("hf_writer_roundtrip_" + arch) / "model";
  const fs::path tok = out.parent_path() / "source_tokenizer.json";
  const std::string tok_text = "{\"version\": \"1.0\", \"model\": {\"type\": \"BPE\"}}\n";
  {
    std::ofstream(tok, std::ios::binary) << tok_text;
  }
  HfWriteOptions options;
  options.tokenizer_json = tok;
  options.eos_token = "<|endoftext|>";
  options.unk_token = "<unk>";
  write_hf_model(out, original.config, tensors, options);

  // Files as save_pretrained lays them out, each complete (no temporaries left behind).
  std::set<std::string> files;
  for (const auto& e : fs::directory_iterator(out)) files.insert(e.path().filename().string());
  CHECK(files == std::set<std::string>{"config.json", "generation_config.json",
                                       "model.safetensors", "tokenizer.json",
                                       "tokenizer_config.json"});
  CHECK(read_json(out / "config.json") == hf_config_json(original.config));
  check_keys_match(read_json(out / "generation_config.json"),
                   read_json(src / "generation_config.json"), /*same_keys=*/true);
  CHECK(read_text(out / "tokenizer.json") == tok_text);
  const json tc = read_json(out / "tokenizer_config.json");
  CHECK(tc.at("tokenizer_class") == "TokenizersBackend");
  CHECK(tc.at("backend") == "tokenizers");
  CHECK(tc.at("eos_token") == "<|endoftext|>");
  CHECK(tc.at("unk_token") == "<unk>");
  CHECK(tc.at("bos_token").is_null());
  CHECK(tc.at("pad_token").is_null());
  CHECK(tc.at("model_max_length") == original.config.max_position_embeddings);

  const auto loaded = fragile::io::load_model(out);
  check_same_runtime_config(loaded.config, original.config);
  CHECK(loaded.config.torch_dtype == fragile::DType::kF32);
  CHECK(loaded.weights.metadata().at("format") == "pt");
  // The stored tensors are the inputs, bit for bit, and nothing else.
  const NamedTensors back = read_tensors(loaded.weights);
  REQUIRE(back.size() == tensors.size());
  for (const auto& [name, values] : tensors) {
    INFO("tensor " << name);
    REQUIRE(back.contains(name));
    CHECK(bits(back.at(name)) == bits(values));
    CHECK(loaded.weights.info(name).shape == original.weights.info(name).shape);
  }

  const Transformer<fragile::cpu> a(original.config, original.weights);
  const Transformer<fragile::cpu> b(loaded.config, loaded.weights);
  for (const auto& windows : token_windows(src, original.config.vocab_size)) {
    INFO(windows.size() << " windows of " << windows[0].size() << " tokens");
    const auto la = a.logits(windows);
    const auto lb = b.logits(windows);
    REQUIRE(la.size() == windows.size() * windows[0].size() * original.config.vocab_size);
    CHECK(bits(lb) == bits(la));
  }
}

TEST_CASE("hf_writer: interleaved RoPE (llama2.c) is permuted to rotate_half",
          "[io][hf_writer]") {
  fragile::test::TinySpec spec;
  spec.rope_style = fragile::model::RopeStyle::kInterleaved;
  spec.kv_heads = 2;
  const ModelConfig config = fragile::test::tiny_config(spec);
  const NamedTensors weights = fragile::test::tiny_weights(config, spec);

  // The JSON alone would silently be wrong for unpermuted weights.
  const auto msg = error_of<fragile::ConfigError>([&] { (void)hf_config_json(config); });
  CHECK_THAT(msg, Catch::Contains("interleaved") && Catch::Contains("permuted"));

  const fs::path out = fragile::test::scratch_dir("hf_writer_interleaved") / "model";
  write_hf_model(out, config, weights);
  const auto loaded = fragile::io::load_model(out);
  CHECK(loaded.config.rope_style == fragile::model::RopeStyle::kHalf);
  ModelConfig half = config;
  half.rope_style = fragile::model::RopeStyle::kHalf;
  check_same_runtime_config(loaded.config, half);

  const Transformer<fragile::cpu> reference(config, NamedTensors(weights));
  const Transformer<fragile::cpu> exported(loaded.config, loaded.weights);
  // Without the permutation the rotate_half model is a different function.
  const Transformer<fragile::cpu> unpermuted(half, NamedTensors(weights));
  std::vector<TokenIds> windows(2, TokenIds(19));
  for (std::size_t w = 0; w < windows.size(); ++w)
    for (std::size_t t = 0; t < windows[w].size(); ++t)
      windows[w][t] = static_cast<std::int32_t>((w * 13 + t * 7 + 3) % config.vocab_size);
  const auto lr = reference.logits(windows);
  const auto le = exported.logits(windows);
  const auto lu = unpermuted.logits(windows);
  double err = 0.0, err_unpermuted = 0.0, scale = 0.0;
  for (std::size_t i = 0; i < lr.size(); ++i) {
    err = std::max(err, std::abs(static_cast<double>(le[i]) - lr[i]));
    err_unpermuted = std::max(err_unpermuted, std::abs(static_cast<double>(lu[i]) - lr[i]));
    scale = std::max(scale, std::abs(static_cast<double>(lr[i])));
  }
  INFO("max |logit| " << scale << ", max error " << err << ", unpermuted " << err_unpermuted);
  CHECK(err <= 1e-5 * scale);
  CHECK(err_unpermuted > 1e-2 * scale);
  // Embeddings, v, o and the MLP are stored unchanged.
  const NamedTensors back = read_tensors(loaded.weights);
  CHECK(bits(back.at("model.layers.1.self_attn.v_proj.weight")) ==
        bits(weights.at("model.layers.1.self_attn.v_proj.weight")));
  CHECK(bits(back.at("model.layers.0.self_attn.q_proj.weight")) !=
        bits(weights.at("model.layers.0.self_attn.q_proj.weight")));
}

TEST_CASE("hf_writer: bad tensors, configs and directories fail and write nothing",
          "[io][hf_writer]") {
  const auto original = fragile::io::load_model(hf_fixture("qwen2"));
  const NamedTensors good = read_tensors(original.weights);
  const fs::path base = fragile::test::scratch_dir("hf_writer_errors");
  const fs::path out = base / "model";

  SECTION("missing tensor") {
    NamedTensors t = good;
    t.erase("model.layers.1.self_attn.k_proj.bias");
    const auto msg = error_of<fragile::ArgumentError>([&] { write_hf_model(out, original.config, t); });
    CHECK_THAT(msg, Catch::Contains("'model.layers.1.self_attn.k_proj.bias'") &&
                        Catch::Contains("missing"));
    CHECK(!fs::exists(out));
  }
  SECTION("extra tensor") {
    NamedTensors t = good;
    t["lm_head.weight"] = t.at("model.embed_tokens.weight");  // qwen2 fixture ties the head
    const auto msg = error_of<fragile::ArgumentError>([&] { write_hf_model(out, original.config, t); });
    CHECK_THAT(msg, Catch::Contains("'lm_head.weight'") && Catch::Contains("not part of"));
    CHECK(!fs::exists(out));
  }
  SECTION("wrong size") {
    NamedTensors t = good;
    t.at("model.layers.0.mlp.down_proj.weight").pop_back();
    const auto msg = error_of<fragile::ShapeError>([&] { write_hf_model(out, original.config, t); });
    CHECK_THAT(msg, Catch::Contains("'model.layers.0.mlp.down_proj.weight'") &&
                        Catch::Contains("6143 values") && Catch::Contains("[64, 96]"));
    CHECK(!fs::exists(out));
  }
  SECTION("non-empty directory needs overwrite") {
    fs::create_directories(out);
    std::ofstream(out / "notes.txt") << "keep me";
    const auto msg = error_of<fragile::IoError>([&] { write_hf_model(out, original.config, good); });
    CHECK_THAT(msg, Catch::Contains(out.string()) && Catch::Contains("not empty"));
    CHECK(!fs::exists(out / "config.json"));
    HfWriteOptions o;
    o.overwrite = true;
    write_hf_model(out, original.config, good, o);
    CHECK(fs::exists(out / "notes.txt"));
    CHECK(fragile::io::load_model(out).weights.size() == good.size());
    // Rewriting the same directory replaces the files in place.
    write_hf_model(out, original.config, good, o);
    CHECK(fragile::io::load_model(out).weights.size() == good.size());
  }
  SECTION("an empty existing directory is fine") {
    fs::create_directories(out);
    write_hf_model(out, original.config, good);
    CHECK(fs::exists(out / "model.safetensors"));
  }
  SECTION("configs the HF classes cannot express") {
    ModelConfig c = original.config;
    c.attention_bias = false;  // Qwen2Attention always has q/k/v biases
    CHECK_THROWS_AS(hf_config_json(c), fragile::ConfigError);
    ModelConfig l = fragile::io::load_model(hf_fixture("llama")).config;
    l.attention_bias = true;  // LlamaAttention's bias would also bias o_proj
    CHECK_THROWS_AS(hf_config_json(l), fragile::ConfigError);
    ModelConfig m = fragile::io::load_model(hf_fixture("mistral")).config;
    m.first_sliding_window_layer = 1;  // Mistral slides every layer
    CHECK_THROWS_AS(hf_config_json(m), fragile::ConfigError);
    CHECK_THROWS_AS(write_hf_model(out, m, good), fragile::ConfigError);
    CHECK(!fs::exists(out));
  }
}
