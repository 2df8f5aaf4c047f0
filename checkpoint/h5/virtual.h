// Reading back the mappings of a virtual dataset (what `checkpoint.h5`'s whole-tensor
// views point at), so that a verify can compare them with the index.
//
//   for (const h5::VirtualMapping& m : h5::virtual_mappings(file, "/model/w")) ...
//
// Thread-safety: takes library_mutex() like every h5 call.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "checkpoint/h5/group.h"

namespace dtrain::checkpoint::h5 {

// One source of a virtual dataset: the block [start, start + count) of the virtual
// dataset (both {} for a scalar one) comes from `dataset` in `file`, all of it when
// `source_whole` (HDF5 then checks at read time that its extent is `count`).
struct VirtualMapping {
  std::string file;
  std::string dataset;
  std::vector<int64_t> start;
  std::vector<int64_t> count;
  bool source_whole = true;  // the whole source dataset is selected

  bool operator==(const VirtualMapping& o) const {
    return file == o.file && dataset == o.dataset && start == o.start && count == o.count &&
           source_whole == o.source_whole;
  }
};

// The mappings of virtual dataset `path` of `group`, reached through hard links only.
// Throws dtrain::CheckpointError naming the file and dataset when a link on the way is
// not a hard link, the dataset is not virtual, or a mapping's selection is not one block.
std::vector<VirtualMapping> virtual_mappings(const Group& group, const std::string& path);

}  // namespace dtrain::checkpoint::h5
