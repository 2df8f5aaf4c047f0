#!/usr/bin/python3
"""Local snapshots (CHECKPOINT.LOCAL) in the real `dtrain train` of a gpt with AdamW: the
training loop's time with a snapshot every 5 iterations and every iteration against
none, and the stall per snapshot, next to a memcpy of the rank's share of the state
measured in the same run (numpy copy of as many bytes: the physical limit of the copy a
snapshot makes; with several ranks, all copy at once, as they do at a snapshot, and the
slowest copy counts). Rounds rotate the order of the three runs; medians of the per-round
ratios are printed, and beside them the ratio of the fastest runs (on a shared machine
the noise only adds time, so the fastest run is the one least disturbed).

    bench/local_gpt.py --dtrain build/bin/dtrain --mpiexec mpiexec --ranks 1 [--rounds 3] [--write hdf5]

The loop time is the IterationTimer's (DTRAIN_LOG_LEVEL=debug: "Training loop: X s");
the stall is LocalTier's on rank 0 ("Local snapshot of iteration N: stall X s"), the node's
leader, which also plans the index. Two figures less exposed to a shared machine's noise
come with them: what the hooks add to the loop (the loop minus the steps, "of which
steps X s": the snapshots' own blocking time, as a share of the loop without them), and
the CPU time of the whole run (every rank and thread, startup included) with snapshots
against without: where training keeps every core busy, the CPU a snapshot spends in the
background is what it can cost the loop at worst.

Then, paired within one run (--paired-iters, 0 to skip): with LOCAL.PERIOD 2 a snapshot
is taken after every odd iteration and written during the even step after it, so even
steps run beside a snapshot's background work and odd steps do not, alternating every
half second under the same conditions of the machine. The per-snapshot cost is the
median of (even step - the odd step after it), less the same median of a run without
snapshots (the control), plus the hooks' added time per snapshot; the estimated ratios
are 1 + cost / (k x step) for a snapshot every k steps. This resolves a 1% effect where
the loop times of identical runs differ by 10-30%.
"""
import json
import argparse
import glob
import multiprocessing
import os
import queue
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args, period, out, local, log_period=None):
    shutil.rmtree(out, ignore_errors=True)
    cmd = [args.dtrain, "train", "--config-file", os.path.join(ROOT, "configs", "gpt_tiny_synthetic.yaml"),
           "OUTPUT_DIR", out, "CHECKPOINT.LOCAL.DIR", local, "CHECKPOINT.LOCAL.PERIOD", str(period),
           "SOLVER.MAX_ITER", str(args.iters), "SOLVER.CHECKPOINT_PERIOD", str(10 * args.iters),
           "TEST.EVAL_PERIOD", "0", "LOG.PERIOD", str(log_period or 10 * args.iters),
           "MODEL.GPT.N_LAYER", str(args.layers), "MODEL.GPT.N_EMBD", str(args.embd),
           "MODEL.GPT.N_HEAD", str(args.heads), "MODEL.GPT.VOCAB_SIZE", str(args.vocab),
           "MODEL.GPT.CONTEXT_LENGTH", str(args.ctx), "SOLVER.IMS_PER_BATCH", str(args.batch * args.ranks),
           "CHECKPOINT.LOCAL.WRITE", args.write]
    env = ["-x", "OMP_WAIT_POLICY=" + args.omp_wait_policy] if args.omp_wait_policy else []
    cmd = [args.mpiexec, "-np", str(args.ranks), "--bind-to", "none", "-x", "DTRAIN_LOG_LEVEL=debug"] + env + cmd
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if p.returncode != 0:
        sys.exit("dtrain train failed:\n" + p.stdout[-3000:])
    loops = [(float(a), float(b)) for a, b in
             re.findall(r"Training loop: ([0-9.]+) s, of which steps ([0-9.]+) s", p.stdout)]
    stalls = [(float(a), float(b)) for a, b in
              re.findall(r"Local snapshot of iteration \d+: stall ([0-9.]+) s \(copy ([0-9.]+) s\)", p.stdout)]
    state = sum(os.path.getsize(f) for f in glob.glob(os.path.join(out, "model_final", "shard-*.h5")))
    loop, steps = max(loops)
    step_times = {}
    if log_period == 1:
        with open(os.path.join(out, "metrics.json")) as f:
            for line in f:
                record = json.loads(line)
                if "time" in record:
                    step_times[record["iteration"]] = record["time"]
    return {"loop": loop, "hooks": loop - steps, "cpu": cpu, "steps": step_times}, stalls, state


