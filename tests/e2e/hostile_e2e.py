#!/usr/bin/python3
"""End-to-end test: checkpoints crafted to read files outside their directory are refused
by every entry point of the real dtrain executable, on 1 and 2 ranks.

    hostile_e2e.py --dtrain build/bin/dtrain --mpiexec /usr/bin/mpiexec --source-dir . \
                   --work-dir /tmp/hostile [--full]

A tiny mlp is trained once on 1 rank and once on 2 ranks (1-shard and 2-shard
checkpoints); tests/checkpoint/craft_outside_reads.py (python3-h5py) crafts each attack
on both model_final checkpoints. For every attack and both checkpoints:
  ckpt verify          exits 1 and names the file and object
  ckpt inspect         exits 1 naming it, or prints what it prints for the real checkpoint
                       (it reads only checkpoint.h5's index): never outside data
  ckpt export --to x   refused, no x written; vds_remap (a virtual dataset of
                       checkpoint.h5 remapped, which export does not read) exports the
                       real checkpoint's bytes
  MODEL.WEIGHTS        --eval-only on 1 rank exits non-zero with the message; vds_remap
                       evaluates exactly like the real checkpoint
  --resume             with the crafted checkpoint as OUTPUT_DIR's last_checkpoint: the
                       run falls back to the older good checkpoint, saying why, or fails
                       with the message; it never trains on outside data (vds_remap
                       resumes from it normally, its shards being intact)
On 2 ranks only the load paths (MODEL.WEIGHTS, --resume) run, on the 2-shard checkpoint,
for a sample of attacks (ATTACKS_2_RANKS); --full, or DTRAIN_HOSTILE_FULL=1 in the
environment, runs every attack on 2 ranks too (about twice as long).

Standard library only (python3-h5py in the craft script; exit 77, a CTest skip, when it
is missing). Works in --work-dir/hostile (wiped first; kept on failure).
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402
from e2e import check, run  # noqa: E402

TINY = """\
MODEL:
  NAME: mlp
  MLP:
    INPUT_DIM: 16
    HIDDEN_DIMS: [32]
    NUM_CLASSES: 4
DATASETS:
  TRAIN: [synthetic_classification]
  TEST: [synthetic_classification]
  SYNTHETIC:
    INPUT_SHAPE: [16]
    NUM_CLASSES: 4
    NUM_TRAIN: 64
    NUM_TEST: 32
SOLVER:
  IMS_PER_BATCH: 8
  MAX_ITER: 4
  CHECKPOINT_PERIOD: 2
  BASE_LR: 0.05
LOG:
  PERIOD: 1
