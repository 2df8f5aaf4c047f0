#!/usr/bin/env bash
# Importing PyTorch weights: dtrain's read_foreign_weights of a ~1 GiB torch.save file (and
# of the same tensors as .safetensors) against a cold torch.load and a cold read(2) of the
# same file (see bench/README.md, "Importing PyTorch weights").
#
#   bash bench/run_import.sh [--dir DIR] [--rounds N] [--gib G] [--breakdown N] [--keep]
#
# --dir: where the test files go (default: a new directory under /tmp, i.e. the disk of
# /tmp); --rounds: rounds, each one process of dtrain_import_bench (read(2), .pth and
# .safetensors imports, cold and warm, in an order rotating per round) and one of
# import_peer.py load (cold and warm torch.load), which goes first every other round
# (default 5); --gib: size of the state dict (1.0); --breakdown: rounds of the breakdown
# of the .pth import (1; 0 skips it); --keep: keep the test files and the directory.
# Environment: BUILD_DIR (build), PYTHON (/usr/bin/python3), RESULTS (a JSON-lines file,
# default DIR/results.jsonl, kept with --keep or when RESULTS is given).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
BUILD_DIR="${BUILD_DIR:-build}"
PYTHON="${PYTHON:-/usr/bin/python3}"
dir="" rounds=5 gib=1.0 breakdown=1 keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --gib) gib="$2"; shift 2 ;;
    --breakdown) breakdown="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "run_import.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

bench="$BUILD_DIR/bin/dtrain_import_bench"
[ -x "$bench" ] || { echo "run_import.sh: $bench not found (ninja -C $BUILD_DIR dtrain_import_bench)" >&2; exit 1; }
"$PYTHON" -c "import torch" 2>/dev/null || { echo "run_import.sh: $PYTHON cannot import torch" >&2; exit 1; }

made_dir=0
if [ -z "$dir" ]; then
  dir="$(mktemp -d /tmp/dtrain-import-bench.XXXXXX)"
  made_dir=1
fi
mkdir -p "$dir"
pth="$dir/weights.pth" st="$dir/weights.safetensors"
results="${RESULTS:-$dir/results.jsonl}"
cleanup() {
  if [ "$keep" = 0 ]; then
    rm -f "$pth" "$st"
    if [ -z "${RESULTS:-}" ]; then rm -f "$results"; fi
    if [ "$made_dir" = 1 ]; then rmdir "$dir" 2>/dev/null || true; fi
  fi
}
trap cleanup EXIT

need=$(awk -v g="$gib" 'BEGIN { printf "%d", g * 2.2 * 1024 * 1024 }')  # KiB, both files
avail=$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')
[ "$avail" -gt "$need" ] || { echo "run_import.sh: $dir has $((avail >> 20)) GiB free, needs $((need >> 20))+" >&2; exit 1; }

echo "== making the test files in $dir (load average $(cut -d' ' -f1-3 /proc/loadavg))"
"$PYTHON" "$here/import_peer.py" make --pth "$pth" --safetensors "$st" --gib "$gib"

for ((r = 0; r < rounds; r++)); do
  echo "== round $((r + 1))/$rounds"
  check=0
  [ "$r" = 0 ] && check=1
  run_dtrain() {
    "$bench" --file "$pth" --safetensors "$st" --rounds 1 --round "$r" --check "$check" --json "$results"
  }
  run_torch() {
    "$PYTHON" "$here/import_peer.py" load --pth "$pth" --round "$r" --json "$results"
  }
  if [ $((r % 2)) = 0 ]; then run_dtrain; run_torch; else run_torch; run_dtrain; fi
done
if [ "$breakdown" -gt 0 ]; then
  echo "== breakdown of the .pth import"
  "$bench" --file "$pth" --rounds 0 --breakdown "$breakdown" --check 0 --json "$results"
fi
"$PYTHON" "$here/import_peer.py" report "$results"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (2 cores shared: figures may be contended)"
