#!/bin/bash
# Plain mpirun over a hostfile, without SLURM: what `dtrain launch` builds, spelled out,
# plus the restart-on-preemption loop a cluster wrapper or cron job can use.
#
#   launcher/slurm/mpirun_example.sh hosts.txt configs/gpt_tiny_synthetic.yaml /shared/runs/gpt
#
# Environment: DTRAIN (default ./build/bin/dtrain), NPROC_PER_NODE (4), OMP_NUM_THREADS
# (cores per rank, 8), MAX_RESTARTS (3). SIGTERM or SIGUSR1 to this script preempts the
# job (saved, exit 75) without a restart; a failure restarts it with --resume.
#
# The same, with restarts handled by dtrain (prints the mpirun command it runs):
#   build/bin/dtrain launch --nnodes 2 --nproc-per-node 4 --hostfile hosts.txt \
#       --max-restarts 3 -- train --config-file CONFIG OUTPUT_DIR DIR
set -uo pipefail

HOSTFILE=${1:?usage: $0 HOSTFILE CONFIG OUTPUT_DIR [KEY VALUE ...]}
CONFIG=${2:?usage: $0 HOSTFILE CONFIG OUTPUT_DIR [KEY VALUE ...]}
OUTPUT_DIR=${3:?usage: $0 HOSTFILE CONFIG OUTPUT_DIR [KEY VALUE ...]}
shift 3
DTRAIN=${DTRAIN:-$(pwd)/build/bin/dtrain}
NPROC_PER_NODE=${NPROC_PER_NODE:-4}
MAX_RESTARTS=${MAX_RESTARTS:-3}
NNODES=$(grep -cEv '^[[:space:]]*(#|$)' "${HOSTFILE}")

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
export HDF5_USE_FILE_LOCKING=FALSE
# In containers that run as root: export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

run() {
  # exec: the background job is then mpirun itself, so the trap below can signal it.
  # ppr:N:node = N ranks per node; PE = cores per rank with --bind-to core (use
  # --bind-to none when ranks outnumber cores); -x forwards variables to every rank.
  exec mpirun -np $((NNODES * NPROC_PER_NODE)) --hostfile "${HOSTFILE}" \
    --map-by "ppr:${NPROC_PER_NODE}:node:PE=${OMP_NUM_THREADS}" --bind-to core \
    -x OMP_NUM_THREADS -x HDF5_USE_FILE_LOCKING -x PATH -x LD_LIBRARY_PATH \
    "${DTRAIN}" train --config-file "${CONFIG}" "$@" OUTPUT_DIR "${OUTPUT_DIR}"
}

# Send SIGUSR1 (not SIGTERM) to mpirun to preempt: mpirun forwards SIGUSR1 to every
# rank, which then saves and exits 75; SIGTERM makes mpirun kill the ranks at once.
stop=0
mpirun_pid=""
trap '[[ -n "${mpirun_pid}" ]] && kill -USR1 "${mpirun_pid}" 2>/dev/null; stop=1' TERM USR1
resume=()
for ((attempt = 0; attempt <= MAX_RESTARTS; attempt++)); do
  run "${resume[@]}" "$@" &
  mpirun_pid=$!
  wait "${mpirun_pid}"; rc=$?
  (( rc > 128 && stop )) && { wait "${mpirun_pid}"; rc=$?; }
  echo "[mpirun_example] attempt $((attempt + 1)) exited with ${rc}"
  if (( rc == 0 || stop )); then
    exit "${rc}"  # finished, or we were asked to stop (75: resume later with --resume)
  fi
  resume=(--resume)
  sleep $((1 << attempt))  # 1, 2, 4, ... s before the next attempt
done
exit "${rc}"
