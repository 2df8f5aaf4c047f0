// checkpoint_tool: one step of a multi-process checkpoint test, run by the CTest
// drivers (run_reshard.cmake, run_crash.cmake) and by checkpoint_io_test under mpirun or
// alone (then with a world of one, no MPI). The state is recomputed from a seed in every
// process (test_support.h), so a load can be checked bit for bit against it.
//
//   checkpoint_tool save DIR NAME SEED      train 3 steps, seed each rank's RNG, save DIR/NAME
//   checkpoint_tool save_async DIR NAME SEED   the same with save_async, training one more
//                                              step while the shard is written, then commit
//   checkpoint_tool verify DIR NAME SEED    load DIR/NAME into a fresh state; compare
//   checkpoint_tool resume DIR SEED NAME    resume_or_load(resume) must pick DIR/NAME = SEED's
//   checkpoint_tool expected SEED N OUT     write what h5py must read (OUT/expected.json, .bin)
//
// Exit status 0 on success, 1 with the differences on stderr, 2 for usage errors.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "checkpoint/format.h"
#include "runtime/base/error.h"
#include "runtime/base/logging.h"
#include "runtime/dist/local_communicator.h"
#include "runtime/dist/mpi_runtime.h"
#include "runtime/h5/types.h"
#include "tests/checkpoint/test_support.h"

