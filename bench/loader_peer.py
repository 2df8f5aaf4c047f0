"""Peer for dtrain_loader_bench: Fashion-MNIST through torch.utils.data.DataLoader(num_workers=N)
with torchvision's per-sample RandomCrop + RandomHorizontalFlip, alone and feeding the
cnn of configs/cnn_fashion_mnist.yaml, timed as dtrain_loader_bench times dtrain.

    /usr/bin/python3 bench/loader_peer.py --workers 2 --padding 4 --json results.jsonl

The data set is what a PyTorch user would write: the IDX .gz files read with gzip + numpy,
normalized once to float32 (x / 255 - 0.2860) / 0.3530 and held in memory as one
[60000, 1, 28, 28] tensor (TensorDataset-like); __getitem__ applies
RandomCrop(28, padding, fill = the normalized black pixel) then RandomHorizontalFlip to
that sample, as torchvision transforms on tensors do. Figures (samples/s = samples handed
out / wall time of the timed batches, after warm-up batches that also absorb the
workers' start):
  loader   DataLoader(batch_size, shuffle=True, num_workers=N, prefetch_factor=2,
           drop_last=True), batches only;
  train    the same DataLoader feeding SGD steps of the cnn (conv1/bn1/conv2/bn2/fc1/head,
           models/cnn.h's layout), loss.item() each step as dtrain's SimpleTrainer does;
  compute  the same steps on one batch held in memory (no loader): the model's limit.
Standalone it runs every part for each --workers and appends one JSON line (--json);
dtrain_loader_bench starts it with --serve and asks for one measurement at a time.
"""
import argparse
import gzip
import json
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.transforms as T

MEAN, STD = 0.2860, 0.3530


