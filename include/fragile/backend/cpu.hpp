// The CPU backend: fragile::cpu. Host memory on 64-byte boundaries; GEMM through OpenBLAS's
// sgemm (or Eigen's) split over OpenMP threads by fragile itself; the other kernels as OpenMP
// loops, Eigen array kernels or thrust on the OMP system. Each family of kernels lives in its
// own header under backend/cpu/; Ops<cpu> gathers them.
#pragma once

#include "fragile/backend/backend.hpp"
#include "fragile/backend/cpu/attention.hpp"
#include "fragile/backend/cpu/elementwise.hpp"
#include "fragile/backend/cpu/gemm.hpp"
#include "fragile/backend/cpu/head.hpp"
#include "fragile/backend/cpu/memory.hpp"
#include "fragile/backend/cpu/norm.hpp"
#include "fragile/backend/cpu/reductions.hpp"
#include "fragile/backend/cpu/rope.hpp"
#include "fragile/backend/cpu/swiglu.hpp"

namespace fragile {

namespace backend {

template <>
struct Ops<cpu> : cpu_kernels::CpuElementwise,
                  cpu_kernels::CpuGemm,
                  cpu_kernels::CpuNorm,
                  cpu_kernels::CpuRope,
                  cpu_kernels::CpuAttention,
                  cpu_kernels::CpuSwiglu,
                  cpu_kernels::CpuHead,
                  cpu_kernels::CpuReductions {};

}  // namespace backend

static_assert(backend::Backend<cpu>, "fragile::cpu must satisfy backend::Backend");

}  // namespace fragile
