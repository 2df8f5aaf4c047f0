#!/usr/bin/python3
"""Power cut during a local snapshot: the real `dtrain train` with CHECKPOINT.LOCAL.DIR
(and OUTPUT_DIR) on dtrain_powercut_fs, power cut at an operation of a local snapshot,
reboot, --resume.

    powercut_local_e2e.py --dtrain build/bin/dtrain --compare build/tests/ckpt_compare \\
        --mpiexec mpiexec --source-dir . --work-dir /tmp/pcl \\
        --tool powercut_fs=build/tests/dtrain_powercut_fs CASE

This is the node-local tier on a medium that survives a power cut but loses what was not
made durable (a node's SSD; /dev/shm itself loses everything, which is the "lost node"
case of local_tier_e2e.py). Cases: local_np1 (1 rank), local_np2 (2 ranks on 2 "nodes",
DTRAIN_NODE_ID n0 and n1, each holding the other's replica). Each case:
  1. trains uninterrupted on a plain directory (the reference);
  2. trains on the power-cut file system, counting its persistence operations, and checks
     that the run is unchanged by it;
  3. for each chosen operation N: trains again, power goes before operation N, and the
     durable state is the disk after the "reboot", seen at the same path (a symlink that
     pointed at the mount now points at the image, so the job's identity is unchanged).
     Then:
       - every committed snapshot (snap-N) on that disk verifies (dtrain ckpt verify),
         but for the replicas of a node's newest one, which may still have been in flight;
       - `--resume` starts at least after the newest snapshot committed on every node
         (renamed and its directory fsynced) before the cut, never falls back past a
         damaged snapshot, and uses the local tier whenever one was committed;
       - the resumed run's model_final is bitwise equal to the reference.
By default a sample of the second snapshot's operations is cut (choose_points: a torn
shard write, the commit renames and the directory fsync after the first, the prune's
rename and first delete; on 1 rank also every fsync, directory fsync and rename of the
snapshot, on 2 ranks a replica's write, fsync and rename); DTRAIN_POWERCUT_FULL=1 cuts at every operation of
the run, DTRAIN_POWERCUT_POINTS=3,17,... at those. Skipped (status 77) where FUSE cannot
be mounted.
"""

import os
import re
import shutil
import sys

import e2e
from e2e import CheckFailed, check  # noqa: F401
from powercut_e2e import Mount, require_fuse, train_until_cut, wdir

MAX_ITER = 12
LOCAL_PERIOD = 2  # snapshots of iterations 1, 3, 5, ...; KEEP 2 prunes from the third on
# No periodic persistent checkpoint: only the local tier can serve the resume.
OVERRIDES = ["SOLVER.MAX_ITER", MAX_ITER, "SOLVER.CHECKPOINT_PERIOD", 10 * MAX_ITER,
             "LOG.PERIOD", 1, "TEST.EVAL_PERIOD", 0, "SOLVER.WARMUP_ITERS", 6,
             "CHECKPOINT.LOCAL.PERIOD", LOCAL_PERIOD, "CHECKPOINT.LOCAL.KEEP", 2,
             "MODEL.MLP.HIDDEN_DIMS", "[256, 256]"]
CONFIG = "mlp_synthetic.yaml"
CASES_SPEC = {"local_np1": 1, "local_np2": 2}


def train_cmd(ranks, disk, flags=()):
    """mpirun with one "node" (DTRAIN_NODE_ID) per rank; both tiers under `disk`."""
    cmd = [e2e.ARGS.dtrain, "train", "--config-file", e2e.config_path(CONFIG)] + list(flags)
    cmd += ["OUTPUT_DIR", disk + "/out", "CHECKPOINT.LOCAL.DIR", disk + "/local"]
    cmd += [str(x) for x in OVERRIDES]
    mpi = [e2e.ARGS.mpiexec, "--bind-to", "none"]
    for n in range(ranks):
        mpi += ([":"] if n else []) + ["-np", "1", "-x", "DTRAIN_NODE_ID=n%d" % n] + cmd
    return mpi


def point_disk(mount, target):
    """wdir(name)/disk -> target: the path the job sees before and after the reboot."""
    link = os.path.join(mount.root, "disk")
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(target, link)
    return link


SNAP_RENAME = re.compile(r"^/local/(n\d+)/(job-\w+)/\.snap-(\d+)\.tmp-local -> /local/n\d+/job-\w+/snap-\d+$")


