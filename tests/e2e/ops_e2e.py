#!/usr/bin/python3
"""End-to-end operations tests of the dtrain executable: preemption, restarts, crash
recovery and elastic resume, as a cluster user meets them (see docs/OPERATIONS.md).

  ops_e2e.py --dtrain build/bin/dtrain --mpirun mpirun --work DIR CASE

Cases (one CTest test each; all but "reference" and "elastic" compare their final model
bitwise with the one "reference" trains uninterrupted, a CTest fixture):
  reference       2 ranks, uninterrupted
  preempt         SIGTERM to one rank -> exit 75, agreed checkpoint, --resume, bitwise equal
  launch_restart  dtrain launch --max-restarts 2 over a run that crashes once -> completes
  kill9           SIGKILL of one rank -> bounded non-zero exit; --resume from last commit
  second_signal   a second SIGTERM / the preemption deadline exit at once with 75 and
                  leave the committed checkpoints intact
  elastic         2 -> 4 -> 1 ranks: global batch kept, sampler continues exactly (each
                  with data loader workers reading ahead: 2, 1 and 4; the reference none)
  launch_signal   SIGTERM to `dtrain launch` -> ranks save, launcher exits 75, no restart

Exit status: 0 pass, 1 fail, 77 skipped (no h5py/numpy for /usr/bin/python3).
Python standard library plus h5py and numpy only.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

try:
    import h5py
    import numpy as np
except ImportError as e:  # pragma: no cover
    print(f"SKIP: cannot import h5py/numpy: {e}")
    sys.exit(77)

EXIT_PREEMPTED = 75
RUN_TIMEOUT_S = 90  # any single dtrain run; a hang fails the test instead of CTest's timeout
MAX_ITER = 160
PERIOD = 20

# Tiny MLP on synthetic data: a 2-rank run of MAX_ITER iterations takes ~2-3 s.
TINY_CONFIG = f"""\
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
  MAX_ITER: {MAX_ITER}
  CHECKPOINT_PERIOD: {PERIOD}
  BASE_LR: 0.05
LOG:
  PERIOD: 1000
SYSTEM:
  NUM_THREADS: 1
"""

# Elastic resume: a linear model over one-hot inputs, plain SGD (no momentum, no weight
# decay, no warmup), so column i of the weight changes in an iteration exactly when
# sample i is in that iteration's global batch: the consumed samples are observable in
# consecutive checkpoints. 40 samples in global batches of 8: 5 iterations per epoch.
ELASTIC_N, ELASTIC_BATCH, ELASTIC_ITERS = 40, 8, 15
ELASTIC_CONFIG = f"""\
MODEL:
  NAME: mlp
  MLP:
    INPUT_DIM: {ELASTIC_N}
    HIDDEN_DIMS: []
    NUM_CLASSES: 4
DATASETS:
  TRAIN: [{{dataset}}]
SOLVER:
  IMS_PER_BATCH: {ELASTIC_BATCH}
  MAX_ITER: {ELASTIC_ITERS}
  CHECKPOINT_PERIOD: 1
  BASE_LR: 0.5
  MOMENTUM: 0.0
  WEIGHT_DECAY: 0.0
  WARMUP_ITERS: 0
LOG:
  PERIOD: 1000
SYSTEM:
  NUM_THREADS: 1
