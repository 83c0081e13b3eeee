// quantize_candidates with CandidateInputs::kQuantizedPrefix (GPTQ's sequential protocol):
// block 0 sees the FP model's inputs, so its candidates equal the FP-input ones; block 1's
// equal those of an FP-input pass over a model whose block-0 weights ARE the quantized ones.
#include "support/test_data.hpp"

#include <fragile/backend/cpu.hpp>
#include <fragile/io/load_model.hpp>
#include <fragile/io/text.hpp>
#include <fragile/io/tokenizer/tokenizer.hpp>
#include <fragile/quant/gptq.hpp>
#include <fragile/sensitivity/candidates.hpp>
#include <fragile/train/init.hpp>

using namespace fragile;

TEST_CASE("candidates: quantized-prefix inputs are the sequential GPTQ protocol",
          "[sensitivity][candidates]") {
  const auto dir = test::source_dir().parent_path() / "examples/models/kjv-tiny";
  const auto ckpt = io::load_model(dir);
  model::Transformer<cpu> m(ckpt.config, ckpt.weights);
  const auto tok = io::load_tokenizer(dir / "tokenizer.json");
  const auto ids = tok.encode(io::read_text_file(dir / "calib.txt"));
  const auto calib = data::sample_calibration_windows(ids, 8, 64, 0);
  const std::vector<sensitivity::CandidateOption> opt{{"3bit", {.bits = 3, .group_size = 32}}};
  sensitivity::CandidateOptions fp_inputs{.batch_size = 4, .progress = {}};
  auto prefix_inputs = fp_inputs;
  prefix_inputs.inputs = sensitivity::CandidateInputs::kQuantizedPrefix;

  const auto fp = sensitivity::quantize_candidates(m, quant::Gptq{}, opt, calib, fp_inputs);
  const auto seq = sensitivity::quantize_candidates(m, quant::Gptq{}, opt, calib, prefix_inputs);

  // The model with block 0 replaced by its quantized weights, seen with FP inputs.
  auto tensors = train::named_tensors(m);
  for (const auto& li : m.linears())
    if (li.block == 0) {
      const MatrixF q = fp.at(li.index, 0).dequantize();
      tensors[li.name + ".weight"].assign(q.data(), q.data() + q.size());
    }
  const model::Transformer<cpu> m0(ckpt.config, tensors);
  const auto after0 = sensitivity::quantize_candidates(m0, quant::Gptq{}, opt, calib, fp_inputs);

  std::size_t differs_from_fp = 0;
  for (const auto& li : m.linears()) {
    INFO(li.name);
    const MatrixF s = seq.at(li.index, 0).dequantize();
    if (li.block == 0) CHECK((s.array() == fp.at(li.index, 0).dequantize().array()).all());
    if (li.block == 1) {
      CHECK((s.array() == after0.at(li.index, 0).dequantize().array()).all());
      differs_from_fp += (s.array() != fp.at(li.index, 0).dequantize().array()).any();
    }
  }
  CHECK(differs_from_fp > 0);  // the prefix changes block 1's inputs, hence its GPTQ result
}
