// GPTQ: quantize a weight column by column, each time spreading the rounding error over the
// columns not yet quantized through the inverse layer Hessian (Optimal Brain Quantization with
// a fixed column order, lazy batch updates and a Cholesky form of H^-1).
//
// Faithful to the reference `fasterquant` (IST-DASLab/gptq): dead columns (H_ii = 0) get
// H_ii = 1 and W[:, i] = 0; damping 0.01 * mean(diag H); the upper Cholesky factor U of H^-1
// (U^T U = H^-1); blocks of 128 columns updated lazily; per-channel grids from W before the
// dead-column fix; group grids either dynamic (found from W as it stands at the start of the
// current block when the group's first column comes up) or static (found from the original W
// before any update, AutoGPTQ's `static_groups`); act-order (columns by decreasing H_ii) always
// with static groups, so codes, scales and zeros stay in the original column layout. The loss
// returned is the reference's sum_i (w_i - q_i)^2 / (2 U_ii^2).
// U is computed as J M^-1 J with M = chol(J H J), J the exchange matrix: the same factor as the
// reference's cholesky -> cholesky_inverse -> cholesky(upper) at a third of the cost.
//
// @article{frantar2022gptq, title={GPTQ: Accurate Post-Training Quantization for Generative
//   Pre-trained Transformers}, author={Frantar, Elias and Ashkboos, Saleh and Hoefler, Torsten
//   and Alistarh, Dan}, journal={arXiv preprint arXiv:2210.17323}, year={2022}}
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/core/linalg.hpp"
#include "fragile/core/tensor.hpp"
#include "fragile/quant/hessian.hpp"
#include "fragile/quant/quantizer.hpp"
#include "fragile/quant/result.hpp"
#include "fragile/quant/rtn.hpp"
#include "fragile/quant/spec.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

namespace fragile::quant {

/// Upper Cholesky factor U of H^-1 (U^T U = H^-1) for a symmetric positive definite H.
/// Throws NumericError (naming `what`) if H is not positive definite.
inline MatrixF inverse_cholesky_upper(const Eigen::Ref<const MatrixF>& h, const std::string& what) {
  const Index n = h.rows();
  MatrixF m = h.reverse();  // J H J
  require<NumericError>(linalg::cholesky_lower_in_place(m),
                        "{}: the damped Hessian ({}, {}) is not positive definite; increase the "
                        "damping",
                        what, n, n);
  m.triangularView<Eigen::StrictlyUpper>().setZero();
  linalg::invert_lower_in_place(m);
  require<NumericError>(m.allFinite(), "{}: inverting the Hessian's Cholesky factor gave NaN/Inf",
                        what);
  return m.reverse();  // J M^-1 J, upper triangular
}

/// GPTQ hyperparameters (the reference's defaults).
struct Gptq {
  static constexpr Needs needs = Needs::kHessian;

  int block_size = 128;           // lazy-batch width
  double damp = 0.01;             // fraction of mean(diag H) added to the diagonal
  bool act_order = false;         // quantize columns by decreasing H_ii (implies static groups)
  bool static_groups = false;     // group grids from the original W

  /// Per-layer working set of one quantize() call.
  struct State {
    MatrixF w;                    // (out, in) working copy, columns in processing order
    MatrixF u;                    // (in, in) upper Cholesky factor of the damped H^-1, same order
    std::vector<Index> perm;      // processing position -> original column
    std::vector<bool> dead;       // original columns with H_ii = 0
  };

  [[nodiscard]] QuantizedWeight quantize(WeightRef w, const QuantSpec& spec,
                                         const LayerCapture& capture) const {
    check_inputs("Gptq", w, spec, capture, needs);
    require<ArgumentError>(block_size >= 1, "Gptq{}: block_size = {}, expected >= 1",
                           capture.label(), block_size);
    require<ArgumentError>(damp >= 0.0, "Gptq{}: damp = {}, expected >= 0", capture.label(), damp);
    if (const HessianAccumulator* h = capture.hessian()) return run(w, spec, h->hessian(), capture);
    HessianAccumulator acc(w.cols(), capture.name());
    acc.add(capture.activations());
    return run(w, spec, acc.hessian(), capture);
  }

  /// GPTQ with an explicit Hessian H (in, in).
  [[nodiscard]] QuantizedWeight quantize_with_hessian(WeightRef w, const QuantSpec& spec,
                                                      const Eigen::Ref<const MatrixF>& h,
                                                      const std::string& name = {}) const {
    LayerCapture capture(name);
    check_inputs("Gptq", w, spec, capture, Needs::kWeights);
    require<ShapeError>(h.rows() == w.cols() && h.cols() == w.cols(),
                        "Gptq{}: Hessian is ({}, {}) but the weight is ({}, {}); expected ({}, {})",
                        capture.label(), h.rows(), h.cols(), w.rows(), w.cols(), w.cols(),
                        w.cols());
    return run(w, spec, h, capture);
  }

