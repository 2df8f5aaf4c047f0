// Fetching checkpoints from http(s) URLs into the node's cache (see remote.h).
#include "checkpoint/remote.h"

#include <algorithm>
#include <filesystem>
#include <optional>
#include <set>
#include <utility>

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
#include "runtime/dist/agree.h"

namespace dtrain::checkpoint {
namespace {

// The most checkpoint.h5 may hold (index JSON, config, virtual-dataset mappings): its
// size is not known before it is read.
constexpr uint64_t kIndexMaxBytes = uint64_t{1} << 30;
// What a shard file may hold besides its pieces' bytes: per piece, a dataset's headers
// and up to its 1 MiB alignment (format.cpp's shard_file_options), and the file's own
// superblock, groups and heaps.
constexpr uint64_t kShardOverheadPerPiece = uint64_t{2} << 20;
constexpr uint64_t kShardOverheadFixed = uint64_t{4} << 20;

void fs_remove(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove(path, ec);
}

// Verifies the file and every piece of shard `rank` in the staged directory `dir`:
// "" when good, else its problems joined by "; ".
std::string verify_shard(const CheckpointIndex& index, int rank, const std::string& dir) {
  return fmt::format("{}", fmt::join(capped_problems(verify_shards(dir, index, rank), 10), "; "));
}

// The most bytes shard `rank`'s file may have, from the index's pieces, and a description
// of that bound for messages.
std::pair<uint64_t, std::string> shard_size_cap(const CheckpointIndex& index, int rank) {
  uint64_t bytes = 0, pieces = 0;
  for (const auto& t : index.tensors) {
    for (const auto& p : t.pieces) {
      if (p.shard != rank) continue;
      const auto b = static_cast<uint64_t>(std::max<int64_t>(p.bytes, 0));
      bytes = b > UINT64_MAX / 2 - bytes ? UINT64_MAX / 2 : bytes + b;  // saturates
      ++pieces;
    }
  }
  const uint64_t cap = bytes + pieces * kShardOverheadPerPiece + kShardOverheadFixed;
  return {cap, fmt::format("the {} bytes of shard {}'s {} piece(s) in {}'s index, plus {} MiB "
                           "per piece and {} MiB for HDF5's own structures",
                           bytes, rank, pieces, kIndexFile, kShardOverheadPerPiece >> 20,
                           kShardOverheadFixed >> 20)};
}

// Downloads checkpoint.h5, then every shard holding pieces, into the cache's staging directory;
// verifies every piece's checksum; publishes the directory only when all are good (the
// staging directory is removed otherwise). Each file is bounded in size (see above).
std::string fetch_checkpoint_dir(const std::string& url) {
  storage::DownloadOptions options;
  // Parsing checkpoint.h5 and the shards' piece checksums below detect a truncated file
  // (HDF5 refuses a file shorter than its superblock says), so a body ended only by the
  // connection close may be accepted.
  options.accept_close_delimited = true;
  storage::DirectoryFetch fetch(url, options);
  if (fetch.complete()) return fetch.path();
  const std::string index_cap_what = fmt::format("the limit for {}", kIndexFile);
  auto fetch_index = [&] { return fetch.fetch(kIndexFile, {}, kIndexMaxBytes, index_cap_what); };
  std::string staged = fs::parent_dir(fetch_index());
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
    staged = fs::parent_dir(fetch_index());
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
  // Only the shards that hold pieces are downloaded (a load reads nothing else): the
  // number of requests is bounded by the index's pieces, never by its world_size alone.
  std::set<int> shards;
  for (const auto& t : index.tensors) {
    for (const auto& p : t.pieces) shards.insert(p.shard);
  }
  for (int r : shards) {
    const std::string name = shard_file_name(r, index.world_size);
    const auto [cap, cap_what] = shard_size_cap(index, r);
    fetch.fetch(name, {}, cap, cap_what);
    std::string problem = verify_shard(index, r, staged);
    if (!problem.empty()) {
      // One more download of this shard before giving up (a transfer may have been
      // corrupted on the way).
      fs_remove(staged + "/" + name);
      fetch.fetch(name, {}, cap, cap_what);
      problem = verify_shard(index, r, staged);
    }
    DTRAIN_CHECK_T(CheckpointError, problem.empty(),
                   "download of {}/{} is corrupt (nothing was cached): {}", url, name, problem);
  }
  return fetch.commit();
}

// A weight file (.pt, .pth, .pkl, .bin, .safetensors): verified whole before it is
// cached, and its cached copy checked again (cheaply) before every reuse.
std::string fetch_weights_file(const std::string& url) {
  storage::DownloadOptions options;
  options.verify = [](const std::string& path) {
    return interop::check_weights_file(path, interop::WeightsCheck::kFull);
  };
  options.accept_close_delimited = true;  // the check above detects a truncated file
  return storage::fetch_file(url, options, [](const std::string& path) {
    return interop::check_weights_file(path, interop::WeightsCheck::kStructure);
  });
}

}  // namespace

bool is_remote(const std::string& path) { return storage::is_url(path); }

std::string fetch_remote(const std::string& url, dist::Communicator& comm) {
  // Everyone waits for the downloads, then all agree on the outcome (dist/agree.h): a
  // stop request (SIGTERM) on any rank stops all of them with Interrupted, not a
  // CheckpointError that could send a caller on to other checkpoints.
  const std::string what = fmt::format("fetching '{}'", url);
  std::string local;
  dist::all_or_none<CheckpointError>(comm, what, [&] {
    if (comm.local_rank() != 0) return;
    DTRAIN_LOG_INFO_RANK("Fetching {} into the cache {}", url, storage::cache_dir());
    // By the path's extension, without the query (pre-signed URLs carry one).
    local = interop::is_foreign_weights_path(storage::parse_url(url).path())
                ? fetch_weights_file(url)
                : fetch_checkpoint_dir(url);
  });
  if (comm.local_rank() != 0) local = storage::cache_path_for(url);
  dist::all_or_none<CheckpointError>(comm, what, [&] {
    DTRAIN_CHECK_T(CheckpointError, std::filesystem::exists(local),
                   "fetched into '{}' but it is not visible on rank {} (is DTRAIN_CACHE the "
                   "same for every rank of a node?)",
                   local, comm.rank());
  });
  return local;
}

}  // namespace dtrain::checkpoint
