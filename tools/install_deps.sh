#!/usr/bin/env bash
# Installs everything dtrain needs to build, test and benchmark on Debian 12 (as root).
# libopenblas0-openmp matters: without an optimized BLAS, Debian's LibTorch falls back
# to the reference BLAS and trains ~15x slower.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  build-essential cmake ninja-build ccache git ca-certificates \
  libtorch-dev libopenblas0-openmp \
  libopenmpi-dev openmpi-bin libhdf5-openmpi-dev \
  libboost-dev libyaml-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev \
  libcli11-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libxxhash-dev libssl-dev openssl libzip-dev \
  libprotobuf-dev protobuf-compiler zlib1g-dev dataset-fashion-mnist libfuse3-dev fuse3 pkg-config \
  python3 python3-numpy python3-h5py python3-pil python3-torch python3-torchvision \
  python3-protobuf python3-crc32c \
  >/dev/null
echo "dtrain: dependencies installed"
