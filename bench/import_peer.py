"""Peer and helpers for dtrain_import_bench (bench/run_import.sh): makes a ~1 GiB
PyTorch state dict file (and the same tensors as .safetensors), times a cold torch.load of
it, and reports the medians of dtrain_import_bench and this peer side by side.

    /usr/bin/python3 bench/import_peer.py make --pth /tmp/w.pth --safetensors /tmp/w.safetensors
    /usr/bin/python3 bench/import_peer.py load --pth /tmp/w.pth --round 0 --json results.jsonl
    /usr/bin/python3 bench/import_peer.py report results.jsonl

make: an OrderedDict like a detector's or a language model's state dict: a resnet50
(conv, batch-norm weights and running statistics, int64 num_batches_tracked, fc) under
"backbone." and a gpt-2-like transformer (d_model 1024, vocab 16384, context 1024) under
"lm." with as many blocks as reach --gib GiB (18 blocks for 1.0): ~540 tensors from 8 bytes
to 64 MiB, float32 N(0, 1) (torch.manual_seed(0)). torch.save's default zip format; the
safetensors file is written from the format's spec (8-byte little-endian header length,
JSON header padded with spaces to 8 bytes, the tensors' raw bytes in order), both fsynced.

load: per round, drops the page cache (sync; echo 3 > /proc/sys/vm/drop_caches; said in
the output when not permitted), times torch.load(path) (cold), then torch.load again
(warm, the file in the page cache). The loaded dict is freed after the clock stops.
torch 1.13 has no torch.load(mmap=True), so that is not timed.

report: pairs dtrain's and torch's JSON lines by round and prints medians, the spread of
the rounds (min-max) and the per-round ratios, whose medians are the results.
"""
import argparse
import collections
import json
import os
import resource
import statistics
import struct
import sys
import time

from torch_ckpt_peer import drop_caches  # bench/ is sys.path[0] when run as a script


# ---- make ----

def resnet50_shapes(prefix):
    """(name, shape, dtype) of torchvision's resnet50 state dict, in its order."""
    out = []

    def bn(name, c):
        out.extend([(f"{name}.weight", [c], "f"), (f"{name}.bias", [c], "f"),
                    (f"{name}.running_mean", [c], "f"), (f"{name}.running_var", [c], "f"),
                    (f"{name}.num_batches_tracked", [], "i")])

    out.append((f"{prefix}conv1.weight", [64, 3, 7, 7], "f"))
    bn(f"{prefix}bn1", 64)
    cin = 64
    for li, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        for b in range(blocks):
            p = f"{prefix}layer{li}.{b}."
            out.append((p + "conv1.weight", [width, cin, 1, 1], "f"))
            bn(p + "bn1", width)
            out.append((p + "conv2.weight", [width, width, 3, 3], "f"))
            bn(p + "bn2", width)
            out.append((p + "conv3.weight", [width * 4, width, 1, 1], "f"))
            bn(p + "bn3", width * 4)
            if b == 0:
                out.append((p + "downsample.0.weight", [width * 4, cin, 1, 1], "f"))
                bn(p + "downsample.1", width * 4)
            cin = width * 4
    out.extend([(f"{prefix}fc.weight", [1000, 2048], "f"), (f"{prefix}fc.bias", [1000], "f")])
    return out


def gpt_shapes(prefix, layers, d=1024, vocab=16384, ctx=1024):
    out = [(f"{prefix}wte.weight", [vocab, d], "f"), (f"{prefix}wpe.weight", [ctx, d], "f")]
    for i in range(layers):
        p = f"{prefix}h.{i}."
        out.extend([(p + "ln_1.weight", [d], "f"), (p + "ln_1.bias", [d], "f"),
                    (p + "attn.c_attn.weight", [d, 3 * d], "f"), (p + "attn.c_attn.bias", [3 * d], "f"),
                    (p + "attn.c_proj.weight", [d, d], "f"), (p + "attn.c_proj.bias", [d], "f"),
                    (p + "ln_2.weight", [d], "f"), (p + "ln_2.bias", [d], "f"),
                    (p + "mlp.c_fc.weight", [d, 4 * d], "f"), (p + "mlp.c_fc.bias", [4 * d], "f"),
                    (p + "mlp.c_proj.weight", [4 * d, d], "f"), (p + "mlp.c_proj.bias", [d], "f")])
    out.extend([(f"{prefix}ln_f.weight", [d], "f"), (f"{prefix}ln_f.bias", [d], "f")])
    return out


