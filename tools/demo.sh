#!/usr/bin/env bash
# The main job: the MLP on Fashion-MNIST (Debian's dataset-fashion-mnist) on 2 ranks.
# The first run trains 5 epochs and saves checkpoints, then stops; the second resumes
# from OUTPUT_DIR/last_checkpoint, trains the other 5 and reports the test accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build}"
OUT="${OUT:-./output/demo}"
CONFIG=configs/mlp_fashion_mnist.yaml
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_mpi_yield_when_idle=1
rm -rf "$OUT"
MPIRUN=(mpirun -np 2 --bind-to none)
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
echo "== training 2 ranks on Fashion-MNIST, iterations 0..2345 (5 epochs, checkpoint every 1000) =="
"${MPIRUN[@]}" "$BUILD_DIR/bin/dtrain" train --config-file "$CONFIG" \
  SOLVER.MAX_ITER 2345 OUTPUT_DIR "$OUT"
echo "== resuming from $OUT/last_checkpoint ($(cat "$OUT/last_checkpoint")) up to iteration 4690 =="
"${MPIRUN[@]}" "$BUILD_DIR/bin/dtrain" train --config-file "$CONFIG" --resume \
  OUTPUT_DIR "$OUT" 2>&1 | tee "$LOG"
ACCURACY="$(grep -o 'Evaluation on fashion_mnist_test: accuracy=[0-9.]*' "$LOG" | tail -n 1)"
[ -n "$ACCURACY" ] || { echo "no test accuracy in the log" >&2; exit 1; }
echo "== done: ${ACCURACY#Evaluation on } (checkpoints in $OUT) =="
ls "$OUT"