"""

# attack -> what the refusal says (the object; the file is checked separately).
EXPECTED = {
    "external_raw": "stores its data in the external file",
    "external_link": "is an external link; a checkpoint reads only data stored in its own files",
    "virtual": "is a virtual dataset",
    "soft_link": "'/model' is a soft link",
    "index_link": "'/dtrain/index' is an external link",
    "shard_symlink": "is a symbolic link, not a regular file of checkpoint",
    "vds_remap": "but the index names shard-00000-of-0000",
}
ATTACKS_2_RANKS = ("external_raw", "index_link", "vds_remap")
OUTSIDE_VALUE = "1234.5"  # what outside.h5 and outside.bin hold (craft_outside_reads.py)


def cmd(ranks, config, out, *extra, flags=()):
    c = [e2e.ARGS.dtrain, "train", "--config-file", config] + list(flags) + [
        "OUTPUT_DIR", out] + [str(x) for x in extra]
    return c if ranks == 1 else [e2e.ARGS.mpiexec, "-np", str(ranks), "--bind-to", "none"] + c


def ckpt(*args, expect_rc=None):
    rc, out, err = run([e2e.ARGS.dtrain, "ckpt"] + list(args), expect_rc=expect_rc)
    return rc, out + err


def eval_line(config, weights, ranks, out, expect_rc=0):
    rc, o, err = run(cmd(ranks, config, out, "MODEL.WEIGHTS", weights, flags=["--eval-only"]),
                     expect_rc=expect_rc)
    return rc, o + err


def build(config, ranks):
    """Trains the tiny model on `ranks` ranks; returns its OUTPUT_DIR."""
    out = os.path.join(e2e.work_dir(), "np%d" % ranks)
    run(cmd(ranks, config, out))
    check(os.path.isdir(os.path.join(out, "model_final")), "no model_final in " + out)
    check(os.path.isdir(os.path.join(out, "model_0000001")), "no model_0000001 in " + out)
    return out


def craft(real, into):
    script = os.path.join(e2e.ARGS.source_dir, "tests", "checkpoint", "craft_outside_reads.py")
    proc = subprocess.run(["/usr/bin/python3", script, real, into], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
    if proc.returncode == 77:
        print("SKIPPED: python3-h5py is missing")
        sys.exit(77)
    check(proc.returncode == 0, "craft_outside_reads.py failed:\n" + proc.stdout)
    return proc.stdout.split()[-1]  # model/<name>


def check_refusal(what, text, attack, files):
    check(EXPECTED[attack] in text, "%s: %r not in:\n%s" % (what, EXPECTED[attack], text))
    check(any(f in text for f in files), "%s: names none of %s:\n%s" % (what, files, text))
    check(OUTSIDE_VALUE not in text, "%s: prints outside data:\n%s" % (what, text))


def cli_checks(crafted, attack, real, reference_inspect, reference_export, shard):
    """verify, inspect and export of one crafted checkpoint (single process)."""
    files = [shard, "checkpoint.h5"]
    rc, text = ckpt("verify", crafted)
    check(rc == 1, "verify %s: exit %d, expected 1" % (attack, rc))
    check_refusal("verify " + attack, text, attack, files)

    rc, text = ckpt("inspect", crafted)
    if rc == 0:
        check(text.replace(crafted, real) == reference_inspect,
              "inspect %s differs from the real checkpoint's:\n%s" % (attack, text))
    else:
        check(rc == 1, "inspect %s: exit %d" % (attack, rc))
        check_refusal("inspect " + attack, text, attack, files)

    pth = os.path.join(os.path.dirname(crafted), attack + ".pth")
    rc, text = ckpt("export", crafted, "--to", pth)
    if attack == "vds_remap":
        check(rc == 0, "export vds_remap: exit %d:\n%s" % (rc, text))
        # The same tensors as the real checkpoint's export (the zip's bytes may differ).
        back = [pth + ".ckpt", reference_export + ".ckpt"]
        for src, dst in zip([pth, reference_export], back):
            if not os.path.isdir(dst):
                ckpt("import", src, "--to", dst, expect_rc=0)
        rc, text = ckpt("diff", back[0], back[1])
        check(rc == 0, "export vds_remap: not the real checkpoint's tensors:\n" + text)
        return
    check(rc == 1, "export %s: exit %d, expected 1:\n%s" % (attack, rc, text))
    check_refusal("export " + attack, text, attack, files)
    check(not os.path.exists(pth), "export %s wrote %s" % (attack, pth))


def check_weights(config, crafted, attack, ranks, reference_eval, shard):
    out = os.path.join(e2e.work_dir(), "eval-%s-%s-np%d" % (
        os.path.basename(os.path.dirname(crafted)), attack, ranks))
    if attack == "vds_remap":
        _, text = eval_line(config, crafted, ranks, out)
        check(e2e.final_eval_line(text) == reference_eval,
              "MODEL.WEIGHTS vds_remap on %d rank(s): %s, the real checkpoint: %s" %
              (ranks, e2e.final_eval_line(text), reference_eval))
        return
    rc, text = eval_line(config, crafted, ranks, out, expect_rc=None)
    check(rc != 0, "MODEL.WEIGHTS %s on %d rank(s) exited 0" % (attack, ranks))
    check_refusal("MODEL.WEIGHTS %s np%d" % (attack, ranks), text, attack,
                  [shard, "checkpoint.h5"])
    check("Evaluation on" not in text, "MODEL.WEIGHTS %s evaluated" % attack)


def check_resume(config, real_out, crafted, attack, ranks):
    """OUTPUT_DIR = a copy of the real run whose model_final is the crafted one."""
    out = os.path.join(e2e.work_dir(), "resume-%s-%s-np%d" % (
        os.path.basename(os.path.dirname(crafted)), attack, ranks))
    shutil.copytree(real_out, out, symlinks=True)
    shutil.rmtree(os.path.join(out, "model_final"))
    shutil.copytree(crafted, os.path.join(out, "model_final"), symlinks=True)
    rc, o, err = run(cmd(ranks, config, out, "SOLVER.MAX_ITER", 6, flags=["--resume"]),
                     expect_rc=None)
    text = o + err
    check(OUTSIDE_VALUE not in text, "--resume %s printed outside data" % attack)
    start = re.findall(r"Starting training from iteration (\d+)", text)
    if attack == "vds_remap":
        check(rc == 0 and start == ["4"], "--resume vds_remap: exit %d, started at %s:\n%s" %
              (rc, start, text[-3000:]))
        return "resumed from model_final"
    check(EXPECTED[attack] in text, "--resume %s: %r not in the log:\n%s" %
          (attack, EXPECTED[attack], text[-4000:]))
    if rc != 0:
        check(not start, "--resume %s trained before failing" % attack)
        return "failed (exit %d)" % rc
    # Fell back: to model_0000003 (the newest good one), training iterations 4 and 5 on it.
    check(start == ["4"], "--resume %s: started at %s" % (attack, start))
    check("model_0000003" in text, "--resume %s: the fallback is not named" % attack)
    losses = e2e.losses_by_iteration(e2e.read_metrics(out))  # each iteration once
    check(sorted(losses) == list(range(6)), "--resume %s: iterations %s" %
          (attack, sorted(losses)))
    check(all(v < 100 for v in losses.values()), "--resume %s: losses %s" % (attack, losses))
    return "fell back to model_0000003"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtrain", required=True)
    parser.add_argument("--mpiexec", default="mpirun")
    parser.add_argument("--source-dir", required=True)
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--full", action="store_true", help="every attack on 2 ranks too")
    args = parser.parse_args()
    args.case, args.compare = "hostile", None
    for attr in ("dtrain", "source_dir", "work_dir"):
        setattr(args, attr, os.path.abspath(getattr(args, attr)))
    full = args.full or os.environ.get("DTRAIN_HOSTILE_FULL", "") not in ("", "0")
    e2e.ARGS = args
    work = e2e.work_dir()
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    start = time.time()
    config = os.path.join(work, "tiny.yaml")
    with open(config, "w") as f:
        f.write(TINY)
    try:
        for shards in (1, 2):
            real_out = build(config, shards)
            real = os.path.join(real_out, "model_final")
            shard = "shard-00000-of-%05d.h5" % shards
            crafted_root = os.path.join(work, "crafted%d" % shards)
            target = craft(real, crafted_root)
            _, reference_inspect = ckpt("inspect", real, expect_rc=0)
            reference_export = os.path.join(work, "real%d.pth" % shards)
            ckpt("export", real, "--to", reference_export, expect_rc=0)
            _, text = eval_line(config, real, 1, os.path.join(work, "eval-real%d" % shards))
            reference_eval = e2e.final_eval_line(text)
            for attack in EXPECTED:
                crafted = os.path.join(crafted_root, attack)
                cli_checks(crafted, attack, real, reference_inspect, reference_export, shard)
                loads = [1] + ([2] if shards == 2 and (full or attack in ATTACKS_2_RANKS) else [])
                for ranks in loads:
                    check_weights(config, crafted, attack, ranks, reference_eval, shard)
                    how = check_resume(config, real_out, crafted, attack, ranks)
                    print("%d shard(s), %s on %s, %d rank(s): %s; --resume %s" % (
                        shards, attack, target, ranks,
                        "verify reports it, loads get the real values" if attack == "vds_remap"
                        else "refused by verify, export and MODEL.WEIGHTS", how))
    except e2e.CheckFailed as e:
        print("FAILED hostile: %s (logs in %s)" % (e, work))
        return 1
    print("PASSED hostile (%s matrix) in %.1f s" % ("full" if full else "default",
                                                     time.time() - start))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
