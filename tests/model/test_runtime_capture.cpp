// Capture semantics (needs drive the pass, streaming order, layer selection, x^T x, per-sequence
// squared gradients, model-sampled labels), weight overrides, loading from safetensors (f32 and
// bf16), and bad input.
#include "support/backends.hpp"
#include "support/test_data.hpp"
#include "support/tiny_transformer.hpp"

#include <fragile/backend/cpu.hpp>
#include <fragile/io/safetensors.hpp>

#include <cmath>
#if defined(_OPENMP)
#include <omp.h>
#endif
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace {

using namespace fragile;

struct Log {
  model::CaptureNeeds want;
  std::vector<std::size_t> order;
  std::map<std::size_t, std::vector<float>> x, g, xtx, wg, wg2;
  std::size_t calls = 0;
  std::size_t scored = 0;
  model::CaptureNeeds needs() const { return want; }
  void observe(const model::LayerBatch& c) {
    ++calls;
    order.push_back(c.layer->index);
    scored = c.scored_positions;
    const auto& li = *c.layer;
    CHECK(static_cast<bool>(c.x) == want.x);
    CHECK(static_cast<bool>(c.g) == want.g);
    auto keep = [](std::vector<float>& dst, const backend::TensorView& v, std::size_t n) {
      const auto h = v.host();
      REQUIRE(h.size() == n);
      dst.assign(h.begin(), h.end());
    };
    if (c.x) keep(x[li.index], c.x, c.rows() * li.in_features);
    if (c.g) keep(g[li.index], c.g, c.rows() * li.out_features);
    if (c.xtx) keep(xtx[li.index], c.xtx, li.in_features * li.in_features);
    if (c.weight_grad) keep(wg[li.index], c.weight_grad, li.parameters());
    if (c.weight_grad_sq) keep(wg2[li.index], c.weight_grad_sq, li.parameters());
  }
};

template <class T>
double max_abs_diff(const std::vector<T>& a, const std::vector<T>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(static_cast<double>(a[i]) - b[i]));
  return m;
}

template <class E>
void require_message(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    FAIL("no exception; expected one containing '" << needle << "'");
  } catch (const E& e) {
    INFO(e.what());
    CHECK(std::string(e.what()).find(needle) != std::string::npos);
  }
}

}  // namespace

TEMPLATE_TEST_CASE("runtime capture: what the observers declare drives the pass", "[model][runtime][capture]", FRAGILE_TEST_BACKENDS) {
  const auto m = test::tiny_model<TestType>({.attention_bias = true});
  const auto windows = test::random_windows(3, 10, m.config().vocab_size);
  model::CaptureOptions opt;
  opt.batch_size = 2;

  Log fwd;
  fwd.want = {.x = true, .xtx = true};
  const auto s1 = m.capture(windows, opt, fwd);
  CHECK(std::isnan(s1.mean_window_loss));  // forward only: no loss computed
  CHECK(s1.batches == 2);
  CHECK(fwd.calls == 2 * m.linears().size());
  CHECK(fwd.order.front() == 0);  // forward order within a batch
  // x^T x equals the product of the delivered x (last batch: one window of 10 rows).
  for (const auto& li : m.linears()) {
    const auto& x = fwd.x[li.index];
    const std::size_t n = li.in_features, rows = x.size() / n;
    REQUIRE(rows == 10);
    std::vector<float> ref(n * n, 0.0f);
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < n; ++j) ref[i * n + j] += x[r * n + i] * x[r * n + j];
    CHECK(max_abs_diff(fwd.xtx[li.index], ref) < 1e-4);
  }

  Log both;
  both.want = {.x = true, .g = true};
  const auto s2 = m.capture(windows, opt, both);
  CHECK(std::isfinite(s2.mean_window_loss));
  CHECK(s2.scored_tokens == 3 * 9);
  CHECK(both.scored == 9);
  CHECK(both.order.front() == m.linears().size() - 1);  // backward: down_proj of the last block
  for (const auto& li : m.linears()) {
    CHECK(max_abs_diff(both.x[li.index], fwd.x[li.index]) <= 1e-6);  // same x (to rounding)
    // Data labels: the last position of each window has no loss term, so its g row is zero.
    const auto& g = both.g[li.index];
    const std::size_t out = li.out_features;
    double last = 0.0, rest = 0.0;
    for (std::size_t j = 0; j < out; ++j) last += std::abs(g[9 * out + j]);
    for (std::size_t j = 0; j < 9 * out; ++j) rest += std::abs(g[j]);
    CHECK(last == 0.0);
    CHECK(rest > 0.0);
  }

  // The loss in the summary is the mean over windows of the window's mean token NLL.
  const auto nll = m.token_nll(windows);
  double ref = 0.0;
  for (double v : nll) ref += v;
  CHECK(s2.mean_window_loss == Approx(ref / (3.0 * 9.0)).epsilon(1e-5));
}