def nbytes_of(shapes):
    total = 0
    for _, shape, kind in shapes:
        n = 1
        for s in shape:
            n *= s
        total += n * (4 if kind == "f" else 8)
    return total


def state_shapes(gib):
    backbone = resnet50_shapes("backbone.")
    per_block = nbytes_of(gpt_shapes("", 1)) - nbytes_of(gpt_shapes("", 0))
    rest = gib * (1 << 30) - nbytes_of(backbone) - nbytes_of(gpt_shapes("", 0))
    layers = max(1, round(rest / per_block))
    return backbone + gpt_shapes("lm.", layers)


def write_safetensors(path, sd):
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, t in sd.items():
        dtype = {"torch.float32": "F32", "torch.int64": "I64"}[str(t.dtype)]
        n = t.numel() * t.element_size()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for t in sd.values():
            f.write(memoryview(t.contiguous().reshape(-1).numpy()).cast("B"))
        f.flush()
        os.fsync(f.fileno())


def make(a):
    import torch
    torch.manual_seed(0)
    sd = collections.OrderedDict()
    for name, shape, kind in state_shapes(a.gib):
        sd[name] = torch.randn(shape) if kind == "f" else torch.tensor(0, dtype=torch.int64)
    nbytes = sum(t.numel() * t.element_size() for t in sd.values())
    t0 = time.perf_counter()
    with open(a.pth, "wb") as f:
        torch.save(sd, f)
        f.flush()
        os.fsync(f.fileno())
    made = [f"{a.pth} ({os.path.getsize(a.pth)} bytes, torch.save+fsync {time.perf_counter() - t0:.2f} s)"]
    if a.safetensors:
        write_safetensors(a.safetensors, sd)
        made.append(f"{a.safetensors} ({os.path.getsize(a.safetensors)} bytes)")
    sizes = sorted(t.numel() * t.element_size() for t in sd.values())
    print(f"made {len(sd)} tensors, {nbytes} bytes ({nbytes / (1 << 30):.3f} GiB; smallest "
          f"{sizes[0]} B, median {sizes[len(sizes) // 2]} B, largest {sizes[-1] >> 20} MiB): "
          + ", ".join(made))


# ---- load ----

def load(a):
    import torch
    size = os.path.getsize(a.pth)
    cold, warm, faults, dropped = [], [], [], True
    for _ in range(a.rounds):
        dropped = drop_caches() and dropped
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        sd = torch.load(a.pth)
        cold.append(time.perf_counter() - t0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
        tensors = len(sd)
        nbytes = sum(t.numel() * t.element_size() for t in sd.values())
        del sd
        t0 = time.perf_counter()
        sd = torch.load(a.pth)
        warm.append(time.perf_counter() - t0)
        del sd
    res = {"bench": "import", "impl": "torch", "round": a.round, "file": a.pth, "file_bytes": size,
           "tensor_bytes": nbytes, "tensors": tensors, "cache_dropped": dropped,
           "torch_version": torch.__version__, "cold_minor_faults": faults, "runs_s": {"torch_load_cold": cold,
                                                          "torch_load_warm": warm}}
    print(f"torch.load: {tensors} tensors, {nbytes / 1e9:.3f} GB; page cache dropped: "
          f"{'yes' if dropped else 'NO (not permitted: cold figures are warm)'}; cold "
          + ", ".join(f"{s:.3f}" for s in cold) + " s, warm " + ", ".join(f"{s:.3f}" for s in warm)
          + " s; minor page faults of the cold load " + ", ".join(str(f) for f in faults))
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(res) + "\n")


# ---- report ----

