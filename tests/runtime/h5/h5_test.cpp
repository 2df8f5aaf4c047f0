// Tests of the RAII HDF5 layer (runtime/h5): bitwise dtype round trips, hyperslabs,
// attributes, groups, strings, error messages, and interoperability with Debian's h5py.
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "runtime/h5/h5.h"
#include "runtime/base/error.h"
#include "tests/test_util.h"

namespace dtrain::h5 {
namespace {

class H5Test : public ::testing::Test {
 protected:
  std::string path(const std::string& name) const { return tmp_ / name; }

  testutil::TempDir tmp_{"dtrain_h5_"};
};

// A tensor of `dtype` and `shape` filled with random bytes (any bit pattern, NaNs with
// payloads included), or 0/1 for bool.
at::Tensor random_bytes(at::ScalarType dtype, at::IntArrayRef shape, uint64_t seed) {
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype));
  std::mt19937_64 rng(seed);
  auto* p = static_cast<uint8_t*>(t.data_ptr());
  const size_t n = t.numel() * t.element_size();
  for (size_t i = 0; i < n; ++i) {
    p[i] = dtype == at::kBool ? static_cast<uint8_t>(rng() & 1) : static_cast<uint8_t>(rng());
  }
  return t;
}

bool same_bytes(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || !a.sizes().equals(b.sizes())) return false;
  if (a.numel() == 0) return true;
  at::Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.numel() * ca.element_size()) == 0;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

const std::vector<at::ScalarType> kAllDtypes = {at::kHalf, at::kFloat, at::kDouble,
                                                at::kChar, at::kShort, at::kInt,
                                                at::kLong, at::kByte,  at::kBool};

TEST_F(H5Test, EveryDtypeRoundTripsBitwise) {
  const std::vector<std::vector<int64_t>> shapes = {{}, {0}, {7}, {3, 4, 5}};
  std::map<std::string, at::Tensor> written;
  {
    File f = File::create(path("dtypes.h5"));
    uint64_t seed = 1;
    for (at::ScalarType dt : kAllDtypes) {
      for (size_t s = 0; s < shapes.size(); ++s) {
        const std::string name = dtype_name(dt) + "/shape" + std::to_string(s);
        at::Tensor t = random_bytes(dt, shapes[s], seed++);
        f.write_tensor(name, t);
        written[name] = t;
      }
    }
    f.close();
  }
  File f = File::open(path("dtypes.h5"));
  for (const auto& [name, t] : written) {
    Dataset d = f.open_dataset(name);
    EXPECT_EQ(d.dtype(), t.scalar_type()) << name;
    EXPECT_EQ(d.shape(), t.sizes().vec()) << name;
    EXPECT_EQ(d.num_elements(), t.numel()) << name;
    at::Tensor r = d.read();
    EXPECT_TRUE(same_bytes(r, t)) << name;
  }
}

TEST_F(H5Test, NonContiguousTensorIsWrittenInLogicalOrder) {
  at::Tensor t = at::arange(12, at::kFloat).view({3, 4}).t();  // [4, 3], non-contiguous
  File f = File::create(path("t.h5"));
  f.write_tensor("t", t);
  EXPECT_TRUE(at::equal(f.read_tensor("t"), t));
}

TEST_F(H5Test, ReadConvertsToRequestedDtype) {
  File f = File::create(path("conv.h5"));
  at::Tensor h = at::tensor({0.5, -2.0, 65504.0, 1.0 / 1024}, at::kFloat).to(at::kHalf);
  f.write_tensor("h", h);
  f.write_tensor("i16", at::tensor({-3, 0, 32767}, at::kShort));
  EXPECT_TRUE(at::equal(f.read_tensor("h", at::kFloat), h.to(at::kFloat)));
  at::Tensor i = f.read_tensor("i16", at::kLong);
  EXPECT_EQ(i.scalar_type(), at::kLong);
  EXPECT_TRUE(at::equal(i, at::tensor({-3, 0, 32767}, at::kLong)));
}

