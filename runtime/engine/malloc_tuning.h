// glibc malloc settings for training: a fixed mmap threshold and a high trim threshold.
//
// With glibc's defaults, the large blocks a training step allocates and frees (activations,
// gradients) move between mmap and the heap as the dynamic mmap threshold adapts, and the
// heap top is returned to the system and faulted in again; anything else that allocates
// between steps (a checkpoint snapshot, another thread) upsets that adaptation. Measured
// here (gpt, 89 MB of state, 1 rank, 2 cores): a step took 0.24 s, and 0.56 s with a local
// snapshot after each step; with the settings below 0.19-0.21 s and 0.25-0.27 s.
// PyTorch's CPU performance guide gives the same advice (or jemalloc/tcmalloc).
#pragma once

#include <string>

namespace dtrain::engine {

struct MallocTuning {
  bool apply = false;
  std::string why;  // for the log: what was set, or why nothing was
};

// Whether to set the thresholds: not when the user chose malloc settings already
// (GLIBC_TUNABLES naming glibc.malloc, or MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_
// / MALLOC_TOP_PAD_ set) or turned it off with DTRAIN_MALLOC_TUNING=0. Pure: the
// environment is passed in (nullptr = unset).
MallocTuning decide_malloc_tuning(const char* glibc_tunables, bool malloc_env_set, const char* dtrain_opt);

// Reads the environment, decides, and calls mallopt (M_MMAP_THRESHOLD 32 MiB, the
// largest glibc accepts; M_TRIM_THRESHOLD 1 GiB). Returns what it did. A no-op under
// another allocator (mallopt then has no effect). Call once, early, on the main thread.
MallocTuning tune_malloc();

}  // namespace dtrain::engine
