// IDX files (the MNIST / Fashion-MNIST format), gzip-compressed or plain, read through
// zlib with every header field checked before anything is allocated.
//
//   IdxArray images = read_idx("train-images-idx3-ubyte.gz", /*rank=*/3);  // [N, 28, 28]
//
// Layout: 2 zero bytes, a type byte (0x08: uint8), a rank byte, then `rank` big-endian
// uint32 extents, then the data, row-major. Only uint8 data is read. Thread-safe:
// read_idx shares no state between calls.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace dtrain::data {

struct IdxArray {
  std::vector<int64_t> dims;
  at::Tensor data;  // uint8, shape `dims`
};

// Reads an IDX file of uint8 data with `rank` axes, at most `max_bytes` of data. Throws
// dtrain::Error naming the file and what is wrong: missing, not IDX (magic), another
// type or rank, an extent of 0 or a size over the cap, truncated, or trailing bytes.
IdxArray read_idx(const std::string& path, int rank, int64_t max_bytes = int64_t{1} << 30);

}  // namespace dtrain::data
