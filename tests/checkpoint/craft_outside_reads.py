"""Crafts checkpoints that try to make dtrain read files outside their own directory,
from a real checkpoint of any number of shards, with Debian's python3-h5py.

Usage: craft_outside_reads.py CHECKPOINT_DIR OUT_DIR [ATTACK ...]

Writes OUT_DIR/outside.h5 and OUT_DIR/outside.bin (the "outside" files) and one copy of
the checkpoint per attack (all of them when none is named), OUT_DIR/<attack>/, where
<attack> is:
  external_raw   a model dataset of the first shard whose raw data is external storage in
                 outside.bin
  external_link  that dataset replaced by an external link to outside.h5
  virtual        that dataset replaced by a virtual dataset over outside.h5
  soft_link      the first shard's model group replaced by a soft link to another group
  index_link     checkpoint.h5's /dtrain/index replaced by an external link to outside.h5
  shard_symlink  the first shard replaced by a symbolic link to a copy outside the directory
  vds_remap      checkpoint.h5's virtual dataset of that model tensor re-created (same
                 name, shape, dtype) over outside.h5:/whole instead of the shards: dtrain
                 loads from the shards, so loads are unaffected, but verify must report it
and, named only (it needs a 0-d dataset in a shard, e.g. BatchNorm's num_batches_tracked;
not about outside files):
  null_scalar    the first shard's first 0-d dataset re-created with a null dataspace
                 (h5py.Empty, same dtype): the shape [] of a scalar, but no element
The attacked tensor's name is printed ("crafted model/<name>"). Exit 77 when h5py cannot
be imported.
"""
import glob
import os
import shutil
import sys

try:
    import h5py
    import numpy as np
except ImportError:
    sys.exit(77)

ATTACKS = ("external_raw", "external_link", "virtual", "soft_link", "index_link",
           "shard_symlink", "vds_remap")

NAMED_ONLY = ("null_scalar",)

src, out = sys.argv[1:3]
wanted = sys.argv[3:] or list(ATTACKS)
unknown = sorted(set(wanted) - set(ATTACKS) - set(NAMED_ONLY))
if unknown:
    sys.exit("unknown attack(s) %s; known: %s" % (", ".join(unknown), ", ".join(ATTACKS + NAMED_ONLY)))
shards = sorted(os.path.basename(p) for p in glob.glob(os.path.join(src, "shard-*-of-*.h5")))
if not shards:
    sys.exit("no shard-*-of-*.h5 in " + src)
shard = shards[0]
os.makedirs(out, exist_ok=True)

with h5py.File(os.path.join(src, shard), "r") as f:
    names = []
    f["model"].visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    target = "model/" + sorted(names)[0]
    shape, dtype = f[target].shape, f[target].dtype
with h5py.File(os.path.join(src, "checkpoint.h5"), "r") as f:
    index = f["dtrain/index"][()]
    whole_shape = f[target].shape  # the virtual dataset of the whole tensor
nbytes = int(np.prod(shape)) * dtype.itemsize


def outside_values(dims):
    # Finite values far from any trained weight, so a load of them would show.
    return np.full(dims, 1234.5, dtype=dtype) if dtype.kind == "f" else \
        np.frombuffer(os.urandom(int(np.prod(dims)) * dtype.itemsize), dtype=dtype).reshape(dims)


outside_bin = os.path.join(out, "outside.bin")
with open(outside_bin, "wb") as f:
    f.write(outside_values(shape).tobytes() + os.urandom(4096))
outside_h5 = os.path.join(out, "outside.h5")
with h5py.File(outside_h5, "w") as f:
    f.create_dataset("data", data=outside_values(shape))
    f.create_dataset("whole", data=outside_values(whole_shape))
    f.create_dataset("index", data=index)


def copy(attack):
    dst = os.path.join(out, attack)
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    return dst


def replace(path, name, make):
    with h5py.File(path, "a") as f:
        del f[name]
        make(f)


def make_virtual(f, name, dims, source):
    layout = h5py.VirtualLayout(shape=dims, dtype=dtype)
    layout[...] = h5py.VirtualSource(outside_h5, source, shape=dims)
    f.create_virtual_dataset(name, layout)


def craft(attack, dst):
    shard_path = os.path.join(dst, shard)
    if attack == "external_raw":
        replace(shard_path, target, lambda f: f.create_dataset(
            target, shape=shape, dtype=dtype, external=[(outside_bin, 0, nbytes)]))
    elif attack == "external_link":
        replace(shard_path, target,
                lambda f: f.__setitem__(target, h5py.ExternalLink(outside_h5, "/data")))
    elif attack == "virtual":
        replace(shard_path, target, lambda f: make_virtual(f, target, shape, "data"))
    elif attack == "soft_link":
        with h5py.File(shard_path, "a") as f:
            f.move("model", "model_real")
            f["model"] = h5py.SoftLink("/model_real")
    elif attack == "index_link":
        replace(os.path.join(dst, "checkpoint.h5"), "dtrain/index", lambda f: f.__setitem__(
            "dtrain/index", h5py.ExternalLink(outside_h5, "/index")))
    elif attack == "shard_symlink":
        elsewhere = os.path.join(out, "elsewhere-" + shard)
        shutil.move(shard_path, elsewhere)
        os.symlink(elsewhere, shard_path)
    elif attack == "vds_remap":
        replace(os.path.join(dst, "checkpoint.h5"), target,
                lambda f: make_virtual(f, target, whole_shape, "whole"))
    elif attack == "null_scalar":
        with h5py.File(shard_path, "r") as f:
            scalars = []
            f.visititems(lambda n, o: scalars.append((n, o.dtype))
                         if isinstance(o, h5py.Dataset) and o.shape == () else None)
        if not scalars:
            sys.exit("null_scalar: no 0-d dataset in " + shard_path)
        name, scalar_dtype = sorted(scalars)[0]
        replace(shard_path, name, lambda f: f.create_dataset(name, data=h5py.Empty(scalar_dtype)))
        print("crafted null_scalar", name)


for attack in wanted:
    craft(attack, copy(attack))
print("crafted", target)
