// Sensitivity metrics: closed forms on a quadratic loss, a naive per-token recomputation on the
// runtime's own captures, invariance to batching and chunking, the GPTQ candidate path, and the
// second-order link between D_l (model-sampled labels) and the KL divergence it predicts.
#include "support/backends.hpp"
#include "support/test_data.hpp"
#include "support/tiny_transformer.hpp"

#include <fragile/quant/gptq.hpp>
#include <fragile/quant/rtn.hpp>
#include <fragile/sensitivity/pass.hpp>

#include <cmath>
#include <vector>

using namespace fragile;
using namespace fragile::sensitivity;

namespace {

std::vector<data::Window> as_data_windows(const std::vector<model::TokenIds>& w) {
  std::vector<data::Window> out;
  for (std::size_t i = 0; i < w.size(); ++i)
    out.push_back(data::Window{w[i], 0, i, 1, w[i].size()});
  return out;
}

MatrixF random_matrix(Eigen::Index r, Eigen::Index c, std::uint64_t seed) {
  Rng rng(seed);
  MatrixF m(r, c);
  for (Eigen::Index i = 0; i < r; ++i)
    for (Eigen::Index j = 0; j < c; ++j) m(i, j) = static_cast<float>(rng.normal());
  return m;
}

/// RTN candidates of one layer at the given bit widths.
CandidateSet rtn_set(const MatrixF& w, std::size_t layers, std::size_t layer,
                     std::vector<int> bits, int group = -1) {
  std::vector<std::string> labels;
  std::vector<double> values;
  std::vector<Candidate> per;
  for (int b : bits) {
    quant::QuantSpec s;
    s.bits = b;
    s.group_size = group;
    labels.push_back(std::to_string(b) + "bit");
    values.push_back(b);
    auto q = quant::rtn_quantize(w, s);
    per.push_back(Candidate{labels.back(), double(b), q.storage_bits(), std::move(q)});
  }
  CandidateSet set(layers, labels, values);
  set.set(layer, std::move(per));
  return set;
}

double rel(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-300); }

}  // namespace

