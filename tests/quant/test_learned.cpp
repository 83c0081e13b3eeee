// AdaRound, LWC, the AWQ-style clip-ratio search and the channel-split hybrid on correlated
// synthetic activations with outlier channels: each reduces its own objective, beats RTN's
// output error at equal bits, is deterministic for a seed, and rejects bad input.
#include "support/test_data.hpp"

#include "quant_test_support.hpp"

#include <fragile/quant/adaround.hpp>
#include <fragile/quant/gptq.hpp>
#include <fragile/quant/hybrid.hpp>
#include <fragile/quant/lwc.hpp>
#include <fragile/quant/rtn.hpp>

#include <cmath>
#include <limits>

using namespace fragile;
using namespace fragile::quant;

namespace {
QuantSpec spec_of(int bits, int group, bool sym = false) {
  QuantSpec s;
  s.bits = bits;
  s.group_size = group;
  s.symmetric = sym;
  return s;
}

struct Layer {
  MatrixF w = test::synthetic_weight(32, 128, 41);
  MatrixF x = test::synthetic_activations(512, 128, 42);
  LayerCapture capture() const {
    LayerCapture c("synthetic.mlp.down_proj");
    c.with_activations(x);
    return c;
  }
  double rtn_error(const QuantSpec& s) const { return output_error(w, rtn_quantize(w, s).dequantize(), x); }
};
}  // namespace

TEST_CASE("AdaRound reduces the output error below RTN on the same grid", "[quant][adaround]") {
  static_assert(check_quantizer<AdaRound>());
  const Layer layer;
  AdaRound ada;
  ada.iterations = 600;
  ada.lr = 1e-2;  // a short schedule needs a larger step than the 20k-iteration default
  for (int bits : {2, 3, 4}) {
    for (int group : {0, 32}) {
      INFO("bits " << bits << " group " << group);
      const QuantSpec spec = spec_of(bits, group);
      AdaRound::State st;
      const auto q = ada.quantize(layer.w, spec, layer.capture(), &st);
      CHECK(q.loss_kind == LossKind::kOutputMse);
      CHECK(q.loss == Approx(output_error(layer.w, q.dequantize(), layer.x)).epsilon(1e-4));
      CHECK(st.rtn_output_error == Approx(layer.rtn_error(spec)).epsilon(1e-4));
      CHECK(q.loss < 0.9 * st.rtn_output_error);
      // The rounding regulariser drives h(V) to {0, 1}: at the end it is a small fraction of
      // its value when it switched on.
      const auto on = static_cast<std::size_t>(ada.warmup * ada.iterations);
      CHECK(st.regulariser.back() < 0.05 * st.regulariser[on]);
      // Hard rounding only ever picks floor or floor + 1 on the RTN grid.
      for (Index r = 0; r < layer.w.rows(); ++r)
        for (Index c = 0; c < layer.w.cols(); ++c) {
          const Index g = q.groups.group_of(c);
          const float fl = std::floor(layer.w(r, c) / q.scales(r, g)) + q.zeros(r, g);
          const int code = q.code(r, c);
          REQUIRE((code == std::clamp(static_cast<int>(fl), 0, spec.max_code()) ||
                   code == std::clamp(static_cast<int>(fl) + 1, 0, spec.max_code())));
        }
    }
  }
}

TEST_CASE("AdaRound is deterministic for a seed, also with token mini-batches", "[quant][adaround]") {
  const Layer layer;
  AdaRound ada;
  ada.iterations = 200;
  ada.batch_tokens = 64;
  ada.seed = 5;
  const auto a = ada.quantize(layer.w, spec_of(3, 0), layer.capture());
  const auto b = ada.quantize(layer.w, spec_of(3, 0), layer.capture());
  CHECK(a.codes.bytes() == b.codes.bytes());
  CHECK(a.loss == b.loss);
  ada.seed = 6;
  AdaRound::State sa, sc;
  ada.seed = 5;
  (void)ada.quantize(layer.w, spec_of(3, 0), layer.capture(), &sa);
  ada.seed = 6;
  (void)ada.quantize(layer.w, spec_of(3, 0), layer.capture(), &sc);
  CHECK(sa.reconstruction != sc.reconstruction);  // the seed picks the batches
}

