// When dtrain sets glibc's malloc thresholds (malloc_tuning.h): by default, not over the
// user's own malloc settings, not with DTRAIN_MALLOC_TUNING=0.
#include <malloc.h>

#include <gtest/gtest.h>

#include "runtime/engine/malloc_tuning.h"

namespace dtrain::engine {
namespace {

TEST(MallocTuningTest, SetByDefault) {
  EXPECT_TRUE(decide_malloc_tuning(nullptr, false, nullptr).apply);
  EXPECT_TRUE(decide_malloc_tuning("glibc.pthread.rseq=0", false, "1").apply);
}

TEST(MallocTuningTest, TheUsersSettingsWin) {
  const MallocTuning t = decide_malloc_tuning("glibc.malloc.mmap_threshold=65536", false, nullptr);
  EXPECT_FALSE(t.apply);
  EXPECT_NE(t.why.find("GLIBC_TUNABLES"), std::string::npos) << t.why;
  EXPECT_FALSE(decide_malloc_tuning(nullptr, true, nullptr).apply);
}

TEST(MallocTuningTest, OffWithDtrainMallocTuning0) {
  const MallocTuning t = decide_malloc_tuning(nullptr, false, "0");
  EXPECT_FALSE(t.apply);
  EXPECT_NE(t.why.find("DTRAIN_MALLOC_TUNING=0"), std::string::npos) << t.why;
}

TEST(MallocTuningTest, GlibcAcceptsTheValues) {
  // What tune_malloc sets must be within what this glibc accepts (M_MMAP_THRESHOLD is
  // capped at 32 MiB on 64-bit); mallopt returns 1 on success. Sanitizers replace malloc
  // (their mallopt does nothing and returns 0).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "malloc is the sanitizer's";
#endif
  EXPECT_EQ(mallopt(M_MMAP_THRESHOLD, 32 << 20), 1);
  EXPECT_EQ(mallopt(M_TRIM_THRESHOLD, 1 << 30), 1);
}

}  // namespace
}  // namespace dtrain::engine
