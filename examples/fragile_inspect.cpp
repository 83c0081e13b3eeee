// fragile_inspect: load a checkpoint (Hugging Face directory or llama2.c .bin), print its
// structure and a per-linear-layer table (shape, parameters, weight statistics and the
// data-free NSDS sensitivity), then tokenize an evaluation text and cut it into windows under
// the GPTQ and llama.cpp protocols.
//
//   fragile_inspect                                 # stories260K + TinyStories (shared data),
//                                                   # else the embedded tiny Llama checkpoint
//   fragile_inspect --model path/to/hf_dir --text wiki.test.raw --seqlen 2048
#include <fragile/fragile.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

fs::path data_dir() {
  if (const char* env = std::getenv("FRAGILE_DATA_DIR"); env && *env) return env;
  return FRAGILE_DATA_DIR_DEFAULT;
}

struct Options {
  fs::path model, text, tokenizer;
  std::size_t seqlen = 256;
  std::size_t max_tokens = 0;
};

void print_config(const fragile::model::ModelConfig& c, const fs::path& path) {
  fmt::print("model        {}\n", path.string());
  fmt::print("architecture {} (RoPE {}, theta {}, {})\n",
             fragile::model::architecture_name(c.architecture),
             c.rope_style == fragile::model::RopeStyle::kHalf ? "rotate_half" : "interleaved",
             c.rope_theta,
             c.rope_scaling.type == fragile::model::RopeScaling::Type::kLlama3 ? "llama3 scaling"
                                                                                : "no scaling");
  fmt::print("dims         hidden {} | intermediate {} | layers {} | heads {} (kv {}) x {} | "
             "vocab {} | context {}\n",
             c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_attention_heads,
             c.num_key_value_heads, c.head_dim, c.vocab_size, c.max_position_embeddings);
  fmt::print("options      rms_norm_eps {} | tied embeddings {} | q/k/v bias {} | sliding "
             "window {} | stored as {}\n",
             c.rms_norm_eps, c.tie_word_embeddings, c.attention_bias,
             c.sliding_window ? std::to_string(*c.sliding_window) : std::string("none"),
             fragile::dtype_name(c.torch_dtype));
}

void print_linear_table(const fragile::io::Checkpoint& ckpt) {
  const auto& c = ckpt.config;
  std::vector<std::vector<float>> weights;
  std::vector<fragile::sensitivity::NsdsModule> modules;
  std::size_t total_params = 0;
  for (std::size_t b = 0; b < c.num_hidden_layers; ++b)
    for (auto kind : fragile::model::kAllLinearKinds) {
      const auto name = fragile::model::linear_name(b, kind) + ".weight";
      const auto [rows, cols] = fragile::model::linear_shape(c, kind);
      const auto& info = ckpt.weights.info(name);
      fragile::require<fragile::ShapeError>(
          info.shape == std::vector<std::size_t>{rows, cols},
          "{}: stored shape {}, config implies [{}, {}]", name,
          fragile::io::shape_string(info.shape), rows, cols);
      auto& w = weights.emplace_back(rows * cols);
      ckpt.weights.read_f32(name, w);
      const bool writer = kind == fragile::model::LinearKind::kV ||
                          kind == fragile::model::LinearKind::kO ||
                          kind == fragile::model::LinearKind::kDown;
      modules.push_back({name, nullptr, rows, cols, writer});
      total_params += rows * cols;
    }
  for (std::size_t i = 0; i < modules.size(); ++i) modules[i].weight = weights[i].data();
  const auto nsds = fragile::sensitivity::nsds_scores(modules);

  fmt::print("\n{:<40} {:>13} {:>10} {:>9} {:>9} {:>9} {:>8} {:>6}\n", "linear layer", "shape",
             "params", "std", "absmax", "kurtosis", "spec.H", "NSDS");
  for (std::size_t i = 0; i < modules.size(); ++i) {
    const auto& w = weights[i];
    double sum2 = 0, absmax = 0;
    for (float v : w) {
      sum2 += double(v) * v;
      absmax = std::max(absmax, double(std::abs(v)));
    }
    std::string name = modules[i].name.substr(0, modules[i].name.size() - 7);  // drop ".weight"
    fmt::print("{:<40} {:>13} {:>10} {:>9.4f} {:>9.4f} {:>9.2f} {:>8.4f} {:>6.3f}\n", name,
               fmt::format("{}x{}", modules[i].rows, modules[i].cols), w.size(),
               std::sqrt(sum2 / double(w.size())), absmax, nsds[i].numerical, nsds[i].structural,
               nsds[i].score);
  }
  fmt::print("{} linear layers, {} quantizable parameters; {} tensors in the checkpoint\n",
             modules.size(), total_params, ckpt.weights.size());
}

