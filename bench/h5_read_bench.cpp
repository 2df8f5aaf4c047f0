// Lazy reading of an HDF5 dataset file larger than a memory limit: get_batch samples/s
// (random batches, as a shuffled sampler asks) and peak resident memory, against the
// file's size and a sequential read(2) of the file (the physical limit here: page cache
// or disk), medians of rounds.
//
//   build/bin/dtrain_h5_read_bench --size-mb 512 --limit-mb 128 --rounds 5
//
// Flags (defaults in brackets): --file PATH an existing layout-A file to read [none:
// one is written under /tmp and deleted afterwards], --size-mb its size [512],
// --sample-bytes bytes per uint8 sample [3072], --chunk-rows samples per HDF5 chunk (0:
// contiguous) [21, ~64 KiB], --batch samples per get_batch [64], --rounds [5],
// --seconds per round [0.5], --cache-mb block cache [4], --threads concurrent get_batch
// callers [1], --limit-mb address space allowed above the process's size before opening
// the file (RLIMIT_AS, plus 72 MiB per thread for its malloc arena and stack; 0: no
// limit) [128], --cold drop the page cache before each round
// (root only) [0], --json FILE append the result [none].
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <random>
#include <thread>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>

#include "bench/bench_util.h"
#include "runtime/base/error.h"
#include "runtime/data/h5_dataset.h"
#include "runtime/data/h5_lazy.h"
#include "runtime/h5/h5.h"

