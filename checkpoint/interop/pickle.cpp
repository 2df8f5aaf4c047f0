// The restricted unpickler's opcode loop (see pickle.h); the allowed globals are in
// pickle_globals.cpp.
#include "checkpoint/interop/pickle.h"

#include <cmath>
#include <cstring>
#include <unordered_map>

#include <fmt/format.h>

#include "checkpoint/interop/pickle_globals.h"
#include "runtime/base/error.h"

namespace dtrain::interop {

const PyObject* PyObject::get(const std::string& key) const {
  if (type != PyType::kDict) return nullptr;
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {  // the later key wins
    if (it->first->type == PyType::kStr && it->first->str() == key) return it->second;
  }
  return nullptr;
}

std::string PyObject::type_name() const {
  switch (type) {
    case PyType::kNone: return "None";
    case PyType::kBool: return "bool";
    case PyType::kInt: return "int";
    case PyType::kFloat: return "float";
    case PyType::kStr: return "str";
    case PyType::kBytes: return "bytes";
    case PyType::kList: return "list";
    case PyType::kTuple: return "tuple";
    case PyType::kDict: return ordered ? "OrderedDict" : "dict";
    case PyType::kSet: return "set";
    case PyType::kTensor: return "Tensor";
    case PyType::kStorage: return "Storage";
    case PyType::kGlobal: return s;
    case PyType::kDtype: return "numpy.dtype";
    case PyType::kArray: return "numpy.ndarray";
  }
  return "?";
}

std::string PyObject::str() const {
  if (!latin1) return s;
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else {
      out += static_cast<char>(0xC0 | (c >> 6));
      out += static_cast<char>(0x80 | (c & 0x3F));
    }
  }
  return out;
}

PyObject* PyHeap::make(PyType type, const std::string& origin) {
  DTRAIN_CHECK_T(CheckpointError, objects_.size() < kMaxObjects,
                 "'{}': the pickle creates more than {} objects; refused", origin, kMaxObjects);
  objects_.emplace_back();
  objects_.back().type = type;
  return &objects_.back();
}

namespace {

// The state of one unpickling: the input, the stack, the marks and the memo.
class Unpickler {
 public:
  Unpickler(std::string_view data, size_t pos, PyHeap& heap, const UnpickleOptions& options)
      : data_(data), pos_(pos), heap_(heap), options_(options), ctx_{heap, options.origin} {}

  const PyObject* run();
  size_t pos() const { return pos_; }

 private:
  [[noreturn]] void fail(const std::string& what) const;
  // Input.
  const char* take(uint64_t n);
  uint64_t read_le(int bytes);
  std::string_view read_line();
  // Stack.
  PyObject* pop();
  PyObject* top();
  std::vector<PyObject*> pop_mark();
  void push(PyObject* o) {
    DTRAIN_CHECK_T(CheckpointError, stack_.size() < PyHeap::kMaxObjects,
                   "'{}': pickle stack too deep", options_.origin);
    stack_.push_back(o);
  }
  PyObject* make(PyType t) { return heap_.make(t, options_.origin); }
  void nest(PyObject* container, const PyObject* child);
  // Values.
  void push_int(int64_t v) { auto* o = make(PyType::kInt); o->i = v; push(o); }
  void push_long(const char* bytes, uint64_t n);
  void push_text_int(std::string_view line);
  void push_str(std::string_view s, PyType type, bool latin1 = false);
  void push_tuple(std::vector<PyObject*> items);
  void set_items(PyObject* dict, const std::vector<PyObject*>& kv);
  void append_items(PyObject* list, const std::vector<PyObject*>& items);
  void memo_put(uint64_t index);
  PyObject* memo_get(uint64_t index);
  bool step(uint8_t op);

