// MpiRuntime (MPI_Init_thread / MPI_Finalize ownership) and MpiCommHandle.
#include "runtime/dist/mpi_runtime.h"

#include <cstdlib>

#include "runtime/base/error.h"
#include "runtime/base/logging.h"

namespace dtrain::dist {

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  DTRAIN_CHECK_T(CommError, !is_finalized(),
                 "mpi backend: MPI was already finalized in this process and cannot be "
                 "initialized again (construct one MpiRuntime for the whole process)");
  if (is_initialized()) {
    MPI_Query_thread(&thread_level_);
    return;
  }
  int provided = MPI_THREAD_SINGLE;
  // SERIALIZED: an MpiCommunicator runs its asynchronous all-reduces on a thread of its
  // own while the main thread makes no MPI call (see mpi_communicator.h).
  const int rc = MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided);
  DTRAIN_CHECK_T(CommError, rc == MPI_SUCCESS, "mpi backend: MPI_Init_thread failed: {}",
                 mpi_error_string(rc));
  owns_ = true;
  thread_level_ = provided;
  if (provided < MPI_THREAD_FUNNELED) {
    DTRAIN_LOG_WARN(
        "MPI provides thread level {} < MPI_THREAD_FUNNELED; dtrain calls MPI from the main "
        "thread only (asynchronous all-reduces become MPI_Iallreduce), but background "
        "threads may be unsafe with this MPI build",
        provided);
  }
}

MpiRuntime::~MpiRuntime() {
  if (owns_ && !is_finalized()) MPI_Finalize();
}

bool MpiRuntime::is_initialized() {
  int flag = 0;
  MPI_Initialized(&flag);
  return flag != 0;
}

bool MpiRuntime::is_finalized() {
  int flag = 0;
  MPI_Finalized(&flag);
  return flag != 0;
}

void MpiRuntime::abort(int code) {
  if (is_initialized() && !is_finalized()) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

std::string mpi_error_string(int error_code) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  if (MPI_Error_string(error_code, text, &length) != MPI_SUCCESS) {
    return fmt::format("unknown MPI error code {}", error_code);
  }
  std::string message(text, static_cast<size_t>(length));
  int error_class = 0;
  if (MPI_Error_class(error_code, &error_class) == MPI_SUCCESS && error_class != error_code) {
    char class_text[MPI_MAX_ERROR_STRING] = {};
    int class_length = 0;
    if (MPI_Error_string(error_class, class_text, &class_length) == MPI_SUCCESS) {
      std::string class_message(class_text, static_cast<size_t>(class_length));
      if (class_message != message) message = class_message + ": " + message;
    }
  }
  return fmt::format("{} (MPI error code {})", message, error_code);
}

MpiCommHandle& MpiCommHandle::operator=(MpiCommHandle&& other) noexcept {
  if (this != &other) reset(other.release());
  return *this;
}

MPI_Comm MpiCommHandle::release() {
  MPI_Comm comm = comm_;
  comm_ = MPI_COMM_NULL;
  return comm;
}

void MpiCommHandle::reset(MPI_Comm comm) {
  if (comm_ != MPI_COMM_NULL && comm_ != MPI_COMM_WORLD && comm_ != MPI_COMM_SELF &&
      !MpiRuntime::is_finalized()) {
    MPI_Comm_free(&comm_);
  }
  comm_ = comm;
}

}  // namespace dtrain::dist