TEMPLATE_TEST_CASE("runtime capture: layer selection, two observers, squared per-sequence gradients",
          "[model][runtime][capture]", FRAGILE_TEST_BACKENDS) {
  const auto m = test::tiny_model<TestType>({});
  const auto windows = test::random_windows(2, 8, m.config().vocab_size);
  model::CaptureOptions opt;
  opt.batch_size = 2;
  opt.layers = {1, 12};
  Log a, b;
  a.want = {.weight_grad_sq = true};
  b.want = {.weight_grad = true};
  m.capture(windows, opt, a, b);
  CHECK(a.order == std::vector<std::size_t>{12, 1});
  CHECK(b.order == std::vector<std::size_t>{12, 1});
  // Per-sequence: sum over windows of (dL_n/dW)^2 from two single-window passes.
  Log w0, w1;
  w0.want = w1.want = {.weight_grad = true};
  model::CaptureOptions one = opt;
  one.batch_size = 1;
  m.capture(std::span(windows).subspan(0, 1), one, w0);
  m.capture(std::span(windows).subspan(1, 1), one, w1);
  for (std::size_t l : {1u, 12u}) {
    std::vector<float> sq(w0.wg[l].size()), sum(w0.wg[l].size());
    for (std::size_t k = 0; k < sq.size(); ++k) {
      sq[k] = w0.wg[l][k] * w0.wg[l][k] + w1.wg[l][k] * w1.wg[l][k];
      sum[k] = w0.wg[l][k] + w1.wg[l][k];
    }
    CHECK(max_abs_diff(a.wg2[l], sq) < 1e-6);
    CHECK(max_abs_diff(b.wg[l], sum) < 1e-5);
  }
  model::CaptureOptions bad = opt;
  bad.layers = {99};
  CHECK_THROWS_AS(m.capture(windows, bad, a), ArgumentError);
}

TEMPLATE_TEST_CASE("runtime capture: labels sampled from the model", "[model][runtime][capture]", FRAGILE_TEST_BACKENDS) {
  const auto m = test::tiny_model<TestType>({});
  const auto windows = test::random_windows(2, 8, m.config().vocab_size);
  model::CaptureOptions opt;
  opt.labels = model::LabelSource::kModelSample;
  opt.seed = 5;
  opt.batch_size = 2;
  Log a, b, c, d;
  a.want = b.want = c.want = d.want = {.g = true};
  const auto sa = m.capture(windows, opt, a);
  m.capture(windows, opt, b);
  CHECK(sa.scored_tokens == 16);
  CHECK(a.scored == 8);
  // Same seed, same labels, same g, bit for bit.
  for (const auto& [l, g] : a.g) CHECK(g == b.g[l]);
  // Another seed draws other labels: g moves by O(1e-2) wherever a label changed.
  opt.seed = 6;
  m.capture(windows, opt, c);
  double diff = 0.0;
  for (const auto& [l, g] : a.g) diff = std::max(diff, max_abs_diff(g, c.g[l]));
  CHECK(diff > 1e-3);
  // Sampling is per (window, position): the batch size does not change the labels.
  opt.seed = 5;
  opt.batch_size = 1;
  m.capture(windows, opt, d);  // keeps the last window's g
  for (const auto& [l, g] : d.g) {
    const auto& full = a.g[l];
    std::vector<float> second(full.begin() + static_cast<std::ptrdiff_t>(g.size()), full.end());
    CHECK(max_abs_diff(g, second) < 1e-6);
  }
  // The last position is scored too: its g row is non-zero for the down projections.
  const auto& gd = a.g[6];
  double last = 0.0;
  for (std::size_t j = 0; j < 16; ++j) last += std::abs(gd[7 * 16 + j]);
  CHECK(last > 0.0);
}

