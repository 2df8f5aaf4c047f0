#!/usr/bin/python3
"""End-to-end tests of model_best (TEST.BEST_CHECKPOINT.*) and of metrics.json across resumes.

    best_e2e.py --dtrain build/bin/dtrain --compare build/tests/ckpt_compare \
                --mpiexec /usr/bin/mpiexec --source-dir . --work-dir /tmp/e2e CASE

Cases (a small mlp on synthetic data; the expectations come from the runs' own metrics.json):
  best            2 ranks, evaluation every 3 iterations, MODE max on accuracy, MAX_TO_KEEP 1:
                  model_best holds the iteration and value of metrics.json's best evaluation
                  (read with h5py), the log has detectron2's lines once per evaluation,
                  retention deleted old model_<iter> but never model_best or model_final.
                  Then the same run SIGKILLed right after its first model_best save (which
                  last_checkpoint then names) and resumed from it: model_final, model_best
                  and every total_loss are bitwise those of the uninterrupted run.
  best_kept       2 ranks, MODE min on accuracy (so later evaluations are worse), killed
                  after a periodic checkpoint and resumed: the best is restored from the
                  checkpoint, not reset, and model_best still holds the first evaluation.
  metrics_extend  a finished MAX_ITER 50 run (LOG.PERIOD 20, EVAL_PERIOD 20) extended to 60:
                  metrics.json holds 19, 39, 49, 50, 59, 60, and the first run's records,
                  its final evaluation at 50 included, are unchanged.
  metrics_killed  a run killed past its checkpoint and resumed: every iteration appears
                  once and the records equal an uninterrupted run's (timings aside).
Uses e2e.py's helpers (run, dtrain_cmd, read_metrics, compare_checkpoints, check).
"""

import argparse
import os
import re
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402
from e2e import check, compare_checkpoints, dtrain_cmd, read_metrics, run  # noqa: E402

CONFIG = "mlp_synthetic.yaml"
DATASET = "synthetic_classification"
ACCURACY = "eval/%s/accuracy" % DATASET
SMALL = ["MODEL.MLP.HIDDEN_DIMS", "[64]", "DATASETS.SYNTHETIC.NUM_TEST", 256,
         "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", 0, "LOG.TENSORBOARD", "False"]


def h5_values(ckpt_dir, names):
    """{name: value} of scalar datasets (and root attribute 'iteration') of checkpoint.h5."""
    import h5py  # Debian's python3-h5py; only the cases that read checkpoints need it
    out = {}
    with h5py.File(os.path.join(ckpt_dir, "checkpoint.h5"), "r") as f:
        for n in names:
            v = f[n][()]
            out[n] = v.decode() if isinstance(v, bytes) else v.item()
        out["@iteration"] = int(f.attrs["iteration"])
    return out


def evals_of(records, name=ACCURACY):
    """[(iteration, value)] of one evaluation metric, in iteration order."""
    return sorted((r["iteration"], r[name]) for r in records if name in r)


def expected_best(evals, mode):
    """(best iteration, best value, number of saves) by detectron2's strict comparison."""
    best, saves = None, 0
    for it, v in evals:
        if best is None or (v > best[1] if mode == "max" else v < best[1]):
            best, saves = (it, v), saves + 1
    return best[0], best[1], saves


def best_state(out):
    return h5_values(os.path.join(out, "model_best"),
                     ["best_checkpointer/best_metric", "best_checkpointer/best_iter",
                      "best_checkpointer/metric", "best_checkpointer/mode", "extra/iteration"])


def check_model_best(out, mode, max_iter, metric=ACCURACY):
    """model_best against metrics.json; returns (best iteration, value, saves)."""
    evals = evals_of(read_metrics(out), metric)
    check(len(evals) >= 3, "only %d evaluations in metrics.json" % len(evals))
    it, value, saves = expected_best(evals, mode)
    state = best_state(out)
    check(state["best_checkpointer/best_iter"] == it and
          state["best_checkpointer/best_metric"] == value,
          "model_best holds %r @ %r, metrics.json's best is %r @ %d" %
          (state["best_checkpointer/best_metric"], state["best_checkpointer/best_iter"], value, it))
    check(state["best_checkpointer/metric"] == metric and state["best_checkpointer/mode"] == mode,
          "model_best names %s" % state)
    trained = min(it, max_iter - 1)  # the final evaluation (at max_iter) follows step max_iter-1
    check(state["extra/iteration"] == trained and state["@iteration"] == trained,
          "model_best was saved after iteration %r, expected %d" % (state["extra/iteration"], trained))
    return it, value, saves, len(evals)


def periodic_checkpoints(out):
    return sorted(n for n in os.listdir(out) if re.fullmatch(r"model_\d{7}", n))


