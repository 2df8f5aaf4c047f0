// dtrain::interop safetensors: bit-exact round trips of every dtype, a plain-Python peer
// (write_safetensors.py) in both directions, every validation error on crafted files, and
// a deterministic fuzz of byte flips and truncations.
#include "checkpoint/interop/safetensors.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "runtime/base/error.h"
#include "tests/gtest_util.h"
#include "tests/test_util.h"

namespace dtrain::interop {
namespace {

using dtrain::testing::ThrownMessage;
using Meta = std::map<std::string, std::string>;

// The contiguous bytes of `t` (what safetensors stores).
std::string Bytes(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
}

// Expects the same names in the same order, and each tensor of the same dtype, shape and bytes.
void ExpectSame(const NamedTensors& got, const NamedTensors& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE(want[i].first);
    EXPECT_EQ(got[i].first, want[i].first);
    EXPECT_EQ(got[i].second.scalar_type(), want[i].second.scalar_type());
    EXPECT_EQ(got[i].second.sizes(), want[i].second.sizes());
    EXPECT_TRUE(got[i].second.is_contiguous());
    EXPECT_EQ(Bytes(got[i].second), Bytes(want[i].second));
  }
}

// A tensor of `dtype` and `shape` with random bits (0/1 for bool).
at::Tensor RandomBits(at::ScalarType dtype, at::IntArrayRef shape) {
  if (dtype == at::kBool) return at::randint(0, 2, shape, at::kByte).to(at::kBool);
  const int64_t itemsize = c10::elementSize(dtype);
  std::vector<int64_t> raw(shape.begin(), shape.end());
  raw.push_back(itemsize);
  return at::randint(0, 256, raw, at::kByte).view(dtype).squeeze(-1);
}

constexpr at::ScalarType kAllDtypes[] = {at::kDouble, at::kFloat, at::kHalf,  at::kBFloat16,
                                         at::kLong,   at::kInt,   at::kShort, at::kChar,
                                         at::kByte,   at::kBool};

// Every dtype in several shapes, 0-dim and empty ones included, NaN payloads in floats.
NamedTensors AllDtypes() {
  at::manual_seed(7);
  NamedTensors out;
  for (at::ScalarType dtype : kAllDtypes) {
    const std::string d = c10::toString(dtype);
    out.emplace_back(d + ".matrix", RandomBits(dtype, {5, 7}));
    out.emplace_back(d + ".scalar", RandomBits(dtype, {}));
    out.emplace_back(d + ".empty", at::empty({3, 0, 2}, dtype));
  }
  at::Tensor nans = at::zeros({3}, at::kFloat);
  const uint32_t bits[3] = {0x7fc00001u, 0xffa00002u, 0x7f800001u};  // quiet, signalling
  std::memcpy(nans.data_ptr(), bits, sizeof bits);
  out.emplace_back("nan_payloads", nans);
  return out;
}

// Builds a file: little-endian length, `header`, `data`.
std::string Craft(const std::string& header, const std::string& data = "") {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return out + header + data;
}

// One entry's JSON text.
std::string Entry(const std::string& dtype, const std::string& shape, const std::string& offsets) {
  return fmt::format(R"({{"dtype":"{}","shape":{},"data_offsets":{}}})", dtype, shape, offsets);
}

class SafetensorsTest : public ::testing::Test {
 protected:
  // Expects `bytes`, parsed in memory and read from a file, to fail with `part` in the
  // message, which names the file.
  void ExpectInvalid(const std::string& bytes, const std::string& part) {
    const std::string path = tmp_.write("bad.safetensors", bytes);
    const std::string mem =
        ThrownMessage<CheckpointError>([&] { parse_safetensors(bytes, "mem"); });
    EXPECT_CONTAINS(mem, "safetensors file 'mem': ");
    EXPECT_CONTAINS(mem, part);
    const std::string file = ThrownMessage<CheckpointError>([&] { read_safetensors(path); });
    EXPECT_CONTAINS(file, "safetensors file '" + path + "': ");
    EXPECT_CONTAINS(file, part);
  }

