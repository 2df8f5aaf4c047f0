// Importing foreign weights: dtrain::interop::read_foreign_weights of a torch.save file
// (.pth) and of a .safetensors file, cold (page cache dropped) and warm, each round next to
// a cold read(2) of the same file into one buffer (the physical limit). With --breakdown N,
// where the import of the .pth spends its time: the zip archive's open, its record reads
// with and without libzip's CRC-32 check, the CRC alone (zlib), the page faults of fresh
// buffers as interop::empty_for_read allocates them (own 2 MiB-aligned mappings,
// MADV_HUGEPAGE) and as plain at::empty, and a read(2) of the cached file. Every step also reports its page faults.
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
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zip.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
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

// Page faults of this process (minor) and the system's transparent-huge-page faults
// (/proc/vmstat: thp_fault_alloc, thp_fault_fallback; other processes count there too).
struct Faults {
  int64_t minor = 0, thp = 0, thp_fallback = 0;
};

Faults faults_now() {
  Faults f;
  rusage ru{};
  if (::getrusage(RUSAGE_SELF, &ru) == 0) f.minor = ru.ru_minflt;
  std::ifstream vm("/proc/vmstat");
  std::string name;
  int64_t value = 0;
  while (vm >> name >> value) {
    if (name == "thp_fault_alloc") f.thp = value;
    if (name == "thp_fault_fallback") f.thp_fallback = value;
  }
  return f;
}

// Seconds and page faults of named steps, over rounds.
class Log {
 public:
  void start() {
    f0_ = faults_now();
    sw_.reset();
  }
  // Records the step's seconds since start(), or `seconds` when given (a step that times
  // itself), and its page faults since start().
  void stop(const std::string& key, double seconds = -1) {
    const double s = seconds >= 0 ? seconds : sw_.seconds();
    const Faults f = faults_now();
    order_.push_back(key);
    t_[key].push_back(s);
    f_[key].push_back({f.minor - f0_.minor, f.thp - f0_.thp, f.thp_fallback - f0_.thp_fallback});
  }
  const std::vector<double>& seconds(const std::string& key) { return t_[key]; }
  bool has(const std::string& key) const { return t_.count(key) != 0; }
  // Median of a fault counter (0 minor, 1 THP, 2 THP fallback) of `key`'s rounds.
  int64_t fault_median(const std::string& key, int which) {
    std::vector<double> v;
    for (const auto& f : f_[key]) v.push_back(static_cast<double>(which == 0 ? f.minor : which == 1 ? f.thp : f.thp_fallback));
    return static_cast<int64_t>(median(v));
  }
  // One line per step, in the order first recorded: median seconds, GB/s of `bytes`,
  // median faults, every round's seconds.
  void print(double bytes, int width) {
    std::vector<std::string> seen;
    for (const auto& k : order_) {
      if (std::find(seen.begin(), seen.end(), k) != seen.end()) continue;
      seen.push_back(k);
      const double m = median(t_[k]);
      fmt::print("  {:{}s} {:7.3f} s {:6.2f} GB/s  faults {:7d} {:4d} {:3d}  (runs: {:.3f})\n", k,
                 width, m, bytes / m / 1e9, fault_median(k, 0), fault_median(k, 1),
                 fault_median(k, 2), fmt::join(t_[k], ", "));
    }
  }
  void to_json(nlohmann::json& j) {
    for (const auto& [k, v] : t_) {
      j["seconds"][k] = v;
      for (const auto& f : f_[k]) j["faults"][k].push_back({f.minor, f.thp, f.thp_fallback});
    }
  }

 private:
  Faults f0_;
  Stopwatch sw_;
  std::vector<std::string> order_;
  std::map<std::string, std::vector<double>> t_;
  std::map<std::string, std::vector<Faults>> f_;
};

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