def read_idx(path, ndim):
    """The array of an IDX .gz file (uint8 data, big-endian int32 dimensions)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[0:4], "big")
    if magic != 0x0800 + ndim:
        sys.exit(f"loader_peer.py: {path}: magic {magic:#x}, expected {0x800 + ndim:#x}")
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    return data.reshape(dims)


class FashionMnist(torch.utils.data.Dataset):
    """Normalized float32 images in memory; a torchvision transform per sample."""

    def __init__(self, root, transform):
        images = read_idx(os.path.join(root, "train-images-idx3-ubyte.gz"), 3)
        labels = read_idx(os.path.join(root, "train-labels-idx1-ubyte.gz"), 1)
        x = torch.from_numpy(images.copy()).unsqueeze(1).float()
        self.images = x.div_(255.0).sub_(MEAN).div_(STD)
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.transform = transform

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        x = self.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[i]


class Cnn(nn.Module):
    """models/cnn.h: Conv(no bias) + BatchNorm + ReLU + 2x2 max pool per block, fc1, head."""

    def __init__(self, channels=(16, 32), hidden=256, classes=10, size=28):
        super().__init__()
        cin = 1
        for i, c in enumerate(channels):
            setattr(self, f"conv{i + 1}", nn.Conv2d(cin, c, 3, padding=1, bias=False))
            setattr(self, f"bn{i + 1}", nn.BatchNorm2d(c))
            cin, size = c, size // 2
        self.blocks = len(channels)
        self.fc1 = nn.Linear(cin * size * size, hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        for i in range(1, self.blocks + 1):
            x = F.max_pool2d(F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x))), 2)
        return self.head(F.relu(self.fc1(torch.flatten(x, 1))))


def make_loader(ds, a, workers):
    kw = {}
    if workers > 0:
        kw["prefetch_factor"] = a.prefetch
    return torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=True,
                                       num_workers=workers, drop_last=True, **kw)


def time_loader(ds, a, workers):
    it = iter(make_loader(ds, a, workers))
    for _ in range(a.warmup):
        next(it)
    t0 = time.perf_counter()
    for _ in range(a.loader_batches):
        x, y = next(it)
    s = time.perf_counter() - t0
    del it
    return a.batch * a.loader_batches / s, s


def make_trainer(a):
    torch.manual_seed(0)
    model = Cnn(tuple(a.channels), a.hidden)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay)

    def step(x, y):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def time_train(ds, a, workers):
    step = make_trainer(a)
    it = iter(make_loader(ds, a, workers))
    for _ in range(a.warmup_steps):
        step(*next(it))
    t0 = time.perf_counter()
    for _ in range(a.train_iters):
        step(*next(it))
    s = time.perf_counter() - t0
    del it
    return a.batch * a.train_iters / s, s


def time_compute(ds, a):
    step = make_trainer(a)
    x, y = ds.images[:a.batch].clone(), ds.labels[:a.batch].clone()
    for _ in range(a.warmup_steps):
        step(x, y)
    t0 = time.perf_counter()
    for _ in range(a.train_iters):
        step(x, y)
    s = time.perf_counter() - t0
    return a.batch * a.train_iters / s, s


def minor_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def run_one(ds, a, part, workers):
    """Times one part ("compute", "loader" or "train") and returns its record; minor_faults
    is per timed batch (step), of this process only (not of the loader's workers)."""
    f0 = minor_faults()
    if part == "compute":
        sps, s = time_compute(ds, a)
    elif part == "loader":
        sps, s = time_loader(ds, a, workers)
    elif part == "train":
        sps, s = time_train(ds, a, workers)
    else:
        raise ValueError(f"unknown part {part!r} (compute, loader, train)")
    batches = a.loader_batches if part == "loader" else a.train_iters
    return {"impl": "torch", "part": part, "workers": workers, "samples_per_s": sps,
            "seconds": s, "minor_faults": (minor_faults() - f0) / batches}


def serve(ds, a, load_s):
    """--serve: one JSON line on stdout when ready, then for each request line on stdin
    ("compute", "loader N", "train N"; "quit" or end of input ends) one JSON result line
    ({"error": ...} when the request failed). dtrain_loader_bench drives this, so that
    each of its measurements and the peer's same measurement run seconds apart."""
    print(json.dumps({"ready": True, "dataset_load_s": load_s,
                      "torch_version": torch.__version__}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        try:
            rec = run_one(ds, a, words[0], int(words[1]) if len(words) > 1 else 0)
        except Exception as e:  # reported to the driver, which goes on without this figure
            rec = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(rec), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--serve", action="store_true", help="take requests on stdin (see serve())")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--part", default="all", choices=["all", "loader", "train"])
    ap.add_argument("--compute", type=int, default=1, help="also time the no-loader steps")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--prefetch", type=int, default=2)
    ap.add_argument("--padding", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=5, help="untimed loader batches")
    ap.add_argument("--loader-batches", type=int, default=100)
    ap.add_argument("--warmup-steps", type=int, default=5)
    ap.add_argument("--train-iters", type=int, default=30)
    ap.add_argument("--channels", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=0.0005)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    fill = (0.0 - MEAN) / STD  # a black pixel after normalization, as dtrain pads
    ops = []
    if a.padding > 0:
        ops.append(T.RandomCrop(28, padding=a.padding, fill=fill))
    ops.append(T.RandomHorizontalFlip())
    ds = FashionMnist(a.root, T.Compose(ops))
    load_s = time.perf_counter() - t0
    if a.serve:
        serve(ds, a, load_s)
        return

    todo = [("compute", 0)] if a.compute and a.part in ("all", "train") else []
    for n in a.workers:
        if a.part in ("all", "loader"):
            todo.append(("loader", n))
        if a.part in ("all", "train"):
            todo.append(("train", n))
    runs = []
    for part, n in todo:
        rec = run_one(ds, a, part, n)
        runs.append(rec)
        print(f"torch {part:8} workers {n}: {rec['samples_per_s']:9.1f} samples/s", flush=True)
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps({"bench": "loader", "impl": "torch", "batch": a.batch,
                                "padding": a.padding, "prefetch": a.prefetch,
                                "threads": a.threads, "dataset_load_s": load_s,
                                "torch_version": torch.__version__, "runs": runs}) + "\n")


if __name__ == "__main__":
    main()
