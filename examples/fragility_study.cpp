// fragility_study: paper 000's question on a real checkpoint (default stories260K): which
// per-layer score predicts which linear layers are fragile at b bits?
//   1. candidates: RTN at {2, 3, 4, 8} bits for every linear (one quantizer setting per run of
//      --group: e.g. 32 and 0 = per output channel);
//   2. one metric pass with model-sampled labels (paper 000's procedure: D_l, its diagonal, FEO,
//      MC Fisher trace, GPTQ H-diagonal) and one with the data's labels (empirical Fisher trace,
//      parameter-space empirical Fisher diagonal); NSDS from the weights alone;
//   3. the oracle: V_l(b) = PPL(all linears b-bit) - PPL(all but l), and its KL version, for
//      every linear, on held-out text (GPTQ protocol), resumable from <out>/oracle.jsonl;
//   4. Spearman, Pearson and Kendall (scipy's p-values) of each metric at b bits against V_l,
//      with a bootstrap CI of Spearman's rho.
// Writes <out>/fragility.json and <out>/fragility.md (tables a paper can take).
#include <fragile/eval/perplexity.hpp>
#include <fragile/fragile.hpp>
#include <fragile/quant/rtn.hpp>
#include <fragile/sensitivity/oracle.hpp>
#include <fragile/sensitivity/pass.hpp>
#include <fragile/stats/bootstrap.hpp>
#include <fragile/stats/correlation.hpp>
#include <fragile/study/result_store.hpp>

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
namespace fsen = fragile::sensitivity;

