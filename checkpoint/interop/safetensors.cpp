// Reading and writing safetensors files (see safetensors.h); validation follows the
// reference implementation (huggingface/safetensors), with messages that name the field.
#include "checkpoint/interop/safetensors.h"

#include "checkpoint/interop/buffers.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "runtime/base/error.h"
#include "runtime/base/env.h"
#include "runtime/base/fs.h"

// The format stores little-endian bytes; tensors are read and written as they lie in memory.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors I/O assumes a little-endian host");

namespace dtrain::interop {
namespace {

using Json = nlohmann::json;  // std::map objects: ordered_json looks keys up linearly

// The reference implementation's bound on the header length.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr const char* kMetadataKey = "__metadata__";

// A safetensors dtype that LibTorch 1.13 has.
struct Dtype {
  const char* name;
  at::ScalarType type;
  uint64_t size;
};
constexpr Dtype kDtypes[] = {{"F64", at::kDouble, 8}, {"F32", at::kFloat, 4},
                             {"F16", at::kHalf, 2},   {"BF16", at::kBFloat16, 2},
                             {"I64", at::kLong, 8},   {"I32", at::kInt, 4},
                             {"I16", at::kShort, 2},  {"I8", at::kChar, 1},
                             {"U8", at::kByte, 1},    {"BOOL", at::kBool, 1}};
// Dtypes of the format that have no LibTorch 1.13 type.
constexpr const char* kForeignDtypes[] = {"U16", "U32", "U64", "F8_E5M2", "F8_E4M3"};
constexpr const char* kDtypeList = "F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL";

// One tensor as the header describes it; `index` is its place in the header.
struct Entry {
  std::string name;
  const Dtype* dtype;
  std::vector<int64_t> shape;
  uint64_t begin;
  uint64_t end;
  size_t index;
};

// Copies `n` bytes at `offset` of the file into `dst`; throws when they are not all there.
using ReadAt = std::function<void(uint64_t offset, void* dst, uint64_t n)>;

CheckpointError Invalid(const std::string& origin, const std::string& what) {
  return CheckpointError(fmt::format("safetensors file '{}': {}", origin, what));
}

// `v` as compact JSON, cut to 200 characters (values in messages stay short).
std::string Brief(const Json& v) {
  std::string s = v.dump();
  return s.size() > 200 ? s.substr(0, 200) + "..." : s;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

// Throws unless a header of `n` bytes fits the bound and a file of `file_size` bytes.
void CheckHeaderLength(uint64_t n, uint64_t file_size, const std::string& origin) {
  if (n > kMaxHeaderBytes) {
    throw Invalid(
        origin, fmt::format("header length {} exceeds the limit of {} bytes", n, kMaxHeaderBytes));
  }
  if (n > file_size - 8) {
    throw Invalid(origin, fmt::format("header length {} runs past the end of the file ({} bytes, "
                                      "so at most {} bytes of header)",
                                      n, file_size, file_size - 8));
  }
}

// Parses the header text: one JSON object, no duplicate keys, at most three levels deep
// (header, entry, shape), the only nesting a valid header has. `order` receives each
// top-level key's place in the text.
Json ParseHeaderJson(const std::string& text, const std::string& origin,
                     std::unordered_map<std::string, size_t>* order) {
  if (text.empty() || text[0] != '{') {
    throw Invalid(origin, text.empty() ? std::string("the header is empty, expected a JSON object")
                                       : fmt::format("the header does not start with '{{' (a JSON "
                                                     "object); its first byte is 0x{:02x}",
                                                     static_cast<unsigned char>(text[0])));
  }
  std::vector<std::unordered_set<std::string>> keys;  // one set per open object
  std::string entry;                                  // the top-level key being parsed
  auto check = [&](int depth, Json::parse_event_t event, Json& parsed) {
    using E = Json::parse_event_t;
    if ((event == E::object_start || event == E::array_start) && depth >= 3) {
      throw Invalid(origin, fmt::format("the header nests objects or arrays deeper than a "
                                        "safetensors header can (under '{}')",
                                        entry));
    }
    if (event == E::object_start) keys.emplace_back();
    if (event == E::object_end) keys.pop_back();
    if (event == E::key) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (keys.size() == 1) {
        entry = key;
        order->emplace(key, order->size());
      }
      if (!keys.back().insert(key).second) {
        throw Invalid(origin,
                      keys.size() == 1
                          ? fmt::format("the header has the key '{}' twice", key)
                          : fmt::format("the header has the key '{}' twice in '{}'", key, entry));
      }
    }
    return true;
  };
  try {
    Json header = Json::parse(text, check);
    if (!header.is_object()) throw Invalid(origin, "the header is not a JSON object");
    return header;
  } catch (const nlohmann::json::exception& e) {
    throw Invalid(origin, fmt::format("the header is not valid JSON: {}", e.what()));
  }
}

const Dtype& ParseDtype(const Json& v, const std::string& where, const std::string& origin) {
  if (!v.is_string()) {
    throw Invalid(origin, fmt::format("{}: dtype must be a string, got {}", where, Brief(v)));
  }
  const auto& name = v.get_ref<const std::string&>();
  for (const Dtype& d : kDtypes) {
    if (name == d.name) return d;
  }
  for (const char* foreign : kForeignDtypes) {
    if (name == foreign) {
      throw Invalid(origin,
                    fmt::format("{}: dtype '{}' has no LibTorch 1.13 type (dtrain reads {})", where,
                                name, kDtypeList));
    }
  }
  throw Invalid(origin, fmt::format("{}: unknown dtype {} (expected one of {})", where, Brief(v),
                                    kDtypeList));
}

// The dims of `v`; throws unless they are non-negative integers whose element count,
// with zero dims counted as one, times `itemsize` fits in int64 (so that neither the
// byte size nor LibTorch's strides overflow).
std::vector<int64_t> ParseShape(const Json& v, uint64_t itemsize, const std::string& where,
                                const std::string& origin) {
  auto bad = [&] {
    return Invalid(origin,
                   fmt::format("{}: shape must be an array of non-negative integers, got {}", where,
                               Brief(v)));
  };
  if (!v.is_array()) throw bad();
  std::vector<int64_t> shape;
  shape.reserve(v.size());
  uint64_t span = itemsize;
  constexpr uint64_t kMax = std::numeric_limits<int64_t>::max();
  for (const Json& dim : v) {
    if (!dim.is_number_unsigned()) throw bad();
    const uint64_t d = dim.get<uint64_t>();
    if (d > kMax || __builtin_mul_overflow(span, std::max<uint64_t>(d, 1), &span) || span > kMax) {
      throw Invalid(origin, fmt::format("{}: shape {} is too large (its byte size overflows int64)",
                                        where, Brief(v)));
    }
    shape.push_back(static_cast<int64_t>(d));
  }
  return shape;
}

uint64_t ByteSize(const std::vector<int64_t>& shape, uint64_t itemsize) {
  uint64_t n = itemsize;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);  // ParseShape ruled out overflow
  return n;
}

Entry ParseEntry(const std::string& name, const Json& v, size_t index, const std::string& origin) {
  const std::string where = fmt::format("tensor '{}'", name);
  if (!v.is_object()) {
    throw Invalid(origin, fmt::format("{}: the entry must be an object with dtype, shape and "
                                      "data_offsets, got {}",
                                      where, Brief(v)));
  }
  static const std::set<std::string> kFields = {"dtype", "shape", "data_offsets"};
  for (const auto& item : v.items()) {
    if (!kFields.count(item.key())) {
      throw Invalid(origin, fmt::format("{}: unexpected field '{}' (an entry has exactly dtype, "
                                        "shape and data_offsets)",
                                        where, item.key()));
    }
  }
  for (const std::string& field : kFields) {
    if (!v.contains(field))
      throw Invalid(origin, fmt::format("{}: missing field '{}'", where, field));
  }
  Entry e{name, &ParseDtype(v["dtype"], where, origin), {}, 0, 0, index};
  e.shape = ParseShape(v["shape"], e.dtype->size, where, origin);
  const Json& off = v["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
      !off[1].is_number_unsigned() || off[0].get<uint64_t>() > off[1].get<uint64_t>()) {
    throw Invalid(origin, fmt::format("{}: data_offsets must be two non-decreasing non-negative "
                                      "integers [begin, end], got {}",
                                      where, Brief(off)));
  }
  e.begin = off[0].get<uint64_t>();
  e.end = off[1].get<uint64_t>();
  const uint64_t need = ByteSize(e.shape, e.dtype->size);
  if (e.end - e.begin != need) {
    throw Invalid(origin, fmt::format("{}: data_offsets [{}, {}] hold {} bytes, but dtype {} and "
                                      "shape {} need {}",
                                      where, e.begin, e.end, e.end - e.begin, e.dtype->name,
                                      ShapeString(e.shape), need));
  }
  return e;
}

std::map<std::string, std::string> ParseMetadata(const Json& v, const std::string& origin) {
  if (!v.is_object()) {
    throw Invalid(origin, fmt::format("'{}' must be an object of string values, got {}",
                                      kMetadataKey, Brief(v)));
  }
  std::map<std::string, std::string> out;
  for (const auto& item : v.items()) {
    if (!item.value().is_string()) {
      throw Invalid(origin, fmt::format("'{}': the value of '{}' must be a string, got {}",
                                        kMetadataKey, item.key(), Brief(item.value())));
    }
    out[item.key()] = item.value().get<std::string>();
  }
  return out;
}

// Throws unless the entries, sorted by offset, tile [0, data_size) exactly, as the
// reference implementation requires.
void CheckTiling(const std::vector<Entry>& entries, uint64_t data_size, const std::string& origin) {
  uint64_t pos = 0;
  const Entry* prev = nullptr;
  for (const Entry& e : entries) {
    if (e.end > data_size) {
      throw Invalid(origin, fmt::format("tensor '{}': data_offsets [{}, {}] run past the end of "
                                        "the data region ({} bytes after the header)",
                                        e.name, e.begin, e.end, data_size));
    }
    if (e.begin != pos) {
      const std::string before = prev ? fmt::format("tensor '{}' ends at byte {}", prev->name, pos)
                                      : std::string("the data region starts at byte 0");
      throw Invalid(origin, fmt::format("tensor '{}': data_offsets [{}, {}] {} ({}); the tensors "
                                        "must tile the data region without gaps or overlaps",
                                        e.name, e.begin, e.end,
                                        e.begin > pos ? "leave a gap" : "overlap", before));
    }
    pos = e.end;
    prev = &e;
  }
  if (pos != data_size) {
    throw Invalid(origin, fmt::format("the tensors' data ends at byte {} but the data region "
                                      "holds {} bytes (trailing bytes after the last tensor)",
                                      pos, data_size));
  }
}

// The header's tensors in data order, after every check that needs no tensor bytes.
std::vector<Entry> ParseLayout(const std::string& text, uint64_t data_size,
                               const std::string& origin,
                               std::map<std::string, std::string>* metadata) {
  std::unordered_map<std::string, size_t> order;
  const Json header = ParseHeaderJson(text, origin, &order);
  std::vector<Entry> entries;
  for (const auto& item : header.items()) {
    if (item.key() == kMetadataKey) {
      auto parsed = ParseMetadata(item.value(), origin);
      if (metadata) *metadata = std::move(parsed);
    } else {
      entries.push_back(ParseEntry(item.key(), item.value(), order.at(item.key()), origin));
    }
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.begin, a.end, a.index) < std::tie(b.begin, b.end, b.index);
  });
  CheckTiling(entries, data_size, origin);
  return entries;
}

