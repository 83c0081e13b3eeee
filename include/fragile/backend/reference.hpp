// The reference backend: fragile::reference. Every kernel is a plain serial loop (no Eigen, no
// OpenMP, no BLAS), written for clarity and accumulated in double, so it is an oracle for the
// optimised backends' kernels.
//
// Its memory counts as device memory: a reference::Buffer has no element access, and host code
// reaches its values only through Ops<reference>::download. A model-side code path that reads
// backend memory directly fails to compile for it, and every transfer path a GPU backend takes
// (weight mirrors, host views of captures) runs in the tests on the CPU.
#pragma once

#include "fragile/backend/backend.hpp"
#include "fragile/backend/reference/ops.hpp"

static_assert(fragile::backend::Backend<fragile::reference>,
              "fragile::reference must satisfy backend::Backend");