TEST_CASE("AdaRound's hand-written gradient matches finite differences", "[quant][adaround]") {
  // Objective f(V) = rec(W~(V)) + lambda reg(h(V)) after warm-up, checked through one Adam
  // step's direction: the first Adam step moves each V by -lr * sign(grad) (m/sqrt(v) = sign).
  MatrixF w = test::synthetic_weight(4, 12, 3);
  MatrixF x = test::synthetic_activations(40, 12, 4);
  LayerCapture cap;
  cap.with_activations(x);
  AdaRound ada;
  ada.iterations = 10;
  ada.warmup = 0.0;
  ada.beta_start = ada.beta_end = 3.0;
  ada.lr = 1e-4;
  const QuantSpec spec = spec_of(3, 0);
  AdaRound::State st = ada.start(w, spec, cap);
  const detail::OutputObjective obj(cap.activations());
  auto objective = [&](const Eigen::ArrayXXf& v) {
    const Eigen::ArrayXXf h = ada.h_of(v);
    const Eigen::ArrayXXf lv = (st.w_floor + h + st.zero).min(7.0f).max(0.0f);
    const MatrixF dw = (st.scale * (lv - st.zero)).matrix() - st.w;
    return obj.value(dw) + ada.reg_lambda * (1.0f - (2.0f * h - 1.0f).abs().pow(3.0f)).cast<double>().sum();
  };
  const Eigen::ArrayXXf v0 = st.v;
  Rng rng(0);
  ada.step(st, obj, rng, spec);
  const Eigen::ArrayXXf moved = st.v - v0;
  int checked = 0;
  for (Index i = 0; i < v0.size(); ++i) {
    Eigen::ArrayXXf vp = v0, vm = v0;
    const float eps = 1e-3f;
    vp.data()[i] += eps;
    vm.data()[i] -= eps;
    const double fd = (objective(vp) - objective(vm)) / (2.0 * eps);
    if (std::fabs(fd) < 1e-4) continue;  // flat (clamped) entries
    ++checked;
    CHECK((moved.data()[i] < 0) == (fd > 0));
  }
  CHECK(checked > v0.size() / 2);
}

TEST_CASE("LWC learns clip factors that lower the output MSE below RTN at 2 and 3 bits",
          "[quant][lwc]") {
  static_assert(check_quantizer<Lwc>());
  const Layer layer;
  Lwc lwc;
  lwc.epochs = 20;
  lwc.batch_tokens = 64;
  for (int bits : {2, 3}) {
    for (int group : {0, 32}) {
      INFO("bits " << bits << " group " << group);
      const QuantSpec spec = spec_of(bits, group);
      Lwc::State st;
      const auto q = lwc.quantize(layer.w, spec, layer.capture(), &st);
      CHECK(st.final_objective < st.initial_objective);
      CHECK(st.epoch_loss.back() < st.epoch_loss.front());
      CHECK(q.loss < layer.rtn_error(spec));
      CHECK(q.loss == Approx(output_error(layer.w, q.dequantize(), layer.x)).epsilon(1e-4));
      for (Index r = 0; r < q.rows; ++r)
        for (Index g = 0; g < q.groups.num_groups; ++g) {
          REQUIRE(q.zeros(r, g) >= 0.0f);
          REQUIRE(q.zeros(r, g) <= static_cast<float>(spec.max_code()));
        }
    }
  }
}

TEST_CASE("LWC is deterministic for a seed and asymmetric only", "[quant][lwc]") {
  const Layer layer;
  Lwc lwc;
  lwc.epochs = 3;
  lwc.seed = 9;
  const auto a = lwc.quantize(layer.w, spec_of(2, 32), layer.capture());
  const auto b = lwc.quantize(layer.w, spec_of(2, 32), layer.capture());
  CHECK(a.scales == b.scales);
  CHECK(a.codes.bytes() == b.codes.bytes());
  CHECK_THROWS_AS(lwc.quantize(layer.w, spec_of(2, 32, true), layer.capture()), ArgumentError);
  CHECK_THROWS_AS(lwc.quantize(layer.w, spec_of(2, 32), LayerCapture("no_x")), ArgumentError);
  const MatrixF x_bad = MatrixF::Ones(10, 127);
  LayerCapture bad("down_proj");
  bad.with_activations(x_bad);
  CHECK_THROWS_WITH(lwc.quantize(layer.w, spec_of(2, 32), bad),
                    Catch::Contains("(10, 127)") && Catch::Contains("(32, 128)"));
}

TEST_CASE("Clip-ratio grid search never picks a worse grid than min-max for a group",
          "[quant][lwc]") {
  static_assert(check_quantizer<ClipRatioSearch>());
  const Layer layer;
  for (int bits : {2, 3, 4}) {
    const QuantSpec spec = spec_of(bits, 32);
    ClipRatioSearch::State st;
    const auto q = ClipRatioSearch{}.quantize(layer.w, spec, layer.capture(), &st);
    CHECK(q.loss < layer.rtn_error(spec));
    CHECK(st.ratio.maxCoeff() <= 1.0f);
    CHECK(st.ratio.minCoeff() > 0.5f);
    CHECK(st.ratio.minCoeff() < 1.0f);  // some group was clipped
  }
}

