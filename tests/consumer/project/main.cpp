// A downstream program: includes fragile and uses it.
#include <fragile/fragile.hpp>

#include <cstdio>

int main() {
  const float x = 1.0f / 3.0f;
  const float back = fragile::bf16_to_f32(fragile::f32_to_bf16(x));
  fragile::Rng rng(42);
  std::printf("fragile consumer: bf16(1/3) = %.8f, first draw = %llu\n", back,
              static_cast<unsigned long long>(rng() % 1000));
  return back > 0.33f && back < 0.34f ? 0 : 1;
}
