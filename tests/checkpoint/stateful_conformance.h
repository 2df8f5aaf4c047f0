// The Stateful conformance suite: every implementation of dtrain::Stateful passes
// the same round trips. Its state, copied or saved through a Checkpointer (world of one)
// and loaded into a fresh, differently initialized instance (load_state_dict, and
// adopt_state_dict), reads back bitwise equal, and the instance then behaves as the
// original did (the next batches, learning rates, optimizer step, random numbers...).
//
// An implementation is a factory type F:
//   struct F {
//     struct Object;                                 // owns the Stateful and its inputs
//     static std::unique_ptr<Object> make(int variant);  // 0: the original, 1: a fresh one
//     static Stateful& stateful(Object&);
//     static checkpoint::Scope scope();              // how a Checkpointer saves it
//     static void advance(Object&);                  // use that changes the state
//     static std::string behaviour(Object&);         // what use sees next (may change it)
//     static constexpr bool kFreshDiffers = true;    // make(1)'s state is not the saved one
//   };
// make(1) may reset process-wide state (the default RNG): the tests call it only after
// the original's behaviour was observed. Instantiate with
//   INSTANTIATE_TYPED_TEST_SUITE_P(Engine, StatefulConformance, ::testing::Types<F1, F2>);
// in exactly one file per binary.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>
#include <utility>

#include "checkpoint/checkpointer.h"
#include "runtime/base/stateful.h"
#include "runtime/dist/local_communicator.h"
#include "tests/checkpoint/test_support.h"

namespace dtrain::checkpoint::conformance {

// A deep copy: tensors cloned, so that later use of the original cannot change it.
inline StateDict deep_copy(const StateDict& state) {
  StateDict out;
  for (const auto& [key, value] : state) {
    if (const auto* t = std::get_if<at::Tensor>(&value)) {
      out[key] = t->defined() ? t->clone() : *t;
    } else {
      out[key] = value;
    }
  }
  return out;
}

template <typename F>
class StatefulConformance : public ::testing::Test {
 protected:
  // The original after two uses, its state copied, and its behaviour from there on.
  struct Original {
    std::unique_ptr<typename F::Object> object;
    StateDict saved;
    std::string behaviour;
  };
  static Original make_original() {
    Original o{F::make(0), {}, {}};
    F::advance(*o.object);
    F::advance(*o.object);
    o.saved = deep_copy(F::stateful(*o.object).state_dict());
    return o;
  }
  // Expects `fresh` to hold `saved` bitwise and to behave like the original did.
  static void expect_same(typename F::Object& fresh, const Original& original) {
    const auto diff = testing::state_diff(original.saved, F::stateful(fresh).state_dict());
    EXPECT_TRUE(diff.empty()) << ::testing::PrintToString(diff);
    EXPECT_EQ(F::behaviour(fresh), original.behaviour);
  }
};

TYPED_TEST_SUITE_P(StatefulConformance);

// state_dict() has no side effect: twice the same, and loading it back changes nothing.
TYPED_TEST_P(StatefulConformance, StateDictIsStableAndReloadable) {
  auto object = TypeParam::make(0);
  TypeParam::advance(*object);
  Stateful& s = TypeParam::stateful(*object);
  const StateDict first = deep_copy(s.state_dict());
  auto diff = testing::state_diff(first, s.state_dict());
  EXPECT_TRUE(diff.empty()) << ::testing::PrintToString(diff);
  s.load_state_dict(deep_copy(first));
  diff = testing::state_diff(first, s.state_dict());
  EXPECT_TRUE(diff.empty()) << ::testing::PrintToString(diff);
}

TYPED_TEST_P(StatefulConformance, LoadStateDictRoundTrip) {
  auto original = this->make_original();
  original.behaviour = TypeParam::behaviour(*original.object);
  auto fresh = TypeParam::make(1);
  if (TypeParam::kFreshDiffers) {  // else the round trip would prove nothing
    EXPECT_FALSE(
        testing::state_diff(original.saved, TypeParam::stateful(*fresh).state_dict()).empty());
  }
  TypeParam::stateful(*fresh).load_state_dict(original.saved);
  this->expect_same(*fresh, original);
}

TYPED_TEST_P(StatefulConformance, AdoptStateDictRoundTrip) {
  auto original = this->make_original();
  original.behaviour = TypeParam::behaviour(*original.object);
  auto fresh = TypeParam::make(1);
  TypeParam::stateful(*fresh).adopt_state_dict(deep_copy(original.saved));
  this->expect_same(*fresh, original);
}

// Through a real checkpoint (HDF5 files, the commit protocol, Checkpointer::load's
// load_targets/adopt path), on a world of one.
TYPED_TEST_P(StatefulConformance, CheckpointerRoundTrip) {
  const std::string dir = testing::make_temp_dir("stateful");
  dist::LocalCommunicator comm;
  auto model = testing::make_tiny_net(3);
  auto original = this->make_original();
  {
    Checkpointer save(model, dir, comm,
                      {{"thing", {&TypeParam::stateful(*original.object), TypeParam::scope()}}});
    save.save("model_0000001");
  }
  original.behaviour = TypeParam::behaviour(*original.object);
  auto fresh = TypeParam::make(1);
  Checkpointer load(model, dir, comm,
                    {{"thing", {&TypeParam::stateful(*fresh), TypeParam::scope()}}});
  load.load(dir + "/model_0000001");
  this->expect_same(*fresh, original);
  if (!this->HasFailure()) std::filesystem::remove_all(dir);
}

REGISTER_TYPED_TEST_SUITE_P(StatefulConformance, StateDictIsStableAndReloadable,
                            LoadStateDictRoundTrip, AdoptStateDictRoundTrip, CheckpointerRoundTrip);

}  // namespace dtrain::checkpoint::conformance
