#!/usr/bin/env bash
# The cold load of dtrain_ckpt_bench on a faster "disk" than the machine has: an ext4 file
# system on a loop device whose backing file lives in /dev/shm, so cold reads (the page
# cache dropped) come through the block layer at memory-copy speed (~4-5 GB/s on the
# 2-core VM of bench/README.md, against ~1.8 GB/s for its virtio disk).
#
#   sudo bash bench/fast_disk.sh                     # 1 rank, 3 rounds, ~30 s
#   RANKS=2 REPEATS=5 sudo bash bench/fast_disk.sh
#
# Caveat, which decides how to read the result: a real NVMe disk fills the page cache by
# DMA, while the loop device's worker thread copies every byte with the CPU (~0.2 s of
# CPU per GB here). On a machine with few cores that thread competes with the load's
# reading and checksum threads, which `read(2)` (one reading thread) does not have: this
# emulation understates load / read(2) where cores are scarce (bench/README.md, "Cold load
# on a fast disk").
#
# Needs root (losetup, mount, /proc/sys/vm/drop_caches) and SIZE_GB of free memory for the
# image [7: the 1.06 GB state, dd's file, the raw file and three checkpoints]. Everything is
# removed at the end, also on failure. Environment: BUILD_DIR [build], RANKS [1],
# REPEATS [3], SIZE_GB [7]; extra arguments go to dtrain_ckpt_bench.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
RANKS=${RANKS:-1}
REPEATS=${REPEATS:-3}
SIZE_GB=${SIZE_GB:-7}
BENCH=$BUILD_DIR/bin/dtrain_ckpt_bench
[[ -x $BENCH ]] || { echo "fast_disk.sh: $BENCH is missing; build it: cmake --build $BUILD_DIR --target dtrain_ckpt_bench" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "fast_disk.sh: needs root (losetup, mount, drop_caches)" >&2; exit 2; }

IMAGE=/dev/shm/dtrain-fast-disk-$$.img
MNT=$(mktemp -d /tmp/dtrain-fast-disk-XXXXXX)
LOOP=""
cleanup() {
  mountpoint -q "$MNT" && umount "$MNT"
  [[ -n $LOOP ]] && losetup -d "$LOOP"
  rm -f "$IMAGE"
  rmdir "$MNT"
}
trap cleanup EXIT

truncate -s "${SIZE_GB}G" "$IMAGE"
LOOP=$(losetup -f --show "$IMAGE")
mkfs.ext4 -q "$LOOP"
mount "$LOOP" "$MNT"
echo "fast_disk.sh: ext4 on $LOOP (backed by $IMAGE, read_ahead_kb $(cat /sys/block/"${LOOP#/dev/}"/queue/read_ahead_kb)), mounted at $MNT"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
mpirun -np "$RANKS" --bind-to none "$BENCH" --dir "$MNT/ckpt-bench" --repeats "$REPEATS" "$@"
