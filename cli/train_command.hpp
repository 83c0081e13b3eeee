// `fragile train`: trains a Llama- or Qwen2-family model from scratch on a text and writes a
// Hugging Face model directory (config.json, model.safetensors, tokenizer.json,
// tokenizer_config.json, generation_config.json) with its training log (train_log.jsonl),
// loss plot (loss.svg) and a record of the run (training.json). Without --tokenizer it first
// trains a byte-level BPE tokenizer on the training text. --resume continues a killed run from
// its last checkpoint to the same weights.
#pragma once

#include "cli_support.hpp"

#include <fragile/backend/cpu.hpp>
#include <fragile/data/windows.hpp>
#include <fragile/io/hf_writer.hpp>
#include <fragile/io/text.hpp>
#include <fragile/io/tokenizer/bpe_trainer.hpp>
#include <fragile/io/tokenizer/tokenizer.hpp>
#include <fragile/model/transformer.hpp>
#include <fragile/train/init.hpp>
#include <fragile/train/trainer.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <memory>
#include <string>

namespace fragile::cli {

struct TrainArgs {
  std::filesystem::path text, eval, tokenizer, out;
  std::string arch = "llama";
  std::size_t vocab_size = 1024;
  std::size_t hidden = 128, layers = 4, heads = 4, kv_heads = 2, intermediate = 352;
  std::size_t max_position = 0;
  bool tie = true;
  double rope_theta = 10000.0;
  std::size_t eval_tokens = 0;
  train::TrainOptions opt;
  std::uint64_t seed = 0;
  int threads = 0;
  bool resume = false, quiet = false, keep_checkpoint = false;
  std::size_t stop_after = 0;
};

inline constexpr std::string_view kEndOfText = "<|endoftext|>";

inline model::ModelConfig train_config(const TrainArgs& a, std::size_t vocab,
                                       std::optional<std::int32_t> eos) {
  model::ModelConfig c;
  c.architecture = a.arch == "qwen2" ? model::Architecture::kQwen2 : model::Architecture::kLlama;
  c.hidden_size = a.hidden;
  c.intermediate_size = a.intermediate;
  c.num_hidden_layers = a.layers;
  c.num_attention_heads = a.heads;
  c.num_key_value_heads = a.kv_heads;
  require<ArgumentError>(a.heads > 0 && a.hidden % a.heads == 0,
                         "--hidden ({}) must be a multiple of --heads ({})", a.hidden, a.heads);
  c.head_dim = a.hidden / a.heads;
  c.vocab_size = vocab;
  c.max_position_embeddings = a.max_position ? a.max_position : a.opt.seq_len;
  require<ArgumentError>(c.max_position_embeddings >= a.opt.seq_len,
                         "--max-position ({}) must be at least --seqlen ({})",
                         c.max_position_embeddings, a.opt.seq_len);
  c.rms_norm_eps = 1e-5;
  c.rope_theta = a.rope_theta;
  c.tie_word_embeddings = a.tie;
  c.attention_bias = c.architecture == model::Architecture::kQwen2;
  if (eos) {
    c.eos_token_id = *eos;
    c.eos_token_ids = {*eos};
  }
  c.validate("fragile train");
  return c;
}

inline int run_train(const TrainArgs& a) {
  namespace fs = std::filesystem;
  set_threads(a.threads);
  io::require_regular_file(a.text, "--text");
  io::require_regular_file(a.eval, "--eval");
  prepare_out_dir(a.out, a.resume);
  const bool show = !a.quiet && stderr_is_tty();
  const std::string train_text = io::read_text_file(a.text);
  const std::string eval_text = io::read_text_file(a.eval);

  // The tokenizer: given, or trained on the training text (deterministic, so a resumed run
  // re-trains the same one).
  const fs::path tok_path = a.out / "tokenizer.json";  // where a trained tokenizer goes
  std::unique_ptr<io::AnyTokenizer> tok;
  if (!a.tokenizer.empty()) {
    io::require_regular_file(a.tokenizer, "--tokenizer");
    tok = std::make_unique<io::AnyTokenizer>(io::load_tokenizer(a.tokenizer));
    const auto* bpe = tok->get_if<io::ByteLevelBpeTokenizer>();
    require<ArgumentError>(bpe != nullptr,
                           "--tokenizer '{}': fragile train writes Hugging Face models and needs a "
                           "tokenizer.json (byte-level BPE)", a.tokenizer.string());
  } else {
    if (show) fmt::print(stderr, "training a byte-level BPE tokenizer ({} tokens)\n", a.vocab_size);
    io::BpeTrainerOptions bo;
    bo.vocab_size = a.vocab_size;
    bo.special_tokens = {std::string(kEndOfText)};
    // transformers loads every qwen2 model's tokenizer with Qwen2's pre-tokenizer regex.
    if (a.arch == "qwen2") bo.preset = io::PreTokenizerPreset::kQwen2;
    const auto trained = io::train_bpe(train_text, bo);
    trained.save(tok_path);
    tok = std::make_unique<io::AnyTokenizer>(trained.tokenizer());
  }
  std::optional<std::int32_t> eos;
  if (const auto* bpe = tok->get_if<io::ByteLevelBpeTokenizer>()) eos = bpe->token_id(kEndOfText);

  const auto train_ids = tok->encode(train_text);
  const auto eval_ids = tok->encode(eval_text);
  const auto config = train_config(a, tok->vocab_size(), eos);
  auto eval_windows = data::gptq_eval_windows(eval_ids, a.opt.seq_len, a.eval_tokens);
  const std::size_t eval_window_count = eval_windows.size();

  model::Transformer<cpu> model(config, train::init_weights(config, a.seed));
  const nlohmann::json fingerprint = {
      {"config", io::hf_config_json(config)},
      {"train_tokens", train_ids.size()},
      {"train_hash", fmt::format("{:016x}", fnv1a64(train_ids))},
      {"eval_tokens", eval_ids.size()},
      {"eval_hash", fmt::format("{:016x}", fnv1a64(eval_ids))},
      {"init_seed", a.seed}};
  train::Trainer trainer(model, a.opt, train_ids, std::move(eval_windows), a.out, fingerprint);
  if (!show) trainer.set_progress_sink({});
  if (show)
    fmt::print(stderr, "{} parameters, {} training tokens, {} evaluation windows of {}\n",
               parameter_count(model), train_ids.size(), eval_window_count, a.opt.seq_len);
  trainer.stop_at(a.stop_after);
  const auto summary = trainer.run(a.resume);
  if (summary.steps < a.opt.steps) {
    fmt::print("stopped after step {} of {} (final loss {:.4f}); continue with --resume\n",
               summary.steps, a.opt.steps, summary.final_loss);
    return 0;
  }

  io::HfWriteOptions wo;
  wo.tokenizer_json = a.tokenizer.empty() ? tok_path : a.tokenizer;  // copied into --out
  if (eos) wo.eos_token = std::string(kEndOfText);
  wo.overwrite = true;  // the folder holds the run's log and checkpoint
  io::write_hf_model(a.out, config, train::named_tensors(model), wo);

  nlohmann::json record = {
      {"fragile_version", kVersion},
      {"options", a.opt.to_json()},
      {"model", {{"arch", a.arch}, {"hidden", a.hidden}, {"layers", a.layers},
                 {"heads", a.heads}, {"kv_heads", a.kv_heads}, {"intermediate", a.intermediate},
                 {"vocab_size", config.vocab_size}, {"tie", a.tie},
                 {"parameters", parameter_count(model)}}},
      {"data", {{"text", a.text.filename().string()}, {"eval", a.eval.filename().string()}}},
      {"fingerprint", fingerprint},
      {"threads", backend::cpu_threads()},
      {"final_loss", summary.final_loss},
      {"eval_ppl", summary.eval_ppl},
      {"resumed_from_step", summary.first_step},
      {"seconds", summary.seconds}};
  io::write_atomically(a.out / "training.json", std::string_view(record.dump(2) + "\n"));
  if (!a.keep_checkpoint) fs::remove(trainer.checkpoint_path());
  fmt::print("trained {} steps: final loss {:.4f}, evaluation PPL {:.4f}; wrote {}\n",
             summary.steps, summary.final_loss, summary.eval_ppl, a.out.string());
  return 0;
}

inline void add_train_command(CLI::App& app, std::function<int()>& action) {
  auto a = std::make_shared<TrainArgs>();
  auto* c = app.add_subcommand("train", "train a model from scratch and write a Hugging Face "
                                        "model directory");
  c->add_option("--text", a->text, "training text (UTF-8)")->required();
  c->add_option("--eval", a->eval, "evaluation text (UTF-8), scored in windows of --seqlen")
      ->required();
  c->add_option("--out", a->out, "output model directory")->required();
  c->add_option("--tokenizer", a->tokenizer, "a tokenizer.json to use instead of training one");
  c->add_option("--vocab-size", a->vocab_size, "vocabulary of the trained BPE tokenizer")
      ->check(CLI::Range(257, 1 << 20, "257 to 1048576"));
  c->add_option("--arch", a->arch, "model family")->check(CLI::IsMember({"llama", "qwen2"}));
  c->add_option("--hidden", a->hidden, "hidden size")->check(CLI::Range(2, 1 << 16, "2 to 65536"));
  c->add_option("--layers", a->layers, "decoder blocks")->check(CLI::Range(1, 1024, "1 to 1024"));
  c->add_option("--heads", a->heads, "attention heads")->check(CLI::Range(1, 1024, "1 to 1024"));
  c->add_option("--kv-heads", a->kv_heads, "key/value heads (GQA)")
      ->check(CLI::Range(1, 1024, "1 to 1024"));
  c->add_option("--intermediate", a->intermediate, "MLP intermediate size")
      ->check(CLI::Range(1, 1 << 18, "1 to 262144"));
  c->add_option("--max-position", a->max_position, "max_position_embeddings (default: --seqlen)")
      ->check(CLI::Range(0, 1 << 20, "0 to 1048576"));
  c->add_flag("--tie,!--no-tie", a->tie, "tie the LM head to the embeddings");
  c->add_option("--seqlen", a->opt.seq_len, "tokens per training window")
      ->check(CLI::Range(2, 65536, "2 to 65536"));
  c->add_option("--batch", a->opt.batch_size, "windows per step")
      ->check(CLI::Range(1, 4096, "1 to 4096"));
  c->add_option("--steps", a->opt.steps, "optimiser steps")
      ->check(CLI::Range(1, 100000000, "1 to 100000000"));
  c->add_option("--lr", a->opt.lr, "peak learning rate");
  c->add_option("--min-lr", a->opt.min_lr, "final learning rate of the cosine schedule");
  c->add_option("--warmup", a->opt.warmup, "linear warm-up steps");
  c->add_option("--weight-decay", a->opt.adamw.weight_decay, "AdamW weight decay (matrices)");
  c->add_option("--beta2", a->opt.adamw.beta2, "AdamW beta2");
  c->add_option("--clip", a->opt.clip, "max global gradient norm (0: off)");
  c->add_option("--eval-every", a->opt.eval_every, "steps between evaluations")
      ->check(CLI::Range(1, 100000000, "1 to 100000000"));
  c->add_option("--eval-tokens", a->eval_tokens, "evaluation token budget (0: the whole text)");
  c->add_option("--checkpoint-every", a->opt.checkpoint_every, "steps between checkpoints")
      ->check(CLI::Range(1, 100000000, "1 to 100000000"));
  c->add_option("--seed", a->seed, "seed of the initial weights and of the batches");
  c->add_option("--threads", a->threads, "CPU threads (default: OpenMP's)")
      ->check(CLI::Range(0, 1024, "0 to 1024"));
  c->add_flag("--resume", a->resume, "continue from the output folder's checkpoint");
  c->add_option("--stop-after", a->stop_after,
                "end after this many steps of the run with a checkpoint (resume later)");
  c->add_flag("--keep-checkpoint", a->keep_checkpoint, "keep checkpoint.safetensors at the end");
  c->add_flag("--quiet", a->quiet, "no progress on stderr");
  c->callback([a, &action] {
    a->opt.seed = a->seed;
    action = [a] { return run_train(*a); };
  });
}

}  // namespace fragile::cli
