// The Stateful interface: anything whose state a checkpoint saves and restores
// (model, optimizer, LR scheduler, sampler, RNGs, trainer iteration). It lives below
// checkpoint/ so that data, optim and the engine implement it without depending on the
// checkpoint library.
//
// State is a flat, ordered map from '/'-separated names to tensors or scalars; the
// checkpoint stores each name as an HDF5 dataset or attribute under the owner's group:
//
//   StateDict s;
//   s["epoch"] = int64_t{3};
//   s["order_seed"] = int64_t{42};
//   s["momentum/fc1.weight"] = some_tensor;
//
// Implementations need not be thread-safe; the checkpointer calls them from the
// training thread at an iteration boundary.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>

#include <ATen/core/Tensor.h>

namespace dtrain::interop {
struct PyObject;  // checkpoint/interop/pickle.h
}  // namespace dtrain::interop

namespace dtrain {

using StateValue = std::variant<at::Tensor, int64_t, double, std::string>;
using StateDict = std::map<std::string, StateValue>;

class Stateful {
 public:
  virtual ~Stateful() = default;
  // The state to save. Tensors may alias live storage; the caller copies what it keeps.
  virtual StateDict state_dict() const = 0;
  // Restores from what state_dict() returned (possibly in another process). Throws
  // dtrain::Error naming the missing or mismatched entry.
  virtual void load_state_dict(const StateDict& state) = 0;

  // Optional hooks that let a loader (Checkpointer::load) avoid copies.
  //
  // Like load_state_dict, but `state` is handed over: its tensors are referenced by no
  // one else and will not be used by the caller again, so they may be kept as the new
  // state without a copy. Default: load_state_dict(state).
  virtual void adopt_state_dict(StateDict&& state) { load_state_dict(state); }
  // Tensors, keyed as in state_dict(), that a loader may overwrite in place with the
  // loaded values before calling load_state_dict / adopt_state_dict with a state that
  // holds these very tensors under the same keys; load_state_dict then keeps them (no
  // copy). Only tensors that load_state_dict would replace wholesale anyway. The loader
  // uses a tensor only when it is a contiguous CPU tensor of exactly the stored dtype
  // and shape. Default: none.
  virtual StateDict load_targets() { return {}; }

  // Loads state that PyTorch saved (torch.optim's or an LR scheduler's state_dict(), as
  // read from a .pth by the unpickler, e.g. a detectron2 checkpoint's "optimizer").
  // Returns "" when it was loaded; otherwise why it cannot be, and nothing was changed.
  // Default: this state does not read PyTorch's.
  virtual std::string load_pytorch_state(const interop::PyObject& /*state*/) {
    return "this state has no PyTorch counterpart";
  }
};

// Typed access to a StateDict entry; throws dtrain::Error naming `key` and `owner` when
// it is missing or of another type.
int64_t state_int(const StateDict& state, const std::string& key, const std::string& owner);
double state_double(const StateDict& state, const std::string& key, const std::string& owner);
const std::string& state_string(const StateDict& state, const std::string& key,
                                const std::string& owner);
const at::Tensor& state_tensor(const StateDict& state, const std::string& key,
                               const std::string& owner);

}  // namespace dtrain
