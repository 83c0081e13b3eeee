// study::Context: what every study starts from, loaded and checked once: the model, its
// tokenizer, the calibration and evaluation windows, and a content fingerprint of all of them.
//
// Named models: `kjv-tiny` (the embedded default that fragile trained itself, with its
// calibration and evaluation books beside it) and `stories260K` (the shared data's llama2.c
// checkpoint with TinyStories text). FRAGILE_DATA_DIR (environment) or the build's
// FRAGILE_DATA_DIR_DEFAULT locates the shared data; this is the one place that looks it up.
//
// Fingerprint: XXH3 of the model's files (config and every weight shard, or the .bin), of the
// token ids of both window sets, and of every option that changes a number. A result store
// opened under another fingerprint refuses to resume (study::open_store names what changed).
#pragma once

#include "fragile/backend/cpu.hpp"
#include "fragile/core/content_hash.hpp"
#include "fragile/core/error.hpp"
#include "fragile/data/windows.hpp"
#include "fragile/eval/perplexity.hpp"
#include "fragile/io/input_file.hpp"
#include "fragile/io/load_model.hpp"
#include "fragile/io/text.hpp"
#include "fragile/io/tokenizer/tokenizer.hpp"
#include "fragile/model/transformer.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fragile::study {

/// The shared data folder: $FRAGILE_DATA_DIR, else the build's default, else ../shared/data.
inline std::filesystem::path data_dir() {
  if (const char* env = std::getenv("FRAGILE_DATA_DIR"); env && *env) return env;
#if defined(FRAGILE_DATA_DIR_DEFAULT)
  return FRAGILE_DATA_DIR_DEFAULT;
#else
  return "../shared/data";
#endif
}

/// The embedded default model (examples/models/kjv-tiny of the source tree).
inline std::filesystem::path embedded_model_dir() {
  if (const char* env = std::getenv("FRAGILE_EMBEDDED_MODEL"); env && *env) return env;
#if defined(FRAGILE_EMBEDDED_MODEL)
  return FRAGILE_EMBEDDED_MODEL;
#else
  return "examples/models/kjv-tiny";
#endif
}

enum class TextFormat { kPlain, kTinyStories, kWikitext2Raw };

inline std::string_view text_format_name(TextFormat f) noexcept {
  switch (f) {
    case TextFormat::kTinyStories: return "tinystories";
    case TextFormat::kWikitext2Raw: return "wikitext2-raw";
    default: return "plain";
  }
}

/// Token ids of a text file read as `format`: plain (the whole file, encoded once),
/// tinystories (stories between `<|endoftext|>` lines, BOS before each when the tokenizer has
/// one) or wikitext2-raw (GPTQ's "\n\n".join of the dataset rows).
inline std::vector<data::TokenId> tokenize_file(const io::AnyTokenizer& tok,
                                                const std::filesystem::path& path,
                                                TextFormat format) {
  switch (format) {
    case TextFormat::kTinyStories: return io::encode_documents(tok, io::read_tinystories(path));
    case TextFormat::kWikitext2Raw: return tok.encode(io::read_wikitext_raw(path));
    default: return tok.encode(io::read_text_file(path));
  }
}

struct ContextOptions {
  std::filesystem::path model = "kjv-tiny";  ///< HF directory, llama2.c .bin, or a named model
  std::filesystem::path tokenizer;           ///< empty: the one beside the model
  std::filesystem::path calib, eval;         ///< empty: the named model's own texts
  std::optional<TextFormat> text_format;     ///< unset: the named model's, else plain
  std::size_t seqlen = 0;                    ///< 0: the model's context, at most 2048
  /// Unset: the named model's (stories260K: 32), else GPTQ's nsamples, 128.
  std::optional<std::size_t> calib_windows;
  /// 0: the whole evaluation text; unset: the named model's (stories260K: 32768), else 0.
  std::optional<std::size_t> eval_tokens;
  eval::PerplexityProtocol protocol = eval::PerplexityProtocol::kGptq;
  std::uint64_t seed = 0;                    ///< calibration sampling (and label sampling)
  std::size_t batch = 8;                     ///< windows per forward (does not change numbers)
};

