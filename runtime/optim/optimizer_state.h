// OptimizerState: a Stateful view of a LibTorch SGD or AdamW optimizer, keyed by
// parameter name (LibTorch keys its state by TensorImpl address, which differs in
// every process), so that a checkpoint restores it in another process and on another
// number of ranks.
//
//   OptimizerState s(*optimizer, model->named_parameters());
//   StateDict d = s.state_dict();   // "state/fc1.weight/momentum_buffer", "param_groups/0/lr"
//
// Not thread-safe.
#pragma once

#include <map>
#include <string>

#include <torch/optim/optimizer.h>
#include <torch/ordered_dict.h>

#include "runtime/base/stateful.h"

namespace dtrain::optim {

class OptimizerState : public Stateful {
 public:
  // `named_params` names every parameter in the optimizer's param groups (extra names
  // are ignored). Throws dtrain::Error for an optimizer other than SGD/AdamW or a
  // parameter without a name.
  OptimizerState(torch::optim::Optimizer& optimizer,
                 const torch::OrderedDict<std::string, at::Tensor>& named_params);

  // Keys: "kind" ("SGD"/"AdamW"); "param_groups/<g>/<hyper-parameter>" (lr, momentum,
  // dampening, weight_decay, nesterov for SGD; lr, beta1, beta2, eps, weight_decay,
  // amsgrad for AdamW); "state/<param>/momentum_buffer" (SGD) or
  // "state/<param>/{step,exp_avg,exp_avg_sq[,max_exp_avg_sq]}" (AdamW). Tensors alias
  // the optimizer's live state.
  StateDict state_dict() const override;
  // Restores hyper-parameters and per-parameter state (copies; dtype/shape checked).
  // Throws dtrain::Error naming the entry on a kind mismatch, a missing parameter or a
  // shape mismatch. A state tensor that is this optimizer's own current one (filled in
  // place through load_targets()) is kept as it is.
  void load_state_dict(const StateDict& state) override;
  // Like load_state_dict, but takes the tensors of `state` as the new state without a
  // copy where they already have the parameter's dtype and device and are contiguous
  // (a checkpoint loader's freshly read buffers); copies the others.
  void adopt_state_dict(StateDict&& state) override;
  // The current per-parameter state tensors ("state/<param>/exp_avg", ...; none before
  // the first step), which a loader may overwrite before calling load_state_dict.
  StateDict load_targets() override;
  // Loads a torch.optim SGD or Adam/AdamW state_dict() (e.g. a detectron2 checkpoint's
  // "optimizer"; pytorch_state.cpp). PyTorch numbers parameters 0..N-1 across its
  // param_groups in order; they are mapped onto this optimizer's groups in order, which is
  // right when both were built from the same model's parameters() order. Returns why
  // not (another kind, another number of groups or parameters, a state tensor whose shape
  // differs from its parameter's), and then nothing was changed.
  std::string load_pytorch_state(const interop::PyObject& state) override;

 private:
  void load(const StateDict& state, bool adopt);

  torch::optim::Optimizer& opt_;
  std::string kind_;
  std::map<const void*, std::string> names_;  // TensorImpl* -> parameter name
};

}  // namespace dtrain::optim
