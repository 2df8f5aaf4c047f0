// The checkpoint library's boundary with the HDF5 layer (runtime/h5): an h5::H5Error
// raised while reading or writing a checkpoint leaves the library as a CheckpointError
// with the same message (file, object, HDF5's reason), so that callers see one error
// type for a damaged or unwritable checkpoint (Checkpointer::resume_or_load skips a
// checkpoint on CheckpointError and stops on ConfigError); so does any other dtrain::Error
// given a context. Not a public header.
//
//   CheckpointIndex load_index(const std::string& dir) {
//     return as_checkpoint_error([&] { return parse(read_index_text(dir)); });
//   }
//
// Thread-safe (a pure function of its argument).
#pragma once

#include <string>
#include <utility>

#include "runtime/base/error.h"
#include "runtime/h5/handle.h"

namespace dtrain::checkpoint {

// Returns fn(); an h5::H5Error it throws is rethrown as CheckpointError(e.what()).
// Every other exception passes unchanged.
template <typename Fn>
decltype(auto) as_checkpoint_error(Fn&& fn) {
  try {
    return std::forward<Fn>(fn)();
  } catch (const h5::H5Error& e) {
    throw CheckpointError(e.what());
  }
}

// Returns fn(); a dtrain::Error it throws that is not a CheckpointError already (a
// file-system error, say) is rethrown as CheckpointError("<context()>: <what>"), so that
// it counts as damage or a failed write of the checkpoint. `context` runs only then.
template <typename Fn, typename Context>
decltype(auto) as_checkpoint_error(Fn&& fn, Context&& context) {
  try {
    return std::forward<Fn>(fn)();
  } catch (const CheckpointError&) {
    throw;
  } catch (const Error& e) {
    throw CheckpointError(std::forward<Context>(context)() + ": " + e.what());
  }
}

}  // namespace dtrain::checkpoint
