"""Writes the PyTorch-side test files for the interop tests, with Debian's python3-torch.

Usage: make_torch_files.py OUTDIR

Every tensor a file holds is also written raw to OUTDIR/ref/<file>/<name>.bin (its
contiguous little-endian bytes), with OUTDIR/ref/<file>/manifest.json giving each name's
dtype and shape, so the C++ side compares bit for bit against what torch itself held.
"""
import collections
import json
import os
import pickle
import sys

import numpy as np
import torch

OUT = sys.argv[1]


def ref(file, tensors):
    """Records `tensors` (name -> tensor) as the reference for `file`."""
    d = os.path.join(OUT, "ref", file)
    os.makedirs(d, exist_ok=True)
    manifest = {}
    for name, t in tensors.items():
        t = t.detach().contiguous()
        manifest[name] = {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape)}
        with open(os.path.join(d, name.replace("/", "__") + ".bin"), "wb") as f:
            if t.numel() == 0:
                pass
            elif t.dtype == torch.bfloat16:
                f.write(t.view(torch.int16).numpy().tobytes())
            else:
                f.write(t.numpy().tobytes())
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump(manifest, f)


def every_dtype():
    g = torch.Generator().manual_seed(7)
    sd = collections.OrderedDict()
    base = torch.randn(6, 5, generator=g)
    sd["float32"] = base
    sd["float64"] = torch.randn(3, 4, generator=g, dtype=torch.float64)
    sd["float16"] = torch.randn(7, generator=g).half()
    sd["bfloat16"] = torch.randn(2, 3, generator=g).bfloat16()
    sd["int8"] = torch.randint(-128, 127, (9,), generator=g, dtype=torch.int8)
    sd["int16"] = torch.randint(-30000, 30000, (4, 2), generator=g, dtype=torch.int16)
    sd["int32"] = torch.randint(-2**31, 2**31 - 1, (5,), generator=g, dtype=torch.int32)
    sd["int64"] = torch.tensor([-2**63, 2**63 - 1, 0, 42])
    sd["uint8"] = torch.randint(0, 255, (3, 3), generator=g, dtype=torch.uint8)
    sd["bool"] = torch.tensor([True, False, True, True])
    sd["scalar0d"] = torch.tensor(3.5)
    sd["empty"] = torch.zeros(0, 4)
    sd["nan_payload"] = torch.tensor([float("nan"), float("inf"), -0.0])
    # Views sharing one storage: a slice, a column (strided), a transpose, an offset view.
    sd["view_slice"] = base[1:4]
    sd["view_column"] = base[:, 2]
    sd["view_transpose"] = base.t()
    sd["view_offset"] = base.view(-1)[7:19].view(3, 4)
    sd["counter"] = torch.tensor(17)  # like num_batches_tracked
    return sd


def save_all(sd, prefix):
    ref(prefix, sd)
    for proto in (2, 3, 4, 5):
        torch.save(sd, os.path.join(OUT, f"{prefix}_p{proto}.pth"), pickle_protocol=proto)
        ref(f"{prefix}_p{proto}", sd)
    torch.save(sd, os.path.join(OUT, f"{prefix}_legacy.pth"), _use_new_zipfile_serialization=False)
    ref(f"{prefix}_legacy", sd)


def train_steps(model, opt, sched, steps=3):
    """A few steps of a squared-output loss on random inputs of 4 features."""
    for _ in range(steps):
        loss = model(torch.randn(5, 4)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def detectron2_checkpoint():
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10)
    train_steps(model, opt, sched)
    ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "iteration": 1234}
    torch.save(ckpt, os.path.join(OUT, "d2_model_final.pth"))
    ref("d2_model_final", model.state_dict())
    moms = {str(i): opt.state[p]["momentum_buffer"] for i, p in enumerate(model.parameters())}
    ref("d2_model_final_momentum", moms)
    # The same weights as DistributedDataParallel names them.
    ddp = collections.OrderedDict(("module." + k, v) for k, v in model.state_dict().items())
    torch.save(ddp, os.path.join(OUT, "ddp_prefixed.pth"))


def model_zoo_pkl():
    rng = np.random.RandomState(5)
    model = {"conv1.weight": rng.randn(4, 3, 3, 3).astype(np.float32),
             "fc.bias": rng.randn(10).astype(np.float64),
             "steps": np.arange(6, dtype=np.int64).reshape(2, 3),
             "fortran": np.asfortranarray(rng.randn(3, 4).astype(np.float32)),
             "flags": np.array([True, False])}
    with open(os.path.join(OUT, "zoo.pkl"), "wb") as f:
        pickle.dump({"model": model, "__author__": "Detectron", "matching_heuristics": True}, f,
                    protocol=2)
    ref("zoo", {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in model.items()})


