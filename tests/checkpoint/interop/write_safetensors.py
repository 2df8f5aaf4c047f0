#!/usr/bin/env python3
"""A plain-Python safetensors peer for interop_safetensors_test (no safetensors package).

  write_safetensors.py write OUTDIR       writes OUTDIR/peer.safetensors from the spec, and
                                          what it holds as OUTDIR/manifest.json + OUTDIR/<i>.bin
  write_safetensors.py read FILE OUTDIR   parses FILE with its own spec parser and checks it
                                          against OUTDIR/manifest.json and OUTDIR/<i>.bin

manifest.json: {"metadata": {str: str}, "tensors": [{"name", "dtype", "shape", "bin",
"arange"}]} in data order; "arange": the values are torch.arange(numel) cast to the dtype.
Exit status: 0 ok, 1 mismatch (printed), 77 numpy or torch missing.
"""
import json
import os
import struct
import sys

try:
    import numpy as np
    import torch
except ImportError as e:  # pragma: no cover
    print(f"cannot import numpy/torch: {e}")
    sys.exit(77)

TORCH_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
    "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
    "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
            "I8": 1, "U8": 1, "BOOL": 1}


def raw_bytes(t):
    """The little-endian bytes of a torch tensor, C order."""
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    return t.numpy().tobytes()


def peer_tensors():
    """(name, dtype, tensor) in the order their bytes go into the file."""
    f32 = np.array([1.5, -0.0, np.inf, 0, 0, 3.25], dtype=np.float32)
    f32.view(np.uint32)[3] = 0x7FC00001  # quiet NaN with a payload
    f32.view(np.uint32)[4] = 0xFFA00002  # negative signalling NaN
    bf16 = torch.tensor([1.0, -2.5, 3.0e38, 1e-30, float("nan")]).to(torch.bfloat16)
    return [
        ("embed.weight", "F32", torch.from_numpy(f32.reshape(2, 3))),
        ("bf16", "BF16", bf16),
        ("half", "F16", torch.from_numpy(np.arange(6, dtype=np.float16).reshape(3, 2) / 7)),
        ("scalar", "F64", torch.tensor(np.pi, dtype=torch.float64)),
        ("i64", "I64", torch.tensor([-(2**63), 2**63 - 1, 0, -1], dtype=torch.int64)),
        ("i32", "I32", torch.tensor([[-(2**31), 2**31 - 1]], dtype=torch.int32)),
        ("i16", "I16", torch.tensor([-32768, 32767, 7], dtype=torch.int16)),
        ("i8", "I8", torch.tensor([-128, 127], dtype=torch.int8)),
        ("u8", "U8", torch.arange(8, dtype=torch.uint8).reshape(2, 2, 2) * 31),
        ("mask", "BOOL", torch.tensor([True, False, True])),
        ("empty", "F32", torch.zeros(0, 3)),
        ("layers.0/ünïcödé \"name\"", "F32", torch.tensor([42.0])),
    ]


def write(outdir):
    tensors = peer_tensors()
    metadata = {"format": "pt", "note": "written by write_safetensors.py", "ключ": "значение"}
    header, data, manifest = {}, b"", []
    for i, (name, dtype, t) in enumerate(tensors):
        b = raw_bytes(t)
        header[name] = {"dtype": dtype, "shape": list(t.shape),
                        "data_offsets": [len(data), len(data) + len(b)]}
        data += b
        with open(os.path.join(outdir, f"{i}.bin"), "wb") as f:
            f.write(b)
        manifest.append({"name": name, "dtype": dtype, "shape": list(t.shape), "bin": f"{i}.bin",
                         "arange": False})
    # Header keys in another order than the data, "__metadata__" in the middle: readers
    # must order tensors by offset, not by key.
    items = list(reversed(list(header.items())))
    items.insert(len(items) // 2, ("__metadata__", metadata))
    text = json.dumps(dict(items)).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)
    with open(os.path.join(outdir, "peer.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)
    with open(os.path.join(outdir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump({"metadata": metadata, "tensors": manifest}, f)


def no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError(f"duplicate keys in {keys}")
    return dict(pairs)


def parse(path):
    """(metadata, [(name, dtype, shape, bytes)] in data order, header length) per the spec."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    text = blob[8:8 + n].decode("utf-8")
    assert text.startswith("{"), "header does not start with '{'"
    header = json.loads(text, object_pairs_hook=no_duplicates)
    metadata = header.pop("__metadata__", {})
    data = blob[8 + n:]
    entries = sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"]))
    pos, out = 0, []
    for name, e in entries:
        assert set(e) == {"dtype", "shape", "data_offsets"}, f"{name}: fields {set(e)}"
        begin, end = e["data_offsets"]
        assert begin == pos, f"{name}: begins at {begin}, expected {pos}"
        numel = 1
        for d in e["shape"]:
            numel *= d
        assert end - begin == numel * ITEMSIZE[e["dtype"]], f"{name}: size {end - begin}"
        out.append((name, e["dtype"], e["shape"], data[begin:end]))
        pos = end
    assert pos == len(data), f"data region {len(data)} bytes, tensors end at {pos}"
    return metadata, out, n


def to_tensor(dtype, shape, b):
    if not b:
        return torch.empty(shape, dtype=TORCH_DTYPES[dtype])
    return torch.frombuffer(bytearray(b), dtype=TORCH_DTYPES[dtype]).reshape(shape)


def read(path, outdir):
    with open(os.path.join(outdir, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    metadata, tensors, n = parse(path)
    errors = []
    if (8 + n) % 8:
        errors.append(f"data starts at byte {8 + n}, not 8-byte aligned")
    if metadata != manifest["metadata"]:
        errors.append(f"metadata {metadata} != {manifest['metadata']}")
    names = [t[0] for t in tensors]
    if names != [t["name"] for t in manifest["tensors"]]:
        errors.append(f"tensor order {names}")
    for (name, dtype, shape, b), want in zip(tensors, manifest["tensors"]):
        if dtype != want["dtype"] or shape != want["shape"]:
            errors.append(f"{name}: {dtype} {shape}, expected {want['dtype']} {want['shape']}")
            continue
        with open(os.path.join(outdir, want["bin"]), "rb") as f:
            if b != f.read():
                errors.append(f"{name}: bytes differ")
        if want["arange"]:
            t = to_tensor(dtype, shape, b)
            expect = torch.arange(t.numel(), dtype=torch.float64).to(t.dtype).reshape(shape)
            if not torch.equal(t, expect):
                errors.append(f"{name}: values {t} != {expect}")
    for e in errors:
        print(e)
    print(f"checked {len(tensors)} tensors, {len(metadata)} metadata keys")
    return 1 if errors else 0


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "write":
        write(sys.argv[2])
        return 0
    if len(sys.argv) == 4 and sys.argv[1] == "read":
        return read(sys.argv[2], sys.argv[3])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