def paired(args):
    """The paired estimate (see the module's text): (cost per snapshot, step, snapshots)."""
    iters = args.iters
    args.iters = args.paired_iters
    try:
        runs = {}
        for period in (0, 2):
            runs[period], _, _ = run(args, period, os.path.join(args.dir, "paired%d" % period), args.local_dir,
                                     log_period=1)
    finally:
        args.iters = iters

    def even_minus_odd(t):
        return statistics.median(t[i] - t[i + 1] for i in sorted(t) if i >= 4 and i % 2 == 0 and i + 1 in t)

    snapshots = (args.paired_iters - 1) // 2
    hooks = (runs[2]["hooks"] - runs[0]["hooks"]) / snapshots
    beside = even_minus_odd(runs[2]["steps"]) - even_minus_odd(runs[0]["steps"])
    step = statistics.median(runs[0]["steps"].values())
    return beside + hooks, beside, hooks, step, snapshots


def memcpy_seconds(nbytes, barrier=None, out=None):
    src = np.random.randint(0, 255, size=nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # both touched: no page faults in the timed copies
    times = []
    for _ in range(10):
        if barrier is not None:
            barrier.wait(timeout=60)
        t = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t)
    if out is not None:
        out.put(times)
    return statistics.median(times)


def concurrent_memcpy_seconds(nbytes, copies):
    """Each of `copies` processes copies nbytes at the same instant, as the ranks of a node
    do at a snapshot (they share the memory bandwidth): the median over rounds of the
    slowest copy."""
    if copies == 1:
        return memcpy_seconds(nbytes)
    barrier, out = multiprocessing.Barrier(copies), multiprocessing.Queue()
    procs = [multiprocessing.Process(target=memcpy_seconds, args=(nbytes, barrier, out)) for _ in range(copies)]
    for p in procs:
        p.start()
    try:
        runs = [out.get(timeout=120) for _ in procs]
    except queue.Empty:
        sys.exit("a memcpy process did not report (exit codes %s)" % [p.exitcode for p in procs])
    for p in procs:
        p.join()
    return statistics.median(max(r[i] for r in runs) for i in range(len(runs[0])))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtrain", required=True)
    ap.add_argument("--mpiexec", default="mpiexec")
    ap.add_argument("--ranks", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--embd", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8, help="sequences per rank per step")
    ap.add_argument("--dir", default="/tmp/dtrain-local-gpt")
    ap.add_argument("--local-dir", default="/dev/shm/dtrain-local-gpt")
    ap.add_argument("--write", default="auto", choices=["auto", "mapped", "hdf5"],
                    help="CHECKPOINT.LOCAL.WRITE")
    ap.add_argument("--omp-wait-policy", default="", choices=["", "PASSIVE", "ACTIVE"],
                    help="OMP_WAIT_POLICY of the ranks (default: as in this environment)")
    ap.add_argument("--paired-iters", type=int, default=60,
                    help="iterations of the paired runs (0: no paired estimate)")
    args = ap.parse_args()
    ratios = {5: [], 1: []}
    hooks = {5: [], 1: []}  # added hook time / loop without snapshots
    cpus = {5: [], 1: []}
    loops = {0: [], 5: [], 1: []}
    stalls = []
    state = 0
    order = [0, 5, 1]
    for r in range(args.rounds):
        this = {}
        for period in order[r % 3:] + order[:r % 3]:
            t, s, state = run(args, period, os.path.join(args.dir, "p%d" % period), args.local_dir)
            this[period] = t
            loops[period].append(t["loop"])
            stalls += s
        for k in (5, 1):
            ratios[k].append(this[k]["loop"] / this[0]["loop"])
            hooks[k].append((this[k]["hooks"] - this[0]["hooks"]) / this[0]["loop"])
            cpus[k].append(this[k]["cpu"] / this[0]["cpu"])
    share = state // args.ranks
    memcpy_alone = memcpy_seconds(share)
    memcpy = concurrent_memcpy_seconds(share, args.ranks)
    step = statistics.median(loops[0]) / args.iters
    if not stalls:
        sys.exit("no 'Local snapshot of iteration N: stall X s (copy Y s)' lines: is %s this version?" %
                 args.dtrain)
    stall = statistics.median(s for s, _ in stalls)
    copy = statistics.median(c for _, c in stalls)
    print("local snapshots in dtrain train | gpt %d layers, embd %d, vocab %d, ctx %d, AdamW | "
          "%d rank(s), %d iterations, %d rounds, LOCAL.WRITE %s, OMP_WAIT_POLICY %s" %
          (args.layers, args.embd, args.vocab, args.ctx, args.ranks, args.iters, args.rounds, args.write,
           args.omp_wait_policy or os.environ.get("OMP_WAIT_POLICY", "unset")))
    print("  state %.1f MB, rank's share %.1f MB; step %.4f s; memcpy of the share %.4f s "
          "(all %d ranks at once; one alone %.4f s)" % (state / 1e6, share / 1e6, step, memcpy, args.ranks,
                                                       memcpy_alone))
    for k, goal in ((5, 1.02), (1, 1.05)):
        bound = 1 + memcpy / (k * step)
        target = goal if memcpy / step <= 0.03 else 1 + 1.5 * (bound - 1)
        med = statistics.median(ratios[k])
        print("  every %d / none       %.3f  (memcpy bound %.3f; goal <= %.3f: %s; rounds: %s; "
              "fastest run / fastest run %.3f)" %
              (k, med, bound, target, "met" if med <= target else "BELOW",
               ", ".join("%.3f" % x for x in ratios[k]), min(loops[k]) / min(loops[0])))
        print("    hooks add %.1f%% of the loop (rounds: %s); CPU time of the run %.3fx (rounds: %s)" %
              (100 * statistics.median(hooks[k]), ", ".join("%.1f%%" % (100 * x) for x in hooks[k]),
               statistics.median(cpus[k]), ", ".join("%.3f" % x for x in cpus[k])))
    if args.paired_iters > 0:
        cost, beside, hooks_each, pstep, n = paired(args)
        print("  paired within a run (LOCAL.PERIOD 2, %d snapshots, control without): per snapshot %.4f s = "
              "%.4f s on the step beside its background work + %.4f s in the hooks; step %.4f s" %
              (n, cost, beside, hooks_each, pstep))
        for k, goal in ((5, 1.02), (1, 1.05)):
            est = 1 + cost / (k * pstep)
            bound = 1 + memcpy / (k * pstep)
            target = goal if memcpy / pstep <= 0.03 else 1 + 1.5 * (bound - 1)
            print("    every %d / none, estimated  %.3f  (memcpy bound %.3f; goal <= %.3f: %s)" %
                  (k, est, bound, target, "met" if est <= target else "BELOW"))
    print("  stall / memcpy        %.2f  (median stall %.4f s, of it the copy %.4f s, over %d snapshots; "
          "goal <= 1.5: %s)" % (stall / memcpy, stall, copy, len(stalls), "met" if stall / memcpy <= 1.5 else "BELOW"))


    shutil.rmtree(args.dir, ignore_errors=True)
    shutil.rmtree(args.local_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