  std::string_view data_;
  size_t pos_;
  size_t op_pos_ = 0;
  uint8_t op_ = 0;
  PyHeap& heap_;
  const UnpickleOptions& options_;
  internal::PickleContext ctx_;
  std::vector<PyObject*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PyObject*> memo_;
};

void Unpickler::fail(const std::string& what) const {
  throw CheckpointError(fmt::format("'{}': malformed pickle at byte {} (opcode 0x{:02x}): {}",
                                    options_.origin, op_pos_, op_, what));
}

const char* Unpickler::take(uint64_t n) {
  if (n > data_.size() - pos_) {
    fail(fmt::format("needs {} more bytes but the data ends after {}", n, data_.size() - pos_));
  }
  const char* p = data_.data() + pos_;
  pos_ += n;
  return p;
}

uint64_t Unpickler::read_le(int bytes) {
  const auto* p = reinterpret_cast<const unsigned char*>(take(bytes));
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::string_view Unpickler::read_line() {
  const size_t end = data_.find('\n', pos_);
  if (end == std::string_view::npos || end - pos_ > 4096) fail("a text argument has no newline");
  std::string_view line = data_.substr(pos_, end - pos_);
  pos_ = end + 1;
  return line;
}

PyObject* Unpickler::pop() {
  const size_t floor = marks_.empty() ? 0 : marks_.back();
  if (stack_.size() <= floor) fail("pops from an empty stack");
  PyObject* o = stack_.back();
  stack_.pop_back();
  return o;
}

PyObject* Unpickler::top() {
  const size_t floor = marks_.empty() ? 0 : marks_.back();
  if (stack_.size() <= floor) fail("reads an empty stack");
  return stack_.back();
}

std::vector<PyObject*> Unpickler::pop_mark() {
  if (marks_.empty()) fail("needs a MARK but there is none");
  const size_t mark = marks_.back();
  marks_.pop_back();
  std::vector<PyObject*> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
  stack_.resize(mark);
  return items;
}

void Unpickler::nest(PyObject* container, const PyObject* child) {
  container->depth = std::max(container->depth, child->depth + 1);
  if (container->depth > options_.max_depth) {
    fail(fmt::format("values nest deeper than {} levels", options_.max_depth));
  }
}

void Unpickler::push_long(const char* bytes, uint64_t n) {
  if (n > 8) {
    // Accept only redundant sign bytes beyond 64 bits.
    const bool negative = (static_cast<unsigned char>(bytes[n - 1]) & 0x80) != 0;
    for (uint64_t k = 8; k < n; ++k) {
      if (static_cast<unsigned char>(bytes[k]) != (negative ? 0xFF : 0x00)) {
        fail("an integer does not fit in 64 bits");
      }
    }
    if (((static_cast<unsigned char>(bytes[7]) & 0x80) != 0) != negative) {
      fail("an integer does not fit in 64 bits");
    }
    n = 8;
  }
  uint64_t v = 0;
  for (uint64_t k = 0; k < n; ++k) v |= uint64_t{static_cast<unsigned char>(bytes[k])} << (8 * k);
  if (n > 0 && n < 8 && (static_cast<unsigned char>(bytes[n - 1]) & 0x80)) v |= ~uint64_t{0} << (8 * n);
  push_int(static_cast<int64_t>(v));
}

void Unpickler::push_text_int(std::string_view line) {
  if (!line.empty() && line.back() == 'L') line.remove_suffix(1);
  if (line == "00" || line == "01") {
    auto* o = make(PyType::kBool);
    o->i = line == "01";
    push(o);
    return;
  }
  const std::string text(line);
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno == ERANGE) fail("a text integer is malformed or too large");
  push_int(v);
}

void Unpickler::push_str(std::string_view s, PyType type, bool latin1) {
  auto* o = make(type);
  o->s.assign(s.data(), s.size());
  o->latin1 = latin1;
  push(o);
}

void Unpickler::push_tuple(std::vector<PyObject*> items) {
  auto* t = make(PyType::kTuple);
  for (auto* item : items) nest(t, item);
  t->items = std::move(items);
  push(t);
}

void Unpickler::set_items(PyObject* dict, const std::vector<PyObject*>& kv) {
  if (dict->type != PyType::kDict) fail(fmt::format("SETITEM(S) on a {}", dict->type_name()));
  if (kv.size() % 2) fail("SETITEMS with an odd number of items");
  for (size_t k = 0; k < kv.size(); k += 2) {
    // Equal keys are kept as they come; readers of the tree let the later one win, as
    // Python's dict does.
    nest(dict, kv[k + 1]);
    dict->entries.emplace_back(kv[k], kv[k + 1]);
  }
}

void Unpickler::append_items(PyObject* list, const std::vector<PyObject*>& items) {
  if (list->type != PyType::kList && list->type != PyType::kSet) {
    fail(fmt::format("APPEND(S)/ADDITEMS on a {}", list->type_name()));
  }
  for (auto* item : items) nest(list, item);
  list->items.insert(list->items.end(), items.begin(), items.end());
}

void Unpickler::memo_put(uint64_t index) { memo_[index] = top(); }

PyObject* Unpickler::memo_get(uint64_t index) {
  auto it = memo_.find(index);
  if (it == memo_.end()) fail(fmt::format("memo entry {} was never stored", index));
  return it->second;
}

// Executes one opcode; false at STOP.
bool Unpickler::step(uint8_t op) {
  switch (op) {
    case 0x80: {  // PROTO
      const uint64_t proto = read_le(1);
      if (proto > 5) fail(fmt::format("pickle protocol {} is newer than 5", proto));
      return true;
    }
    case 0x95: take(8); return true;                    // FRAME: framing only
    case '.': return false;                             // STOP
    case '(': marks_.push_back(stack_.size()); return true;  // MARK
    case '0':  // POP (as Python: pops the mark when nothing lies above it)
      if (stack_.size() > (marks_.empty() ? 0 : marks_.back()) || marks_.empty()) {
        pop();
      } else {
        pop_mark();
      }
      return true;
    case '1': pop_mark(); return true;                  // POP_MARK
    case '2': push(top()); return true;                 // DUP
    case 'N': push(make(PyType::kNone)); return true;   // NONE
    case 0x88: case 0x89: {                             // NEWTRUE, NEWFALSE
      auto* o = make(PyType::kBool);
      o->i = op == 0x88;
      push(o);
      return true;
    }
    case 'J': push_int(static_cast<int32_t>(read_le(4))); return true;  // BININT
    case 'K': push_int(static_cast<int64_t>(read_le(1))); return true;  // BININT1
    case 'M': push_int(static_cast<int64_t>(read_le(2))); return true;  // BININT2
    case 0x8a: { const uint64_t n = read_le(1); push_long(take(n), n); return true; }  // LONG1
    case 0x8b: {  // LONG4
      const uint64_t n = read_le(4);
      if (n > 0x7fffffff) fail("LONG4 with a negative length");
      push_long(take(n), n);
      return true;
    }
    case 'I': case 'L': push_text_int(read_line()); return true;  // INT, LONG
    case 'G': {  // BINFLOAT (big-endian)
      const auto* p = reinterpret_cast<const unsigned char*>(take(8));
      uint64_t bits = 0;
      for (int k = 0; k < 8; ++k) bits = (bits << 8) | p[k];
      auto* o = make(PyType::kFloat);
      std::memcpy(&o->f, &bits, 8);
      push(o);
      return true;
    }
    case 'F': {  // FLOAT (text)
      const std::string text(read_line());
      char* end = nullptr;
      auto* o = make(PyType::kFloat);
      o->f = std::strtod(text.c_str(), &end);
      if (text.empty() || *end != '\0') fail("a text float is malformed");
      push(o);
      return true;
    }
    case 0x8c: { const uint64_t n = read_le(1); push_str({take(n), n}, PyType::kStr); return true; }
    case 'X': { const uint64_t n = read_le(4); push_str({take(n), n}, PyType::kStr); return true; }
    case 0x8d: { const uint64_t n = read_le(8); push_str({take(n), n}, PyType::kStr); return true; }
    case 'V': {  // UNICODE (protocol 0, raw-unicode-escape): plain ASCII only
      std::string_view line = read_line();
      if (line.find('\\') != std::string_view::npos) fail("escaped text (protocol 0) is not read");
      push_str(line, PyType::kStr);
      return true;
    }
    case 'U': { const uint64_t n = read_le(1); push_str({take(n), n}, PyType::kStr, true); return true; }
    case 'T': {  // BINSTRING (Python 2 str, read as latin-1)
      const uint64_t n = read_le(4);
      if (n > 0x7fffffff) fail("BINSTRING with a negative length");
      push_str({take(n), n}, PyType::kStr, true);
      return true;
    }
    case 'C': { const uint64_t n = read_le(1); push_str({take(n), n}, PyType::kBytes); return true; }
    case 'B': { const uint64_t n = read_le(4); push_str({take(n), n}, PyType::kBytes); return true; }
    case 0x8e: case 0x96: {  // BINBYTES8, BYTEARRAY8
      const uint64_t n = read_le(8);
      push_str({take(n), n}, PyType::kBytes);
      return true;
    }
    case ']': push(make(PyType::kList)); return true;   // EMPTY_LIST
    case '}': push(make(PyType::kDict)); return true;   // EMPTY_DICT
    case 0x8f: push(make(PyType::kSet)); return true;   // EMPTY_SET
    case ')': push_tuple({}); return true;               // EMPTY_TUPLE
    case 't': push_tuple(pop_mark()); return true;       // TUPLE
    case 0x85: case 0x86: case 0x87: {                   // TUPLE1..3
      std::vector<PyObject*> items(op - 0x84);
      for (auto it = items.rbegin(); it != items.rend(); ++it) *it = pop();
      push_tuple(std::move(items));
      return true;
    }
    case 'l': {  // LIST
      auto items = pop_mark();
      auto* list = make(PyType::kList);
      append_items(list, items);
      push(list);
      return true;
    }
    case 'd': {  // DICT
      auto items = pop_mark();
      auto* dict = make(PyType::kDict);
      set_items(dict, items);
      push(dict);
      return true;
    }
    case 0x91: {  // FROZENSET
      auto items = pop_mark();
      auto* set = make(PyType::kSet);
      append_items(set, items);
      push(set);
      return true;
    }
    case 'a': { PyObject* v = pop(); append_items(top(), {v}); return true; }  // APPEND
    case 'e': case 0x90: {  // APPENDS, ADDITEMS
      auto items = pop_mark();
      append_items(top(), items);
      return true;
    }
    case 's': {  // SETITEM
      PyObject* v = pop();
      PyObject* k = pop();
      set_items(top(), {k, v});
      return true;
    }
    case 'u': { auto kv = pop_mark(); set_items(top(), kv); return true; }  // SETITEMS
    case 'p': {  // PUT
      const std::string text(read_line());
      char* end = nullptr;
      const unsigned long long index = std::strtoull(text.c_str(), &end, 10);
      if (text.empty() || *end != '\0') fail("a PUT index is malformed");
      memo_put(index);
      return true;
    }
    case 'q': memo_put(read_le(1)); return true;         // BINPUT
    case 'r': memo_put(read_le(4)); return true;         // LONG_BINPUT
    case 0x94: memo_put(memo_.size()); return true;      // MEMOIZE
    case 'g': {  // GET
      const std::string text(read_line());
      char* end = nullptr;
      const unsigned long long index = std::strtoull(text.c_str(), &end, 10);
      if (text.empty() || *end != '\0') fail("a GET index is malformed");
      push(memo_get(index));
      return true;
    }
    case 'h': push(memo_get(read_le(1))); return true;   // BINGET
    case 'j': push(memo_get(read_le(4))); return true;   // LONG_BINGET
    case 'c': {  // GLOBAL
      const std::string module(read_line());
      const std::string name(read_line());
      push_str(internal::resolve_global(module, name, options_.origin), PyType::kGlobal);
      return true;
    }
    case 0x93: {  // STACK_GLOBAL
      PyObject* name = pop();
      PyObject* module = pop();
      if (name->type != PyType::kStr || module->type != PyType::kStr) {
        fail("STACK_GLOBAL needs two strings");
      }
      push_str(internal::resolve_global(module->str(), name->str(), options_.origin),
               PyType::kGlobal);
      return true;
    }
    case 'R': case 0x81: {  // REDUCE, NEWOBJ
      PyObject* args = pop();
      PyObject* callable = pop();
      if (args->type != PyType::kTuple) fail("the arguments of a call are not a tuple");
      PyObject* result = internal::call_global(*callable, *args, ctx_);
      nest(result, args);
      result->depth = std::max(result->depth - 1, 0);
      push(result);
      return true;
    }
    case 'b': {  // BUILD
      PyObject* state = pop();
      internal::build_object(*top(), *state, ctx_);
      return true;
    }
    case 'Q': {  // BINPERSID
      PyObject* pid = pop();
      if (!options_.persistent_load) fail("a persistent id, but this file format has none");
      push(options_.persistent_load(*pid, heap_));
      return true;
    }
    case 'P': fail("text persistent ids (PERSID) are not read");
    case 'i': case 'o': case 0x92:
      fail("INST/OBJ/NEWOBJ_EX build instances of classes, which are never executed");
    case 0x82: case 0x83: case 0x84: fail("extension codes (EXT1/2/4) are not read");
    case 0x97: case 0x98: fail("out-of-band buffers (protocol 5) are not read");
    case 'S': fail("quoted text strings (protocol 0 STRING) are not read");
    default: fail("unknown opcode");
  }
}

const PyObject* Unpickler::run() {
  while (true) {
    op_pos_ = pos_;
    op_ = static_cast<uint8_t>(*take(1));
    try {
      if (!step(op_)) break;
    } catch (const CheckpointError& e) {
      const std::string what = e.what();
      if (what.find("malformed pickle at byte") != std::string::npos) throw;
      throw CheckpointError(fmt::format("{} (pickle byte {}, opcode 0x{:02x})", what, op_pos_, op_));
    }
  }
  if (stack_.size() != 1 || !marks_.empty()) {
    fail(fmt::format("STOP leaves {} values and {} marks; expected exactly one value",
                     stack_.size(), marks_.size()));
  }
  return stack_.back();
}

}  // namespace

const PyObject* unpickle(std::string_view data, size_t* pos, PyHeap& heap,
                         const UnpickleOptions& options) {
  DTRAIN_CHECK_T(CheckpointError, *pos <= data.size(), "'{}': pickle offset {} past the end",
                 options.origin, *pos);
  Unpickler u(data, *pos, heap, options);
  const PyObject* root = u.run();
  *pos = u.pos();
  return root;
}

}  // namespace dtrain::interop