def durable_snapshots(ops, nodes):
    """Iterations whose snapshot was committed on every node before the cut: the rename
    of its temporary to snap-N, then an fsync of the job directory."""
    renamed, durable = {}, {}
    for _, op, path in ops:
        m = SNAP_RENAME.match(path) if op == "rename" else None
        if m:
            renamed.setdefault(m.group(1), []).append(int(m.group(3)))
        elif op == "fsyncdir":
            m = re.match(r"^/local/(n\d+)/job-\w+$", path)
            if m:
                durable.setdefault(m.group(1), set()).update(renamed.get(m.group(1), []))
    on_all = set.intersection(*[durable.get("n%d" % n, set()) for n in range(nodes)])
    return sorted(on_all)


def local_window(ops):
    """Operations of the second snapshot: from its first to the third snapshot's first."""
    firsts = {}  # iteration -> the first operation on its temporary directory
    for n, _, path in ops:
        m = re.search(r"/\.snap-(\d+)\.tmp-local", path)
        if m:
            firsts.setdefault(int(m.group(1)), n)
    its = sorted(firsts)
    check(len(its) >= 3, "the counting run made %d local snapshots" % len(its))
    return [o for o in ops if firsts[its[1]] <= o[0] < firsts[its[2]]], its[1]


def choose_points(ops, ranks):
    if os.environ.get("DTRAIN_POWERCUT_POINTS"):
        return [int(x) for x in os.environ["DTRAIN_POWERCUT_POINTS"].split(",")]
    if os.environ.get("DTRAIN_POWERCUT_FULL") == "1":
        return [n for n, _, _ in ops]
    window, it = local_window(ops)
    own = "shard-%05d-of-%05d.h5" % (0, ranks)
    writes = [n for n, op, path in window if op == "write" and "/n0/" in path and path.endswith(own)]
    # A replica: rank 1's shard written into node n0's tier, under a temporary name that
    # is then renamed into the committed snapshot.
    replica = "shard-%05d-of-%05d.h5" % (1, ranks)
    rep_ops = [(n, op) for n, op, path in window if "/n0/" in path and "/.replica-" in path and replica in path]
    rep_write = [n for n, op in rep_ops if op == "write"]
    rep_sync = [n for n, op in rep_ops if op == "fsync"]
    rep_rename = [n for n, op in rep_ops if op == "rename"]
    renames = [n for n, op, path in window if op == "rename" and SNAP_RENAME.match(path)]
    paths = dict((n, path) for n, _, path in window)
    node = SNAP_RENAME.match(paths[renames[0]]).group(1)
    dir_sync = [n for n, op, path in window if n > renames[0] and op == "fsyncdir" and
                re.match(r"^/local/%s/job-\w+$" % node, path)][:1]
    # The prune of the oldest snapshot (KEEP 2): its rename to .deleting-*, a delete in it.
    deletes = [n for n, op, path in ops if (op == "rename" and ".deleting-" in path) or
               (op == "unlink" and ".deleting-" in path)][:2]
    points = writes[len(writes) // 2:][:1] + renames + dir_sync + deletes
    if ranks > 1:
        points += rep_write[:1] + rep_sync[:1] + rep_rename[:1]
    else:  # every step of the commit protocol
        points += [n for n, op, path in window if op in ("rename", "fsync", "fsyncdir")
                   and "/local/" in path]
    print("snapshot of iteration %d: operations %d..%d" % (it, window[0][0], window[-1][0]))
    return sorted(set(points))


def normal(path):
    """A path with the run's random parts (job key, temporary suffixes) as '*'."""
    return re.sub(r"(job|tmp|deleting)-[0-9a-f]{6,}", r"\1-*", path)


def matches(path, pattern):
    """dtrain_powercut_fs's pattern match: the '*'-separated parts in order; a trailing
    '$' anchors the last part at the end."""
    to_end = pattern.endswith("$")
    parts = (pattern[:-1] if to_end else pattern).split("*")
    at = 0
    for part in parts[:-1]:
        at = path.find(part, at)
        if at < 0:
            return False
        at += len(part)
    last = parts[-1]
    return path.endswith(last) and len(path) - len(last) >= at if to_end else path.find(last, at) >= 0


def trigger(n, ops):
    """dtrain_powercut_fs arguments that cut power before the counting run's operation n,
    named by its kind and path (the (K+1)-th such operation), not by its number: the
    ranks' operations interleave differently from run to run."""
    op, path = [(o, p) for k, o, p in ops if k == n][0]
    pattern = normal(path) + "$"
    skip = len([1 for k, o, p in ops if k < n and o == op and matches(p, pattern)])
    return ["--cut-on", pattern, "--cut-op", op, "--cut-skip", str(skip)] + \
        (["--tear"] if op == "write" else [])


def committed_on_disk(disk, ranks):
    """Verifies every committed snapshot on the disk; returns ["n0/snap-...", ...]. A
    node's newest snapshot may lack the replicas of other nodes' shards (they are sent
    after the commit, and the next commit waits for them); nothing else may be wrong."""
    found = []
    root = os.path.join(disk, "local")
    for node in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        for job in os.listdir(os.path.join(root, node)):
            jd = os.path.join(root, node, job)
            snaps = sorted(d for d in os.listdir(jd) if d.startswith("snap-")) if os.path.isdir(jd) else []
            for snap in snaps:
                rc, out, err = e2e.run([e2e.ARGS.dtrain, "ckpt", "verify", os.path.join(jd, snap)],
                                       log_name="verify_%s_%s" % (node, snap), expect_rc=None)
                if rc != 0:
                    own = int(node[1:]) if ranks > 1 else 0  # rank r runs on node n<r>
                    problems = [l for l in (out + err).splitlines() if "problem:" in l]
                    replicas = [l for l in problems if re.search(
                        r"shard file '.*/shard-(?!%05d)\d{5}-of-\d{5}\.h5' is missing" % own, l)]
                    check(snap == snaps[-1] and problems and replicas == problems,
                          "%s/%s does not verify, and not only for a replica still in flight "
                          "(rc %d):\n%s" % (node, snap, rc, out + err))
                found.append("%s/%s" % (node, snap))
    return found


def cut_at(ranks, ref, n, counted):
    name = "cut%04d" % n
    mount = Mount(name, trigger(n, counted))
    try:
        disk = point_disk(mount, mount.mnt)
        train_until_cut(train_cmd(ranks, disk), mount, name)
    finally:
        mount.unmount()
    ops = mount.ops()
    check(mount.cut(), "%s: the run ended after %d operations without reaching the cut" % (name, len(ops)))
    cut_op = ops[-1]
    committed = durable_snapshots(ops[:-1], ranks)
    disk = point_disk(mount, mount.image)
    os.makedirs(disk + "/out", exist_ok=True)
    persistent = os.path.exists(os.path.join(disk, "out", "model_final"))
    on_disk = committed_on_disk(disk, ranks)
    _, _, err = e2e.run(train_cmd(ranks, disk, ["--resume"]), log_name=name + "_resumed")
    m = re.search(r"Starting training from iteration (\d+)", err)
    check(m, "%s: the resumed run did not say where it started" % name)
    start = int(m.group(1))
    print("%s: power cut before %s %s; snapshots committed on every node: %s; on disk: %s; "
          "resumed at %d" % (name, cut_op[1], cut_op[2], committed, on_disk, start))
    check("Cannot resume" not in err and "trying the" not in err,
          "%s: the resume fell back past a damaged snapshot:\n%s" %
          (name, "\n".join(l for l in err.splitlines() if "resum" in l.lower())))
    if committed:
        check(start >= committed[-1] + 1, "%s: the snapshot of iteration %d had committed, but "
              "the resume started at %d" % (name, committed[-1], start))
        check("Resuming from the local snapshot" in err or persistent,
              "%s: the resume used neither the local tier nor model_final" % name)
    e2e.compare_checkpoints(os.path.join(ref, "model_final"), os.path.join(disk, "out", "model_final"))
    shutil.rmtree(mount.root, ignore_errors=True)


def case(ranks):
    def run_case():
        require_fuse()
        ref = wdir("reference")
        os.makedirs(ref)
        e2e.run(train_cmd(ranks, ref), log_name="reference")
        ref = os.path.join(ref, "out")
        count = Mount("count", [])
        try:
            rc = train_until_cut(train_cmd(ranks, point_disk(count, count.mnt)), count, "count")
            check(rc == 0, "the run on dtrain_powercut_fs failed (rc %d; see count.log)" % rc)
            e2e.compare_checkpoints(os.path.join(ref, "model_final"),
                                    os.path.join(count.mnt, "out", "model_final"))
        finally:
            count.unmount()
        ops = count.ops()
        points = choose_points(ops, ranks)
        print("%d persistence operations in the run; cutting power at %d of them: %s" %
              (len(ops), len(points), points))
        for n in points:
            cut_at(ranks, ref, n, ops)

    return run_case


CASES = {name: case(ranks) for name, ranks in CASES_SPEC.items()}

if __name__ == "__main__":
    sys.exit(e2e.main(CASES, __doc__))