TEMPLATE_TEST_CASE("runtime capture: GramAccumulator sums x x^T over batches", "[model][runtime][capture]", FRAGILE_TEST_BACKENDS) {
  const auto m = test::tiny_model<TestType>({});
  const auto windows = test::random_windows(3, 6, m.config().vocab_size);
  model::GramAccumulator h({0, 6});
  Log x;
  x.want = {.x = true};
  model::CaptureOptions opt;
  opt.batch_size = 1;
  std::map<std::size_t, std::vector<double>> ref;
  struct Sum {
    std::map<std::size_t, std::vector<double>>* ref;
    model::CaptureNeeds needs() const { return {.x = true}; }
    void observe(const model::LayerBatch& c) {
      const std::size_t n = c.layer->in_features;
      auto& r = (*ref)[c.layer->index];
      r.resize(n * n, 0.0);
      const float* x = c.x.host().data();
      for (std::size_t t = 0; t < c.rows(); ++t)
        for (std::size_t i = 0; i < n; ++i)
          for (std::size_t j = 0; j < n; ++j) r[i * n + j] += static_cast<double>(x[t * n + i]) * x[t * n + j];
    }
  } sum{&ref};
  m.capture(windows, opt, h, sum);
  for (std::size_t i = 0; i < 2; ++i) {
    const auto l = h.layers()[i];
    REQUIRE(h.gram(i).size() == ref[l].size());
    CHECK(h.tokens(i) == 18);
    for (std::size_t k = 0; k < ref[l].size(); ++k) CHECK(h.gram(i)[k] == Approx(ref[l][k]).margin(1e-4));
  }
}

TEMPLATE_TEST_CASE("runtime overrides: replace weights without copying the model", "[model][runtime]", FRAGILE_TEST_BACKENDS) {
  const auto spec = test::TinySpec{.attention_bias = true};
  const auto c = test::tiny_config(spec);
  auto w = test::tiny_weights(c, spec);
  const model::Transformer<TestType> m(c, w);
  const auto windows = test::random_windows(2, 9, c.vocab_size);
  const auto base = m.logits(windows);

  auto ov = m.make_overrides();
  const auto& li = m.linear("model.layers.1.mlp.up_proj");
  const auto fp = m.weight(li.index);
  ov.set(li.index, fp, li.out_features, li.in_features);  // the FP weights themselves
  CHECK(max_abs_diff(m.logits(windows, &ov), base) <= 1e-6);  // to rounding: see above

  std::vector<float> changed(fp.begin(), fp.end());
  for (auto& v : changed) v = std::round(v * 4.0f) / 4.0f;  // a crude "quantizer"
  ov.set("model.layers.1.mlp.up_proj", changed, li.out_features, li.in_features);
  const auto with = m.logits(windows, &ov);
  CHECK(max_abs_diff(with, base) > 1e-3);
  // Same as a model loaded with that weight.
  w["model.layers.1.mlp.up_proj.weight"] = changed;
  const model::Transformer<TestType> m2(c, w);
  CHECK(max_abs_diff(m2.logits(windows), with) <= 1e-6);
  ov.erase(li.index);
  CHECK(max_abs_diff(m.logits(windows, &ov), base) <= 1e-6);  // to rounding: see above

  require_message<ShapeError>([&] { ov.set(li.index, changed, li.in_features, li.out_features); },
                              "'model.layers.1.mlp.up_proj': weight is [16, 24], the layer needs [24, 16]");
  require_message<ShapeError>([&] { ov.set(li.index, std::vector<float>(5), li.out_features, li.in_features); },
                              "model.layers.1.mlp.up_proj");
  require_message<ArgumentError>([&] { ov.set("model.layers.9.mlp.up_proj", changed, 24, 16); },
                                 "model.layers.9.mlp.up_proj");
  const auto other = test::tiny_model<TestType>({});
  auto foreign = other.make_overrides();
  CHECK_THROWS_AS(m.logits(windows, &foreign), ArgumentError);
}

