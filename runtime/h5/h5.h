// dtrain's HDF5 layer (library dtrain::h5), shaped like HighFive: an RAII object per
// hid_t, every HDF5 call checked and made under the layer's lock and error scope
// (ApiScope), HDF5's error stack turned into h5::H5Error with the operation, the file
// and the object path. It serves the checkpoint format (checkpoint/) and the HDF5 data
// sets (runtime/data/) and knows neither. Include this header for the whole layer.
//
//   namespace h5 = dtrain::h5;                              // or h5:: inside dtrain
//   {
//     h5::FileOptions options;
//     options.alignment = 1 << 20;                          // 1 MiB for objects >= 64 KiB
//     options.alignment_threshold = 64 << 10;
//     h5::File f = h5::File::create("out.h5", options);
//     f.write_tensor("model/fc1.weight", w);              // intermediate groups created
//     f.open_group("model").set_int_attr("iteration", 4999);
//     f.write_string("config.yaml", yaml_text);
//     h5::Dataset d = f.create_dataset("big", h5::datatype_for(at::kHalf), {n, 16});
//     d.write_rows(0, first_rows);                          // hyperslab of the first axis
//     d.close();                                            // or let it go out of scope
//     f.close();                                            // checked close
//   }
//   h5::File r = h5::File::open("out.h5");                  // read-only
//   at::Tensor w2 = r.read_tensor("model/fc1.weight");      // dtype/shape from the file
//   at::Tensor rows = r.open_dataset("big").read_rows(10, 5, at::kFloat);
//   std::string yaml = r.read_string("config.yaml");
//
// Pieces: handle.h (Handle, ApiScope, H5Error), types.h (DataType, DataSpace,
// PropertyList, the dtype mapping), object.h (attributes), dataset.h, group.h, file.h,
// virtual.h (virtual datasets: created and read back). Code outside this folder makes
// no HDF5 call of its own.
// Files use the sec2 driver (one plain file per process; no MPI-IO).
//
// Thread-safety: objects are not thread-safe; all HDF5 calls from any thread are
// serialized by library_mutex() because Debian's parallel HDF5 is not thread-safe.
#pragma once

#include "runtime/h5/dataset.h"
#include "runtime/h5/file.h"
#include "runtime/h5/group.h"
#include "runtime/h5/handle.h"
#include "runtime/h5/object.h"
#include "runtime/h5/types.h"
#include "runtime/h5/virtual.h"