TEST_CASE("metrics: closed forms when the loss is quadratic in the layer output",
          "[sensitivity][metrics]") {
  // One layer y = W x with L_t = 1/2 ||y_t||^2, so g_t = W x_t. Inputs are one-hot: x_t = e_t,
  // hence g_t = W[:, t], dy_t = dW[:, t], and every metric is a sum over columns of W and dW.
  const Eigen::Index in = 8, out = 6;
  const std::size_t T = in, S = T - 1, windows = 2;
  const MatrixF w = random_matrix(out, in, 3);
  model::LinearInfo li{"layer", 0, 0, model::LinearKind::kUp, std::size_t(in), std::size_t(out), false};
  const std::vector<model::LinearInfo> linears{li};
  const CandidateSet cands = rtn_set(w, 1, 0, {2, 3});

  MatrixF x = MatrixF::Zero(windows * T, in), g(windows * T, out);
  for (std::size_t r = 0; r < windows * T; ++r) {
    x(r, r % T) = 1.0f;
    g.row(r) = w.col(r % T).transpose();  // also on the unscored last row: must be ignored
  }
  const MatrixF fsq = random_matrix(out, in, 5).cwiseAbs();  // sum over windows of (dL_n/dW)^2

  auto run = [&](std::size_t chunk_floats, bool split_batches) {
    MetricAccumulator<cpu> acc(linears, {w.data()}, cands, kAllStats, chunk_floats);
    auto deliver = [&](std::size_t first, std::size_t count, const MatrixF& f) {
      model::LayerBatch c;
      c.layer = &linears[0];
      c.first_window = first;
      c.windows = count;
      c.seq_len = T;
      c.scored_positions = S;
      c.x = backend::TensorView::of<cpu>(x.data() + first * T * in, count * T * in);
      c.g = backend::TensorView::of<cpu>(g.data() + first * T * out, count * T * out);
      c.weight_grad_sq = backend::TensorView::of<cpu>(f.data(), f.size());
      acc.observe(c);
    };
    if (split_batches) {
      const MatrixF half = 0.5f * fsq;
      deliver(0, 1, half);
      deliver(1, 1, half);
    } else {
      deliver(0, 2, fsq);
    }
    return acc.result();
  };

  const auto r = run(std::size_t{1} << 22, false);
  REQUIRE(r.num_layers() == 1);
  CHECK(r.layer_stats[0].tokens == windows * S);
  CHECK(r.layer_stats[0].positions == windows * T);
  double f_trace = 0;
  for (std::size_t t = 0; t < S; ++t) f_trace += w.col(t).cast<double>().squaredNorm();
  f_trace /= S;
  CHECK(rel(r.scores<FisherTrace>(0)[0], f_trace) < 1e-12);

  for (std::size_t o = 0; o < 2; ++o) {
    const MatrixF dw = cands.at(0, o).dequantize() - w;
    double dl = 0, diag = 0, dy2 = 0;
    for (std::size_t t = 0; t < S; ++t) {
      const double s = w.col(t).cast<double>().dot(dw.col(t).cast<double>());
      dl += s * s;
      diag += (w.col(t).cast<double>().array() * dw.col(t).cast<double>().array()).square().sum();
      dy2 += dw.col(t).cast<double>().squaredNorm();
    }
    const double sse = dw.cast<double>().squaredNorm();
    INFO("option " << o);
    CHECK(rel(r.scores<Visibility>(o)[0], 0.5 * dl / S) < 1e-6);
    CHECK(rel(r.scores<VisibilityDiag>(o)[0], 0.5 * diag / S) < 1e-6);
    CHECK(rel(r.scores<Feo>(o)[0], (dl / S) / (f_trace * dy2 / S)) < 1e-6);
    CHECK(rel(r.scores<WeightMse>(o)[0], sse / double(in * out)) < 1e-12);
    // H_jj = E over all positions of x_j^2 = windows / (windows * T).
    CHECK(rel(r.scores<HessianDiagProxy>(o)[0], 0.5 * sse / double(T)) < 1e-6);
    const double fd = (dw.cast<double>().array().square() * fsq.cast<double>().array()).sum();
    CHECK(rel(r.scores<FisherDiag>(o)[0], 0.5 * fd / windows) < 1e-6);
  }
  // 3 bits moves W less than 2 bits.
  CHECK(r.scores<WeightMse>(1)[0] < r.scores<WeightMse>(0)[0]);

  SECTION("row chunking and batch splits give the same sums") {
    const auto c1 = run(out * 2 + 1, false);  // dy computed a row or two at a time
    const auto c2 = run(std::size_t{1} << 22, true);
    for (std::size_t o = 0; o < 2; ++o) {
      CHECK(rel(c1.scores<Visibility>(o)[0], r.scores<Visibility>(o)[0]) < 1e-12);
      CHECK(rel(c2.scores<Visibility>(o)[0], r.scores<Visibility>(o)[0]) < 1e-12);
      CHECK(rel(c2.scores<FisherDiag>(o)[0], r.scores<FisherDiag>(o)[0]) < 1e-6);
    }
  }
}

