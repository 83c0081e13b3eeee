// RTN: hand-checked grids, invariants, bad input, and equality with the reference GPTQ
// quant.py find_params/quantize (fixtures from tools/gptq_reference_fixtures.py).
#include "support/test_data.hpp"

#include "quant_test_support.hpp"

#include <fragile/quant/rtn.hpp>

#include <cmath>
#include <limits>

using namespace fragile;
using namespace fragile::quant;

namespace {
QuantSpec spec_of(int bits, int group, bool sym, ClipSearch clip = ClipSearch::kNone) {
  QuantSpec s;
  s.bits = bits;
  s.group_size = group;
  s.symmetric = sym;
  s.clip = clip;
  return s;
}
}  // namespace

TEST_CASE("round_half_even matches std::nearbyint, ties to even", "[quant][rtn]") {
  CHECK(round_half_even(0.5f) == 0.0f);
  CHECK(round_half_even(1.5f) == 2.0f);
  CHECK(round_half_even(2.5f) == 2.0f);
  CHECK(round_half_even(-0.5f) == 0.0f);
  CHECK(round_half_even(-1.5f) == -2.0f);
  CHECK(round_half_even(1e9f) == 1e9f);
  Rng rng(3);
  for (int i = 0; i < 100000; ++i) {
    const float v = static_cast<float>(rng.uniform(-300.0, 300.0));
    const float t = std::floor(v) + 0.5f;  // exact ties too
    REQUIRE(round_half_even(v) == std::nearbyint(v));
    REQUIRE(round_half_even(t) == std::nearbyint(t));
  }
}

TEST_CASE("RTN on hand-checkable rows", "[quant][rtn]") {
  SECTION("2-bit asymmetric: range [-1, 2], scale 1, zero 1") {
    MatrixF w(1, 6);
    w << -1.0f, 0.0f, 0.5f, 1.5f, 2.0f, -0.5f;
    const auto q = rtn_quantize(w, spec_of(2, 0, false));
    CHECK(q.scales(0, 0) == 1.0f);
    CHECK(q.zeros(0, 0) == 1.0f);
    const int expected_codes[] = {0, 1, 1, 3, 3, 1};  // 0.5 -> 0 and 1.5 -> 2: half to even
    for (int c = 0; c < 6; ++c) CHECK(q.code(0, c) == expected_codes[c]);
    MatrixF expected(1, 6);
    expected << -1.0f, 0.0f, 0.0f, 2.0f, 2.0f, 0.0f;
    CHECK(q.dequantize() == expected);
    CHECK(q.loss == Approx(0.25 + 0.25 + 0.25));
  }
  SECTION("3-bit symmetric: xmax 3.5, scale 1, zero 4, top code clamped") {
    MatrixF w(1, 5);
    w << -3.5f, 3.5f, 0.5f, 1.5f, -2.5f;
    const auto q = rtn_quantize(w, spec_of(3, 0, true));
    CHECK(q.scales(0, 0) == 1.0f);
    CHECK(q.zeros(0, 0) == 4.0f);
    MatrixF expected(1, 5);
    expected << -4.0f, 3.0f, 0.0f, 2.0f, -2.0f;
    CHECK(q.dequantize() == expected);
  }
  SECTION("all-zero row uses [-1, 1] and dequantizes to zeros") {
    const MatrixF w = MatrixF::Zero(2, 8);
    for (bool sym : {false, true}) {
      const auto q = rtn_quantize(w, spec_of(4, 0, sym));
      CHECK(q.scales(0, 0) == Approx(2.0 / 15.0));
      CHECK(q.dequantize().isZero(0.0f));
    }
  }
  SECTION("groups: last group shorter when in_features is not a multiple") {
    const GroupLayout g(10, 4);
    CHECK(g.num_groups == 3);
    CHECK(g.width(0) == 4);
    CHECK(g.width(2) == 2);
    CHECK(GroupLayout(10, 0).num_groups == 1);
    CHECK(GroupLayout(10, 32).group_size == 10);
    MatrixF w(1, 10);
    w << 1, 2, 3, 4, -8, 0, 8, 4, 100, -100;
    const auto q = rtn_quantize(w, spec_of(8, 4, false));
    CHECK(q.scales.cols() == 3);
    CHECK(q.scales(0, 2) == Approx(200.0 / 255.0));
    CHECK(q.scales(0, 0) == Approx(4.0 / 255.0));
  }
}

