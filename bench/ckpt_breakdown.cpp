// Where a checkpoint save and load spend their time, on one process: the steps of
// write_shard / write_index_file / ShardReader timed one by one (HDF5 write, fsync,
// xxHash64, index with virtual datasets, cold HDF5 read) next to plain POSIX write+fsync
// and read of the same bytes and to dd, in interleaved rounds.
//
//   build/bin/dtrain_ckpt_breakdown --dir /tmp/ckpt-breakdown
//
// Flags (defaults in brackets): --dir [/tmp/dtrain-ckpt-breakdown], --layers [12],
// --embd [768], --heads [12], --vocab [2048], --ctx [128] (the gpt of dtrain_ckpt_bench),
// --repeats [3], --json FILE [none].
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <thread>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/optim/adamw.h>
#include <torch/utils.h>

#include "bench/bench_util.h"
#include "checkpoint/format.h"
#include "checkpoint/index.h"
#include "checkpoint/module_state.h"
#include "checkpoint/shard_plan.h"
#include "models/gpt.h"
#include "runtime/base/error.h"
#include "runtime/base/fs.h"
#include "runtime/h5/h5.h"
#include "runtime/optim/optimizer_state.h"

namespace dtrain::bench {
namespace {

namespace stdfs = std::filesystem;

// A prototype of write_shard: the same HDF5 file, with writeback started every `kick`
// bytes through the sec2 driver's descriptor and the xxHash64 of every tensor computed
// on a second thread meanwhile, then fsync. Returns the seconds.
double hdf5_write_early(const std::string& path, const checkpoint::CollectedState& st,
                        int64_t kick) {
  Stopwatch sw;
  uint64_t h = 0;
  std::thread hasher([&] {
    for (const auto& [n, x] : st.replicated) h ^= checkpoint::tensor_xxh64(x);
  });
  {
    h5::FileOptions o;
    o.alignment = 1 << 20;
    o.alignment_threshold = 64 << 10;
    o.overwrite = false;
    h5::File f = h5::File::create(path, o);
    int* fd = nullptr;
    {
      h5::ApiScope scope;
      h5::check(H5Fget_vfd_handle(f.id(), H5P_DEFAULT, reinterpret_cast<void**>(&fd)),
                "getting the descriptor of '{}'", path);
    }
    int64_t pending = 0;
    for (const auto& [n, x] : st.replicated) {
      f.write_tensor(n, x);
      pending += x.numel() * static_cast<int64_t>(x.element_size());
      if (pending >= kick) {
        ::sync_file_range(*fd, 0, 0, SYNC_FILE_RANGE_WRITE);
        pending = 0;
      }
    }
    f.close();
  }
  hasher.join();
  fs::fsync_path(path);
  (void)h;
  return sw.seconds();
}

// Drops the page cache after making sure deleted files are gone from the disk's queue.
void settle() {
  ::sync();
  drop_page_cache();
}

int run(int argc, char** argv) {
  Flags flags(argc, argv);
  const std::string dir = flags.get("dir", "/tmp/dtrain-ckpt-breakdown");
  const models::GptOptions g = gpt_options_from_flags(flags);
  const int64_t repeats = flags.get_int("repeats", 3);
  const std::string json_path = flags.get("json", "");
  flags.check_all_used();

  at::set_num_threads(1);
  GptTrainingState state = make_gpt_training_state(g);
  auto& model = state.model;
  optim::OptimizerState& opt_state = *state.opt_state;

  checkpoint::CollectedState st;
  st.replicated = replicated_tensors(*state.model_state, opt_state);
  const int64_t bytes = total_bytes(st.replicated);
  const auto plan = checkpoint::plan_shards(st.replicated_meta(), 1);
  stdfs::create_directories(dir);
  const std::string raw = dir + "/raw.bin", h5_only = dir + "/h5only.h5";
  const std::string shard_dir = dir + "/ckpt";
  const std::string dd_file = dir + "/dd.bin";
  const int64_t dd_count = (bytes + (16 << 20) - 1) / (16 << 20);
  constexpr int64_t kKick = 64 << 20;  // start writeback every 64 MiB

  std::map<std::string, std::vector<double>> t;
  for (int64_t r = 0; r < repeats; ++r) {
    // Hashing alone (memory bandwidth bound).
    Stopwatch sw;
    uint64_t h = 0;
    for (const auto& [n, x] : st.replicated) h ^= checkpoint::tensor_xxh64(x);
    t["xxh64 of every tensor"].push_back(sw.seconds());

    settle();
    t["dd write+fsync"].push_back(run_timed(fmt::format(
        "dd if=/dev/zero of='{}' bs=16M count={} conv=fsync status=none", dd_file, dd_count)));
    settle();
    t["dd cold read"].push_back(
        run_timed(fmt::format("dd if='{}' of=/dev/null bs=16M status=none", dd_file)));
    stdfs::remove(dd_file);

    settle();
    auto [pw, pf] = write_and_fsync(raw, byte_spans(st.replicated));
    t["posix write(2)"].push_back(pw);
    t["posix fsync"].push_back(pf);
    t["posix write+fsync"].push_back(pw + pf);
    stdfs::remove(raw);
    settle();
    auto [ew, ef] = write_and_fsync(raw, byte_spans(st.replicated), kKick);
    t["posix write+early writeback+fsync"].push_back(ew + ef);
    settle();
    t["posix cold read(2)"].push_back(read_whole_file(raw));
    stdfs::remove(raw);

    // The HDF5 part of write_shard: same file options, no hashing, then fsync.
    settle();
    sw.reset();
    {
      h5::FileOptions o;
      o.alignment = 1 << 20;
      o.alignment_threshold = 64 << 10;
      o.overwrite = true;
      h5::File f = h5::File::create(h5_only, o);
      for (const auto& [n, x] : st.replicated) f.write_tensor(n, x);
      f.close();
    }
    const double hw = sw.seconds();
    sw.reset();
    fs::fsync_path(h5_only);
    const double hf = sw.seconds();
    t["hdf5 write (no fsync)"].push_back(hw);
    t["hdf5 fsync"].push_back(hf);
    t["hdf5 write+fsync"].push_back(hw + hf);
    settle();
    sw.reset();
    {
      h5::File f = h5::File::open(h5_only);
      for (const auto& [n, x] : st.replicated) f.read_tensor(n);
    }
    t["hdf5 cold read (no hash)"].push_back(sw.seconds());
    stdfs::remove(h5_only);

    // The same with the hash of each tensor computed right after writing it (what
    // write_shard does), to tell the hashing cost from the rest of write_shard.
    settle();
    sw.reset();
    {
      h5::FileOptions o;
      o.alignment = 1 << 20;
      o.alignment_threshold = 64 << 10;
      o.overwrite = false;
      h5::File f = h5::File::create(h5_only, o);
      for (const auto& [n, x] : st.replicated) {
        f.write_tensor(n, x);
        h ^= checkpoint::tensor_xxh64(x);
      }
      f.close();
    }
    fs::fsync_path(h5_only);
    t["hdf5 write+xxh64+fsync"].push_back(sw.seconds());
    stdfs::remove(h5_only);

    // The prototype of a faster write_shard (early writeback, hashing on a thread).
    settle();
    t["proto: hdf5+early writeback+xxh64 thread+fsync"].push_back(
        hdf5_write_early(h5_only, st, kKick));
    stdfs::remove(h5_only);

    // The real functions of a 1-rank save: write_shard (HDF5 + xxh64 + fsync), then the
    // index file with one virtual dataset per tensor (+ fsync).
    stdfs::remove_all(shard_dir);
    stdfs::create_directories(shard_dir);
    settle();
    sw.reset();
    const std::string shard = shard_dir + "/" + checkpoint::shard_file_name(0, 1);
    auto manifest = checkpoint::write_shard(shard, 0, st, plan);
    t["write_shard (hdf5+xxh64+fsync)"].push_back(sw.seconds());
    sw.reset();
    auto index = checkpoint::build_index(st, {manifest}, 1, 0);
    checkpoint::write_index_file(shard_dir, index, "");
    t["write_index_file (VDS+fsync)"].push_back(sw.seconds());
    settle();
    sw.reset();
    {
      checkpoint::ShardReader reader(shard_dir, 1);
      for (const auto& rec : index.tensors) {
        at::Tensor dst = at::empty(rec.shape, at::TensorOptions().dtype(
                                                  checkpoint::dtype_from_name(rec.dtype, "")));
        reader.read_piece(rec, rec.pieces.at(0), dst);
      }
    }
    t["ShardReader cold read+verify"].push_back(sw.seconds());

    // The steps of Checkpointer::load on one rank, warm (the shard is in the page cache
    // now, so that only the CPU work remains): index, buffers, reads + verification,
    // hand-over to the model and to the optimizer.
    {
      sw.reset();
      const auto idx = checkpoint::CheckpointIndex::from_json(
          checkpoint::read_index_text(shard_dir), shard_dir);
      t["load (warm): read + parse the index"].push_back(sw.seconds());
      sw.reset();
      std::map<std::string, at::Tensor> bufs;
      for (const auto& rec : idx.tensors) {
        bufs[rec.name] = at::empty(rec.shape, at::TensorOptions().dtype(
                                                  checkpoint::dtype_from_name(rec.dtype, "")));
      }
      {
        checkpoint::ShardReader reader(shard_dir, 1);
        for (const auto& rec : idx.tensors) reader.read_piece(rec, rec.pieces.at(0), bufs[rec.name]);
      }
      t["load (warm): new buffers, read + verify"].push_back(sw.seconds());
      StateDict model_sd, opt_sd;
      for (const auto& [k, v] : opt_state.state_dict()) {
        if (!std::holds_alternative<at::Tensor>(v)) opt_sd[k] = v;
      }
      for (const auto& [name, x] : bufs) {
        if (name.rfind("model/", 0) == 0) model_sd[name.substr(6)] = x;
        if (name.rfind("optimizer/", 0) == 0) opt_sd[name.substr(10)] = x;
      }
      sw.reset();
      checkpoint::ModuleState(model).load_with_report(model_sd);
      t["load (warm): copy into the model"].push_back(sw.seconds());
      sw.reset();
      opt_state.load_state_dict(opt_sd);
      t["load (warm): optimizer load_state_dict"].push_back(sw.seconds());
      sw.reset();
      bufs.clear();
      model_sd.clear();
      opt_sd.clear();
      t["load (warm): free the buffers"].push_back(sw.seconds());
    }
    stdfs::remove_all(shard_dir);
    (void)h;
  }
  settle();

  fmt::print("checkpoint breakdown, 1 process: gpt {} layers, embd {}, vocab {}: {} in {} "
             "tensors, {} rounds (median s, GB/s of the state's bytes)\n",
             g.n_layer, g.n_embd, g.vocab_size, format_bytes(bytes), st.replicated.size(), repeats);
  nlohmann::json j = {{"bench", "ckpt_breakdown"}, {"bytes", bytes}, {"repeats", repeats}};
  for (const auto& [name, v] : t) {
    const double m = median(v);
    fmt::print("  {:48s} {:7.3f} s  {:6.2f} GB/s   (runs: {:.3f})\n", name, m, bytes / m / 1e9,
               fmt::join(v, ", "));
    j["seconds"][name] = v;
  }
  std::fflush(stdout);
  append_json_line(json_path, j);
  return 0;
}

}  // namespace
}  // namespace dtrain::bench

int main(int argc, char** argv) {
  return dtrain::bench::bench_main(argc, argv, "dtrain_ckpt_breakdown", dtrain::bench::run);
}