namespace dtrain::bench {
namespace {

// Writes `num` uint8 samples of `sample` bytes (class template + noise) in blocks of
// ~16 MiB, so the file never sits in this process's memory.
void write_file(const std::string& path, int64_t num, int64_t sample, int64_t chunk_rows) {
  h5::File f = h5::File::create(path);
  std::vector<int64_t> chunk;
  if (chunk_rows > 0) chunk = {std::min(chunk_rows, num), sample};
  h5::Dataset images = f.create_dataset("images", h5::datatype_for(at::kByte), {num, sample}, chunk);
  at::Tensor labels = at::randint(0, 10, {num}, at::kLong);
  at::Tensor templates = at::randint(0, 192, {10, sample}, at::kByte);
  const int64_t block = std::max<int64_t>(1, (int64_t{16} << 20) / sample);
  for (int64_t s = 0; s < num; s += block) {
    const int64_t n = std::min(block, num - s);
    at::Tensor x = templates.index_select(0, labels.narrow(0, s, n)) +
                   at::randint(0, 64, {n, sample}, at::kByte);
    images.write_rows(s, x);
  }
  images.close();
  f.write_tensor("labels", labels);
  f.set_int_attr("num_classes", 10);
  f.close();
}

int run(int argc, char** argv) {
  Flags flags(argc, argv);
  std::string file = flags.get("file", "");
  const int64_t size_mb = flags.get_int("size-mb", 512);
  const int64_t sample = flags.get_int("sample-bytes", 3072);
  const int64_t chunk_rows = flags.get_int("chunk-rows", (64 << 10) / std::max<int64_t>(1, sample));
  const int64_t batch = flags.get_int("batch", 64);
  const int64_t rounds = flags.get_int("rounds", 5);
  const double seconds = flags.get_double("seconds", 0.5);
  const int64_t cache_mb = flags.get_int("cache-mb", 4);
  const int64_t threads = flags.get_int("threads", 1);
  const int64_t limit_mb = flags.get_int("limit-mb", 128);
  const bool cold = flags.get_int("cold", 0) != 0;
  const std::string json_path = flags.get("json", "");
  flags.check_all_used();
  DTRAIN_CHECK_T(ConfigError,
                 size_mb > 0 && sample > 0 && batch > 0 && rounds > 0 && seconds > 0 &&
                     cache_mb >= 0 && threads > 0 && limit_mb >= 0 && chunk_rows >= 0,
                 "sizes, --batch, --rounds, --seconds and --threads must be positive");
  at::set_num_threads(1);

  const bool own_file = file.empty();
  if (own_file) {
    file = fmt::format("/tmp/dtrain_h5_read_bench_{}.h5", ::getpid());
    Stopwatch sw;
    write_file(file, (size_mb << 20) / sample, sample, chunk_rows);
    std::printf("wrote %s in %.1f s\n", file.c_str(), sw.seconds());
  }
  const int64_t file_bytes = static_cast<int64_t>(std::filesystem::file_size(file));
  const double read_s = read_whole_file(file);  // also warms the page cache (unless --cold)

  // Everything above may have grown the heap: reset the peak, then cap the address space.
  reset_peak_rss();
  const int64_t rss_before = proc_status_bytes("VmRSS");
  const int64_t vm_before = proc_status_bytes("VmSize");
  if (limit_mb > 0) {
    // Each worker thread also reserves (not uses) a glibc malloc arena (64 MiB) and a
    // stack (8 MiB); without room for them its mallocs fail over to a slow path.
    const rlim_t limit = static_cast<rlim_t>(vm_before + (limit_mb << 20) + threads * (72 << 20));
    const struct rlimit rl = {limit, limit};
    DTRAIN_CHECK(::setrlimit(RLIMIT_AS, &rl) == 0, "setrlimit(RLIMIT_AS) failed");
  }

  data::H5DatasetOptions o;
  o.in_memory_max_bytes = 0;
  o.cache_bytes = cache_mb << 20;
  auto ds = data::load_h5_dataset(file, o);
  const auto* lazy = dynamic_cast<const data::H5ClassificationDataset*>(ds.get());
  DTRAIN_CHECK(lazy != nullptr, "'{}' did not open as a lazy layout-A dataset", file);
  const int64_t n = ds->size();

  std::vector<double> rates;
  for (int64_t r = 0; r < rounds; ++r) {
    if (cold) drop_page_cache();
    std::atomic<int64_t> samples{0};
    Stopwatch sw;
    std::vector<std::thread> workers;
    for (int64_t w = 0; w < threads; ++w) {
      workers.emplace_back([&, w] {
        std::mt19937_64 gen(static_cast<uint64_t>(r * 1000 + w));
        std::vector<int64_t> idx(static_cast<size_t>(batch));
        while (sw.seconds() < seconds) {
          for (auto& i : idx) i = static_cast<int64_t>(gen() % static_cast<uint64_t>(n));
          ds->get_batch(idx);
          samples.fetch_add(batch);
        }
      });
    }
    for (auto& t : workers) t.join();
    rates.push_back(static_cast<double>(samples.load()) / sw.seconds());
  }
  const double rate = median(rates);
  {  // Verify what was measured: a batch against the rows read directly from the file.
    const std::vector<int64_t> idx = {n - 1, 0, n / 2, n / 2 + 1};
    data::Batch b = ds->get_batch(idx);
    h5::File f = h5::File::open(file);
    h5::Dataset images = f.open_dataset("images");
    for (size_t k = 0; k < idx.size(); ++k) {
      at::Tensor row = images.read_rows(idx[k], 1, at::kFloat)[0] / 255.0f;
      DTRAIN_CHECK(at::allclose(b.inputs[static_cast<int64_t>(k)], row),
                   "sample {} differs from the file", idx[k]);
    }
  }
  const int64_t peak = proc_status_bytes("VmHWM");
  const double mb_s = rate * static_cast<double>(sample) / 1e6;
  const double seq_mb_s = static_cast<double>(file_bytes) / read_s / 1e6;

  std::printf("file %s: %s, %lld samples of %lld B, chunks of %lld samples, cache %lld MiB, "
              "%lld thread(s), batch %lld\n",
              file.c_str(), format_bytes(static_cast<double>(file_bytes)).c_str(),
              static_cast<long long>(n), static_cast<long long>(sample),
              static_cast<long long>(chunk_rows), static_cast<long long>(cache_mb),
              static_cast<long long>(threads), static_cast<long long>(batch));
  std::printf("address space limit: %s above the %s before opening%s\n",
              limit_mb > 0 ? format_bytes(static_cast<double>(limit_mb << 20)).c_str() : "none",
              format_bytes(static_cast<double>(vm_before)).c_str(), cold ? ", cold page cache" : "");
  std::printf("%-34s %12s\n", "get_batch samples/s (median)", fmt::format("{:.0f}", rate).c_str());
  std::printf("%-34s %12.1f  (%.3fx a sequential read(2) of the file, %.0f MB/s)\n",
              "get_batch MB/s of samples", mb_s, mb_s / seq_mb_s, seq_mb_s);
  std::printf("%-34s %12s  (%.4fx the file; RSS before opening %s)\n", "peak RSS growth",
              format_bytes(static_cast<double>(peak - rss_before)).c_str(),
              static_cast<double>(peak - rss_before) / static_cast<double>(file_bytes),
              format_bytes(static_cast<double>(rss_before)).c_str());
  std::printf("rounds (samples/s): %s; blocks read %lld in %lld reads; cache hits %lld, "
              "misses %lld; load %s\n",
              fmt::format("{:.0f}", fmt::join(rates, " ")).c_str(),
              static_cast<long long>(lazy->reader().blocks_read()),
              static_cast<long long>(lazy->reader().file_reads()),
              static_cast<long long>(lazy->reader().cache().hits()),
              static_cast<long long>(lazy->reader().cache().misses()), load_average().c_str());
  append_json_line(json_path, {{"bench", "h5_read"},
                               {"file_bytes", file_bytes},
                               {"sample_bytes", sample},
                               {"chunk_rows", chunk_rows},
                               {"batch", batch},
                               {"threads", threads},
                               {"cache_mb", cache_mb},
                               {"limit_mb", limit_mb},
                               {"cold", cold},
                               {"samples_per_s", rate},
                               {"rounds", rates},
                               {"seq_read_mb_s", seq_mb_s},
                               {"peak_rss_bytes", peak},
                               {"rss_before_bytes", rss_before}});
  ds.reset();
  if (own_file) std::filesystem::remove(file);
  return 0;
}

}  // namespace
}  // namespace dtrain::bench

int main(int argc, char** argv) {
  return dtrain::bench::bench_main(argc, argv, "dtrain_h5_read_bench", dtrain::bench::run);
}
