#!/usr/bin/python3
"""Reads a dtrain checkpoint with plain h5py (no dtrain code) and compares it with what
checkpoint_tool / checkpoint_io_test wrote as expected values.

usage: read_with_h5py.py CHECKPOINT_DIR EXPECTED_JSON [WORLD_SIZE]

Every replicated tensor is read whole through the virtual dataset in checkpoint.h5
(stitched from the shard files by relative names, so this runs from any working
directory), every per-rank tensor through /ranks/RRRRR/..., every scalar from its scalar
dataset; the root attributes and /dtrain/index are checked too. Exit status: 0 equal,
1 different, 77 when h5py or numpy cannot be imported (the caller skips).
"""
import json
import os
import sys

try:
    import h5py
    import numpy as np
except ImportError as e:  # pragma: no cover
    print(f"cannot import h5py/numpy: {e}")
    sys.exit(77)

NUMPY = {"float32": np.float32, "float64": np.float64, "float16": np.float16,
         "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
         "uint8": np.uint8, "bool": np.bool_}


def same_bits(got, want):
    """Bitwise equality, except that any NaN equals any NaN (HDF5's bfloat16 -> float32
    conversion keeps NaN but need not keep its payload)."""
    if got.dtype != want.dtype or got.shape != want.shape:
        return False
    if got.dtype.kind == "f":
        nan = np.isnan(want)
        if not np.array_equal(np.isnan(got), nan):
            return False
        return got[~nan].tobytes() == want[~nan].tobytes()
    return got.tobytes() == want.tobytes()


def main():
    ckpt, expected_json = sys.argv[1], sys.argv[2]
    world = int(sys.argv[3]) if len(sys.argv) > 3 else None
    problems = []
    with open(expected_json) as f:
        expected = json.load(f)
    with h5py.File(os.path.join(ckpt, "checkpoint.h5"), "r") as f:
        if f.attrs["format"] != "dtrain-checkpoint":
            problems.append(f"format attribute is {f.attrs['format']!r}")
        if int(f.attrs["format_version"]) != 1:
            problems.append(f"format_version is {f.attrs['format_version']!r}")
        if world is not None and int(f.attrs["world_size"]) != world:
            problems.append(f"world_size attribute {f.attrs['world_size']} != {world}")
        index = json.loads(f["dtrain/index"][()])
        indexed = {t["name"]: t for t in index["tensors"]}
        for e in expected:
            name = e["name"]
            if name not in f:
                problems.append(f"{name}: missing")
                continue
            ds = f[name]
            if e["kind"] == "tensor":
                want = np.fromfile(e["file"], dtype=NUMPY[e["dtype"]]).reshape(e["shape"])
                got = ds[()]
                got = np.asarray(got)
                if not same_bits(got, want):
                    problems.append(f"{name}: got {got.dtype}{list(got.shape)} {got.ravel()[:6]}, "
                                    f"want {want.dtype}{list(want.shape)} {want.ravel()[:6]}")
                if not name.startswith("ranks/"):
                    rec = indexed.get(name)
                    if rec is None or rec["dtype"] != e["saved_dtype"]:
                        problems.append(f"{name}: index record {rec and rec['dtype']} != "
                                        f"{e['saved_dtype']}")
                    if ds.attrs.get("dtype") not in (e["saved_dtype"], e["saved_dtype"].encode()):
                        problems.append(f"{name}: dtype attribute {ds.attrs.get('dtype')!r}")
                    if world is not None and world > 1 and len(want.shape) > 0 and want.shape[0] > 1 \
                            and ds.is_virtual and len(ds.virtual_sources()) < 1:
                        problems.append(f"{name}: no virtual sources")
            else:
                got = ds[()]
                if isinstance(got, bytes):
                    got = got.decode("utf-8")
                if e["kind"] == "int":
                    ok = int(got) == e["value"] and np.issubdtype(np.asarray(got).dtype, np.integer)
                elif e["kind"] == "float":
                    ok = float(got) == e["value"]
                else:
                    ok = got == e["value"]
                if not ok:
                    problems.append(f"{name}: got {got!r}, want {e['value']!r}")
    for p in problems:
        print("h5py:", p)
    print(f"h5py: checked {len(expected)} entries of {ckpt} from {os.getcwd()}: "
          f"{'OK' if not problems else f'{len(problems)} problems'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
