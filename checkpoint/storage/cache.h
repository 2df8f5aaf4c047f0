// The download cache for network checkpoint paths: a URL is fetched once into
// DTRAIN_CACHE (default ~/.cache/dtrain) and later loads read the local copy.
//
//   std::string pt = storage::fetch_file("https://host/models/r50.pt");
//   std::string dir = storage::fetch_directory(
//       "https://host/run1/model_final", {"checkpoint.h5", "shard-00000-of-00002.h5",
//                                         "shard-00001-of-00002.h5"},
//       [](const std::string& name, const std::string& path) { return check(name, path); });
//
// When the file list depends on a file of the set (checkpoint.h5's index names the
// shards and their checksums), use DirectoryFetch step by step instead:
//
//   storage::DirectoryFetch fetch(url);
//   if (!fetch.complete()) {
//     Index index = read_index(fetch.fetch("checkpoint.h5"));
//     for (auto& shard : index.shards) fetch.fetch(shard.file, verify_pieces(index, shard));
//     fetch.commit();
//   }
//   load_directory(fetch.path());
//
// Layout: <cache>/<host>_<port>/<hash>/<name>, where <hash> is 16 hex digits of the
// SHA-256 of the normalised URL and <name> its last path segment, sanitised (a file
// "model_final.pt" or a directory "model_final"). Beside it: ".lock" (see below) and,
// while a fetch runs, hidden temporaries ".<name>.part-<pid>-<seq>-<host>" (a file, or a
// staging directory whose files are renamed into place when all of them are complete
// and verified). Only rename(2) ever creates <name>, so anything at <name> is complete;
// a name starting with '.' is never a complete entry.
//
// Concurrency: threads and processes (also on other nodes, when the cache is on a shared
// file system that supports flock) fetching the same URL serialise on an flock(2) of the
// entry's ".lock" file: one downloads, the others wait and then find the complete entry.
// The holder of the lock removes temporaries that crashed fetches left behind. Where
// flock is unavailable, each process downloads into its own temporary and the renames
// decide: the cache is never corrupted, only the work is duplicated. Every function here
// is thread-safe; one DirectoryFetch object must be used by one thread at a time.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/storage/http_client.h"

namespace dtrain::storage {

// The cache root: $DTRAIN_CACHE (made absolute), else $XDG_CACHE_HOME/dtrain, else
// $HOME/.cache/dtrain.
// Throws dtrain::Error when none of these variables is set. Does not create it.
std::string cache_dir();

// The local path of `url`'s entry in the cache (see the layout above); stable across
// runs and hosts, one per URL (trailing slashes and the fragment do not count; the query
// does). Does not touch the file system. Throws dtrain::Error for an invalid URL.
std::string cache_path_for(const std::string& url);

// Returns cache_path_for(url) after downloading `url` there unless it is already cached
// (options.verify is applied to a new download). A cached copy is first given to
// `check_cached` (when set; "" = good): one it rejects (left by an older dtrain that did
// not verify downloads, or damaged since) is removed, with a warning, and downloaded
// again. Throws DownloadError / Interrupted / dtrain::Error.
std::string fetch_file(const std::string& url, const DownloadOptions& options = {},
                       const VerifyFn& check_cached = {});

// Checks one file of a directory fetch: (file name, local path) -> "" when good, else what
// is wrong (the file is downloaded again, then the fetch fails as corrupt).
using FileVerifyFn =
    std::function<std::string(const std::string& file_name, const std::string& local_path)>;

// Downloads base_url/<name> for every name in `file_names` into a staging directory and
// renames it to cache_path_for(base_url) once all are complete and verified. Returns that
// directory; when it already exists with every named file, returns it without any
// network access (a cached directory lacking some of the names is fetched again). On
// failure nothing is left at the final path and the staging directory is removed.
std::string fetch_directory(const std::string& base_url, const std::vector<std::string>& file_names,
                            const FileVerifyFn& verify = {}, const DownloadOptions& options = {});

// Removes `url`'s cache entry (file or directory) if present, e.g. after a cached copy
// failed verification. Waits for a fetch of the same URL in progress.
void remove_cached(const std::string& url);

namespace internal {
class EntryLock;
}

// A directory fetch in steps (see the example above). The constructor takes the entry's
// lock (waiting for another fetch of the same URL); the destructor releases it and, unless
// commit() succeeded, removes the staging directory. Thread-compatible.
class DirectoryFetch {
 public:
  // `base_url` names the directory: files are fetched from base_url + "/" + name.
  explicit DirectoryFetch(const std::string& base_url, DownloadOptions options = {});
  ~DirectoryFetch();
  DirectoryFetch(const DirectoryFetch&) = delete;
  DirectoryFetch& operator=(const DirectoryFetch&) = delete;

  // The final local directory, cache_path_for(base_url).
  const std::string& path() const { return final_path_; }

  // True when the directory is already in the cache (nothing to fetch).
  bool complete() const;

  // Removes the complete directory from the cache so that it can be fetched again.
  void evict();

  // Downloads base_url/<file_name> into the staging directory (after `verify` accepts it)
  // and returns its local path there. `file_name` is a plain name: no '/', not starting
  // with '.'. `max_bytes` (0: none) bounds this file besides the options' own limits;
  // `max_bytes_source` says where it comes from. Throws DownloadError / dtrain::Error.
  std::string fetch(const std::string& file_name, const VerifyFn& verify = {},
                    uint64_t max_bytes = 0, const std::string& max_bytes_source = "");

  // Renames the staging directory to path() (fsyncs first) and returns path(). If another
  // process committed the same URL meanwhile, discards this copy and returns theirs.
  std::string commit();

 private:
  void make_staging();  // creates the hidden staging directory once

  std::string base_url_;
  DownloadOptions options_;
  std::string final_path_;
  std::string staging_path_;  // empty until the first fetch()
  bool committed_ = false;
  std::unique_ptr<internal::EntryLock> lock_;
};

}  // namespace dtrain::storage
