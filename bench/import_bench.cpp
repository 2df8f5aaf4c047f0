// Importing foreign weights: dtrain::interop::read_foreign_weights of a torch.save file
// (.pth) and of a .safetensors file, cold (page cache dropped) and warm, each round next to
// a cold read(2) of the same file into one buffer (the physical limit). With --breakdown N,
// where the import of the .pth spends its time: the zip archive's open, its record reads
// with and without libzip's CRC-32 check, the CRC alone (zlib), the page faults of fresh
// buffers with and without MADV_HUGEPAGE, and a read(2) of the cached file.
//
//   build/bin/dtrain_import_bench --file /tmp/w.pth --safetensors /tmp/w.safetensors
//
// Flags (defaults in brackets): --file PATH (required; a .pth/.pt torch.save file),
// --safetensors PATH [none], --rounds [5], --round [0] (the first round's number: it
// rotates the order of the cold reads and is written to the JSON line), --drop-caches [1],
// --breakdown [0] (rounds of the breakdown; needs a torch.save zip file), --check [1] (first
// check that both files hold the same tensors, bit for bit; untimed), --json FILE [none].
// bench/run_import.sh makes the files and runs this with bench/import_peer.py (torch.load).
#include <fcntl.h>
#include <malloc.h>
#include <unistd.h>
#include <zip.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include "bench/bench_util.h"
#include "checkpoint/interop/buffers.h"
#include "checkpoint/interop/weights.h"
#include "checkpoint/interop/zip_archive.h"
#include "runtime/base/error.h"

