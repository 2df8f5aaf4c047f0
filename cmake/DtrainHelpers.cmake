# Helpers shared by every folder: warnings/sanitizer flags, library and test targets.

# INTERFACE target that carries the project's warning and sanitizer flags.
add_library(dtrain_flags INTERFACE)
target_compile_options(dtrain_flags INTERFACE -Wall -Wextra)
if(DTRAIN_SANITIZE)
  target_compile_options(dtrain_flags INTERFACE
    -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  target_link_options(dtrain_flags INTERFACE -fsanitize=address,undefined)
endif()
if(DTRAIN_TSAN)
  target_compile_options(dtrain_flags INTERFACE -fsanitize=thread -fno-omit-frame-pointer)
  target_link_options(dtrain_flags INTERFACE -fsanitize=thread)
endif()
include(CheckCXXSourceCompiles)
set(CMAKE_REQUIRED_LINK_OPTIONS -fuse-ld=gold)
check_cxx_source_compiles("int main(){return 0;}" DTRAIN_HAVE_GOLD)
unset(CMAKE_REQUIRED_LINK_OPTIONS)
if(DTRAIN_HAVE_GOLD AND NOT DTRAIN_SANITIZE AND NOT DTRAIN_TSAN)
  target_link_options(dtrain_flags INTERFACE -fuse-ld=gold)
endif()

# dtrain_add_library(NAME SOURCES ... DEPS ...): library dtrain_NAME, alias dtrain::NAME,
# includes resolved from the repository root ("checkpoint/checkpointer.h").
function(dtrain_add_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(dtrain_${name} ${ARG_SOURCES})
  add_library(dtrain::${name} ALIAS dtrain_${name})
  target_include_directories(dtrain_${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(dtrain_${name} PUBLIC ${ARG_DEPS} PRIVATE dtrain_flags)
endfunction()

# Environment every MPI test needs (root in containers, more ranks than cores, 1 thread/rank).
set(DTRAIN_MPI_TEST_ENV
  OMPI_ALLOW_RUN_AS_ROOT=1
  OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  OMPI_MCA_rmaps_base_oversubscribe=1
  OMPI_MCA_btl_vader_single_copy_mechanism=cma
  OMPI_MCA_mpi_yield_when_idle=1
  OMP_NUM_THREADS=1
  DTRAIN_TEST_SOURCE_DIR=${PROJECT_SOURCE_DIR})

# dtrain_add_test(NAME SOURCES ... DEPS ... [LABELS ...]): a single-process gtest binary.
function(dtrain_add_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main dtrain_flags)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES
    ENVIRONMENT "${DTRAIN_MPI_TEST_ENV}" LABELS "unit;${ARG_LABELS}" TIMEOUT 600)
endfunction()

# dtrain_add_mpi_test(NAME SOURCES ... DEPS ... NP 2 4 [LABELS ...]): a gtest binary with
# tests/mpi_gtest_main.cpp, registered once per rank count as NAME.npN under mpirun.
function(dtrain_add_mpi_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;NP;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES} ${PROJECT_SOURCE_DIR}/tests/mpi_gtest_main.cpp)
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest MPI::MPI_CXX dtrain_flags)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  if(NOT ARG_NP)
    set(ARG_NP 2 4)
  endif()
  foreach(np ${ARG_NP})
    add_test(NAME ${name}.np${np}
      COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np} ${MPIEXEC_PREFLAGS}
              $<TARGET_FILE:${name}> ${MPIEXEC_POSTFLAGS})
    set_tests_properties(${name}.np${np} PROPERTIES
      ENVIRONMENT "${DTRAIN_MPI_TEST_ENV}" LABELS "mpi;${ARG_LABELS}" TIMEOUT 600
      PROCESSORS ${np})
  endforeach()
endfunction()
