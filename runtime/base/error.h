// Error type used across dtrain: exceptions carrying where/who/what context.
//
// dtrain reports failures with exceptions (never status codes). Every message says
// where (file, tensor, key), who (rank, when known) and what (the library's message):
//
//   DTRAIN_CHECK(shape == expected, "tensor '{}' in {}: expected shape {}, got {}",
//                name, path, expected, shape);
//   try { ... } catch (const dtrain::Error& e) {
//     throw CheckpointError(fmt::format("loading '{}': {}", path, e.what()));
//   }
//
// Each library throws its own type where callers must tell failures apart:
// ConfigError, CommError, CheckpointError here, h5::H5Error (runtime/h5/handle.h) for
// HDF5 files, which checkpoint/ turns into CheckpointError at its boundary.
//
// Errors are immutable after construction: thread-safe to throw, copy and read.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace dtrain {

// Base error. Thread-safe to throw and copy (immutable after construction).
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// A bad configuration (unknown key, wrong type, malformed YAML, ...).
class ConfigError : public Error {
 public:
  using Error::Error;
};

// A failure of a collective or point-to-point communication.
class CommError : public Error {
 public:
  using Error::Error;
};

// A failure to read, write, verify or commit a checkpoint.
class CheckpointError : public Error {
 public:
  using Error::Error;
};

// A loss that became infinite or NaN (detectron2's FloatingPointError): training cannot
// go on from this state. SimpleTrainer throws it on every rank at the same iteration with
// the same message, so `dtrain train` exits 1 on every rank without MPI_Abort.
class FloatingPointError : public Error {
 public:
  using Error::Error;
};

// The mark of an error that every rank of the job threw alike, at the same collective step
// (dist::all_or_none and the other agree.h functions throw Agreed<E>): no rank is left
// waiting in a collective, so the process may end without MPI_Abort, and a caller that
// goes on after it (CHECKPOINT.ON_SAVE_ERROR warn) goes on on every rank.
class AgreedOnEveryRank {
 public:
  virtual ~AgreedOnEveryRank() = default;
};

// An error of type E (an Error or one derived from it), agreed on every rank.
template <typename E>
class Agreed final : public E, public AgreedOnEveryRank {
 public:
  using E::E;
};

// True when `e` was agreed on every rank (an Agreed<E>).
inline bool agreed_on_every_rank(const std::exception& e) {
  return dynamic_cast<const AgreedOnEveryRank*>(&e) != nullptr;
}

}  // namespace dtrain

// Throws dtrain::Error (DTRAIN_CHECK) or ErrT (DTRAIN_CHECK_T) with an fmt-formatted message when cond is false.
#define DTRAIN_CHECK(cond, ...)                                 \
  do {                                                          \
    if (!(cond)) throw ::dtrain::Error(::fmt::format(__VA_ARGS__)); \
  } while (0)

#define DTRAIN_CHECK_T(ErrT, cond, ...)               \
  do {                                                \
    if (!(cond)) throw ErrT(::fmt::format(__VA_ARGS__)); \
  } while (0)