def report(a):
    lines = []
    for path in a.results:
        with open(path) as f:
            lines.extend(json.loads(x) for x in f if x.strip())
    dt = [x for x in lines if x.get("bench") == "import" and x.get("impl") == "dtrain" and x.get("runs_s")]
    pt = [x for x in lines if x.get("bench") == "import" and x.get("impl") == "torch"]
    if not dt:
        print("report: no dtrain_import_bench results")
        return 1
    pth_bytes = dt[0]["file_bytes"]
    st_bytes = dt[0].get("safetensors_file_bytes", 0)
    runs = collections.defaultdict(list)   # what -> seconds of every round
    by_round = collections.defaultdict(dict)
    for x in dt + pt:
        for k, v in x["runs_s"].items():
            runs[k].extend(v)
            by_round[x["round"]][k] = statistics.median(v)
    sizes = {"read2_cold": pth_bytes, "pth_cold": pth_bytes, "pth_warm": pth_bytes,
             "torch_load_cold": pth_bytes, "torch_load_warm": pth_bytes,
             "st_read2_cold": st_bytes, "st_cold": st_bytes, "st_warm": st_bytes}
    label = {"read2_cold": "read(2) .pth into one buffer, cold",
             "pth_cold": "dtrain read_foreign_weights .pth, cold",
             "pth_warm": "dtrain read_foreign_weights .pth, warm",
             "torch_load_cold": "torch.load .pth, cold",
             "torch_load_warm": "torch.load .pth, warm",
             "st_read2_cold": "read(2) .safetensors into one buffer, cold",
             "st_cold": "dtrain read_foreign_weights .safetensors, cold",
             "st_warm": "dtrain read_foreign_weights .safetensors, warm"}
    dropped = all(x.get("cache_dropped", False) for x in dt + pt)
    print(f"\nImporting PyTorch weights: .pth {pth_bytes / 1e9:.3f} GB, {dt[0]['tensors']} tensors; "
          f".safetensors {st_bytes / 1e9:.3f} GB; {len(by_round)} rounds; page cache dropped: "
          f"{'yes' if dropped else 'NO'}")
    print(f"  {'':46s} {'median':>8s} {'GB/s':>6s}   spread (min-max s)")
    for k in label:
        if not runs.get(k) or not sizes[k]:
            continue
        v = runs[k]
        m = statistics.median(v)
        print(f"  {label[k]:46s} {m:7.3f}s {sizes[k] / m / 1e9:6.2f}   {min(v):.3f}-{max(v):.3f}")
    ratios = [("dtrain .pth cold / torch.load cold", "pth_cold", "torch_load_cold", 1.0, 0.8),
              ("dtrain .pth cold / read(2) cold", "pth_cold", "read2_cold", 1.0, None),
              ("torch.load cold / read(2) cold", "torch_load_cold", "read2_cold", 1.0, None),
              ("dtrain .pth warm / torch.load warm", "pth_warm", "torch_load_warm", 1.0, None),
              ("dtrain .safetensors cold / read(2) cold", "st_cold", "st_read2_cold", 1.0, None),
              ("dtrain .safetensors cold / torch.load cold", "st_cold", "torch_load_cold",
               (st_bytes / pth_bytes) if pth_bytes else 1.0, None)]
    print("  throughput ratios, per round (the median is the result):")
    summary = {}
    for name, num, den, scale, goal in ratios:
        # throughput ratio = (bytes_num / t_num) / (bytes_den / t_den)
        v = [scale * r[den] / r[num] for r in by_round.values() if num in r and den in r]
        if not v:
            continue
        m = statistics.median(v)
        summary[name] = {"median": m, "rounds": v}
        verdict = "" if goal is None else (f"   goal >= {goal}: " + ("met" if m >= goal else "NOT MET"))
        print(f"  {name:46s} {m:6.2f}x   rounds: " + ", ".join(f"{x:.2f}" for x in v) + verdict)
    bd = [x for x in lines if x.get("bench") == "import_breakdown"]
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps({"bench": "import_summary", "ratios": summary,
                                "median_s": {k: statistics.median(v) for k, v in runs.items()},
                                "breakdowns": len(bd)}) + "\n")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make", help="write the test file(s)")
    m.add_argument("--pth", required=True)
    m.add_argument("--safetensors", default="")
    m.add_argument("--gib", type=float, default=1.0, help="approximate size of the state dict")
    lo = sub.add_parser("load", help="time cold and warm torch.load")
    lo.add_argument("--pth", required=True)
    lo.add_argument("--rounds", type=int, default=1)
    lo.add_argument("--round", type=int, default=0, help="round number written to the JSON line")
    lo.add_argument("--json", default="")
    r = sub.add_parser("report", help="medians and ratios from JSON lines")
    r.add_argument("results", nargs="+")
    r.add_argument("--json", default="", help="append a summary line")
    a = ap.parse_args()
    return {"make": make, "load": load, "report": report}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
