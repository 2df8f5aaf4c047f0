#!/usr/bin/env bash
# tools/gpu_check.sh: builds dtrain's runtime/base + runtime/dist with the NCCL backend
# against a CUDA LibTorch and runs their tests, including `ctest -L gpu` (the NCCL
# communicator test on 1 rank, and on 2 ranks where there are 2 GPUs), on a GPU machine
# that has CUDA (nvcc), CMake, ninja, g++ and python3 with a CUDA torch wheel (which holds
# LibTorch and, as nvidia-nccl-*, NCCL) but none of the project's Debian packages and no
# network. Optionally (STAGE2=1) it then builds the whole `dtrain` executable against the
# same LibTorch and trains mlp_synthetic on the GPU for a few iterations.
#
# The missing libraries travel as Debian 12 amd64 .deb files, unpacked with `dpkg -x` into
# a prefix ($PFX, not /); Open MPI is relocated with OPAL_PREFIX and PMIX_PREFIX. Fetch
# them on a Debian 12 machine with network, in the repository root (a folder that git
# ignores, e.g. via .git/info/exclude, so that it travels as an untracked or carried path):
#
#   mkdir -p .gpu/debs && cd .gpu/debs && apt-get download \
#     libopenmpi3 libopenmpi-dev openmpi-bin openmpi-common libfmt-dev libfmt9 \
#     libspdlog-dev libspdlog1.10 libyaml-cpp-dev libyaml-cpp0.7 libgtest-dev libgmock-dev \
#     googletest libnl-3-200 libnl-route-3-200 ibverbs-providers libibverbs1 librdmacm1 \
#     libfabric1 libucx0 libpsm-infinipath1 libpsm2-2 libpmix2 libhwloc15 \
#     libevent-core-2.1-7 libevent-pthreads-2.1-7 libmunge2 libnuma1 libatomic1
#   # ~9 MB. STAGE2 also needs (~29 MB), from the same folder:
#   apt-get download $(cat ../../tools/gpu_check/stage2_debs.txt)
#
# Run (the device tool: carry [".gpu"]; $OUT comes back). The device tool sends the main
# checkout, so put this branch's tree there too, e.g. `git archive HEAD | tar -x -C
# /work/main/.gpu/src`, and run, with timeout_s ~560 (the whole run took ~100 s on an H200):
#   cd .gpu/src && OUT=$OUT DEBS=$PWD/../debs STAGE2=1 DEADLINE_S=300 JOBS=16 \
#     timeout 500 bash tools/gpu_check.sh >/dev/null 2>&1; cat $OUT/summary.txt
# Results of the first run and what they mean: docs/GPU_CHECK.md.
# Variables: SRC (source tree, default: this script's repository), DEBS, PFX (prefix,
# /tmp/dtrain-deps), BUILD (/tmp/dtrain-gpu-build), JOBS (nproc), DEADLINE_S (seconds
# after which optional steps are skipped, 420), STAGE2 (0).
# Output: $OUT/log (everything), $OUT/summary.txt (one line per step: status, seconds).
set -uo pipefail
START=$SECONDS
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log") 2>&1
SRC=${SRC:-$(cd "$(dirname "$0")/.." && pwd)}
SRC=$(cd "$SRC" && pwd)
DEBS=${DEBS:-$SRC/.gpu/debs}
DEBS=$(cd "$DEBS" && pwd)
PFX=${PFX:-/tmp/dtrain-deps}
BUILD=${BUILD:-/tmp/dtrain-gpu-build}
JOBS=${JOBS:-$(nproc)}
DEADLINE_S=${DEADLINE_S:-420}
STAGE2=${STAGE2:-0}
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"

