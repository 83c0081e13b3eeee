// The README's code example, compiled so that it stays true. Usage:
//   readme_example <model> <tokenizer> <text>
#include <fragile/fragile.hpp>
#include <fmt/format.h>

int main(int argc, char** argv) try {
  if (argc != 4) {
    fmt::print(stderr, "usage: readme_example <model> <tokenizer> <text>\n");
    return 2;
  }
  auto ckpt = fragile::io::load_model(argv[1]);  // HF model directory or llama2.c .bin
  auto tok  = fragile::io::load_tokenizer(argv[2]);  // tokenizer.json, vocab dir or tokenizer.bin
  auto text = fragile::io::read_text_file(argv[3]);
  auto ids  = tok.encode(text);
  auto windows = fragile::data::gptq_eval_windows(ids, /*seqlen=*/256, /*max_tokens=*/60000);

  // Data-free sensitivity of every linear layer (NSDS reconstruction).
  std::vector<std::vector<float>> w;
  std::vector<fragile::sensitivity::NsdsModule> modules;
  for (std::size_t b = 0; b < ckpt.config.num_hidden_layers; ++b)
    for (auto kind : fragile::model::kAllLinearKinds) {
      auto name = fragile::model::linear_name(b, kind) + ".weight";
      auto [rows, cols] = fragile::model::linear_shape(ckpt.config, kind);
      ckpt.weights.read_f32(name, w.emplace_back(rows * cols));
      modules.push_back({name, w.back().data(), rows, cols});
    }
  for (auto& s : fragile::sensitivity::nsds_scores(modules)) fmt::print("{} {:.3f}\n", s.name, s.score);
} catch (const std::exception& e) {  // fragile::Error names the input; others are rare
  fmt::print(stderr, "readme_example: error: {}\n", e.what());
  return 1;
}
