// `fragile inspect`: a checkpoint's structure, a per-linear table (shape, weight statistics,
// data-free NSDS sensitivity), and an evaluation text cut into GPTQ- and llama.cpp-protocol
// windows.
#pragma once

#include "cli_support.hpp"

#include <fragile/backend/cpu.hpp>
#include <fragile/io/load_model.hpp>
#include <fragile/model/transformer.hpp>
#include <fragile/sensitivity/pass.hpp>
#include <fragile/study/context.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <functional>
#include <memory>

namespace fragile::cli {

struct InspectArgs {
  std::filesystem::path model = "kjv-tiny", text, tokenizer;
  std::string text_format;
  std::size_t seqlen = 256, max_tokens = 0;
};

inline int run_inspect(InspectArgs a) {
  namespace fs = std::filesystem;
  study::ContextOptions co;
  co.model = a.model;
  co.eval = a.text;
  if (a.text_format == "tinystories") co.text_format = study::TextFormat::kTinyStories;
  if (a.text_format == "wikitext2-raw") co.text_format = study::TextFormat::kWikitext2Raw;
  if (a.text_format == "plain") co.text_format = study::TextFormat::kPlain;
  co = study::resolve(co);
  std::error_code ec;
  require<IoError>(fs::exists(co.model, ec), "--model '{}': no such file or directory",
                   co.model.string());
  const auto ckpt = io::load_model(co.model);
  const auto& c = ckpt.config;
  fmt::print("model        {}\n", co.model.string());
  fmt::print("architecture {} (RoPE {}, theta {}, {})\n", model::architecture_name(c.architecture),
             c.rope_style == model::RopeStyle::kHalf ? "rotate_half" : "interleaved", c.rope_theta,
             c.rope_scaling.type == model::RopeScaling::Type::kLlama3 ? "llama3 scaling"
                                                                      : "no scaling");
  fmt::print("dims         hidden {} | intermediate {} | layers {} | heads {} (kv {}) x {} | "
             "vocab {} | context {}\n", c.hidden_size, c.intermediate_size, c.num_hidden_layers,
             c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.vocab_size,
             c.max_position_embeddings);
  fmt::print("options      rms_norm_eps {} | tied embeddings {} | q/k/v bias {} | sliding window "
             "{} | stored as {}\n", c.rms_norm_eps, c.tie_word_embeddings, c.attention_bias,
             c.sliding_window ? std::to_string(*c.sliding_window) : std::string("none"),
             dtype_name(c.torch_dtype));

  const model::Transformer<cpu> m(c, ckpt.weights);
  const auto nsds = sensitivity::nsds_of(m);
  fmt::print("\n{:<40} {:>13} {:>10} {:>9} {:>9} {:>9} {:>8} {:>6}\n", "linear layer", "shape",
             "params", "std", "absmax", "kurtosis", "spec.H", "NSDS");
  std::size_t total = 0;
  for (const auto& li : m.linears()) {
    const auto w = m.weight(li.index);
    double sum2 = 0, absmax = 0;
    for (float v : w) {
      sum2 += double(v) * v;
      absmax = std::max(absmax, double(std::abs(v)));
    }
    const auto& s = nsds[li.index];
    fmt::print("{:<40} {:>13} {:>10} {:>9.4f} {:>9.4f} {:>9.2f} {:>8.4f} {:>6.3f}\n", li.name,
               fmt::format("{}x{}", li.out_features, li.in_features), li.parameters(),
               std::sqrt(sum2 / double(w.size())), absmax, s.numerical, s.structural, s.score);
    total += li.parameters();
  }
  fmt::print("{} linear layers, {} quantizable parameters; {} tensors in the checkpoint\n",
             m.linears().size(), total, ckpt.weights.size());

  if (co.eval.empty()) {
    fmt::print("\nno evaluation text (pass --text); skipping text windows\n");
    return 0;
  }
  io::require_regular_file(co.eval, "--text");
  fs::path tok_path = a.tokenizer;
  if (tok_path.empty()) {
    const auto found = io::find_tokenizer(co.model, c);
    require<IoError>(found.has_value(), "--model '{}': no tokenizer beside it; pass --tokenizer",
                     co.model.string());
    tok_path = *found;
  }
  const auto tok = io::load_tokenizer(tok_path);
  require<ConfigError>(tok.vocab_size() <= c.vocab_size,
                       "--tokenizer '{}' has {} tokens, the model's vocabulary only {}",
                       tok_path.string(), tok.vocab_size(), c.vocab_size);
  const auto ids = study::tokenize_file(tok, co.eval, *co.text_format);
  const std::size_t seqlen = std::min(a.seqlen, c.max_position_embeddings);
  require<ArgumentError>(ids.size() >= 2 * seqlen,
                         "--text '{}': {} tokens, the windows need at least 2 x {} (lower --seqlen)",
                         co.eval.string(), ids.size(), seqlen);
  const auto gptq = data::gptq_eval_windows(ids, seqlen, a.max_tokens);
  const auto lcpp = data::llamacpp_eval_windows(ids, seqlen, tok.bos_id(), a.max_tokens);
  fmt::print("\ntext         {} ({}) -> {} tokens with {}\n", co.eval.string(),
             study::text_format_name(*co.text_format), ids.size(), tok_path.string());
  fmt::print("windows      GPTQ protocol: {} x {} ({} scored) | llama.cpp protocol: {} x {} ({} "
             "scored)\n", gptq.size(), seqlen, data::count_targets(gptq), lcpp.size(), seqlen,
             data::count_targets(lcpp));
  const auto head = std::span<const std::int32_t>(ids).first(std::min<std::size_t>(ids.size(), 24));
  fmt::print("first tokens {}\n             \"{}\"\n", fmt::join(head, " "), tok.decode(head));
  return 0;
}

inline void add_inspect_command(CLI::App& app, std::function<int()>& action) {
  auto a = std::make_shared<InspectArgs>();
  auto* c = app.add_subcommand("inspect", "a checkpoint's structure, weight statistics, NSDS and "
                                          "evaluation windows");
  c->add_option("--model", a->model,
                "HF model directory, llama2.c .bin, or kjv-tiny (default) / stories260K");
  c->add_option("--text", a->text, "evaluation text (default: the named model's)");
  c->add_option("--text-format", a->text_format, "how --text is read")
      ->check(CLI::IsMember({"plain", "tinystories", "wikitext2-raw"}));
  c->add_option("--tokenizer", a->tokenizer, "tokenizer (default: the one beside the model)");
  c->add_option("--seqlen", a->seqlen, "window length in tokens")
      ->check(CLI::Range(4, 1 << 20, "4 to 1048576"));
  c->add_option("--max-tokens", a->max_tokens, "token budget for the windows (0: all)");
  c->callback([a, &action] { action = [a] { return run_inspect(*a); }; });
}

}  // namespace fragile::cli
