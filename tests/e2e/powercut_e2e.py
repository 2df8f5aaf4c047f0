#!/usr/bin/python3
"""Power-cut tests: the real `dtrain train` with OUTPUT_DIR on dtrain_powercut_fs, power
cut at a persistence operation of the run, reboot, --resume.

    powercut_e2e.py --dtrain build/bin/dtrain --compare build/tests/ckpt_compare \\
        --mpiexec mpiexec --source-dir . --work-dir /tmp/pc \\
        --tool powercut_fs=build/tests/dtrain_powercut_fs CASE

Cases: sync_np1, sync_np2, async_np2, sync_np4. Each case:
  1. trains uninterrupted on a plain directory (the reference);
  2. trains on the power-cut file system, counting its persistence operations (every
     write, truncate, create, mkdir, rename, unlink, rmdir, fsync and directory fsync),
     and checks that the run is unchanged by the file system;
  3. for each chosen operation N: trains again, power goes before operation N (every
     later operation fails, the job is killed), and the durable state -- files as of
     their last fsync, directory entries as of their directory's last fsync -- is the
     disk after the "reboot". Then:
       - every committed checkpoint directory on that disk verifies (dtrain ckpt verify);
       - last_checkpoint, if there, names one of them;
       - `--resume` loads the checkpoint last_checkpoint names (no fallback), which is at
         least as new as every save that had returned before the cut;
       - the resumed run's model_final is bitwise equal to the reference.
By default a sample of operations is cut (see choose_points: every step of one save's
commit protocol on 1 rank, five key steps on 2 and 4 ranks); DTRAIN_POWERCUT_FULL=1 cuts at every one
(minutes to hours), DTRAIN_POWERCUT_POINTS=3,17,... at those. Skipped (status 77) where
FUSE cannot be mounted (no /dev/fuse, no fusermount3).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import e2e
from e2e import CheckFailed, Skipped, check  # noqa: F401

MAX_ITER = 12
PERIOD = 4  # saves model_0000003, model_0000007, model_0000011 and model_final
KEEP = 2  # retention deletes model_0000003 after model_final
OVERRIDES = ["SOLVER.MAX_ITER", MAX_ITER, "SOLVER.CHECKPOINT_PERIOD", PERIOD,
             "CHECKPOINT.MAX_TO_KEEP", KEEP, "LOG.PERIOD", 1, "TEST.EVAL_PERIOD", 0,
             "SOLVER.WARMUP_ITERS", 6,
             # ~270k parameters: shards of ~1 MiB, so that a cut run takes seconds
             "MODEL.MLP.HIDDEN_DIMS", "[256, 256]"]
CONFIG = "mlp_synthetic.yaml"
OUT = "/out"  # OUTPUT_DIR inside the mount

# (ranks, asynchronous saves, sample of cut points by default)
CASES_SPEC = {"sync_np1": (1, False, "protocol"), "sync_np2": (2, False, "core"),
              "async_np2": (2, True, "core"), "sync_np4": (4, False, "core")}


def wdir(*parts):
    return os.path.join(e2e.work_dir(), *parts)


def overrides(async_save):
    return OVERRIDES + (["CHECKPOINT.ASYNC", "true"] if async_save else [])


class Mount:
    """dtrain_powercut_fs mounted on wdir(name, 'mnt') over an empty backing directory."""

    def __init__(self, name, fs_args):
        self.root = wdir(name)
        os.makedirs(self.root)
        self.mnt = os.path.join(self.root, "mnt")
        self.image = os.path.join(self.root, "image")
        self.log = os.path.join(self.root, "ops.log")
        os.makedirs(os.path.join(self.root, "backing"))
        os.makedirs(self.mnt)
        cmd = [e2e.ARGS.tools["powercut_fs"], "--backing", os.path.join(self.root, "backing"),
               "--image", self.image, "--log", self.log] + fs_args + [self.mnt]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     universal_newlines=True)
        deadline = time.time() + 10
        while not os.path.ismount(self.mnt):
            if self.proc.poll() is not None or time.time() > deadline:
                out = self.proc.communicate()[0] if self.proc.poll() is not None else ""
                raise Skipped("cannot mount dtrain_powercut_fs (FUSE): %s" % out.strip()[-300:])
            time.sleep(0.02)

    def unmount(self):
        for flags in (["-u"], ["-u", "-z"]):
            if subprocess.call(["fusermount3"] + flags + [self.mnt]) == 0:
                break
            time.sleep(0.2)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def cut(self):
        return os.path.exists(self.image + ".cut")

    def ops(self):
        """[(n, op, path)] of the persistence operations, in order."""
        out = []
        with open(self.log) as f:
            for line in f:
                parts = line.rstrip("\n").split(" ", 2)
                if parts[0] != "total":
                    out.append((int(parts[0]), parts[1], parts[2]))
        return out


def train_until_cut(cmd, mount, name):
    """Runs cmd until it exits or the power is cut (then kills it, as power loss would)."""
    env = dict(os.environ)
    start = time.time()
    with open(wdir(name + ".log"), "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        while proc.poll() is None and not mount.cut():
            if time.time() - start > e2e.RUN_TIMEOUT_S:
                os.killpg(proc.pid, signal.SIGKILL)
                raise CheckFailed("%s timed out" % name)
            time.sleep(0.01)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return proc.returncode


def iteration_of(name):
    return MAX_ITER - 1 if name == "model_final" else int(name.split("_")[1])


def returned_saves(ops):
    """Iterations of the saves that had returned before the cut: their last_checkpoint
    tag was renamed into place and OUTPUT_DIR fsynced afterwards."""
    done, committed, tag_renamed = [], None, False
    for _, op, path in ops:
        m = re.match(r"\S+ -> %s/(model_\w+)$" % OUT, path) if op == "rename" else None
        if m and "/." in path.split(" -> ")[0]:
            committed, tag_renamed = m.group(1), False
        elif op == "rename" and path.endswith(" -> %s/last_checkpoint" % OUT):
            tag_renamed = True
        elif op == "fsyncdir" and path == OUT and tag_renamed and committed:
            done.append(iteration_of(committed))
            tag_renamed = False
    return done


def check_disk(out_dir):
    """The disk after the reboot: every committed checkpoint verifies; the tag names one.
    Returns the tagged name (None without a tag)."""
    if not os.path.isdir(out_dir):
        return None
    committed = [n for n in os.listdir(out_dir) if not n.startswith(".") and
                 os.path.exists(os.path.join(out_dir, n, "checkpoint.h5"))]
    for n in committed:
        e2e.run([e2e.ARGS.dtrain, "ckpt", "verify", os.path.join(out_dir, n)],
                log_name="verify_" + n)
    tag = os.path.join(out_dir, "last_checkpoint")
    if not os.path.exists(tag):
        return None
    with open(tag) as f:
        name = f.read().strip()
    check(name in committed, "last_checkpoint names %r, which is not a committed checkpoint "
          "after the power cut (committed: %s)" % (name, sorted(committed)))
    return name


def require_fuse():
    if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
        raise Skipped("no /dev/fuse or no fusermount3")


def second_save(ops):
    """(first, end) operation numbers of the second save (its mkdir up to the third's)."""
    first_mkdir = [n for n, op, path in ops if op == "mkdir" and ".model_" in path]
    lo = first_mkdir[1] if len(first_mkdir) > 1 else 0
    hi = first_mkdir[2] if len(first_mkdir) > 2 else ops[-1][0] + 1
    return lo, hi


def reference_and_count(ranks, ovr):
    """An uninterrupted run on a plain directory, and one on dtrain_powercut_fs that
    counts its operations: (reference OUTPUT_DIR, [(n, op, path)])."""
    ref = wdir("reference")
    e2e.run(e2e.dtrain_cmd(ranks, CONFIG, ref, ovr), log_name="reference")
    count = Mount("count", [])
    try:
        e2e.run(e2e.dtrain_cmd(ranks, CONFIG, count.mnt + OUT, ovr), log_name="count")
    finally:
        count.unmount()
    return ref, count.ops()


def choose_points(ops, sample):
    """The operations to cut power at. "protocol": every step of the commit protocol in the
    second save (each rename, fsync and directory fsync; it has a predecessor to fall back
    to), retention's deletes and three shard-data writes (torn). "core": five of them --
    a torn shard write, the commit rename, the directory fsync after it, the rename of
    last_checkpoint and retention's first delete. Every operation of the run with
    DTRAIN_POWERCUT_FULL=1; the listed ones with DTRAIN_POWERCUT_POINTS=3,17,..."""
    if os.environ.get("DTRAIN_POWERCUT_POINTS"):
        return [int(x) for x in os.environ["DTRAIN_POWERCUT_POINTS"].split(",")]
    if os.environ.get("DTRAIN_POWERCUT_FULL") == "1":
        return [n for n, _, _ in ops]
    lo, hi = second_save(ops)
    window = [(n, op, path) for n, op, path in ops if lo <= n < hi]
    deletes = [n for n, op, _ in ops if op in ("unlink", "rmdir")]
    writes = [n for n, op, path in window if op == "write" and "shard-" in path]
    if sample == "core":
        commit = [n for n, op, path in window if op == "rename" and "/.model_" in path]
        tag = [n for n, op, path in window if op == "rename" and path.endswith("/last_checkpoint")]
        points = writes[len(writes) // 2:][:1] + commit[:1] + [n + 1 for n in commit[:1]] + tag[:1]
        return sorted(set(points + deletes[:1]))
    protocol = [n for n, op, path in window if op in ("rename", "fsync", "fsyncdir")
                and "tfevents" not in path]
    points = protocol + deletes + writes[len(writes) // 4::max(1, len(writes) // 3)][:3]
    return sorted(set(points))


def case(ranks, async_save, sample):
    def run_case():
        require_fuse()
        ref = wdir("reference")
        e2e.run(e2e.dtrain_cmd(ranks, CONFIG, ref, overrides(async_save)), log_name="reference")

        count = Mount("count", [])
        try:
            rc = train_until_cut(e2e.dtrain_cmd(ranks, CONFIG, count.mnt + OUT, overrides(async_save)),
                                 count, "count")
            check(rc == 0, "the run on dtrain_powercut_fs failed (rc %d; see count.log)" % rc)
            e2e.compare_checkpoints(os.path.join(ref, "model_final"),
                                    os.path.join(count.mnt + OUT, "model_final"))
        finally:
            count.unmount()
        ops = count.ops()
        points = choose_points(ops, sample)
        kinds = {}
        for _, op, _ in ops:
            kinds[op] = kinds.get(op, 0) + 1
        print("%d persistence operations in the run (%s); cutting power at %d of them: %s" %
              (len(ops), ", ".join("%s %d" % kv for kv in sorted(kinds.items())), len(points),
               points))
        for n in points:
            cut_at(ranks, async_save, ref, n, dict((k, (op, path)) for k, op, path in ops))

    return run_case


def cut_at(ranks, async_save, ref, n, counted, fs_args=(), tag=""):
    name = "cut%04d%s" % (n, tag)
    op = counted.get(n, ("?", "?"))
    mount = Mount(name, ["--cut-at", str(n)] + (["--tear"] if op[0] == "write" else []) +
                  list(fs_args))
    try:
        train_until_cut(e2e.dtrain_cmd(ranks, CONFIG, mount.mnt + OUT, overrides(async_save)),
                        mount, name)
    finally:
        mount.unmount()
    ops = mount.ops()
    if not mount.cut():
        print("%s: the run ended after %d operations, before the cut" % (name, len(ops)))
        return
    before = [o for o in ops if o[0] < n]
    cut_op = ops[-1] if ops and ops[-1][0] == n else (n, "?", "?")
    out = mount.image + OUT
    tagged = check_disk(out)
    returned = returned_saves(before)
    print("%s: power cut before %s %s; saves returned before it: %s; last_checkpoint: %s" %
          (name, cut_op[1], cut_op[2], returned, tagged))
    if returned:
        check(tagged is not None and iteration_of(tagged) >= max(returned),
              "%s: the save of iteration %d had returned, but after the power cut "
              "last_checkpoint names %s" % (name, max(returned), tagged))
    if not os.path.isdir(out):
        os.makedirs(out)
    _, _, err = e2e.run(e2e.dtrain_cmd(ranks, CONFIG, out, overrides(async_save), ["--resume"]),
                        log_name=name + "_resumed")
    check("Cannot resume" not in err and "trying an older checkpoint" not in err,
          "%s: the resume fell back past a damaged checkpoint:\n%s" %
          (name, "\n".join(l for l in err.splitlines() if "resume" in l)))
    committed = sorted(d for d in os.listdir(out)
                       if not d.startswith(".") and os.path.isfile(os.path.join(out, d, "checkpoint.h5")))
    if tagged is None and not committed:
        check("No checkpoint found" in err or "Loaded checkpoint" not in err,
              "%s: resumed from a checkpoint without a tag" % name)
    elif tagged is None:
        # Committed, but its tag was not durable yet: the newest committed one is taken.
        check("last_checkpoint is missing" in err and
              "Loaded checkpoint %s/%s " % (out, committed[-1]) in err,
              "%s: without a tag, the resume did not take the newest committed %s" % (name, committed[-1]))
    else:
        check("Loaded checkpoint %s/%s " % (out, tagged) in err,
              "%s: the resume did not load %s" % (name, tagged))
    e2e.compare_checkpoints(os.path.join(ref, "model_final"), os.path.join(out, "model_final"))
    shutil.rmtree(mount.root, ignore_errors=True)


def mutations_case():
    """Each fsync and directory fsync of the second save, dropped in turn (it runs, but
    dtrain_powercut_fs makes nothing durable, as if dtrain had not called it): power is
    then cut at each later step of that save's protocol and right after it returned,
    until a check fails. A dropped fsync that no cut notices is reported and fails the
    case: either it is not needed, or the tests miss what it protects."""
    def run_case():
        require_fuse()
        ref, ops = reference_and_count(1, overrides(False))
        counted = dict((k, (op, path)) for k, op, path in ops)
        lo, hi = second_save(ops)
        syncs = [(n, op, path) for n, op, path in ops if lo <= n < hi and op in ("fsync", "fsyncdir")
                 and "tfevents" not in path]
        undetected = []
        for n, op, path in syncs:
            pattern = re.sub(r"tmp-[0-9a-f]+", "tmp-*", path) + "$"
            skip = len([1 for k, o, p in ops if k < n and o == op and
                        re.sub(r"tmp-[0-9a-f]+", "tmp-*", p) + "$" == pattern])
            drop = ["--drop-on", pattern, "--drop-op", op, "--drop-skip", str(skip)]
            cuts = [k for k, o, p in ops if n < k < hi and o in ("rename", "fsync", "fsyncdir")] + [hi]
            found = None
            for k in cuts:
                try:
                    cut_at(1, False, ref, k, counted, drop, "_drop%04d" % n)
                except CheckFailed as e:
                    found = "cut before %d (%s %s): %s" % (k, counted[k][0], counted[k][1],
                                                           str(e).splitlines()[0][:300])
                    break
            # The directory fsync right after the commit rename only orders it before the
            # tag's rename: the next directory fsync makes both durable at once, and a
            # model that loses every un-synced change cannot reorder them.
            order_only = op == "fsyncdir" and path == OUT and counted.get(n - 1, ("", ""))[0] == "rename" \
                and "/.model_" in counted[n - 1][1]
            print("MUTATION %d %s %s: %s" % (n, op, path, "detected by " + found if found else
                                             "not detectable here (orders the commit rename "
                                             "before the tag's)" if order_only else "NOT DETECTED"))
            if not found and not order_only:
                undetected.append("%s %s" % (op, path))
        check(not undetected, "dropping these fsyncs went unnoticed: %s" % undetected)

    return run_case


# (ranks, asynchronous saves, errno, CHECKPOINT.ON_SAVE_ERROR, operation that fails)
FAIL_SPEC = {"enospc_sync_np2": (2, False, "ENOSPC", "stop", "write"),
             "eio_async_np2_warn": (2, True, "EIO", "warn", "fsync")}
ERRNO_TEXT = {"ENOSPC": "No space left on device", "EIO": "Input/output error"}


def fail_case(ranks, async_save, errno_name, on_error, failing_op):
    """A full disk or an I/O error at one operation of the second save's shard files: the
    error names the file and the cause, nothing of that save is committed, the checkpoint
    before it is intact and tagged; with stop the run ends (non-zero) and --resume
    finishes bitwise equal to an uninterrupted run, with warn the run goes on without
    that checkpoint and ends equal to it."""
    def run_case():
        require_fuse()
        ovr = overrides(async_save) + ["CHECKPOINT.ON_SAVE_ERROR", on_error]
        ref, ops = reference_and_count(ranks, ovr)
        # The second save's shard of the last rank: the middle one of its `failing_op`s.
        shard = "shard-%05d-of-%05d.h5" % (ranks - 1, ranks)
        pattern = ".model_0000007.tmp-*/" + shard
        matching = [path for _, op, path in ops if op == failing_op and
                    ".model_0000007.tmp-" in path and path.endswith(shard)]
        check(matching, "the counting run made no %s on %s" % (failing_op, pattern))
        skip = len(matching) // 2
        # A full disk stays full (every later write fails); an I/O error is one-off.
        fs_args = ["--fail-on", pattern, "--fail-op", failing_op, "--fail-skip", str(skip),
                   "--fail-errno", errno_name] + (["--fail-sticky"] if errno_name == "ENOSPC" else [])
        path = shard
        mount = Mount("fail", fs_args)
        try:
            out = mount.mnt + OUT
            rc, _, err = e2e.run(e2e.dtrain_cmd(ranks, CONFIG, out, ovr), expect_rc=None,
                                 log_name="failed")
        finally:
            mount.unmount()
        # The disk is "freed": the same files, without the failing file system.
        out = os.path.join(mount.root, "backing") + OUT
        print("%s #%d of %s failed with %s: rc %d" % (failing_op, skip + 1, pattern, errno_name, rc))
        lines = [l for l in err.splitlines() if ERRNO_TEXT[errno_name] in l]
        check(lines and any(shard in l for l in lines),
              "no error names %s and %r:\n%s" % (shard, ERRNO_TEXT[errno_name], err[-3000:]))
        print("the error: " + [l for l in lines if shard in l][0][:900])
        check(not os.path.exists(os.path.join(out, "model_0000007")),
              "model_0000007 was committed although writing it failed")
        check(not [n for n in os.listdir(out) if n.startswith(".model_0000007")],
              "the failed save left its temporary directory")
        e2e.run([e2e.ARGS.dtrain, "ckpt", "verify", os.path.join(out, "model_0000003")])
        with open(os.path.join(out, "last_checkpoint")) as f:
            tagged = f.read().strip()
        if on_error == "stop":
            check(rc == 1, "expected exit status 1 after a failed save with ON_SAVE_ERROR stop, "
                  "got %d" % rc)
            check(tagged == "model_0000003", "last_checkpoint names %s" % tagged)
            check("MPI_ABORT" not in err, "the failed save did not stop cleanly:\n" + err[-2000:])
            _, _, err = e2e.run(e2e.dtrain_cmd(ranks, CONFIG, out, ovr, ["--resume"]),
                                log_name="resumed")
            check("Loaded checkpoint %s/model_0000003 " % out in err,
                  "the resume did not load model_0000003")
        else:
            check(rc == 0, "the run stopped (rc %d) with ON_SAVE_ERROR warn" % rc)
            check("training goes on without it" in err, "no warning of the failed save")
            check(tagged == "model_final", "last_checkpoint names %s" % tagged)
            e2e.run([e2e.ARGS.dtrain, "ckpt", "verify", os.path.join(out, "model_0000011")])
        e2e.compare_checkpoints(os.path.join(ref, "model_final"), os.path.join(out, "model_final"))

    return run_case


CASES = {name: case(*spec) for name, spec in CASES_SPEC.items()}
CASES.update({name: fail_case(*spec) for name, spec in FAIL_SPEC.items()})
# Not registered with CTest (minutes): run by hand, see docs/FORMAT.md.
CASES["mutations_np1"] = mutations_case()

if __name__ == "__main__":
    sys.exit(e2e.main(CASES, __doc__))