TEST_F(H5Test, RowHyperslabsReadAndWrite) {
  at::Tensor full = at::arange(30, at::kDouble).view({10, 3});
  File f = File::create(path("rows.h5"));
  Dataset d = f.create_dataset("x", datatype_for(at::kDouble), {10, 3});
  d.write_rows(0, full.slice(0, 0, 6));
  d.write_rows(6, full.slice(0, 6, 10));
  EXPECT_TRUE(at::equal(d.read(), full));
  EXPECT_TRUE(at::equal(d.read_rows(2, 4), full.slice(0, 2, 6)));
  EXPECT_EQ(d.read_rows(10, 0).sizes().vec(), (std::vector<int64_t>{0, 3}));
  EXPECT_TRUE(at::equal(d.read_rows(9, 1, at::kFloat), full.slice(0, 9, 10).to(at::kFloat)));

  // 1-D.
  at::Tensor v = at::arange(100, at::kLong);
  Dataset d1 = f.write_tensor("v", v);
  EXPECT_TRUE(at::equal(d1.read_rows(37, 20), v.slice(0, 37, 57)));

  std::string msg = error_of([&] { d.read_rows(8, 3); });
  EXPECT_NE(msg.find("[8, 11)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'/x' in '" + path("rows.h5") + "'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("10 rows"), std::string::npos) << msg;
  msg = error_of([&] { d.write_rows(0, at::zeros({2, 4}, at::kDouble)); });
  EXPECT_NE(msg.find("[2, 4]"), std::string::npos) << msg;
  msg = error_of([&] { d.write(at::zeros({10}, at::kDouble)); });
  EXPECT_NE(msg.find("[10, 3]"), std::string::npos) << msg;
}

TEST_F(H5Test, ReadIntoFillsAnExistingBuffer) {
  File f = File::create(path("into.h5"));
  at::Tensor w = at::arange(12, at::kFloat).reshape({3, 4});
  f.write_tensor("w", w);
  Dataset d = f.open_dataset("w");
  at::Tensor big = at::full({5, 4}, -1.0, at::kDouble);
  d.read_into(big.narrow(0, 1, 3));  // rows 1..3 of a larger buffer, converted to float64
  EXPECT_TRUE(at::equal(big.narrow(0, 1, 3), w.to(at::kDouble)));
  EXPECT_EQ(big[0][0].item<double>(), -1.0);
  EXPECT_EQ(big[4][3].item<double>(), -1.0);
  std::string msg = error_of([&] { d.read_into(at::empty({4, 3}, at::kFloat)); });
  EXPECT_NE(msg.find("'/w' in '" + path("into.h5") + "'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("shape [3, 4]"), std::string::npos) << msg;
  msg = error_of([&] { d.read_into(at::empty({4, 3}, at::kFloat).t()); });
  EXPECT_NE(msg.find("non-contiguous"), std::string::npos) << msg;
  EXPECT_THROW(d.read_into(at::empty({4, 3}, at::kFloat)), H5Error);
}

TEST_F(H5Test, VirtualDatasetsAreCreatedAndReadBack) {
  for (int s = 0; s < 2; ++s) {
    File src = File::create(path("src" + std::to_string(s) + ".h5"));
    src.write_tensor("part", at::full({2, 3}, static_cast<double>(s), at::kFloat));
    src.write_tensor("one", at::scalar_tensor(7 + s, at::kLong));
    src.close();
  }
  File f = File::create(path("vds.h5"));
  const std::vector<VirtualMapping> maps = {{"src0.h5", "/part", {0, 0}, {2, 3}, true},
                                            {"src1.h5", "/part", {2, 0}, {2, 3}, true},
                                            {"src1.h5", "/none", {4, 0}, {0, 3}, true}};
  create_virtual_dataset(f, "stitched/w", datatype_for(at::kFloat), {4, 3}, maps);
  create_virtual_dataset(f, "scalar", datatype_for(at::kLong), {},
                         {{"src1.h5", "/one", {}, {}, true}});
  f.close();

  File r = File::open(path("vds.h5"));
  at::Tensor w = r.read_tensor("stitched/w");
  EXPECT_TRUE(at::equal(w.narrow(0, 0, 2), at::zeros({2, 3})));
  EXPECT_TRUE(at::equal(w.narrow(0, 2, 2), at::ones({2, 3})));
  EXPECT_EQ(r.read_tensor("scalar").item<int64_t>(), 8);
  // The mapping of no elements is not stored; the others read back as written.
  EXPECT_EQ(virtual_mappings(r, "/stitched/w"),
            std::vector<VirtualMapping>(maps.begin(), maps.begin() + 2));
  r.close();

  File g = File::open(path("vds.h5"), OpenMode::kReadWrite);
  std::string msg = error_of([&] {
    create_virtual_dataset(g, "bad", datatype_for(at::kFloat), {4, 3},
                           {{"src0.h5", "/part", {0}, {2}, true}});
  });
  EXPECT_NE(msg.find("virtual dataset 'bad' in '" + path("vds.h5") + "'"), std::string::npos)
      << msg;
  EXPECT_THROW(create_virtual_dataset(g, "stitched/w", datatype_for(at::kFloat), {4, 3}, maps),
               H5Error);
}

TEST_F(H5Test, Attributes) {
  File f = File::create(path("attrs.h5"));
  Group g = f.create_group("meta");
  g.set_int_attr("iteration", -4999);
  g.set_int_attr("big", INT64_MAX);
  g.set_float_attr("lr", 0.125);
  g.set_string_attr("name", "model_final");
  g.set_string_attr("utf8", "r\xC3\xA9sum\xC3\xA9 \xE2\x9C\x93");
  g.set_string_attr("empty", "");
  g.set_fixed_string_attr("fixed", "abc");
  g.set_fixed_string_attr("fixed_empty", "");
  g.set_int_list_attr("shape", {4, 0, 7});
  g.set_float_list_attr("betas", {0.9, 0.999});
  g.set_int_attr("replaced", 1);
  g.set_string_attr("replaced", "now a string");

  EXPECT_EQ(g.get_int_attr("iteration"), -4999);
  EXPECT_EQ(g.get_int_attr("big"), INT64_MAX);
  EXPECT_EQ(g.get_float_attr("lr"), 0.125);
  EXPECT_EQ(g.get_float_attr("iteration"), -4999.0);  // ints read as floats
  EXPECT_EQ(g.get_string_attr("name"), "model_final");
  EXPECT_EQ(g.get_string_attr("utf8"), "r\xC3\xA9sum\xC3\xA9 \xE2\x9C\x93");
  EXPECT_EQ(g.get_string_attr("empty"), "");
  EXPECT_EQ(g.get_string_attr("fixed"), "abc");
  EXPECT_EQ(g.get_string_attr("fixed_empty"), "");
  EXPECT_EQ(g.get_int_list_attr("shape"), (std::vector<int64_t>{4, 0, 7}));
  EXPECT_EQ(g.get_float_list_attr("betas"), (std::vector<double>{0.9, 0.999}));
  EXPECT_EQ(g.get_string_attr("replaced"), "now a string");
  EXPECT_TRUE(g.has_attr("lr"));
  EXPECT_FALSE(g.has_attr("nope"));
  EXPECT_EQ(g.attr_names(),
            (std::vector<std::string>{"betas", "big", "empty", "fixed", "fixed_empty", "iteration",
                                      "lr", "name", "replaced", "shape", "utf8"}));

  // On a dataset and on the root group too.
  Dataset d = f.write_tensor("w", at::ones({2}, at::kFloat));
  d.set_int_attr("version", 1);
  f.set_string_attr("format", "dtrain");
  EXPECT_EQ(d.get_int_attr("version"), 1);
  EXPECT_EQ(f.get_string_attr("format"), "dtrain");

  std::string msg = error_of([&] { g.get_int_attr("lr"); });
  EXPECT_NE(msg.find("attribute 'lr'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'/meta'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("float64"), std::string::npos) << msg;
  msg = error_of([&] { g.get_int_attr("shape"); });
  EXPECT_NE(msg.find("one value, found 3"), std::string::npos) << msg;
  msg = error_of([&] { g.get_string_attr("missing"); });
  EXPECT_NE(msg.find("'/meta' in '" + path("attrs.h5") + "' has no attribute 'missing'"),
            std::string::npos)
      << msg;
  msg = error_of([&] { g.get_string_attr("lr"); });
  EXPECT_NE(msg.find("expected a string"), std::string::npos) << msg;
}

TEST_F(H5Test, GroupsAndPaths) {
  File f = File::create(path("groups.h5"));
  Group deep = f.create_group("a/b/c");
  EXPECT_EQ(deep.path(), "/a/b/c");
  EXPECT_TRUE(f.exists("a"));
  EXPECT_TRUE(f.exists("/a/b"));
  EXPECT_TRUE(f.exists("a/b/c"));
  EXPECT_FALSE(f.exists("a/x"));
  EXPECT_FALSE(f.exists("x/y/z"));
  Group b = f.open_group("a/b");
  b.write_tensor("t", at::zeros({3}, at::kInt));      // relative to b
  b.write_tensor("sub/u", at::zeros({1}, at::kInt));  // intermediate group created
  EXPECT_EQ(f.kind("a/b/t"), ObjectKind::kDataset);
  EXPECT_EQ(f.kind("a/b/sub"), ObjectKind::kGroup);
  EXPECT_EQ(f.kind("a/b/none"), ObjectKind::kMissing);
  EXPECT_FALSE(f.exists("a/b/t/inside"));  // a dataset is not a group: no error
  EXPECT_EQ(b.list(), (std::vector<std::string>{"c", "sub", "t"}));
  EXPECT_EQ(b.open_dataset("/a/b/t").path(), "/a/b/t");  // absolute path from a subgroup
  Group again = f.require_group("a/b");
  EXPECT_EQ(again.path(), "/a/b");
  Group fresh = f.require_group("n/m");
  EXPECT_TRUE(f.exists("n/m"));
  b.remove("t");
  EXPECT_FALSE(f.exists("a/b/t"));

  std::string msg = error_of([&] { f.create_group("a/b"); });
  EXPECT_NE(msg.find("'/a/b'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("exists"), std::string::npos) << msg;
  msg = error_of([&] { f.open_group("a/b/sub/u"); });
  EXPECT_NE(msg.find("not a group"), std::string::npos) << msg;
  msg = error_of([&] { f.open_dataset("a/b"); });
  EXPECT_NE(msg.find("not a dataset"), std::string::npos) << msg;
}

TEST_F(H5Test, StringDatasets) {
  const std::string yaml = "MODEL:\n  NAME: gpt\nSOLVER:\n  BASE_LR: 0.001\n  note: \"\xC3\xA9\"\n";
  {
    File f = File::create(path("s.h5"));
    f.write_string("config.yaml", yaml);
    f.write_string("empty", "");
    f.close();
  }
  const std::string json = "{\"name\":\"caf\xC3\xA9\",\"note\":\"a \\\" b\"}";
  {
    File f = File::open(path("s.h5"), OpenMode::kReadWrite);
    f.write_string("fixed.json", json, Group::StringLength::kFixed);
    f.write_string("fixed_empty", "", Group::StringLength::kFixed);
    f.close();
  }
  File f = File::open(path("s.h5"));
  EXPECT_EQ(f.read_string("config.yaml"), yaml);
  EXPECT_EQ(f.read_string("empty"), "");
  EXPECT_EQ(f.read_string("fixed.json"), json) << "a fixed-length string is read back exactly";
  EXPECT_EQ(f.read_string("fixed_empty"), "");
  std::string msg = error_of([&] { f.read_tensor("config.yaml"); });
  EXPECT_NE(msg.find("string"), std::string::npos) << msg;
}

TEST_F(H5Test, MissingFileErrorNamesFileAndReason) {
  const std::string missing = path("no_such_dir/missing.h5");
  ::testing::internal::CaptureStderr();
  std::string msg = error_of([&] { File::open(missing); });
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(msg.find("opening HDF5 file '" + missing + "' for reading"), std::string::npos) << msg;
  EXPECT_NE(msg.find("No such file or directory"), std::string::npos) << msg;
  EXPECT_NE(msg.find("H5Fopen()"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_EQ(err, "") << "HDF5 printed its error stack although silenced";
  EXPECT_THROW(File::open(missing), H5Error);
  EXPECT_FALSE(is_hdf5_file(missing));
}

TEST_F(H5Test, MissingDatasetErrorNamesFileAndPath) {
  {
    File f = File::create(path("m.h5"));
    f.create_group("model");
  }
  File f = File::open(path("m.h5"));
  std::string msg = error_of([&] { f.read_tensor("model/fc1.weight"); });
  EXPECT_EQ(msg, "'" + path("m.h5") + "' has no dataset '/model/fc1.weight'");
  Group g = f.open_group("model");
  msg = error_of([&] { g.open_dataset("fc2.bias"); });
  EXPECT_EQ(msg, "'" + path("m.h5") + "' has no dataset '/model/fc2.bias'");
  msg = error_of([&] { f.open_group("optimizer"); });
  EXPECT_EQ(msg, "'" + path("m.h5") + "' has no group '/optimizer'");
}

TEST_F(H5Test, HdfErrorsCarryTheLibraryMessages) {
  // Writing into a read-only file fails inside HDF5; the message has our operation and
  // HDF5's own words.
  { File::create(path("ro.h5")).close(); }
  File f = File::open(path("ro.h5"));
  std::string msg = error_of([&] { f.write_tensor("x", at::zeros({2})); });
  EXPECT_NE(msg.find("creating dataset '/x'"), std::string::npos) << msg;
  EXPECT_NE(msg.find(path("ro.h5")), std::string::npos) << msg;
  EXPECT_NE(msg.find("HDF5: H5Dcreate2()"), std::string::npos) << msg;
  EXPECT_NE(msg.find("no write intent"), std::string::npos) << msg;

  // Not an HDF5 file.
  { std::ofstream(path("text.h5")) << "not hdf5\n"; }
  EXPECT_FALSE(is_hdf5_file(path("text.h5")));
  msg = error_of([&] { File::open(path("text.h5")); });
  EXPECT_NE(msg.find("signature"), std::string::npos) << msg;

  // Creating over an existing file without overwrite.
  FileOptions no_overwrite;
  no_overwrite.overwrite = false;
  msg = error_of([&] { File::create(path("ro.h5"), no_overwrite); });
  EXPECT_NE(msg.find("creating HDF5 file '" + path("ro.h5") + "'"), std::string::npos) << msg;
}

TEST_F(H5Test, UnsupportedDtypesAreNamed) {
  std::string msg = error_of([] { datatype_for(at::kComplexFloat); });
  EXPECT_NE(msg.find("ComplexFloat"), std::string::npos) << msg;
  File f = File::create(path("u.h5"));
  Dataset d = f.create_dataset("u16", DataType::copy_of(H5T_STD_U16LE), {3});
  msg = error_of([&] { d.dtype(); });
  EXPECT_NE(msg.find("'/u16'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("uint16"), std::string::npos) << msg;
  // With an explicit target dtype HDF5 converts.
  d.write(at::tensor({1, 2, 65535}, at::kInt));
  EXPECT_TRUE(at::equal(d.read(at::kLong), at::tensor({1, 2, 65535}, at::kLong)));
}

TEST_F(H5Test, CloseReportsOpenObjectsAndHandlesMove) {
  File f = File::create(path("c.h5"));
  Dataset d = f.write_tensor("x", at::zeros({2}));
  std::string msg = error_of([&] { f.close(); });
  EXPECT_NE(msg.find("still open"), std::string::npos) << msg;
  EXPECT_TRUE(f.is_open());
  Dataset moved = std::move(d);
  EXPECT_FALSE(d.id() >= 0);  // NOLINT(bugprone-use-after-move): moved-from is empty
  moved.close();
  f.close();
  EXPECT_FALSE(f.is_open());
  f.close();  // idempotent
  File again = File::open(path("c.h5"));
  EXPECT_EQ(again.read_tensor("x").numel(), 2);
}

TEST_F(H5Test, AlignmentOption) {
  FileOptions options;
  options.alignment = 4096;
  options.alignment_threshold = 0;
  File f = File::create(path("aligned.h5"), options);
  Dataset d = f.write_tensor("x", at::ones({1000}, at::kFloat));
  ApiScope scope;
  const haddr_t offset = H5Dget_offset(d.id());
  ASSERT_NE(offset, HADDR_UNDEF);
  EXPECT_EQ(offset % 4096, 0u);
}

// ---- h5py interoperability -----------------------------------------------------------

bool have_h5py() {
  return std::system("/usr/bin/python3 -c 'import h5py, numpy' >/dev/null 2>&1") == 0;
}

TEST_F(H5Test, H5pyReadsWhatWeWrite) {
  if (!have_h5py()) GTEST_SKIP() << "/usr/bin/python3 cannot import h5py";
  {
    File f = File::create(path("py.h5"));
    f.write_tensor("f16", at::tensor({0.5, -1.25, 65504.0, 0.0001}, at::kFloat).to(at::kHalf));
    f.write_tensor("f32", at::arange(6, at::kFloat).view({2, 3}) / 4);
    f.write_tensor("f64", at::tensor({1e-300, -2.5}, at::kDouble));
    f.write_tensor("i8", at::tensor({-128, 127}, at::kChar));
    f.write_tensor("i16", at::tensor({-32768, 32767}, at::kShort));
    f.write_tensor("i32", at::tensor({-7, 7}, at::kInt));
    f.write_tensor("i64", at::tensor({INT64_MIN, INT64_MAX}, at::kLong));
    f.write_tensor("u8", at::tensor({0, 255}, at::kByte));
    f.write_tensor("b", at::tensor({1, 0, 1}, at::kByte).to(at::kBool));
    f.write_tensor("scalar", at::scalar_tensor(3.5, at::kDouble));
    f.write_string("config.yaml", "A: 1\nB: caf\xC3\xA9\n");
    f.write_string("index.json", "{\"a\": \"caf\xC3\xA9\"}", Group::StringLength::kFixed);
    {
      Group g = f.create_group("meta");
      g.set_int_attr("iteration", 4999);
      g.set_float_attr("lr", 0.1);
      g.set_string_attr("name", "caf\xC3\xA9");
      g.set_int_list_attr("shape", {2, 3});
      g.set_fixed_string_attr("fixed", "abc");
    }
    f.close();
  }
  const std::string script = path("check.py");
  {
    std::ofstream py(script);
    py << R"PY(
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
def eq(name, expected, dtype):
    d = f[name]
    assert d.dtype == np.dtype(dtype), (name, d.dtype, dtype)
    got = d[()]
    assert np.array_equal(got, np.array(expected, dtype=dtype)), (name, got, expected)
eq("f16", [0.5, -1.25, 65504.0, 0.0001], "float16")
eq("f32", np.arange(6, dtype="float32").reshape(2, 3) / 4, "float32")
eq("f64", [1e-300, -2.5], "float64")
eq("i8", [-128, 127], "int8")
eq("i16", [-32768, 32767], "int16")
eq("i32", [-7, 7], "int32")
eq("i64", [-2**63, 2**63 - 1], "int64")
eq("u8", [0, 255], "uint8")
eq("b", [True, False, True], "bool")
assert f["scalar"].shape == () and f["scalar"][()] == 3.5
assert f["config.yaml"].asstr()[()] == "A: 1\nB: caf\u00e9\n", f["config.yaml"][()]
import json
assert json.loads(f["index.json"][()]) == {"a": "caf\u00e9"}, f["index.json"][()]
m = f["meta"].attrs
assert m["iteration"] == 4999 and m["lr"] == 0.1
assert isinstance(m["name"], str) and m["name"] == "caf\u00e9", repr(m["name"])
assert list(m["shape"]) == [2, 3]
assert m["fixed"] == b"abc", repr(m["fixed"])
print("h5py OK")
)PY";
  }
  const std::string cmd = "/usr/bin/python3 " + script + " " + path("py.h5") + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof(buf), pipe)) out += buf;
  const int rc = pclose(pipe);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("h5py OK"), std::string::npos) << out;
}

TEST_F(H5Test, WeReadWhatH5pyWrites) {
  if (!have_h5py()) GTEST_SKIP() << "/usr/bin/python3 cannot import h5py";
  const std::string file = path("from_py.h5");
  const std::string cmd =
      "/usr/bin/python3 -c 'import h5py, numpy as np, sys\n"
      "with h5py.File(sys.argv[1], \"w\") as f:\n"
      "    f[\"h\"] = np.array([0.5, -3.0], dtype=\"float16\")\n"
      "    f[\"b\"] = np.array([True, False])\n"
      "    f[\"u16\"] = np.array([1, 65535], dtype=\"uint16\")\n"
      "    f[\"be\"] = np.array([1.5, 2.5], dtype=\">f4\")\n"
      "    f.attrs[\"s\"] = \"text\"\n"
      "    f.attrs[\"fs\"] = np.bytes_(b\"fixed\")\n"
      "    f.attrs[\"n\"] = np.int32(12)\n"
      "    f[\"yaml\"] = \"X: 1\"\n"
      "' " +
      file;
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  File f = File::open(file);
  EXPECT_EQ(f.open_dataset("h").dtype(), at::kHalf);
  EXPECT_TRUE(at::equal(f.read_tensor("h", at::kFloat), at::tensor({0.5, -3.0}, at::kFloat)));
  EXPECT_TRUE(at::equal(f.read_tensor("b"), at::tensor({1, 0}, at::kByte).to(at::kBool)));
  EXPECT_TRUE(at::equal(f.read_tensor("u16", at::kLong), at::tensor({1, 65535}, at::kLong)));
  EXPECT_EQ(f.open_dataset("be").dtype(), at::kFloat);
  EXPECT_TRUE(at::equal(f.read_tensor("be"), at::tensor({1.5, 2.5}, at::kFloat)));
  EXPECT_EQ(f.get_string_attr("s"), "text");
  EXPECT_EQ(f.get_string_attr("fs"), "fixed");
  EXPECT_EQ(f.get_int_attr("n"), 12);
  EXPECT_EQ(f.read_string("yaml"), "X: 1");
}

}  // namespace
}  // namespace dtrain::h5
