#include "support/test_data.hpp"

#include <fragile/backend/cpu.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include <vector>

#if defined(_OPENMP)
TEST_CASE("cpu gemm: a product too small to split leaves OpenMP's thread count alone",
          "[backend][cpu]") {
  // OpenBLAS's OpenMP build implements openblas_set_num_threads with omp_set_num_threads:
  // called outside a parallel region, it would make every later OpenMP region single-threaded.
  const int threads = omp_get_max_threads();
  omp_set_num_threads(2);
  const std::vector<float> a(4 * 3, 1.0f), b(3 * 5, 2.0f);
  std::vector<float> c(4 * 5, 0.0f);
  using fragile::backend::Trans;
  fragile::backend::Ops<fragile::cpu>::gemm(Trans::kN, Trans::kN, 4, 5, 3, 1.0f, a.data(), 3,
                                            b.data(), 5, 0.0f, c.data(), 5);
  CHECK(c[19] == 6.0f);
  CHECK(omp_get_max_threads() == 2);
  int team = 0;
#pragma omp parallel
  {
#pragma omp single
    team = omp_get_num_threads();
  }
  CHECK(team == 2);
  omp_set_num_threads(threads);
}
#endif