  testutil::TempDir tmp_{"safetensors_"};
};

TEST_F(SafetensorsTest, EveryDtypeRoundTripsBitForBit) {
  const NamedTensors tensors = AllDtypes();
  const Meta meta = {{"format", "pt"}, {"ünïcödé", "välue \"quoted\"\n"}, {"", ""}};
  const std::string path = tmp_ / "all.safetensors";
  write_safetensors(path, tensors, meta);
  Meta got_meta;
  ExpectSame(read_safetensors(path, &got_meta), tensors);
  EXPECT_EQ(got_meta, meta);
  Meta mem_meta;
  ExpectSame(parse_safetensors(testutil::read_file(path), "mem", &mem_meta), tensors);
  EXPECT_EQ(mem_meta, meta);
}

TEST_F(SafetensorsTest, NonContiguousInputIsWrittenContiguous) {
  const at::Tensor base = at::arange(48, at::kFloat).reshape({6, 8});
  const NamedTensors tensors = {{"transposed", base.t()},
                                {"strided", base.slice(1, 1, 8, 3)},
                                {"offset", base.narrow(0, 2, 3)},
                                {"expanded", at::arange(4, at::kLong).unsqueeze(0).expand({3, 4})},
                                {"bf16_transposed", base.to(at::kBFloat16).t()}};
  const std::string path = tmp_ / "views.safetensors";
  write_safetensors(path, tensors);
  const NamedTensors got = read_safetensors(path);
  ExpectSame(got, tensors);
  EXPECT_TRUE(at::equal(got[0].second, base.t()));
}

TEST_F(SafetensorsTest, FileLayoutFollowsTheSpec) {
  const std::string path = tmp_ / "layout.safetensors";
  write_safetensors(path, {{"a", at::ones({3}, at::kShort)}, {"b", at::ones({1}, at::kByte)}},
                    {{"k", "v"}});
  const std::string bytes = testutil::read_file(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u) << "data must start 8-byte aligned";
  ASSERT_EQ(bytes.size(), 8 + n + 7);
  const std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.substr(0, header.find_last_not_of(' ') + 1),
            R"({"__metadata__":{"k":"v"},"a":{"dtype":"I16","shape":[3],"data_offsets":[0,6]},)"
            R"("b":{"dtype":"U8","shape":[1],"data_offsets":[6,7]}})");
  EXPECT_EQ(bytes.substr(8 + n), std::string("\1\0\1\0\1\0\1", 7));
}

TEST_F(SafetensorsTest, WriteReplacesAtomicallyAndLeavesNoTemporary) {
  const std::string path = tmp_ / "w.safetensors";
  write_safetensors(path, {{"x", at::zeros({4})}});
  write_safetensors(path, {{"y", at::ones({2}, at::kInt)}});
  const NamedTensors got = read_safetensors(path);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].first, "y");
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(tmp_.path())) files += !e.is_directory();
  EXPECT_EQ(files, 1);
  EXPECT_CONTAINS(ThrownMessage<CheckpointError>(
                      [&] { write_safetensors(tmp_ / "no/such/dir/x.safetensors", {}); }),
                  "cannot create");
}

TEST_F(SafetensorsTest, WriteRefusesWhatTheFormatCannotHold) {
  auto write_fails = [&](const NamedTensors& t, const Meta& m = {}) {
    return ThrownMessage<CheckpointError>([&] { write_safetensors(tmp_ / "r.safetensors", t, m); });
  };
  EXPECT_CONTAINS(write_fails({{"z", at::zeros({2}, at::kComplexFloat)}}),
                  "tensor 'z' has dtype ComplexFloat, which safetensors cannot hold");
  EXPECT_CONTAINS(write_fails({{"a", at::zeros({1})}, {"a", at::zeros({1})}}),
                  "tensor 'a' appears twice");
  EXPECT_CONTAINS(write_fails({{"__metadata__", at::zeros({1})}}), "reserved for the metadata");
  EXPECT_CONTAINS(write_fails({{"u", at::Tensor()}}), "tensor 'u' is undefined");
  EXPECT_CONTAINS(write_fails({{"s", at::eye(2).to_sparse()}}), "not a dense (strided) tensor");
  EXPECT_CONTAINS(write_fails({{"bad\xff", at::zeros({1})}}), "is not valid UTF-8");
  EXPECT_CONTAINS(write_fails({}, {{"k", "\xc3"}}), "the metadata value of 'k' is not valid UTF-8");
  EXPECT_FALSE(std::filesystem::exists(tmp_ / "r.safetensors"));
}

