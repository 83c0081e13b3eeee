// Fragility oracles (RestoreOne V_l, QuantizeOne U_l, and their KL versions) against brute force:
// the overrides built by hand for each layer and evaluated with eval::perplexity and
// eval::divergence. Also the evaluation count (layers + 1), resume from a result store (complete
// and interrupted), progress lines, input errors, and stories260K when the data is present.
#include "support/backends.hpp"
#include "support/test_data.hpp"
#include "support/tiny_transformer.hpp"

#include <fragile/backend/cpu.hpp>
#include <fragile/data/windows.hpp>
#include <fragile/eval/divergence.hpp>
#include <fragile/eval/perplexity.hpp>
#include <fragile/io/llama2c.hpp>
#include <fragile/io/text.hpp>
#include <fragile/io/tokenizer/llama2c_tokenizer.hpp>
#include <fragile/quant/rtn.hpp>
#include <fragile/sensitivity/oracle.hpp>
#include <fragile/study/result_store.hpp>

#include <cmath>
#if defined(_OPENMP)
#include <omp.h>
#endif
#include <limits>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using namespace fragile;
using sensitivity::OracleKind;

/// Q_b(W_l) of every linear layer: RTN, `bits`, group `group`.
template <class B>
std::vector<MatrixF> rtn_all(const model::Transformer<B>& m, int bits, int group) {
  std::vector<MatrixF> q;
  for (const auto& li : m.linears()) {
    const Eigen::Map<const MatrixF> w(m.weight(li.index).data(),
                                      static_cast<Eigen::Index>(li.out_features),
                                      static_cast<Eigen::Index>(li.in_features));
    q.push_back(quant::rtn_quantize(w, {.bits = bits, .group_size = group}).dequantize());
  }
  return q;
}

void set_layer(model::WeightOverrides& ov, const model::LinearInfo& li, const MatrixF& q) {
  ov.set(li.index, std::span<const float>(q.data(), static_cast<std::size_t>(q.size())),
         li.out_features, li.in_features);
}

std::vector<data::Window> tiny_windows(std::size_t vocab) {
  Rng rng(5);
  std::vector<data::TokenId> s(96);
  for (auto& t : s) t = static_cast<data::TokenId>(rng.below(vocab));
  return data::gptq_eval_windows(s, 16);  // 6 windows of 16
}

struct Brute {
  double ppl, kl, top1;
};

template <class B>
Brute brute(const model::Transformer<B>& m, std::span<const data::Window> w,
            const model::WeightOverrides& ov) {
  const auto p = eval::perplexity(m, w, {.batch_size = 2, .overrides = &ov});
  const auto d = eval::divergence(m, w, ov, {.batch_size = 2});
  return {p.perplexity, d.mean_kl, d.top1_agreement};
}

// The oracle and the brute force run the same streamed evaluation with the same batches, and the
// runtime repeats itself bit for bit: they agree exactly.
constexpr double kPplRel = 0.0;
constexpr double kKlRel = 0.0;

bool rel_close(double a, double b, double rel) {
  const bool ok = std::abs(a - b) <= rel * std::max(std::abs(a), std::abs(b));
  if (!ok) UNSCOPED_INFO(fmt::format("{:.17g} vs {:.17g}: relative {:.3g}", a, b, std::abs(a - b) / std::max(std::abs(a), std::abs(b))));
  return ok;
}

template <class B>
sensitivity::OracleOptions<B> quiet(std::string label = "rtn2g8") {
  sensitivity::OracleOptions<B> o;
  o.bits_label = std::move(label);
  o.batch_size = 2;
  o.progress = nullptr;
  return o;
}