"""


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


class Ctx:
    def __init__(self, args):
        self.dtrain = os.path.abspath(args.dtrain)
        self.mpirun = args.mpirun
        self.root = os.path.abspath(args.work)
        self.env = dict(os.environ)
        if os.geteuid() == 0:
            self.env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
            self.env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        self.env.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
        self.env.setdefault("OMP_NUM_THREADS", "1")
        for k in [k for k in self.env if k.startswith("DTRAIN_FAULT")]:
            del self.env[k]
        self.config = os.path.join(self.root, "tiny.yaml")
        os.makedirs(self.root, exist_ok=True)
        write_atomic(self.config, TINY_CONFIG)

    def case_dir(self, name):
        d = os.path.join(self.root, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        return d

    def train_cmd(self, np_, out, *extra, config=None, resume=False):
        cmd = [self.mpirun, "-np", str(np_), "--bind-to", "none", self.dtrain, "train",
               "--config-file", config or self.config]
        if resume:
            cmd.append("--resume")
        return cmd + ["OUTPUT_DIR", out] + [str(e) for e in extra]

    def start(self, cmd, log, env=None):
        print("$ " + " ".join(cmd) + f"   > {log}", flush=True)
        f = open(log, "ab")
        # Own session: a hang is cleaned up by killing the group, never anything else.
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env or self.env,
                                start_new_session=True)

    def run(self, cmd, log, env=None, timeout=RUN_TIMEOUT_S):
        return finish(self.start(cmd, log, env), log, timeout)


def write_atomic(path, text):
    tmp = path + f".tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def finish(proc, log, timeout=RUN_TIMEOUT_S):
    """Waits for proc; on timeout kills its process group and fails."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise Failure(f"timed out after {timeout} s (hang?); log {log}:\n{tail(log)}")


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def tail(log, n=40):
    with open(log, errors="replace") as f:
        return "".join(f.readlines()[-n:])


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


def wait_until(pred, what, proc=None, timeout=60):
    t0 = time.monotonic()
    while not pred():
        check(proc is None or proc.poll() is None,
              f"the job exited (status {proc.poll() if proc else ''}) while waiting for {what}")
        check(time.monotonic() - t0 < timeout, f"timed out waiting for {what}")
        time.sleep(0.005)


def children(pid):
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(p) for p in f.read().split()]
    except FileNotFoundError:
        pass
    return out


