// Read buffers and their checks (see buffers.h).
#include "checkpoint/interop/buffers.h"

#include <sys/mman.h>

#include <cstdint>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "runtime/base/error.h"

namespace dtrain::interop {

at::Tensor empty_for_read(at::IntArrayRef shape, c10::ScalarType dtype) {
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype));
  const uint64_t n = static_cast<uint64_t>(t.numel()) * t.element_size();
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const auto p = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t begin = (p + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (p + n) & ~(kHuge - 1);
  // Best effort: a kernel without THP just says no.
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  return t;
}

void check_bool_bytes(const at::Tensor& t, const std::string& what) {
  if (t.scalar_type() != at::kBool) return;
  const at::Tensor c = t.contiguous();
  const auto* p = static_cast<const uint8_t*>(c.data_ptr());
  for (int64_t i = 0; i < c.numel(); ++i) {
    if (p[i] > 1) {
      throw CheckpointError(
          fmt::format("{}: bool element {} is the byte {}, expected 0 or 1", what, i, p[i]));
    }
  }
}

}  // namespace dtrain::interop