// Validates a file of `file_size` bytes and reads its tensors with `read_at` (only the
// header when `tensors` is false).
NamedTensors ReadFrom(uint64_t file_size, const ReadAt& read_at, const std::string& origin,
                      std::map<std::string, std::string>* metadata, bool tensors = true) {
  if (file_size < 8) {
    throw Invalid(origin, fmt::format("the file is {} bytes, shorter than the 8-byte header "
                                      "length",
                                      file_size));
  }
  unsigned char len[8];
  read_at(0, len, 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  CheckHeaderLength(n, file_size, origin);
  std::string text(n, '\0');
  read_at(8, text.data(), n);
  std::map<std::string, std::string> meta;
  const std::vector<Entry> entries = ParseLayout(text, file_size - 8 - n, origin, &meta);
  NamedTensors out;
  if (!tensors) return out;
  out.reserve(entries.size());
  for (const Entry& e : entries) {
    at::Tensor t = empty_for_read(e.shape, e.dtype->type);
    if (e.end > e.begin) read_at(8 + n + e.begin, t.data_ptr(), e.end - e.begin);
    check_bool_bytes(t, fmt::format("safetensors file '{}': tensor '{}'", origin, e.name));
    out.emplace_back(e.name, std::move(t));
  }
  if (metadata) *metadata = std::move(meta);
  return out;
}

// Owns a POSIX file descriptor; closing is left to the owner when it must be checked.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes now; returns close(2)'s result.
  int close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

// pread(2) of exactly `n` bytes; throws on an error or an early end of file.
void PreadAll(int fd, uint64_t offset, void* dst, uint64_t n, const std::string& path) {
  size_t got = 0;
  try {
    got = fs::pread_upto(fd, offset, dst, static_cast<size_t>(n), path);
  } catch (const Error& e) {
    throw CheckpointError(fmt::format("cannot read safetensors file '{}': {}", path, e.what()));
  }
  if (got < n) throw Invalid(path, fmt::format("the file ended early at byte {}", offset + got));
}

// write(2) of all of `n` bytes.
void WriteAll(int fd, const void* src, uint64_t n, const std::string& path) {
  const auto* p = static_cast<const char*>(src);
  while (n > 0) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(n, 1u << 30));
    const ssize_t put = ::write(fd, p, chunk);
    if (put < 0 && errno == EINTR) continue;
    if (put < 0) {
      throw CheckpointError(fmt::format("cannot write '{}': {}", path, std::strerror(errno)));
    }
    p += put;
    n -= static_cast<uint64_t>(put);
  }
}

