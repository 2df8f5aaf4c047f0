#!/usr/bin/python3
"""Writes torchvision ResNets, an input and their outputs for resnet_torchvision_test.cpp.

usage: make_torchvision_resnet.py OUT_DIR NAME [NAME ...]   (NAME: resnet18, resnet50, ...)

For each NAME, in OUT_DIR:
  NAME_state.pt    torch.save(model.state_dict()): the OrderedDict every torchvision .pth holds
  NAME_keys.txt    the state_dict keys in torchvision's order, one a line
  NAME_params.txt  the named_parameters() names in order (PyTorch optimizer state order)
  NAME_io.pt       {"input": [2, 3, 64, 64] float32, "output": the eval-mode logits}

The model (10 classes, seed fixed per NAME) is made less trivial than its init:
BatchNorm weights and biases are randomized, running statistics are accumulated over a
few random batches in train mode and then perturbed, and the logits come from eval mode.
Exit code 77 when torch or torchvision cannot be imported (the test then skips).
"""
import sys

try:
    import torch
    import torchvision
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"cannot import torch/torchvision: {e}", file=sys.stderr)
    sys.exit(77)

NUM_CLASSES = 10
SEEDS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101}


def randomize_batchnorm(model):
    """Random affine BatchNorm params; running stats from random batches, then perturbed."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.1)
            bn.momentum = None  # cumulative average over the batches below
        model.train()
        for _ in range(3):
            model(torch.randn(4, 3, 64, 64))
        for bn in bns:
            bn.running_mean.add_(0.05 * torch.randn_like(bn.running_mean))
            bn.running_var.mul_(torch.empty_like(bn.running_var).uniform_(0.8, 1.25))
    model.eval()


def write_lines(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def make(name, out_dir):
    torch.manual_seed(SEEDS[name])
    model = getattr(torchvision.models, name)(num_classes=NUM_CLASSES)
    randomize_batchnorm(model)
    state = model.state_dict()
    torch.save(state, f"{out_dir}/{name}_state.pt")
    write_lines(f"{out_dir}/{name}_keys.txt", list(state.keys()))
    write_lines(f"{out_dir}/{name}_params.txt", [n for n, _ in model.named_parameters()])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = model(x)
    torch.save({"input": x, "output": y}, f"{out_dir}/{name}_io.pt")


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    torch.set_num_threads(1)  # as the C++ test: same kernels, same summation order
    for name in sys.argv[2:]:
        make(name, sys.argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