 private:
  QuantizedWeight run(WeightRef w_in, const QuantSpec& spec, const Eigen::Ref<const MatrixF>& h_in,
                      const LayerCapture& capture) const {
    const std::string what = "Gptq" + capture.label();
    require<NumericError>(h_in.allFinite(), "{}: Hessian holds NaN or Inf", what);
    const Index rows = w_in.rows(), n = w_in.cols();
    QuantizedWeight q(rows, n, spec);
    const GroupLayout& groups = q.groups;
    const bool per_channel = groups.num_groups == 1;
    const bool static_grids = !per_channel && (static_groups || act_order);
    const auto maxq = static_cast<float>(spec.max_code());

    State st;
    st.w = w_in;
    MatrixF h = h_in;
    // Per-channel grids come from W before the dead-column fix (as in the reference).
    if (per_channel) {
      for (Index r = 0; r < rows; ++r) {
        const GridParams p = find_params(st.w.row(r).data(), n, spec);
        q.scales(r, 0) = p.scale;
        q.zeros(r, 0) = p.zero;
      }
    }
    st.dead.assign(static_cast<std::size_t>(n), false);
    for (Index i = 0; i < n; ++i) {
      if (h(i, i) == 0.0f) {
        st.dead[static_cast<std::size_t>(i)] = true;
        h(i, i) = 1.0f;
        st.w.col(i).setZero();
      }
    }
    if (static_grids) {
      for (Index r = 0; r < rows; ++r)
        for (Index g = 0; g < groups.num_groups; ++g) {
          const GridParams p = find_params(st.w.row(r).data() + groups.begin(g), groups.width(g), spec);
          q.scales(r, g) = p.scale;
          q.zeros(r, g) = p.zero;
        }
    }
    st.perm.resize(static_cast<std::size_t>(n));
    std::iota(st.perm.begin(), st.perm.end(), Index{0});
    if (act_order) {
      std::stable_sort(st.perm.begin(), st.perm.end(),
                       [&](Index a, Index b) { return h(a, a) > h(b, b); });
      MatrixF wp(rows, n), hp(n, n);
      for (Index j = 0; j < n; ++j) wp.col(j) = st.w.col(st.perm[static_cast<std::size_t>(j)]);
      for (Index i = 0; i < n; ++i)
        for (Index j = 0; j < n; ++j)
          hp(i, j) = h(st.perm[static_cast<std::size_t>(i)], st.perm[static_cast<std::size_t>(j)]);
      st.w.swap(wp);
      h.swap(hp);
    }
    const float damping = static_cast<float>(damp) * h.diagonal().mean();
    h.diagonal().array() += damping;
    st.u = inverse_cholesky_upper(h, what);
    h.resize(0, 0);

    // codes in original column order, one byte each until packing.
    std::vector<std::uint8_t> codes(static_cast<std::size_t>(rows * n));
    const Index bs = block_size;
    MatrixF err(rows, std::min(bs, n));
    // Per-row losses summed in row order at the end (an OpenMP reduction adds the threads'
    // partial sums in the order they finish: the loss would change from run to run).
    std::vector<double> row_losses(static_cast<std::size_t>(rows), 0.0);
    for (Index i1 = 0; i1 < n; i1 += bs) {
      const Index i2 = std::min(i1 + bs, n), count = i2 - i1;
      // Rows are independent inside a block: each thread runs whole rows through it.
#pragma omp parallel if (rows * count * count > (1 << 21))
      {
        std::vector<float> w1(static_cast<std::size_t>(count));
#pragma omp for schedule(static)
        for (Index r = 0; r < rows; ++r) {
          float* wr = st.w.row(r).data();
          std::copy(wr + i1, wr + i2, w1.begin());
          double row_loss = 0.0;
          for (Index i = 0; i < count; ++i) {
            const Index col = i1 + i;
            const Index orig = st.perm[static_cast<std::size_t>(col)];
            Index g = 0;
            if (!per_channel) {
              if (static_grids) {
                g = groups.group_of(orig);
              } else {
                g = groups.group_of(col);
                if (col == groups.begin(g)) {
                  // From W at the start of this block (the reference reads W, not W1).
                  const GridParams p = find_params(wr + col, groups.width(g), spec);
                  q.scales(r, g) = p.scale;
                  q.zeros(r, g) = p.zero;
                }
              }
            }
            const float s = q.scales(r, g), z = q.zeros(r, g);
            const float x = w1[static_cast<std::size_t>(i)];
            const float code = quantize_code(x, s, z, maxq);
            const float qv = s * (code - z);
            codes[static_cast<std::size_t>(r * n + orig)] = static_cast<std::uint8_t>(code);
            const float d = st.u(col, col);
            const float diff = x - qv;
            row_loss += static_cast<double>(diff * diff / (d * d));
            const float e = diff / d;
            err(r, i) = e;
            const float* urow = st.u.row(col).data();
            for (Index j = i + 1; j < count; ++j) w1[static_cast<std::size_t>(j)] -= e * urow[i1 + j];
          }
          row_losses[static_cast<std::size_t>(r)] += row_loss;
        }
      }
      if (i2 < n) {
        linalg::multiply_add(-1.0f, err.leftCols(count), st.u.block(i1, i2, count, n - i2),
                             st.w.rightCols(n - i2));
      }
    }
    for (Index r = 0; r < rows; ++r) q.codes.pack_row(r, codes.data() + r * n);
    double loss = 0.0;
    for (double l : row_losses) loss += l;
    q.loss = loss / 2.0;
    q.loss_kind = LossKind::kGptqObs;
    return q;
  }
};

}  // namespace fragile::quant
