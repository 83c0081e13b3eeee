// Elementwise maps and reductions written once against thrust algorithms. The CPU build runs
// them on thrust's OpenMP device system (THRUST_DEVICE_SYSTEM=OMP, set by the fragile target);
// a CUDA build compiles the same functors for the GPU. Functors are plain structs marked
// FRAGILE_HOST_DEVICE so both compilers accept them.
#pragma once

#include <thrust/execution_policy.h>
#include <thrust/functional.h>
#include <thrust/iterator/zip_iterator.h>
#include <thrust/transform.h>
#include <thrust/transform_reduce.h>

#include <cmath>
#include <cstddef>

#if defined(__CUDACC__)
#define FRAGILE_HOST_DEVICE __host__ __device__
#else
#define FRAGILE_HOST_DEVICE
#endif

namespace fragile::elementwise {



/// y = a * x
struct Scale {
  float a;
  FRAGILE_HOST_DEVICE float operator()(float x) const { return a * x; }
};

/// (a - b)^2 accumulated in double.
struct SquaredDifference {
  FRAGILE_HOST_DEVICE double operator()(const thrust::tuple<float, float>& ab) const {
    const double d = static_cast<double>(thrust::get<0>(ab)) - static_cast<double>(thrust::get<1>(ab));
    return d * d;
  }
};

/// x^2 accumulated in double.
struct Square {
  FRAGILE_HOST_DEVICE double operator()(float x) const {
    return static_cast<double>(x) * static_cast<double>(x);
  }
};

/// 1 when the value is NaN or +-Inf.
struct IsNonFinite {
  FRAGILE_HOST_DEVICE std::size_t operator()(float x) const { return std::isfinite(x) ? 0u : 1u; }
};

/// out[i] = f(in[i]) over n elements with the given thrust policy.
template <class Policy, class F>
void transform(Policy&& policy, const float* in, float* out, std::size_t n, F f) {
  thrust::transform(policy, in, in + n, out, f);
}

/// sum_i (a_i - b_i)^2 in double precision.
template <class Policy>
double squared_distance(Policy&& policy, const float* a, const float* b, std::size_t n) {
  auto first = thrust::make_zip_iterator(thrust::make_tuple(a, b));
  return thrust::transform_reduce(policy, first, first + n, SquaredDifference{}, 0.0,
                                  thrust::plus<double>());
}

/// sum_i a_i^2 in double precision.
template <class Policy>
double squared_norm(Policy&& policy, const float* a, std::size_t n) {
  return thrust::transform_reduce(policy, a, a + n, Square{}, 0.0, thrust::plus<double>());
}

/// Number of NaN/Inf values.
template <class Policy>
std::size_t count_nonfinite(Policy&& policy, const float* a, std::size_t n) {
  return thrust::transform_reduce(policy, a, a + n, IsNonFinite{}, std::size_t{0},
                                  thrust::plus<std::size_t>());
}

}  // namespace fragile::elementwise
