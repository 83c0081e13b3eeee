# Proves that fragile can be consumed (1) through find_package(fragile CONFIG REQUIRED) from
# an install prefix and (2) through add_subdirectory. Run by ctest with -P.
foreach(v FRAGILE_SOURCE_DIR WORK_DIR)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "run_consumer_test.cmake: -D${v}=... is required")
  endif()
endforeach()
set(compiler_arg "")
if(DEFINED CMAKE_CXX_COMPILER)
  set(compiler_arg "-DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}")
endif()
file(REMOVE_RECURSE ${WORK_DIR})

function(run_step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer test: ${what} failed (${rc})\n${out}\n${err}")
  endif()
  message(STATUS "consumer test: ${what}: ok")
endfunction()

# 1. install fragile into a prefix, then find_package it.
run_step("configure fragile for install" ${CMAKE_COMMAND} -S ${FRAGILE_SOURCE_DIR}
  -B ${WORK_DIR}/fragile-build -DCMAKE_INSTALL_PREFIX=${WORK_DIR}/prefix
  -DFRAGILE_BUILD_TESTS=OFF -DFRAGILE_BUILD_EXAMPLES=OFF -DFRAGILE_BUILD_BENCH=OFF ${compiler_arg})
run_step("install fragile" ${CMAKE_COMMAND} --install ${WORK_DIR}/fragile-build)
run_step("configure consumer (find_package)" ${CMAKE_COMMAND}
  -S ${CMAKE_CURRENT_LIST_DIR}/project -B ${WORK_DIR}/consumer-find
  -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix -DCMAKE_BUILD_TYPE=Release ${compiler_arg})
run_step("build consumer (find_package)" ${CMAKE_COMMAND} --build ${WORK_DIR}/consumer-find)
run_step("run consumer (find_package)" ${WORK_DIR}/consumer-find/fragile_consumer)

# 2. add_subdirectory of the source tree.
run_step("configure consumer (add_subdirectory)" ${CMAKE_COMMAND}
  -S ${CMAKE_CURRENT_LIST_DIR}/project -B ${WORK_DIR}/consumer-subdir
  -DFRAGILE_CONSUMER_SUBDIR=${FRAGILE_SOURCE_DIR} -DCMAKE_BUILD_TYPE=Release ${compiler_arg})
run_step("build consumer (add_subdirectory)" ${CMAKE_COMMAND} --build ${WORK_DIR}/consumer-subdir)
run_step("run consumer (add_subdirectory)" ${WORK_DIR}/consumer-subdir/fragile_consumer)
