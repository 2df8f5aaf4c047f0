// The Stateful conformance suite (tests/checkpoint/stateful_conformance.h) on every
// implementation of dtrain::Stateful, each with a small factory: the module
// (ModuleState), the RNGs (RngState), SGD and AdamW state (OptimizerState), both LR
// schedulers, the sampler, the data loader inline and with read-ahead workers, the best
// metric and the intra-op thread count. Here because runtime/engine sees every layer
// that implements it.
#include "tests/checkpoint/stateful_conformance.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <memory>
#include <string>
#include <vector>

#include "checkpoint/module_state.h"
#include "runtime/data/data_loader.h"
#include "runtime/data/sampler.h"
#include "runtime/data/synthetic.h"
#include "runtime/engine/best_checkpointer.h"
#include "runtime/engine/threads.h"
#include "runtime/optim/optim.h"
#include "runtime/optim/optimizer_state.h"
#include "tests/checkpoint/test_support.h"

namespace dtrain::checkpoint::conformance {
namespace {

using checkpoint::testing::fill_deterministic;
using checkpoint::testing::make_tiny_net;
using checkpoint::testing::state_hash;

// The bytes of a tensor as hex (for behaviour strings).
std::string hex_of(const at::Tensor& t) {
  return fmt::format("{:x}", state_hash({{"t", t.contiguous()}}));
}

// Deterministic, finite gradients for every parameter.
void set_grads(torch::nn::Module& model, double scale) {
  int i = 0;
  for (auto& p : model.parameters()) {
    p.mutable_grad() = at::arange(p.numel(), at::kFloat).reshape(p.sizes()).mul(scale * ++i).sin();
  }
}

struct ModuleStateF {
  struct Object {
    std::shared_ptr<torch::nn::Module> model;
    std::unique_ptr<ModuleState> state;
  };
  static std::unique_ptr<Object> make(int variant) {
    auto o = std::make_unique<Object>();
    o->model = make_tiny_net(variant == 0 ? 1 : 2);
    o->state = std::make_unique<ModuleState>(o->model);
    return o;
  }
  static Stateful& stateful(Object& o) { return *o.state; }
  static Scope scope() { return Scope::kReplicated; }
  static constexpr bool kFreshDiffers = true;
  static void advance(Object& o) {
    at::NoGradGuard no_grad;
    for (auto& p : o.model->parameters()) p.mul_(1.5).add_(0.25);
  }
  static std::string behaviour(Object& o) {
    advance(o);
    return fmt::format("{:x}", state_hash(o.state->state_dict()));
  }
};

struct RngStateF {
  struct Object {
    RngState rng;
  };
  static std::unique_ptr<Object> make(int variant) {
    at::manual_seed(variant == 0 ? 11 : 22);  // the process's default generator
    return std::make_unique<Object>();
  }
  static Stateful& stateful(Object& o) { return o.rng; }
  static Scope scope() { return Scope::kPerRank; }
  static constexpr bool kFreshDiffers = true;
  static void advance(Object&) { (void)at::rand({3}); }
  static std::string behaviour(Object&) {
    return hex_of(at::rand({4})) + hex_of(at::randn({4}, at::kDouble)) +
           hex_of(at::randint(0, 1000, {4}));
  }
};

enum class Opt { kSGD, kAdamW };

template <Opt kKind>
struct OptimizerStateF {
  struct Object {
    std::shared_ptr<torch::nn::Module> model;
    std::unique_ptr<torch::optim::Optimizer> optimizer;
    std::unique_ptr<optim::OptimizerState> state;
  };
  static std::unique_ptr<Object> make(int variant) {
    auto o = std::make_unique<Object>();
    o->model = make_tiny_net(variant == 0 ? 1 : 2);
    if (kKind == Opt::kSGD) {
      o->optimizer = std::make_unique<torch::optim::SGD>(
          o->model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9).weight_decay(1e-4));
    } else {
      o->optimizer = std::make_unique<torch::optim::AdamW>(
          o->model->parameters(), torch::optim::AdamWOptions(1e-2).weight_decay(1e-2));
    }
    o->state = std::make_unique<optim::OptimizerState>(*o->optimizer, o->model->named_parameters());
    return o;
  }
  static Stateful& stateful(Object& o) { return *o.state; }
  static Scope scope() { return Scope::kReplicated; }
  static constexpr bool kFreshDiffers = true;
  static void advance(Object& o) {
    set_grads(*o.model, 0.01);
    o.optimizer->step();
  }
  // One step from the same parameters and gradients: only the optimizer state differs.
  static std::string behaviour(Object& o) {
    fill_deterministic(*o.model, 77);
    set_grads(*o.model, 0.02);
    o.optimizer->step();
    ModuleState params(o.model);
    return fmt::format("{:x}", state_hash(params.state_dict()));
  }
};

enum class Sched { kMultiStep, kCosine };

template <Sched kKind>
struct SchedulerF {
  struct Object {
    std::shared_ptr<torch::nn::Module> model;
    std::unique_ptr<torch::optim::SGD> optimizer;
    std::unique_ptr<optim::LRScheduler> scheduler;
  };
  static std::unique_ptr<Object> make(int) {
    auto o = std::make_unique<Object>();
    o->model = make_tiny_net(1);
    o->optimizer =
        std::make_unique<torch::optim::SGD>(o->model->parameters(), torch::optim::SGDOptions(0.1));
    if (kKind == Sched::kMultiStep) {
      o->scheduler = std::make_unique<optim::WarmupMultiStepLR>(
          *o->optimizer, 0.1, std::vector<int64_t>{3, 5}, 0.1, 0.001, 2, "linear");
    } else {
      o->scheduler =
          std::make_unique<optim::WarmupCosineLR>(*o->optimizer, 0.1, 0.001, 8, 0.001, 2, "linear");
    }
    return o;
  }
  static Stateful& stateful(Object& o) { return *o.scheduler; }
  static Scope scope() { return Scope::kReplicated; }
  static constexpr bool kFreshDiffers = true;
  static void advance(Object& o) { o.scheduler->step(); }
  // The lr the optimizer holds now and after each of the next 8 steps.
  static std::string behaviour(Object& o) {
    std::string out;
    for (int i = 0; i < 9; ++i) {
      if (i > 0) o.scheduler->step();
      out += fmt::format("{:a} ", o.optimizer->param_groups()[0].options().get_lr());
    }
    return out;
  }
};

std::string join_batches(const std::vector<std::vector<int64_t>>& batches) {
  std::string out;
  for (const auto& b : batches) out += fmt::format("[{}]", fmt::join(b, ","));
  return out;
}

struct SamplerF {
  struct Object {
    data::DistributedSampler sampler{/*dataset_size=*/100, /*global_batch=*/8, /*rank=*/0,
                                     /*world_size=*/1, /*seed=*/5};
  };
  static std::unique_ptr<Object> make(int) { return std::make_unique<Object>(); }
  static Stateful& stateful(Object& o) { return o.sampler; }
  static Scope scope() { return Scope::kReplicated; }
  static constexpr bool kFreshDiffers = true;
  static void advance(Object& o) { o.sampler.next(); }
  // 13 batches: past the end of the epoch (12 batches) into the next one's order.
  static std::string behaviour(Object& o) {
    std::vector<std::vector<int64_t>> batches;
    for (int i = 0; i < 13; ++i) batches.push_back(o.sampler.next());
    return join_batches(batches);
  }
};

template <int kWorkers>
struct DataLoaderF {
  struct Object {
    std::unique_ptr<data::DataLoader> loader;
  };
  static std::unique_ptr<Object> make(int) {
    data::SyntheticClassificationOptions options;
    options.num_samples = 40;
    options.input_shape = {3};
    options.num_classes = 4;
    options.seed = 9;
    auto dataset = std::make_shared<data::SyntheticClassification>(options);
    auto sampler = std::make_shared<data::DistributedSampler>(dataset->size(), 4, 0, 1, 6);
    auto o = std::make_unique<Object>();
    o->loader = std::make_unique<data::DataLoader>(dataset, sampler, nullptr,
                                                   data::DataLoaderOptions{kWorkers, 2});
    return o;
  }
  static Stateful& stateful(Object& o) { return *o.loader; }
  static Scope scope() { return Scope::kReplicated; }
  static constexpr bool kFreshDiffers = true;
  static void advance(Object& o) { o.loader->next(); }
  // The next 11 batches (past the epoch's end, 10 batches), inputs and targets.
  static std::string behaviour(Object& o) {
    std::string out;
    for (int i = 0; i < 11; ++i) {
      const data::Batch b = o.loader->next();
      out += hex_of(b.inputs) + hex_of(b.targets) + " ";
    }
    return out;
  }
};

struct BestMetricF {
  struct Object {
    engine::BestMetric best{"eval/ds/accuracy", engine::BestMetric::Mode::kMax};
    int updates = 0;
  };
  static std::unique_ptr<Object> make(int) { return std::make_unique<Object>(); }
  static Stateful& stateful(Object& o) { return o.best; }
  static Scope scope() { return Scope::kReplicated; }
  static constexpr bool kFreshDiffers = true;
  static void advance(Object& o) {
    ++o.updates;
    o.best.update(0.5 + 0.125 * o.updates, 10 * o.updates);
  }
  static std::string behaviour(Object& o) {
    return fmt::format("{} {:a} {} {} {}", o.best.has_best(), o.best.best_value(),
                       o.best.best_iter(), o.best.improves(0.7), o.best.improves(0.76));
  }
};

// The saved count is recorded, not applied (keep_checkpoint_threads applies it): the
// behaviour is the count a resume would compare, the loaded one or, never loaded, the
// current one.
struct ThreadCountStateF {
  struct Object {
    engine::ThreadCountState state;
  };
  static std::unique_ptr<Object> make(int) { return std::make_unique<Object>(); }
  static Stateful& stateful(Object& o) { return o.state; }
  static Scope scope() { return Scope::kPerRank; }
  static constexpr bool kFreshDiffers = false;  // the current count, saved or not
  static void advance(Object&) {}
  static std::string behaviour(Object& o) {
    return std::to_string(o.state.saved().value_or(engine::current_threads().count));
  }
};

using Implementations =
    ::testing::Types<ModuleStateF, RngStateF, OptimizerStateF<Opt::kSGD>,
                     OptimizerStateF<Opt::kAdamW>, SchedulerF<Sched::kMultiStep>,
                     SchedulerF<Sched::kCosine>, SamplerF, DataLoaderF<0>, DataLoaderF<2>,
                     BestMetricF, ThreadCountStateF>;

// Test names: Stateful/StatefulConformance/<implementation>.<test>.
struct ImplementationName {
  template <typename F>
  static std::string GetName(int) {
    if constexpr (std::is_same_v<F, ModuleStateF>) return "ModuleState";
    if constexpr (std::is_same_v<F, RngStateF>) return "RngState";
    if constexpr (std::is_same_v<F, OptimizerStateF<Opt::kSGD>>) return "OptimizerStateSGD";
    if constexpr (std::is_same_v<F, OptimizerStateF<Opt::kAdamW>>) return "OptimizerStateAdamW";
    if constexpr (std::is_same_v<F, SchedulerF<Sched::kMultiStep>>) return "WarmupMultiStepLR";
    if constexpr (std::is_same_v<F, SchedulerF<Sched::kCosine>>) return "WarmupCosineLR";
    if constexpr (std::is_same_v<F, SamplerF>) return "DistributedSampler";
    if constexpr (std::is_same_v<F, DataLoaderF<0>>) return "DataLoaderInline";
    if constexpr (std::is_same_v<F, DataLoaderF<2>>) return "DataLoader2Workers";
    if constexpr (std::is_same_v<F, BestMetricF>) return "BestMetric";
    if constexpr (std::is_same_v<F, ThreadCountStateF>) return "ThreadCountState";
    return "unnamed";
  }
};

INSTANTIATE_TYPED_TEST_SUITE_P(Stateful, StatefulConformance, Implementations, ImplementationName);

}  // namespace
}  // namespace dtrain::checkpoint::conformance
