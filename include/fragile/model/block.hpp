// One decoder block of the Llama family, forward and backward side by side, written once against
// the backend seam and shared by evaluation, capture and training.
//
// Data flow (row b*T + t is token t of window b; C hidden, I intermediate):
//   x (N, C) -> rmsnorm -> xn1 -> q/k/v_proj (+bias) -> rope(q, k) -> GQA attention -> att
//   x += o_proj(att);  x -> rmsnorm -> xn2 -> gate/up_proj -> h = silu(gate) * up
//   x += down_proj(h)
#pragma once

#include "fragile/backend/backend.hpp"
#include "fragile/core/error.hpp"
#include "fragile/model/config.hpp"
#include "fragile/model/linear.hpp"
#include "fragile/model/linear_registry.hpp"

#include <array>
#include <cstddef>

namespace fragile::model {

/// A block's parameters in backend memory.
template <class B>
struct BlockWeights {
  using Buffer = typename B::template Buffer<float>;
  Buffer attn_norm, mlp_norm;
  std::array<Buffer, std::size(kAllLinearKinds)> w;  ///< indexed by LinearKind
  Buffer bq, bk, bv;                                 ///< empty unless attention_bias

  [[nodiscard]] Buffer& weight(LinearKind k) noexcept { return w[static_cast<std::size_t>(k)]; }
  [[nodiscard]] const Buffer& weight(LinearKind k) const noexcept {
    return w[static_cast<std::size_t>(k)];
  }
  /// The bias of `k`, or null for a layer without one.
  template <class Self>
  static auto* bias_of(Self& self, LinearKind k) noexcept {
    using Ptr = decltype(&self.bq);
    switch (k) {
      case LinearKind::kQ: return &self.bq;
      case LinearKind::kK: return &self.bk;
      case LinearKind::kV: return &self.bv;
      default: return Ptr{nullptr};
    }
  }
};

/// The weights one call of a block uses: the model's or an override's, in backend memory.
struct BlockLinears {
  std::array<const float*, std::size(kAllLinearKinds)> w{};
  const float* bq = nullptr;
  const float* bk = nullptr;
  const float* bv = nullptr;
  [[nodiscard]] const float* operator[](LinearKind k) const noexcept {
    return w[static_cast<std::size_t>(k)];
  }
};

/// The sizes of one call: a batch of `windows` windows of `seq_len` tokens through block `index`.
struct BlockShape {
  std::size_t index = 0;  ///< the block's position in the model
  std::size_t windows = 0, seq_len = 0;
  std::size_t hidden = 0, intermediate = 0, q_dim = 0, kv_dim = 0;
  float eps = 0.0f;
  backend::AttentionShape attention;
  backend::RopeShape rope_q, rope_k;

  [[nodiscard]] std::size_t rows() const noexcept { return windows * seq_len; }
};

/// A block's activations: what the backward needs when saved, the forward's scratch otherwise.
template <class B>
struct BlockActivations {
  using Buffer = typename B::template Buffer<float>;
  Buffer x_in, rstd1, xn1, q, k, v, lse, att, x_mid, rstd2, xn2, gate, up, h;
};

/// The rotary tables of one sequence length, in backend memory.
template <class B>
struct RopeTables {
  typename B::template Buffer<float> cos, sin;
};

/// The forward and backward of one block.
template <class B>
struct Block {
  using Ops = backend::Ops<B>;
  using Buffer = typename B::template Buffer<float>;

  /// NumericError when the residual stream after `stage` holds a NaN or infinity, naming the
  /// block, the stage and the first bad position: a NaN there would otherwise surface only as a
  /// garbage statistic.
  static void require_finite_residual(const float* x, const BlockShape& s, const char* stage) {
    const std::size_t n = s.rows() * s.hidden, bad = Ops::first_non_finite(x, n);
    if (bad == n) return;
    float value = 0.0f;
    Ops::download(&value, x + bad, 1);
    const std::size_t row = bad / s.hidden;
    raise<NumericError>("forward: the hidden state after the {} of block {} (model.layers.{}) is "
                        "not finite ({} at window {} of the batch, position {}): a weight or "
                        "activation overflowed", stage, s.index, s.index, value, row / s.seq_len,
                        row % s.seq_len);
  }