void print_windows(const Options& opt, const fragile::io::Checkpoint& ckpt) {
  auto tok_path = opt.tokenizer.empty() ? fragile::io::find_tokenizer(opt.model, ckpt.config)
                                        : std::optional<fs::path>(opt.tokenizer);
  if (!tok_path) {
    fmt::print("\nno tokenizer found beside the model (pass --tokenizer); skipping text windows\n");
    return;
  }
  if (opt.text.empty()) {
    fmt::print("\nno evaluation text (pass --text); skipping text windows\n");
    return;
  }
  const auto tokenizer = fragile::io::load_tokenizer(*tok_path);
  fragile::require<fragile::ConfigError>(
      tokenizer.vocab_size() <= ckpt.config.vocab_size,
      "tokenizer '{}' has {} tokens, the model's vocabulary only {}", tok_path->string(),
      tokenizer.vocab_size(), ckpt.config.vocab_size);
  const std::string text = opt.text.extension() == ".raw"
                               ? fragile::io::read_wikitext_raw(opt.text)
                               : fragile::io::read_text_file(opt.text);
  // Files of documents separated by <|endoftext|> lines (TinyStories) are tokenized document by
  // document, each with BOS first as llama2.c trains; other text is one stream.
  std::vector<std::string> documents;
  if (text.find("<|endoftext|>") != std::string::npos)
    documents = fragile::io::split_documents(text);
  else
    documents.push_back(text);
  std::vector<fragile::data::TokenId> stream, ids;
  for (const auto& doc : documents) {
    if (auto bos = tokenizer.bos_id()) stream.push_back(*bos);
    const auto doc_ids = tokenizer.encode(doc);
    stream.insert(stream.end(), doc_ids.begin(), doc_ids.end());
    if (ids.empty()) ids = doc_ids;
  }
  const std::size_t seqlen = std::min(opt.seqlen, ckpt.config.max_position_embeddings);
  const auto gptq = fragile::data::gptq_eval_windows(stream, seqlen, opt.max_tokens);
  const auto lcpp = fragile::data::llamacpp_eval_windows(stream, seqlen, tokenizer.bos_id(),
                                                         opt.max_tokens);
  fmt::print("\ntext         {} ({} bytes, {} documents) -> {} tokens with {}\n",
             opt.text.string(), text.size(), documents.size(), stream.size(), tok_path->string());
  fmt::print("windows      GPTQ protocol: {} x {} ({} scored) | llama.cpp protocol: {} x {} ({} "
             "scored)\n",
             gptq.size(), seqlen, fragile::data::count_targets(gptq), lcpp.size(), seqlen,
             fragile::data::count_targets(lcpp));
  const auto head = std::span<const std::int32_t>(ids).first(std::min<std::size_t>(ids.size(), 24));
  fmt::print("first tokens {}\n             \"{}\"\n", fmt::join(head, " "), tokenizer.decode(head));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fragile_inspect: structure, weight statistics and data windows of a checkpoint"};
  Options opt;
  const fs::path stories = data_dir() / "models/stories260K/stories260K.bin";
  app.add_option("--model", opt.model,
                 "HF model directory, llama2.c .bin, or 'stories260K' (the shared data's; "
                 "default: the embedded KJV model)");
  app.add_option("--text", opt.text, "evaluation text (default: the model's evaluation book)");
  app.add_option("--tokenizer", opt.tokenizer, "tokenizer file or directory (default: beside model)");
  app.add_option("--seqlen", opt.seqlen, "window length in tokens")->check(CLI::PositiveNumber);
  app.add_option("--max-tokens", opt.max_tokens, "token budget for the windows (0 = all)");
  CLI11_PARSE(app, argc, argv);
  try {
    if (opt.model.empty()) {
      // The embedded default: the model fragile trained itself on the KJV Bible
      // (examples/models/kjv-tiny), scored on its held-out evaluation book.
      opt.model = FRAGILE_EMBEDDED_MODEL;
      if (opt.text.empty()) opt.text = fs::path(FRAGILE_EMBEDDED_MODEL) / "eval.txt";
    } else if (opt.model == "stories260K") {
      opt.model = stories;
      if (opt.text.empty()) opt.text = data_dir() / "text/tinystories/valid_0001-0500.txt";
    }
    const auto ckpt = fragile::io::load_model(opt.model);
    print_config(ckpt.config, opt.model);
    print_linear_table(ckpt);
    print_windows(opt, ckpt);
  } catch (const fragile::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