TEST_F(SafetensorsTest, AcceptsWhatTheSpecAllows) {
  // No tensors; an unaligned, unpadded header; "__metadata__" anywhere.
  EXPECT_TRUE(parse_safetensors(Craft("{}"), "m").empty());
  Meta meta;
  const std::string one = Entry("U8", "[2]", "[0,2]");
  const NamedTensors got = parse_safetensors(
      Craft(R"({"t":)" + one + R"(,"__metadata__":{"a":"b"}})", "\7\x9"), "m", &meta);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(Bytes(got[0].second), "\7\x9");
  EXPECT_EQ(meta, (Meta{{"a", "b"}}));
  // Empty tensors at the same offset keep their header order.
  const NamedTensors empties = parse_safetensors(
      Craft(R"({"z":)" + Entry("F32", "[0]", "[0,0]") + R"(,"a":)" + Entry("I8", "[0,4]", "[0,0]") +
                R"(,"m":)" + Entry("U8", "[1]", "[0,1]") + "}",
            "x"),
      "m");
  ASSERT_EQ(empties.size(), 3u);
  EXPECT_EQ(empties[0].first, "z");
  EXPECT_EQ(empties[1].first, "a");
  EXPECT_EQ(empties[2].first, "m");
}

TEST_F(SafetensorsTest, RejectsBadLengthsAndHeaders) {
  ExpectInvalid("abc", "the file is 3 bytes, shorter than the 8-byte header length");
  std::string huge = Craft("{}");
  huge[0] = '\x01', huge[1] = '\xe1', huge[2] = '\xf5', huge[3] = '\x05';  // 100000001
  ExpectInvalid(huge, "header length 100000001 exceeds the limit of 100000000 bytes");
  std::string past = Craft("{}");
  past[0] = 100;
  ExpectInvalid(past, "header length 100 runs past the end of the file (10 bytes");
  ExpectInvalid(Craft(""), "the header is empty");
  ExpectInvalid(Craft("[1]"),
                "the header does not start with '{' (a JSON object); its first byte is 0x5b");
  ExpectInvalid(Craft(" {}"), "does not start with '{'");
  ExpectInvalid(Craft(R"({"a":)"), "the header is not valid JSON");
  ExpectInvalid(Craft("{}x"), "the header is not valid JSON");
  ExpectInvalid(Craft("{\"\xff\":1}"), "the header is not valid JSON");
  ExpectInvalid(Craft(R"({"a":{"shape":[[1]]}})"),
                "nests objects or arrays deeper than a safetensors header can (under 'a')");
}

TEST_F(SafetensorsTest, RejectsDuplicateKeys) {
  const std::string e = Entry("U8", "[1]", "[0,1]");
  ExpectInvalid(Craft(R"({"a":)" + e + R"(,"a":)" + e + "}", "x"),
                "the header has the key 'a' twice");
  ExpectInvalid(Craft(R"({"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}})", "x"),
                "the header has the key 'dtype' twice in 'a'");
  ExpectInvalid(Craft(R"({"__metadata__":{"k":"1","k":"2"}})"),
                "the header has the key 'k' twice in '__metadata__'");
  ExpectInvalid(Craft(R"({"__metadata__":{},"__metadata__":{}})"),
                "the header has the key '__metadata__' twice");
}