  /// x (N, C) <- the block's output. With `save`, keeps in `a` what backward() needs; otherwise
  /// `a` is scratch. on_x(kind, x) sees each linear layer's input before it is used.
  template <class OnX>
  static void forward(const BlockWeights<B>& bw, const BlockLinears& lin, const BlockShape& s,
                      const RopeTables<B>& rope, float* x, BlockActivations<B>& a, bool save,
                      OnX&& on_x) {
    const std::size_t N = s.rows(), C = s.hidden, I = s.intermediate, qd = s.q_dim,
                      kd = s.kv_dim;
    using L = Linear<B>;
    auto sized = [](Buffer& b, std::size_t n) {
      if (b.size() != n) b.resize(n);
      return b.data();
    };
    if (save) Ops::copy(sized(a.x_in, N * C), x, N * C);
    float* xn1 = sized(a.xn1, N * C);
    Ops::rmsnorm_forward(xn1, save ? sized(a.rstd1, N) : nullptr, x, bw.attn_norm.data(), N, C,
                         s.eps);
    float* q = sized(a.q, N * qd);
    float* k = sized(a.k, N * kd);
    float* v = sized(a.v, N * kd);
    on_x(LinearKind::kQ, xn1);
    on_x(LinearKind::kK, xn1);
    on_x(LinearKind::kV, xn1);
    L::forward(q, xn1, lin[LinearKind::kQ], lin.bq, N, C, qd);
    L::forward(k, xn1, lin[LinearKind::kK], lin.bk, N, C, kd);
    L::forward(v, xn1, lin[LinearKind::kV], lin.bv, N, C, kd);
    Ops::rope_forward(q, rope.cos.data(), rope.sin.data(), s.rope_q);
    Ops::rope_forward(k, rope.cos.data(), rope.sin.data(), s.rope_k);
    float* att = sized(a.att, N * qd);
    float* lse = save ? sized(a.lse, s.windows * s.attention.heads * s.seq_len) : nullptr;
    Ops::attention_forward(att, lse, q, k, v, s.attention);
    on_x(LinearKind::kO, att);
    Ops::gemm(backend::Trans::kN, backend::Trans::kT, N, C, qd, 1.0f, att, qd,
              lin[LinearKind::kO], qd, 1.0f, x, C);
    require_finite_residual(x, s, "attention (self_attn)");

    if (save) Ops::copy(sized(a.x_mid, N * C), x, N * C);
    float* xn2 = save ? sized(a.xn2, N * C) : xn1;  // forward only: xn1 is free again
    Ops::rmsnorm_forward(xn2, save ? sized(a.rstd2, N) : nullptr, x, bw.mlp_norm.data(), N, C,
                         s.eps);
    float* gate = sized(a.gate, N * I);
    float* up = sized(a.up, N * I);
    on_x(LinearKind::kGate, xn2);
    on_x(LinearKind::kUp, xn2);
    L::forward(gate, xn2, lin[LinearKind::kGate], nullptr, N, C, I);
    L::forward(up, xn2, lin[LinearKind::kUp], nullptr, N, C, I);
    // h is recomputed by the backward, so it is never saved: without saving it overwrites gate.
    float* h = save ? sized(a.h, N * I) : gate;
    Ops::swiglu_forward(h, gate, up, N * I);
    on_x(LinearKind::kDown, h);
    Ops::gemm(backend::Trans::kN, backend::Trans::kT, N, C, I, 1.0f, h, I,
              lin[LinearKind::kDown], I, 1.0f, x, C);
    require_finite_residual(x, s, "MLP (mlp)");
    if (save) a.h = Buffer{};
  }

