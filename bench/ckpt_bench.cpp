// Checkpoint save/load bandwidth of the full training state (gpt parameters + AdamW
// exp_avg/exp_avg_sq + per-rank RNG) through Checkpointer, against `dd` write+fsync and
// cold `dd` read of the same size, and write(2)+fsync / cold read(2) of the state's own
// bytes, all measured in the same run, plus the peak extra memory and the save's
// coordination cost (its time minus the slowest rank's shard write).
//
//   mpirun -np 2 --bind-to none build/bin/dtrain_ckpt_bench --dir /tmp/ckpt-bench
//
// Flags (defaults in brackets): --dir output directory, created and emptied of what the
// run writes [/tmp/dtrain-ckpt-bench], --layers [12], --embd [768], --heads [12], --vocab
// [2048], --ctx [128] (gpt shape: 88.3 M parameters, 1.06 GB of state), --repeats rounds
// of (dd write, write(2), save, dd read, read(2), load; the order rotates) [3], --dd 0|1 measure dd and write(2)/read(2) in each round [1], --drop-caches 0|1 drop
// the page cache before each cold read [1], --shapes FILE write {name: shape} of every
// saved tensor for the Python peer [none], --diag 0|1 on more than one rank, time the
// load's fill-in broadcasts alone, per piece and packed per rank [1], --load-strategy
// auto|all_read|read_once (CHECKPOINT.LOAD_STRATEGY; the bytes read from storage, summed
// over ranks, are printed) [auto], --json FILE append the result [none].
#include <malloc.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/optim/adamw.h>
#include <torch/utils.h>

#include "bench/bench_util.h"
#include "checkpoint/checkpointer.h"
#include "checkpoint/format.h"
#include "checkpoint/module_state.h"
#include "checkpoint/shard_plan.h"
#include "models/gpt.h"
#include "runtime/base/error.h"
#include "runtime/base/logging.h"
#include "runtime/dist/mpi_communicator.h"
#include "runtime/optim/optimizer_state.h"

