// block_qp_ratios: paper 002's layer-wise high-impact ratio optimisation, end to end on a real
// checkpoint (default stories260K):
//   1. channel importance = mean empirical Fisher diagonal of each weight column, from one
//      capture pass over calibration windows (per-sequence squared weight gradients);
//   2. for every linear layer and every candidate ratio r, the channel-split hybrid quantizes the
//      top r of columns at b_H and the rest at b_N (RTN for both parts here: fast, and the same
//      quantizer for every option, so the study isolates the ratio choice);
//   3. MBuilder fills the block-diagonal M from the model's mean calibration NLL under weight
//      overrides (model output, not block output: L(theta + Delta) is the full forward pass), and
//      the evaluations are counted and timed;
//   4. BlockQP solves min delta^T M delta under the average-bit budget; compared with the best
//      uniform ratio that fits and with the additive MCKP on M's diagonal, by perplexity on
//      held-out text (GPTQ protocol).
// Results go to a JSON file.
#include <fragile/alloc/block_qp.hpp>
#include <fragile/alloc/mckp.hpp>
#include <fragile/eval/perplexity.hpp>
#include <fragile/fragile.hpp>
#include <fragile/model/transformer.hpp>
#include <fragile/quant/hybrid.hpp>
#include <fragile/quant/rtn.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

fs::path data_dir() {
  if (const char* env = std::getenv("FRAGILE_DATA_DIR"); env && *env) return env;
  return FRAGILE_DATA_DIR_DEFAULT;
}

/// Accumulates each linear layer's column sums of the per-sequence squared weight gradients.
class FisherColumnImportance {
 public:
  explicit FisherColumnImportance(const std::vector<fragile::model::LinearInfo>& linears) {
    for (const auto& li : linears) sums_.emplace_back(li.in_features, 0.0);
    rows_.resize(linears.size());
    for (const auto& li : linears) rows_[li.index] = li.out_features;
  }
  [[nodiscard]] fragile::model::CaptureNeeds needs() const noexcept { return {.weight_grad_sq = true}; }
  void observe(const fragile::model::LayerCapture& c) {
    auto& s = sums_[c.layer->index];
    const std::size_t in = c.layer->in_features;
    for (std::size_t i = 0; i < c.layer->out_features; ++i)
      for (std::size_t j = 0; j < in; ++j) s[j] += c.weight_grad_sq[i * in + j];
  }
  /// Mean over the column's rows (the constant factor does not change the ranking).
  [[nodiscard]] std::vector<float> importance(std::size_t layer) const {
    std::vector<float> out(sums_[layer].size());
    for (std::size_t j = 0; j < out.size(); ++j)
      out[j] = static_cast<float>(sums_[layer][j] / static_cast<double>(rows_[layer]));
    return out;
  }

 private:
  std::vector<std::vector<double>> sums_;
  std::vector<std::size_t> rows_;
};

