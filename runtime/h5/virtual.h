// Virtual datasets: one dataset stitched from datasets in other files (a checkpoint's
// whole-tensor views of its shards), created, and their mappings read back so that a
// verify can compare them with what was meant.
//
//   h5::create_virtual_dataset(file, "/model/w", h5::datatype_for(at::kFloat), {10, 4},
//                              {{"shard-00000-of-00002.h5", "/model/w", {0, 0}, {5, 4}},
//                               {"shard-00001-of-00002.h5", "/model/w", {5, 0}, {5, 4}}});
//   for (const h5::VirtualMapping& m : h5::virtual_mappings(file, "/model/w")) ...
//
// Thread-safety: takes library_mutex() like every h5 call.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/h5/group.h"

namespace dtrain::h5 {

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

// Creates virtual dataset `path` of `group` (missing parent groups are created) of
// `type` and `shape` ({} for a scalar one) and returns it. Each mapping fills its block
// [start, start + count) from the whole dataset `dataset` (of extent `count`) in `file`,
// a name HDF5 resolves relative to the virtual dataset's own file; start and count have
// one entry per axis ({} for a scalar). Mappings of no elements are skipped, since HDF5
// cannot map none. Throws H5Error naming the file and the dataset when `path` exists, a
// mapping is not of the dataset's rank or selects part of its source, or HDF5 fails.
Dataset create_virtual_dataset(Group& group, const std::string& path, const DataType& type,
                               const std::vector<int64_t>& shape,
                               const std::vector<VirtualMapping>& mappings);

// The mappings of virtual dataset `path` of `group`, reached through hard links only.
// Throws h5::H5Error naming the file and dataset when a link on the way is
// not a hard link, the dataset is not virtual, or a mapping's selection is not one block.
std::vector<VirtualMapping> virtual_mappings(const Group& group, const std::string& path);

}  // namespace dtrain::h5