/// Same rows and values: to `rel` on PPL and 100 x `rel` on KL (0: bit for bit).
void require_same(const sensitivity::OracleResult& a, const sensitivity::OracleResult& b,
                  double rel) {
  const double kl_rel = 100 * rel;
  REQUIRE(a.rows.size() == b.rows.size());
  CHECK(rel_close(a.fp_ppl, b.fp_ppl, rel));
  CHECK(rel_close(a.base_ppl, b.base_ppl, rel));
  CHECK(rel_close(a.base_kl, b.base_kl, kl_rel));
  for (std::size_t i = 0; i < a.rows.size(); ++i) {
    INFO(a.rows[i].name);
    CHECK(a.rows[i].linear == b.rows[i].linear);
    CHECK(rel_close(a.rows[i].ppl, b.rows[i].ppl, rel));
    CHECK(rel_close(a.rows[i].kl, b.rows[i].kl, kl_rel));
    CHECK(a.rows[i].top1 == b.rows[i].top1);
  }
}

}  // namespace

TEMPLATE_TEST_CASE("oracle: RestoreOne equals brute-force overrides", "[sensitivity][oracle]", FRAGILE_TEST_BACKENDS) {
  const auto m = test::tiny_model<TestType>({});
  const auto windows = tiny_windows(m.config().vocab_size);
  const auto q = rtn_all(m, 2, 8);
  const std::size_t L = m.linears().size();
  REQUIRE(L == 14);

  const auto r = sensitivity::restore_one(m, windows, std::span<const MatrixF>(q), quiet<TestType>());
  CHECK(r.evaluations == L + 1);
  CHECK(r.fp_evaluations == 1);
  CHECK(r.resumed == 0);
  CHECK(r.tokens == 6 * 15);
  REQUIRE(r.rows.size() == L);

  CHECK(rel_close(r.fp_ppl, eval::perplexity(m, windows, {.batch_size = 2}).perplexity, kPplRel));
  auto all = m.make_overrides();
  for (const auto& li : m.linears()) set_layer(all, li, q[li.index]);
  const Brute base = brute(m, windows, all);
  CHECK(rel_close(r.base_ppl, base.ppl, kPplRel));
  CHECK(rel_close(r.base_kl, base.kl, kKlRel));
  CHECK(r.base_top1 == base.top1);
  CHECK(r.base_ppl > r.fp_ppl);  // 2-bit RTN everywhere hurts
  CHECK(r.base_kl > 0.0);

  std::size_t fragile_layers = 0;
  for (const auto& li : m.linears()) {
    auto ov = m.make_overrides();
    for (const auto& other : m.linears())
      if (other.index != li.index) set_layer(ov, other, q[other.index]);
    const Brute b = brute(m, windows, ov);
    const auto& row = r.rows[li.index];
    INFO(li.name);
    CHECK(row.linear == li.index);
    CHECK(row.name == li.name);
    CHECK(row.block == li.block);
    CHECK(row.kind == li.kind);
    CHECK(rel_close(row.ppl, b.ppl, kPplRel));
    CHECK(std::abs(row.delta_ppl - (base.ppl - b.ppl)) <= 2 * kPplRel * base.ppl);
    CHECK(rel_close(row.kl, b.kl, kKlRel));
    CHECK(std::abs(row.delta_kl - (base.kl - b.kl)) <= 2 * kKlRel * base.kl);
    CHECK(row.top1 == b.top1);
    CHECK_FALSE(row.resumed);
    fragile_layers += row.delta_ppl > 0 ? 1 : 0;
  }
  CHECK(fragile_layers > 0);  // restoring some layer helps

  const auto j = r.to_json();
  CHECK(j["oracle"] == "restore_one");
  CHECK(j["evaluations"] == L + 1);
  CHECK(j["layers"].size() == L);
  CHECK(j["layers"][3]["name"] == "model.layers.0.self_attn.o_proj");
  CHECK(j["layers"][3]["delta_ppl"].template get<double>() == r.rows[3].delta_ppl);
}

