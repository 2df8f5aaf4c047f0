"""Crafts checkpoints that try to make dtrain read files outside their own directory,
from a real 1-shard checkpoint, with Debian's python3-h5py.

Usage: craft_outside_reads.py CHECKPOINT_DIR OUT_DIR

Writes OUT_DIR/outside.h5 and OUT_DIR/outside.bin (the "outside" files) and one copy of
the checkpoint per attack, OUT_DIR/<attack>/, where <attack> is:
  external_raw   a model dataset whose raw data is external storage in outside.bin
  external_link  a model dataset replaced by an external link to outside.h5
  virtual        a model dataset replaced by a virtual dataset over outside.h5
  soft_link      the model group replaced by a soft link to another group
  index_link     checkpoint.h5's /dtrain/index replaced by an external link to outside.h5
  shard_symlink  the shard replaced by a symbolic link to a copy outside the directory
Exit 77 when h5py cannot be imported.
"""
import os
import shutil
import sys

try:
    import h5py
    import numpy as np
except ImportError:
    sys.exit(77)

src, out = sys.argv[1:3]
shard = "shard-00000-of-00001.h5"
os.makedirs(out, exist_ok=True)

with h5py.File(os.path.join(src, shard), "r") as f:
    names = []
    f["model"].visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    target = "model/" + sorted(names)[0]
    shape, dtype = f[target].shape, f[target].dtype
nbytes = int(np.prod(shape)) * dtype.itemsize

outside_bin = os.path.join(out, "outside.bin")
with open(outside_bin, "wb") as f:
    f.write(os.urandom(max(nbytes, 1) + 4096))
outside_h5 = os.path.join(out, "outside.h5")
with h5py.File(os.path.join(src, "checkpoint.h5"), "r") as f:
    index = f["dtrain/index"][()]
with h5py.File(outside_h5, "w") as f:
    f.create_dataset("data", data=np.frombuffer(os.urandom(nbytes), dtype=dtype).reshape(shape))
    f.create_dataset("index", data=index)


def copy(attack):
    dst = os.path.join(out, attack)
    shutil.copytree(src, dst)
    return dst


def replace_in_shard(attack, make):
    dst = copy(attack)
    with h5py.File(os.path.join(dst, shard), "a") as f:
        del f[target]
        make(f)


replace_in_shard("external_raw", lambda f: f.create_dataset(
    target, shape=shape, dtype=dtype, external=[(outside_bin, 0, nbytes)]))
replace_in_shard("external_link", lambda f: f.__setitem__(
    target, h5py.ExternalLink(outside_h5, "/data")))


def make_virtual(f):
    layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
    layout[...] = h5py.VirtualSource(outside_h5, "data", shape=shape)
    f.create_virtual_dataset(target, layout)


replace_in_shard("virtual", make_virtual)

dst = copy("soft_link")
with h5py.File(os.path.join(dst, shard), "a") as f:
    f.move("model", "model_real")
    f["model"] = h5py.SoftLink("/model_real")

dst = copy("index_link")
with h5py.File(os.path.join(dst, "checkpoint.h5"), "a") as f:
    del f["dtrain/index"]
    f["dtrain/index"] = h5py.ExternalLink(outside_h5, "/index")

dst = copy("shard_symlink")
elsewhere = os.path.join(out, "elsewhere-" + shard)
shutil.move(os.path.join(dst, shard), elsewhere)
os.symlink(elsewhere, os.path.join(dst, shard))
print("crafted", target)