BEST = SMALL + ["SOLVER.MAX_ITER", 24, "SOLVER.CHECKPOINT_PERIOD", 5, "TEST.EVAL_PERIOD", 3,
                "LOG.PERIOD", 1, "CHECKPOINT.MAX_TO_KEEP", 1,
                "TEST.BEST_CHECKPOINT.METRIC", "%s/accuracy" % DATASET]


# Less noise and a larger lr: accuracy rises within a few evaluations, then stays or
# wobbles near 1, so some evaluations are not better (equal or worse).
BEST_MAX = BEST + ["TEST.BEST_CHECKPOINT.MODE", "max", "DATASETS.SYNTHETIC.NOISE", 3.0,
                   "SOLVER.BASE_LR", 0.05]


def case_best():
    max_iter = 24
    out_a = os.path.join(e2e.work_dir(), "uninterrupted")
    _, _, err = run(dtrain_cmd(2, CONFIG, out_a, BEST_MAX), log_name="a")
    it, value, saves, n_evals = check_model_best(out_a, "max", max_iter)
    first = err.count("Saved first model at")
    better = err.count("Saved best model as latest eval score for %s is" % ACCURACY)
    not_saved = err.count("Not saving as latest eval score for %s is" % ACCURACY)
    check((first, better, not_saved) == (1, saves - 1, n_evals - saves),
          "log lines: %d first, %d better, %d not saved; metrics.json has %d evaluations, "
          "%d improvements" % (first, better, not_saved, n_evals, saves))
    check(not_saved > 0 and better > 0, "the run should have both improving and other "
          "evaluations (%d saves of %d)" % (saves, n_evals))
    kept = periodic_checkpoints(out_a)
    check(kept == ["model_%07d" % 19], "retention (MAX_TO_KEEP 1) left %s" % kept)
    check(os.path.isdir(os.path.join(out_a, "model_final")), "no model_final")
    print("best: %d evaluations, %d saves; model_best = %.5f @ %d; periodic left %s" %
          (n_evals, saves, value, it, kept))

    # Killed right after the first evaluation (iteration 2, which always saves) and before
    # the first periodic checkpoint (iteration 4): the resume starts from model_best.
    out_b = os.path.join(e2e.work_dir(), "interrupted")
    fault = {"DTRAIN_FAULT": "train.after_step", "DTRAIN_FAULT_AFTER": "4"}
    rc, _, _ = run(dtrain_cmd(2, CONFIG, out_b, BEST_MAX), env_extra=fault, expect_rc=None,
                   log_name="b_killed")
    check(rc != 0, "the run with DTRAIN_FAULT was not killed")
    with open(os.path.join(out_b, "last_checkpoint")) as f:
        last = f.read().strip()
    check(last == "model_best", "after the kill last_checkpoint names %r" % last)
    _, _, err_b = run(dtrain_cmd(2, CONFIG, out_b, BEST_MAX, flags=["--resume"]),
                      log_name="b_resumed")
    check("Starting training from iteration 3" in err_b, "did not resume from model_best (3)")
    check("Saved first model" not in err_b, "the resumed run forgot its best")
    loss_a = e2e.losses_by_iteration(read_metrics(out_a))
    loss_b = e2e.losses_by_iteration(read_metrics(out_b))
    check(loss_a == loss_b, "total_loss differs after the resume from model_best")
    check(evals_of(read_metrics(out_a)) == evals_of(read_metrics(out_b)),
          "evaluations differ after the resume from model_best")
    for name in ("model_final", "model_best"):
        compare_checkpoints(os.path.join(out_a, name), os.path.join(out_b, name))
    print("best: resumed from model_best (iteration 2): bitwise the uninterrupted run")


def case_best_kept():
    max_iter = 24
    out = os.path.join(e2e.work_dir(), "out")
    overrides = BEST + ["TEST.BEST_CHECKPOINT.MODE", "min", "CHECKPOINT.MAX_TO_KEEP", 0]
    # Killed in iteration 12: checkpoints after 4 and 9, evaluations after 2, 5, 8, 11.
    fault = {"DTRAIN_FAULT": "train.after_step", "DTRAIN_FAULT_AFTER": "13"}
    rc, _, _ = run(dtrain_cmd(2, CONFIG, out, overrides), env_extra=fault, expect_rc=None,
                   log_name="killed")
    check(rc != 0, "the run with DTRAIN_FAULT was not killed")
    before = best_state(out)
    with open(os.path.join(out, "last_checkpoint")) as f:
        last = f.read().strip()
    _, _, err = run(dtrain_cmd(2, CONFIG, out, overrides, flags=["--resume"]), log_name="resumed")
    resumed_at = int(re.search(r"Starting training from iteration (\d+)", err).group(1))
    check(resumed_at >= 10, "resumed at %d from %s" % (resumed_at, last))
    evals = evals_of(read_metrics(out))
    later = [v for it, v in evals if it >= resumed_at]
    check(later and later[0] >= before["best_checkpointer/best_metric"],
          "test set-up: the resumed run's first evaluation %r is better than the restored best "
          "%r, so keeping the best is not exercised" % (later[:1], before["best_checkpointer/best_metric"]))
    check("Saved first model" not in err, "the resumed run started without a best (reset)")
    check_model_best(out, "min", max_iter)
    after = best_state(out)
    if later and min(later) >= before["best_checkpointer/best_metric"]:
        check(after == before, "model_best changed though no later evaluation was better: "
              "%s -> %s" % (before, after))
    print("best_kept: resumed at %d (from %s) with best %.5f @ %d; model_best now %.5f @ %d" %
          (resumed_at, last, before["best_checkpointer/best_metric"],
           before["best_checkpointer/best_iter"], after["best_checkpointer/best_metric"],
           after["best_checkpointer/best_iter"]))