def rank_of(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            for var in f.read().split(b"\0"):
                if var.startswith(b"OMPI_COMM_WORLD_RANK="):
                    return int(var.split(b"=", 1)[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return None


def rank_pids(mpirun_pid, world, timeout=30):
    """{rank: pid} of the dtrain processes mpirun started (its direct children)."""
    found = {}

    def scan():
        for p in children(mpirun_pid):
            r = rank_of(p)
            if r is not None:
                found[r] = p
        return len(found) == world

    wait_until(scan, f"{world} rank processes under mpirun {mpirun_pid}", timeout=timeout)
    return found


def wait_gone(pids, timeout=30):
    """Waits until the rank processes are gone (mpirun may return before they are)."""
    t0 = time.monotonic()
    for p in pids:
        while os.path.exists(f"/proc/{p}") and read_stat(p) != "Z":
            if time.monotonic() - t0 > timeout:
                os.kill(p, signal.SIGKILL)
            time.sleep(0.01)


def read_stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return "Z"


def last_checkpoint(out):
    p = os.path.join(out, "last_checkpoint")
    return read(p).strip() if os.path.exists(p) else None


def committed(out):
    """{name: sha256 of checkpoint.h5} of the committed checkpoints (visible directories)."""
    res = {}
    for n in sorted(os.listdir(out)):
        idx = os.path.join(out, n, "checkpoint.h5")
        if not n.startswith(".") and os.path.isdir(os.path.join(out, n)):
            check(os.path.exists(idx), f"{out}/{n} looks committed but has no checkpoint.h5")
            with open(idx, "rb") as f:
                res[n] = hashlib.sha256(f.read()).hexdigest()
    return res


def load_state(ckpt_dir):
    """Every dataset of checkpoint.h5 except /dtrain/* (config, index): name -> array."""
    out = {}
    with h5py.File(os.path.join(ckpt_dir, "checkpoint.h5"), "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and not name.startswith("dtrain/"):
                out[name] = obj[()]
        f.visititems(visit)
    return out


def ckpt_info(ckpt_dir):
    with h5py.File(os.path.join(ckpt_dir, "checkpoint.h5"), "r") as f:
        index = json.loads(f["dtrain/index"][()])
        return {"iteration": int(f.attrs["iteration"]), "world_size": int(f.attrs["world_size"]),
                "index_iteration": int(index["iteration"]),
                "epoch": int(f["sampler/epoch"][()]), "position": int(f["sampler/position"][()])}


def assert_bitwise_equal(got_dir, want_dir):
    got, want = load_state(got_dir), load_state(want_dir)
    check(sorted(got) == sorted(want),
          f"{got_dir} and {want_dir} hold different entries: {sorted(set(got) ^ set(want))}")
    model = 0
    for k in sorted(want):
        a, b = np.asarray(got[k]), np.asarray(want[k])
        same = a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()
        check(same, f"'{k}' differs between {got_dir} and {want_dir}")
        model += k.startswith("model/")
    check(model >= 4, f"{want_dir}: expected the model's tensors, found {model}")
    print(f"  {got_dir} == {want_dir} bitwise ({len(want)} entries)")


def preempted_iterations(log):
    """{rank: iteration} from the "Preempted after iteration N" lines every rank logs."""
    res = {}
    for m in re.finditer(r"\[dtrain r(\d+)/\d+ [^\]]*\] Preempted after iteration (\d+)",
                         read(log)):
        res[int(m.group(1))] = int(m.group(2))
    return res


def reference_final(ctx):
    d = os.path.join(ctx.root, "reference", "out", "model_final")
    check(os.path.exists(os.path.join(d, "checkpoint.h5")),
          f"{d} is missing: the ops_e2e_reference fixture must run first")
    return d


def resume_and_compare(ctx, out, log, expect_from, extra=(), np_=2):
    """--resume must load `expect_from`, finish, and match the reference bitwise."""
    rc = ctx.run(ctx.train_cmd(np_, out, *extra, resume=True), log)
    check(rc == 0, f"--resume run exited {rc}; log {log}:\n{tail(log)}")
    text = read(log)
    check(re.search(rf"Loaded checkpoint {re.escape(out)}/{expect_from} \(iteration", text),
          f"--resume did not load {expect_from}; log {log}:\n{tail(log)}")
    assert_bitwise_equal(os.path.join(out, "model_final"), reference_final(ctx))


# ---- cases -----------------------------------------------------------------------------

def case_reference(ctx):
    d = ctx.case_dir("reference")
    out, log = os.path.join(d, "out"), os.path.join(d, "train.log")
    rc = ctx.run(ctx.train_cmd(2, out), log)
    check(rc == 0, f"reference run exited {rc}:\n{tail(log)}")
    info = ckpt_info(os.path.join(out, "model_final"))
    check(info["iteration"] == MAX_ITER - 1 and info["world_size"] == 2, f"model_final: {info}")


def case_preempt(ctx):
    """SIGTERM to rank 1 only: the ranks agree, save model_<iter>, exit 75; --resume.

    No periodic checkpoints here (the preemption hook's own save is what is tested;
    case_launch_signal covers a stop right after a periodic save). Neither setting
    changes the arithmetic, so the final model still equals the reference's."""
    d = ctx.case_dir("preempt")
    out, log = os.path.join(d, "out"), os.path.join(d, "train.log")
    extra = ["SOLVER.CHECKPOINT_PERIOD", 100000, "LOG.PERIOD", 10]
    # Rank 0 stops itself (SIGSTOP) after its 30th step, so that training cannot run to
    # the end while rank 1's watcher handles the signal: the stop point is mid-training by
    # construction, however fast the steps are and however loaded the machine is.
    freeze = dict(ctx.env, DTRAIN_FAULT="train.after_step", DTRAIN_FAULT_AFTER="30",
                  DTRAIN_FAULT_RANK="0", DTRAIN_FAULT_MODE="stop")
    job = ctx.start(ctx.train_cmd(2, out, *extra), log, freeze)
    try:
        ranks = rank_pids(job.pid, 2)
        wait_until(lambda: read_stat(ranks[0]) == "T", "rank 0 stopped after iteration 29", job)
        os.kill(ranks[1], signal.SIGTERM)
        time.sleep(0.3)
        os.kill(ranks[0], signal.SIGCONT)
        rc = finish(job, log)
        wait_gone(ranks.values())
    finally:
        if job.poll() is None:
            kill_group(job)
    check(rc == EXIT_PREEMPTED, f"expected exit status 75, got {rc}:\n{tail(log)}")
    stops = preempted_iterations(log)
    check(sorted(stops) == [0, 1], f"expected both ranks to log where they stopped: {stops}")
    check(stops[0] == stops[1], f"the ranks stopped after different iterations: {stops}")
    it = stops[0]
    check(29 <= it < MAX_ITER - 1, f"stopped after iteration {it}: not mid-training")
    name = f"model_{it:07d}"
    check(list(committed(out)) == [name], f"expected only {name}: {list(committed(out))}")
    check(last_checkpoint(out) == name, f"last_checkpoint names {last_checkpoint(out)}, not {name}")
    info = ckpt_info(os.path.join(out, name))
    check(info["iteration"] == it and info["index_iteration"] == it and info["world_size"] == 2,
          f"{name}: {info}")
    check(not os.path.exists(os.path.join(out, "model_final")), "model_final exists already")
    check(re.search(r"\[dtrain r1/2 [^\]]*\] Received signal 15", read(log)),
          "rank 1 did not log the signal")
    print(f"  preempted after iteration {it} on both ranks; {name} committed")
    resume_and_compare(ctx, out, os.path.join(d, "resume.log"), name, extra)


def case_launch_restart(ctx):
    """dtrain launch --max-restarts 2 over a run whose rank 1 is killed once at step 50."""
    d = ctx.case_dir("launch_restart")
    out, log = os.path.join(d, "out"), os.path.join(d, "launch.log")
    once = os.path.join(d, "fault.once")
    env = dict(ctx.env, DTRAIN_FAULT="train.after_step", DTRAIN_FAULT_AFTER="50",
               DTRAIN_FAULT_RANK="1", DTRAIN_FAULT_ONCE_FILE=once)
    cmd = [ctx.dtrain, "launch", "--nproc-per-node", "2", "--max-restarts", "2",
           "--restart-backoff", "0.1", "--mpirun", ctx.mpirun, "--",
           "train", "--config-file", ctx.config, "OUTPUT_DIR", out]
    rc = ctx.run(cmd, log, env=env)
    text = read(log)
    check(rc == 0, f"dtrain launch exited {rc}:\n{tail(log)}")
    check(os.path.exists(once), "the fault never fired")
    check("injected crash at train.after_step (rank 1)" in text, "no injected crash in the log")
    check("[dtrain launch] attempt 1/3:" in text and "[dtrain launch] attempt 2/3:" in text,
          "the launcher did not restart once")
    check("[dtrain launch] attempt 3/3:" not in text, "the launcher restarted twice")
    check("restarting with --resume" in text, "no restart message")
    second = text[text.index("[dtrain launch] attempt 2/3:"):].splitlines()[0]
    check(re.search(r" train --resume --config-file ", second),
          f"the restart does not pass --resume: {second}")
    check(re.search(rf"Loaded checkpoint {re.escape(out)}/model_0000039 \(iteration 39",
                    text), "the restart did not resume from model_0000039")
    check("[dtrain launch] finished" in text, "no final message")
    assert_bitwise_equal(os.path.join(out, "model_final"), reference_final(ctx))


def case_kill9(ctx):
    """SIGKILL of rank 1: mpirun exits non-zero (no hang); --resume uses the last commit."""
    d = ctx.case_dir("kill9")
    out, log = os.path.join(d, "out"), os.path.join(d, "train.log")
    job = ctx.start(ctx.train_cmd(2, out), log)
    try:
        ranks = rank_pids(job.pid, 2)
        wait_until(lambda: last_checkpoint(out), "the first periodic checkpoint", job)
        os.kill(ranks[1], signal.SIGKILL)
        rc = finish(job, log, timeout=60)  # bounded: a hang fails here
        wait_gone(ranks.values())
    finally:
        if job.poll() is None:
            kill_group(job)
    check(rc != 0, f"expected a non-zero exit after SIGKILL of a rank, got {rc}")
    check(not os.path.exists(os.path.join(out, "model_final")),
          "training finished before the kill")
    last = last_checkpoint(out)
    check(last is not None and last in committed(out), f"last_checkpoint {last} not committed")
    print(f"  mpirun exited {rc}; last committed checkpoint {last}")
    resume_and_compare(ctx, out, os.path.join(d, "resume.log"), last)


def stop_and_signal(ctx, d, extra, delays, expect):
    """Rank 0 frozen (SIGSTOP) so no save can complete; then a SIGTERM to rank 1 after
    each of `delays` (seconds, cumulative)."""
    out, log = os.path.join(d, "out"), os.path.join(d, "train.log")
    job = ctx.start(ctx.train_cmd(2, out, *extra), log)
    try:
        ranks = rank_pids(job.pid, 2)
        wait_until(lambda: last_checkpoint(out), "the first periodic checkpoint", job)
        os.kill(ranks[0], signal.SIGSTOP)
        time.sleep(0.05)
        before, before_last = committed(out), last_checkpoint(out)
        for delay in delays:
            time.sleep(delay)
            os.kill(ranks[1], signal.SIGTERM)
        rc = finish(job, log, timeout=60)
        for p in ranks.values():  # mpirun may leave the stopped rank for its SIGKILL
            if os.path.exists(f"/proc/{p}"):
                os.kill(p, signal.SIGCONT)
        wait_gone(ranks.values())
    finally:
        if job.poll() is None:
            kill_group(job)
    text = read(log)
    check(rc == EXIT_PREEMPTED, f"expected exit status 75, got {rc}:\n{tail(log)}")
    check(expect in text, f"expected '{expect}' in the log:\n{tail(log)}")
    check(not re.search(r"Preempted after iteration", text), "a preemption save completed")
    after = committed(out)
    for name, digest in before.items():
        check(after.get(name) == digest, f"committed checkpoint {name} changed or vanished")
    last = last_checkpoint(out)
    check(last in after, f"last_checkpoint names {last}, which is not committed")
    info = ckpt_info(os.path.join(out, last))
    check(last == f"model_{info['iteration']:07d}", f"{last} holds iteration {info['iteration']}")
    # A commit rank 0 was in the middle of when frozen may complete; never an older one.
    check(info["iteration"] >= ckpt_info(os.path.join(out, before_last))["iteration"],
          f"last_checkpoint moved back from {before_last} to {last}")
    print(f"  exit 75 with '{expect}'; {len(before)} committed checkpoints intact, last {last}")
    return out, last


def case_second_signal(ctx):
    # A repeat within 1 s is one event delivered twice (SLURM: task and srun) and is
    # ignored; a SIGTERM 2 s after the first is a second signal: exit at once.
    d = ctx.case_dir("second_signal")
    out, last = stop_and_signal(ctx, d, [], [0, 0.1, 2.0], "second signal 15 received; "
                                "exiting now with status 75")
    check(re.search(r"\[dtrain r1/2 [^\]]*\] Ignoring signal 15 repeated within 1 s",
                    read(os.path.join(d, "train.log"))), "the quick repeat was not ignored")
    resume_and_compare(ctx, out, os.path.join(d, "resume.log"), last)
    d = ctx.case_dir("deadline")
    stop_and_signal(ctx, d, ["CHECKPOINT.PREEMPT_DEADLINE_S", "0.3"], [0],
                    "preemption deadline of 0.3 s passed")


def consumed(prev, cur):
    """Samples whose one-hot weight column changed between two checkpoints."""
    return set(np.nonzero((cur != prev).any(axis=0))[0].tolist())


def case_elastic(ctx):
    """2 ranks (killed in iteration 6) -> 4 ranks (killed in iteration 10) -> 1 rank."""
    d = ctx.case_dir("elastic")
    data = os.path.join(d, "onehot.h5")
    with h5py.File(data, "w") as f:
        f["images"] = np.eye(ELASTIC_N, dtype=np.float32)
        f["labels"] = (np.arange(ELASTIC_N) % 4).astype(np.int64)
    cfg = os.path.join(d, "elastic.yaml")
    write_atomic(cfg, ELASTIC_CONFIG.format(dataset=data))
    ref, out = os.path.join(d, "ref"), os.path.join(d, "out")

    # Initial weights (lr 0 leaves them untouched) and the uninterrupted 1-rank run.
    init = os.path.join(d, "init")
    rc = ctx.run(ctx.train_cmd(1, init, "SOLVER.MAX_ITER", 1, "SOLVER.BASE_LR", 0.0,
                               config=cfg), os.path.join(d, "init.log"))
    check(rc == 0, f"init run exited {rc}")
    rc = ctx.run(ctx.train_cmd(1, ref, config=cfg), os.path.join(d, "ref.log"))
    check(rc == 0, f"reference run exited {rc}")

    def crash_env(after):
        return dict(ctx.env, DTRAIN_FAULT="train.after_step", DTRAIN_FAULT_AFTER=str(after),
                    DTRAIN_FAULT_RANK="1")
    # 2 ranks: killed after its 7th step (iteration 6), before that step is saved.
    # Each run's data loader reads ahead on worker threads; what a checkpoint records is
    # the last batch a step consumed, so the sampler checks below also cover read-ahead.
    rc = ctx.run(ctx.train_cmd(2, out, "DATALOADER.NUM_WORKERS", 2, config=cfg),
                 os.path.join(d, "np2.log"), crash_env(7))
    check(rc != 0, "the 2-rank run was not killed")
    check(last_checkpoint(out) == "model_0000005", f"2 ranks: last {last_checkpoint(out)}")
    # 4 ranks from iteration 6: killed in its 5th step (iteration 10).
    log4 = os.path.join(d, "np4.log")
    rc = ctx.run(ctx.train_cmd(4, out, "DATALOADER.NUM_WORKERS", 1, config=cfg, resume=True),
                 log4, crash_env(5))
    check(rc != 0, "the 4-rank run was not killed")
    check(re.search(r"Loaded checkpoint \S+/model_0000005 \(iteration 5, saved by 2 ranks\)",
                    read(log4)), "4 ranks did not resume from model_0000005")
    check(last_checkpoint(out) == "model_0000009", f"4 ranks: last {last_checkpoint(out)}")
    # 1 rank from iteration 10 to the end.
    log1 = os.path.join(d, "np1.log")
    rc = ctx.run(ctx.train_cmd(1, out, "DATALOADER.NUM_WORKERS", 4, config=cfg, resume=True),
                 log1)
    check(rc == 0, f"the 1-rank run exited {rc}:\n{tail(log1)}")
    check(re.search(r"Loaded checkpoint \S+/model_0000009 \(iteration 9, saved by 4 ranks\)",
                    read(log1)), "1 rank did not resume from model_0000009")

    def weights(run, k):
        name = "model_final" if k == "final" else f"model_{k:07d}"
        with h5py.File(os.path.join(run, name, "checkpoint.h5"), "r") as f:
            return f["model/head.weight"][()]

    w_init = weights(init, "final")
    prev_ref, prev_out = w_init, w_init
    per_iter = ELASTIC_N // ELASTIC_BATCH
    seen = {}
    for k in range(ELASTIC_ITERS):
        name = f"model_{k:07d}"
        got, want = ckpt_info(os.path.join(out, name)), ckpt_info(os.path.join(ref, name))
        world = 2 if k <= 5 else 4 if k <= 9 else 1
        check(got["world_size"] == world, f"{name} written by {got['world_size']} ranks")
        check((got["epoch"], got["position"]) == (want["epoch"], want["position"]),
              f"{name}: sampler at {got} but the uninterrupted run is at {want}")
        check((got["epoch"], got["position"]) ==
              (k // per_iter, (k % per_iter + 1) * ELASTIC_BATCH), f"{name}: sampler {got}")
        w_out, w_ref = weights(out, k), weights(ref, k)
        s_out, s_ref = consumed(prev_out, w_out), consumed(prev_ref, w_ref)
        check(s_out == s_ref, f"iteration {k}: consumed {sorted(s_out)}, the uninterrupted run "
              f"{sorted(s_ref)}")
        check(len(s_out) == ELASTIC_BATCH, f"iteration {k} consumed {len(s_out)} samples")
        for i in s_out:
            seen.setdefault(k // per_iter, []).append(i)
        prev_ref, prev_out = w_ref, w_out
    for epoch, samples in seen.items():
        check(sorted(samples) == list(range(ELASTIC_N)),
              f"epoch {epoch}: samples not consumed exactly once: {sorted(samples)}")
    a, b = weights(out, "final"), weights(ref, "final")
    check(np.allclose(a, b, rtol=1e-5, atol=1e-6),
          f"final weights differ from the uninterrupted run by {np.abs(a - b).max()}")
    with h5py.File(os.path.join(out, "model_final", "checkpoint.h5"), "r") as f, \
            h5py.File(os.path.join(ref, "model_final", "checkpoint.h5"), "r") as g:
        check(np.allclose(f["model/head.bias"][()], g["model/head.bias"][()], rtol=1e-5,
                          atol=1e-6), "final bias differs from the uninterrupted run")
    print(f"  {ELASTIC_ITERS} iterations over 2/4/1 ranks: sampler state and consumed samples "
          f"match the 1-rank run; each of {len(seen)} epochs saw every sample once; final "
          f"max |diff| {np.abs(a - b).max():.3g}")


def case_launch_signal(ctx):
    """SIGTERM to the launcher: forwarded (as SIGUSR1), ranks save, launcher exits 75."""
    d = ctx.case_dir("launch_signal")
    out, log = os.path.join(d, "out"), os.path.join(d, "launch.log")
    cmd = [ctx.dtrain, "launch", "--nproc-per-node", "2", "--max-restarts", "2",
           "--restart-backoff", "0.1", "--mpirun", ctx.mpirun, "--",
           "train", "--config-file", ctx.config, "OUTPUT_DIR", out]
    job = ctx.start(cmd, log)
    try:
        wait_until(lambda: last_checkpoint(out), "the first periodic checkpoint", job)
        mpirun = [p for p in children(job.pid)]
        check(len(mpirun) == 1, f"expected one mpirun under the launcher, found {mpirun}")
        ranks = rank_pids(mpirun[0], 2)
        # As in case_preempt: rank 0 frozen while the signal travels, so the run cannot
        # end first; it handles its (pending) SIGUSR1 once continued.
        os.kill(ranks[0], signal.SIGSTOP)
        os.kill(job.pid, signal.SIGTERM)
        time.sleep(0.3)
        os.kill(ranks[0], signal.SIGCONT)
        rc = finish(job, log)
        wait_gone(ranks.values())
    finally:
        if job.poll() is None:
            kill_group(job)
    text = read(log)
    check(rc == EXIT_PREEMPTED, f"dtrain launch exited {rc}, expected 75:\n{tail(log)}")
    check("not restarting: the launcher itself was signalled" in text, "no 'not restarting'")
    check("[dtrain launch] attempt 2/3" not in text, "the launcher restarted")
    stops = preempted_iterations(log)
    check(sorted(stops) == [0, 1] and stops[0] == stops[1], f"ranks stopped at {stops}")
    check(re.search(r"\[dtrain r0/2 [^\]]*\] Received signal 10", text) and
          re.search(r"\[dtrain r1/2 [^\]]*\] Received signal 10", text),
          "the ranks did not both receive SIGUSR1 (the forwarded SIGTERM)")
    name = f"model_{stops[0]:07d}"
    check(last_checkpoint(out) == name, f"last_checkpoint {last_checkpoint(out)} != {name}")
    print(f"  launcher exited 75 without restarting; ranks saved {name}")
    # The user's next `dtrain launch ... -- train --resume` finishes the job.
    log2 = os.path.join(d, "relaunch.log")
    rc = ctx.run(cmd[:cmd.index("train") + 1] + ["--resume"] + cmd[cmd.index("train") + 1:],
                 log2)
    check(rc == 0, f"relaunch exited {rc}:\n{tail(log2)}")
    check(re.search(rf"Loaded checkpoint {re.escape(out)}/{name} \(iteration", read(log2)),
          f"relaunch did not load {name}")
    assert_bitwise_equal(os.path.join(out, "model_final"), reference_final(ctx))


CASES = {
    "reference": case_reference,
    "preempt": case_preempt,
    "launch_restart": case_launch_restart,
    "kill9": case_kill9,
    "second_signal": case_second_signal,
    "elastic": case_elastic,
    "launch_signal": case_launch_signal,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtrain", required=True, help="the dtrain executable")
    ap.add_argument("--mpirun", default="mpirun", help="Open MPI's mpirun")
    ap.add_argument("--work", required=True, help="scratch directory (per-case subfolders)")
    ap.add_argument("case", choices=sorted(CASES))
    args = ap.parse_args()
    t0 = time.monotonic()
    try:
        CASES[args.case](Ctx(args))
    except Failure as e:
        print(f"FAIL ({args.case}): {e}", flush=True)
        return 1
    print(f"PASS ({args.case}) in {time.monotonic() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
