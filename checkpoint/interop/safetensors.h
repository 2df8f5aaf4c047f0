// Hugging Face safetensors files: read one into named tensors, write named tensors as one.
//
//   std::map<std::string, std::string> meta;
//   auto tensors = read_safetensors("model.safetensors", &meta);  // [(name, tensor), ...]
//   write_safetensors("out.safetensors", tensors, {{"format", "pt"}});
//
// The format: an 8-byte little-endian length N, N bytes of JSON
// {"__metadata__": {str: str}, name: {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}}
// (padded with spaces), then the tensors' raw little-endian bytes, tiling the rest of the
// file. Reading validates every field against the real file size before allocating and
// throws dtrain::CheckpointError naming the file, the tensor or field, and what was
// expected. Dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL. Thread-safe (no shared state).
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace dtrain::interop {

// Named tensors in file order.
using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Reads the safetensors file `path`: contiguous CPU tensors in the order of their data in
// the file (the order they were written), each read straight into its own buffer. When
// `metadata` is given, it receives the "__metadata__" map (empty when there is none).
// Throws dtrain::CheckpointError when the file cannot be read or is not valid.
NamedTensors read_safetensors(const std::string& path,
                              std::map<std::string, std::string>* metadata = nullptr);

// Checks the safetensors file `path` without reading tensor bytes: the header, and that
// the tensors tile the rest of the file exactly (a truncated or padded file does not).
// Throws dtrain::CheckpointError like read_safetensors.
void check_safetensors_layout(const std::string& path);

// The same, from the file's bytes in memory; `origin` names them in errors.
NamedTensors parse_safetensors(const std::string& bytes, const std::string& origin,
                               std::map<std::string, std::string>* metadata = nullptr);

// Writes `tensors` (in this order; names unique, not "__metadata__") and `metadata` to
// `path` atomically: streamed to an exclusive temporary (fs::temp_name_for), fsynced, renamed over `path`.
// Tensors on other devices or non-contiguous are written as their contiguous CPU copy.
// Throws dtrain::CheckpointError naming the tensor for an unsupported dtype or layout, a
// duplicate or reserved name, or a string that is not valid UTF-8; and naming the file
// when it cannot be written.
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace dtrain::interop
