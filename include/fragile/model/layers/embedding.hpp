// Token embedding lookup and its backward (scatter-add into the table). Shapes:
//   ids: (N)   table, dtable: (V, C)   out, dout: (N, C)
// Token ids are validated by the caller (Transformer checks them against the vocabulary).
#pragma once

#include "fragile/backend/cpu.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace fragile::model::layers {

inline void embedding_forward(cpu, float* out, const std::int32_t* ids, const float* table,
                              std::size_t n, std::size_t c) {
#pragma omp parallel for schedule(static) if (n * c >= backend::kCpuParallelMin)
  for (std::size_t r = 0; r < n; ++r)
    std::memcpy(out + r * c, table + static_cast<std::size_t>(ids[r]) * c, c * sizeof(float));
}

inline void embedding_backward(cpu, float* dtable, const float* dout, const std::int32_t* ids,
                               std::size_t n, std::size_t c) {
  for (std::size_t r = 0; r < n; ++r) {
    float* row = dtable + static_cast<std::size_t>(ids[r]) * c;
    for (std::size_t j = 0; j < c; ++j) row[j] += dout[r * c + j];
  }
}

}  // namespace fragile::model::layers