TEMPLATE_TEST_CASE("metrics: metric_pass equals a naive per-token recomputation on the runtime's captures",
          "[sensitivity][metrics]", FRAGILE_TEST_BACKENDS) {
  const auto m = test::tiny_model<TestType>({});
  const auto tokens = test::random_windows(3, 9, m.config().vocab_size, 11);
  const auto windows = as_data_windows(tokens);
  const std::vector<int> bits{2, 3, 4, 8};
  quant::QuantSpec base;
  base.group_size = 8;
  const auto opts = bit_options(bits, base);
  const CandidateSet cands = quantize_candidates(m, quant::Rtn{}, opts, {}, {.progress = nullptr});
  REQUIRE(cands.options() == 4);

  for (auto labels : {model::LabelSource::kData, model::LabelSource::kModelSample}) {
    MetricPassOptions po;
    po.labels = labels;
    po.seed = 17;
    po.batch_size = 2;
    po.progress = nullptr;
    const MetricPassResult r = metric_pass(m, windows, cands, po);
    REQUIRE(r.num_layers() == m.linears().size());

    // Naive: collect x and g of every layer (same labels, same seed), then loop per token.
    struct Collect {
      std::vector<std::vector<float>> x, g;
      std::vector<std::size_t> S, T;
      model::CaptureNeeds needs() const { return {.x = true, .g = true}; }
      void observe(const model::LayerBatch& c) {
        const auto i = c.layer->index;
        if (x.size() <= i) { x.resize(i + 1); g.resize(i + 1); }
        const auto xs = c.x.host(), gs = c.g.host();
        x[i].insert(x[i].end(), xs.begin(), xs.end());
        g[i].insert(g[i].end(), gs.begin(), gs.end());
        S.push_back(c.scored_positions);
        T.push_back(c.seq_len);
      }
    } col;
    model::CaptureOptions co{labels, 17, 2, {}};
    m.capture(tokens, co, col);
    const std::size_t T = col.T[0], S = col.S[0];

    for (std::size_t l = 0; l < m.linears().size(); ++l) {
      const auto& li = m.linears()[l];
      const auto w = m.weight(l);
      double g2 = 0;
      std::vector<double> d(4, 0), dg(4, 0), dy2(4, 0);
      std::size_t scored = 0;
      for (std::size_t r = 0; r < col.x[l].size() / li.in_features; ++r) {
        if (r % T >= S) continue;
        ++scored;
        const float* xr = col.x[l].data() + r * li.in_features;
        const float* gr = col.g[l].data() + r * li.out_features;
        for (std::size_t i = 0; i < li.out_features; ++i) g2 += double(gr[i]) * gr[i];
        for (std::size_t o = 0; o < 4; ++o) {
          const MatrixF q = cands.at(l, o).dequantize();
          double s = 0;
          for (std::size_t i = 0; i < li.out_features; ++i) {
            double dyi = 0;
            for (std::size_t j = 0; j < li.in_features; ++j)
              dyi += (double(q(i, j)) - w[i * li.in_features + j]) * xr[j];
            s += gr[i] * dyi;
            dg[o] += (gr[i] * dyi) * (gr[i] * dyi);
            dy2[o] += dyi * dyi;
          }
          d[o] += s * s;
        }
      }
      INFO(li.name);
      CHECK(r.layer_stats[l].tokens == scored);
      CHECK(rel(r.scores<FisherTrace>(0)[l], g2 / scored) < 1e-6);  // repeated runs agree to ~1e-8
      for (std::size_t o = 0; o < 4; ++o) {
        CHECK(rel(r.scores<Visibility>(o)[l], 0.5 * d[o] / scored) < 1e-4);
        CHECK(rel(r.scores<VisibilityDiag>(o)[l], 0.5 * dg[o] / scored) < 1e-4);
        CHECK(rel(r.option_stats[l][o].dy2, dy2[o]) < 1e-4);
      }
    }
    // A SensitivityTable for any allocator: costs from the quantizer, scores from the metric.
    const SensitivityTable t = r.table<Visibility>();
    t.validate();
    CHECK(t.score_name() == "D_l");
    CHECK(t.option(0, 1).cost_bits == std::get<quant::QuantizedWeight>(cands.at(0, 1).weight).storage_bits());
    // Finer grids move weights less.
    for (std::size_t l = 0; l < r.num_layers(); ++l)
      CHECK(r.scores<WeightMse>(3)[l] < r.scores<WeightMse>(1)[l]);
  }
}

