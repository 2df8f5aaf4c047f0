#!/usr/bin/env bash
# Runs every benchmark of bench/ (about 15 minutes on 2 quiet cores) and prints each
# figure next to its peer or physical limit and its goal (bench/README.md).
#
#   bash bench/run_all.sh                      # uses build/, writes under /tmp
#   BUILD_DIR=build-bench ROUNDS=3 bash bench/run_all.sh
#
# Environment (defaults in brackets): BUILD_DIR [build], OUT_DIR scratch directory for
# checkpoints and dd files, deleted at the end [/tmp/dtrain-bench-$$], RESULTS JSON lines
# file kept after the run [$OUT_DIR/../dtrain-bench-results.jsonl], ROUNDS training
# rounds, dtrain and peer alternating [2], CKPT_REPEATS rounds per checkpoint run [3],
# ASYNC_ROUNDS training rounds of the asynchronous-checkpoint benchmark [4], LOADER_ROUNDS
# rounds of the data-loader benchmark [5], LOCAL_ROUNDS rounds of the local-snapshot
# benchmark [3], STRATEGY_REPEATS cold loads per CHECKPOINT.LOAD_STRATEGY run [5], SKIP
# "train", "ckpt", "breakdown", "async", "loader", "strategy" or "local" (space-separated)
# to leave parts out [none].
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR=$ROOT/$BUILD_DIR ;; esac
BIN=$BUILD_DIR/bin
OUT_DIR=${OUT_DIR:-/tmp/dtrain-bench-$$}
RESULTS=${RESULTS:-$(dirname "$OUT_DIR")/dtrain-bench-results-$$.jsonl}
ROUNDS=${ROUNDS:-2}
CKPT_REPEATS=${CKPT_REPEATS:-3}
ASYNC_ROUNDS=${ASYNC_ROUNDS:-4}
LOADER_ROUNDS=${LOADER_ROUNDS:-5}
LOCAL_ROUNDS=${LOCAL_ROUNDS:-3}
STRATEGY_REPEATS=${STRATEGY_REPEATS:-5}
SKIP=${SKIP:-}
PY=/usr/bin/python3

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMP_NUM_THREADS=1 DTRAIN_LOG_LEVEL=${DTRAIN_LOG_LEVEL:-warn}
MPIRUN=(mpirun --bind-to none)

for exe in dtrain_train_bench dtrain_ckpt_bench dtrain_ckpt_breakdown dtrain_async_bench dtrain_loader_bench; do
  [[ -x $BIN/$exe ]] || { echo "run_all.sh: $BIN/$exe is missing; build it: ninja -C $BUILD_DIR $exe" >&2; exit 2; }
done
have_torch=0
if $PY -c "import torch, torch.distributed" 2>/dev/null; then have_torch=1; fi
have_vision=0
if $PY -c "import torch, torchvision, numpy" 2>/dev/null; then have_vision=1; fi
skipped() { [[ " $SKIP " == *" $1 "* ]]; }

mkdir -p "$OUT_DIR"
trap 'rm -rf "$OUT_DIR"' EXIT
: > "$RESULTS"
start=$(date +%s)
echo "== dtrain benchmarks: $(getconf _NPROCESSORS_ONLN) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
echo "== tree: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown), binaries: $BIN"
echo "== results: $RESULTS; scratch: $OUT_DIR (df: $(df -h "$OUT_DIR" | awk 'NR==2 {print $4}') free)"
[[ $have_torch == 1 ]] || echo "== /usr/bin/python3 cannot import torch: peers skipped (apt-get install python3-torch)"

# mpirun -np N of a command (plain exec for N = 1, as a user would run one process).
# With more ranks than cores, ranks waiting in MPI yield the core instead of spinning
# (Open MPI's busy polling otherwise starves the rank doing the work: a 4-rank load on 2
# cores took 10-25 s instead of ~4 s here; see README.md).
CORES=$(getconf _NPROCESSORS_ONLN)
launch() {
  local np=$1; shift
  local cmd=()
  if (( np > 1 )); then
    cmd=("${MPIRUN[@]}")
    (( np > CORES )) && cmd+=(--mca mpi_yield_when_idle 1)
    cmd+=(-np "$np")
  fi
  "${cmd[@]}" "$@"
}
# A peer may fail or hang (it is not ours): give it 15 minutes and go on without it.
peer() {
  local np=$1; shift
  launch "$np" timeout 900 "$@" || echo "== peer failed or timed out (status $?); what it recorded is kept"
}