TEST_CASE("Channel split: top-r channels, storage with index, layout", "[quant][hybrid]") {
  const std::vector<float> imp = {0.1f, 5.0f, 0.3f, 5.0f, 9.0f, 0.0f, 0.2f, 1.0f};
  CHECK(top_channels(imp, 0.25) == std::vector<Index>{1, 4});  // 2 of 8; tie 1 vs 3 -> 1
  CHECK(top_channels(imp, 0.5) == std::vector<Index>{1, 3, 4, 7});
  CHECK(top_channels(imp, 0.0).empty());

  const MatrixF w = test::synthetic_weight(6, 8, 2);
  LayerCapture cap("layers.0.self_attn.v_proj");
  cap.with_channel_importance(imp);
  ChannelSplit<Rtn, Rtn> split;
  split.ratio = 0.25;
  split.high_bits = 8;
  const auto q = split.quantize(w, spec_of(2, 0), cap);
  CHECK(q.high_channels == std::vector<Index>{1, 4});
  CHECK(q.normal_channels.size() == 6);
  // parts: 6 x 2 at 8 bits + 6 x 6 at 2 bits, asymmetric per row; index: min(8, 2 * 3) = 6 bits
  CHECK(q.index_bits() == 6);
  CHECK(q.storage_bits() == 6u * 2u * 8u + 6u * (16u + 8u) + 6u * 6u * 2u + 6u * (16u + 2u) + 6u);
  const MatrixF d = q.dequantize();
  MatrixF w_high(6, 2), w_norm(6, 6);
  w_high << w.col(1), w.col(4);
  w_norm << w.col(0), w.col(2), w.col(3), w.col(5), w.col(6), w.col(7);
  const MatrixF dh = rtn_quantize(w_high, spec_of(8, 0)).dequantize();
  const MatrixF dn = rtn_quantize(w_norm, spec_of(2, 0)).dequantize();
  CHECK(d.col(1) == dh.col(0));
  CHECK(d.col(4) == dh.col(1));
  CHECK(d.col(0) == dn.col(0));
  CHECK(d.col(7) == dn.col(5));

  // ratio 0 and 1 reduce to the single quantizers
  split.ratio = 0.0;
  CHECK(split.quantize(w, spec_of(2, 0), cap).dequantize() == rtn_quantize(w, spec_of(2, 0)).dequantize());
  split.ratio = 1.0;
  CHECK(split.quantize(w, spec_of(2, 0), cap).dequantize() == rtn_quantize(w, spec_of(8, 0)).dequantize());

  // bad input
  const std::vector<float> short_imp(7, 1.0f);
  LayerCapture bad("layers.0.self_attn.v_proj");
  bad.with_channel_importance(short_imp);
  CHECK_THROWS_AS(split.quantize(w, spec_of(2, 0), bad), ShapeError);
  CHECK_THROWS_WITH(split.quantize(w, spec_of(2, 0), bad),
                    Catch::Contains("7 entries") && Catch::Contains("v_proj"));
  split.ratio = 1.5;
  CHECK_THROWS_AS(split.quantize(w, spec_of(2, 0), cap), ArgumentError);
  split.ratio = 0.25;
  split.high_bits = 9;
  CHECK_THROWS_AS(split.quantize(w, spec_of(2, 0), cap), ArgumentError);
}

TEST_CASE("Channel split AdaRound(3) + LWC(2) beats LWC(2) alone on important channels",
          "[quant][hybrid]") {
  const Layer layer;
  // importance: the per-column activation energy (outlier channels rank first)
  const Eigen::VectorXf energy = layer.x.colwise().squaredNorm().transpose();
  const std::vector<float> imp(energy.data(), energy.data() + energy.size());
  LayerCapture cap = layer.capture();
  cap.with_channel_importance(imp);
  ChannelSplit<AdaRound, Lwc> split;
  split.high.iterations = 400;
  split.high.lr = 1e-2;
  split.normal.epochs = 5;
  split.ratio = 0.1;
  split.high_bits = 3;
  const QuantSpec spec = spec_of(2, 32);
  const auto q = split.quantize(layer.w, spec, cap);
  Lwc lwc;
  lwc.epochs = 5;
  const auto base = lwc.quantize(layer.w, spec, layer.capture());
  CHECK(q.loss_kind == LossKind::kOutputMse);
  CHECK(q.loss < base.loss);
  CHECK(q.loss < layer.rtn_error(spec));
  CHECK(q.bits_per_weight() > base.bits_per_weight());
  CHECK(q.high_channels.size() == 13);  // round(0.1 * 128)
}

TEST_CASE("Channel split composes GPTQ (high) with RTN (normal)", "[quant][hybrid]") {
  const Layer layer;
  const Eigen::VectorXf energy = layer.x.colwise().squaredNorm().transpose();
  const std::vector<float> imp(energy.data(), energy.data() + energy.size());
  LayerCapture cap = layer.capture();
  cap.with_channel_importance(imp);
  ChannelSplit<Gptq, Rtn> split;
  split.ratio = 0.2;
  split.high_bits = 4;
  const auto q = split.quantize(layer.w, spec_of(2, 32), cap);
  CHECK(q.high_channels.size() == 26);  // round(0.2 * 128)
  CHECK(q.high.bits == 4);
  CHECK(q.normal.bits == 2);
  CHECK(q.loss < layer.rtn_error(spec_of(2, 32)));
  CHECK(q.loss == Approx(output_error(layer.w, q.dequantize(), layer.x)).epsilon(1e-5));
}
