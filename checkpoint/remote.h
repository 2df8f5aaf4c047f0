// Checkpoints and .pt files at http(s) URLs: fetched once per node into the download
// cache (checkpoint/storage/cache.h), every shard verified against the index's
// checksums before the cached copy is published, then loaded like a local path.
//
//   std::string local = fetch_remote("https://host/run1/model_final", comm);  // collective
//   checkpointer.load(local);
//
// Collective: on each node the rank with local_rank 0 downloads while the others wait;
// every rank then gets the same local path, or throws the same CheckpointError (or, when
// a download was abandoned because the process was asked to stop, the same
// dtrain::Interrupted), agreed through dist/agree.h; messages name the URL and the
// failing rank(s). Sizes, deadline and redirects: docs/NETWORK.md.
//
// Threads: fetch_remote is not thread-safe; call it from the training thread (the
// Communicator's contract, communicator.h). Processes sharing a cache (the ranks of a
// node, other jobs) are coordinated by the cache's lock files (storage/cache.h).
// is_remote is thread-safe.
#pragma once

#include <string>

#include "runtime/dist/communicator.h"

namespace dtrain::checkpoint {

// Whether `path` names a URL (any "<scheme>://"); only http and https are supported.
bool is_remote(const std::string& path);

// Downloads `url` (a checkpoint directory, or a weight file ending in
// .pt/.pth/.pkl/.bin/.safetensors) into the cache unless it is there already, verifying
// it (a cached weight file is checked again before reuse), and returns its local path.
// Collective.
std::string fetch_remote(const std::string& url, dist::Communicator& comm);

}  // namespace dtrain::checkpoint