TEMPLATE_TEST_CASE("metrics: results do not depend on batch size; only requested sums are collected",
          "[sensitivity][metrics]", FRAGILE_TEST_BACKENDS) {
  const auto m = test::tiny_model<TestType>({});
  const auto windows = as_data_windows(test::random_windows(4, 8, m.config().vocab_size, 5));
  const std::vector<int> bits{3};
  const auto cands = quantize_candidates(m, quant::Rtn{}, bit_options(bits), {}, {.progress = nullptr});
  MetricPassOptions a{.labels = model::LabelSource::kModelSample, .seed = 9, .batch_size = 1,
                      .progress = nullptr};
  MetricPassOptions b = a;
  b.batch_size = 4;
  const MetricPassResult ra = metric_pass(m, windows, cands, a), rb = metric_pass(m, windows, cands, b);
  for (std::size_t l = 0; l < ra.num_layers(); ++l) {
    CHECK(rel(ra.scores<Visibility>(0)[l], rb.scores<Visibility>(0)[l]) < 1e-4);
    CHECK(rel(ra.scores<FisherTrace>(0)[l], rb.scores<FisherTrace>(0)[l]) < 1e-4);
  }
  // Same seed, same answer, bit for bit.
  const MetricPassResult ra2 = metric_pass(m, windows, cands, a);
  CHECK(ra2.scores<Visibility>(0) == ra.scores<Visibility>(0));
  CHECK(ra2.scores<FisherTrace>(0) == ra.scores<FisherTrace>(0));
  CHECK(ra2.to_json() == ra.to_json());

  MetricPassOptions mse = a;
  mse.needs = needs_of<WeightMse>();
  const MetricPassResult rm = metric_pass(m, windows, cands, mse);  // data-free: no forward
  CHECK(rm.scores<WeightMse>(0) == ra.scores<WeightMse>(0));
  CHECK_THROWS_AS(rm.scores<Visibility>(0), ConfigError);
  CHECK_THROWS_AS(rm.scores<WeightMse>(1), ArgumentError);
  CHECK_THROWS_AS(metric_pass(m, std::span<const data::Window>{}, cands, a), ArgumentError);

  // A candidate of the wrong shape names the layer and both shapes.
  CandidateSet wrong(m.linears().size(), {"x"}, {3.0});
  wrong.set(2, {Candidate{"x", 3.0, 0, MatrixF::Zero(3, 5)}});
  try {
    (void)metric_pass(m, windows, wrong, a);
    FAIL("expected a ShapeError");
  } catch (const ShapeError& e) {
    CHECK_THAT(e.what(), Catch::Contains(m.linears()[2].name) && Catch::Contains("(3, 5)"));
  }
  CandidateSet none(m.linears().size(), {"x"}, {3.0});
  CHECK_THROWS_AS(metric_pass(m, windows, none, a), ArgumentError);  // no layer has candidates
}

TEMPLATE_TEST_CASE("metrics: GPTQ candidates come from the calibration pass's H", "[sensitivity][metrics]", FRAGILE_TEST_BACKENDS) {
  const auto m = test::tiny_model<TestType>({});
  const auto tokens = test::random_windows(3, 8, m.config().vocab_size, 21);
  const auto windows = as_data_windows(tokens);
  const std::vector<int> bits{3};
  const auto opts = bit_options(bits);
  CHECK_THROWS_AS(quantize_candidates(m, quant::Gptq{}, opts, {}, {.progress = nullptr}), ArgumentError);
  const auto cands = quantize_candidates(m, quant::Gptq{}, opts, windows, {.batch_size = 2, .progress = nullptr});
  // The same H by hand: every layer's inputs over all windows.
  struct Xs {
    std::vector<quant::HessianAccumulator> h;
    model::CaptureNeeds needs() const { return {.x = true}; }
    void observe(const model::LayerBatch& c) {
      auto& a = h[c.layer->index];
      if (a.in_features() == 0) a = quant::HessianAccumulator(Eigen::Index(c.layer->in_features));
      a.add(Eigen::Map<const MatrixF>(c.x.host().data(), Eigen::Index(c.rows()), Eigen::Index(c.layer->in_features)));
    }
  } xs{std::vector<quant::HessianAccumulator>(m.linears().size())};
  m.capture(tokens, model::CaptureOptions{.batch_size = 3}, xs);
  for (std::size_t l = 0; l < m.linears().size(); ++l) {
    const auto& li = m.linears()[l];
    Eigen::Map<const MatrixF> w(m.weight(l).data(), Eigen::Index(li.out_features), Eigen::Index(li.in_features));
    quant::LayerCapture cap(li.name);
    cap.with_hessian(xs.h[l]);
    const MatrixF ref = quant::Gptq{}.quantize(w, opts[0].spec, cap).dequantize();
    CHECK((cands.at(l, 0).dequantize() - ref).cwiseAbs().maxCoeff() <= 1e-5f * w.cwiseAbs().maxCoeff());
  }
}

