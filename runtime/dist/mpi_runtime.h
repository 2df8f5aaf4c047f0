// MPI process lifetime (MpiRuntime) and an owning MPI_Comm handle (MpiCommHandle).
//
//   int main(int argc, char** argv) {
//     dtrain::dist::MpiRuntime mpi(&argc, &argv);  // MPI_Init_thread(SERIALIZED) if needed
//     auto comm = dtrain::dist::make_communicator("mpi", "cpu");
//     ...
//   }                                               // MPI_Finalize if `mpi` initialized it
//
// Works with and without mpirun/srun (a process started alone is an MPI singleton).
#pragma once

#include <mpi.h>

#include <string>

namespace dtrain::dist {

// RAII owner of the MPI library's initialization.
//
// The constructor calls MPI_Init_thread(MPI_THREAD_SERIALIZED) unless MPI is already
// initialized, in which case the object owns nothing and its destructor does nothing.
// The destructor calls MPI_Finalize only if this object initialized MPI (and nobody
// finalized it meanwhile). MPI calls come from the main thread and from an
// MpiCommunicator's async thread, never two at once (SERIALIZED). Not thread-safe:
// construct and destroy it on the main thread, once per process; MPI cannot be
// initialized again after it was finalized.
class MpiRuntime {
 public:
  // Initializes MPI (argc/argv may be null). Throws CommError if MPI was already
  // finalized in this process or if MPI_Init_thread fails.
  explicit MpiRuntime(int* argc = nullptr, char*** argv = nullptr);
  // Finalizes MPI if this object initialized it. Never throws.
  ~MpiRuntime();

  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  // True if this object called MPI_Init_thread (and so will call MPI_Finalize).
  bool owns_mpi() const { return owns_; }
  // The thread support level MPI provided (MPI_THREAD_SINGLE ... MPI_THREAD_MULTIPLE).
  int thread_level() const { return thread_level_; }

  // True between MPI_Init and MPI_Finalize (whoever called them). Thread-safe.
  static bool is_initialized();
  // True once MPI_Finalize was called. Thread-safe.
  static bool is_finalized();
  // Aborts every rank of MPI_COMM_WORLD with `code` (for fatal errors in the middle of a
  // collective sequence, where finalizing would hang). Exits the process with `code`
  // when MPI is not initialized.
  [[noreturn]] static void abort(int code);

 private:
  bool owns_ = false;
  int thread_level_ = MPI_THREAD_SINGLE;
};

// MPI_Error_string's text for `error_code` (preceded by its error class's text when that
// differs) and the code, e.g. "MPI_ERR_TRUNCATE: message truncated (MPI error code 15)".
// Thread-safe.
std::string mpi_error_string(int error_code);

// Owns an MPI_Comm and frees it with MPI_Comm_free (skipped once MPI is finalized).
// Predefined communicators (MPI_COMM_WORLD, MPI_COMM_SELF) and MPI_COMM_NULL are never
// freed. Movable, not copyable. Not thread-safe. MPI_Comm_free is collective: destroy
// the handles of one communicator on all of its ranks.
class MpiCommHandle {
 public:
  MpiCommHandle() = default;
  explicit MpiCommHandle(MPI_Comm comm) : comm_(comm) {}
  ~MpiCommHandle() { reset(); }

  MpiCommHandle(MpiCommHandle&& other) noexcept : comm_(other.release()) {}
  MpiCommHandle& operator=(MpiCommHandle&& other) noexcept;
  MpiCommHandle(const MpiCommHandle&) = delete;
  MpiCommHandle& operator=(const MpiCommHandle&) = delete;

  // The communicator (MPI_COMM_NULL when empty).
  MPI_Comm get() const { return comm_; }
  // Gives up ownership without freeing and returns the communicator.
  MPI_Comm release();
  // Frees the owned communicator (if any) and takes ownership of `comm`.
  void reset(MPI_Comm comm = MPI_COMM_NULL);

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
};

}  // namespace dtrain::dist