TEMPLATE_TEST_CASE("oracle: QuantizeOne equals brute-force overrides", "[sensitivity][oracle]", FRAGILE_TEST_BACKENDS) {
  const auto m = test::tiny_model<TestType>({});
  const auto windows = tiny_windows(m.config().vocab_size);
  const auto q = rtn_all(m, 2, 8);
  const std::size_t L = m.linears().size();
  // The callable form: only the selected layers are asked for.
  std::vector<std::size_t> asked;
  const sensitivity::QuantizedWeights get = [&](std::size_t l) -> const MatrixF& {
    asked.push_back(l);
    return q[l];
  };

  const auto r = sensitivity::quantize_one(m, windows, get, quiet<TestType>());
  CHECK(r.evaluations == L);  // the FP baseline is the reference forward (fp_evaluations)
  CHECK(r.fp_evaluations == 1);
  CHECK(r.base_ppl == r.fp_ppl);
  CHECK(r.base_kl == 0.0);
  CHECK(r.base_top1 == 1.0);
  const double fp = eval::perplexity(m, windows, {.batch_size = 2}).perplexity;
  for (const auto& li : m.linears()) {
    auto ov = m.make_overrides();
    set_layer(ov, li, q[li.index]);
    const Brute b = brute(m, windows, ov);
    const auto& row = r.rows[li.index];
    INFO(li.name);
    CHECK(rel_close(row.ppl, b.ppl, kPplRel));
    CHECK(std::abs(row.delta_ppl - (b.ppl - fp)) <= 2 * kPplRel * fp);
    CHECK(rel_close(row.kl, b.kl, kKlRel));
    CHECK(row.delta_kl == row.kl);
    CHECK(row.top1 == b.top1);
  }

  SECTION("a subset, in the order given") {
    asked.clear();
    auto o = quiet<TestType>();
    o.layers = {9, 2};
    const auto s = sensitivity::quantize_one(m, windows, get, o);
    CHECK(s.evaluations == 2);
    CHECK(asked == std::vector<std::size_t>{9, 2});
    REQUIRE(s.rows.size() == 2);
    CHECK(s.rows[0].linear == 9);
    CHECK(s.rows[1].linear == 2);
    CHECK(rel_close(s.rows[0].ppl, r.rows[9].ppl, kPplRel));
    CHECK(rel_close(s.rows[1].ppl, r.rows[2].ppl, kPplRel));
    // RestoreOne on a subset still quantizes every layer for its base.
    const auto rs = sensitivity::restore_one(m, windows, std::span<const MatrixF>(q), o);
    CHECK(rs.evaluations == 3);
    const auto full = sensitivity::restore_one(m, windows, std::span<const MatrixF>(q), quiet<TestType>());
    CHECK(rel_close(rs.base_ppl, full.base_ppl, kPplRel));
    CHECK(std::abs(rs.rows[0].delta_ppl - full.rows[9].delta_ppl) <= 2 * kPplRel * full.base_ppl);
  }
  SECTION("PPL only: no KL, same perplexities") {
    auto o = quiet<TestType>();
    o.divergence = false;
    const auto p = sensitivity::quantize_one(m, windows, get, o);
    CHECK(p.evaluations == L);
    for (std::size_t l = 0; l < L; ++l) {
      CHECK(std::isnan(p.rows[l].kl));
      CHECK(rel_close(p.rows[l].ppl, r.rows[l].ppl, kPplRel));
    }
    CHECK(p.to_json()["layers"][0]["kl"].is_null());
  }
  SECTION("a shared reference: no FP forward") {
    const auto ref = eval::make_reference(m, windows, {.batch_size = 2});
    auto o = quiet<TestType>();
    o.reference = &ref;
    const auto s = sensitivity::quantize_one(m, windows, get, o);
    CHECK(s.fp_evaluations == 0);
    CHECK(s.evaluations == L);
    require_same(s, r, kPplRel);
  }
}

