# CTest driver (cmake -P): checkpoint_tool saves a checkpoint with SAVE_NP ranks, then
# verifies it bit for bit with LOAD_NP ranks (another mpirun: one world size per job).
# When SAVE_NP == LOAD_NP, h5py also reads the SAVE_NP-shard checkpoint through its
# virtual datasets, from a working directory other than the checkpoint's.
# Variables: MPIEXEC NP_FLAG TOOL SAVE_NP LOAD_NP WORK PYTHON SCRIPT.

function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (exit ${rc}): ${ARGN}")
  endif()
endfunction()

file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/elsewhere)
# Seeds alternate the optimizer (odd: AdamW, even: SGD) across the N -> M pairs.
math(EXPR seed "7 + ${SAVE_NP} + ${LOAD_NP}")
run("save on ${SAVE_NP} ranks"
    ${MPIEXEC} ${NP_FLAG} ${SAVE_NP} ${TOOL} save ${WORK}/out model_0000002 ${seed})
run("verify on ${LOAD_NP} ranks"
    ${MPIEXEC} ${NP_FLAG} ${LOAD_NP} ${TOOL} verify ${WORK}/out model_0000002 ${seed})

if(SAVE_NP EQUAL LOAD_NP)
  run("expected values" ${TOOL} expected ${seed} ${SAVE_NP} ${WORK}/expected)
  execute_process(COMMAND ${PYTHON} ${SCRIPT} ${WORK}/out/model_0000002
                          ${WORK}/expected/expected.json ${SAVE_NP}
                  WORKING_DIRECTORY ${WORK}/elsewhere RESULT_VARIABLE rc)
  if(rc EQUAL 77)
    message(WARNING "h5py or numpy not importable by ${PYTHON}: h5py check skipped")
  elseif(NOT rc EQUAL 0)
    message(FATAL_ERROR "h5py read of the ${SAVE_NP}-shard checkpoint failed (exit ${rc})")
  endif()
endif()
file(REMOVE_RECURSE ${WORK})
