// The Backend concept: what the transformer runtime needs from a compute backend.
//
// A backend is a tag type (fragile::cpu, later fragile::cuda) plus a specialisation of
// backend::Ops<Tag> (CUTLASS-style tag dispatch). The model code is written once against
//   typename B::template Buffer<T>          owning storage in the backend's memory
//   backend::Ops<B>::gemm(...)              row-major GEMM (Eigen on the CPU, cuBLAS on a GPU)
//   backend::Ops<B>::synchronize()          wait for queued work
// and against layer kernels that take the tag as their first argument (model/layers/*.hpp), so a
// new backend adds overloads for its tag and never touches model/transformer.hpp.
#pragma once

#include <concepts>
#include <cstddef>
#include <string_view>

namespace fragile::backend {

/// Whether a GEMM operand is used as stored or transposed.
enum class Trans { kN, kT };

/// Backend operations. The unspecialised template names what is missing.
template <class B>
struct Ops {
  static_assert(sizeof(B) == 0,
                "fragile::backend::Ops<B> has no specialisation for this backend tag: include "
                "<fragile/backend/cpu.hpp> (fragile::cpu) or the CUDA backend header");
};

/// A compute backend tag with its operations.
template <class B>
concept Backend = requires {
  { B::name } -> std::convertible_to<std::string_view>;
  typename B::template Buffer<float>;
} && requires(Trans t, std::size_t n, float a, const float* x, float* y) {
  // C (m, n) = alpha * op(A) (m, k) * op(B) (k, n) + beta * C, all row-major with leading dims.
  Ops<B>::gemm(t, t, n, n, n, a, x, n, x, n, a, y, n);
  Ops<B>::synchronize();
};

}  // namespace fragile::backend
