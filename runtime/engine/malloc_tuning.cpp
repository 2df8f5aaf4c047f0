#include "runtime/engine/malloc_tuning.h"

#include <malloc.h>

#include <cstdlib>
#include <cstring>

namespace dtrain::engine {

MallocTuning decide_malloc_tuning(const char* glibc_tunables, bool malloc_env_set, const char* dtrain_opt) {
  if (dtrain_opt != nullptr && std::strcmp(dtrain_opt, "0") == 0) {
    return {false, "off (DTRAIN_MALLOC_TUNING=0)"};
  }
  if ((glibc_tunables != nullptr && std::strstr(glibc_tunables, "glibc.malloc.") != nullptr) || malloc_env_set) {
    return {false, "left as the environment sets it (GLIBC_TUNABLES or MALLOC_*_)"};
  }
  return {true, "mmap threshold 32 MiB, trim threshold 1 GiB"};
}

MallocTuning tune_malloc() {
  const bool malloc_env = std::getenv("MALLOC_MMAP_THRESHOLD_") != nullptr ||
                          std::getenv("MALLOC_TRIM_THRESHOLD_") != nullptr ||
                          std::getenv("MALLOC_TOP_PAD_") != nullptr;
  MallocTuning t = decide_malloc_tuning(std::getenv("GLIBC_TUNABLES"), malloc_env, std::getenv("DTRAIN_MALLOC_TUNING"));
  if (!t.apply) return t;
  const bool ok = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1;
  if (!ok) t = {false, "mallopt refused (another allocator?)"};
  return t;
}

}  // namespace dtrain::engine