TEMPLATE_TEST_CASE("metrics: 2 KL(FP || perturbed) approaches 2 S^2 D_l with model-sampled labels",
          "[sensitivity][metrics][kl]", FRAGILE_TEST_BACKENDS) {
  // For a layer whose output reaches the logits position by position (the last block's o_proj
  // and down_proj), E_y[(dl_t/dy . dy)^2] = Var_y[d log p_t(y)] = 2 KL_t + O(|dy|^3), and
  // g_t = (1/S) dl_t/dy_t, so S^2 D_l -> mean_t KL_t as the perturbation shrinks. Labels are
  // drawn once per position; a window repeated R times averages R draws.
  const auto m = test::tiny_model<TestType>({});
  const auto& cfg = m.config();
  const std::size_t T = 6, R = 600, V = cfg.vocab_size;
  const auto base = test::random_windows(2, T, V, 33);
  std::vector<model::TokenIds> rep;
  for (std::size_t r = 0; r < R; ++r) rep.insert(rep.end(), base.begin(), base.end());
  const auto windows = as_data_windows(rep);
  const std::size_t last = cfg.num_hidden_layers - 1;
  for (auto kind : {model::LinearKind::kDown, model::LinearKind::kO}) {
    const auto& li = m.registry().at(last, kind);
    const std::size_t l = li.index;
    INFO(li.name);
    Eigen::Map<const MatrixF> w(m.weight(l).data(), Eigen::Index(li.out_features), Eigen::Index(li.in_features));
    const MatrixF dir = random_matrix(w.rows(), w.cols(), 77) * (w.cwiseAbs().mean());

    std::vector<double> ratio;
    for (double eps : {0.2, 0.1, 0.05, 0.025}) {
      const MatrixF pert = w + float(eps) * dir;
      CandidateSet c(m.linears().size(), {"p"}, {0.0});
      c.set(l, {Candidate{"p", 0.0, 0, pert}});
      MetricPassOptions po{.labels = model::LabelSource::kModelSample, .seed = 5, .batch_size = 64,
                           .needs = needs_of<Visibility>(), .progress = nullptr};
      const MetricPassResult pr = metric_pass(m, windows, c, po);
      const double dl = pr.scores<Visibility>(0)[0];
      // Exact mean KL over all T positions of the two distinct windows.
      auto ov = m.make_overrides();
      ov.set(l, std::span<const float>(pert.data(), pert.size()), li.out_features, li.in_features);
      const auto lp = m.logits(base), lq = m.logits(base, &ov);
      double kl = 0;
      for (std::size_t r = 0; r < base.size() * T; ++r) {
        const float* a = lp.data() + r * V;
        const float* b = lq.data() + r * V;
        const double ma = *std::max_element(a, a + V), mb = *std::max_element(b, b + V);
        double za = 0, zb = 0;
        for (std::size_t v = 0; v < V; ++v) { za += std::exp(a[v] - ma); zb += std::exp(b[v] - mb); }
        for (std::size_t v = 0; v < V; ++v) {
          const double la = a[v] - ma - std::log(za), lb = b[v] - mb - std::log(zb);
          kl += std::exp(la) * (la - lb);
        }
      }
      kl /= double(base.size() * T);
      ratio.push_back(double(T * T) * dl / kl);
    }
    // Monte-Carlo error of the label average is ~sqrt(2 / (R T)) ~ 2%; the O(eps) bias shrinks.
    CHECK(std::abs(ratio.back() - 1.0) < 0.08);
    CHECK(std::abs(ratio[3] - ratio[2]) < std::abs(ratio[1] - ratio[0]) + 1e-3);
    UNSCOPED_INFO("ratios " << ratio[0] << " " << ratio[1] << " " << ratio[2] << " " << ratio[3]);
  }
}

TEST_CASE("metrics: NSDS of a model scores each linear's own weight in its own role",
          "[sensitivity][metrics]") {
  const auto m = test::tiny_model({});
  // Writers (v, o, down) weigh 0.5, detectors (q, k, gate, up) 1: each score must be the Soft-OR
  // of the normalised statistics of that layer's weight under the role of its kind.
  const NsdsOptions opt{.detector_weight = 1.0, .writer_weight = 0.5};
  const auto s = nsds_of(m, opt);
  REQUIRE(s.size() == m.linears().size());
  std::size_t writers = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto& li = m.linears()[i];
    INFO(li.name);
    CHECK(s[i].name == li.name);
    CHECK(s[i].numerical == excess_kurtosis(m.weight(i)));
    const bool writer = li.kind == model::LinearKind::kV || li.kind == model::LinearKind::kO ||
                        li.kind == model::LinearKind::kDown;
    writers += writer ? 1 : 0;
    const double role = writer ? opt.writer_weight : opt.detector_weight;
    const double terms[] = {role * s[i].numerical_norm, role * s[i].structural_norm};
    CHECK(s[i].score == soft_or(terms));
  }
  CHECK(writers == 3 * m.config().num_hidden_layers);
  // The statistics differ between layers, so the normalised ones do too.
  CHECK(s[0].numerical_norm != s[1].numerical_norm);
}
