#include "support/test_data.hpp"

#include <fragile/core/elementwise.hpp>
#include <fragile/core/tensor.hpp>

#include <cmath>
#include <limits>
#include <vector>

TEST_CASE("Eigen maps alias xtensor storage row-major") {
  fragile::Tensor<2> t({2, 3});
  for (std::size_t i = 0; i < 6; ++i) t.data()[i] = static_cast<float>(i);
  auto m = fragile::as_matrix(t);
  CHECK(m.rows() == 2);
  CHECK(m.cols() == 3);
  CHECK(m(1, 0) == 3.0f);  // row-major: second row starts at element 3
  m(0, 2) = 42.0f;
  CHECK(t(0, 2) == 42.0f);  // no copy
  const fragile::Tensor<2>& ct = t;
  CHECK(fragile::as_matrix(ct)(0, 2) == 42.0f);
}

TEST_CASE("as_rows flattens leading axes") {
  fragile::Tensor<3> t({2, 4, 5});
  t.fill(1.0f);
  t(1, 3, 4) = 7.0f;
  auto m = fragile::as_rows(t);
  CHECK(m.rows() == 8);
  CHECK(m.cols() == 5);
  CHECK(m(7, 4) == 7.0f);
}

TEST_CASE("require_shape names the tensor and both shapes") {
  fragile::Tensor<2> t({2, 3});
  CHECK_NOTHROW(fragile::require_shape<2>(t, {2, 3}, "w"));
  CHECK_THROWS_WITH(fragile::require_shape<2>(t, {3, 2}, "layer.weight"),
                    Catch::Contains("layer.weight") && Catch::Contains("[2, 3]") &&
                        Catch::Contains("[3, 2]"));
}

TEST_CASE("thrust elementwise helpers on the build's device system") {
  std::vector<float> a(10001), b(10001), out(10001);
  double expected = 0, norm = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    a[i] = static_cast<float>(i % 17) * 0.25f;
    b[i] = static_cast<float>(i % 5);
    expected += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    norm += double(a[i]) * a[i];
  }
  namespace ew = fragile::elementwise;
  CHECK(ew::squared_distance(thrust::host, a.data(), b.data(), a.size()) == Approx(expected));
  CHECK(ew::squared_norm(thrust::host, a.data(), a.size()) == Approx(norm));
  ew::transform(thrust::host, a.data(), out.data(), a.size(), ew::Scale{2.0f});
  CHECK(out[16] == 8.0f);
  a[3] = std::numeric_limits<float>::quiet_NaN();
  a[9] = std::numeric_limits<float>::infinity();
  CHECK(ew::count_nonfinite(thrust::host, a.data(), a.size()) == 2);
#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP
  // The OMP device system accepts host pointers directly.
  CHECK(ew::squared_norm(thrust::device, b.data(), b.size()) ==
        Approx(ew::squared_norm(thrust::host, b.data(), b.size())));
#endif
}
