// The quantizers on stories260K's real linear layers with activations captured by the runtime
// (Transformer<cpu>::capture) on held-out TinyStories calibration text: AdaRound, LWC, the
// clip-ratio search and GPTQ must beat RTN's layer-output error at equal bits. Skipped cleanly
// when the shared data folder is absent.
#include "support/test_data.hpp"

#include <fragile/backend/cpu.hpp>
#include <fragile/data/windows.hpp>
#include <fragile/io/load_model.hpp>
#include <fragile/io/text.hpp>
#include <fragile/io/tokenizer/llama2c_tokenizer.hpp>
#include <fragile/model/transformer.hpp>
#include <fragile/quant/adaround.hpp>
#include <fragile/quant/gptq.hpp>
#include <fragile/quant/lwc.hpp>
#include <fragile/quant/rtn.hpp>

#include <map>
#include <string>
#include <vector>

namespace {

using fragile::MatrixF;
namespace fq = fragile::quant;
namespace fm = fragile::model;

/// Collects x (tokens, in) of the chosen linear layers over every batch.
struct XCollector {
  std::map<std::size_t, std::vector<float>> x;
  std::map<std::size_t, std::size_t> in;
  [[nodiscard]] fm::CaptureNeeds needs() const { return {.x = true}; }
  void observe(const fm::LayerBatch& c) {
    auto& buf = x[c.layer->index];
    in[c.layer->index] = c.layer->in_features;
    const auto xs = c.x.host();
    buf.insert(buf.end(), xs.begin(), xs.end());
  }
};

fq::QuantSpec spec_of(int bits, int group) {
  fq::QuantSpec s;
  s.bits = bits;
  s.group_size = group;
  return s;
}

}  // namespace

TEST_CASE("quantizers beat RTN on stories260K's captured layers", "[quant][real]") {
  FRAGILE_REQUIRE_DATA_FILE(model_path, "models/stories260K/stories260K.bin");
  FRAGILE_REQUIRE_DATA_FILE(tok_path, "models/stories260K/tok512.bin");
  FRAGILE_REQUIRE_DATA_FILE(calib_path, "text/tinystories/calib_data00_667.txt");

  const auto ckpt = fragile::io::load_model(model_path);
  const fm::Transformer<fragile::cpu> model(ckpt.config, ckpt.weights);
  const fragile::io::Llama2cTokenizer tok(tok_path);
  std::vector<std::int32_t> tokens;
  const auto stories = fragile::io::read_tinystories(calib_path);
  for (std::size_t i = 0; i < 40 && i < stories.size(); ++i) {
    const auto ids = tok.encode(stories[i], true, false);
    tokens.insert(tokens.end(), ids.begin(), ids.end());
  }
  std::vector<std::vector<std::int32_t>> windows;
  for (const auto& w : fragile::data::sample_calibration_windows(tokens, 8, 64, 7))
    windows.push_back(w.tokens);

  // Block 2: every kind of linear layer (q k v o gate up down).
  std::vector<std::size_t> chosen;
  for (const auto& l : model.linears())
    if (l.block == 2) chosen.push_back(l.index);
  REQUIRE(chosen.size() == 7);
  XCollector collector;
  fm::CaptureOptions opt;
  opt.batch_size = 4;
  opt.layers = chosen;
  (void)model.capture(std::span<const std::vector<std::int32_t>>(windows), opt, collector);

  for (std::size_t index : chosen) {
    const auto& info = model.linears()[index];
    INFO(info.name);
    const auto wspan = model.weight(index);
    const auto w = fragile::as_matrix(wspan.data(), info.out_features, info.in_features);
    const auto& xs = collector.x.at(index);
    const auto x = fragile::as_matrix(xs.data(), xs.size() / info.in_features, info.in_features);
    REQUIRE(x.rows() == 8 * 64);
    fq::LayerCapture cap(info.name);
    cap.with_activations(x);

    for (int bits : {2, 3}) {
      const int group = 32;
      INFO("bits " << bits);
      const auto spec = spec_of(bits, group);
      const double rtn = fq::output_error(w, fq::rtn_quantize(w, spec).dequantize(), x);

      fq::AdaRound ada;
      ada.iterations = 300;
      ada.lr = 1e-2;
      CHECK(ada.quantize(w, spec, cap).loss < rtn);

      fq::Lwc lwc;
      lwc.epochs = 20;
      lwc.batch_tokens = 64;
      fq::Lwc::State lst;
      const double lwc_loss = lwc.quantize(w, spec, cap, &lst).loss;
      CHECK(lst.final_objective <= lst.initial_objective);
      CHECK(lwc_loss < rtn);

      CHECK(fq::ClipRatioSearch{}.quantize(w, spec, cap).loss <= rtn);

      const auto g = fq::Gptq{}.quantize(w, spec, cap);
      CHECK(fq::output_error(w, g.dequantize(), x) < rtn);
    }
  }
}