# step NAME CMD...: runs CMD, logs its time and status to the summary; returns its status.
step() {
  local name=$1
  shift
  echo
  echo "=== [$(date +%T) +$((SECONDS - START))s] $name: $*"
  local t0=$SECONDS
  "$@"
  local rc=$?
  local dt=$((SECONDS - t0))
  echo "=== $name: rc=$rc in ${dt}s"
  printf '%-28s rc=%-3s %4ss\n' "$name" "$rc" "$dt" >>"$SUMMARY"
  return $rc
}
left() { echo $((DEADLINE_S - (SECONDS - START))); }

set -x
# ---- 1. what is on the machine --------------------------------------------------------
step env bash -c '
  uname -a; cat /etc/os-release | head -4; nproc; free -g | head -2; df -h /tmp | tail -1
  nvidia-smi; nvidia-smi -L
  for t in g++ gcc c++ cmake ninja nvcc python3 dpkg ar; do echo "$t: $(command -v $t)"; done
  g++ --version | head -1; cmake --version | head -1; ninja --version
  (command -v nvcc || ls /usr/local/cuda/bin/nvcc) && { nvcc --version || /usr/local/cuda/bin/nvcc --version; } | tail -2
  ldd --version | head -1
  python3 - <<PY
import os, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
      "count", torch.cuda.device_count())
print("nccl", torch.cuda.nccl.version() if torch.cuda.is_available() else None)
print("cxx11 abi", torch._C._GLIBCXX_USE_CXX11_ABI)
print("cmake", torch.utils.cmake_prefix_path)
print("torch dir", os.path.dirname(torch.__file__))
PY
  ldconfig -p | grep -E "libnccl|libcudart|libmpi|libhwloc|libevent|libibverbs|libcurl|libnl-3" || true