// The safetensors dtype of `t`; throws naming the tensor when it has none.
const Dtype& DtypeFor(const at::Tensor& t, const std::string& name, const std::string& path) {
  for (const Dtype& d : kDtypes) {
    if (t.scalar_type() == d.type) return d;
  }
  throw CheckpointError(
      fmt::format("cannot write safetensors file '{}': tensor '{}' has dtype {}, "
                  "which safetensors cannot hold (supported: {})",
                  path, name, c10::toString(t.scalar_type()), kDtypeList));
}

// `s` as a quoted JSON string; throws naming `what` unless it is valid UTF-8.
std::string JsonString(const std::string& s, const std::string& what, const std::string& path) {
  try {
    return Json(s).dump();
  } catch (const nlohmann::json::exception&) {
    throw CheckpointError(
        fmt::format("cannot write safetensors file '{}': {} is not valid UTF-8", path, what));
  }
}

// The contiguous CPU tensors to write, after checking names, dtypes and layouts.
NamedTensors Prepare(const NamedTensors& tensors, const std::string& path) {
  NamedTensors out;
  std::unordered_set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    auto fail = [&](const std::string& what) {
      return CheckpointError(
          fmt::format("cannot write safetensors file '{}': tensor '{}' {}", path, name, what));
    };
    if (name == kMetadataKey) throw fail("has the name reserved for the metadata");
    if (!seen.insert(name).second) throw fail("appears twice");
    if (!t.defined()) throw fail("is undefined");
    if (t.layout() != at::kStrided) throw fail("is not a dense (strided) tensor");
    DtypeFor(t, name, path);
    out.emplace_back(name, t.detach().cpu().contiguous());
  }
  return out;
}

