// Fetching checkpoints from http(s) URLs into the node's cache (see remote.h).
#include "checkpoint/remote.h"

#include <filesystem>
#include <optional>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "checkpoint/format.h"
#include "checkpoint/index.h"
#include "checkpoint/inspect.h"
#include "checkpoint/storage/cache.h"
#include "checkpoint/storage/url.h"
#include "checkpoint/interop/weights.h"
#include "runtime/base/error.h"
#include "runtime/base/fs.h"
#include "runtime/base/logging.h"

namespace dtrain::checkpoint {
namespace {

void fs_remove(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove(path, ec);
}

// Verifies the file and every piece of shard `rank` in the staged directory `dir`:
// "" when good, else its problems joined by "; ".
std::string verify_shard(const CheckpointIndex& index, int rank, const std::string& dir) {
  return fmt::format("{}", fmt::join(verify_shards(dir, index, rank), "; "));
}

// Downloads checkpoint.h5, then every shard it names, into the cache's staging directory;
// verifies every piece's checksum; publishes the directory only when all are good (the
// staging directory is removed otherwise).
std::string fetch_checkpoint_dir(const std::string& url) {
  storage::DirectoryFetch fetch(url);
  if (fetch.complete()) return fetch.path();
  std::string staged = fs::parent_dir(fetch.fetch(kIndexFile));
  auto read_index = [&]() -> std::optional<CheckpointIndex> {
    try {
      return CheckpointIndex::from_json(read_index_text(staged), url + "/" + kIndexFile);
    } catch (const std::exception&) {
      return std::nullopt;
    }
  };
  std::optional<CheckpointIndex> maybe_index = read_index();
  if (!maybe_index) {
    // Once more (a transfer may have been corrupted on the way), then the real reason.
    fs_remove(staged + "/" + kIndexFile);
    staged = fs::parent_dir(fetch.fetch(kIndexFile));
    maybe_index = read_index();
  }
  if (!maybe_index) {
    std::string reason;
    try {
      CheckpointIndex::from_json(read_index_text(staged), url + "/" + kIndexFile);
    } catch (const std::exception& e) {
      reason = e.what();
    }
    throw CheckpointError(fmt::format(
        "download of {}/{} is not a dtrain checkpoint index (a corrupt download, or the URL "
        "is not a checkpoint directory; nothing was cached): {}",
        url, kIndexFile, reason));
  }
  const CheckpointIndex& index = *maybe_index;
  for (int r = 0; r < index.world_size; ++r) {
    const std::string name = shard_file_name(r, index.world_size);
    fetch.fetch(name);
    std::string problem = verify_shard(index, r, staged);
    if (!problem.empty()) {
      // One more download of this shard before giving up (a transfer may have been
      // corrupted on the way).
      fs_remove(staged + "/" + name);
      fetch.fetch(name);
      problem = verify_shard(index, r, staged);
    }
    DTRAIN_CHECK_T(CheckpointError, problem.empty(),
                   "download of {}/{} is corrupt (nothing was cached): {}", url, name, problem);
  }
  return fetch.commit();
}

}  // namespace

bool is_remote(const std::string& path) { return storage::is_url(path); }

std::string fetch_remote(const std::string& url, dist::Communicator& comm) {
  std::string local, error;
  if (comm.local_rank() == 0) {
    try {
      DTRAIN_LOG_INFO_RANK("Fetching {} into the cache {}", url, storage::cache_dir());
      local = interop::is_foreign_weights_path(url) ? storage::fetch_file(url)
                                                    : fetch_checkpoint_dir(url);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  // Everyone waits for the downloads, then all agree on the outcome.
  auto errors = comm.all_gather_bytes(error);
  for (size_t r = 0; r < errors.size(); ++r) {
    if (!errors[r].empty()) {
      throw CheckpointError(fmt::format("fetching '{}' failed on rank {}: {}", url, r, errors[r]));
    }
  }
  if (comm.local_rank() != 0) local = storage::cache_path_for(url);
  std::string missing;
  if (!std::filesystem::exists(local)) {
    missing = fmt::format("'{}' is not visible on rank {} (is DTRAIN_CACHE the same for every "
                          "rank of a node?)", local, comm.rank());
  }
  for (const auto& m : comm.all_gather_bytes(missing)) {
    DTRAIN_CHECK_T(CheckpointError, m.empty(), "fetched '{}' but {}", url, m);
  }
  return local;
}

}  // namespace dtrain::checkpoint