TEST_CASE("RTN storage cost counts codes, 16-bit scales and zero points", "[quant][rtn]") {
  const MatrixF w = test::synthetic_weight(8, 100, 1);
  const auto asym = rtn_quantize(w, spec_of(3, 32, false));  // 4 groups per row
  CHECK(asym.storage_bits() == 8u * 100u * 3u + 8u * 4u * (16u + 3u));
  const auto sym = rtn_quantize(w, spec_of(3, 32, true));
  CHECK(sym.storage_bits() == 8u * 100u * 3u + 8u * 4u * 16u);
  const auto pc = rtn_quantize(w, spec_of(4, 0, false));
  CHECK(pc.bits_per_weight() == Approx(4.0 + 20.0 / 100.0));
}

TEST_CASE("packed codes round-trip for every bit width", "[quant][rtn]") {
  Rng rng(11);
  for (int bits = kMinBits; bits <= kMaxBits; ++bits) {
    PackedCodes p(3, 37, bits);
    std::vector<std::uint8_t> row(37);
    for (Index r = 0; r < 3; ++r) {
      for (auto& c : row) c = static_cast<std::uint8_t>(rng.below(1u << bits));
      if (r == 1) {
        for (Index c = 0; c < 37; ++c) p.set(r, c, row[static_cast<std::size_t>(c)]);
      } else {
        p.pack_row(r, row.data());
      }
      for (Index c = 0; c < 37; ++c) REQUIRE(p.get(r, c) == row[static_cast<std::size_t>(c)]);
    }
    CHECK(p.row_bytes() == (37 * bits + 7) / 8);
  }
}

TEST_CASE("RTN invariants on random weights", "[quant][rtn]") {
  const MatrixF w = test::synthetic_weight(24, 200, 5);
  for (int bits = kMinBits; bits <= kMaxBits; ++bits) {
    for (bool sym : {false, true}) {
      for (int group : {0, 64, 48}) {
        const QuantSpec spec = spec_of(bits, group, sym);
        const auto q = rtn_quantize(w, spec);
        const MatrixF d = q.dequantize();
        for (Index r = 0; r < w.rows(); ++r) {
          for (Index c = 0; c < w.cols(); ++c) {
            const Index g = q.groups.group_of(c);
            REQUIRE(q.code(r, c) >= 0);
            REQUIRE(q.code(r, c) <= spec.max_code());
            // min-max grids cover the data: the error is at most half a step
            REQUIRE(std::fabs(d(r, c) - w(r, c)) <= q.scales(r, g) * 0.5f * (1.0f + 1e-4f));  // f32 rounding of x / scale
          }
          for (Index g = 0; g < q.groups.num_groups; ++g) {
            REQUIRE(q.zeros(r, g) >= 0.0f);
            REQUIRE(q.zeros(r, g) <= static_cast<float>(spec.max_code()));
            if (sym) REQUIRE(q.zeros(r, g) == static_cast<float>(1 << (bits - 1)));
          }
        }
        // Re-quantizing grid values on the same grid is the identity.
        for (Index r = 0; r < w.rows(); ++r)
          for (Index c = 0; c < w.cols(); ++c) {
            const Index g = q.groups.group_of(c);
            REQUIRE(quantize_value(d(r, c), q.scales(r, g), q.zeros(r, g),
                                   static_cast<float>(spec.max_code())) == d(r, c));
          }
        if (!sym) {
          // Asymmetric min-max RTN is idempotent end to end: Q(Q(W)) == Q(W).
          const auto qq = rtn_quantize(d, spec);
          const MatrixF dd = qq.dequantize();
          for (Index r = 0; r < w.rows(); ++r)
            for (Index c = 0; c < w.cols(); ++c) REQUIRE(qq.code(r, c) == q.code(r, c));
          CHECK((dd - d).cwiseAbs().maxCoeff() <= 1e-6f * d.cwiseAbs().maxCoeff());
        }
      }
    }
  }
}

TEST_CASE("RTN symmetric grids do not depend on the sign of W", "[quant][rtn]") {
  const MatrixF w = test::synthetic_weight(16, 96, 9);  // every row has both signs
  for (int bits : {2, 3, 4, 8}) {
    const auto a = rtn_quantize(w, spec_of(bits, 32, true));
    const MatrixF neg = -w;
    const auto b = rtn_quantize(neg, spec_of(bits, 32, true));
    CHECK(a.scales == b.scales);
    CHECK(a.zeros == b.zeros);
  }
}

