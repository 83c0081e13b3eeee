// SwiGLU gating of the Llama MLP (Shazeer 2020, "GLU Variants Improve Transformer"):
//   down( silu(gate(x)) * up(x) ),  silu(z) = z * sigmoid(z).
// The three projections are linear layers (layers/linear.hpp); this header holds the elementwise
// part: thrust spreads fixed-size chunks over the OMP device system's threads and each chunk
// runs Eigen's vectorised exp. Shapes: gate, up, h, dh, dgate, dup: (N, I), flattened to `count`.
#pragma once

#include "fragile/backend/cpu/gemm.hpp"

#include <Eigen/Core>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>

#include <algorithm>
#include <cstddef>

namespace fragile::backend::cpu_kernels {

/// Elements per thrust work item.
inline constexpr std::size_t kSwigluChunk = 4096;

/// Chunk k of the elementwise forward: h = silu(gate) * up = gate / (1 + exp(-gate)) * up.
/// A chunk is processed with Eigen's vectorised array kernels; thrust spreads the chunks over
/// the threads of the device system.
struct SwigluForwardChunk {
  float* h;
  const float* gate;
  const float* up;
  std::size_t count;
  void operator()(std::size_t k) const {
    const std::size_t b = k * kSwigluChunk, n = std::min(kSwigluChunk, count - b);
    using A = Eigen::Map<const Eigen::ArrayXf>;
    const A g(gate + b, static_cast<Eigen::Index>(n)), u(up + b, static_cast<Eigen::Index>(n));
    Eigen::Map<Eigen::ArrayXf>(h + b, static_cast<Eigen::Index>(n)) = g / (1.0f + (-g).exp()) * u;
  }
};

/// Chunk k of the backward: dgate = dh * up * silu'(gate), dup = dh * silu(gate), with
/// silu'(z) = s (1 + z (1 - s)), s = sigmoid(z).
struct SwigluBackwardChunk {
  float* dgate;
  float* dup;
  const float* dh;
  const float* gate;
  const float* up;
  std::size_t count;
  void operator()(std::size_t k) const {
    const std::size_t b = k * kSwigluChunk, n = std::min(kSwigluChunk, count - b);
    const auto N = static_cast<Eigen::Index>(n);
    using A = Eigen::Map<const Eigen::ArrayXf>;
    const A g(gate + b, N), u(up + b, N), d(dh + b, N);
    const Eigen::ArrayXf sig = 1.0f / (1.0f + (-g).exp());
    Eigen::Map<Eigen::ArrayXf>(dup + b, N) = d * g * sig;
    Eigen::Map<Eigen::ArrayXf>(dgate + b, N) = d * u * (sig * (1.0f + g * (1.0f - sig)));
  }
};

struct CpuSwiglu {
/// h = silu(gate) * up over `count` elements.
static void swiglu_forward(float* h, const float* gate, const float* up, std::size_t count) {
  const std::size_t chunks = (count + kSwigluChunk - 1) / kSwigluChunk;
  thrust::for_each(CpuGemm::policy(), thrust::counting_iterator<std::size_t>(0),
                   thrust::counting_iterator<std::size_t>(chunks),
                   SwigluForwardChunk{h, gate, up, count});
}

/// dgate, dup from dh (all `count` elements; dgate/dup are overwritten).
static void swiglu_backward(float* dgate, float* dup, const float* dh, const float* gate,
                            const float* up, std::size_t count) {
  const std::size_t chunks = (count + kSwigluChunk - 1) / kSwigluChunk;
  thrust::for_each(CpuGemm::policy(), thrust::counting_iterator<std::size_t>(0),
                   thrust::counting_iterator<std::size_t>(chunks),
                   SwigluBackwardChunk{dgate, dup, dh, gate, up, count});
}

};

}  // namespace fragile::backend::cpu_kernels
