#!/usr/bin/python3
"""Writes a dtrain HDF5 dataset file (layouts in docs/DATASETS.md).

Layout A, classification:   images (N, ...) uint8 or float32, labels (N,) int64/int32
Layout B, language model:   tokens (L,) integer stream

The data is a small learnable problem (class templates plus noise; a sparse Markov
chain over the vocabulary), deterministic given --seed. Run with Debian's interpreter:

  /usr/bin/python3 tools/make_h5_dataset.py --kind images --num 1024 --shape 3 32 32 \
      --classes 10 --out cifar_like.h5
  /usr/bin/python3 tools/make_h5_dataset.py --kind tokens --length 100000 --vocab 256 \
      --out tokens.h5

Needs h5py and numpy (apt install python3-h5py python3-numpy).
"""
import argparse
import sys

import h5py
import numpy as np


def write_images(f, args, rng):
    shape = tuple(args.shape)
    templates = rng.normal(size=(args.classes,) + shape)
    labels = rng.integers(0, args.classes, size=args.num)
    x = templates[labels] + args.noise * rng.normal(size=(args.num,) + shape)
    if args.dtype == "uint8":
        # Map roughly N(0, 1) to bytes around mid-grey.
        images = np.clip(np.round(128 + 40 * x), 0, 255).astype(np.uint8)
    else:
        images = x.astype(np.float32)
    f.create_dataset("images", data=images)
    f.create_dataset("labels", data=labels.astype(args.label_dtype))
    f.attrs["num_classes"] = np.int64(args.classes)


def write_tokens(f, args, rng):
    vocab = args.vocab
    # Each token's likely successor follows a random cycle; with probability 0.2 the next
    # token is one of two other fixed successors.
    cycle = rng.permutation(vocab)
    succ = np.empty((vocab, 3), dtype=np.int64)
    succ[cycle, 0] = np.roll(cycle, -1)
    succ[:, 1:] = rng.integers(0, vocab, size=(vocab, 2))
    choice = rng.choice(3, size=args.length, p=[0.8, 0.1, 0.1])
    tokens = np.empty(args.length, dtype=np.int64)
    tokens[0] = rng.integers(0, vocab)
    for i in range(1, args.length):
        tokens[i] = succ[tokens[i - 1], choice[i]]
    f.create_dataset("tokens", data=tokens.astype(args.token_dtype))
    f.attrs["vocab_size"] = np.int64(vocab)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kind", choices=["images", "tokens"], required=True)
    p.add_argument("--out", required=True, help="output file (.h5 or .hdf5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--description", default="", help="stored as the 'description' attribute")
    g = p.add_argument_group("images (layout A)")
    g.add_argument("--num", type=int, default=1024, help="number of samples N")
    g.add_argument("--shape", type=int, nargs="+", default=[3, 32, 32], help="sample shape")
    g.add_argument("--classes", type=int, default=10)
    g.add_argument("--noise", type=float, default=0.5)
    g.add_argument("--dtype", choices=["uint8", "float32"], default="uint8")
    g.add_argument("--label-dtype", choices=["int64", "int32"], default="int64")
    g = p.add_argument_group("tokens (layout B)")
    g.add_argument("--length", type=int, default=65537, help="stream length L")
    g.add_argument("--vocab", type=int, default=256)
    g.add_argument("--token-dtype", choices=["uint16", "int32", "int64"], default="uint16")
    args = p.parse_args(argv)
    if args.kind == "tokens" and args.token_dtype == "uint16" and args.vocab > 65536:
        p.error("--vocab > 65536 does not fit --token-dtype uint16")

    rng = np.random.default_rng(args.seed)
    with h5py.File(args.out, "w") as f:
        if args.kind == "images":
            write_images(f, args, rng)
        else:
            write_tokens(f, args, rng)
        if args.description:
            f.attrs["description"] = args.description
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
