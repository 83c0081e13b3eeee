#!/usr/bin/env bash
# Builds fragile (tests, examples, benchmarks, per-header checks) and runs the test suite,
# including the find_package / add_subdirectory consumer test.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --preset default
cmake --build --preset default -j "${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
ctest --preset default -j "${CTEST_PARALLEL_LEVEL:-2}"
