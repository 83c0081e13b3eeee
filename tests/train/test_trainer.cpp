// The training loop: it lowers the loss, is deterministic for a seed, resumes a killed run to
// the same weights as an uninterrupted one, refuses to resume under other settings, and logs
// every step once.
#include "support/test_data.hpp"
#include "support/tiny_transformer.hpp"

#include <fragile/backend/cpu.hpp>
#include <fragile/train/trainer.hpp>

#include <nlohmann/json.hpp>

#include <fstream>
#include <string>
#include <vector>

namespace {

using namespace fragile;

/// A learnable stream: a repeated pseudo-random phrase of 12 ids, with a little noise.
std::vector<data::TokenId> phrase_stream(std::size_t n, std::size_t vocab) {
  Rng rng(3);
  std::vector<data::TokenId> phrase(12), out(n);
  for (auto& t : phrase) t = static_cast<data::TokenId>(rng.below(vocab));
  for (std::size_t i = 0; i < n; ++i)
    out[i] = rng.uniform() < 0.05 ? static_cast<data::TokenId>(rng.below(vocab)) : phrase[i % 12];
  return out;
}

train::TrainOptions small_options() {
  train::TrainOptions o;
  o.steps = 12;
  o.batch_size = 4;
  o.seq_len = 16;
  o.lr = 1e-2;
  o.min_lr = 1e-3;
  o.warmup = 2;
  o.eval_every = 6;
  o.checkpoint_every = 4;
  o.seed = 11;
  return o;
}

std::vector<std::vector<float>> weights_of(model::Transformer<cpu>& m) {
  std::vector<std::vector<float>> out;
  for (const auto& p : m.parameters()) out.emplace_back(p.value.begin(), p.value.end());
  return out;
}

std::vector<nlohmann::json> read_log(const std::filesystem::path& p) {
  std::vector<nlohmann::json> out;
  std::ifstream in(p);
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

struct Killed {};

}  // namespace

TEST_CASE("train: sample_batch depends on the seed and the step only", "[train]") {
  const auto tokens = phrase_stream(500, 32);
  const auto a = train::sample_batch(tokens, 16, 4, 1, 7);
  CHECK(a == train::sample_batch(tokens, 16, 4, 1, 7));
  CHECK(a != train::sample_batch(tokens, 16, 4, 1, 8));
  CHECK(a != train::sample_batch(tokens, 16, 4, 2, 7));
  for (const auto& w : a) CHECK(w.size() == 16);
  CHECK_THROWS_AS(train::sample_batch(std::span(tokens).first(10), 16, 4, 1, 0), ArgumentError);
}

TEST_CASE("train: a few steps lower the loss and the evaluation perplexity", "[train]") {
  auto m = test::tiny_model();
  const auto tokens = phrase_stream(4000, m.config().vocab_size);
  const auto eval_tokens = phrase_stream(800, m.config().vocab_size);
  auto eval = data::gptq_eval_windows(eval_tokens, 16);
  auto o = small_options();
  o.steps = 40;
  o.eval_every = 40;
  train::Trainer t(m, o, tokens, eval, test::scratch_dir("train_lowers"));
  t.set_progress_sink({});
  const double ppl0 = t.evaluate();
  std::vector<double> losses;
  t.on_step([&](const train::StepRecord& r) { losses.push_back(r.loss); });
  const auto sum = t.run(false);
  REQUIRE(losses.size() == 40);
  CHECK(losses.back() < 0.5 * losses.front());
  CHECK(sum.eval_ppl < 0.5 * ppl0);
}

TEST_CASE("train: the same seed gives the same weights, another seed others", "[train]") {
  const auto tokens = phrase_stream(3000, 32);
  auto run = [&](std::uint64_t seed, const std::string& name) {
    auto m = test::tiny_model();
    auto o = small_options();
    o.seed = seed;
    train::Trainer t(m, o, tokens, {}, test::scratch_dir(name));
    t.set_progress_sink({});
    t.run(false);
    return weights_of(m);
  };
  const auto a = run(11, "train_det_a");
  CHECK(a == run(11, "train_det_b"));
  CHECK(a != run(12, "train_det_c"));
}

TEST_CASE("train: a killed run resumes to the weights of an uninterrupted run", "[train]") {
  const auto tokens = phrase_stream(3000, 32);
  const auto eval = data::gptq_eval_windows(phrase_stream(400, 32), 16);
  const auto o = small_options();

  auto full_model = test::tiny_model();
  const auto full_dir = test::scratch_dir("train_full");
  train::Trainer full(full_model, o, tokens, eval, full_dir);
  full.set_progress_sink({});
  const auto full_sum = full.run(false);

  const auto dir = test::scratch_dir("train_killed");
  {
    auto m = test::tiny_model();
    train::Trainer t(m, o, tokens, eval, dir);
    t.set_progress_sink({});
    // Killed after step 6: the checkpoint holds steps 0..3, steps 4..6 are lost.
    t.on_step([](const train::StepRecord& r) {
      if (r.step == 6) throw Killed{};
    });
    CHECK_THROWS_AS(t.run(false), Killed);
  }
  auto m = test::tiny_model();
  train::Trainer t(m, o, tokens, eval, dir);
  t.set_progress_sink({});
  const auto sum = t.run(true);
  CHECK(sum.first_step == 4);
  CHECK(weights_of(m) == weights_of(full_model));
  CHECK(sum.eval_ppl == full_sum.eval_ppl);

  // The log holds each step once, with the uninterrupted run's losses.
  const auto log = read_log(t.log_path()), full_log = read_log(full.log_path());
  REQUIRE(log.size() == full_log.size());
  for (std::size_t i = 0; i < log.size(); ++i) {
    CHECK(log[i].at("step") == full_log[i].at("step"));
    CHECK(log[i].value("loss", -1.0) == full_log[i].value("loss", -1.0));
    CHECK(log[i].value("eval_ppl", -1.0) == full_log[i].value("eval_ppl", -1.0));
  }
  CHECK(std::filesystem::exists(dir / "loss.svg"));
}

TEST_CASE("train: resuming under other settings is refused, naming the setting", "[train]") {
  const auto tokens = phrase_stream(3000, 32);
  const auto dir = test::scratch_dir("train_changed");
  auto o = small_options();
  o.steps = 4;
  {
    auto m = test::tiny_model();
    train::Trainer t(m, o, tokens, {}, dir);
    t.set_progress_sink({});
    t.run(false);
  }
  auto m = test::tiny_model();
  o.lr = 2e-2;
  train::Trainer t(m, o, tokens, {}, dir);
  t.set_progress_sink({});
  CHECK_THROWS_WITH(t.run(true), Catch::Contains("lr: checkpoint 0.01 vs now 0.02"));
}

TEST_CASE("train: bad options are named", "[train]") {
  auto m = test::tiny_model();
  const auto tokens = phrase_stream(100, 32);
  auto o = small_options();
  o.steps = 0;
  CHECK_THROWS_WITH(train::Trainer(m, o, tokens, {}, test::scratch_dir("train_bad")),
                    Catch::Contains("--steps"));
  o = small_options();
  o.seq_len = 200;
  CHECK_THROWS_WITH(train::Trainer(m, o, tokens, {}, test::scratch_dir("train_bad")),
                    Catch::Contains("fewer than one window of 200"));
  o = small_options();
  o.min_lr = 1.0;
  CHECK_THROWS_WITH(train::Trainer(m, o, tokens, {}, test::scratch_dir("train_bad")),
                    Catch::Contains("floor"));
}

TEST_CASE("train: the loss plot is deterministic SVG", "[train]") {
  train::LossCurve c;
  for (int i = 0; i < 50; ++i) c.train.push_back({i, 5.0 - 0.05 * i});
  c.eval = {{24, 4.0}, {49, 3.0}};
  const auto svg = train::loss_plot_svg(c);
  CHECK(svg.starts_with("<svg"));
  CHECK(svg.find("<polyline") != std::string::npos);
  CHECK(svg.find("<circle") != std::string::npos);
  CHECK(svg == train::loss_plot_svg(c));
}
