// Handle ownership, the HDF5 library lock and error-stack formatting (see handle.h).
#include "runtime/h5/handle.h"

#include <atomic>
#include <vector>

#include "runtime/base/error.h"

namespace dtrain::h5 {
namespace {

struct WalkState {
  std::vector<std::string> entries;
};

herr_t collect_entry(unsigned /*n*/, const H5E_error2_t* err, void* client_data) {
  auto* state = static_cast<WalkState*>(client_data);
  std::string entry = err->func_name ? std::string(err->func_name) + "(): " : std::string();
  entry += err->desc ? err->desc : "(no description)";
  // Some descriptions embed ctime()'s newline ("time = ...\n, name = ..."): one line.
  for (size_t i = entry.find('\n'); i != std::string::npos; i = entry.find('\n', i)) {
    const bool before_comma = i + 1 < entry.size() && entry[i + 1] == ',';
    entry.replace(i, 1, before_comma ? "" : " ");
  }
  if (state->entries.empty() || state->entries.back() != entry) {
    state->entries.push_back(std::move(entry));
  }
  return 0;
}

// The text between `key = '` and the next `'` in `entry` ("" when absent).
std::string quoted_field(const std::string& entry, const std::string& key) {
  const std::string open = key + " = '";
  const size_t start = entry.find(open);
  if (start == std::string::npos) return "";
  const size_t from = start + open.size();
  const size_t end = entry.find('\'', from);
  return end == std::string::npos ? "" : entry.substr(from, end - from);
}

// The operating system's error behind a failed read or write, from the file driver's
// entry ("file write failed: ..., filename = 'f.h5', ..., errno = 28, error message = 'No
// space left on device', ..."): "No space left on device (writing 'f.h5')"; "" if none.
std::string os_error_of(const std::vector<std::string>& entries) {
  for (const std::string& e : entries) {
    const std::string message = quoted_field(e, "error message");
    if (message.empty() || e.find("errno = ") == std::string::npos) continue;
    const std::string file = quoted_field(e, "filename");
    const char* verb = e.find("write failed") != std::string::npos  ? "writing"
                       : e.find("read failed") != std::string::npos ? "reading"
                                                                    : "accessing";
    return file.empty() ? message : fmt::format("{} ({} '{}')", message, verb, file);
  }
  return "";
}

constexpr size_t kMaxStackChars = 600;

}  // namespace

std::recursive_mutex& library_mutex() {
  static std::recursive_mutex mutex;
  return mutex;
}

ErrorSilencer::ErrorSilencer() {
  if (H5Eget_auto2(H5E_DEFAULT, &saved_func_, &saved_data_) >= 0) {
    restore_ = H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr) >= 0;
  }
}

ErrorSilencer::~ErrorSilencer() {
  if (restore_) H5Eset_auto2(H5E_DEFAULT, saved_func_, saved_data_);
}

namespace {

// The entries of the current error stack, which is then cleared.
std::vector<std::string> take_error_stack() {
  WalkState state;
  // Downward: from the API function the caller called to the innermost failure.
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_entry, &state);
  H5Eclear2(H5E_DEFAULT);
  return std::move(state.entries);
}

std::string joined(const std::vector<std::string>& entries) {
  if (entries.empty()) return "no HDF5 error message";
  std::string out;
  for (const std::string& e : entries) {
    if (!out.empty()) out += "; ";
    out += e;
  }
  return out;
}

}  // namespace

std::string error_stack_message() { return joined(take_error_stack()); }

std::string library_version() {
  unsigned major = 0, minor = 0, release = 0;
  {
    ApiScope scope;  // other threads may be writing (HDF5 is not built thread-safe here)
    H5get_libversion(&major, &minor, &release);
  }
  return fmt::format("{}.{}.{}", major, minor, release);
}

std::string error_message(const std::string& operation, const std::vector<std::string>& stack) {
  const std::string os_error = os_error_of(stack);
  std::string detail = joined(stack);
  if (os_error.empty()) return operation + ": HDF5: " + detail;
  // The OS error first: the HDF5 stack of a full disk is ~900 characters of driver detail.
  if (detail.size() > kMaxStackChars) {
    detail = fmt::format("{} ... ({} characters in all)", detail.substr(0, kMaxStackChars),
                         detail.size());
  }
  return fmt::format("{}: {}: HDF5: {}", os_error, operation, detail);
}

void throw_error(const std::string& operation) {
  std::vector<std::string> stack;
  {
    // Only the lock: H5Eget_auto2/H5Eset_auto2 (an ErrorSilencer) would clear the stack.
    std::lock_guard<std::recursive_mutex> lock(library_mutex());
    stack = take_error_stack();
  }
  throw H5Error(error_message(operation, stack));
}

Handle& Handle::operator=(Handle&& other) noexcept {
  if (this != &other) {
    reset();
    id_ = std::exchange(other.id_, H5I_INVALID_HID);
    close_fn_ = other.close_fn_;
  }
  return *this;
}

namespace {

std::atomic<bool> g_file_close_failed{false};

// Closes `id` with `close_fn`, noting a failed H5Fclose (see file_close_failed()).
herr_t close_noting(Handle::CloseFn close_fn, hid_t id) {
  const herr_t result = close_fn(id);
  if (result < 0 && close_fn == &H5Fclose) g_file_close_failed.store(true);
  return result;
}

}  // namespace

bool file_close_failed() { return g_file_close_failed.load(); }

void Handle::close(const std::string& what) {
  if (!valid()) return;
  ApiScope scope;
  const hid_t id = std::exchange(id_, H5I_INVALID_HID);
  check(close_noting(close_fn_, id), "closing {}", what);
}

void Handle::reset() noexcept {
  if (!valid()) return;
  try {
    ApiScope scope;
    close_noting(close_fn_, id_);
    H5Eclear2(H5E_DEFAULT);
  } catch (...) {
    // Locking cannot fail in practice; a destructor must not throw either way.
  }
  id_ = H5I_INVALID_HID;
}

}  // namespace dtrain::h5