TEMPLATE_TEST_CASE("oracle: deterministic", "[sensitivity][oracle]", FRAGILE_TEST_BACKENDS) {
  const auto m = test::tiny_model<TestType>({});
  const auto windows = tiny_windows(m.config().vocab_size);
  const auto q = rtn_all(m, 3, 8);
  const auto a = sensitivity::restore_one(m, windows, std::span<const MatrixF>(q), quiet<TestType>("rtn3g8"));
  const auto b = sensitivity::restore_one(m, windows, std::span<const MatrixF>(q), quiet<TestType>("rtn3g8"));
  require_same(a, b, 0.0);  // bit for bit, run to run
  // Another thread count changes the order of no sum: the results agree to float rounding.
  const int threads = backend::cpu_threads();
#if defined(_OPENMP)
  omp_set_num_threads(threads == 1 ? 2 : 1);
#endif
  const auto c = sensitivity::restore_one(m, windows, std::span<const MatrixF>(q), quiet<TestType>("rtn3g8"));
#if defined(_OPENMP)
  omp_set_num_threads(threads);
#endif
  require_same(a, c, 1e-6);
}

TEMPLATE_TEST_CASE("oracle: resume from a result store", "[sensitivity][oracle][study]", FRAGILE_TEST_BACKENDS) {
  const auto m = test::tiny_model<TestType>({});
  const auto windows = tiny_windows(m.config().vocab_size);
  const auto q = rtn_all(m, 2, 8);
  const std::size_t L = m.linears().size();
  const auto dir = test::scratch_dir("oracle_resume_" + std::string(TestType::name));
  const auto reference = sensitivity::restore_one(m, windows, std::span<const MatrixF>(q), quiet<TestType>());

  SECTION("a complete store: nothing recomputed, identical results") {
    const auto path = dir / "complete.jsonl";
    std::filesystem::remove(path);
    sensitivity::OracleResult first;
    {
      study::ResultStore store(path, "tiny/rtn2g8");
      auto o = quiet<TestType>();
      o.store = &store;
      first = sensitivity::restore_one(m, windows, std::span<const MatrixF>(q), o);
      CHECK(first.evaluations == L + 1);
      CHECK(store.contains("oracle/restore_one/gptq/rtn2g8/base"));
      CHECK(store.contains("oracle/restore_one/gptq/rtn2g8/model.layers.1.mlp.down_proj"));
      CHECK(store.contains("oracle/fp/gptq"));
    }
    study::ResultStore again(path, "tiny/rtn2g8");
    auto o = quiet<TestType>();
    o.store = &again;
    const auto second = sensitivity::restore_one(m, windows, std::span<const MatrixF>(q), o);
    CHECK(second.evaluations == 0);
    CHECK(second.fp_evaluations == 0);
    CHECK(second.resumed == L + 1);
    require_same(second, first, 0.0);  // read back bit for bit
    for (const auto& row : second.rows) CHECK(row.resumed);
    // Another bit label or oracle kind is not confused with the stored one.
    o.bits_label = "rtn3g8";
    const auto other = sensitivity::restore_one(m, windows, std::span<const MatrixF>(q), o);
    CHECK(other.evaluations == L + 1);
    CHECK(other.fp_evaluations == 1);
  }
  SECTION("an interrupted sweep resumes with the layers left") {
    const auto path = dir / "interrupted.jsonl";
    std::filesystem::remove(path);
    constexpr std::size_t k = 5;  // layers finished before the interruption
    {
      study::ResultStore store(path, "tiny/rtn2g8");
      auto o = quiet<TestType>();
      o.store = &store;
      std::size_t ticks = 0;
      o.progress_interval = std::chrono::milliseconds(0);
      o.progress = [&](const std::string&) {
        if (++ticks == k + 1) throw std::runtime_error("interrupted");  // base + k layers
      };
      CHECK_THROWS_WITH(sensitivity::restore_one(m, windows, std::span<const MatrixF>(q), o),
                        "interrupted");
    }
    study::ResultStore store(path, "tiny/rtn2g8");
    CHECK(store.size() == 1 + 1 + k);  // fp, base, k layers
    auto o = quiet<TestType>();
    o.store = &store;
    const auto resumed = sensitivity::restore_one(m, windows, std::span<const MatrixF>(q), o);
    CHECK(resumed.evaluations == L - k);
    CHECK(resumed.resumed == 1 + k);
    for (std::size_t l = 0; l < L; ++l) CHECK(resumed.rows[l].resumed == (l < k));
    require_same(resumed, reference, kPplRel);
    CHECK(store.size() == 2 + L);
  }
}