/// Resolves a named model and fills in its texts, format and data amounts where the options
/// leave them open. stories260K's defaults keep its map within a few minutes on 2 cores (its
/// TinyStories evaluation text is ~130k tokens).
inline ContextOptions resolve(ContextOptions o) {
  namespace fs = std::filesystem;
  auto fill = [&](const fs::path& calib, const fs::path& eval, TextFormat format) {
    if (o.calib.empty()) o.calib = calib;
    if (o.eval.empty()) o.eval = eval;
    if (!o.text_format) o.text_format = format;
  };
  if (o.model == "kjv-tiny") {
    o.model = embedded_model_dir();
    fill(o.model / "calib.txt", o.model / "eval.txt", TextFormat::kPlain);
  } else if (o.model == "stories260K") {
    const fs::path d = data_dir();
    o.model = d / "models/stories260K/stories260K.bin";
    require<IoError>(fs::exists(o.model),
                     "--model stories260K: '{}' not found (set FRAGILE_DATA_DIR to the shared "
                     "data folder)", o.model.string());
    fill(d / "text/tinystories/calib_data00_667.txt", d / "text/tinystories/valid_0001-0500.txt",
         TextFormat::kTinyStories);
    if (!o.calib_windows) o.calib_windows = 32;
    if (!o.eval_tokens) o.eval_tokens = 32768;
  }
  if (!o.text_format) o.text_format = TextFormat::kPlain;
  if (!o.calib_windows) o.calib_windows = 128;
  if (!o.eval_tokens) o.eval_tokens = 0;
  return o;
}

class Context {
 public:
  explicit Context(const ContextOptions& options) : opt_(resolve(options)) {
    namespace fs = std::filesystem;
    std::error_code ec;
    require<IoError>(fs::exists(opt_.model, ec), "--model '{}': no such file or directory",
                     opt_.model.string());
    if (!fs::is_directory(opt_.model)) io::require_regular_file(opt_.model, "--model");
    require<ArgumentError>(!opt_.calib.empty(), "--calib: no calibration text given");
    require<ArgumentError>(!opt_.eval.empty(), "--eval: no evaluation text given");
    io::require_regular_file(opt_.calib, "--calib");
    io::require_regular_file(opt_.eval, "--eval");
    require<ArgumentError>(*opt_.calib_windows > 0 && *opt_.calib_windows <= (1u << 20),
                           "--calib-windows {}: expected 1 to 1048576", *opt_.calib_windows);
    require<ArgumentError>(opt_.batch > 0 && opt_.batch <= 4096, "--batch {}: expected 1 to 4096",
                           opt_.batch);

    ckpt_ = std::make_unique<io::Checkpoint>(io::load_model(opt_.model));
    const auto& cfg = ckpt_->config;
    const std::size_t context = cfg.max_position_embeddings;
    if (opt_.seqlen == 0) opt_.seqlen = std::min<std::size_t>(context, 2048);
    require<ArgumentError>(opt_.seqlen >= 2 && opt_.seqlen <= context,
                           "--seqlen {}: expected 2 to the model's context of {} tokens",
                           opt_.seqlen, context);

    if (opt_.tokenizer.empty()) {
      const auto found = io::find_tokenizer(opt_.model, cfg);
      require<IoError>(found.has_value(),
                       "--model '{}': no tokenizer beside it (tokenizer.json, vocab.json + "
                       "merges.txt, tok<N>.bin); give one with --tokenizer", opt_.model.string());
      opt_.tokenizer = *found;
    } else {
      std::error_code e2;
      require<IoError>(fs::exists(opt_.tokenizer, e2), "--tokenizer '{}': no such file",
                       opt_.tokenizer.string());
    }
    if (!fs::is_directory(opt_.tokenizer)) io::require_regular_file(opt_.tokenizer, "--tokenizer");
    tok_ = std::make_unique<io::AnyTokenizer>(io::load_tokenizer(opt_.tokenizer));
    require<ConfigError>(tok_->vocab_size() <= cfg.vocab_size,
                         "--tokenizer '{}' has {} tokens, the model's embedding only {} (a "
                         "tokenizer of another model?)", opt_.tokenizer.string(),
                         tok_->vocab_size(), cfg.vocab_size);

    const auto calib_ids = tokenize_file(*tok_, opt_.calib, *opt_.text_format);
    const auto eval_ids = tokenize_file(*tok_, opt_.eval, *opt_.text_format);
    require<ArgumentError>(calib_ids.size() > opt_.seqlen + 1,
                           "--calib '{}': {} tokens, calibration windows of --seqlen {} need more "
                           "than {}", opt_.calib.string(), calib_ids.size(), opt_.seqlen,
                           opt_.seqlen + 1);
    if (opt_.protocol == eval::PerplexityProtocol::kGptq) {
      require<ArgumentError>(eval_ids.size() >= opt_.seqlen,
                             "--eval '{}': {} tokens, shorter than one window of --seqlen {}",
                             opt_.eval.string(), eval_ids.size(), opt_.seqlen);
      eval_ = data::gptq_eval_windows(eval_ids, opt_.seqlen, *opt_.eval_tokens);
    } else {
      require<ArgumentError>(eval_ids.size() >= 2 * opt_.seqlen,
                             "--eval '{}': {} tokens, the llama.cpp protocol needs at least "
                             "2 x --seqlen = {}", opt_.eval.string(), eval_ids.size(),
                             2 * opt_.seqlen);
      eval_ = data::llamacpp_eval_windows(eval_ids, opt_.seqlen, tok_->bos_id(),
                                           *opt_.eval_tokens);
    }
    require<ArgumentError>(!eval_.empty(), "--eval-tokens {}: less than one window of {} tokens",
                           *opt_.eval_tokens, opt_.seqlen);
    calib_ = data::sample_calibration_windows(calib_ids, *opt_.calib_windows, opt_.seqlen,
                                              opt_.seed);
    model_ = std::make_unique<model::Transformer<cpu>>(cfg, ckpt_->weights);

    ContentHash weights;
    for (const auto& f : model_files()) weights.file(f);
    weights_hash_ = weights.hex();
    ContentHash h;
    const std::uint64_t wd = weights.digest();
    h.bytes(&wd, sizeof wd);
    for (const auto* ws : {&calib_, &eval_})
      for (const auto& w : *ws) {
        h.values(std::span<const data::TokenId>(w.tokens));
        const std::uint64_t t[2] = {w.target_begin, w.target_end};
        h.bytes(t, sizeof t);
      }
    fingerprint_ = h.hex();
  }

