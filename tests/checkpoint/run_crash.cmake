# CTest driver (cmake -P): a real crash inside the commit protocol under mpirun.
# NP ranks save model_a; then saving model_b with DTRAIN_FAULT=POINT on rank RANK
# SIGKILLs that rank (mpirun then ends the job). Afterwards: last_checkpoint still names
# model_a, model_a's files are unchanged, a resume loads model_a bit for bit, every
# visible directory is a complete checkpoint, and the next save works and cleans up.
# With ASYNC=1 model_b is saved with save_async (the crash then happens on the
# background writer's thread, or in the commit at the end).
# Variables: MPIEXEC NP_FLAG TOOL NP POINT RANK WORK [ASYNC].

function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (exit ${rc}): ${ARGN}")
  endif()
endfunction()

function(hash_files dir out)
  file(GLOB_RECURSE files RELATIVE ${dir} ${dir}/*)
  list(SORT files)
  set(acc "")
  foreach(f ${files})
    file(SHA256 ${dir}/${f} h)
    string(APPEND acc "${f}=${h};")
  endforeach()
  set(${out} "${acc}" PARENT_SCOPE)
endfunction()

set(save_b save)
if(ASYNC)
  set(save_b save_async)
endif()
file(REMOVE_RECURSE ${WORK})
set(out ${WORK}/out)
run("save model_a" ${MPIEXEC} ${NP_FLAG} ${NP} ${TOOL} save ${out} model_a 21)
hash_files(${out}/model_a before)

execute_process(
  COMMAND ${CMAKE_COMMAND} -E env DTRAIN_FAULT=${POINT} DTRAIN_FAULT_RANK=${RANK}
          ${MPIEXEC} ${NP_FLAG} ${NP} ${TOOL} ${save_b} ${out} model_b 22
  RESULT_VARIABLE rc OUTPUT_VARIABLE stdout ERROR_VARIABLE stderr)
if(rc EQUAL 0)
  message(FATAL_ERROR "the save with DTRAIN_FAULT=${POINT} on rank ${RANK} succeeded")
endif()
if(NOT stderr MATCHES "injected crash at ${POINT} \\(rank ${RANK}\\)")
  message(FATAL_ERROR "no 'injected crash at ${POINT}' in the job's output:\n${stderr}")
endif()

file(READ ${out}/last_checkpoint last)
string(STRIP "${last}" last)
if(NOT last STREQUAL "model_a")
  message(FATAL_ERROR "last_checkpoint names '${last}' after the crash, expected model_a")
endif()
hash_files(${out}/model_a after)
if(NOT before STREQUAL after)
  message(FATAL_ERROR "model_a changed during the crashed save:\n${before}\n${after}")
endif()
if(EXISTS ${out}/model_b)
  message(FATAL_ERROR "model_b is visible although the save crashed before its rename")
endif()
# 'resume' also fails on any visible directory without checkpoint.h5.
run("resume after the crash" ${MPIEXEC} ${NP_FLAG} ${NP} ${TOOL} resume ${out} 21 model_a)

# The next save commits and removes the crashed save's hidden leftovers.
run("save model_c" ${MPIEXEC} ${NP_FLAG} ${NP} ${TOOL} save ${out} model_c 23)
file(READ ${out}/last_checkpoint last)
string(STRIP "${last}" last)
if(NOT last STREQUAL "model_c")
  message(FATAL_ERROR "last_checkpoint names '${last}' after saving model_c")
endif()
file(GLOB leftovers LIST_DIRECTORIES true ${out}/.model_b*)
if(leftovers)
  message(FATAL_ERROR "leftovers of the crashed save remain: ${leftovers}")
endif()
set(save_b save)
if(ASYNC)
  set(save_b save_async)
endif()
file(REMOVE_RECURSE ${WORK})