TEMPLATE_TEST_CASE("oracle: progress lines with ETA and layer names", "[sensitivity][oracle]", FRAGILE_TEST_BACKENDS) {
  const auto m = test::tiny_model<TestType>({});
  const auto windows = tiny_windows(m.config().vocab_size);
  const auto q = rtn_all(m, 2, 8);
  std::vector<std::string> lines;
  auto o = quiet<TestType>();
  o.progress = [&](const std::string& s) { lines.push_back(s); };
  o.progress_interval = std::chrono::milliseconds(0);
  sensitivity::restore_one(m, windows, std::span<const MatrixF>(q), o);
  REQUIRE(lines.size() == 15);
  for (const auto& s : lines) {
    CHECK(s.find("ETA") != std::string::npos);
    CHECK(s.find("restore_one rtn2g8") != std::string::npos);
  }
  CHECK(lines[0].find("1/15") != std::string::npos);
  CHECK(lines[1].find("[model.layers.0.self_attn.q_proj]") != std::string::npos);
  CHECK(lines[14].find("15/15") != std::string::npos);
  CHECK(lines[14].find("[model.layers.1.mlp.down_proj]") != std::string::npos);
}

TEMPLATE_TEST_CASE("oracle: bad input is refused with a clear message", "[sensitivity][oracle]", FRAGILE_TEST_BACKENDS) {
  const auto m = test::tiny_model<TestType>({});
  const auto windows = tiny_windows(m.config().vocab_size);
  auto q = rtn_all(m, 2, 8);
  const std::span<const MatrixF> qs(q);
  CHECK_THROWS_WITH(sensitivity::restore_one(m, std::span<const data::Window>{}, qs, quiet<TestType>()),
                    Catch::Contains("no windows"));
  {
    auto o = quiet<TestType>();
    o.layers = {3, 14};
    CHECK_THROWS_WITH(sensitivity::restore_one(m, windows, qs, o),
                      Catch::Contains("layer index 14 out of range") && Catch::Contains("14 linear"));
    o.layers = {3, 3};
    CHECK_THROWS_WITH(sensitivity::quantize_one(m, windows, qs, o), Catch::Contains("selected twice"));
  }
  CHECK_THROWS_WITH(sensitivity::restore_one(m, windows, qs.first(13), quiet<TestType>()),
                    Catch::Contains("13 quantized weights") && Catch::Contains("14 linear layers"));
  {
    auto bad = q;
    bad[5] = MatrixF::Zero(16, 24);  // up_proj is [24, 16]
    CHECK_THROWS_AS(sensitivity::restore_one(m, windows, std::span<const MatrixF>(bad), quiet<TestType>()),
                    ShapeError);
    CHECK_THROWS_WITH(sensitivity::restore_one(m, windows, std::span<const MatrixF>(bad), quiet<TestType>()),
                      Catch::Contains("model.layers.0.mlp.up_proj") &&
                          Catch::Contains("is [16, 24]") && Catch::Contains("needs [24, 16]"));
    bad = q;
    bad[2](1, 1) = std::nanf("");
    CHECK_THROWS_AS(sensitivity::quantize_one(m, windows, std::span<const MatrixF>(bad), quiet<TestType>()),
                    NumericError);
  }
  {
    const auto path = test::scratch_dir("oracle_errors_" + std::string(TestType::name)) / "store.jsonl";
    std::filesystem::remove(path);
    study::ResultStore store(path, "x");
    auto o = quiet<TestType>("");
    o.store = &store;
    CHECK_THROWS_WITH(sensitivity::restore_one(m, windows, qs, o), Catch::Contains("bits_label"));
  }
  {
    auto w = windows;
    w[1].target_end = 40;
    CHECK_THROWS_WITH(sensitivity::restore_one(m, w, qs, quiet<TestType>()), Catch::Contains("window 1"));
  }
}