TEST_F(SafetensorsTest, RejectsMalformedEntries) {
  ExpectInvalid(
      Craft(R"({"a":[1]})"),
      "tensor 'a': the entry must be an object with dtype, shape and data_offsets, got [1]");
  ExpectInvalid(Craft(R"({"a":{"dtype":"F32","shape":[1]}})"),
                "tensor 'a': missing field 'data_offsets'");
  ExpectInvalid(
      Craft(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", "1234"),
      "tensor 'a': unexpected field 'x' (an entry has exactly dtype, shape and data_offsets)");
  ExpectInvalid(Craft(R"({"a":)" + Entry("F128", "[1]", "[0,16]") + "}"),
                "tensor 'a': unknown dtype \"F128\" (expected one of F64 F32 F16 BF16 I64 I32 I16 "
                "I8 U8 BOOL)");
  ExpectInvalid(Craft(R"({"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})"),
                "tensor 'a': dtype must be a string, got 4");
  ExpectInvalid(Craft(R"({"a":)" + Entry("U16", "[1]", "[0,2]") + "}", "12"),
                "tensor 'a': dtype 'U16' has no LibTorch 1.13 type");
  ExpectInvalid(Craft(R"({"__metadata__":[1]})"),
                "'__metadata__' must be an object of string values, got [1]");
  ExpectInvalid(Craft(R"({"__metadata__":{"k":1}})"),
                "'__metadata__': the value of 'k' must be a string, got 1");
}

TEST_F(SafetensorsTest, RejectsBadShapes) {
  const char* kBad = "tensor 'a': shape must be an array of non-negative integers, got ";
  ExpectInvalid(Craft(R"({"a":)" + Entry("F32", "[-1]", "[0,0]") + "}"),
                kBad + std::string("[-1]"));
  ExpectInvalid(Craft(R"({"a":)" + Entry("F32", "[1.5]", "[0,4]") + "}"),
                kBad + std::string("[1.5]"));
  ExpectInvalid(Craft(R"({"a":)" + Entry("F32", "[2.0]", "[0,8]") + "}"),
                kBad + std::string("[2.0]"));
  ExpectInvalid(Craft(R"({"a":)" + Entry("F32", "3", "[0,12]") + "}"), kBad + std::string("3"));
  ExpectInvalid(
      Craft(R"({"a":)" + Entry("F32", "[4294967296,4294967296]", "[0,0]") + "}"),
      "tensor 'a': shape [4294967296,4294967296] is too large (its byte size overflows int64)");
  ExpectInvalid(Craft(R"({"a":)" + Entry("U8", "[0,4611686018427387904,4]", "[0,0]") + "}"),
                "is too large");
  ExpectInvalid(Craft(R"({"a":)" + Entry("U8", "[18446744073709551615]", "[0,0]") + "}"),
                "is too large");
}

TEST_F(SafetensorsTest, RejectsBadOffsets) {
  const char* kBad =
      "tensor 'a': data_offsets must be two non-decreasing non-negative integers [begin, end], "
      "got ";
  for (const char* off : {"[8,4]", "[0]", "[0,4,8]", "[-1,3]", "[0.0,4]", "\"0,4\""}) {
    ExpectInvalid(Craft(R"({"a":)" + Entry("F32", "[1]", off) + "}", "1234"),
                  kBad + std::string(off));
  }
  ExpectInvalid(
      Craft(R"({"a":)" + Entry("F32", "[2,2]", "[0,12]") + "}", std::string(12, 'x')),
      "tensor 'a': data_offsets [0, 12] hold 12 bytes, but dtype F32 and shape [2, 2] need 16");
  ExpectInvalid(Craft(R"({"a":)" + Entry("F32", "[4]", "[0,16]") + "}", std::string(8, 'x')),
                "tensor 'a': data_offsets [0, 16] run past the end of the data region (8 bytes "
                "after the header)");
}

