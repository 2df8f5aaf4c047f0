#!/usr/bin/python3
"""Writes a dtrain HDF5 dataset file (layouts in docs/DATASETS.md).

Layout A, classification:   images (N, ...) uint8 or float32, labels (N,) int64/int32
Layout B, language model:   tokens (L,) integer stream

Kinds:
  images         a learnable synthetic problem (class templates plus noise), deterministic
                 given --seed; with --block-rows it is generated and written in blocks, so
                 a file larger than memory can be made (for the lazy reader's tests)
  tokens         a sparse Markov chain over the vocabulary
  fashion-mnist  Zalando's IDX files (Debian's dataset-fashion-mnist) converted to layout
                 A, chunked for per-sample reads, with the mean/std attributes that make
                 dtrain's batches equal to its built-in fashion_mnist_train/test datasets
  image-folder   torchvision's ImageFolder layout (one subdirectory per class, sorted;
                 classes numbered in that order) resized to --size (needs python3-pil)

Run with Debian's interpreter:

  /usr/bin/python3 tools/make_h5_dataset.py --kind images --num 1024 --shape 3 32 32 \
      --classes 10 --out cifar_like.h5
  /usr/bin/python3 tools/make_h5_dataset.py --kind tokens --length 100000 --vocab 256 \
      --out tokens.h5
  /usr/bin/python3 tools/make_h5_dataset.py --kind fashion-mnist --split train \
      --out fmnist_train.h5
  /usr/bin/python3 tools/make_h5_dataset.py --kind image-folder --root photos/train \
      --size 64 64 --out photos_train.h5
  /usr/bin/python3 tools/make_h5_dataset.py --kind images --num 200000 --shape 3072 \
      --block-rows 8192 --out /tmp/big.h5             # 614 MB, written 25 MB at a time

Needs h5py and numpy (apt install python3-h5py python3-numpy).
"""
import argparse
import gzip
import os
import struct
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


