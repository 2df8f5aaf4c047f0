// The bottom of the h5 layer: RAII ownership of HDF5 identifiers, the process-wide lock
// every HDF5 call runs under, and conversion of HDF5's error stack into h5::H5Error.
//
//   h5::ApiScope scope;                                  // lock + silence auto-printing
//   hid_t id = h5::check_id(H5Gopen2(loc, "a", H5P_DEFAULT), "opening group 'a' in {}", f);
//   h5::Handle group(id, H5Gclose);                      // H5Gclose at scope exit
//
// Errors: every failed call throws h5::H5Error "<operation>: HDF5: <stack>",
// where <stack> lists HDF5's own messages, outermost first ("H5Fopen(): unable to open
// file; ... errno = 2, error message = 'No such file or directory'").
//
// Thread-safety: Debian's parallel HDF5 1.10 is not built thread-safe, so every call
// into HDF5 made by this layer holds library_mutex(). Code that calls HDF5 directly
// (e.g. on Handle::id()) must hold an ApiScope too.
#pragma once

#include <hdf5.h>

#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "runtime/base/error.h"

namespace dtrain::h5 {

// Every failure of this layer: a failed HDF5 call or a file that is not what the caller
// asked for (a missing dataset, a wrong type or shape). Messages name the file and the
// object. The layer serves checkpoints and training data alike, so it says nothing of
// either: checkpoint/ turns an H5Error into a CheckpointError at its boundary
// (checkpoint/h5_boundary.h), and a data set's error names its file as a data error.
class H5Error : public Error {
 public:
  using Error::Error;
};

// HDF5's version as "major.minor.release" (e.g. "1.10.8").
std::string library_version();

// The process-wide (recursive) lock that serializes all HDF5 calls.
std::recursive_mutex& library_mutex();

// Turns off HDF5's automatic printing of its error stack to stderr (H5Eset_auto2) for
// its lifetime and restores the previous handler afterwards. Hold library_mutex()
// while one exists (ApiScope does both). Not copyable.
class ErrorSilencer {
 public:
  ErrorSilencer();
  ~ErrorSilencer();
  ErrorSilencer(const ErrorSilencer&) = delete;
  ErrorSilencer& operator=(const ErrorSilencer&) = delete;

 private:
  H5E_auto2_t saved_func_ = nullptr;
  void* saved_data_ = nullptr;
  bool restore_ = false;
};

// What every wrapper holds while it calls HDF5: library_mutex() plus an ErrorSilencer.
// Nests freely (the mutex is recursive).
class ApiScope {
 public:
  ApiScope() : lock_(library_mutex()) {}

 private:
  std::lock_guard<std::recursive_mutex> lock_;
  ErrorSilencer silencer_;
};

// The calling thread's HDF5 error stack as one line, outermost call first, entries
// separated by "; " (consecutive duplicates dropped); then clears the stack. Returns
// "no HDF5 error message" when the stack is empty. Call under an ApiScope.
std::string error_stack_message();

// The message of a failed HDF5 call: "<operation>: HDF5: <stack entries joined>"; when
// the file driver reports an operating-system error (a full disk, a quota, EIO) the
// message starts with it and the file ("No space left on device (writing 'f.h5'): ...")
// and the HDF5 detail after it is capped at 600 characters.
std::string error_message(const std::string& operation, const std::vector<std::string>& stack);

// Throws h5::H5Error(error_message(operation, <the error stack>)), clearing
// the stack.
[[noreturn]] void throw_error(const std::string& operation);

// Returns `id` when it is a valid identifier (>= 0); otherwise throws via throw_error
// with the formatted operation. The message is only formatted on failure. The format
// arguments must not call HDF5 (any API call clears the error stack): compute them first.
template <typename... Args>
hid_t check_id(hid_t id, fmt::format_string<Args...> operation, Args&&... args) {
  if (id < 0) throw_error(fmt::format(operation, std::forward<Args>(args)...));
  return id;
}

// Throws via throw_error when an herr_t status is negative.
template <typename... Args>
void check(herr_t status, fmt::format_string<Args...> operation, Args&&... args) {
  if (status < 0) throw_error(fmt::format(operation, std::forward<Args>(args)...));
}

// Returns a tri-state result (htri_t) as bool; throws via throw_error when negative.
template <typename... Args>
bool check_tri(htri_t result, fmt::format_string<Args...> operation, Args&&... args) {
  if (result < 0) throw_error(fmt::format(operation, std::forward<Args>(args)...));
  return result > 0;
}

// True once an H5Fclose failed in this process (e.g. flushing a file onto a full disk).
// HDF5 1.10 then keeps a file id whose object it already freed, and its own shutdown
// (at exit, or at MPI_Finalize for the MPI build) crashes on it (HDFGroup/hdf5#2257,
// fixed in 1.14 by #2291); engine::Runtime::end() ends such a process without that
// shutdown. Thread-safe.
bool file_close_failed();

// Owns one hid_t and closes it with the matching H5*close function (H5Fclose,
// H5Gclose, H5Dclose, H5Sclose, H5Tclose, H5Pclose, H5Aclose). Move-only. The
// destructor ignores close errors (use close() to see them). Not thread-safe as an
// object; its HDF5 calls take library_mutex().
class Handle {
 public:
  using CloseFn = herr_t (*)(hid_t);

  Handle() = default;
  // Takes ownership of `id` (which must be valid) to be released with `close_fn`.
  Handle(hid_t id, CloseFn close_fn) : id_(id), close_fn_(close_fn) {}
  ~Handle() { reset(); }
  Handle(Handle&& other) noexcept
      : id_(std::exchange(other.id_, H5I_INVALID_HID)), close_fn_(other.close_fn_) {}
  Handle& operator=(Handle&& other) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  // The identifier (H5I_INVALID_HID when empty or closed).
  hid_t id() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Closes now, throwing H5Error naming `what` if HDF5 reports an error.
  void close(const std::string& what);
  // Closes now, ignoring errors; the handle becomes empty.
  void reset() noexcept;

 private:
  hid_t id_ = H5I_INVALID_HID;
  CloseFn close_fn_ = nullptr;
};

}  // namespace dtrain::h5
