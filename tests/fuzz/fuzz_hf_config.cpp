// libFuzzer target for the Hugging Face config.json reader: arbitrary bytes parsed as JSON, then
// read as a Llama / Qwen2 / Mistral config. Only fragile::Error may escape; another exception, a
// crash or a sanitizer report is a finding. A config that is accepted then goes through what the
// runtime derives from it (linear shapes, weight counts, per-layer attention windows), and must
// keep the promises of validate() and require_addressable_weights().
// Seeds: tests/fuzz/corpus/hf_config/ (tools/make_fuzz_corpus.py).
//   build/fuzz/tests/fuzz/fuzz_hf_config -max_total_time=60 tests/fuzz/corpus/hf_config
#include "fuzz_support.hpp"

#include <fragile/io/hf_config.hpp>
#include <fragile/model/config.hpp>

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace {

using fragile::fuzz::check;

// Wrapping size_t products are not UB, so UBSan would not see them: count them instead, as a
// caller sizing buffers from the config would have to.
std::size_t weight_count(const fragile::model::ModelConfig& c, bool& overflow) {
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
  std::size_t per_block = mul(2, c.hidden_size);  // the two RMSNorm weights
  for (const auto kind : fragile::model::kAllLinearKinds) {
    const auto [out, in] = fragile::model::linear_shape(c, kind);
    per_block = add(per_block, mul(out, in));
  }
  std::size_t total = mul(c.num_hidden_layers, per_block);
  total = add(total, mul(c.vocab_size, c.hidden_size));
  if (!c.tie_word_embeddings) total = add(total, mul(c.vocab_size, c.hidden_size));
  return add(total, c.hidden_size);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  try {
    const auto c = fragile::io::parse_hf_config(j, "fuzz config.json");
    // validate()'s promises, on which the runtime's divisions rely.
    check(c.num_attention_heads > 0 && c.num_key_value_heads > 0 && c.head_dim > 0);
    check(c.num_attention_heads % c.num_key_value_heads == 0 && c.head_dim % 2 == 0);
    check(c.rms_norm_eps > 0.0 && c.rope_theta > 0.0);
    check(!c.sliding_window || *c.sliding_window > 0);
    check(!c.bos_token_id || *c.bos_token_id >= 0);
    check(c.eos_token_id.has_value() == !c.eos_token_ids.empty());
    if (c.rope_scaling.type == fragile::model::RopeScaling::Type::kLlama3)
      check(c.rope_scaling.original_max_position_embeddings > 0 &&
            c.rope_scaling.low_freq_factor < c.rope_scaling.high_freq_factor);

    const std::size_t group = c.num_attention_heads / c.num_key_value_heads;
    check(group >= 1 && c.q_dim() / c.head_dim == c.num_attention_heads);
    bool overflow = false;
    (void)weight_count(c, overflow);
    check(!overflow);  // require_addressable_weights() refuses such configs
    // Layers is caller data: walk at most a few thousand of them (a fuzzed count can be 2^63).
    const std::size_t layers = c.num_hidden_layers < 4096 ? c.num_hidden_layers : 4096;
    bool seen_sliding = false;
    for (std::size_t l = 0; l < layers; ++l) {
      const auto window = c.attention_window(l);
      // "Full below k, sliding from k on": a full layer never follows a sliding one.
      check(!seen_sliding || window.has_value());
      seen_sliding = window.has_value();
      if (window) check(*window == *c.sliding_window && *window > 0);
      (void)fragile::model::linear_name(l, fragile::model::LinearKind::kDown);
    }
  } catch (const fragile::Error&) {
  }
  return 0;
}
