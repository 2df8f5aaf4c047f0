#!/usr/bin/python3
"""End-to-end test of the TensorBoard event files that `dtrain train` writes.

    tensorboard_e2e.py --dtrain build/bin/dtrain --proto-py build/tests/e2e/tbproto \
                       --source-dir . --work-dir /tmp/e2e

One process (no mpirun), a small mlp with evaluation every 4 iterations:
  A  uninterrupted, LOG.PERIOD 1: one event file (file_version "brain.Event:2", then a
     SessionLog START at step 0) whose scalars are exactly metrics.json's: the same
     (tag, iteration) pairs, every value equal to metrics.json's as float32, wall times
     within the run.
  B  LOG.PERIOD 3, SIGKILLed after the step of iteration 12 (checkpoints after 4 and 9),
     then resumed from iteration 10: the second event file sorts after the first and
     starts with a START at step 10; the killed run's file holds orphaned steps >= 10;
     after TensorBoard's purge the curves are one series without repeats that has the
     same (tag, iteration) pairs as A's metrics.json, the values of A for everything but
     timings, and the values of B's own metrics.json where it has a record.
  C  LOG.TENSORBOARD False writes no event file.
Uses e2e.py's helpers (run, dtrain_cmd, read_metrics, check).
"""

import argparse
import os
import re
import shutil
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402
import tfevents  # noqa: E402
from e2e import check, dtrain_cmd, read_metrics, run  # noqa: E402

CONFIG = "mlp_synthetic.yaml"
MAX_ITER = 16
BASE = ["SOLVER.MAX_ITER", MAX_ITER, "SOLVER.CHECKPOINT_PERIOD", 5, "TEST.EVAL_PERIOD", 4,
        "MODEL.MLP.HIDDEN_DIMS", "[128]", "SOLVER.STEPS", "(13,)", "SOLVER.WARMUP_ITERS", 6]
KILL_AFTER_STEPS = 13  # SIGKILL after the optimizer step of iteration 12


