#!/usr/bin/python3
"""End-to-end tests of dtrain train's command line and process set-up (one case per test).

    cli_e2e.py --dtrain build/bin/dtrain --mpiexec /usr/bin/mpiexec --work-dir /tmp/cli CASE

Cases:
  num_gpus        detectron2's flags: `dtrain train --num-gpus 2` runs 2 ranks through
                  dtrain launch's path; --num-machines 2 exits 2 with what to run
                  instead; --dist-url is ignored with a note
  log_once        a 2-rank run prints each shared info/warning line once (rank 0) and
                  nothing at info/warning level from rank 1; an error on rank 1 still shows
  threads_resume  the intra-op thread count is stored per rank in checkpoints: resuming
                  with another OMP_NUM_THREADS warns, naming both counts; with neither
                  SYSTEM.NUM_THREADS nor OMP_NUM_THREADS set the checkpoint's count is used
  resume_changed_config
                  --resume with SOLVER.BASE_LR changed: resumes (no fallback to an older
                  checkpoint), one warning lists the key and that the checkpoint's lr
                  wins, and the run continues exactly as an uninterrupted one; with
                  another model shape it exits 2 naming MODEL.MLP.HIDDEN_DIMS
  fashion_mnist_mlp
                  configs/mlp_fashion_mnist.yaml on 2 ranks (--num-gpus 2) on Debian's
                  real Fashion-MNIST reaches the data set's published MLP figure (0.8833)
  fashion_mnist_cnn
                  configs/cnn_fashion_mnist.yaml for one epoch with random flips and
                  crops and a data loader worker reaches 0.85; DTRAIN_FASHION_FULL=1
                  runs the whole config (10 epochs, minutes) and checks the published
                  two-conv-layer figure (0.916)
  nan_loss        a NaN loss on rank 1 of 2 (fault point train.loss) stops both ranks at
                  the same iteration: each logs detectron2's FloatingPointError message
                  naming rank 1 and exits 1, and nothing calls MPI_Abort
  hostile_inputs  --config-file /dev/zero or a FIFO, a _BASE_ naming a non-config file,
                  and out-of-range numbers exit 2 at once with a message (no hang, no
                  abort, no quoted content); ckpt diff --atol nan exits 2

Only the standard library is used. Each case works in --work-dir/CASE (wiped first).
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import CheckFailed, check  # noqa: E402  (shared with the other e2e scripts)

RUN_TIMEOUT_S = 120
ARGS = None

TINY = """\
MODEL:
  NAME: mlp
  MLP:
    INPUT_DIM: 16
    HIDDEN_DIMS: [32]
    NUM_CLASSES: 4
DATASETS:
  TRAIN: [synthetic_classification]
  SYNTHETIC:
    INPUT_SHAPE: [16]
    NUM_CLASSES: 4
    NUM_TRAIN: 64
SOLVER:
  IMS_PER_BATCH: 8
  MAX_ITER: 12
  CHECKPOINT_PERIOD: 4
  BASE_LR: 0.05
LOG:
  PERIOD: 4
