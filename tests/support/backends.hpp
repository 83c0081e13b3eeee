// The backends every backend-templated test runs on, and how closely each one's results must
// match a reference computed another way (Hugging Face goldens, finite differences, the other
// backend). A new backend adds itself to FRAGILE_TEST_BACKENDS and states its tolerance scale
// here; the whole suite then runs on it.
#pragma once

#include <fragile/backend/cpu.hpp>
#include <fragile/backend/reference.hpp>

#define FRAGILE_TEST_BACKENDS fragile::cpu, fragile::reference

namespace fragile::test {

/// Multiplies a test's f32 tolerance for backend B (1 for f32 kernels; more for TF32/bf16).
template <class B>
struct Tolerance {
  static constexpr double scale = 1.0;
};

/// `base` scaled for backend B.
template <class B>
constexpr double tolerance(double base) noexcept {
  return base * Tolerance<B>::scale;
}

}  // namespace fragile::test
