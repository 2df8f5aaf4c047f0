// The restricted unpickler and torch.save's formats against files written by Debian's
// python3-torch (make_torch_files.py): every dtype, views, protocols 2-5, the legacy
// format, detectron2 checkpoints, model-zoo .pkl files, malicious pickles; and hand-made
// hostile pickles, each refused with its message.
#include <filesystem>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "checkpoint/interop/pickle.h"
#include "checkpoint/interop/weights.h"
#include "runtime/base/error.h"
#include "tests/checkpoint/interop/interop_test_util.h"
#include "tests/gtest_util.h"

namespace dtrain::interop {
namespace {

using dtrain::testing::ThrownMessage;
using testing::expect_matches_reference;
using testing::torch_files;

#define REQUIRE_TORCH_FILES() \
  if (torch_files().empty()) GTEST_SKIP() << DTRAIN_PYTHON << " could not make the torch files"

TEST(TorchFileTest, EveryDtypeAndViewInEveryProtocolAndTheLegacyFormat) {
  REQUIRE_TORCH_FILES();
  for (const std::string name : {"dtypes_p2", "dtypes_p3", "dtypes_p4", "dtypes_p5",
                                 "dtypes_legacy"}) {
    SCOPED_TRACE(name);
    ForeignWeights w = read_foreign_weights(torch_files() + "/" + name + ".pth");
    expect_matches_reference(w.model, name);
    EXPECT_EQ(w.format, name == "dtypes_legacy" ? "torch legacy" : "torch zip");
    // State dict order is kept (an OrderedDict), and views share their storage.
    ASSERT_FALSE(w.model.empty());
    EXPECT_EQ(w.model.front().first, "float32");
    std::map<std::string, at::Tensor> m(w.model.begin(), w.model.end());
    EXPECT_TRUE(m["view_column"].is_alias_of(m["float32"]));
    EXPECT_TRUE(m["view_transpose"].is_alias_of(m["float32"]));
    EXPECT_FALSE(m["view_transpose"].is_contiguous());
  }
}

TEST(TorchFileTest, AOneEntryDictThatLibTorchCannotRead) {
  REQUIRE_TORCH_FILES();
  ForeignWeights w = read_foreign_weights(torch_files() + "/one_entry.pth");
  expect_matches_reference(w.model, "one_entry");
}

TEST(TorchFileTest, Detectron2CheckpointGivesModelIterationOptimizerAndScheduler) {
  REQUIRE_TORCH_FILES();
  ForeignWeights w = read_foreign_weights(torch_files() + "/d2_model_final.pth");
  expect_matches_reference(w.model, "d2_model_final");
  ASSERT_TRUE(w.iteration.has_value());
  EXPECT_EQ(*w.iteration, 1234);
  ASSERT_NE(w.optimizer, nullptr);
  ASSERT_NE(w.scheduler, nullptr);
  const PyObject* groups = w.optimizer->get("param_groups");
  ASSERT_NE(groups, nullptr);
  ASSERT_EQ(groups->type, PyType::kList);
  EXPECT_DOUBLE_EQ(groups->items[0]->get("momentum")->f, 0.9);
  EXPECT_EQ(w.scheduler->get("last_epoch")->i, 3);
}

TEST(TorchFileTest, ModelZooPickleOfNumpyArrays) {
  REQUIRE_TORCH_FILES();
  ForeignWeights w = read_foreign_weights(torch_files() + "/zoo.pkl");
  EXPECT_EQ(w.format, "pickle");
  expect_matches_reference(w.model, "zoo");
  EXPECT_TRUE(w.matching_heuristics);
  EXPECT_EQ(std::get<std::string>(w.scalars.at("__author__")), "Detectron");
}

TEST(TorchFileTest, MaliciousPicklesAreRefusedBeforeAnythingRuns) {
  REQUIRE_TORCH_FILES();
  const std::string dir = torch_files();
  for (const std::string name : {"evil.pkl", "evil.pth"}) {
    const std::string msg =
        ThrownMessage<CheckpointError>([&] { read_foreign_weights(dir + "/" + name); });
    EXPECT_CONTAINS(msg, "asks for the Python global 'posix.system'");
    EXPECT_CONTAINS(msg, dir + "/" + name);
  }
  EXPECT_CONTAINS(ThrownMessage<CheckpointError>([&] { read_foreign_weights(dir + "/eval.pkl"); }),
                  "'builtins.eval', which is not on dtrain's allow-list");
  EXPECT_FALSE(std::filesystem::exists(dir + "/PWNED"));
}

TEST(TorchFileTest, ZipEntriesWhoseDeclaredSizesLieAreRefused) {
  REQUIRE_TORCH_FILES();
  const std::string dir = torch_files();
  expect_matches_reference(read_foreign_weights(dir + "/zip_ok.pth").model, "one_entry");
  EXPECT_CONTAINS(ThrownMessage<CheckpointError>(
                      [&] { read_foreign_weights(dir + "/zip_central_lies.pth"); }),
                  "zip_central_lies.pth' is not a readable zip archive: Zip archive inconsistent");
  EXPECT_CONTAINS(
      ThrownMessage<CheckpointError>([&] { read_foreign_weights(dir + "/zip_both_lie.pth"); }),
      "storage '0' declares 3 elements of Float (12 bytes) but its record holds 8 bytes");
  // A deflated data.pkl claiming 2 GiB from 145 bytes: refused before any allocation.
  EXPECT_CONTAINS(
      ThrownMessage<CheckpointError>([&] { read_foreign_weights(dir + "/zip_bomb.pth"); }),
      "data.pkl' declares 2147483648 bytes from");
}

// ---- hand-made pickles ----

std::string u32(uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); }
std::string Int(int32_t v) { return "J" + u32(static_cast<uint32_t>(v)); }
std::string Ints(std::initializer_list<int32_t> v) {
  std::string out = "(";
  for (int32_t x : v) out += Int(x);
  return out + "t";
}

std::string Unpickle(const std::string& bytes, PersistentLoad load = {}) {
  PyHeap heap;
  size_t pos = 0;
  return ThrownMessage<CheckpointError>(
      [&] { unpickle(bytes, &pos, heap, {"crafted.pkl", std::move(load), 100}); });
}

TEST(UnpicklerTest, MalformedOpcodeStreamsAreRefusedWithWhereAndWhat) {
  EXPECT_CONTAINS(Unpickle("\x80\x02."), "STOP leaves 0 values and 0 marks");
  EXPECT_CONTAINS(Unpickle("\x80\x02" "a."), "pops from an empty stack");
  EXPECT_CONTAINS(Unpickle("\x80\x02]e."), "needs a MARK but there is none");
  EXPECT_CONTAINS(Unpickle("\x80\x02(0."), "STOP leaves 0 values");  // POP takes the mark
  EXPECT_CONTAINS(Unpickle("\x80\x02h\x05."), "memo entry 5 was never stored");
  EXPECT_CONTAINS(Unpickle(std::string("\x80\x02\x8b\xff\xff\xff\x7f", 7)),
                  "needs 2147483647 more bytes");
  EXPECT_CONTAINS(Unpickle(std::string("\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\x7f", 11)),
                  "more bytes but the data ends");
  EXPECT_CONTAINS(Unpickle("\x80\x09."), "pickle protocol 9 is newer than 5");
  EXPECT_CONTAINS(Unpickle("\x80\x02\xff."), "unknown opcode");
  EXPECT_CONTAINS(Unpickle("\x80\x02" "cos\nsystem\n."), "'os.system', which is not on");
  EXPECT_CONTAINS(Unpickle("\x80\x02" "Q."), "pops from an empty stack");
  EXPECT_CONTAINS(Unpickle("\x80\x02N" "Q."), "a persistent id, but this file format has none");
  EXPECT_CONTAINS(Unpickle("\x80\x02" "crafted.pkl"), "malformed pickle at byte 2");
  std::string deep = "\x80\x02";
  for (int k = 0; k < 150; ++k) deep += "]";
  for (int k = 0; k < 149; ++k) deep += "a";
  EXPECT_CONTAINS(Unpickle(deep + "."), "values nest deeper than 100 levels");
  std::string big = "\x80\x02\x8a\x09" + std::string(8, '\0') + "\x01.";
  EXPECT_CONTAINS(Unpickle(big), "an integer does not fit in 64 bits");
}

TEST(UnpicklerTest, ATensorMustLieInsideItsStorage) {
  // A storage of 10 floats from the persistent id, and views of it.
  auto load = [](const PyObject&, PyHeap& heap) {
    PyObject* s = heap.make(PyType::kStorage, "crafted.pkl");
    s->tensor = at::arange(10, at::kFloat);
    return s;
  };
  auto view = [](const std::string& size, const std::string& stride, int32_t offset) {
    return "\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n(" + Int(0) + "Q" + Int(offset) + size +
           stride + "\x89" + "}" + "tR.";
  };
  EXPECT_CONTAINS(Unpickle(view(Ints({3, 4}), Ints({4, 1}), 0), load),
                  "a tensor of size [3, 4], stride [4, 1] at offset 0 reaches element 11 of a "
                  "storage of only 10 elements");
  EXPECT_CONTAINS(Unpickle(view(Ints({2}), Ints({1}), 9), load), "reaches element 10");
  EXPECT_CONTAINS(Unpickle(view(Ints({2}), Ints({-1}), 5), load), "a negative stride [-1]");
  EXPECT_CONTAINS(Unpickle(view(Ints({2}), Ints({1}), 11), load),
                  "storage offset 11 is outside its storage of 10 elements");
  EXPECT_CONTAINS(Unpickle(view(Ints({2, 2}), Ints({1}), 0), load), "has 2 sizes but 1 strides");
  EXPECT_CONTAINS(Unpickle(view(Ints({-2}), Ints({1}), 0), load), "is negative or overflows");
  // In bounds: the last element exactly, and an empty view at the end.
  PyHeap heap;
  size_t pos = 0;
  const PyObject* t = unpickle(view(Ints({2, 3}), Ints({1, 2}), 4), &pos, heap,
                               {"crafted.pkl", load, 100});
  ASSERT_EQ(t->type, PyType::kTensor);
  EXPECT_TRUE(at::equal(t->tensor, at::arange(10, at::kFloat).as_strided({2, 3}, {1, 2}, 4)));
  pos = 0;
  EXPECT_EQ(unpickle(view(Ints({0}), Ints({1}), 10), &pos, heap, {"c", load, 100})->tensor.numel(), 0);
}

}  // namespace
}  // namespace dtrain::interop
