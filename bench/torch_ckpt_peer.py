"""Peers for dtrain_ckpt_bench: torch.save/torch.load (and h5py, one dataset per tensor)
of the same tensors (names and shapes from dtrain_ckpt_bench --shapes), each round next
to a dd write+fsync and a cold dd read of the same size and to os.write+fsync / cold
read of the same bytes, as dtrain_ckpt_bench does.

    /usr/bin/python3 bench/torch_ckpt_peer.py --shapes shapes.json --dir /tmp/ckpt-bench

Writes are timed up to and including os.fsync of the file (what a checkpoint needs to be
durable); reads are cold (page cache dropped first, when permitted).
"""
import argparse
import json
import os
import statistics
import subprocess
import time

import torch


def drop_caches():
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
        return True
    except OSError:
        return False


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def dd_bytes(nbytes):
    block = 16 << 20
    return (nbytes + block - 1) // block * block


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", required=True, help="JSON line {name: shape} (last line used)")
    ap.add_argument("--dir", default="/tmp/dtrain-ckpt-bench")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--h5py", type=int, default=1, help="also time h5py (1) or not (0)")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    torch.set_num_threads(1)
    with open(a.shapes) as f:
        shapes = json.loads(f.read().strip().splitlines()[-1])
    torch.manual_seed(0)
    state = {name: torch.randn(shape) for name, shape in shapes.items()}
    nbytes = sum(t.numel() * t.element_size() for t in state.values())
    os.makedirs(a.dir, exist_ok=True)
    pt, h5, dd, raw = (os.path.join(a.dir, n) for n in ("state.pt", "state.h5", "dd.bin", "raw.bin"))
    h5py = None
    if a.h5py:
        try:
            import h5py  # noqa: F811
        except ImportError:
            pass

    def save_pt():
        with open(pt, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())

    def save_h5():
        with h5py.File(h5, "w") as f:
            for name, t in state.items():
                f.create_dataset(name, data=t.numpy())
        fd = os.open(h5, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)

    def load_h5():
        with h5py.File(h5, "r") as f:
            return {name: torch.from_numpy(f[name][...]) for name in state}

    def raw_write():  # the same bytes with os.write, then fsync (no format at all)
        fd = os.open(raw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        for t in state.values():
            os.write(fd, t.numpy().data)
        os.fsync(fd)
        os.close(fd)

    def raw_read():
        with open(raw, "rb", buffering=0) as f:
            while f.read(16 << 20):
                pass

    def dd_write():
        subprocess.run(["dd", "if=/dev/zero", f"of={dd}", "bs=16M",
                        f"count={dd_bytes(nbytes) // (16 << 20)}", "conv=fsync", "status=none"],
                       check=True)

    def dd_read():
        subprocess.run(["dd", f"if={dd}", "of=/dev/null", "bs=16M", "status=none"], check=True)

    r = {k: [] for k in ("dd_w", "dd_r", "px_w", "px_r", "pt_w", "pt_r", "h5_w", "h5_r")}
    dropped = False
    for _ in range(a.repeats):
        drop_caches()
        r["dd_w"].append(timed(dd_write))
        drop_caches()
        r["px_w"].append(timed(raw_write))
        drop_caches()
        r["pt_w"].append(timed(save_pt))
        dropped = drop_caches()
        r["dd_r"].append(timed(dd_read))
        os.remove(dd)
        drop_caches()
        r["px_r"].append(timed(raw_read))
        os.remove(raw)
        drop_caches()
        r["pt_r"].append(timed(lambda: torch.load(pt)))
        os.remove(pt)
        if h5py is not None:
            drop_caches()
            r["h5_w"].append(timed(save_h5))
            drop_caches()
            r["h5_r"].append(timed(load_h5))
            os.remove(h5)

    def gbps(key, size=nbytes):
        return size / statistics.median(r[key]) / 1e9 if r[key] else 0.0

    def ratio(key, ref_key):  # median over rounds of (peer GB/s) / (reference GB/s)
        if not r[key]:
            return 0.0
        scale = nbytes / dd_bytes(nbytes) if ref_key.startswith("dd") else 1.0
        return statistics.median(d / x * scale for x, d in zip(r[key], r[ref_key]))

    res = {"bench": "ckpt", "impl": "torch", "bytes": nbytes, "repeats": a.repeats,
           "cache_dropped": dropped, "torch_version": torch.__version__,
           "dd_write_gbps": gbps("dd_w", dd_bytes(nbytes)),
           "dd_read_gbps": gbps("dd_r", dd_bytes(nbytes)),
           "save_gbps": gbps("pt_w"), "load_gbps": gbps("pt_r"),
           "posix_write_gbps": gbps("px_w"), "posix_read_gbps": gbps("px_r"),
           "save_vs_dd": ratio("pt_w", "dd_w"), "load_vs_dd": ratio("pt_r", "dd_r"),
           "save_vs_posix": ratio("pt_w", "px_w"), "load_vs_posix": ratio("pt_r", "px_r"),
           "h5py_save_gbps": gbps("h5_w"), "h5py_load_gbps": gbps("h5_r"),
           "h5py_save_vs_dd": ratio("h5_w", "dd_w"), "h5py_load_vs_dd": ratio("h5_r", "dd_r"),
           "runs_s": r}
    print(f"torch peer: {nbytes / 1e9:.2f} GB in {len(state)} tensors, {a.repeats} rounds, "
          f"page cache dropped: {'yes' if dropped else 'NO'}")
    print(f"  dd write+fsync   {res['dd_write_gbps']:6.2f} GB/s   dd cold read {res['dd_read_gbps']:6.2f} GB/s")
    print(f"  write+fsync      {res['posix_write_gbps']:6.2f} GB/s   cold read    "
          f"{res['posix_read_gbps']:6.2f} GB/s   (the same bytes, os.write / read)")
    print(f"  torch.save+fsync {res['save_gbps']:6.2f} GB/s ({res['save_vs_dd']:.2f}x dd, "
          f"{res['save_vs_posix']:.2f}x write)   torch.load cold {res['load_gbps']:6.2f} GB/s "
          f"({res['load_vs_dd']:.2f}x dd, {res['load_vs_posix']:.2f}x read)")
    if r["h5_w"]:
        print(f"  h5py write+fsync {res['h5py_save_gbps']:6.2f} GB/s ({res['h5py_save_vs_dd']:.2f}x dd)   "
              f"h5py read cold  {res['h5py_load_gbps']:6.2f} GB/s ({res['h5py_load_vs_dd']:.2f}x dd)")
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