TEST_CASE("oracle: stories260K RestoreOne at 3 bits", "[sensitivity][oracle][data]") {
  FRAGILE_REQUIRE_DATA_FILE(model_path, "models/stories260K/stories260K.bin");
  FRAGILE_REQUIRE_DATA_FILE(tok_path, "models/stories260K/tok512.bin");
  FRAGILE_REQUIRE_DATA_FILE(text_path, "text/tinystories/valid_0001-0500.txt");
  auto ckpt = io::read_llama2c(model_path);
  const model::Transformer<cpu> m(ckpt.config, ckpt.weights);
  const io::Llama2cTokenizer tok(tok_path);
  std::vector<data::TokenId> ids;
  for (const auto& story : io::read_tinystories(text_path)) {
    const auto t = tok.encode(story, true);
    ids.insert(ids.end(), t.begin(), t.end());
    if (ids.size() >= 256) break;
  }
  const auto windows = data::gptq_eval_windows(ids, 128, 256);  // 2 windows of 128
  REQUIRE(windows.size() == 2);
  const auto q = rtn_all(m, 3, 32);
  const std::size_t L = m.linears().size();
  REQUIRE(L == 35);
  auto o = quiet<cpu>("rtn3g32");
  const auto r = sensitivity::restore_one(m, windows, std::span<const MatrixF>(q), o);
  CHECK(r.evaluations == L + 1);
  CHECK(r.base_ppl > r.fp_ppl);  // quantizing everything costs perplexity
  CHECK(r.base_kl > 0.0);
  std::size_t helps = 0;
  for (const auto& row : r.rows) {
    INFO(row.name);
    CHECK(std::isfinite(row.ppl));
    CHECK(std::isfinite(row.delta_ppl));
    CHECK(std::isfinite(row.delta_kl));
    helps += row.delta_ppl > 0 ? 1 : 0;
  }
  CHECK(helps > L / 2);  // restoring a layer to FP mostly helps at 3 bits
  // Spot check one layer by brute force.
  auto ov = m.make_overrides();
  for (const auto& li : m.linears())
    if (li.index != 34) set_layer(ov, li, q[li.index]);
  const double b = eval::perplexity(m, windows, {.batch_size = 2, .overrides = &ov}).perplexity;
  CHECK(rel_close(r.rows[34].ppl, b, 1e-6));  // f32 over 64-wide rows and 512 logits
}

TEST_CASE("oracle: a stored evaluation outside its domain is an error naming the key") {
  using fragile::sensitivity::OracleEvaluation;
  const auto ok = OracleEvaluation::from_stored({{"ppl", 17.5}, {"kl", 0.25}, {"top1", 0.75}}, "k");
  CHECK(ok.ppl == 17.5);
  CHECK(std::isnan(OracleEvaluation::from_stored({{"ppl", nullptr}}, "k").ppl));  // recomputed
  for (const nlohmann::json& bad : {nlohmann::json{{"ppl", -5.0}}, nlohmann::json{{"ppl", 0.5}},
                                    nlohmann::json{{"ppl", std::numeric_limits<double>::infinity()}},
                                    nlohmann::json{{"ppl", 2.0}, {"kl", -0.5}},
                                    nlohmann::json{{"ppl", 2.0}, {"top1", 1.5}}})
    CHECK_THROWS_WITH(OracleEvaluation::from_stored(bad, "oracle/x/base"),
                      Catch::Contains("'oracle/x/base'"));
}
