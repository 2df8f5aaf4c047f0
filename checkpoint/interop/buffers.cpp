// Read buffers and their checks (see buffers.h).
#include "checkpoint/interop/buffers.h"

#include <sys/mman.h>

#include <cstdint>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "runtime/base/error.h"

namespace dtrain::interop {

namespace {

constexpr uint64_t kHugePage = uint64_t{2} << 20;

// An anonymous mapping of `len` bytes (a multiple of 4 KiB) starting on a 2 MiB boundary,
// all of it asked to be backed by huge pages; nullptr when mmap fails.
void* map_huge_aligned(uint64_t len) {
  void* raw = ::mmap(nullptr, len + kHugePage, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const auto a = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t p = (a + kHugePage - 1) & ~(kHugePage - 1);
  if (p > a) ::munmap(raw, p - a);  // the head before the boundary
  const uintptr_t end = a + len + kHugePage;
  if (end > p + len) ::munmap(reinterpret_cast<void*>(p + len), end - (p + len));  // the tail
  ::madvise(reinterpret_cast<void*>(p), len, MADV_HUGEPAGE);  // best effort
  return reinterpret_cast<void*>(p);
}

}  // namespace

at::Tensor empty_for_read(at::IntArrayRef shape, c10::ScalarType dtype) {
  const auto options = at::TensorOptions().dtype(dtype);
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;  // the callers checked the sizes
  const uint64_t n = static_cast<uint64_t>(numel) * c10::elementSize(dtype);
  // Whole huge pages for large buffers (bench/README.md, "Importing PyTorch weights":
  // ~50k fewer page faults per GiB than the allocator's 4 KiB-aligned head and tail).
  if (n >= kHugePage) {
    const uint64_t len = (n + 4095) & ~uint64_t{4095};
    if (void* p = map_huge_aligned(len)) {
      return at::from_blob(p, shape, [len](void* q) { ::munmap(q, len); }, options);
    }
  }
  return at::empty(shape, options);
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