// The length prefix and the header, padded with spaces so that the data starts at a
// multiple of 8 bytes. Written by hand, in the tensors' order, with "__metadata__" first.
std::string BuildHeader(const NamedTensors& tensors,
                        const std::map<std::string, std::string>& metadata,
                        const std::string& path) {
  std::vector<std::string> items;
  if (!metadata.empty()) {
    std::vector<std::string> pairs;
    for (const auto& [key, value] : metadata) {
      pairs.push_back(JsonString(key, fmt::format("the metadata key '{}'", key), path) + ":" +
                      JsonString(value, fmt::format("the metadata value of '{}'", key), path));
    }
    items.push_back(fmt::format("\"{}\":{{{}}}", kMetadataKey, fmt::join(pairs, ",")));
  }
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const uint64_t nbytes = t.numel() * t.element_size();
    items.push_back(fmt::format("{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
                                JsonString(name, fmt::format("the tensor name '{}'", name), path),
                                DtypeFor(t, name, path).name, fmt::join(t.sizes(), ","), offset,
                                offset + nbytes));
    offset += nbytes;
  }
  std::string text = fmt::format("{{{}}}", fmt::join(items, ","));
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + text;
}

// Writes the file at `tmp` and fsyncs it.
void WriteTemp(const std::string& tmp, const std::string& head, const NamedTensors& tensors) {
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (fd.get() < 0) {
    throw CheckpointError(fmt::format("cannot create '{}': {}", tmp, std::strerror(errno)));
  }
  WriteAll(fd.get(), head.data(), head.size(), tmp);
  for (const auto& item : tensors) {
    const at::Tensor& t = item.second;
    WriteAll(fd.get(), t.data_ptr(), t.numel() * t.element_size(), tmp);
  }
  if (::fsync(fd.get()) != 0 || fd.close() != 0) {
    throw CheckpointError(fmt::format("cannot write '{}': {}", tmp, std::strerror(errno)));
  }
}

}  // namespace

