// SwiGLU gating of the Llama MLP (Shazeer 2020, "GLU Variants Improve Transformer"):
//   down( silu(gate(x)) * up(x) ),  silu(z) = z * sigmoid(z).
// The three projections are linear layers (layers/linear.hpp); this header holds the elementwise
// part, written as thrust transforms so that the same functors run on the OMP device system and,
// in a CUDA build, on the GPU. Shapes: gate, up, h, dh, dgate, dup: (N, I), flattened to `count`.
#pragma once

#include "fragile/backend/cpu.hpp"
#include "fragile/core/elementwise.hpp"

#include <thrust/for_each.h>
#include <thrust/iterator/zip_iterator.h>
#include <thrust/transform.h>
#include <thrust/tuple.h>

#include <cmath>
#include <cstddef>

namespace fragile::model::layers {

/// silu(gate) * up
struct SwigluForward {
  FRAGILE_HOST_DEVICE float operator()(const thrust::tuple<float, float>& gu) const {
    const float g = thrust::get<0>(gu);
    return g / (1.0f + std::exp(-g)) * thrust::get<1>(gu);
  }
};

/// (dh, gate, up, dgate&, dup&): dgate = dh * up * silu'(gate), dup = dh * silu(gate).
struct SwigluBackward {
  template <class Tuple>
  FRAGILE_HOST_DEVICE void operator()(Tuple t) const {
    const float dh = thrust::get<0>(t);
    const float g = thrust::get<1>(t);
    const float u = thrust::get<2>(t);
    const float sig = 1.0f / (1.0f + std::exp(-g));
    const float silu = g * sig;
    thrust::get<3>(t) = dh * u * (sig * (1.0f + g * (1.0f - sig)));
    thrust::get<4>(t) = dh * silu;
  }
};

/// h = silu(gate) * up over `count` elements.
inline void swiglu_forward(cpu, float* h, const float* gate, const float* up, std::size_t count) {
  auto first = thrust::make_zip_iterator(thrust::make_tuple(gate, up));
  thrust::transform(backend::Ops<cpu>::policy(), first, first + count, h, SwigluForward{});
}

/// dgate, dup from dh (all `count` elements; dgate/dup are overwritten).
inline void swiglu_backward(cpu, float* dgate, float* dup, const float* dh, const float* gate,
                            const float* up, std::size_t count) {
  auto first = thrust::make_zip_iterator(thrust::make_tuple(dh, gate, up, dgate, dup));
  thrust::for_each(backend::Ops<cpu>::policy(), first, first + count, SwigluBackward{});
}

}  // namespace fragile::model::layers