TEMPLATE_TEST_CASE("runtime loading: safetensors f32 and bf16, NaN detection", "[model][runtime]", FRAGILE_TEST_BACKENDS) {
  const auto c = test::tiny_config({.tie = true});
  const auto w = test::tiny_weights(c, {.tie = true});
  const auto shapes = test::tiny_shapes(c);
  const auto dir = test::scratch_dir("runtime_loading_" + std::string(TestType::name));
  auto write = [&](const std::filesystem::path& p, DType dt, const model::NamedTensors& t) {
    io::SafetensorsWriter wr;
    for (const auto& [name, v] : t) wr.add(name, dt, shapes.at(name), v);
    wr.write(p);
  };
  const auto windows = test::random_windows(2, 7, c.vocab_size);
  const model::Transformer<TestType> mem(c, w);

  write(dir / "f32.safetensors", DType::kF32, w);
  const model::Transformer<TestType> f32(c, io::open_safetensors(dir / "f32.safetensors"));
  CHECK(max_abs_diff(f32.logits(windows), mem.logits(windows)) <= 1e-6);

  // bf16 on disk: upcast once at load, equal to a model built from the bf16-rounded values.
  write(dir / "bf16.safetensors", DType::kBF16, w);
  auto rounded = w;
  for (auto& [name, v] : rounded)
    for (auto& x : v) x = bf16_to_f32(f32_to_bf16(x));
  const model::Transformer<TestType> bf(c, io::open_safetensors(dir / "bf16.safetensors"));
  CHECK(max_abs_diff(bf.logits(windows), model::Transformer<TestType>(c, rounded).logits(windows)) <= 1e-6);

  auto bad = w;
  bad["model.layers.1.self_attn.k_proj.weight"][3] = std::numeric_limits<float>::quiet_NaN();
  write(dir / "nan.safetensors", DType::kF32, bad);
  require_message<NumericError>([&] { model::Transformer<TestType>(c, io::open_safetensors(dir / "nan.safetensors")); },
                                "model.layers.1.self_attn.k_proj.weight");
  require_message<NumericError>([&] { model::Transformer<TestType>(c, bad); },
                                "model.layers.1.self_attn.k_proj.weight");

  auto missing = w;
  missing.erase("model.layers.0.mlp.gate_proj.weight");
  require_message<IoError>([&] { model::Transformer<TestType>(c, missing); }, "model.layers.0.mlp.gate_proj.weight");
  auto wrong = w;
  wrong["model.norm.weight"].resize(3);
  require_message<ShapeError>([&] { model::Transformer<TestType>(c, wrong); }, "model.norm.weight");
}