  [[nodiscard]] const ContextOptions& options() const noexcept { return opt_; }
  [[nodiscard]] const model::ModelConfig& config() const noexcept { return ckpt_->config; }
  [[nodiscard]] const io::Checkpoint& checkpoint() const noexcept { return *ckpt_; }
  [[nodiscard]] const model::Transformer<cpu>& model() const noexcept { return *model_; }
  [[nodiscard]] const io::AnyTokenizer& tokenizer() const noexcept { return *tok_; }
  [[nodiscard]] std::span<const data::Window> calibration() const noexcept { return calib_; }
  [[nodiscard]] std::span<const data::Window> evaluation() const noexcept { return eval_; }
  /// XXH3 of the model files, the calibration and the evaluation windows.
  [[nodiscard]] const std::string& fingerprint() const noexcept { return fingerprint_; }
  [[nodiscard]] const std::string& weights_hash() const noexcept { return weights_hash_; }

  /// The files the weights come from (config and shards of a HF directory, or the .bin).
  [[nodiscard]] std::vector<std::filesystem::path> model_files() const {
    namespace fs = std::filesystem;
    if (!fs::is_directory(opt_.model)) return {opt_.model};
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(opt_.model)) {
      const auto name = e.path().filename().string();
      if (e.is_regular_file() && (name == "config.json" || e.path().extension() == ".safetensors"))
        files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    return files;
  }

  /// The "model" and "data" sections of results.json.
  [[nodiscard]] nlohmann::json describe() const {
    std::size_t linear = 0, all = 0;
    for (const auto& li : model_->linears()) linear += li.parameters();
    for (const auto& name : ckpt_->weights.names()) {
      std::size_t n = 1;
      for (auto d : ckpt_->weights.info(name).shape) n *= d;
      all += n;
    }
    const bool gptq = opt_.protocol == eval::PerplexityProtocol::kGptq;
    return {{"model", {{"path", opt_.model.string()},
                       {"architecture", std::string(model::architecture_name(config().architecture))},
                       {"linears", model_->linears().size()},
                       {"parameters", all},
                       {"linear_parameters", linear},
                       {"fingerprint", weights_hash_},
                       {"tokenizer", opt_.tokenizer.string()}}},
            {"data", {{"calibration", {{"path", opt_.calib.string()},
                                       {"windows", calib_.size()},
                                       {"seqlen", opt_.seqlen},
                                       {"tokens", calib_.size() * opt_.seqlen},
                                       {"seed", opt_.seed}}},
                      {"evaluation", {{"path", opt_.eval.string()},
                                      {"windows", eval_.size()},
                                      {"seqlen", opt_.seqlen},
                                      {"tokens", data::count_targets(eval_)},
                                      {"protocol", gptq ? "gptq" : "llamacpp"}}},
                      {"text_format", std::string(text_format_name(*opt_.text_format))},
                      {"fingerprint", fingerprint_}}}};
  }

 private:
  ContextOptions opt_;
  std::unique_ptr<io::Checkpoint> ckpt_;
  std::unique_ptr<io::AnyTokenizer> tok_;
  std::unique_ptr<model::Transformer<cpu>> model_;
  std::vector<data::Window> calib_, eval_;
  std::string fingerprint_, weights_hash_;
};

}  // namespace fragile::study
