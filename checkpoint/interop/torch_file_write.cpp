// Writing torch.save's zip format (see torch_file.h): a protocol-2 pickle whose tensors
// are torch._utils._rebuild_tensor_v2 calls over persistent storage ids, one record each.
#include <cstring>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "checkpoint/interop/torch_file.h"
#include "checkpoint/interop/zip_archive.h"
#include "runtime/base/error.h"

namespace dtrain::interop {
namespace {

const char* storage_class(c10::ScalarType t) {
  switch (t) {
    case c10::kFloat: return "FloatStorage";
    case c10::kDouble: return "DoubleStorage";
    case c10::kHalf: return "HalfStorage";
    case c10::kBFloat16: return "BFloat16Storage";
    case c10::kLong: return "LongStorage";
    case c10::kInt: return "IntStorage";
    case c10::kShort: return "ShortStorage";
    case c10::kChar: return "CharStorage";
    case c10::kByte: return "ByteStorage";
    case c10::kBool: return "BoolStorage";
    case c10::kComplexFloat: return "ComplexFloatStorage";
    case c10::kComplexDouble: return "ComplexDoubleStorage";
    default: return nullptr;
  }
}

// Emits the pickle of a value tree; tensors are collected as storages to write.
class Pickler {
 public:
  explicit Pickler(std::string path) : path_(std::move(path)) {}
  void dump(const PyObject& root) {
    out_ += "\x80\x02";
    value(root, 0);
    out_ += '.';
  }
  const std::string& bytes() const { return out_; }
  const std::vector<at::Tensor>& storages() const { return storages_; }

 private:
  void op(char c) { out_ += c; }
  void u32(uint32_t v) { for (int k = 0; k < 4; ++k) out_ += static_cast<char>((v >> (8 * k)) & 0xFF); }
  void global(const char* module, const char* name) {
    out_ += fmt::format("c{}\n{}\n", module, name);
  }
  void str(const std::string& s) {
    op('X');
    u32(static_cast<uint32_t>(s.size()));
    out_ += s;
  }
  void integer(int64_t v) {
    if (v >= INT32_MIN && v <= INT32_MAX) {
      op('J');
      u32(static_cast<uint32_t>(static_cast<int32_t>(v)));
      return;
    }
    out_ += "\x8a\x08";
    for (int k = 0; k < 8; ++k) out_ += static_cast<char>((static_cast<uint64_t>(v) >> (8 * k)) & 0xFF);
  }
  void real(double f) {
    uint64_t bits;
    std::memcpy(&bits, &f, 8);
    op('G');
    for (int k = 7; k >= 0; --k) out_ += static_cast<char>((bits >> (8 * k)) & 0xFF);
  }
  void int_tuple(at::IntArrayRef v) {
    op('(');
    for (int64_t x : v) integer(x);
    op('t');
  }
  void tensor(const at::Tensor& t);
  void value(const PyObject& v, int depth);

  std::string path_;
  std::string out_;
  std::vector<at::Tensor> storages_;
};

void Pickler::tensor(const at::Tensor& src) {
  DTRAIN_CHECK_T(CheckpointError, src.layout() == at::kStrided, "writing '{}': a tensor is not "
                 "dense", path_);
  const char* cls = storage_class(src.scalar_type());
  DTRAIN_CHECK_T(CheckpointError, cls != nullptr, "writing '{}': dtype {} has no torch storage "
                 "class", path_, c10::toString(src.scalar_type()));
  at::Tensor t = src.detach().to(at::kCPU).contiguous();
  const std::string key = std::to_string(storages_.size());
  storages_.push_back(t);
  global("torch._utils", "_rebuild_tensor_v2");
  op('(');
  op('(');  // the persistent id
  str("storage");
  global("torch", cls);
  str(key);
  str("cpu");
  integer(t.numel());
  op('t');
  op('Q');
  integer(0);
  int_tuple(t.sizes());
  int_tuple(t.strides());
  op('\x89');  // requires_grad False
  global("collections", "OrderedDict");
  op(')');
  op('R');
  op('t');
  op('R');
}

void Pickler::value(const PyObject& v, int depth) {
  DTRAIN_CHECK_T(CheckpointError, depth < 100, "writing '{}': values nest too deep", path_);
  switch (v.type) {
    case PyType::kNone: op('N'); return;
    case PyType::kBool: op(v.i ? '\x88' : '\x89'); return;
    case PyType::kInt: integer(v.i); return;
    case PyType::kFloat: real(v.f); return;
    case PyType::kStr: str(v.str()); return;
    case PyType::kTensor: tensor(v.tensor); return;
    case PyType::kList:
      op(']');
      if (v.items.empty()) return;
      op('(');
      for (const auto* item : v.items) value(*item, depth + 1);
      op('e');
      return;
    case PyType::kTuple:
      op('(');
      for (const auto* item : v.items) value(*item, depth + 1);
      op('t');
      return;
    case PyType::kDict:
      if (v.ordered) {
        global("collections", "OrderedDict");
        op(')');
        op('R');
      } else {
        op('}');
      }
      for (size_t k = 0; k < v.entries.size(); k += 1000) {  // pickle's batches of 1000
        op('(');
        for (size_t e = k; e < std::min(v.entries.size(), k + 1000); ++e) {
          value(*v.entries[e].first, depth + 1);
          value(*v.entries[e].second, depth + 1);
        }
        op('u');
      }
      return;
    default:
      throw CheckpointError(fmt::format("writing '{}': a {} cannot be written", path_,
                                        v.type_name()));
  }
}

}  // namespace

void write_torch_file(const std::string& path, const PyObject& root) {
  Pickler pickler(path);
  pickler.dump(root);
  const std::string archive = "archive";
  ZipWriter zip(path);
  zip.add(archive + "/data.pkl", pickler.bytes().data(), pickler.bytes().size());
  static const char kByteOrder[] = "little";
  zip.add(archive + "/byteorder", kByteOrder, sizeof kByteOrder - 1);
  const auto& storages = pickler.storages();
  for (size_t k = 0; k < storages.size(); ++k) {
    const at::Tensor& t = storages[k];
    zip.add(fmt::format("{}/data/{}", archive, k), t.data_ptr(),
            static_cast<uint64_t>(t.numel()) * t.element_size());
  }
  static const char kVersion[] = "3\n";
  zip.add(archive + "/version", kVersion, sizeof kVersion - 1);
  zip.close();
}

}  // namespace dtrain::interop