// Every record read through libzip without the CRC-32 check: as two partial ranges (all
// but the last byte, then the last byte), which libzip reads through the same window and
// file sources without its CRC layer. (ZIP_FL_COMPRESSED does not help: libzip 1.7.3 still
// checks the CRC of a stored entry read that way.)
void read_records_unchecked(zip_t* z, const std::vector<Record>& recs,
                            std::vector<at::Tensor>& bufs, const std::string& path) {
  auto read_range = [&](const Record& r, uint64_t start, uint64_t len, char* dst) {
    zip_source_t* src = zip_source_zip(z, z, r.index, 0, start, static_cast<zip_int64_t>(len));
    DTRAIN_CHECK(src != nullptr && zip_source_open(src) == 0, "'{}': cannot open entry {}: {}",
                 path, r.index, zip_strerror(z));
    uint64_t done = 0;
    while (done < len) {
      const zip_int64_t got = zip_source_read(src, dst + done, len - done);
      DTRAIN_CHECK(got > 0, "'{}': reading entry {}: {}", path, r.index,
                   zip_error_strerror(zip_source_error(src)));
      done += static_cast<uint64_t>(got);
    }
    zip_source_close(src);
    zip_source_free(src);
  };
  for (size_t i = 0; i < recs.size(); ++i) {
    auto* p = static_cast<char*>(bufs[i].data_ptr());
    const uint64_t n = recs[i].size;
    if (n > 1) read_range(recs[i], 0, n - 1, p);
    if (n > 0) read_range(recs[i], n - 1, 1, p + n - 1);
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

// Reads one byte of every 4 KiB page of `bufs` in user space: the first user access to
// memory the kernel wrote (what a CRC pass, or any later use of the tensors, pays first).
uint64_t first_user_touch(const std::vector<at::Tensor>& bufs) {
  uint64_t sum = 0;
  for (const auto& b : bufs) {
    const auto* p = static_cast<const volatile unsigned char*>(b.data_ptr());
    for (int64_t i = 0; i < b.numel(); i += 4096) sum += p[i];
  }
  return sum;
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
  Log log;
  uint64_t rec_bytes = 0;
  size_t nrec = 0;
  for (int64_t r = 0; r < rounds; ++r) {
    // Cold: open + every record, with and without the CRC-32 check; the import; read(2).
    if (drop) drop_page_cache();
    {
      log.start();
      interop::ZipArchive zip = interop::ZipArchive::open_file(path);
      log.stop("cold: ZipArchive::open_file");
      const auto recs = storage_records(zip);
      auto bufs = fresh_buffers(recs);
      log.start();
      read_records_checked(zip, recs, bufs);
      log.stop("cold: records, CRC on (ZipArchive::read_into), fresh buffers");
    }
    if (drop) drop_page_cache();
    {
      zip_t* z = open_raw(path);
      interop::ZipArchive zip = interop::ZipArchive::open_file(path);  // for the entry list
      const auto recs = storage_records(zip);
      auto bufs = fresh_buffers(recs);
      log.start();
      read_records_unchecked(z, recs, bufs, path);
      log.stop("cold: records, no CRC (libzip partial ranges), fresh buffers");
      zip_discard(z);
    }
    if (drop) drop_page_cache();
    {
      Imported info;
      log.start();
      const double s = time_import(path, &info);
      log.stop("cold: read_foreign_weights (whole import)", s);
    }
    if (drop) drop_page_cache();
    log.start();
    log.stop("cold: read(2) whole file, one fresh buffer", read_into_one_buffer(path));

    // Warm: the file is in the page cache now (read once more to be sure).
    read_into_one_buffer(path);
    {
      Imported info;
      log.start();
      const double s = time_import(path, &info);
      log.stop("warm: read_foreign_weights (whole import)", s);
    }
    log.start();
    interop::ZipArchive zip = interop::ZipArchive::open_file(path);
    log.stop("warm: ZipArchive::open_file");
    const auto recs = storage_records(zip);
    nrec = recs.size();
    rec_bytes = 0;
    for (const auto& x : recs) rec_bytes += x.size;
    zip_t* z = open_raw(path);
    {
      auto bufs = fresh_buffers(recs);
      log.start();
      read_records_checked(zip, recs, bufs);
      log.stop("warm: records, CRC on, fresh buffers");
    }
    {
      auto bufs = fresh_buffers(recs);
      log.start();
      read_records_unchecked(z, recs, bufs, path);
      log.stop("warm: records, no CRC, fresh buffers");
      log.start();
      first_user_touch(bufs);
      log.stop("  then the first user-space read of every 4 KiB page");
      log.start();
      read_records_checked(zip, recs, bufs);
      log.stop("warm: records, CRC on, touched buffers");
      log.start();
      read_records_unchecked(z, recs, bufs, path);
      log.stop("warm: records, no CRC, touched buffers");
      std::vector<uint32_t> crcs;
      log.start();
      crc_of(bufs, &crcs);
      log.stop("zlib crc32 of the records in memory");
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
    log.start();
    log.stop("fresh buffers touched (memset), MADV_HUGEPAGE", touch_fresh(recs, true));
    log.start();
    log.stop("fresh buffers touched (memset), plain at::empty", touch_fresh(recs, false));
    log.start();
    log.stop("one fresh buffer of the file's size touched (memset), MADV_HUGEPAGE",
             touch_fresh({Record{0, static_cast<uint64_t>(size)}}, true));
    {
      at::Tensor one = interop::empty_for_read({size}, at::kByte);
      std::memset(one.data_ptr(), 0, static_cast<size_t>(size));
      log.start();
      log.stop("warm: read(2) whole file, touched buffer (MADV_HUGEPAGE)",
               read_into_one_buffer(path, &one));
      one = at::empty({size}, at::kByte);
      std::memset(one.data_ptr(), 0, static_cast<size_t>(size));
      log.start();
      log.stop("warm: read(2) whole file, touched buffer (plain at::empty)",
               read_into_one_buffer(path, &one));
    }
    log.start();
    log.stop("warm: read(2) whole file, one fresh buffer", read_into_one_buffer(path));
  }
  fmt::print("\nbreakdown of the .pth import: {} storage records, {} ({} rounds; median s, GB/s "
             "of the records' bytes; median page faults: minor, of which THP, THP fallbacks)\n",
             nrec, format_bytes(static_cast<double>(rec_bytes)), rounds);
  nlohmann::json j = {{"bench", "import_breakdown"}, {"file", path}, {"file_bytes", size},
                      {"record_bytes", rec_bytes}, {"records", nrec}, {"rounds", rounds},
                      {"cache_dropped", drop}, {"load", load_average()}};
  log.print(static_cast<double>(rec_bytes), 70);
  log.to_json(j);
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
  Log log;
  Imported pth_info, st_info;
  const std::string load_before = load_average();
  const double cpu0 = process_cpu_seconds();
  Stopwatch all;
  for (int64_t r = 0; r < rounds; ++r) {
    // The cold reads in an order rotating from round to round (the disk drifts).
    std::vector<std::function<void()>> steps = {
        [&] {
          cold();
          log.start();
          log.stop("read2_cold", read_into_one_buffer(pth));
        },
        [&] {
          cold();
          log.start();
          log.stop("pth_cold", time_import(pth, &pth_info));
          log.start();
          log.stop("pth_warm", time_import(pth, &pth_info));
        },
    };
    if (!st.empty()) {
      steps.push_back([&] {
        cold();
        log.start();
        log.stop("st_cold", time_import(st, &st_info));
        log.start();
        log.stop("st_warm", time_import(st, &st_info));
      });
      steps.push_back([&] {
        cold();
        log.start();
        log.stop("st_read2_cold", read_into_one_buffer(st));
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
    fmt::print("  {:44s} {:>8s} {:>7s}   {:>20s}   runs (s)\n", "", "median", "GB/s",
               "faults: minor THP fb");
    nlohmann::json runs;
    for (const auto& [key, label] : rows) {
      if (!log.has(key)) continue;
      const double bytes = static_cast<double>(key.rfind("st", 0) == 0 ? st_size : pth_size);
      const double m = median(log.seconds(key));
      fmt::print("  {:44s} {:7.3f}s {:7.2f}   {:>13d} {:4d} {:3d}   {:.3f}\n", label, m,
                 bytes / m / 1e9, log.fault_median(key, 0), log.fault_median(key, 1),
                 log.fault_median(key, 2), fmt::join(log.seconds(key), ", "));
      runs[key] = log.seconds(key);
    }
    auto ratio = [&](const std::string& num, const std::string& den) {
      const auto& a = log.seconds(num);
      const auto& b = log.seconds(den);
      std::vector<double> v;
      for (size_t i = 0; i < a.size() && i < b.size(); ++i) v.push_back(b[i] / a[i]);
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
                        {"cpu_share", cpu_share}, {"load", load_average()}, {"runs_s", runs}};
    nlohmann::json detail;
    log.to_json(detail);
    j["faults"] = detail["faults"];
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
  return dtrain::bench::bench_main(argc, argv, "dtrain_import_bench", dtrain::bench::run);
}