class Mlp(torch.nn.Module):
    """dtrain's `mlp` model (MODEL.MLP.*), with the same parameter names and order."""

    def __init__(self, dims, classes):
        super().__init__()
        self.hidden = []
        for i in range(len(dims) - 1):
            setattr(self, f"fc{i + 1}", torch.nn.Linear(dims[i], dims[i + 1]))
            self.hidden.append(f"fc{i + 1}")
        self.head = torch.nn.Linear(dims[-1], classes)

    def forward(self, x):
        for name in self.hidden:
            x = torch.relu(getattr(self, name)(x))
        return self.head(x)


def mlp_checkpoints():
    """detectron2-style checkpoints of dtrain's mlp (4 -> 8 -> 6 -> 3) with SGD and AdamW."""
    for kind in ("sgd", "adamw", "sgd_groups"):
        torch.manual_seed(11)
        model = Mlp([4, 8, 6], 3)
        params = list(model.parameters())
        if kind == "adamw":
            opt = torch.optim.AdamW(params, lr=0.1, betas=(0.8, 0.99), eps=1e-7, weight_decay=0.01)
        elif kind == "sgd":
            opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
        else:
            opt = torch.optim.SGD([{"params": params[:2]}, {"params": params[2:]}], lr=0.1,
                                  momentum=0.9, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[100])
        train_steps(model, opt, sched)
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "iteration": 3},
                   os.path.join(OUT, f"mlp_{kind}.pth"))
        ref(f"mlp_{kind}", model.state_dict())
        state = {}
        for name, p in model.named_parameters():
            for field, value in opt.state[p].items():
                if torch.is_tensor(value) and value.dim() > 0:
                    state[f"{name}/{field}"] = value
        ref(f"mlp_{kind}_state", state)


class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + os.path.join(OUT, "PWNED"),))


def malicious():
    with open(os.path.join(OUT, "evil.pkl"), "wb") as f:
        pickle.dump({"model": {"w": Evil()}}, f, protocol=2)
    torch.save({"w": torch.ones(2), "x": Evil()}, os.path.join(OUT, "evil.pth"))
    with open(os.path.join(OUT, "eval.pkl"), "wb") as f:
        f.write(b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R.")


# Where a zip header keeps its fields: (signature, method, compressed size, size, name
# length, name) offsets of the central directory entry and of the local file header.
ZIP_HEADERS = {"central": (b"PK\x01\x02", 10, 20, 24, 28, 46),
               "local": (b"PK\x03\x04", 8, 18, 22, 26, 30)}


def patch_sizes(data, name, size, local=True, central=True):
    """Rewrites the declared sizes of zip entry `name` (compressed and uncompressed for a
    stored entry, uncompressed only for a deflated one) in its local and/or central header."""
    import struct
    raw = name.encode()
    data = bytearray(data)
    for kind, (sig, method_at, csize_at, size_at, nlen_at, name_at) in ZIP_HEADERS.items():
        if not {"central": central, "local": local}[kind]:
            continue
        at = data.find(sig)
        while at >= 0:
            n = struct.unpack_from("<H", data, at + nlen_at)[0]
            if data[at + name_at:at + name_at + n] == raw:
                if struct.unpack_from("<H", data, at + method_at)[0] == 0:
                    struct.pack_into("<I", data, at + csize_at, size)
                struct.pack_into("<I", data, at + size_at, size)
            at = data.find(sig, at + 4)
    return bytes(data)


def lying_zips():
    """Zips whose declared sizes lie, rebuilt from a torch.save file with Python's zipfile."""
    import io
    import zipfile
    src = zipfile.ZipFile(os.path.join(OUT, "one_entry.pth"))
    entries = {i.filename: src.read(i.filename) for i in src.infolist()}

    def build(deflate_pkl=False):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for name, data in entries.items():
                method = zipfile.ZIP_DEFLATED if deflate_pkl and name.endswith("data.pkl") \
                    else zipfile.ZIP_STORED
                z.writestr(zipfile.ZipInfo(name), data, compress_type=method)
        return buf.getvalue()

    record = [n for n in entries if n.endswith("/data/0")][0]
    pkl = [n for n in entries if n.endswith("data.pkl")][0]
    good = build()
    size = len(entries[record])
    with open(os.path.join(OUT, "zip_ok.pth"), "wb") as f:
        f.write(good)
    with open(os.path.join(OUT, "zip_central_lies.pth"), "wb") as f:
        f.write(patch_sizes(good, record, size - 4, local=False))
    with open(os.path.join(OUT, "zip_both_lie.pth"), "wb") as f:
        f.write(patch_sizes(good, record, size - 4))
    with open(os.path.join(OUT, "zip_bomb.pth"), "wb") as f:
        f.write(patch_sizes(build(deflate_pkl=True), pkl, 2**31))


def main():
    os.makedirs(OUT, exist_ok=True)
    save_all(every_dtype(), "dtypes")
    torch.save({"w": torch.arange(3.0)}, os.path.join(OUT, "one_entry.pth"))
    ref("one_entry", {"w": torch.arange(3.0)})
    detectron2_checkpoint()
    model_zoo_pkl()
    mlp_checkpoints()
    lying_zips()
    malicious()


if __name__ == "__main__":
    main()