std::vector<fragile::data::TokenId> tokenize_documents(const fragile::io::AnyTokenizer& tok,
                                                       const fs::path& path) {
  return fragile::io::encode_documents(tok, fragile::io::read_tinystories(path));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"block_qp_ratios: paper 002's high-impact ratio optimisation on a real checkpoint"};
  fs::path model_path = data_dir() / "models/stories260K/stories260K.bin";
  fs::path calib_path = data_dir() / "text/tinystories/calib_data00_667.txt";
  fs::path eval_path = data_dir() / "text/tinystories/valid_0001-0500.txt";
  fs::path out_path = "block_qp_ratios.json";
  std::vector<double> ratios{0.02, 0.05, 0.1, 0.15, 0.2};
  int bits_high = 4, bits_normal = 2, group = 32;
  std::size_t calib_windows = 8, seqlen = 128, eval_tokens = 32768;
  double budget_fraction = 0.5;
  std::uint64_t seed = 0;
  app.add_option("--model", model_path, "llama2.c .bin or HF model directory");
  app.add_option("--calib", calib_path, "calibration text (documents separated by <|endoftext|>)");
  app.add_option("--eval", eval_path, "evaluation text");
  app.add_option("--ratios", ratios, "candidate high-impact ratios");
  app.add_option("--bits-high", bits_high, "b_H");
  app.add_option("--bits-normal", bits_normal, "b_N");
  app.add_option("--group", group, "group size along the input dimension (0 = per row)");
  app.add_option("--calib-windows", calib_windows, "calibration windows");
  app.add_option("--seqlen", seqlen, "tokens per window");
  app.add_option("--eval-tokens", eval_tokens, "evaluation token budget");
  app.add_option("--budget-fraction", budget_fraction,
                 "budget position in the feasible range [cheapest, costliest] of average bits")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--seed", seed, "calibration sampling seed");
  app.add_option("--out", out_path, "results JSON");
  CLI11_PARSE(app, argc, argv);

  try {
    namespace fm = fragile::model;
    const auto ckpt = fragile::io::load_model(model_path);
    const fm::Transformer<> model(ckpt.config, ckpt.weights);
    const auto tok_path = fragile::io::find_tokenizer(model_path, ckpt.config);
    fragile::require<fragile::IoError>(tok_path.has_value(), "no tokenizer beside '{}'",
                                       model_path.string());
    const auto tok = fragile::io::load_tokenizer(*tok_path);

    const auto calib_stream = tokenize_documents(tok, calib_path);
    const auto calib = fragile::data::sample_calibration_windows(calib_stream, calib_windows,
                                                                 seqlen, seed);
    std::vector<fm::Window> calib_ids;
    for (const auto& w : calib) calib_ids.push_back(w.tokens);
    const auto eval_stream = tokenize_documents(tok, eval_path);
    const auto eval_windows = fragile::data::gptq_eval_windows(eval_stream, seqlen, eval_tokens);

    // 1. channel importance from the empirical Fisher diagonal
    auto t0 = Clock::now();
    FisherColumnImportance fisher(model.linears());
    model.capture(std::span<const fm::Window>(calib_ids), {.batch_size = calib_windows}, fisher);
    const double fisher_s = std::chrono::duration<double>(Clock::now() - t0).count();

    // 2. every (layer, ratio) option: fake-quant weight and exact storage cost
    t0 = Clock::now();
    fragile::quant::QuantSpec spec{.bits = bits_normal, .group_size = group};
    fragile::sensitivity::SensitivityTable table("calibration NLL (M from MBuilder)");
    std::vector<std::vector<std::vector<float>>> fake(model.linears().size());
    for (const auto& li : model.linears()) {
      const std::size_t l = table.add_layer(
          {li.name, li.block, std::string(fm::linear_suffix(li.kind)), li.parameters()});
      const auto w = model.weight(li.index);
      const auto importance = fisher.importance(li.index);
      const auto capture =
          fragile::quant::LayerCapture(li.name).with_channel_importance(importance);
      for (double r : ratios) {
        fragile::quant::ChannelSplit<fragile::quant::Rtn, fragile::quant::Rtn> split;
        split.ratio = r;
        split.high_bits = bits_high;
        const auto q = split.quantize(
            fragile::as_matrix(w.data(), li.out_features, li.in_features), spec, capture);
        const fragile::MatrixF d = q.dequantize();
        fake[l].emplace_back(d.data(), d.data() + d.size());
        table.add_option(l, {fmt::format("r={}", r), r, q.storage_bits(), std::nullopt});
      }
    }
    const double quant_s = std::chrono::duration<double>(Clock::now() - t0).count();

    // 3. M from loss evaluations through weight overrides
    const std::uint64_t planned = fragile::alloc::MBuilder::evaluations(table);
    fragile::study::Progress progress("MBuilder", planned);
    auto loss = [&](std::span<const std::pair<std::size_t, std::size_t>> perturbed) {
      auto ov = model.make_overrides();
      for (const auto& [l, m] : perturbed) {
        const auto& li = model.linears()[l];
        ov.set(l, std::span<const float>(fake[l][m]), li.out_features, li.in_features);
      }
      const auto nll = model.token_nll(std::span<const fm::Window>(calib_ids), &ov);
      double sum = 0;
      for (float v : nll) sum += v;
      progress.tick();
      return sum / static_cast<double>(nll.size());
    };
    t0 = Clock::now();
    const auto built = fragile::alloc::MBuilder{}.build(table, loss);
    const double m_s = std::chrono::duration<double>(Clock::now() - t0).count();
    for (std::size_t l = 0; l < table.num_layers(); ++l)
      for (std::size_t m = 0; m < table.num_options(l); ++m)
        table.set_score(l, m, built.m.at(l, m, l, m));
    table.set_interactions(built.m);

    // 4. allocations at one budget, evaluated by perplexity
    const auto range = fragile::alloc::cost_range(table);
    const double lo_bits = range.min_average(), hi_bits = range.max_average();
    const double budget_bits = lo_bits + budget_fraction * (hi_bits - lo_bits);
    const auto budget = fragile::alloc::Budget::average(budget_bits);
    const auto qp = fragile::alloc::BlockQP{}.allocate(table, budget);
    const auto additive = fragile::alloc::MCKP{}.allocate(table, budget);
    // Uniform: the largest single ratio whose average cost fits the budget.
    std::vector<std::size_t> uniform(table.num_layers(), 0);
    double uniform_ratio = ratios.front();
    for (std::size_t m = 0; m < ratios.size(); ++m) {
      std::uint64_t cost = 0, params = 0;
      for (std::size_t l = 0; l < table.num_layers(); ++l) {
        cost += table.cost(l, m);
        params += table.layer(l).parameters;
      }
      if (double(cost) / double(params) <= budget_bits) {
        std::fill(uniform.begin(), uniform.end(), m);
        uniform_ratio = ratios[m];
      }
    }
    auto ppl_of = [&](const std::vector<std::size_t>* choice) {
      auto ov = model.make_overrides();
      if (choice)
        for (std::size_t l = 0; l < choice->size(); ++l) {
          const auto& li = model.linears()[l];
          ov.set(l, std::span<const float>(fake[l][(*choice)[l]]), li.out_features, li.in_features);
        }
      return fragile::eval::perplexity(model, eval_windows, {.batch_size = 8, .overrides = &ov})
          .perplexity;
    };
    const double ppl_fp = ppl_of(nullptr), ppl_uniform = ppl_of(&uniform),
                 ppl_qp = ppl_of(&qp.option), ppl_additive = ppl_of(&additive.option);

    fmt::print("\n{}: {} linears x {} ratios, b_H = {}, b_N = {}, group {}\n", model_path.string(),
               table.num_layers(), ratios.size(), bits_high, bits_normal, group);
    fmt::print("calibration: {} x {} tokens; Fisher pass {:.2f} s; quantizing all options {:.2f} s\n",
               calib_windows, seqlen, fisher_s, quant_s);
    fmt::print("M: {} loss evaluations ({} planned) in {:.1f} s = {:.1f} ms each\n",
               built.evaluations, planned, m_s, 1e3 * m_s / double(built.evaluations));
    fmt::print("budget {:.4f} bits/weight (feasible {:.4f} .. {:.4f})\n\n", budget_bits, lo_bits,
               hi_bits);
    fmt::print("{:<28} {:>10} {:>12}\n", "allocation", "bits/w", "PPL");
    fmt::print("{:<28} {:>10} {:>12.4f}\n", "FP32", "32", ppl_fp);
    fmt::print("{:<28} {:>10} {:>12.4f}\n", fmt::format("uniform r={}", uniform_ratio),
               "-", ppl_uniform);
    fmt::print("{:<28} {:>10.4f} {:>12.4f}\n", "MCKP on diag(M)", additive.achieved_bits_per_weight,
               ppl_additive);
    fmt::print("{:<28} {:>10.4f} {:>12.4f}\n", "BlockQP (delta^T M delta)", qp.achieved_bits_per_weight,
               ppl_qp);

    nlohmann::json out{{"model", model_path.string()},
                       {"ratios", ratios},
                       {"bits_high", bits_high},
                       {"bits_normal", bits_normal},
                       {"group", group},
                       {"calibration", {{"windows", calib_windows}, {"seqlen", seqlen}, {"seed", seed}}},
                       {"evaluations", built.evaluations},
                       {"m_seconds", m_s},
                       {"budget_bits_per_weight", budget_bits},
                       {"perplexity",
                        {{"fp32", ppl_fp}, {"uniform", ppl_uniform}, {"uniform_ratio", uniform_ratio},
                         {"mckp_diag", ppl_additive}, {"block_qp", ppl_qp}}},
                       {"block_qp", qp},
                       {"mckp_diag", additive}};
    std::ofstream(out_path) << out.dump(1) << "\n";
    fmt::print("\nwrote {}\n", out_path.string());
  } catch (const fragile::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