  /// The backward's scratch, sized once per batch and shared by every block.
  struct Scratch {
    Buffer dxn, h, dh, dgate, dup, datt, dq, dk, dv;
    explicit Scratch(const BlockShape& s)
        : dxn(s.rows() * s.hidden), h(s.rows() * s.intermediate), dh(s.rows() * s.intermediate),
          dgate(s.rows() * s.intermediate), dup(s.rows() * s.intermediate),
          datt(s.rows() * s.q_dim), dq(s.rows() * s.q_dim), dk(s.rows() * s.kv_dim),
          dv(s.rows() * s.kv_dim) {}
  };

  /// The norm-weight gradients of a block, or null when not wanted.
  struct NormGrads {
    float* attn_norm = nullptr;
    float* mlp_norm = nullptr;
  };

  /// dx (N, C): dL/d(block output) in, dL/d(block input) out. deliver(kind, x, g) receives
  /// every linear layer's input and output gradient, in backward order. Frees `a` as it goes.
  template <class Deliver>
  static void backward(const BlockWeights<B>& bw, const BlockLinears& lin, const BlockShape& s,
                       const RopeTables<B>& rope, float* dx, BlockActivations<B>& a,
                       Scratch& w, NormGrads ng, Deliver&& deliver) {
    const std::size_t N = s.rows(), C = s.hidden, I = s.intermediate, qd = s.q_dim,
                      kd = s.kv_dim;
    using L = Linear<B>;
    // MLP: dx holds dL/d(block output).
    Ops::swiglu_forward(w.h.data(), a.gate.data(), a.up.data(), N * I);
    deliver(LinearKind::kDown, w.h.data(), dx);
    L::backward_input(w.dh.data(), dx, lin[LinearKind::kDown], N, I, C, false);
    Ops::swiglu_backward(w.dgate.data(), w.dup.data(), w.dh.data(), a.gate.data(), a.up.data(),
                         N * I);
    deliver(LinearKind::kGate, a.xn2.data(), w.dgate.data());
    deliver(LinearKind::kUp, a.xn2.data(), w.dup.data());
    L::backward_input(w.dxn.data(), w.dgate.data(), lin[LinearKind::kGate], N, C, I, false);
    L::backward_input(w.dxn.data(), w.dup.data(), lin[LinearKind::kUp], N, C, I, true);
    Ops::rmsnorm_backward(dx, ng.mlp_norm, w.dxn.data(), a.x_mid.data(), bw.mlp_norm.data(),
                          a.rstd2.data(), N, C, true);
    a.gate = Buffer{};
    a.up = Buffer{};
    // Attention: dx holds dL/d(x_mid).
    deliver(LinearKind::kO, a.att.data(), dx);
    L::backward_input(w.datt.data(), dx, lin[LinearKind::kO], N, qd, C, false);
    Ops::attention_backward(w.dq.data(), w.dk.data(), w.dv.data(), w.datt.data(), a.att.data(),
                            a.lse.data(), a.q.data(), a.k.data(), a.v.data(), s.attention);
    Ops::rope_backward(w.dq.data(), rope.cos.data(), rope.sin.data(), s.rope_q);
    Ops::rope_backward(w.dk.data(), rope.cos.data(), rope.sin.data(), s.rope_k);
    deliver(LinearKind::kQ, a.xn1.data(), w.dq.data());
    deliver(LinearKind::kK, a.xn1.data(), w.dk.data());
    deliver(LinearKind::kV, a.xn1.data(), w.dv.data());
    L::backward_input(w.dxn.data(), w.dq.data(), lin[LinearKind::kQ], N, C, qd, false);
    L::backward_input(w.dxn.data(), w.dk.data(), lin[LinearKind::kK], N, C, kd, true);
    L::backward_input(w.dxn.data(), w.dv.data(), lin[LinearKind::kV], N, C, kd, true);
    Ops::rmsnorm_backward(dx, ng.attn_norm, w.dxn.data(), a.x_in.data(), bw.attn_norm.data(),
                          a.rstd1.data(), N, C, true);
    a = BlockActivations<B>{};
  }
};

}  // namespace fragile::model