TEST_CASE("RTN MSE clip search never increases the |err|^2.4 objective", "[quant][rtn]") {
  const MatrixF w = test::synthetic_weight(16, 128, 13);
  for (int bits : {2, 3, 4}) {
    for (bool sym : {false, true}) {
      const QuantSpec plain = spec_of(bits, 32, sym);
      const QuantSpec mse = spec_of(bits, 32, sym, ClipSearch::kMse);
      const MatrixF a = rtn_quantize(w, plain).dequantize(), b = rtn_quantize(w, mse).dequantize();
      const double ea = (a - w).array().abs().pow(2.4f).cast<double>().sum();
      const double eb = (b - w).array().abs().pow(2.4f).cast<double>().sum();
      CHECK(eb <= ea * (1.0 + 1e-6));
    }
  }
}

TEST_CASE("RTN equals the reference GPTQ quant.py find_params/quantize", "[quant][rtn][reference]") {
  const auto manifest = test::gptq_manifest();
  const auto dir = test::gptq_fixture_dir();
  REQUIRE(manifest["rtn"].size() >= 20);
  for (const auto& c : manifest["rtn"]) {
    INFO(c["name"].get<std::string>());
    const MatrixF w = test::read_npy_f32(dir / c["w"].get<std::string>());
    const MatrixF ref = test::read_npy_f32(dir / c["q"].get<std::string>());
    const MatrixF ref_scales = test::read_npy_f32(dir / c["scales"].get<std::string>());
    const MatrixF ref_zeros = test::read_npy_f32(dir / c["zeros"].get<std::string>());
    const QuantSpec spec = spec_of(c["bits"], c["group_size"], c["sym"],
                                   c["mse"].get<bool>() ? ClipSearch::kMse : ClipSearch::kNone);
    const auto q = rtn_quantize(w, spec);
    CHECK(q.scales == ref_scales);
    CHECK(q.zeros == ref_zeros);
    const MatrixF d = q.dequantize();
    const float max_diff = (d - ref).cwiseAbs().maxCoeff();
    CHECK(max_diff == 0.0f);
  }
}

TEST_CASE("RTN rejects bad input with clear errors", "[quant][rtn][errors]") {
  const MatrixF w = test::synthetic_weight(4, 16, 1);
  const Rtn rtn;
  CHECK_THROWS_AS(rtn.quantize(w, spec_of(1, 0, false)), ArgumentError);
  CHECK_THROWS_AS(rtn.quantize(w, spec_of(9, 0, false)), ArgumentError);
  CHECK_THROWS_WITH(rtn.quantize(w, spec_of(9, 0, false)), Catch::Contains("bits = 9"));
  CHECK_THROWS_AS(rtn.quantize(w, spec_of(4, -8, false)), ArgumentError);
  CHECK_THROWS_WITH(rtn.quantize(w, spec_of(4, -8, false)), Catch::Contains("group_size = -8"));
  MatrixF bad = w;
  bad(2, 3) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(rtn.quantize(bad, spec_of(4, 0, false), LayerCapture("layers.0.mlp.up_proj")),
                  NumericError);
  CHECK_THROWS_WITH(rtn.quantize(bad, spec_of(4, 0, false), LayerCapture("layers.0.mlp.up_proj")),
                    Catch::Contains("layers.0.mlp.up_proj") && Catch::Contains("NaN"));
  bad(2, 3) = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS(rtn.quantize(bad, spec_of(4, 0, false)), NumericError);
  const MatrixF x = MatrixF::Ones(5, 17);
  LayerCapture cap("q_proj");
  cap.with_activations(x);
  CHECK_THROWS_AS(rtn.quantize(w, spec_of(4, 0, false), cap), ShapeError);
  CHECK_THROWS_WITH(rtn.quantize(w, spec_of(4, 0, false), cap),
                    Catch::Contains("(5, 17)") && Catch::Contains("(4, 16)"));
}

TEST_CASE("Rtn satisfies the Quantizer concept and reports output MSE with activations",
          "[quant][rtn]") {
  static_assert(Quantizer<Rtn>);
  static_assert(check_quantizer<Rtn>());
  const MatrixF w = test::synthetic_weight(8, 32, 2);
  const MatrixF x = test::synthetic_activations(64, 32, 3);
  LayerCapture cap;
  cap.with_activations(x);
  const auto q = Rtn{}.quantize(w, spec_of(3, 0, false), cap);
  CHECK(q.loss_kind == LossKind::kOutputMse);
  CHECK(q.loss == Approx(output_error(w, q.dequantize(), x)));
  CHECK(q.loss > 0.0);
}
