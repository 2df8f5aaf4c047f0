// The save directory's layout (internal to the checkpointer): committed checkpoint
// directories, the last_checkpoint tag, hidden temporaries of saves and deletes in
// progress, and the file-system steps of a commit and a delete, all through an Env
// (runtime/base/env.h). No communication: the
// callers run these on rank 0 and agree on the outcome (runtime/dist/agree.h).
//
//   save_dir/model_0004999/        committed: a plain directory holding checkpoint.h5
//   save_dir/.model_0009999.tmp-…  a save in progress (or left by a crash)
//   save_dir/.model_0004999.deleting-…
//   save_dir/last_checkpoint       the name of the checkpoint to resume from
//
// Thread-safe in the sense that nothing here keeps state; two processes must not save
// into the same save_dir at once.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "runtime/base/env.h"

namespace dtrain::checkpoint::save_dir {

inline constexpr const char* kLastCheckpoint = "last_checkpoint";

// The name in save_dir/last_checkpoint (trailing newlines/spaces dropped), "" if none.
// The tag is ours: never followed as a symbolic link, at most 4 KiB, and it must name a
// plain directory of save_dir (not "../other/model_final"); throws CheckpointError
// naming the tag otherwise.
std::string tagged_name(Env& env, const std::string& dir);
// Whether save_dir/last_checkpoint exists (a dangling link is there, and damaged).
bool has_tag(Env& env, const std::string& dir);
// Writes `name` into save_dir/last_checkpoint atomically and durably.
void write_tag(Env& env, const std::string& dir, const std::string& name);

// Throws CheckpointError unless `name` is a plain, non-hidden directory name.
void validate_name(const std::string& name);
// A fresh random suffix for hidden temporaries.
std::string random_id();

// Every committed checkpoint directory in `dir` (full paths), sorted by name.
std::vector<std::string> committed_checkpoints(Env& env, const std::string& dir);
// Removes the hidden leftovers (".*.tmp-*", ".*.deleting-*") of saves and deletes that
// crashed; they were never committed. Names for which `keep` is true stay.
void remove_stale_temporaries(Env& env, const std::string& dir,
                              const std::function<bool(const std::string&)>& keep = {});
// Creates and returns the hidden temporary directory a save of `name` writes into.
std::string create_temporary(Env& env, const std::string& dir, const std::string& name);

// Throws unless `final_dir` is free or a committed checkpoint of ours that a save may
// replace: a file, a symbolic link or a directory without checkpoint.h5 of the same
// name is the user's, and is never deleted by a save.
void refuse_to_replace_foreign(Env& env, const std::string& final_dir);
// Renames the finished temporary directory to `final_dir`, replacing an existing one
// atomically where the filesystem supports RENAME_EXCHANGE; durable.
void commit_directory(Env& env, const std::string& tmp, const std::string& final_dir);
// Moves `dir` out of sight, then deletes it: never a half-deleted dir under its name.
void remove_dir_safely(Env& env, const std::string& dir);

}  // namespace dtrain::checkpoint::save_dir