'
TORCH_CMAKE=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
TORCH_DIR=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')
TORCH_ABI=$(python3 -c 'import torch;print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
NCCL_ROOT=${NCCL_ROOT:-$(python3 -c 'import nvidia.nccl as m;print(list(m.__path__)[0])' 2>/dev/null)}
if [ -z "$NCCL_ROOT" ]; then NCCL_ROOT=$(dirname "$TORCH_DIR")/nvidia/nccl; fi
ls -la "$NCCL_ROOT" "$NCCL_ROOT"/lib "$NCCL_ROOT"/include
# FindNCCL looks for libnccl.so or libnccl.so.2; the wheel has only the latter.
# The toolkit by its real path: torch's cuda.cmake stops on "two conflicting CUDA installs"
# when /usr/local/cuda and /usr/local/cuda-13.0 both show up.
if [ -z "${CUDA_ROOT:-}" ]; then
  if [ -x /usr/local/cuda/bin/nvcc ]; then CUDA_ROOT=/usr/local/cuda
  else CUDA_ROOT=$(dirname "$(dirname "$(command -v nvcc)")"); fi
fi
CUDA_ROOT=$(readlink -f "$CUDA_ROOT")
export PATH=$CUDA_ROOT/bin:$PATH CUDA_PATH=$CUDA_ROOT CUDA_HOME=$CUDA_ROOT CUDACXX=$CUDA_ROOT/bin/nvcc

# ---- 2. unpack the Debian packages into $PFX ----------------------------------------------
# Packages whose libraries the machine's own OS may already have (same SONAME, newer): they
# go to $PFX/sys, and only the libraries the system lacks are linked into $PFX/syslib.
SYS_PKGS=" libatomic1 libnuma1 libnl-3-200 libnl-route-3-200 libcurl4 libbrotli1 libbz2-1.0
  libdb5.3 libffi8 libgmp10 libgnutls30 libgssapi-krb5-2 libhogweed6 libidn2-0 libk5crypto3
  libkeyutils1 libkrb5-3 libkrb5support0 libldap-2.5-0 liblzma5 libnettle8 libnghttp2-14
  libp11-kit0 libpsl5 librtmp1 libsasl2-2 libsasl2-modules-db libssh2-1 libtasn1-6
  libunistring2 libzstd1 zlib1g libssl3 "
U=$PFX/usr
unpack() {
  rm -rf "$PFX" && mkdir -p "$PFX/sys" "$PFX/syslib" || return 1
  local f pkg dest
  for f in "$DEBS"/*.deb; do
    pkg=$(basename "$f"); pkg=${pkg%%_*}
    dest=$PFX; case "$SYS_PKGS" in *" $pkg "*) dest=$PFX/sys ;; esac
    if command -v dpkg-deb >/dev/null; then
      dpkg-deb -x "$f" "$dest" || return 1
    else
      (d=$(mktemp -d) && cd "$d" && ar x "$f" && tar -xf data.tar.* -C "$dest" && rm -rf "$d") || return 1
    fi
  done
  local sys; sys=$(ldconfig -p)
  for f in "$PFX"/sys/lib/x86_64-linux-gnu/lib*.so.* "$PFX"/sys/usr/lib/x86_64-linux-gnu/lib*.so.*; do
    [ -e "$f" ] || continue
    if grep -q "^[[:space:]]*$(basename "$f") " <<<"$sys"; then continue; fi
    ln -sf "$f" "$PFX/syslib/"
  done
  # Development links (libz.so -> libz.so.1.2.13) whose target went to sys: to the system's
  # library of that SONAME, or the one brought.
  local soname path
  for f in "$PFX"/usr/lib/x86_64-linux-gnu/lib*.so; do
    [ -L "$f" ] && [ ! -e "$f" ] || continue
    soname=$(readlink "$f" | sed -E 's|.*/||; s/(\.so\.[0-9]+).*/\1/')
    path=$(awk -v n="$soname" '$1 == n && /x86-64/ {print $NF; exit}' <<<"$sys")
    [ -n "$path" ] || path=$PFX/syslib/$soname
    [ -e "$path" ] || continue
    ln -sfn "$path" "$f" && echo "dev link $(basename "$f") -> $path"
  done
  # HDF5's h5pcc names -lcurl and -lsz, whose development links come from packages not
  # brought (libcurl4-openssl-dev, libaec-dev): link them to the runtime libraries.
  local pair
  for pair in curl:libcurl.so.4 sz:libsz.so.2; do
    f=$U/lib/x86_64-linux-gnu/lib${pair%%:*}.so
    soname=${pair#*:}
    [ -e "$f" ] && continue
    path=$(awk -v n="$soname" '$1 == n && /x86-64/ {print $NF; exit}' <<<"$sys")
    for p in "$U/lib/x86_64-linux-gnu/$soname" "$PFX/syslib/$soname"; do
      [ -z "$path" ] && [ -e "$p" ] && path=$p
    done
    [ -n "$path" ] && ln -sfn "$path" "$f" && echo "dev link $(basename "$f") -> $path"
  done
  echo "from the system's missing libraries, brought: $(ls "$PFX/syslib" | tr '\n' ' ')"
  du -sh "$PFX"
}
step unpack unpack || exit 1
U=$PFX/usr
export OPAL_PREFIX=$U
export PMIX_PREFIX=$U/lib/x86_64-linux-gnu/pmix2
export PMIX_DATADIR=$PMIX_PREFIX/share PMIX_PKGDATADIR=$PMIX_PREFIX/share/pmix
export PMIX_MCA_pcompress_base_silence_warning=1
export PATH=$U/bin:$PATH
export LD_LIBRARY_PATH=$U/lib/x86_64-linux-gnu:$PFX/lib/x86_64-linux-gnu:$PFX/syslib:$NCCL_ROOT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
# No InfiniBand/UCX/PSM hardware in a VM: keep Open MPI on shared memory + TCP, quietly.
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader,tcp OMPI_MCA_mtl=^ofi,psm,psm2
export OMPI_MCA_btl_base_warn_component_unused=0
step mpi_sanity bash -c 'ompi_info --version 2>&1 | head -2; ompi_info --path prefix --path libdir --path pkglibdir;
  timeout 60 mpirun.openmpi -np 2 hostname'

# ---- 3. configure + build base/dist and their tests ---------------------------------------
# The NCCL that torch loads (the wheel's), not one the image may have in its system paths.
NCCL_PIN=()
if [ -f "$NCCL_ROOT/include/nccl.h" ]; then
  NCCL_PIN=(-DNCCL_INCLUDE_DIR="$NCCL_ROOT/include"
    -DNCCL_LIBRARY="$(ls "$NCCL_ROOT"/lib/libnccl.so* | head -1)")
fi
COMMON=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DDTRAIN_BUILD_BENCH=OFF
  -DMPI_C_COMPILER="$U/bin/mpicc.openmpi" -DMPI_CXX_COMPILER="$U/bin/mpicxx.openmpi"
  -DMPIEXEC_EXECUTABLE="$U/bin/mpirun.openmpi" -DNCCL_ROOT="$NCCL_ROOT" "${NCCL_PIN[@]}"
  -DCUDAToolkit_ROOT="$CUDA_ROOT" -DTORCH_CUDA_ARCH_LIST=9.0 -DCMAKE_CUDA_ARCHITECTURES=90)
configure() {
  rm -rf "$BUILD"
  cmake -S "$SRC" -B "$BUILD" "${COMMON[@]}" -DDTRAIN_DIST_ONLY=ON \
    -DCMAKE_PREFIX_PATH="$TORCH_CMAKE;$U" "$@"
}
if ! step configure configure; then
  echo "torch's own CMake config failed; trying tools/gpu_check/TorchConfig.cmake"
  step configure_fallback configure -DTorch_DIR="$SRC/tools/gpu_check" \
    -DTORCH_INSTALL_PREFIX="$TORCH_DIR" -DTORCH_CXX11_ABI="$TORCH_ABI" || exit 1
fi
grep -E "^(Torch_DIR|NCCL_LIBRARY|NCCL_INCLUDE_DIR|MPI_mpi_LIBRARY|GTest_DIR|CUDAToolkit_NVCC_EXECUTABLE|CMAKE_CXX_COMPILER):" "$BUILD/CMakeCache.txt"
if grep -q "DTRAIN_HAVE_NCCL=1" "$BUILD/build.ninja"; then echo "NCCL backend: compiled in"
else echo "NCCL backend: NOT compiled in (ctest -L gpu will find no test)" | tee -a "$SUMMARY"; fi
step build cmake --build "$BUILD" -j "$JOBS" || exit 1
T=$BUILD/tests
ldd "$T/dist_nccl_communicator_test" | grep -E "nccl|torch|c10|cudart|mpi|not found"

# ---- 4. run ---------------------------------------------------------------------------------
step nccl_np1_debug env NCCL_DEBUG=INFO timeout 120 mpirun.openmpi -np 1 "$T/dist_nccl_communicator_test"
step nccl_singleton timeout 120 "$T/dist_nccl_communicator_test" --gtest_filter='NcclTest.AllReduce*'
step ctest_gpu ctest --test-dir "$BUILD" -L gpu -V --timeout 180
step ctest_cpu ctest --test-dir "$BUILD" -LE gpu -j 8 --output-on-failure --timeout 180
cp "$BUILD/Testing/Temporary/LastTest.log" "$OUT/LastTest.log" 2>/dev/null

# ---- 5. optional: the whole dtrain executable, a short training run on the GPU --------------
if [ "$STAGE2" = 1 ] && [ -f "$SRC/tools/gpu_check/stage2.sh" ]; then
  if [ "$(left)" -gt 90 ]; then
    source "$SRC/tools/gpu_check/stage2.sh"
  else
    echo "stage2 skipped: $(left)s left before DEADLINE_S"
    echo "stage2 skipped (time)" >>"$SUMMARY"
  fi
fi
set +x
echo
echo "=== summary (total $((SECONDS - START))s)"
cat "$SUMMARY"