namespace dtrain::bench {
namespace {

namespace stdfs = std::filesystem;

// One hash over the bytes of every tensor, in order (verifies a load bit for bit).
uint64_t state_hash(const NamedTensors& tensors) {
  uint64_t h = 0;
  for (const auto& [name, t] : tensors) h = h * 31 + checkpoint::tensor_xxh64(t.contiguous());
  return h;
}

const char* kDdFile = "dd.bin";

// Bytes dd moves for a state of `bytes` (whole 16 MiB blocks).
int64_t dd_bytes(int64_t bytes) { return (bytes + (16 << 20) - 1) / (16 << 20) * (16 << 20); }

// Seconds of `dd` writing dd_bytes(bytes) of zeros to dir/dd.bin with conv=fsync.
double dd_write(const std::string& dir, int64_t bytes) {
  return run_timed(fmt::format("dd if=/dev/zero of='{}/{}' bs=16M count={} conv=fsync status=none",
                               dir, kDdFile, dd_bytes(bytes) / (16 << 20)));
}

// Seconds of `dd` reading dir/dd.bin (cold when the page cache was dropped), which it
// then deletes.
double dd_read(const std::string& dir) {
  const double s = run_timed(fmt::format("dd if='{}/{}' of=/dev/null bs=16M status=none", dir, kDdFile));
  stdfs::remove(dir + "/" + kDdFile);
  return s;
}

int run(int argc, char** argv) {
  // A fixed mmap threshold (glibc raises it after each large free otherwise): large
  // buffers then always come from mmap and go back to the system when freed, so that
  // every round's VmHWM - VmRSS sees the same allocator state as a fresh process.
  mallopt(M_MMAP_THRESHOLD, 256 << 10);
  dist::MpiCommunicator comm;
  const int rank = comm.rank(), world = comm.size();
  log::init(rank, world);

  Flags flags(argc, argv);
  const std::string dir = flags.get("dir", "/tmp/dtrain-ckpt-bench");
  const models::GptOptions g = gpt_options_from_flags(flags);
  const int64_t repeats = flags.get_int("repeats", 3);
  const bool with_dd = flags.get_int("dd", 1) != 0;
  const bool drop = flags.get_int("drop-caches", 1) != 0;
  const bool with_diag = flags.get_int("diag", 1) != 0;
  const std::string shapes_path = flags.get("shapes", "");
  const std::string json_path = flags.get("json", "");
  const std::string strategy = flags.get("load-strategy", "auto");
  const std::string keep_dir = flags.get("keep", "");
  flags.check_all_used();
  DTRAIN_CHECK_T(ConfigError, repeats > 0, "--repeats must be positive");

  at::set_num_threads(1);
  GptTrainingState state = make_gpt_training_state(g);
  auto& model = state.model;
  checkpoint::ModuleState& model_state = *state.model_state;
  optim::OptimizerState& opt_state = *state.opt_state;
  checkpoint::RngState rng;
  const auto tensors = replicated_tensors(model_state, opt_state);
  const int64_t bytes = total_bytes(tensors), params = state.params;
  const uint64_t saved_hash = state_hash(tensors);

  if (rank == 0) {
    stdfs::create_directories(dir);
    if (!shapes_path.empty()) {
      nlohmann::json shapes = nlohmann::json::object();
      for (const auto& [name, t] : tensors) shapes[name] = t.sizes().vec();
      append_json_line(shapes_path, shapes);
    }
  }
  const std::string save_dir = dir + "/ckpt";
  checkpoint::CheckpointerOptions copts;
  copts.load_strategy = checkpoint::parse_load_strategy(strategy);
  checkpoint::Checkpointer ckpt(model, save_dir, comm,
                                {{"optimizer", {&opt_state, checkpoint::Scope::kReplicated}},
                                 {"rng", {&rng, checkpoint::Scope::kPerRank}}},
                                copts);

  // Each round: dd write+fsync, write(2)+fsync and save; then dd cold read, read(2) and
  // cold load; so every ratio compares figures taken seconds apart (the disk is shared
  // and its speed drifts).
  bool dropped = false;
  std::vector<double> dd_w, dd_r, save_s, write_s, save_mem, load_s, load_mem;
  std::vector<double> lib_save_s, coord_s;  // last_save_seconds and it minus the slowest write
  std::vector<double> px_w, px_r;  // write(2)+fsync and cold read(2) of the same bytes
  std::vector<double> px_in;       // cold read(2) of them into the state's own tensors
  std::vector<double> save_ratio, load_ratio, save_px_ratio, load_px_ratio, load_in_ratio;
  int64_t load_bytes_read = 0;  // from storage, summed over ranks (the last load)
  const std::vector<ByteSpan> spans = byte_spans(tensors);
  const std::string raw_file = dir + "/raw.bin";
  // Which writer (and then reader) goes first rotates from round to round: the first
  // large write after the previous round's deletions was often the slow one here.
  for (int64_t r = 0; r < repeats; ++r) {
    const std::string name = fmt::format("bench_{}", r);
    const std::string path = save_dir + "/" + name;
    for (int k = 0; k < 3; ++k) {
      const int which = static_cast<int>((k + r) % 3);  // 0 dd, 1 write(2), 2 save
      if (which != 2 && !with_dd) continue;
      if (rank == 0) drop_page_cache();  // every write starts with the same free memory
      comm.barrier();
      if (which == 0 && rank == 0) dd_w.push_back(dd_write(dir, bytes));
      if (which == 1 && rank == 0) {
        auto [w, f] = write_and_fsync(raw_file, spans);
        px_w.push_back(w + f);
      }
      if (which == 2) {
        const bool reset = reset_peak_rss();
        const int64_t rss0 = proc_status_bytes("VmRSS");
        Stopwatch sw;
        ckpt.save(name);
        comm.barrier();
        const double s = sw.seconds();
        const int64_t extra = reset ? proc_status_bytes("VmHWM") - rss0 : -1;
        save_s.push_back(comm.all_reduce_double(s, dist::ReduceOp::kMax));
        write_s.push_back(ckpt.last_save_max_write_seconds());
        // Coordination: the library's own save time minus the slowest rank's shard write.
        const double lib_s =
            comm.all_reduce_double(ckpt.last_save_seconds(), dist::ReduceOp::kMax);
        lib_save_s.push_back(lib_s);
        coord_s.push_back(lib_s - ckpt.last_save_max_write_seconds());
        save_mem.push_back(comm.all_reduce_double(static_cast<double>(extra), dist::ReduceOp::kMax));
      }
    }
    for (int k = 0; k < 3; ++k) {
      const int which = static_cast<int>((k + r) % 3);  // 0 dd, 1 read(2), 2 load
      if (which != 2 && !with_dd) continue;
      if (which == 2) {
        at::NoGradGuard no_grad;  // zero the live tensors (a load may have replaced them)
        for (auto& [n, t] : replicated_tensors(model_state, opt_state)) t.zero_();
      }
      if (rank == 0 && drop) dropped = drop_page_cache();
      comm.barrier();
      if (which == 0 && rank == 0) dd_r.push_back(dd_read(dir));
      if (which == 1 && rank == 0) {
        px_r.push_back(read_whole_file(raw_file));
        // The same bytes into the live tensors (they are the saved state's bytes, so the
        // state stays as saved): where a load puts them, one memory pass more than
        // re-reading into one buffer that stays in cache.
        if (drop) drop_page_cache();
        px_in.push_back(read_into(raw_file, mutable_byte_spans(replicated_tensors(model_state, opt_state))));
      }
      if (which == 2) {
        const bool reset = reset_peak_rss();
        const int64_t rss0 = proc_status_bytes("VmRSS");
        Stopwatch sw;
        ckpt.load(path);
        comm.barrier();
        const double s = sw.seconds();
        load_bytes_read = ckpt.last_load_bytes_read();
        const int64_t extra = reset ? proc_status_bytes("VmHWM") - rss0 : -1;
        load_s.push_back(comm.all_reduce_double(s, dist::ReduceOp::kMax));
        load_mem.push_back(comm.all_reduce_double(static_cast<double>(extra), dist::ReduceOp::kMax));
        const uint64_t loaded_hash = state_hash(replicated_tensors(model_state, opt_state));
        DTRAIN_CHECK(loaded_hash == saved_hash,
                     "rank {}: the state loaded from '{}' differs from the state saved", rank,
                     path);
      }
    }
    if (rank == 0) {
      if (!keep_dir.empty() && r + 1 == repeats) {
        stdfs::remove_all(keep_dir);
        stdfs::rename(path, keep_dir);
      }
      stdfs::remove_all(path);
      stdfs::remove(raw_file);
      if (with_dd) {
        save_ratio.push_back(dd_w.back() / save_s.back() * bytes / dd_bytes(bytes));
        load_ratio.push_back(dd_r.back() / load_s.back() * bytes / dd_bytes(bytes));
        save_px_ratio.push_back(px_w.back() / save_s.back());
        load_px_ratio.push_back(px_r.back() / load_s.back());
        load_in_ratio.push_back(px_in.back() / load_s.back());
      }
    }
    comm.barrier();
  }
  if (rank == 0) stdfs::remove_all(save_dir);
  comm.barrier();

  // Diagnostics of the load's fill-in step (every rank ends up with every byte): one
  // broadcast per piece, as Checkpointer::load does when some ranks cannot read the
  // checkpoint (when all can, each reads everything itself), against one broadcast per
  // rank of all its pieces packed together (copies in and out included).
  std::vector<double> bcast_piece_s, bcast_packed_s;
  if (world > 1 && with_diag) {
    at::NoGradGuard no_grad;
    const auto live = replicated_tensors(model_state, opt_state);
    std::vector<checkpoint::TensorMeta> meta;
    for (const auto& [n, t] : live) meta.push_back({n, t.scalar_type(), t.sizes().vec()});
    const auto plan = checkpoint::plan_shards(meta, world);
    auto piece_of = [&](const checkpoint::Piece& p) {
      const at::Tensor& t = live[p.tensor].second;
      return t.dim() == 0 ? t : t.narrow(0, p.row_start, p.row_count);
    };
    for (int64_t r = 0; r < repeats; ++r) {
      comm.barrier();
      Stopwatch sw;
      for (const auto& p : plan) {
        at::Tensor dst = piece_of(p);
        if (dst.numel() > 0) comm.broadcast(dst, p.shard);
      }
      comm.barrier();
      bcast_piece_s.push_back(comm.all_reduce_double(sw.seconds(), dist::ReduceOp::kMax));
      sw.reset();
      for (int root = 0; root < world; ++root) {
        std::vector<at::Tensor> mine;
        int64_t n = 0;
        for (const auto& p : plan) {
          if (p.shard != root || p.bytes == 0) continue;
          mine.push_back(piece_of(p).reshape({-1}));
          n += mine.back().numel();
        }
        at::Tensor flat = rank == root ? at::cat(mine) : at::empty({n});
        comm.broadcast(flat, root);
        if (rank != root) {
          int64_t off = 0;
          for (auto& m : mine) {
            m.copy_(flat.narrow(0, off, m.numel()));
            off += m.numel();
          }
        }
      }
      comm.barrier();
      bcast_packed_s.push_back(comm.all_reduce_double(sw.seconds(), dist::ReduceOp::kMax));
    }
    const uint64_t h = state_hash(replicated_tensors(model_state, opt_state));
    DTRAIN_CHECK(h == saved_hash, "rank {}: the broadcast diagnostics changed the state", rank);
  }

  if (rank == 0) {
    const double dd_wgbps = with_dd ? dd_bytes(bytes) / median(dd_w) / 1e9 : 0.0;
    const double dd_rgbps = with_dd ? dd_bytes(bytes) / median(dd_r) / 1e9 : 0.0;
    const double save_med = median(save_s), load_med = median(load_s);
    const double save_gbps = bytes / save_med / 1e9, load_gbps = bytes / load_med / 1e9;
    fmt::print(
        "checkpoint gpt ({} layers, embd {}, vocab {}): {:.1f} M params, {} of state | {} "
        "rank(s), {} repeats\n"
        "  page cache dropped before cold reads: {}\n",
        g.n_layer, g.n_embd, g.vocab_size, params / 1e6, format_bytes(bytes), world, repeats,
        !drop ? "no (--drop-caches 0)" : dropped ? "yes" : "NO (not permitted)");
    if (with_dd) {
      fmt::print("  dd write+fsync         {:6.2f} GB/s  (runs: {:.3f} s)\n"
                 "  dd cold read           {:6.2f} GB/s  (runs: {:.3f} s)\n"
                 "  write(2)+fsync         {:6.2f} GB/s  (runs: {:.3f} s; the state's own bytes, "
                 "one file, from rank 0)\n"
                 "  cold read(2)           {:6.2f} GB/s  (runs: {:.3f} s; into one 16 MiB buffer)\n"
                 "  cold read(2) in place  {:6.2f} GB/s  (runs: {:.3f} s; into the state's own tensors)\n",
                 dd_wgbps, fmt::join(dd_w, ", "), dd_rgbps, fmt::join(dd_r, ", "),
                 bytes / median(px_w) / 1e9, fmt::join(px_w, ", "), bytes / median(px_r) / 1e9,
                 fmt::join(px_r, ", "), bytes / median(px_in) / 1e9, fmt::join(px_in, ", "));
    }
    fmt::print(
        "  save                   {:6.2f} GB/s  (runs: {:.3f} s; slowest shard write {:.3f} s)\n"
        "  load ({}, {})  {:6.2f} GB/s  (runs: {:.3f} s), verified bit for bit; {} read from "
        "storage by all ranks ({:.2f}x the state)\n"
        "  save coordination      {:6.3f} s      (median; save minus the slowest rank's shard write, "
        "Checkpointer's own figures; runs: {:.3f} s; goal < 0.020 s at 4 ranks)\n"
        "  peak extra memory      save {} per rank, load {} per rank (VmHWM - VmRSS before)\n",
        save_gbps, fmt::join(save_s, ", "), fmt::join(write_s, ", "), drop ? "cold" : "warm", strategy,
        load_gbps, fmt::join(load_s, ", "), format_bytes(load_bytes_read),
        static_cast<double>(load_bytes_read) / bytes, median(coord_s), fmt::join(coord_s, ", "),
        format_bytes(median(save_mem)), format_bytes(median(load_mem)));
    if (with_dd) {
      fmt::print("  save / dd write        {:6.2f}  (median of per-repeat ratios: {:.2f})\n"
                 "  load / dd read         {:6.2f}  (median of per-repeat ratios: {:.2f})\n",
                 median(save_ratio), fmt::join(save_ratio, ", "), median(load_ratio),
                 fmt::join(load_ratio, ", "));
      fmt::print("  save / write(2)+fsync  {:6.2f}  (median of per-repeat ratios: {:.2f})\n"
                 "  load / read(2)         {:6.2f}  (median of per-repeat ratios: {:.2f})\n"
                 "  load / read(2) in place {:5.2f}  (median of per-repeat ratios: {:.2f})\n",
                 median(save_px_ratio), fmt::join(save_px_ratio, ", "), median(load_px_ratio),
                 fmt::join(load_px_ratio, ", "), median(load_in_ratio), fmt::join(load_in_ratio, ", "));
    }
    if (!bcast_piece_s.empty()) {
      const auto plan_size = checkpoint::plan_shards(
          [&] {
            std::vector<checkpoint::TensorMeta> m;
            for (const auto& [n, t] : tensors) m.push_back({n, t.scalar_type(), t.sizes().vec()});
            return m;
          }(), world).size();
      fmt::print("  load fill-in diagnostics: {} one broadcast per piece ({} pieces): {:.3f} s "
                 "(runs: {:.3f}); packed, one broadcast per rank: {:.3f} s (runs: {:.3f})\n",
                 format_bytes(bytes), plan_size, median(bcast_piece_s),
                 fmt::join(bcast_piece_s, ", "), median(bcast_packed_s),
                 fmt::join(bcast_packed_s, ", "));
    }
    std::fflush(stdout);
    append_json_line(
        json_path,
        {{"bench", "ckpt"}, {"impl", "dtrain"}, {"world", world}, {"params", params},
         {"bytes", bytes}, {"repeats", repeats}, {"save_s", save_med}, {"save_runs_s", save_s},
         {"save_write_runs_s", write_s}, {"save_lib_runs_s", lib_save_s},
         {"save_coord_s", median(coord_s)}, {"save_coord_runs_s", coord_s},
         {"load_s", load_med}, {"load_runs_s", load_s}, {"load_strategy", strategy},
         {"load_bytes_read", load_bytes_read},
         {"save_gbps", save_gbps}, {"load_gbps", load_gbps},
         {"save_extra_bytes", median(save_mem)}, {"load_extra_bytes", median(load_mem)},
         {"dd_write_gbps", dd_wgbps}, {"dd_read_gbps", dd_rgbps}, {"dd_write_runs_s", dd_w},
         {"dd_read_runs_s", dd_r}, {"save_vs_dd", median(save_ratio)},
         {"load_vs_dd", median(load_ratio)}, {"cache_dropped", dropped},
         {"posix_write_runs_s", px_w}, {"posix_read_runs_s", px_r}, {"posix_read_in_place_runs_s", px_in},
         {"posix_write_gbps", with_dd ? bytes / median(px_w) / 1e9 : 0.0},
         {"posix_read_gbps", with_dd ? bytes / median(px_r) / 1e9 : 0.0},
         {"save_vs_posix", median(save_px_ratio)}, {"load_vs_posix", median(load_px_ratio)},
         {"load_vs_posix_in_place", median(load_in_ratio)},
         {"bcast_per_piece_s", median(bcast_piece_s)}, {"bcast_packed_s", median(bcast_packed_s)}});
  }
  return 0;
}

}  // namespace
}  // namespace dtrain::bench

int main(int argc, char** argv) {
  return dtrain::bench::mpi_bench_main(argc, argv, "dtrain_ckpt_bench", dtrain::bench::run);
}