if ! skipped train; then
  for round in $(seq 1 "$ROUNDS"); do
    for model in mlp resnet18; do
      for np in 1 2; do
        echo "== train round $round/$ROUNDS: $model, $np rank(s)"
        launch "$np" "$BIN/dtrain_train_bench" --model "$model" --json "$RESULTS"
        if [[ $have_torch == 1 ]]; then
          peer "$np" $PY "$ROOT/bench/ddp_peer.py" --model "$model" --json "$RESULTS" \
            --store "$OUT_DIR/ddp-store-$round-$model-$np"
        fi
      done
    done
  done
fi

if ! skipped ckpt; then
  for np in 1 2 4; do
    echo "== checkpoint: $np rank(s)"
    extra=()
    [[ $np == 1 ]] && extra=(--shapes "$OUT_DIR/shapes.json")
    launch "$np" "$BIN/dtrain_ckpt_bench" --dir "$OUT_DIR/ckpt" --repeats "$CKPT_REPEATS" \
      --json "$RESULTS" "${extra[@]}"
  done
  if [[ $have_torch == 1 ]]; then
    echo "== checkpoint peers: torch.save/torch.load, h5py"
    peer 1 $PY "$ROOT/bench/torch_ckpt_peer.py" --shapes "$OUT_DIR/shapes.json" \
      --dir "$OUT_DIR/peer" --repeats "$CKPT_REPEATS" --json "$RESULTS"
  fi
fi

if ! skipped breakdown; then
  echo "== checkpoint breakdown (1 process)"
  "$BIN/dtrain_ckpt_breakdown" --dir "$OUT_DIR/breakdown" --repeats "$CKPT_REPEATS" --json "$RESULTS"
fi

if ! skipped async; then
  # The stall of save_async on 1, 2 and 4 ranks; the training overhead on 1 and 2.
  for np in 1 2 4; do
    part=all
    (( np > 2 )) && part=stall
    echo "== asynchronous checkpoints: $np rank(s) ($part)"
    launch "$np" "$BIN/dtrain_async_bench" --part "$part" --dir "$OUT_DIR/async" \
      --repeats "$CKPT_REPEATS" --rounds "$ASYNC_ROUNDS" --json "$RESULTS"
  done
fi

if ! skipped loader; then
  # One process; it starts bench/loader_peer.py itself and alternates the two sides.
  echo "== data loader: data::DataLoader alone and feeding cnn training vs torch DataLoader"
  peer_flags=()
  if [[ $have_vision != 1 ]]; then
    echo "== /usr/bin/python3 cannot import torch, torchvision, numpy: loader peer skipped"
    peer_flags=(--peer none)
  fi
  "$BIN/dtrain_loader_bench" --rounds "$LOADER_ROUNDS" --json "$RESULTS" "${peer_flags[@]}"
fi

if ! skipped strategy; then
  # CHECKPOINT.LOAD_STRATEGY: a cold load of a 4-layer gpt state (~0.4 GB) on 1, 2 and 4
  # ranks, every rank reading against each piece read once; time and bytes read.
  for np in 1 2 4; do
    for strategy in all_read read_once; do
      echo "== load strategy $strategy: $np rank(s)"
      launch "$np" "$BIN/dtrain_ckpt_bench" --layers 4 --dd 0 --diag 0 --repeats "$STRATEGY_REPEATS" \
        --load-strategy "$strategy" --dir "$OUT_DIR/strategy" | { grep -E "^checkpoint|load \(" || true; }
    done
  done
fi

if ! skipped local; then
  # Local snapshots (CHECKPOINT.LOCAL) on 1 and 2 ranks: an 80 MB mlp state.
  for np in 1 2; do
    echo "== node-local snapshots: $np rank(s)"
    launch "$np" "$BIN/dtrain_local_bench" --hidden 2048,2048,2048 --batch 64 --iters 40 \
      --rounds "$LOCAL_ROUNDS" --dir "$OUT_DIR/local" --json "$RESULTS"
  done
  # The same in the real `dtrain train` of a gpt with AdamW (89 MB of state).
  for np in 1 2; do
    echo "== node-local snapshots in dtrain train (gpt): $np rank(s)"
    $PY "$ROOT/bench/local_gpt.py" --dtrain "$BIN/dtrain" --mpiexec "${MPIRUN[0]}" \
      --ranks "$np" --rounds "$LOCAL_ROUNDS" --iters 40 --dir "$OUT_DIR/local_gpt"
  done
fi

echo
echo "== summary ($(( $(date +%s) - start )) s; load average now $(cut -d' ' -f1-3 /proc/loadavg))"
$PY "$ROOT/bench/summarize.py" "$RESULTS"