namespace {

// read_safetensors and check_safetensors_layout.
NamedTensors ReadPath(const std::string& path, std::map<std::string, std::string>* metadata,
                      bool tensors) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat st {};
  if (fd.get() < 0 || ::fstat(fd.get(), &st) != 0) {
    throw CheckpointError(
        fmt::format("cannot open safetensors file '{}': {}", path, std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) throw Invalid(path, "not a regular file");
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  auto read_at = [&](uint64_t offset, void* dst, uint64_t n) {
    PreadAll(fd.get(), offset, dst, n, path);
  };
  return ReadFrom(static_cast<uint64_t>(st.st_size), read_at, path, metadata, tensors);
}

}  // namespace

NamedTensors read_safetensors(const std::string& path,
                              std::map<std::string, std::string>* metadata) {
  return ReadPath(path, metadata, /*tensors=*/true);
}

void check_safetensors_layout(const std::string& path) {
  ReadPath(path, nullptr, /*tensors=*/false);
}

NamedTensors parse_safetensors(const std::string& bytes, const std::string& origin,
                               std::map<std::string, std::string>* metadata) {
  auto read_at = [&](uint64_t offset, void* dst, uint64_t n) {
    std::memcpy(dst, bytes.data() + offset, n);  // ReadFrom stays inside the size given
  };
  return ReadFrom(bytes.size(), read_at, origin, metadata);
}

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const NamedTensors prepared = Prepare(tensors, path);
  const std::string head = BuildHeader(prepared, metadata, path);
  const std::string tmp = fs::temp_name_for(path);
  try {
    WriteTemp(tmp, head, prepared);
    fs::rename_durable(tmp, path);
  } catch (const Error& e) {
    ::unlink(tmp.c_str());
    throw CheckpointError(e.what());
  }
}

}  // namespace dtrain::interop
