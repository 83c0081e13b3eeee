// stories260K (llama2.c) FP32 perplexity on TinyStories equals the independent PyTorch
// re-implementation of the llama2.c forward (tools/stories260k_reference.py, float64), under the
// GPTQ and the llama.cpp protocols, to 1e-4 relative. Skipped when the shared data is absent.
#include "support/test_data.hpp"

#include <fragile/backend/cpu.hpp>
#include <fragile/data/windows.hpp>
#include <fragile/eval/perplexity.hpp>
#include <fragile/io/llama2c.hpp>
#include <fragile/io/text.hpp>
#include <fragile/io/tokenizer/llama2c_tokenizer.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>

TEST_CASE("eval: stories260K perplexity equals the PyTorch reference", "[eval][perplexity][data]") {
  FRAGILE_REQUIRE_DATA_FILE(model_path, "models/stories260K/stories260K.bin");
  FRAGILE_REQUIRE_DATA_FILE(tok_path, "models/stories260K/tok512.bin");
  FRAGILE_REQUIRE_DATA_FILE(text_path, "text/tinystories/valid_0001-0500.txt");
  std::ifstream in(fragile::test::source_dir() / "fixtures" / "stories260k" / "reference.json");
  REQUIRE(in);
  const auto ref = nlohmann::json::parse(in);
  const auto tokens = ref.at("tokens").get<std::vector<fragile::data::TokenId>>();
  const auto seqlen = ref.at("seqlen").get<std::size_t>();

  auto ckpt = fragile::io::read_llama2c(model_path);
  const fragile::model::Transformer<fragile::cpu> model(ckpt.config, ckpt.weights);

  SECTION("GPTQ protocol") {
    const auto windows = fragile::data::gptq_eval_windows(tokens, seqlen);
    REQUIRE(windows.size() == ref.at("windows").get<std::size_t>());
    const auto r = fragile::eval::perplexity(model, windows, {.batch_size = 4});
    const double expected = ref.at("gptq_ppl").get<double>();
    CHECK(std::abs(r.perplexity - expected) / expected < 1e-4);
    const auto per = ref.at("window_mean_nll").get<std::vector<double>>();
    for (std::size_t i = 0; i < per.size(); ++i) CHECK(r.window_nll[i] == Approx(per[i]).epsilon(1e-4));
  }
  SECTION("llama.cpp protocol") {
    const auto windows = fragile::data::llamacpp_eval_windows(tokens, seqlen, ref.at("bos").get<int>());
    const auto r = fragile::eval::perplexity(
        model, windows, {.protocol = fragile::eval::PerplexityProtocol::kLlamaCpp, .batch_size = 4});
    CHECK(r.tokens == ref.at("llamacpp_scored").get<std::size_t>());
    const double expected = ref.at("llamacpp_ppl").get<double>();
    CHECK(std::abs(r.perplexity - expected) / expected < 1e-4);
  }
  SECTION("the reference's token ids are what fragile's tokenizer produces") {
    const fragile::io::Llama2cTokenizer tok(tok_path);
    std::vector<fragile::data::TokenId> ids;
    for (const auto& story : fragile::io::read_tinystories(text_path)) {
      if (ids.size() >= tokens.size()) break;
      const auto t = tok.encode(story, true);
      ids.insert(ids.end(), t.begin(), t.end());
    }
    ids.resize(tokens.size());
    CHECK(ids == tokens);
  }
}