namespace {

fs::path data_dir() {
  if (const char* env = std::getenv("FRAGILE_DATA_DIR"); env && *env) return env;
  return FRAGILE_DATA_DIR_DEFAULT;
}

std::vector<fragile::data::TokenId> tokenize_documents(const fragile::io::AnyTokenizer& tok,
                                                       const fs::path& path) {
  return fragile::io::encode_documents(tok, fragile::io::read_tinystories(path));
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct MetricColumn {
  std::string name;         ///< as printed
  std::string description;
  std::vector<double> values;  ///< one per linear, at the studied bit width
};

std::string p_fmt(double p) { return p < 1e-4 ? fmt::format("{:.1e}", p) : fmt::format("{:.4f}", p); }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fragility_study: which per-layer metric predicts fragility V_l (paper 000)"};
  fs::path model_path = data_dir() / "models/stories260K/stories260K.bin";
  fs::path calib_path = data_dir() / "text/tinystories/calib_data00_667.txt";
  fs::path eval_path = data_dir() / "text/tinystories/valid_0001-0500.txt";
  fs::path out_dir = "fragility_study";
  int bits = 3;
  std::vector<int> groups{32, 0};
  std::vector<int> candidate_bits{2, 3, 4, 8};
  std::size_t calib_windows = 32, seqlen = 256, eval_tokens = 16384, batch = 8;
  std::uint64_t seed = 0;
  bool symmetric = false;
  app.add_option("--model", model_path, "llama2.c .bin or HF model directory");
  app.add_option("--calib", calib_path, "calibration text (documents separated by <|endoftext|>)");
  app.add_option("--eval", eval_path, "evaluation text");
  app.add_option("--bits", bits, "bit width of the oracle and the correlations");
  app.add_option("--groups", groups, "RTN group sizes to study (0 = per output channel)");
  app.add_option("--candidate-bits", candidate_bits, "bit widths of the sensitivity tables");
  app.add_option("--calib-windows", calib_windows, "calibration windows");
  app.add_option("--seqlen", seqlen, "tokens per window");
  app.add_option("--eval-tokens", eval_tokens, "evaluation token budget");
  app.add_option("--batch", batch, "windows per forward");
  app.add_flag("--symmetric", symmetric, "symmetric RTN grid (default: asymmetric min-max, GPTQ's default)");
  app.add_option("--seed", seed, "calibration sampling and label sampling seed");
  app.add_option("--out", out_dir, "output directory (results, resumable oracle store)");
  CLI11_PARSE(app, argc, argv);

  try {
    namespace fm = fragile::model;
    fragile::require<fragile::ArgumentError>(
        std::find(candidate_bits.begin(), candidate_bits.end(), bits) != candidate_bits.end(),
        "--bits {} must be one of --candidate-bits", bits);
    const auto ckpt = fragile::io::load_model(model_path);
    const fm::Transformer<> model(ckpt.config, ckpt.weights);
    const auto tok_path = fragile::io::find_tokenizer(model_path, ckpt.config);
    fragile::require<fragile::IoError>(tok_path.has_value(), "no tokenizer beside '{}'",
                                       model_path.string());
    const auto tok = fragile::io::load_tokenizer(*tok_path);
    const auto calib_stream = tokenize_documents(tok, calib_path);
    const auto calib = fragile::data::sample_calibration_windows(calib_stream, calib_windows,
                                                                 seqlen, seed);
    const auto eval_stream = tokenize_documents(tok, eval_path);
    const auto eval_windows = fragile::data::gptq_eval_windows(eval_stream, seqlen, eval_tokens);
    const std::size_t bits_option = static_cast<std::size_t>(
        std::find(candidate_bits.begin(), candidate_bits.end(), bits) - candidate_bits.begin());
    fs::create_directories(out_dir);
    const std::string fingerprint = fmt::format(
        "{}|{}|{}|seqlen={}|eval_tokens={}", fs::absolute(model_path).string(),
        fs::file_size(fs::is_directory(model_path) ? *tok_path : model_path),
        fs::absolute(eval_path).string(), seqlen, eval_tokens);
    fragile::study::ResultStore store(out_dir / "oracle.jsonl", fingerprint);
    const auto reference = fragile::eval::make_reference(model, eval_windows, {.batch_size = batch});

    const auto nsds = fsen::nsds_of(model);
    nlohmann::json out{{"model", model_path.string()},
                       {"bits", bits},
                       {"candidate_bits", candidate_bits},
                       {"calibration", {{"windows", calib_windows}, {"seqlen", seqlen}, {"seed", seed},
                                        {"tokens", calib_windows * seqlen}}},
                       {"eval", {{"path", eval_path.string()}, {"windows", eval_windows.size()},
                                 {"seqlen", seqlen}}},
                       {"studies", nlohmann::json::array()}};
    std::string md = fmt::format(
        "Model `{}` ({} linears), calibration {} x {} tokens of `{}`, evaluation {} x {} tokens of "
        "`{}` (GPTQ protocol), RTN symmetric={}, candidates {{{}}} bits, oracle at {} bits.\n",
        model_path.filename().string(), model.linears().size(), calib_windows, seqlen,
        calib_path.filename().string(), eval_windows.size(), seqlen,
        eval_path.filename().string(), symmetric,
        fmt::join(candidate_bits, ", "), bits);

    for (int group : groups) {
      const std::string label = fmt::format("rtn{}{}{}", bits, group > 0 ? fmt::format("g{}", group) : "pc",
                                            symmetric ? "sym" : "");
      fmt::print(stderr, "== {} ==\n", label);
      fragile::quant::QuantSpec base;
      base.group_size = group;
      base.symmetric = symmetric;
      auto t0 = Clock::now();
      const auto cands = fsen::quantize_candidates(model, fragile::quant::Rtn{},
                                                   fsen::bit_options(candidate_bits, base));
      const double quant_s = seconds_since(t0);

      t0 = Clock::now();
      fsen::MetricPassOptions mc{.labels = fm::LabelSource::kModelSample, .seed = seed,
                                 .batch_size = batch};
      mc.needs = fsen::needs_of<fsen::Visibility, fsen::VisibilityDiag, fsen::Feo,
                                fsen::FisherTrace, fsen::HessianDiagProxy, fsen::WeightMse>();
      const auto pass_mc = fsen::metric_pass(model, calib, cands, mc);
      const double mc_s = seconds_since(t0);
      t0 = Clock::now();
      fsen::MetricPassOptions emp = mc;
      emp.labels = fm::LabelSource::kData;
      emp.needs = fragile::sensitivity::kAllStats;
      const auto pass_emp = fsen::metric_pass(model, calib, cands, emp);
      const double emp_s = seconds_since(t0);

      const auto fake = cands.dequantized(bits_option);
      fsen::OracleOptions oo;
      oo.bits_label = label;
      oo.batch_size = batch;
      oo.store = &store;
      oo.reference = &reference;
      t0 = Clock::now();
      const auto oracle = fsen::restore_one(model, eval_windows, std::span<const fragile::MatrixF>(fake), oo);
      const double oracle_s = seconds_since(t0);

      const std::size_t o = bits_option;
      std::vector<MetricColumn> cols{
          {"D_l", "1/2 E[(g.dy)^2], model-sampled labels", pass_mc.scores<fsen::Visibility>(o)},
          {"D_l diag", "1/2 E[sum_i (g_i dy_i)^2], model-sampled labels",
           pass_mc.scores<fsen::VisibilityDiag>(o)},
          {"D_l (data labels)", "D_l with the data's next tokens as labels",
           pass_emp.scores<fsen::Visibility>(o)},
          {"FEO", "E[(g.dy)^2] / (E||g||^2 E||dy||^2)", pass_mc.scores<fsen::Feo>(o)},
          {"Fisher trace (MC)", "E||g||^2, model-sampled labels", pass_mc.scores<fsen::FisherTrace>(o)},
          {"Fisher trace (empirical)", "E||g||^2, data labels", pass_emp.scores<fsen::FisherTrace>(o)},
          {"weight MSE", "mean((Q(W)-W)^2)", pass_mc.scores<fsen::WeightMse>(o)},
          {"H-diag (GPTQ proxy)", "1/2 sum dW^2 diag(E[x x^T])", pass_mc.scores<fsen::HessianDiagProxy>(o)},
          {"Fisher diag (empirical)", "1/2 sum dW^2 E_n[(dL_n/dW)^2]", pass_emp.scores<fsen::FisherDiag>(o)},
          {"NSDS", "data-free reconstruction (kurtosis, spectral entropy)", {}}};
      for (const auto& s : nsds) cols.back().values.push_back(s.score);

      std::vector<double> v_ppl, v_kl;
      for (const auto& r : oracle.rows) {
        v_ppl.push_back(r.delta_ppl);
        v_kl.push_back(r.delta_kl);
      }
      nlohmann::json corr = nlohmann::json::array();
      std::string table = fmt::format(
          "\n### {} (group {}): FP PPL {:.4f}, all {}-bit PPL {:.4f}, KL {:.4f}\n\n"
          "| metric | Spearman rho vs V_l (p) | 95% bootstrap CI | Pearson r (p) | Kendall tau (p) | "
          "Spearman vs V_l^KL (p) |\n|---|---|---|---|---|---|\n",
          label, group > 0 ? std::to_string(group) : "per channel", oracle.fp_ppl, bits,
          oracle.base_ppl, oracle.base_kl);
      for (const auto& c : cols) {
        const auto sp = fragile::stats::spearman(c.values, v_ppl);
        const auto pe = fragile::stats::pearson(c.values, v_ppl);
        const auto ke = fragile::stats::kendall(c.values, v_ppl);
        const auto sk = fragile::stats::spearman(c.values, v_kl);
        const auto ci = fragile::stats::bootstrap_ci(
            c.values, v_ppl,
            [](std::span<const double> a, std::span<const double> b) { return fragile::stats::spearman(a, b); },
            2000, 0.95, seed);
        corr.push_back({{"metric", c.name}, {"description", c.description},
                        {"spearman", sp.statistic}, {"spearman_p", sp.p_value},
                        {"spearman_ci", {ci.lower, ci.upper}},
                        {"pearson", pe.statistic}, {"pearson_p", pe.p_value},
                        {"kendall", ke.statistic}, {"kendall_p", ke.p_value},
                        {"spearman_kl", sk.statistic}, {"spearman_kl_p", sk.p_value},
                        {"values", c.values}});
        table += fmt::format("| {} | {:+.3f} ({}) | [{:+.2f}, {:+.2f}] | {:+.3f} ({}) | {:+.3f} ({}) | {:+.3f} ({}) |\n",
                             c.name, sp.statistic, p_fmt(sp.p_value), ci.lower, ci.upper,
                             pe.statistic, p_fmt(pe.p_value), ke.statistic, p_fmt(ke.p_value),
                             sk.statistic, p_fmt(sk.p_value));
      }
      // Per-layer listing, most fragile first.
      std::vector<std::size_t> order(oracle.rows.size());
      for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
      std::sort(order.begin(), order.end(), [&](auto a, auto b) { return v_ppl[a] > v_ppl[b]; });
      table += fmt::format("\nLayers by V_l({}), top 10 of {}:\n\n| layer | V_l | V_l^KL | D_l | Fisher trace (MC) | weight MSE |\n|---|---|---|---|---|---|\n",
                           bits, order.size());
      for (std::size_t i = 0; i < std::min<std::size_t>(10, order.size()); ++i) {
        const auto k = order[i];
        table += fmt::format("| {} | {:+.4f} | {:+.5f} | {:.3e} | {:.3e} | {:.3e} |\n",
                             oracle.rows[k].name, v_ppl[k], v_kl[k], cols[0].values[k],
                             cols[4].values[k], cols[6].values[k]);
      }
      const std::size_t negatives = static_cast<std::size_t>(
          std::count_if(v_ppl.begin(), v_ppl.end(), [](double v) { return v < 0; }));
      table += fmt::format("\n{} of {} layers have V_l < 0 (restoring them alone raises PPL).\n",
                           negatives, v_ppl.size());
      md += table;
      fmt::print("{}", table);
      fmt::print(stderr, "quantize {:.2f} s, metric pass (MC) {:.2f} s, (data) {:.2f} s, oracle {:.1f} s "
                 "({} evaluations, {} resumed)\n", quant_s, mc_s, emp_s, oracle_s,
                 oracle.evaluations, oracle.resumed);
      out["studies"].push_back({{"label", label}, {"group", group},
                                {"seconds", {{"quantize", quant_s}, {"metric_pass_mc", mc_s},
                                             {"metric_pass_data", emp_s}, {"oracle", oracle_s}}},
                                {"oracle", oracle.to_json()},
                                {"metric_pass_mc", pass_mc.to_json()},
                                {"metric_pass_data", pass_emp.to_json()},
                                {"correlations", corr}});
      // Written after every setting, so an interrupted run keeps what it finished.
      std::ofstream(out_dir / "fragility.json") << out.dump(1) << "\n";
      std::ofstream(out_dir / "fragility.md") << md;
    }
    fmt::print(stderr, "wrote {} and {}\n", (out_dir / "fragility.json").string(),
               (out_dir / "fragility.md").string());
  } catch (const fragile::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
