#!/usr/bin/env bash
# The main job: a short 2-rank training of the default config (mlp on synthetic data)
# that saves checkpoints, then a resumed run that continues from the last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build}"
OUT="${OUT:-./output/demo}"
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_mpi_yield_when_idle=1
rm -rf "$OUT"
MPIRUN=(mpirun -np 2 --bind-to none)
echo "== training 2 ranks, iterations 0..100 (checkpoint every 50) =="
"${MPIRUN[@]}" "$BUILD_DIR/bin/dtrain" train --config-file configs/mlp_synthetic.yaml \
  SOLVER.MAX_ITER 100 SOLVER.CHECKPOINT_PERIOD 50 OUTPUT_DIR "$OUT"
echo "== resuming from $OUT/last_checkpoint up to iteration 150 =="
"${MPIRUN[@]}" "$BUILD_DIR/bin/dtrain" train --config-file configs/mlp_synthetic.yaml --resume \
  SOLVER.MAX_ITER 150 SOLVER.CHECKPOINT_PERIOD 50 OUTPUT_DIR "$OUT"
echo "== done: $OUT =="
ls "$OUT"