def f32(x):
    """x rounded to float32, as simple_value holds it."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def json_scalars(records):
    """{(tag, iteration): value} of metrics.json; checks no pair appears twice."""
    out = {}
    for r in records:
        for tag, value in r.items():
            if tag == "iteration":
                continue
            key = (tag, r["iteration"])
            check(key not in out, "%s at iteration %d twice in metrics.json" % key)
            out[key] = value
    return out


def tb_scalars(view):
    """{(tag, step): value} of a tensorboard_view; checks no pair appears twice."""
    out = {}
    for tag, points in view.items():
        for step, value, _ in points:
            check((tag, step) not in out, "%s at step %d twice in TensorBoard's view" %
                  (tag, step))
            out[(tag, step)] = value
    return out


def check_file_start(events, start_step, path):
    check(len(events) >= 2, "%s has %d events" % (path, len(events)))
    check(events[0].WhichOneof("what") == "file_version" and
          events[0].file_version == "brain.Event:2",
          "%s: first event is not file_version brain.Event:2: %s" % (path, events[0]))
    check(tfevents.is_session_start(events[1]) and events[1].step == start_step,
          "%s: second event is not a START at step %d: %s" % (path, start_step, events[1]))
    for e in events[2:]:
        check(not tfevents.is_session_start(e), "%s: a second START: %s" % (path, e))


def check_wall_times(events, t0, t1, path):
    times = [e.wall_time for e in events]
    check(all(t0 - 1 <= t <= t1 + 1 for t in times),
          "%s: wall times %s outside the run [%f, %f]" % (path, times, t0, t1))
    check(times == sorted(times), "%s: wall times go back" % path)


def run_timed(cmd, **kw):
    t0 = time.time()
    result = run(cmd, **kw)
    return result, t0, time.time()


def case_uninterrupted(out):
    _, t0, t1 = run_timed(dtrain_cmd(0, CONFIG, out, BASE + ["LOG.PERIOD", 1]), log_name="a")
    files = tfevents.event_files(out)
    check(len(files) == 1, "expected one event file, found %s" % files)
    name = os.path.basename(files[0])
    check(re.fullmatch(r"events\.out\.tfevents\.(\d+)\..+\.\d+", name) and
          t0 - 1 <= int(name.split(".")[3]) <= t1, "unexpected event file name %s" % name)
    events = tfevents.read_events(files[0])
    check_file_start(events, 0, files[0])
    check_wall_times(events, t0, t1, files[0])
    expected = json_scalars(read_metrics(out))
    got = tb_scalars(tfevents.tensorboard_view(out))
    check(set(got) == set(expected), "(tag, step) pairs differ from metrics.json: only in the "
          "event file %s, only in metrics.json %s" % (sorted(set(got) - set(expected)),
                                                     sorted(set(expected) - set(got))))
    for key, value in sorted(expected.items()):
        check(got[key] == f32(value), "%s at %d: %r in the event file, %r in metrics.json"
              % (key + (got[key], value)))
    evals = sorted({k for k in expected if k[0].startswith("eval/")})
    check(evals and all(k[1] in (3, 7, 11, MAX_ITER) for k in evals),
          "eval metrics not at the evaluation iterations: %s" % evals)
    print("A: %d scalars (%d tags, %d eval values) equal metrics.json in %s" %
          (len(got), len({k[0] for k in got}), len(evals), name))
    return expected


def case_resumed(out, reference):
    overrides = BASE + ["LOG.PERIOD", 3]
    fault = {"DTRAIN_FAULT": "train.after_step", "DTRAIN_FAULT_AFTER": str(KILL_AFTER_STEPS)}
    (rc, _, _), _, _ = run_timed(dtrain_cmd(0, CONFIG, out, overrides), env_extra=fault,
                                 expect_rc=None, log_name="b_killed")
    check(rc != 0, "the run with DTRAIN_FAULT was not killed")
    with open(os.path.join(out, "last_checkpoint")) as f:
        resume_at = int(f.read().strip().split("_")[1]) + 1
    killed_files = tfevents.event_files(out)
    check(len(killed_files) == 1, "killed run: event files %s" % killed_files)
    killed_steps = {e.step for e in tfevents.read_events(killed_files[0])
                    if e.WhichOneof("what") == "summary"}
    check(max(killed_steps) >= resume_at, "the killed run logged no step >= %d (%s): the "
          "purge would go untested" % (resume_at, sorted(killed_steps)))

    (_, _, err), t0, t1 = run_timed(dtrain_cmd(0, CONFIG, out, overrides, ["--resume"]),
                                    log_name="b_resumed")
    check("Starting training from iteration %d" % resume_at in err,
          "the resumed run did not start at iteration %d" % resume_at)
    files = tfevents.event_files(out)
    check(len(files) == 2 and files[0] == killed_files[0],
          "after the resume: event files %s (the new one must sort last)" % files)
    events = tfevents.read_events(files[1])
    check_file_start(events, resume_at, files[1])
    check_wall_times(events, t0, t1, files[1])
    check(min(e.step for e in events[2:]) >= resume_at, "resumed run logged a step before %d"
          % resume_at)

    got = tb_scalars(tfevents.tensorboard_view(out))  # checks: no step twice after the purge
    raw = sum(len(v.summary.value) for p in files for v in tfevents.read_events(p))
    check(raw > len(got), "nothing was purged (%d raw values, %d in the view)" % (raw, len(got)))
    check(set(got) == set(reference), "curves after the purge differ from the uninterrupted "
          "run: only here %s, only there %s" % (sorted(set(got) - set(reference)),
                                                sorted(set(reference) - set(got))))
    for (tag, step), value in sorted(reference.items()):
        if not tag.endswith("time"):  # timings differ run to run; everything else is exact
            check(got[(tag, step)] == f32(value), "%s at %d: %r after the resume, %r "
                  "uninterrupted" % (tag, step, got[(tag, step)], value))
    own = json_scalars(read_metrics(out))
    check(len(own) < len(got), "LOG.PERIOD 3 should leave fewer metrics.json records")
    for key, value in sorted(own.items()):
        check(got.get(key) == f32(value), "%s at %d: %r in the event files, %r in metrics.json"
              % (key + (got.get(key), value)))
    print("B: killed after iteration %d (logged up to step %d), resumed at %d; %d raw values, "
          "%d after the purge = the uninterrupted run's curves" %
          (KILL_AFTER_STEPS - 1, max(killed_steps), resume_at, raw, len(got)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtrain", required=True)
    parser.add_argument("--proto-py", required=True, help="protoc --python_out directory")
    parser.add_argument("--source-dir", required=True)
    parser.add_argument("--work-dir", required=True)
    args = parser.parse_args()
    args.case, args.mpiexec, args.compare = "tensorboard", "mpirun", None
    for attr in ("dtrain", "source_dir", "work_dir", "proto_py"):
        setattr(args, attr, os.path.abspath(getattr(args, attr)))
    e2e.ARGS = args
    tfevents.load_protos(args.proto_py)
    work = e2e.work_dir()
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    try:
        reference = case_uninterrupted(os.path.join(work, "a"))
        case_resumed(os.path.join(work, "b"), reference)
        out = os.path.join(work, "c")
        run(dtrain_cmd(0, CONFIG, out, BASE + ["SOLVER.MAX_ITER", 2, "LOG.TENSORBOARD", "False"]),
            log_name="c")
        check(not tfevents.event_files(out), "LOG.TENSORBOARD False wrote event files")
    except (e2e.CheckFailed, tfevents.BadRecord) as e:
        print("FAILED tensorboard: %s (logs in %s)" % (e, work))
        return 1
    print("PASSED tensorboard")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
