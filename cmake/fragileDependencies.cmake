# Finds fragile's dependencies and exposes each as an IMPORTED target, so that the
# exported fragile::fragile can name them both in the build tree and from an install prefix.
# Used by the top-level CMakeLists.txt and by the installed fragileConfig.cmake.
include_guard(GLOBAL)
include(CMakeFindDependencyMacro)

if(NOT DEFINED FRAGILE_ENABLE_OPENMP)
  set(FRAGILE_ENABLE_OPENMP ON)
endif()

find_dependency(Eigen3 3.4 NO_MODULE)
find_dependency(xtl)
find_dependency(xtensor)
find_dependency(nlohmann_json 3)
find_dependency(fmt)
find_dependency(Boost 1.74)          # header-only: Boost.Math
if(FRAGILE_ENABLE_OPENMP)
  find_dependency(OpenMP COMPONENTS CXX)
endif()

# PCRE2 (UTF-8 code units): Unicode-aware pre-tokenizer regexes.
if(NOT TARGET fragile::pcre2)
  find_path(FRAGILE_PCRE2_INCLUDE_DIR pcre2.h)
  find_library(FRAGILE_PCRE2_LIBRARY NAMES pcre2-8)
  if(NOT FRAGILE_PCRE2_INCLUDE_DIR OR NOT FRAGILE_PCRE2_LIBRARY)
    message(FATAL_ERROR "fragile: PCRE2 (libpcre2-dev) not found; run scripts/install-deps.sh")
  endif()
  add_library(fragile::pcre2 INTERFACE IMPORTED)
  set_target_properties(fragile::pcre2 PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${FRAGILE_PCRE2_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES "${FRAGILE_PCRE2_LIBRARY}"
    INTERFACE_COMPILE_DEFINITIONS "PCRE2_CODE_UNIT_WIDTH=8")
endif()

# xxHash (libxxhash-dev), header-only (XXH_INLINE_ALL): content hashes of checkpoints and data
# for run fingerprints, at memory speed on multi-gigabyte files.
if(NOT TARGET fragile::xxhash)
  find_path(FRAGILE_XXHASH_INCLUDE_DIR xxhash.h)
  if(NOT FRAGILE_XXHASH_INCLUDE_DIR)
    message(FATAL_ERROR "fragile: xxHash (libxxhash-dev) not found; run scripts/install-deps.sh")
  endif()
  add_library(fragile::xxhash INTERFACE IMPORTED)
  set_target_properties(fragile::xxhash PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${FRAGILE_XXHASH_INCLUDE_DIR}")
endif()

# thrust: the CUDA toolkit's CCCL when present, otherwise Debian's libthrust-dev.
# The CPU build runs thrust algorithms on the OpenMP device system (CPP without OpenMP).
if(NOT TARGET fragile::thrust)
  find_path(FRAGILE_THRUST_INCLUDE_DIR thrust/version.h
    HINTS ENV CUDA_PATH ENV CUDA_HOME /usr/local/cuda
    PATH_SUFFIXES include/cccl include
    PATHS /usr/include)
  if(NOT FRAGILE_THRUST_INCLUDE_DIR)
    message(FATAL_ERROR "fragile: thrust not found (CUDA toolkit CCCL or libthrust-dev)")
  endif()
  add_library(fragile::thrust INTERFACE IMPORTED)
  set_target_properties(fragile::thrust PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${FRAGILE_THRUST_INCLUDE_DIR}")
  if(FRAGILE_ENABLE_OPENMP)
    set_property(TARGET fragile::thrust PROPERTY INTERFACE_COMPILE_DEFINITIONS
      "$<$<NOT:$<COMPILE_LANGUAGE:CUDA>>:THRUST_DEVICE_SYSTEM=THRUST_DEVICE_SYSTEM_OMP>")
    set_property(TARGET fragile::thrust PROPERTY INTERFACE_LINK_LIBRARIES OpenMP::OpenMP_CXX)
  else()
    set_property(TARGET fragile::thrust PROPERTY INTERFACE_COMPILE_DEFINITIONS
      "$<$<NOT:$<COMPILE_LANGUAGE:CUDA>>:THRUST_DEVICE_SYSTEM=THRUST_DEVICE_SYSTEM_CPP>")
  endif()
endif()

# OpenBLAS's sgemm (Debian's libopenblas-openmp-dev) for the CPU backend's GEMM: 1.2-1.4x
# Eigen's on the runtime's shapes. Without it the CPU backend uses Eigen's GEMM.
if(NOT DEFINED FRAGILE_USE_OPENBLAS)
  set(FRAGILE_USE_OPENBLAS ON)
endif()
if(FRAGILE_USE_OPENBLAS AND NOT TARGET fragile::openblas)
  find_path(FRAGILE_OPENBLAS_INCLUDE_DIR cblas.h PATH_SUFFIXES openblas-openmp openblas
    HINTS /usr/include/x86_64-linux-gnu /usr/include/aarch64-linux-gnu)
  find_library(FRAGILE_OPENBLAS_LIBRARY NAMES openblas)
  if(FRAGILE_OPENBLAS_INCLUDE_DIR AND FRAGILE_OPENBLAS_LIBRARY)
    add_library(fragile::openblas INTERFACE IMPORTED)
    set_target_properties(fragile::openblas PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${FRAGILE_OPENBLAS_INCLUDE_DIR}"
      INTERFACE_LINK_LIBRARIES "${FRAGILE_OPENBLAS_LIBRARY}"
      INTERFACE_COMPILE_DEFINITIONS "FRAGILE_WITH_OPENBLAS=1")
  else()
    message(WARNING "fragile: OpenBLAS (libopenblas-openmp-dev) not found; the CPU backend "
                    "uses Eigen's slower GEMM (scripts/install-deps.sh installs it)")
  endif()
endif()

if(NOT TARGET fragile::deps)
  add_library(fragile::deps INTERFACE IMPORTED)
  set(_fragile_dep_targets Eigen3::Eigen xtensor nlohmann_json::nlohmann_json fmt::fmt
      Boost::headers fragile::pcre2 fragile::xxhash fragile::thrust)
  if(FRAGILE_ENABLE_OPENMP)
    list(APPEND _fragile_dep_targets OpenMP::OpenMP_CXX)
  endif()
  if(TARGET fragile::openblas)
    list(APPEND _fragile_dep_targets fragile::openblas)
  endif()
  set_target_properties(fragile::deps PROPERTIES INTERFACE_LINK_LIBRARIES "${_fragile_dep_targets}")
endif()
