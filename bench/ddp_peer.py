"""Peer for dtrain_train_bench: the same model, batch, optimizer and thread count trained
with PyTorch (plain on 1 rank, DistributedDataParallel over gloo on more), timed the same
way (median step after warm-up; samples/s = global batch / median step).

    mpirun -np 2 --bind-to none /usr/bin/python3 bench/ddp_peer.py --model mlp \
        --store /tmp/ddp-store-$$ --json results.jsonl

Ranks come from Open MPI's environment (OMPI_COMM_WORLD_RANK/SIZE); mpirun only starts
the processes. The process group rendezvous is a FileStore (--store, a fresh path per
run) and gloo talks over the loopback interface only (GLOO_SOCKET_IFNAME=lo).
"""
import argparse
import datetime
import json
import os
import statistics
import sys
import time

os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm and a projection shortcut when the shape changes
    (the layout of dtrain's models/resnet.cpp and torchvision's BasicBlock)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18: 3x3 stem, no max-pool, stages of width w, 2w, 4w, 8w."""

    def __init__(self, width=64, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers, cin = [], width
        for i, stride in enumerate([1, 2, 2, 2]):
            cout = width * 2 ** i
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build(name):
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 2048), nn.ReLU(),
                             nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10)), [784]
    if name == "resnet18":
        return ResNet18(), [3, 32, 32]
    sys.exit(f"ddp_peer.py: unknown --model {name!r} (mlp, resnet18)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--batch", type=int, default=None, help="per rank (128 mlp, 32 resnet18)")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--store", default=f"/tmp/dtrain-ddp-store-{os.getppid()}")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    mlp = a.model == "mlp"
    batch = a.batch or (128 if mlp else 32)
    warmup = a.warmup if a.warmup is not None else (3 if mlp else 2)
    iters = a.iters or (40 if mlp else 6)

    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
    world = int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model, shape = build(a.model)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{a.store}", rank=rank,
                                world_size=world, timeout=datetime.timedelta(minutes=5))
        model = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=25)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    n = batch * world * 8
    inputs = torch.randn([n] + shape)
    labels = torch.randint(0, 10, (n,))

    def step(i):
        k = (i % 8) * batch * world + rank * batch
        loss = F.cross_entropy(model(inputs[k:k + batch]), labels[k:k + batch])
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()
        return loss.item()

    for i in range(warmup):
        step(i)
    if world > 1:
        dist.barrier()
    times = []
    cpu0 = time.process_time()
    t_total = time.perf_counter()
    for i in range(iters):
        t0 = time.perf_counter()
        step(warmup + i)
        times.append(time.perf_counter() - t0)
    if world > 1:
        dist.barrier()
    total = time.perf_counter() - t_total
    cpu_share = (time.process_time() - cpu0) / total / a.threads
    med = statistics.median(times)
    if world > 1:
        t = torch.tensor([med, -cpu_share], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        med, cpu_share = t[0].item(), -t[1].item()
    if rank == 0:
        sps = batch * world / med
        kind = "DDP gloo" if world > 1 else "plain"
        print(f"torch {kind} {a.model} | {world} rank(s) x {a.threads} thread(s), batch "
              f"{batch}/rank: step {med:.4f} s median, {sps:.1f} samples/s "
              f"({batch * world * iters / total:.1f} from the mean step); CPU share {cpu_share:.2f}"
              f"{': CONTENDED, figures are noisy' if cpu_share < 0.9 else ''}", flush=True)
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps({"bench": "train", "impl": "torch", "model": a.model,
                                    "world": world, "threads": a.threads,
                                    "batch_per_rank": batch, "iters": iters, "step_s": med,
                                    "samples_per_s": sps,
                                    "samples_per_s_mean": batch * world * iters / total,
                                    "cpu_share": cpu_share,
                                    "torch_version": torch.__version__}) + "\n")
    if world > 1:
        dist.barrier()
        # Exit without running destructors: in torch 1.13, tearing down DDP's reducer at
        # interpreter exit can deadlock (~ProcessGroupGloo joins a gloo thread that waits
        # for the GIL the destructor holds), which hung one rank in about one run of ten.
        # The FileStore is no longer used after the barrier; a stale one would break the
        # next rendezvous on the same path.
        if rank == 0 and os.path.exists(a.store):
            os.remove(a.store)
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