TEST_F(SafetensorsTest, RejectsTensorsThatDoNotTileTheData) {
  const std::string a = R"({"a":)" + Entry("F32", "[1]", "[0,4]");
  ExpectInvalid(Craft(a + R"(,"b":)" + Entry("F32", "[1]", "[8,12]") + "}", std::string(12, 'x')),
                "tensor 'b': data_offsets [8, 12] leave a gap (tensor 'a' ends at byte 4); the "
                "tensors must tile the data region without gaps or overlaps");
  ExpectInvalid(Craft(R"({"b":)" + Entry("F32", "[1]", "[4,8]") + "}", std::string(8, 'x')),
                "tensor 'b': data_offsets [4, 8] leave a gap (the data region starts at byte 0)");
  ExpectInvalid(Craft(R"({"a":)" + Entry("F32", "[2]", "[0,8]") + R"(,"b":)" +
                          Entry("F32", "[2]", "[4,12]") + "}",
                      std::string(12, 'x')),
                "tensor 'b': data_offsets [4, 12] overlap (tensor 'a' ends at byte 8)");
  ExpectInvalid(Craft(R"({"a":)" + Entry("F32", "[2]", "[0,8]") + R"(,"e":)" +
                          Entry("F32", "[0]", "[4,4]") + "}",
                      std::string(8, 'x')),
                "tensor 'e': data_offsets [4, 4] overlap");
  ExpectInvalid(Craft(a + "}", std::string(8, 'x')),
                "the tensors' data ends at byte 4 but the data region holds 8 bytes (trailing "
                "bytes after the last tensor)");
  ExpectInvalid(Craft(R"({"m":)" + Entry("BOOL", "[3]", "[0,3]") + "}", std::string("\1\2\0", 3)),
                "tensor 'm': bool element 1 is the byte 2, expected 0 or 1");
}

TEST_F(SafetensorsTest, ReportsFilesItCannotRead) {
  EXPECT_CONTAINS(ThrownMessage<CheckpointError>([&] { read_safetensors(tmp_ / "missing"); }),
                  "cannot open safetensors file '" + (tmp_ / "missing") + "': No such file");
  EXPECT_CONTAINS(ThrownMessage<CheckpointError>([&] { read_safetensors(tmp_.path()); }),
                  "not a regular file");
}

// Byte flips and truncations of a valid file either load or throw CheckpointError.
TEST_F(SafetensorsTest, FuzzedFilesLoadOrThrowCheckpointError) {
  const std::string path = tmp_ / "fuzz.safetensors";
  NamedTensors tensors = {{"w", at::arange(6, at::kFloat).reshape({2, 3})},
                          {"m", at::ones({3}, at::kBool)},
                          {"h", at::arange(4, at::kBFloat16)},
                          {"s", at::scalar_tensor(3, at::kLong)},
                          {"e", at::empty({0}, at::kInt)}};
  write_safetensors(path, tensors, {{"format", "pt"}});
  const std::string good = testutil::read_file(path);
  uint64_t header_end = 0;
  std::memcpy(&header_end, good.data(), 8);
  header_end += 8;
  std::mt19937_64 rng(20261202);
  int loaded = 0, rejected = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 10000; ++i) {
    std::string bytes = good;
    if (i % 4 == 3) {
      bytes.resize(rng() % good.size());
    } else {
      const int flips = 1 + static_cast<int>(rng() % 3);
      for (int f = 0; f < flips; ++f) {
        // Mostly in the length and header, where the checks are.
        const uint64_t span = rng() % 4 ? header_end : good.size();  // one rng() per statement:
        const uint64_t pos = rng() % span;  // the order of operands is unspecified
        bytes[pos] = static_cast<char>(rng() % 2 ? rng() : bytes[pos] ^ (1 << (rng() % 8)));
      }
    }
    try {
      parse_safetensors(bytes, "fuzz");
      ++loaded;
    } catch (const CheckpointError&) {
      ++rejected;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "case " << i << " threw a non-CheckpointError: " << e.what();
    }
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("fuzz: %d loaded, %d rejected in %.2f s\n", loaded, rejected, secs);
  EXPECT_GT(loaded, 0);
  EXPECT_GT(rejected, 5000);
}