"""


def work_dir():
    return os.path.join(ARGS.work_dir, ARGS.case)


def tiny_config():
    path = os.path.join(work_dir(), "tiny.yaml")
    with open(path, "w") as f:
        f.write(TINY)
    return path


def run(cmd, env_extra=None, env_remove=(), expect_rc=0, timeout=RUN_TIMEOUT_S):
    """Runs cmd; returns (rc, stderr+stdout). Checks rc unless expect_rc is None."""
    env = dict(os.environ)
    env.update(env_extra or {})
    for name in env_remove:
        env.pop(name, None)
    start = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        sys.stdout.write(out[-4000:] + err[-4000:])
        raise CheckFailed("timed out after %d s: %s" % (timeout, " ".join(cmd)))
    print("$ %s%s  -> rc %d in %.1f s" % (
        "".join("%s=%s " % kv for kv in (env_extra or {}).items()), " ".join(cmd),
        proc.returncode, time.time() - start))
    if expect_rc is not None and proc.returncode != expect_rc:
        sys.stdout.write(out[-6000:] + err[-6000:])
        raise CheckFailed("expected exit status %d, got %d" % (expect_rc, proc.returncode))
    return proc.returncode, err + out


def train(config, out, *extra, flags=()):
    return [ARGS.dtrain, "train", "--config-file", config] + list(flags) + [
        "OUTPUT_DIR", out] + [str(x) for x in extra]


def lines(text, rank, level):
    """Log lines of `rank` at `level` (info, warning, error)."""
    return re.findall(r"^\[dtrain r%d/\d+ [0-9:]+ %s\] .*$" % (rank, level), text, re.M)


# ---- cases -------------------------------------------------------------------------------

def case_num_gpus():
    cfg = tiny_config()
    out = os.path.join(work_dir(), "out")
    _, log = run(train(cfg, out, flags=["--num-gpus", "2"]),
                 env_extra={"DTRAIN_MPIRUN": ARGS.mpiexec})
    check("[dtrain launch] attempt 1/1:" in log, "not started through dtrain launch:\n" + log)
    check(re.search(r"\[dtrain launch\] attempt 1/1: .* -np 2 .* train --config-file \S+tiny.yaml"
                    r" OUTPUT_DIR", log) and "--num-gpus" not in log.split("attempt 1/1:")[1],
          "the ranks' command is not `train` without --num-gpus:\n" + log)
    check("dtrain world size 2 (backend mpi, 2 ranks on this node)" in log,
          "the job did not run 2 ranks:\n" + log)
    check(os.path.exists(os.path.join(out, "model_final", "shard-00001-of-00002.h5")),
          "model_final has no second shard")
    # Several machines: refused with advice, before anything starts.
    _, log = run(train(cfg, out, flags=["--num-gpus", "2", "--num-machines", "2"]),
                 expect_rc=2)
    check("--num-machines 2" in log and "dtrain launch --nnodes M" in log and "srun" in log,
          "no advice for --num-machines: " + log)
    _, log = run(train(cfg, out, flags=["--machine-rank", "1"]), expect_rc=2)
    check("--machine-rank must be in [0, --num-machines)" in log, log)
    # --dist-url: ignored with a note, the run goes on (one process).
    out1 = os.path.join(work_dir(), "out1")
    _, log = run(train(cfg, out1, "SOLVER.MAX_ITER", 2, flags=["--dist-url",
                                                                 "tcp://127.0.0.1:50152"]))
    check("--dist-url tcp://127.0.0.1:50152 is ignored" in log, "no note: " + log)
    check("unknown config key" not in log, log)


def case_log_once():
    cfg = tiny_config()
    out = os.path.join(work_dir(), "out")
    mpi = [ARGS.mpiexec, "-np", "2", "--bind-to", "none"]
    _, log = run(mpi + train(cfg, out, "SOLVER.STEPS", "(100,)"))  # STEPS > MAX_ITER warns
    for text in ("Overall training speed", "Starting training from iteration 0",
                 "Intra-op threads per rank", "SOLVER.STEPS contains 100 > SOLVER.MAX_ITER",
                 "Total training time"):
        n = log.count(text)
        check(n == 1, "%r appears %d times (once expected):\n%s" % (text, n, log))
    r1 = lines(log, 1, "info") + lines(log, 1, "warning")
    check(not r1, "rank 1 printed shared lines:\n" + "\n".join(r1))
    check(lines(log, 0, "info"), "rank 0 printed nothing")
    # Errors come from the rank that has them.
    out2 = os.path.join(work_dir(), "out2")
    rc, log = run(mpi + train(cfg, out2), expect_rc=None,
                  env_extra={"DTRAIN_FAULT": "train.after_step", "DTRAIN_FAULT_RANK": "1",
                             "DTRAIN_FAULT_MODE": "throw", "DTRAIN_FAULT_AFTER": "2"})
    check(rc != 0, "the faulting run succeeded")
    errors = [l for l in lines(log, 1, "error") if "injected fault at train.after_step" in l]
    check(errors, "rank 1's error is missing:\n" + log)


def case_threads_resume():
    cfg = tiny_config()
    fault = {"DTRAIN_FAULT": "train.after_step", "DTRAIN_FAULT_MODE": "throw",
             "DTRAIN_FAULT_AFTER": "6"}  # fails in iteration 5: model_0000003 is the last

    # Written with OMP_NUM_THREADS=1, resumed with 2: a warning naming both.
    out = os.path.join(work_dir(), "env")
    rc, log = run(train(cfg, out), env_extra=dict(fault, OMP_NUM_THREADS="1"), expect_rc=1)
    check("Intra-op threads per rank: 1 (OMP_NUM_THREADS=1)" in log, log)
    _, log = run(train(cfg, out, flags=["--resume"]), env_extra={"OMP_NUM_THREADS": "2"})
    check("Loaded checkpoint %s/model_0000003" % out in log, "did not resume:\n" + log)
    check(re.search(r"written with 1 intra-op threads per rank, this run uses 2 "
                    r"\(OMP_NUM_THREADS=2\).*no longer bitwise equal", log),
          "no warning naming both counts:\n" + log)

    # Written with SYSTEM.NUM_THREADS 3, resumed with nothing set: the checkpoint's 3.
    out = os.path.join(work_dir(), "cfg")
    run(train(cfg, out, "SYSTEM.NUM_THREADS", 3), env_extra=fault, expect_rc=1)
    _, log = run(train(cfg, out, flags=["--resume"]), env_remove=["OMP_NUM_THREADS"])
    check(re.search(r"Intra-op threads per rank: 3 \(from the checkpoint", log),
          "the checkpoint's count was not used:\n" + log)
    check("no longer bitwise equal" not in log, log)
    # And the same resume with the count chosen equal to the checkpoint's: silent.
    out2 = os.path.join(work_dir(), "cfg2")
    run(train(cfg, out2, "SYSTEM.NUM_THREADS", 3), env_extra=fault, expect_rc=1)
    _, log = run(train(cfg, out2, "SYSTEM.NUM_THREADS", 3, flags=["--resume"]))
    check("from the checkpoint" not in log and "bitwise" not in log, log)


def metrics(out):
    """iteration -> record of OUTPUT_DIR/metrics.json."""
    records = {}
    with open(os.path.join(out, "metrics.json")) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                records[r["iteration"]] = r
    return records


def case_resume_changed_config():
    cfg = tiny_config()
    env = {"OMP_NUM_THREADS": "1"}
    fault = dict(env, DTRAIN_FAULT="train.after_step", DTRAIN_FAULT_MODE="throw",
                 DTRAIN_FAULT_AFTER="6")  # fails in iteration 5: model_0000003 is the last
    ref = os.path.join(work_dir(), "reference")
    run(train(cfg, ref), env_extra=env)

    out = os.path.join(work_dir(), "lr")
    run(train(cfg, out), env_extra=fault, expect_rc=1)
    _, log = run(train(cfg, out, "SOLVER.BASE_LR", 0.5, flags=["--resume"]), env_extra=env)
    check("Loaded checkpoint %s/model_0000003" % out in log, "did not resume:\n" + log)
    check("trying an older checkpoint" not in log, log)
    check(re.search(r"SOLVER\.BASE_LR: 0\.05 \(checkpoint\) vs 0\.5 \(this run\): the "
                    r"checkpoint's value wins", log), "no warning naming the key:\n" + log)
    check(len(re.findall(r"config keys? that differ", log)) == 1, "not one warning:\n" + log)
    a, b = metrics(ref), metrics(out)
    for it in sorted(a):
        for key in ("lr", "total_loss"):
            if key in a[it]:
                check(b.get(it, {}).get(key) == a[it][key],
                      "iteration %d: %s %r, uninterrupted %r" % (it, key, b.get(it, {}).get(key),
                                                                   a[it][key]))

    out = os.path.join(work_dir(), "shape")
    run(train(cfg, out), env_extra=fault, expect_rc=1)
    _, log = run(train(cfg, out, "MODEL.MLP.HIDDEN_DIMS", "[16]", flags=["--resume"]),
                 env_extra=env, expect_rc=2)
    check("does not match the model (a resume needs every tensor to match)" in log, log)
    check(re.search(r"MODEL\.MLP\.HIDDEN_DIMS: \[32\] \(checkpoint\) vs \[16\] \(this run\)",
                    log), "the key was not named:\n" + log)
    check("trying an older checkpoint" not in log, log)


def case_fashion_mnist_mlp():
    config = os.path.join(ARGS.source_dir, "configs", "mlp_fashion_mnist.yaml")
    out = os.path.join(work_dir(), "out")
    _, log = run([ARGS.dtrain, "train", "--num-gpus", "2", "--config-file", config,
                  "OUTPUT_DIR", out], env_extra={"OMP_NUM_THREADS": "1"})
    accuracies = [float(a) for a in
                  re.findall(r"Evaluation on fashion_mnist_test: accuracy=([0-9.]+)", log)]
    check(len(accuracies) == 2, "expected 2 evaluations:\n" + log)
    print("test accuracy after each evaluation: %s" % accuracies)
    check(accuracies[-1] >= 0.8833, "final test accuracy %.4f < 0.8833" % accuracies[-1])
    final = metrics(out)[max(metrics(out))]
    check(abs(final["eval/fashion_mnist_test/accuracy"] - accuracies[-1]) < 1e-4,
          "metrics.json disagrees with the log: %r" % final)


# The full 10-epoch run of configs/cnn_fashion_mnist.yaml takes minutes; CTest runs one
# epoch with augmentation and a data loader worker unless DTRAIN_FASHION_FULL=1.
CNN_SHORT = ["SOLVER.MAX_ITER", "469", "SOLVER.STEPS", "(350, 420)", "SOLVER.WARMUP_ITERS", "50",
             "TEST.EVAL_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD", "100000"]


def case_fashion_mnist_cnn():
    config = os.path.join(ARGS.source_dir, "configs", "cnn_fashion_mnist.yaml")
    out = os.path.join(work_dir(), "out")
    full = os.environ.get("DTRAIN_FASHION_FULL") == "1"
    extra = [] if full else CNN_SHORT + ["INPUT.RANDOM_FLIP", "horizontal",
                                         "INPUT.CROP.ENABLED", "true", "INPUT.CROP.PADDING", "2",
                                         "DATALOADER.NUM_WORKERS", "1"]
    goal = 0.916 if full else 0.85
    _, log = run([ARGS.dtrain, "train", "--num-gpus", "2", "--config-file", config,
                  "OUTPUT_DIR", out] + extra, env_extra={"OMP_NUM_THREADS": "1"},
                 timeout=1800 if full else 300)
    accuracies = [float(a) for a in
                  re.findall(r"Evaluation on fashion_mnist_test: accuracy=([0-9.]+)", log)]
    check(accuracies, "no evaluation:\n" + log)
    print("test accuracy after each evaluation: %s (%s run)" % (accuracies,
                                                              "full" if full else "1-epoch"))
    check(accuracies[-1] >= goal, "final test accuracy %.4f < %.3f" % (accuracies[-1], goal))


def case_nan_loss():
    cfg = tiny_config()
    out = os.path.join(work_dir(), "out")
    mpi = [ARGS.mpiexec, "-np", "2", "--bind-to", "none"]
    _, log = run(mpi + train(cfg, out), expect_rc=1,
                 env_extra={"DTRAIN_FAULT": "train.loss", "DTRAIN_FAULT_RANK": "1",
                            "DTRAIN_FAULT_AFTER": "6"})  # rank 1's loss in iteration 5
    message = "dtrain train failed: Loss became infinite or NaN at iteration=5!"
    for rank in (0, 1):
        errors = [l for l in lines(log, rank, "error") if l.endswith(message)]
        check(len(errors) == 1, "rank %d did not stop with the message:\n%s" % (rank, log))
    check(log.count("loss_dict = {'total_loss': nan} on rank 1 (of 2 ranks)") == 2,
          "both ranks must name rank 1:\n" + log)
    check("MPI_ABORT" not in log.upper(), "the job was aborted:\n" + log)
    check(os.path.exists(os.path.join(out, "model_0000003")), "the checkpoint before is gone")
    check(not os.path.exists(os.path.join(out, "model_final")), "model_final was written")


def case_hostile_inputs():
    out = os.path.join(work_dir(), "out")
    # Character device: used to abort (uncaught bad_alloc).
    _, log = run(train("/dev/zero", out), expect_rc=2, timeout=30)
    check("'/dev/zero' is not a regular file (it is a character device)" in log, log)
    # A FIFO with no writer: used to hang for ever.
    fifo = os.path.join(work_dir(), "cfg.fifo")
    os.mkfifo(fifo)
    _, log = run(train(fifo, out), expect_rc=2, timeout=30)
    check("is not a regular file (it is a FIFO)" in log, log)
    # A _BASE_ naming a file that is not a config: named, never quoted.
    secret = os.path.join(work_dir(), "shadow")
    with open(secret, "w") as f:
        f.write("root:$6$s3cr3tHash:19000:0:99999:7:::\n")
    top = os.path.join(work_dir(), "top.yaml")
    with open(top, "w") as f:
        f.write("_BASE_: %s\n" % secret)
    _, log = run(train(top, out), expect_rc=2, timeout=30)
    check(secret in log and "s3cr3t" not in log, "the file was quoted or not named: " + log)
    # Out-of-range numbers.
    for key, value in (("DIST.BUCKET_CAP_MB", "nan"), ("DIST.BUCKET_CAP_MB", "1e30"),
                       ("CHECKPOINT.MAX_TO_KEEP", "-1")):
        _, log = run(train(tiny_config(), out, key, value), expect_rc=2, timeout=30)
        check("config key '%s'" % key in log and "outside its allowed range" in log, log)
    _, log = run([ARGS.dtrain, "ckpt", "diff", out, out, "--atol", "nan"], expect_rc=2)
    check("not a finite number >= 0" in log, log)
    _, log = run([ARGS.dtrain, "train", "--help-config"])
    check("allowed: (0, 1048576]" in log, "--help-config shows no ranges")


CASES = {
    "nan_loss": case_nan_loss,
    "num_gpus": case_num_gpus,
    "log_once": case_log_once,
    "threads_resume": case_threads_resume,
    "resume_changed_config": case_resume_changed_config,
    "fashion_mnist_mlp": case_fashion_mnist_mlp,
    "fashion_mnist_cnn": case_fashion_mnist_cnn,
    "hostile_inputs": case_hostile_inputs,
}


def main():
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtrain", required=True)
    parser.add_argument("--mpiexec", default="mpirun")
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--source-dir", default=os.path.join(os.path.dirname(
        os.path.abspath(__file__)), "..", ".."))
    parser.add_argument("case", choices=sorted(CASES))
    ARGS = parser.parse_args()
    ARGS.dtrain = os.path.abspath(ARGS.dtrain)
    shutil.rmtree(work_dir(), ignore_errors=True)
    os.makedirs(work_dir())
    start = time.time()
    try:
        CASES[ARGS.case]()
    except CheckFailed as e:
        print("FAILED %s: %s (files in %s)" % (ARGS.case, e, work_dir()))
        return 1
    print("PASSED %s in %.1f s" % (ARGS.case, time.time() - start))
    shutil.rmtree(work_dir(), ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