namespace dtrain::checkpoint::testing {
namespace {

constexpr int kSteps = 3;

OptKind kind_for(uint64_t seed) { return seed % 2 ? OptKind::kAdamW : OptKind::kSGD; }

// The state SEED describes, as saved: trained kSteps steps.
std::unique_ptr<TrainingState> trained_state(uint64_t seed, int rank, int world) {
  auto s = std::make_unique<TrainingState>(kind_for(seed), seed, rank, world);
  s->train(kSteps);
  return s;
}

int report(dist::Communicator& comm, const std::string& what,
           const std::vector<std::string>& problems) {
  // Every rank reports its own problems; the exit status is agreed.
  for (const auto& p : problems)
    std::cerr << fmt::format("[rank {}] {}: {}\n", comm.rank(), what, p);
  const int64_t bad = comm.all_reduce_int(problems.empty() ? 0 : 1, dist::ReduceOp::kMax);
  if (bad == 0 && comm.rank() == 0) std::cout << what << ": OK\n";
  return bad ? 1 : 0;
}

int save(dist::Communicator& comm, const std::string& dir, const std::string& name, uint64_t seed,
         bool async) {
  auto s = trained_state(seed, comm.rank(), comm.size());
  Checkpointer ckpt(s->model, dir, comm, s->checkpointables());
  set_rank_rng(seed, comm.rank());
  if (async) {
    ckpt.save_async(name, sample_extras(seed, kSteps - 1));
    s->train(1);  // changes the live state while the snapshot is written
    ckpt.finish_async();
  } else {
    ckpt.save(name, sample_extras(seed, kSteps - 1));
  }
  return 0;
}

// Loads through `load` into a fresh state and compares everything with SEED's.
template <typename LoadFn>
int verify_with(dist::Communicator& comm, const std::string& dir, uint64_t seed,
                const std::string& what, LoadFn&& load) {
  const int rank = comm.rank();
  const at::Tensor expected_rng = set_rank_rng(seed, rank);
  auto expected = trained_state(seed, rank, comm.size());
  TrainingState fresh(kind_for(seed), seed + 1000, rank, comm.size());
  const at::Tensor preset_rng = set_rank_rng(seed + 555, rank);
  Checkpointer ckpt(fresh.model, dir, comm, fresh.checkpointables());
  LogCapture log;
  StateDict extra = load(ckpt);

  std::vector<std::string> problems = state_diff(expected->snapshot(), fresh.snapshot());
  for (auto& p : state_diff(sample_extras(seed, kSteps - 1), extra))
    problems.push_back("extra " + p);
  // Per-rank RNG: ranks the checkpoint has restore theirs; others keep their own.
  const std::string loaded = ckpt.loaded_from();
  const CheckpointIndex index = CheckpointIndex::from_json(read_index_text(loaded), loaded);
  const at::Tensor want_rng = rank < index.world_size ? expected_rng : preset_rng;
  if (!bitwise_equal(current_rng_state(), want_rng)) {
    problems.push_back(fmt::format("rng state differs from the {} (checkpoint of {} ranks)",
                                   rank < index.world_size ? "saved one" : "kept one",
                                   index.world_size));
  }
  const std::string kept = fmt::format("has no 'rng' state for rank {}; keeping", rank);
  if ((rank >= index.world_size) != (log.text().find(kept) != std::string::npos)) {
    problems.push_back(fmt::format("expected {} warning '{}'; the log says:\n{}",
                                   rank >= index.world_size ? "the" : "no", kept, log.text()));
  }
  // A training step after the load equals one after the save: nothing was left behind.
  expected->train(1);
  fresh.train(1);
  for (auto& p : state_diff(expected->snapshot(), fresh.snapshot())) {
    problems.push_back("after one more step: " + p);
  }
  // Every rank loaded the same state.
  const auto hashes = comm.all_gather_bytes(fmt::format("{:x}", state_hash(fresh.snapshot())));
  for (size_t r = 1; r < hashes.size(); ++r) {
    if (hashes[r] != hashes[0]) problems.push_back(fmt::format("rank {} differs from rank 0", r));
  }
  return report(comm, what, problems);
}

int verify(dist::Communicator& comm, const std::string& dir, const std::string& name,
           uint64_t seed) {
  return verify_with(comm, dir, seed, "verify " + name,
                     [&](Checkpointer& c) { return c.load(dir + "/" + name); });
}

int resume(dist::Communicator& comm, const std::string& dir, uint64_t seed,
           const std::string& name) {
  std::vector<std::string> problems;
  // Nothing visible in DIR may be a half-written checkpoint.
  for (const auto& d : visible_dirs(dir)) {
    if (!std::filesystem::exists(dir + "/" + d + "/" + kIndexFile)) {
      problems.push_back(fmt::format("'{}/{}' has no {} but is not hidden", dir, d, kIndexFile));
    }
  }
  if (report(comm, "layout of " + dir, problems)) return 1;
  return verify_with(comm, dir, seed, "resume " + name, [&](Checkpointer& c) {
    StateDict extra = c.resume_or_load("", /*resume=*/true);
    DTRAIN_CHECK(c.loaded_from() == dir + "/" + name, "resumed from '{}', expected '{}/{}'",
                 c.loaded_from(), dir, name);
    return extra;
  });
}

// Writes OUT/expected.json: for each replicated tensor its checkpoint name, the dtype
// h5py reports, the shape and a raw little-endian .bin file of the values h5py must
// return (bfloat16 as float32, since that is how h5py reads it); plus the per-rank RNG
// states of ranks 0..N-1 and the scalars.
int expected(uint64_t seed, int world, const std::string& out) {
  std::filesystem::create_directories(out);
  dist::LocalCommunicator comm;
  auto s = trained_state(seed, 0, 1);
  StateDict all;
  for (const auto& [k, v] : s->snapshot()) all[k] = v;
  for (const auto& [k, v] : sample_extras(seed, kSteps - 1)) all["extra/" + k] = v;
  for (int r = 0; r < world; ++r) {
    all[fmt::format("ranks/{:05d}/rng/cpu", r)] = set_rank_rng(seed, r);
  }
  nlohmann::json j = nlohmann::json::array();
  int n = 0;
  for (const auto& [k, v] : all) {
    nlohmann::json e = {{"name", k}};
    if (auto t = std::get_if<at::Tensor>(&v)) {
      at::Tensor c = t->scalar_type() == at::kBFloat16 ? t->to(at::kFloat) : *t;
      c = c.contiguous();
      const std::string file = fmt::format("{}/t{}.bin", out, n++);
      std::ofstream(file, std::ios::binary)
          .write(static_cast<const char*>(c.data_ptr()),
                 static_cast<std::streamsize>(c.numel() * c.element_size()));
      e["kind"] = "tensor";
      e["dtype"] = h5::dtype_name(c.scalar_type());
      e["saved_dtype"] = h5::dtype_name(t->scalar_type());
      e["shape"] = c.sizes().vec();
      e["file"] = file;
    } else if (auto i = std::get_if<int64_t>(&v)) {
      e["kind"] = "int";
      e["value"] = *i;
    } else if (auto d = std::get_if<double>(&v)) {
      e["kind"] = "float";
      e["value"] = *d;
    } else {
      e["kind"] = "string";
      e["value"] = std::get<std::string>(v);
    }
    j.push_back(e);
  }
  std::ofstream(out + "/expected.json") << j.dump(1);
  std::cout << "expected: wrote " << j.size() << " entries to " << out << "\n";
  return 0;
}

int run(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  auto usage = [] {
    std::cerr << "usage: checkpoint_tool save|verify DIR NAME SEED | resume DIR SEED NAME | "
                 "expected SEED N OUT\n";
    return 2;
  };
  if (args.empty()) return usage();
  at::set_num_threads(1);
  if (args[0] == "expected") {
    if (args.size() != 4) return usage();
    return expected(std::stoull(args[1]), std::stoi(args[2]), args[3]);
  }
  if (args.size() != 4) return usage();
  // Under mpirun: MPI; started alone: a world of one without MPI (fast, and safe to
  // SIGKILL).
  std::unique_ptr<dist::MpiRuntime> mpi;
  std::shared_ptr<dist::Communicator> comm;
  if (std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr) {
    mpi = std::make_unique<dist::MpiRuntime>(&argc, &argv);
    comm = dist::make_communicator("mpi", "cpu");
  } else {
    comm = std::make_shared<dist::LocalCommunicator>();
  }
  log::init(comm->rank(), comm->size());
  int rc = 2;
  try {
    if (args[0] == "save" || args[0] == "save_async") {
      rc = save(*comm, args[1], args[2], std::stoull(args[3]), args[0] == "save_async");
    } else if (args[0] == "verify") {
      rc = verify(*comm, args[1], args[2], std::stoull(args[3]));
    } else if (args[0] == "resume") {
      rc = resume(*comm, args[1], std::stoull(args[2]), args[3]);
    } else {
      rc = usage();
    }
  } catch (const std::exception& e) {
    std::cerr << fmt::format("[rank {}] checkpoint_tool {}: {}\n", comm->rank(), args[0], e.what());
    rc = 1;
  }
  comm.reset();
  return rc;
}

}  // namespace
}  // namespace dtrain::checkpoint::testing

int main(int argc, char** argv) { return dtrain::checkpoint::testing::run(argc, argv); }
