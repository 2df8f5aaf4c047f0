// Handle ownership, the HDF5 library lock and error-stack formatting (see handle.h).
#include "checkpoint/h5/handle.h"

#include <vector>

#include "runtime/base/error.h"

namespace dtrain::checkpoint::h5 {
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

std::string error_stack_message() {
  WalkState state;
  // Downward: from the API function the caller called to the innermost failure.
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_entry, &state);
  H5Eclear2(H5E_DEFAULT);
  if (state.entries.empty()) return "no HDF5 error message";
  std::string out;
  for (const std::string& e : state.entries) {
    if (!out.empty()) out += "; ";
    out += e;
  }
  return out;
}

void throw_error(const std::string& operation) {
  std::string stack;
  {
    // Only the lock: H5Eget_auto2/H5Eset_auto2 (an ErrorSilencer) would clear the stack.
    std::lock_guard<std::recursive_mutex> lock(library_mutex());
    stack = error_stack_message();
  }
  throw CheckpointError(operation + ": HDF5: " + stack);
}

Handle& Handle::operator=(Handle&& other) noexcept {
  if (this != &other) {
    reset();
    id_ = std::exchange(other.id_, H5I_INVALID_HID);
    close_fn_ = other.close_fn_;
  }
  return *this;
}

void Handle::close(const std::string& what) {
  if (!valid()) return;
  ApiScope scope;
  const hid_t id = std::exchange(id_, H5I_INVALID_HID);
  check(close_fn_(id), "closing {}", what);
}

void Handle::reset() noexcept {
  if (!valid()) return;
  try {
    ApiScope scope;
    close_fn_(id_);
    H5Eclear2(H5E_DEFAULT);
  } catch (...) {
    // Locking cannot fail in practice; a destructor must not throw either way.
  }
  id_ = H5I_INVALID_HID;
}

}  // namespace dtrain::checkpoint::h5
