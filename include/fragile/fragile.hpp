// Umbrella header: everything fragile offers. Each header also compiles on its own.
#pragma once

#include "fragile/core/dtype.hpp"
#include "fragile/core/error.hpp"
#include "fragile/core/mapped_file.hpp"
#include "fragile/core/rng.hpp"
#include "fragile/io/tensor_store.hpp"