def case_metrics_extend():
    out = os.path.join(e2e.work_dir(), "out")
    base = SMALL + ["SOLVER.CHECKPOINT_PERIOD", 1000, "TEST.EVAL_PERIOD", 20, "LOG.PERIOD", 20]
    run(dtrain_cmd(0, CONFIG, out, base + ["SOLVER.MAX_ITER", 50]), log_name="first")
    first = read_metrics(out)
    check([r["iteration"] for r in first] == [19, 39, 49, 50],
          "the first run wrote iterations %s" % [r["iteration"] for r in first])
    check(ACCURACY in first[-1], "no final evaluation at 50: %s" % first[-1])
    _, _, err = run(dtrain_cmd(0, CONFIG, out, base + ["SOLVER.MAX_ITER", 60], flags=["--resume"]),
                    log_name="extended")
    check("Starting training from iteration 50" in err, "the extension did not start at 50")
    records = read_metrics(out)
    iters = [r["iteration"] for r in records]
    check(iters == [19, 39, 49, 50, 59, 60], "after the extension metrics.json has %s" % iters)
    check(records[:4] == first, "the first run's records changed: %s -> %s" % (first, records[:4]))
    check(ACCURACY in records[-1], "no final evaluation at 60")
    print("metrics_extend: %s; the evaluation at 50 (%s) kept" % (iters, first[-1][ACCURACY]))


def case_metrics_killed():
    base = SMALL + ["SOLVER.MAX_ITER", 20, "SOLVER.CHECKPOINT_PERIOD", 5, "TEST.EVAL_PERIOD", 4,
                    "LOG.PERIOD", 3]
    out_a = os.path.join(e2e.work_dir(), "uninterrupted")
    run(dtrain_cmd(0, CONFIG, out_a, base), log_name="a")
    out_b = os.path.join(e2e.work_dir(), "interrupted")
    fault = {"DTRAIN_FAULT": "train.after_step", "DTRAIN_FAULT_AFTER": "14"}
    rc, _, _ = run(dtrain_cmd(0, CONFIG, out_b, base), env_extra=fault, expect_rc=None,
                   log_name="b_killed")
    check(rc != 0, "the run with DTRAIN_FAULT was not killed")
    killed = [r["iteration"] for r in read_metrics(out_b)]
    check(max(killed) >= 10, "the killed run logged nothing past its checkpoint: %s" % killed)
    run(dtrain_cmd(0, CONFIG, out_b, base, flags=["--resume"]), log_name="b_resumed")
    a, b = read_metrics(out_a), read_metrics(out_b)
    iters = [r["iteration"] for r in b]
    check(len(iters) == len(set(iters)), "an iteration appears twice: %s" % iters)
    check(iters == [r["iteration"] for r in a], "iterations %s, uninterrupted %s" %
          (iters, [r["iteration"] for r in a]))

    def untimed(r):
        return {k: v for k, v in r.items() if not k.endswith("time")}
    check([untimed(r) for r in a] == [untimed(r) for r in b], "records differ from the "
          "uninterrupted run's")
    print("metrics_killed: killed run logged %s; after the resume %s" % (killed, iters))


CASES = {"best": case_best, "best_kept": case_best_kept, "metrics_extend": case_metrics_extend,
         "metrics_killed": case_metrics_killed}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtrain", required=True)
    parser.add_argument("--compare", required=True)
    parser.add_argument("--mpiexec", required=True)
    parser.add_argument("--source-dir", required=True)
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("case", choices=sorted(CASES))
    args = parser.parse_args()
    for attr in ("dtrain", "compare", "source_dir", "work_dir"):
        setattr(args, attr, os.path.abspath(getattr(args, attr)))
    e2e.ARGS = args
    work = e2e.work_dir()
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    try:
        CASES[args.case]()
    except e2e.CheckFailed as e:
        print("FAILED %s: %s (logs in %s)" % (args.case, e, work))
        return 1
    print("PASSED %s" % args.case)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