def chunk_rows(row_bytes, target=64 << 10):
    """Rows per HDF5 chunk so that a chunk is about `target` bytes (at least one row)."""
    return max(1, target // max(1, row_bytes))


def write_images_in_blocks(f, args, rng):
    """Like write_images, but generated and written --block-rows samples at a time, with
    cheaper noise (uniform bytes), so the file may be larger than memory."""
    shape = tuple(args.shape)
    row = int(np.prod(shape))
    item = 1 if args.dtype == "uint8" else 4
    rows = args.chunk_rows or chunk_rows(row * item)
    images = f.create_dataset("images", shape=(args.num,) + shape, dtype=args.dtype,
                              chunks=(min(rows, args.num),) + shape)
    labels = f.create_dataset("labels", shape=(args.num,), dtype=args.label_dtype)
    if args.dtype == "uint8":
        templates = rng.integers(0, 192, size=(args.classes,) + shape, dtype=np.uint8)
    else:
        templates = rng.normal(size=(args.classes,) + shape).astype(np.float32)
    for start in range(0, args.num, args.block_rows):
        n = min(args.block_rows, args.num - start)
        y = rng.integers(0, args.classes, size=n)
        if args.dtype == "uint8":
            x = templates[y] + rng.integers(0, 64, size=(n,) + shape, dtype=np.uint8)
        else:
            x = templates[y] + np.float32(args.noise) * rng.standard_normal(
                size=(n,) + shape, dtype=np.float32)
        images[start:start + n] = x
        labels[start:start + n] = y.astype(args.label_dtype)
    f.attrs["num_classes"] = np.int64(args.classes)


def read_idx(path, rank):
    """An IDX file (gzip) of uint8 with `rank` axes as a numpy array, every header field
    checked against the bytes that follow."""
    with gzip.open(path, "rb") as g:
        data = g.read()
    if len(data) < 4 + 4 * rank:
        raise SystemExit(f"{path}: truncated IDX header")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08 or ndim != rank:
        raise SystemExit(f"{path}: not a uint8 IDX file of rank {rank} "
                         f"(header {data[:4].hex()})")
    dims = struct.unpack(">" + "I" * rank, data[4:4 + 4 * rank])
    body = data[4 + 4 * rank:]
    if len(body) != int(np.prod(dims)):
        raise SystemExit(f"{path}: header {dims} declares {int(np.prod(dims))} bytes, "
                         f"the file holds {len(body)}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                   "Shirt", "Sneaker", "Bag", "Ankle boot"]
# The training set's mean and standard deviation of x / 255, as dtrain's built-in
# fashion_mnist_train/test use them (runtime/data/fashion_mnist.h).
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530


def write_fashion_mnist(f, args):
    prefix = os.path.join(args.root, "train" if args.split == "train" else "t10k")
    images = read_idx(prefix + "-images-idx3-ubyte.gz", 3)
    labels = read_idx(prefix + "-labels-idx1-ubyte.gz", 1)
    if images.shape[1:] != (28, 28) or images.shape[0] != labels.shape[0]:
        raise SystemExit(f"{prefix}-*: {images.shape} images and {labels.shape[0]} labels "
                         "are not Fashion-MNIST")
    if labels.max() >= 10:
        raise SystemExit(f"{prefix}-labels-idx1-ubyte.gz: label {labels.max()} >= 10")
    images = images.reshape(-1, 1, 28, 28)  # [N, 1, 28, 28], as the built-in dataset
    f.create_dataset("images", data=images, chunks=(chunk_rows(28 * 28),) + images.shape[1:])
    f.create_dataset("labels", data=labels.astype(np.int64))
    f.attrs["num_classes"] = np.int64(10)
    f.attrs["mean"] = FASHION_MEAN if args.mean is None else args.mean
    f.attrs["std"] = FASHION_STD if args.std is None else args.std
    f.attrs["class_names"] = FASHION_CLASSES
    if not args.description:
        args.description = f"Fashion-MNIST {args.split}"


IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def image_folder_samples(root):
    """(classes, [(path, class index)]) of torchvision's ImageFolder: class = each
    subdirectory of root, sorted; files with an image extension below it, sorted."""
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not classes:
        raise SystemExit(f"{root}: no class subdirectories (expected root/<class>/<image>)")
    samples = []
    for index, name in enumerate(classes):
        for dirpath, dirnames, files in sorted(os.walk(os.path.join(root, name),
                                                       followlinks=True)):
            dirnames.sort()
            for fname in sorted(files):
                if fname.lower().endswith(IMG_EXTENSIONS):
                    samples.append((os.path.join(dirpath, fname), index))
    if not samples:
        raise SystemExit(f"{root}: no images with an extension in {IMG_EXTENSIONS}")
    return classes, samples


def write_image_folder(f, args):
    try:
        from PIL import Image
    except ImportError:
        raise SystemExit("--kind image-folder needs PIL: apt install python3-pil")
    classes, samples = image_folder_samples(args.root)
    height, width = (args.size * 2)[:2] if len(args.size) == 1 else args.size[:2]
    channels = 3 if args.mode == "RGB" else 1
    shape = (channels, height, width)
    row = channels * height * width
    images = f.create_dataset("images", shape=(len(samples),) + shape, dtype=np.uint8,
                              chunks=(min(chunk_rows(row), len(samples)),) + shape)
    total, total_sq = 0.0, 0.0
    for i, (path, _) in enumerate(samples):
        with Image.open(path) as img:
            img = img.convert(args.mode).resize((width, height), Image.BILINEAR)
            x = np.asarray(img, dtype=np.uint8).reshape(height, width, channels)
        x = np.ascontiguousarray(x.transpose(2, 0, 1))  # HWC -> CHW, as torch wants
        images[i] = x
        v = x.astype(np.float64) / 255.0
        total += v.sum()
        total_sq += (v * v).sum()
    count = float(len(samples) * row)
    mean = total / count
    std = max(np.sqrt(max(total_sq / count - mean * mean, 0.0)), 1e-6)
    f.create_dataset("labels", data=np.array([c for _, c in samples], dtype=np.int64))
    f.attrs["num_classes"] = np.int64(len(classes))
    f.attrs["class_names"] = classes
    f.attrs["mean"] = mean if args.mean is None else args.mean
    f.attrs["std"] = std if args.std is None else args.std
    if not args.description:
        args.description = f"{os.path.abspath(args.root)} ({len(samples)} images)"


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
    p.add_argument("--kind", choices=["images", "tokens", "fashion-mnist", "image-folder"],
                   required=True)
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
    g.add_argument("--block-rows", type=int, default=0,
                   help="generate and write this many samples at a time (0: all at once); "
                        "the samples differ from an all-at-once file's")
    g.add_argument("--chunk-rows", type=int, default=0,
                   help="with --block-rows: samples per HDF5 chunk (0: about 64 KiB)")
    g = p.add_argument_group("fashion-mnist and image-folder")
    g.add_argument("--root", default="/usr/share/datasets/fashion-mnist",
                   help="IDX directory (fashion-mnist) or class-folder root (image-folder)")
    g.add_argument("--split", choices=["train", "test"], default="train",
                   help="fashion-mnist: train (60,000) or test (10,000, t10k-*)")
    g.add_argument("--size", type=int, nargs="+", default=[32],
                   help="image-folder: H [W] every image is resized to (bilinear)")
    g.add_argument("--mode", choices=["RGB", "L"], default="RGB",
                   help="image-folder: 3 channels (RGB) or 1 (L, grey)")
    g.add_argument("--mean", type=float, default=None,
                   help="the 'mean' attribute (default: Fashion-MNIST's 0.2860; the images' "
                        "own for image-folder); use the training set's for a test split")
    g.add_argument("--std", type=float, default=None, help="the 'std' attribute (likewise)")
    g = p.add_argument_group("tokens (layout B)")
    g.add_argument("--length", type=int, default=65537, help="stream length L")
    g.add_argument("--vocab", type=int, default=256)
    g.add_argument("--token-dtype", choices=["uint16", "int32", "int64"], default="uint16")
    args = p.parse_args(argv)
    if args.kind == "tokens" and args.token_dtype == "uint16" and args.vocab > 65536:
        p.error("--vocab > 65536 does not fit --token-dtype uint16")

    if args.block_rows < 0 or args.chunk_rows < 0 or args.num < 1:
        p.error("--num must be >= 1, --block-rows and --chunk-rows >= 0")

    rng = np.random.default_rng(args.seed)
    with h5py.File(args.out, "w") as f:
        if args.kind == "images" and args.block_rows > 0:
            write_images_in_blocks(f, args, rng)
        elif args.kind == "images":
            write_images(f, args, rng)
        elif args.kind == "fashion-mnist":
            write_fashion_mnist(f, args)
        elif args.kind == "image-folder":
            write_image_folder(f, args)
        else:
            write_tokens(f, args, rng)
        if args.description:
            f.attrs["description"] = args.description
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
