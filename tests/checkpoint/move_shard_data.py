#!/usr/bin/python3
"""Rewrites an HDF5 file as another HDF5 tool would (h5repack, h5py copies): every
object copied into a new file that starts with a 64 KiB dataset, so that the same data
now lies at other byte offsets. Exit status 77 without h5py.

    move_shard_data.py SHARD.h5
"""
import os
import sys

try:
    import h5py
    import numpy as np
except ImportError:
    sys.exit(77)


def main():
    src = sys.argv[1]
    tmp = src + ".moved"
    with h5py.File(src, "r") as s, h5py.File(tmp, "w") as d:
        d.create_dataset("padding", data=np.zeros(1 << 16, dtype=np.uint8))
        for key, value in s.attrs.items():
            d.attrs[key] = value
        for name in s:
            s.copy(s[name], d, name=name)
    os.replace(tmp, src)
    return 0


if __name__ == "__main__":
    sys.exit(main())