namespace dtrain::bench {
namespace {

namespace stdfs = std::filesystem;

int64_t file_bytes(const std::string& path) {
  return static_cast<int64_t>(stdfs::file_size(path));
}

// read(2) of exactly `n` bytes of `fd` from its current offset into `dst`.
void read_exactly(int fd, void* dst, uint64_t n, const std::string& path) {
  auto* p = static_cast<char*>(dst);
  while (n > 0) {
    const ssize_t got = ::read(fd, p, static_cast<size_t>(std::min<uint64_t>(n, 1u << 30)));
    if (got < 0 && errno == EINTR) continue;
    DTRAIN_CHECK(got > 0, "reading '{}': {}", path, got < 0 ? std::strerror(errno) : "early end");
    p += got;
    n -= static_cast<uint64_t>(got);
  }
}

// The physical limit: the whole file read with read(2) into one buffer allocated as the
// importer allocates its tensors (interop::empty_for_read), or into `into` when given
// (already touched: no page faults). Returns the seconds, allocation included.
double read_into_one_buffer(const std::string& path, at::Tensor* into = nullptr) {
  const int64_t size = file_bytes(path);
  Stopwatch sw;
  at::Tensor buf = into ? *into : interop::empty_for_read({size}, at::kByte);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  DTRAIN_CHECK(fd >= 0, "cannot open '{}': {}", path, std::strerror(errno));
  read_exactly(fd, buf.data_ptr(), static_cast<uint64_t>(size), path);
  ::close(fd);
  return sw.seconds();
}

struct Imported {
  size_t tensors = 0;
  int64_t bytes = 0;
  std::string format;
};

// Times read_foreign_weights(path); the result is freed after the clock stops.
double time_import(const std::string& path, Imported* info) {
  Stopwatch sw;
  interop::ForeignWeights w = interop::read_foreign_weights(path);
  const double s = sw.seconds();
  info->tensors = w.model.size();
  info->bytes = 0;
  for (const auto& [n, t] : w.model) info->bytes += t.numel() * static_cast<int64_t>(t.element_size());
  info->format = w.format;
  return s;
}

// The .pth and the .safetensors hold the same tensors, bit for bit, in the same order.
void check_same(const std::string& pth, const std::string& st) {
  const interop::ForeignWeights a = interop::read_foreign_weights(pth);
  const interop::ForeignWeights b = interop::read_foreign_weights(st);
  DTRAIN_CHECK(a.model.size() == b.model.size(), "'{}' holds {} tensors, '{}' {}", pth,
               a.model.size(), st, b.model.size());
  for (size_t i = 0; i < a.model.size(); ++i) {
    const auto& [na, ta] = a.model[i];
    const auto& [nb, tb] = b.model[i];
    DTRAIN_CHECK(na == nb && ta.scalar_type() == tb.scalar_type() && ta.sizes() == tb.sizes(),
                 "tensor {}: '{}' in '{}' but '{}' in '{}' (or another dtype or shape)", i, na,
                 pth, nb, st);
    const int64_t n = ta.numel() * static_cast<int64_t>(ta.element_size());
    DTRAIN_CHECK(std::memcmp(ta.contiguous().data_ptr(), tb.contiguous().data_ptr(), n) == 0,
                 "tensor '{}' differs between '{}' and '{}'", na, pth, st);
  }
}

// ---- breakdown of the .pth import ----

// The storage records ("<archive>/data/<key>") of a torch.save zip file: libzip index and
// size (ZipArchive's entry i is libzip's index i).
struct Record {
  size_t index;
  uint64_t size;
};

std::vector<Record> storage_records(const interop::ZipArchive& zip) {
  std::vector<Record> out;
  for (size_t i = 0; i < zip.entries().size(); ++i) {
    const auto& e = zip.entries()[i];
    if (e.name.find("/data/") != std::string::npos && e.stored) out.push_back({i, e.size});
  }
  return out;
}

// Fresh buffers as the importer allocates them, one per record (not touched).
std::vector<at::Tensor> fresh_buffers(const std::vector<Record>& recs) {
  std::vector<at::Tensor> out;
  out.reserve(recs.size());
  for (const auto& r : recs) out.push_back(interop::empty_for_read({static_cast<int64_t>(r.size)}, at::kByte));
  return out;
}

// Every record read through ZipArchive::read_into (libzip, CRC-32 checked).
void read_records_checked(const interop::ZipArchive& zip, const std::vector<Record>& recs,
                          std::vector<at::Tensor>& bufs) {
  for (size_t i = 0; i < recs.size(); ++i) zip.read_into(recs[i].index, bufs[i].data_ptr(), recs[i].size);
}

// Every record read with libzip's ZIP_FL_COMPRESSED: for a stored entry the same bytes,
// without the CRC-32 layer.
void read_records_unchecked(zip_t* z, const std::vector<Record>& recs,
                            std::vector<at::Tensor>& bufs, const std::string& path) {
  for (size_t i = 0; i < recs.size(); ++i) {
    zip_file_t* f = zip_fopen_index(z, recs[i].index, ZIP_FL_COMPRESSED);
    DTRAIN_CHECK(f != nullptr, "'{}': cannot open entry {}: {}", path, recs[i].index, zip_strerror(z));
    auto* p = static_cast<char*>(bufs[i].data_ptr());
    uint64_t done = 0;
    while (done < recs[i].size) {
      const zip_int64_t got = zip_fread(f, p + done, recs[i].size - done);
      DTRAIN_CHECK(got > 0, "'{}': reading entry {}: {}", path, recs[i].index, zip_file_strerror(f));
      done += static_cast<uint64_t>(got);
    }
    zip_fclose(f);
  }
}

zip_t* open_raw(const std::string& path) {
  int code = 0;
  zip_t* z = zip_open(path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &code);
  DTRAIN_CHECK(z != nullptr, "'{}': zip_open failed ({})", path, code);
  return z;
}

// zlib's crc32 over every buffer, in 1 GiB pieces (what libzip's CRC layer calls).
uint32_t crc_of(const std::vector<at::Tensor>& bufs, std::vector<uint32_t>* each = nullptr) {
  uint32_t all = 0;
  for (const auto& b : bufs) {
    uLong c = crc32(0L, Z_NULL, 0);
    const auto* p = static_cast<const Bytef*>(b.data_ptr());
    uint64_t n = static_cast<uint64_t>(b.numel());
    while (n > 0) {
      const uInt k = static_cast<uInt>(std::min<uint64_t>(n, 1u << 30));
      c = crc32(c, p, k);
      p += k;
      n -= k;
    }
    all ^= static_cast<uint32_t>(c);
    if (each) each->push_back(static_cast<uint32_t>(c));
  }
  return all;
}

// Fresh buffers of the records' sizes, each touched once (memset), allocated with
// interop::empty_for_read (MADV_HUGEPAGE) or plain at::empty.
double touch_fresh(const std::vector<Record>& recs, bool huge) {
  Stopwatch sw;
  std::vector<at::Tensor> bufs;
  for (const auto& r : recs) {
    at::Tensor t = huge ? interop::empty_for_read({static_cast<int64_t>(r.size)}, at::kByte)
                        : at::empty({static_cast<int64_t>(r.size)}, at::kByte);
    std::memset(t.data_ptr(), 0, r.size);
    bufs.push_back(std::move(t));
  }
  return sw.seconds();
}

nlohmann::json breakdown(const std::string& path, int64_t rounds, bool drop) {
  const int64_t size = file_bytes(path);
  std::map<std::string, std::vector<double>> t;
  uint64_t rec_bytes = 0;
  size_t nrec = 0;
  for (int64_t r = 0; r < rounds; ++r) {
    // Cold: open + every record, with and without the CRC-32 check; the import.
    if (drop) drop_page_cache();
    {
      Stopwatch sw;
      interop::ZipArchive zip = interop::ZipArchive::open_file(path);
      t["cold: ZipArchive::open_file"].push_back(sw.seconds());
      const auto recs = storage_records(zip);
      auto bufs = fresh_buffers(recs);
      sw.reset();
      read_records_checked(zip, recs, bufs);
      t["cold: records via ZipArchive::read_into (CRC on), fresh buffers"].push_back(sw.seconds());
    }
    if (drop) drop_page_cache();
    {
      Stopwatch sw;
      zip_t* z = open_raw(path);
      interop::ZipArchive zip = interop::ZipArchive::open_file(path);  // for the entry list
      const auto recs = storage_records(zip);
      auto bufs = fresh_buffers(recs);
      sw.reset();
      read_records_unchecked(z, recs, bufs, path);
      t["cold: records via libzip, no CRC, fresh buffers"].push_back(sw.seconds());
      zip_discard(z);
    }
    if (drop) drop_page_cache();
    {
      Imported info;
      t["cold: read_foreign_weights (whole import)"].push_back(time_import(path, &info));
    }
    if (drop) drop_page_cache();
    t["cold: read(2) whole file, one fresh buffer"].push_back(read_into_one_buffer(path));

    // Warm: the file is in the page cache now (read it once more to be sure).
    read_into_one_buffer(path);
    {
      Imported info;
      t["warm: read_foreign_weights (whole import)"].push_back(time_import(path, &info));
    }
    Stopwatch sw;
    interop::ZipArchive zip = interop::ZipArchive::open_file(path);
    t["warm: ZipArchive::open_file"].push_back(sw.seconds());
    const auto recs = storage_records(zip);
    nrec = recs.size();
    rec_bytes = 0;
    for (const auto& x : recs) rec_bytes += x.size;
    zip_t* z = open_raw(path);
    {
      auto bufs = fresh_buffers(recs);
      sw.reset();
      read_records_checked(zip, recs, bufs);
      t["warm: records, CRC on, fresh buffers"].push_back(sw.seconds());
    }
    {
      auto bufs = fresh_buffers(recs);
      sw.reset();
      read_records_unchecked(z, recs, bufs, path);
      t["warm: records, no CRC, fresh buffers"].push_back(sw.seconds());
      sw.reset();
      read_records_checked(zip, recs, bufs);
      t["warm: records, CRC on, touched buffers"].push_back(sw.seconds());
      sw.reset();
      read_records_unchecked(z, recs, bufs, path);
      t["warm: records, no CRC, touched buffers"].push_back(sw.seconds());
      sw.reset();
      std::vector<uint32_t> crcs;
      crc_of(bufs, &crcs);
      t["zlib crc32 of the records in memory"].push_back(sw.seconds());
      // Sanity: the CRC computed here is the archive's (the reads were whole and right).
      for (size_t i = 0; i < recs.size(); ++i) {
        zip_stat_t st;
        zip_stat_init(&st);
        DTRAIN_CHECK(zip_stat_index(z, recs[i].index, 0, &st) == 0 && (st.valid & ZIP_STAT_CRC) &&
                         st.crc == crcs[i],
                     "'{}': record {} read wrong (CRC-32 {:08x}, archive says {:08x})", path,
                     recs[i].index, crcs[i], st.crc);
      }
    }
    zip_discard(z);
    t["fresh buffers touched (memset), MADV_HUGEPAGE"].push_back(touch_fresh(recs, true));
    t["fresh buffers touched (memset), plain at::empty"].push_back(touch_fresh(recs, false));
    {
      at::Tensor one = at::empty({size}, at::kByte);
      std::memset(one.data_ptr(), 0, static_cast<size_t>(size));
      t["warm: read(2) whole file, touched buffer"].push_back(read_into_one_buffer(path, &one));
    }
    t["warm: read(2) whole file, one fresh buffer"].push_back(read_into_one_buffer(path));
  }
  fmt::print("\nbreakdown of the .pth import: {} storage records, {} ({} rounds; median s, "
             "GB/s of the records' bytes)\n", nrec, format_bytes(static_cast<double>(rec_bytes)),
             rounds);
  nlohmann::json j = {{"bench", "import_breakdown"}, {"file", path}, {"file_bytes", size},
                      {"record_bytes", rec_bytes}, {"records", nrec}, {"rounds", rounds},
                      {"cache_dropped", drop}, {"load", load_average()}};
  for (const auto& [name, v] : t) {
    const double m = median(v);
    fmt::print("  {:66s} {:7.3f} s {:6.2f} GB/s  (runs: {:.3f})\n", name, m,
               static_cast<double>(rec_bytes) / m / 1e9, fmt::join(v, ", "));
    j["seconds"][name] = v;
  }
  return j;
}

int run(int argc, char** argv) {
  Flags flags(argc, argv);
  const std::string pth = flags.get("file", "");
  const std::string st = flags.get("safetensors", "");
  const int64_t rounds = flags.get_int("rounds", 5);
  const int64_t first_round = flags.get_int("round", 0);
  const bool drop = flags.get_int("drop-caches", 1) != 0;
  const int64_t bd_rounds = flags.get_int("breakdown", 0);
  const bool check = flags.get_int("check", 1) != 0;
  const std::string json_path = flags.get("json", "");
  flags.check_all_used();
  DTRAIN_CHECK(!pth.empty(), "--file PATH is required (a torch.save file; bench/run_import.sh "
               "makes one)");
  // Large buffers from mmap, returned to the system when freed: every import meets fresh
  // memory, as in a new process (otherwise glibc's threshold climbs to 32 MiB after the
  // first free and later rounds reuse touched heap).
  mallopt(M_MMAP_THRESHOLD, 256 << 10);
  at::set_num_threads(1);

  const int64_t pth_size = file_bytes(pth);
  const int64_t st_size = st.empty() ? 0 : file_bytes(st);
  if (!st.empty() && check) check_same(pth, st);
  bool dropped = true;
  auto cold = [&] {
    if (drop) dropped = drop_page_cache() && dropped;
  };
  std::map<std::string, std::vector<double>> t;
  Imported pth_info, st_info;
  const std::string load_before = load_average();
  const double cpu0 = process_cpu_seconds();
  Stopwatch all;
  for (int64_t r = 0; r < rounds; ++r) {
    // The cold reads in an order rotating from round to round (the disk drifts).
    std::vector<std::function<void()>> steps = {
        [&] {
          cold();
          t["read2_cold"].push_back(read_into_one_buffer(pth));
        },
        [&] {
          cold();
          t["pth_cold"].push_back(time_import(pth, &pth_info));
          t["pth_warm"].push_back(time_import(pth, &pth_info));
        },
    };
    if (!st.empty()) {
      steps.push_back([&] {
        cold();
        t["st_cold"].push_back(time_import(st, &st_info));
        t["st_warm"].push_back(time_import(st, &st_info));
      });
      steps.push_back([&] {
        cold();
        t["st_read2_cold"].push_back(read_into_one_buffer(st));
      });
    }
    const size_t shift = static_cast<size_t>(first_round + r) % steps.size();
    std::rotate(steps.begin(), steps.begin() + static_cast<std::ptrdiff_t>(shift), steps.end());
    for (auto& s : steps) s();
  }
  const double cpu_share = rounds ? (process_cpu_seconds() - cpu0) / all.seconds() : 0.0;

  if (rounds > 0) {
    fmt::print("import bench: '{}' ({}, {}: {} tensors, {}){}; {} rounds; page cache dropped: "
               "{}; load average {} -> {}\n",
               pth, format_bytes(static_cast<double>(pth_size)), pth_info.format,
               pth_info.tensors, format_bytes(static_cast<double>(pth_info.bytes)),
               st.empty() ? "" : fmt::format(", '{}' ({}, {} tensors)", st,
                                             format_bytes(static_cast<double>(st_size)),
                                             st_info.tensors),
               rounds, !drop ? "no (--drop-caches 0)" : dropped ? "yes" : "NO (not permitted)",
               load_before, load_average());
    const std::vector<std::pair<std::string, std::string>> rows = {
        {"read2_cold", "read(2) .pth into one buffer, cold"},
        {"pth_cold", "read_foreign_weights .pth, cold"},
        {"pth_warm", "read_foreign_weights .pth, warm"},
        {"st_read2_cold", "read(2) .safetensors into one buffer, cold"},
        {"st_cold", "read_foreign_weights .safetensors, cold"},
        {"st_warm", "read_foreign_weights .safetensors, warm"}};
    fmt::print("  {:44s} {:>8s} {:>7s}   runs (s)\n", "", "median", "GB/s");
    for (const auto& [key, label] : rows) {
      if (!t.count(key)) continue;
      const double bytes = static_cast<double>(key.rfind("st", 0) == 0 ? st_size : pth_size);
      const double m = median(t[key]);
      fmt::print("  {:44s} {:7.3f}s {:7.2f}   {:.3f}\n", label, m, bytes / m / 1e9,
                 fmt::join(t[key], ", "));
    }
    auto ratio = [&](const std::string& num, const std::string& den) {
      std::vector<double> v;
      for (size_t i = 0; i < t[num].size() && i < t[den].size(); ++i) v.push_back(t[den][i] / t[num][i]);
      return median(v);
    };
    fmt::print("  cold import / cold read(2), per-round median: .pth {:.2f}x", ratio("pth_cold", "read2_cold"));
    if (!st.empty()) fmt::print(", .safetensors {:.2f}x", ratio("st_cold", "st_read2_cold"));
    fmt::print("   (CPU share {:.2f})\n", cpu_share);
    std::fflush(stdout);
    nlohmann::json j = {{"bench", "import"}, {"impl", "dtrain"}, {"round", first_round},
                        {"rounds", rounds}, {"file", pth}, {"file_bytes", pth_size},
                        {"tensor_bytes", pth_info.bytes}, {"tensors", pth_info.tensors},
                        {"safetensors_file_bytes", st_size}, {"cache_dropped", drop && dropped},
                        {"cpu_share", cpu_share}, {"load", load_average()}, {"runs_s", t}};
    append_json_line(json_path, j);
  }
  if (bd_rounds > 0) {
    nlohmann::json j = breakdown(pth, bd_rounds, drop);
    std::fflush(stdout);
    append_json_line(json_path, j);
  }
  return 0;
}

}  // namespace
}  // namespace dtrain::bench

int main(int argc, char** argv) {
  try {
    return dtrain::bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "dtrain_import_bench: " << e.what() << "\n";
    return 1;
  }
}