TEMPLATE_TEST_CASE("runtime bad input: clear errors", "[model][runtime]", FRAGILE_TEST_BACKENDS) {
  auto m = test::tiny_model<TestType>({});
  const auto V = static_cast<std::int32_t>(m.config().vocab_size);
  auto windows = test::random_windows(2, 6, m.config().vocab_size);
  windows[1][4] = V;
  require_message<ArgumentError>([&] { (void)m.token_nll(windows); },
                                 "token id 32 at window 1 position 4 is outside the vocabulary [0, 32)");
  windows[1][4] = -1;
  require_message<ArgumentError>([&] { (void)m.logits(windows); }, "token id -1");
  require_message<ArgumentError>([&] { (void)m.token_nll(std::vector<model::TokenIds>{}); }, "empty batch");
  auto ragged = test::random_windows(2, 6, m.config().vocab_size);
  ragged[1].pop_back();
  require_message<ArgumentError>([&] { (void)m.token_nll(ragged); }, "window 1 has 5 tokens");
  const auto single = test::random_windows(1, 1, m.config().vocab_size);
  require_message<ArgumentError>([&] { (void)m.token_nll(single); }, "need at least 2");
  const auto long_windows = test::random_windows(1, 40, m.config().vocab_size);
  require_message<ArgumentError>([&] { (void)m.token_nll(long_windows); }, "max_position_embeddings = 32");
  m.options().allow_long_windows = true;
  const auto nll = m.token_nll(long_windows);
  CHECK(nll.size() == 39);
  for (float v : nll) CHECK(std::isfinite(v));
  model::CaptureOptions opt;
  opt.batch_size = 0;
  Log log;
  log.want = {.g = true};
  CHECK_THROWS_AS(m.capture(long_windows, opt, log), ArgumentError);
}

TEMPLATE_TEST_CASE("runtime: the LM head chunk size does not change results", "[model][runtime]", FRAGILE_TEST_BACKENDS) {
  auto m = test::tiny_model<TestType>({});
  const auto windows = test::random_windows(3, 11, m.config().vocab_size);
  const auto a = m.token_nll(windows);
  m.options().head_chunk_rows = 5;  // chunks straddle windows
  const auto b = m.token_nll(windows);
  // Each row's NLL is computed alone, but the sgemm that produces a chunk's logits may block a
  // 5-row product differently from a 33-row one (OpenBLAS on Zen 5 does): agree to rounding.
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(a[i] == Approx(b[i]).epsilon(1e-6));
}

TEST_CASE("runtime: repeated runs are bit-identical; other thread counts agree to 1e-6",
          "[model][runtime][determinism]") {
  // Large enough that every kernel takes its parallel path (see backend/cpu/memory.hpp).
  auto c = test::tiny_config({});
  c.hidden_size = 128;
  c.intermediate_size = 256;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 4;
  c.head_dim = 16;
  c.vocab_size = 512;
  c.max_position_embeddings = 64;
  const model::Transformer<cpu> m(c, test::tiny_weights(c, {.weight_std = 0.05}));
  const auto windows = test::random_windows(4, 64, c.vocab_size);
  Log a, b, d;
  a.want = b.want = d.want = {.g = true};
  model::CaptureOptions opt{.labels = model::LabelSource::kModelSample, .seed = 3, .batch_size = 4};
  const auto la = m.logits(windows);
  const auto lb = m.logits(windows);
  CHECK(la == lb);
  m.capture(windows, opt, a);
  m.capture(windows, opt, b);
  CHECK(a.g == b.g);
#if defined(_OPENMP)
  const int threads = omp_get_max_threads();
  omp_set_num_threads(threads == 1 ? 2 : 1);
  const auto lc = m.logits(windows);
  m.capture(windows, opt, d);
  omp_set_num_threads(threads);
  double worst = 0.0, scale = 0.0;
  for (std::size_t i = 0; i < la.size(); ++i) {
    worst = std::max(worst, std::abs(double(la[i]) - lc[i]));
    scale = std::max(scale, std::abs(double(la[i])));
  }
  CHECK(worst <= 1e-6 * scale);
  for (const auto& [l, g] : a.g) {
    double gs = 0.0;
    for (float v : g) gs = std::max(gs, std::abs(double(v)));
    CHECK(max_abs_diff(g, d.g[l]) <= 1e-6 * gs);
  }
#endif
}
