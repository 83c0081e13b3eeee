# Precompiled third-party headers for fragile's own tests, examples and benchmarks
# (cmake/precompiled_headers.hpp lists them). Each group of targets with the same compile
# settings builds one precompiled header and the rest of the group reuses it.
option(FRAGILE_PRECOMPILE_HEADERS "Precompile the third-party headers of fragile's own targets" ON)

# fragile_precompile_headers(<owner> <target> [<header>...]): <owner> builds the precompiled
# header (with the extra <header>s); any other <target> of its group reuses it.
function(fragile_precompile_headers owner target)
  if(NOT FRAGILE_PRECOMPILE_HEADERS)
    return()
  endif()
  if(owner STREQUAL target)
    target_precompile_headers(${target} PRIVATE
      ${PROJECT_SOURCE_DIR}/cmake/precompiled_headers.hpp ${ARGN})
  else()
    target_precompile_headers(${target} REUSE_FROM ${owner})
  endif()
endfunction()