// Runs the Python peer; returns its exit status (77: numpy or torch missing).
int Python(const std::string& args, const std::string& log) {
  const std::string cmd =
      fmt::format("'{}' '{}' {} > '{}' 2>&1", DTRAIN_PYTHON, DTRAIN_SAFETENSORS_SCRIPT, args, log);
  const int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

TEST_F(SafetensorsTest, ReadsWhatPlainPythonWrites) {
  const std::string dir = tmp_.path();
  const int rc = Python(fmt::format("write '{}'", dir), tmp_ / "py.log");
  if (rc == 77) GTEST_SKIP() << DTRAIN_PYTHON << " cannot import numpy/torch";
  ASSERT_EQ(rc, 0) << testutil::read_file(tmp_ / "py.log");
  const auto manifest = nlohmann::json::parse(testutil::read_file(tmp_ / "manifest.json"));
  Meta meta;
  const NamedTensors got = read_safetensors(tmp_ / "peer.safetensors", &meta);
  EXPECT_EQ(meta, manifest["metadata"].get<Meta>());
  ASSERT_EQ(got.size(), manifest["tensors"].size());
  const std::map<std::string, at::ScalarType> dtypes = {
      {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16},
      {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
      {"U8", at::kByte},    {"BOOL", at::kBool}};
  for (size_t i = 0; i < got.size(); ++i) {
    const auto& want = manifest["tensors"][i];
    SCOPED_TRACE(want["name"].get<std::string>());
    EXPECT_EQ(got[i].first, want["name"].get<std::string>());
    EXPECT_EQ(got[i].second.scalar_type(), dtypes.at(want["dtype"].get<std::string>()));
    EXPECT_EQ(got[i].second.sizes().vec(), want["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(Bytes(got[i].second), testutil::read_file(tmp_ / want["bin"].get<std::string>()));
  }
}

TEST_F(SafetensorsTest, PlainPythonReadsWhatWeWrite) {
  NamedTensors tensors;
  nlohmann::json manifest = {{"metadata", {{"format", "pt"}, {"ünï", "cödé"}}},
                             {"tensors", nlohmann::json::array()}};
  auto add = [&](const std::string& name, const at::Tensor& t, bool arange) {
    const std::string bin = std::to_string(tensors.size()) + ".bin";
    testutil::write_file(tmp_ / bin, Bytes(t));
    tensors.emplace_back(name, t);
    const char* dtype = nullptr;
    switch (t.scalar_type()) {
      case at::kDouble:
        dtype = "F64";
        break;
      case at::kFloat:
        dtype = "F32";
        break;
      case at::kHalf:
        dtype = "F16";
        break;
      case at::kBFloat16:
        dtype = "BF16";
        break;
      case at::kLong:
        dtype = "I64";
        break;
      case at::kInt:
        dtype = "I32";
        break;
      case at::kShort:
        dtype = "I16";
        break;
      case at::kChar:
        dtype = "I8";
        break;
      case at::kByte:
        dtype = "U8";
        break;
      default:
        dtype = "BOOL";
    }
    manifest["tensors"].push_back({{"name", name},
                                   {"dtype", dtype},
                                   {"shape", t.sizes().vec()},
                                   {"bin", bin},
                                   {"arange", arange}});
  };
  for (at::ScalarType dtype : kAllDtypes) {
    add(std::string("arange.") + c10::toString(dtype),
        at::arange(24, at::kDouble).to(dtype).reshape({2, 3, 4}), true);
  }
  add("scalar", at::scalar_tensor(2.5, at::kDouble), false);
  add("empty", at::empty({4, 0}, at::kHalf), true);
  add("transposed", at::arange(12, at::kFloat).reshape({3, 4}).t(), false);
  add("nan_payloads", AllDtypes().back().second, false);
  add("bits.bf16", RandomBits(at::kBFloat16, {9}), false);
  write_safetensors(tmp_ / "ours.safetensors", tensors, manifest["metadata"].get<Meta>());
  testutil::write_file(tmp_ / "manifest.json", manifest.dump());
  const int rc = Python(fmt::format("read '{}' '{}'", tmp_ / "ours.safetensors", tmp_.path()),
                        tmp_ / "py.log");
  if (rc == 77) GTEST_SKIP() << DTRAIN_PYTHON << " cannot import numpy/torch";
  EXPECT_EQ(rc, 0) << testutil::read_file(tmp_ / "py.log");
}

}  // namespace
}  // namespace dtrain::interop
