# Sourced by tools/gpu_check.sh with STAGE2=1 (needs the packages of stage2_debs.txt in
# $DEBS too): configures the whole project against the CUDA LibTorch, builds the `dtrain`
# executable within the time left, and trains mlp_synthetic on the GPU (1 rank, NCCL).
# h5pcc has its prefix written in; point it at $PFX.
sed -i "s|^prefix=\"/usr\"|prefix=\"$U\"|" "$U/bin/h5pcc.openmpi"
BUILD2=${BUILD2:-/tmp/dtrain-gpu-build-full}
configure_full() {
  rm -rf "$BUILD2"
  cmake -S "$SRC" -B "$BUILD2" "${COMMON[@]}" -DDTRAIN_DIST_ONLY=OFF -DDTRAIN_BUILD_TESTS=OFF \
    -DHDF5_C_COMPILER_EXECUTABLE="$U/bin/h5pcc.openmpi" -DProtobuf_PROTOC_EXECUTABLE="$U/bin/protoc" \
    -DCMAKE_PREFIX_PATH="$TORCH_CMAKE;$U" "$@"
}
if grep -q "^Torch_DIR:PATH=$SRC/tools/gpu_check" "$BUILD/CMakeCache.txt"; then
  step configure_full configure_full -DTorch_DIR="$SRC/tools/gpu_check" \
    -DTORCH_INSTALL_PREFIX="$TORCH_DIR" -DTORCH_CXX11_ABI="$TORCH_ABI"
else
  step configure_full configure_full
fi && {
  grep -E "^(HDF5_C_LIBRARY_hdf5|HDF5_C_INCLUDE_DIR|Boost_INCLUDE_DIR|Protobuf_LIBRARY_RELEASE|Protobuf_PROTOC_EXECUTABLE|LIBZIP_LIBRARY|XXHASH_LIBRARY|OPENSSL_SSL_LIBRARY|ZLIB_LIBRARY_RELEASE):" "$BUILD2/CMakeCache.txt"
  step build_dtrain timeout "$(($(left) - 45))" cmake --build "$BUILD2" -j "$JOBS" --target dtrain -- -k 0
} && {
  cd /tmp && rm -rf /tmp/dtrain-smoke
  TRAIN=("$BUILD2/bin/dtrain" train --config-file "$SRC/configs/mlp_synthetic.yaml")
  KEYS=(MODEL.DEVICE cuda SOLVER.STEPS '[40]' SOLVER.CHECKPOINT_PERIOD 30 OUTPUT_DIR /tmp/dtrain-smoke)
  step train_gpu_np1 timeout 90 mpirun.openmpi -np 1 "${TRAIN[@]}" "${KEYS[@]}" SOLVER.MAX_ITER 60
  # Resume from model_final (iteration 60) to 90: loads model + optimizer state on the GPU.
  step resume_gpu_np1 timeout 90 mpirun.openmpi -np 1 "${TRAIN[@]}" --resume "${KEYS[@]}" \
    SOLVER.MAX_ITER 90
  ls -la /tmp/dtrain-smoke /tmp/dtrain-smoke/* 2>/dev/null | head -40
  cp /tmp/dtrain-smoke/metrics.json "$OUT/metrics.json" 2>/dev/null
  cd - >/dev/null
}
