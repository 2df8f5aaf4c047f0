#!/usr/bin/python3
"""End-to-end tests that run the real `dtrain train` executable (one case per CTest test).

    e2e.py --dtrain build/bin/dtrain --compare build/tests/ckpt_compare \
           --mpiexec /usr/bin/mpiexec --source-dir . --work-dir /tmp/e2e CASE

Cases:
  learn_mlp, learn_resnet18, learn_gpt  each reference config trains on 2 ranks and the
                                        last total_loss is well below the first
  resume_mlp, resume_gpt                2 ranks, warmup and an LR step after the resume
                                        point: a run SIGKILLed during a checkpoint save and
                                        resumed ends bitwise identical to an uninterrupted
                                        one, with the same total_loss at every iteration
  resume_loader                         the same on Fashion-MNIST with random flips and crops
                                        and data loader workers (0 uninterrupted, 1 killed,
                                        4 resumed)
  resume_mlp_async                      the same with CHECKPOINT.ASYNC true, killed during
                                        the background write; its checkpoints are bitwise
                                        equal to those of a synchronous run
  one_step_equivalence                  mlp and gpt: one step with global batch B on 2 ranks
                                        matches one step on 1 process (loss within 1e-6,
                                        model and optimizer state within 1e-5 per tensor)
  weights                               MODEL.WEIGHTS without --resume loads the model only
                                        and starts at iteration 0 (single process);
                                        --eval-only prints the metrics of the weights
  weights_url                           --eval-only with MODEL.WEIGHTS an http:// URL on 2
                                        ranks (loopback http_test_server.py): downloaded
                                        once per node into DTRAIN_CACHE, verified, the same
                                        metrics as the local path, a cache hit the second
                                        time; corrupt, cut, flaky and missing downloads
                                        fail clearly (or retry) and cache nothing
  weights_url_sigterm                   SIGTERM while MODEL.WEIGHTS trickles in from a URL
                                        (one byte a second): the job stops within seconds,
                                        with status 75 alone and non-zero under mpirun -np 2
                                        (signalled itself, mpirun exits 1), and nothing is
                                        cached
  weights_pytorch                       foreign weight files through the real CLI: a dtrain
                                        model exported to .pth, rewritten by python3-torch
                                        as a detectron2 checkpoint of a DDP model (module.
                                        keys, protocol 4), and as .safetensors, evaluate
                                        like the checkpoint with CHECKPOINT.STRICT on 2
                                        ranks; torchvision's resnet18 state dict loads
                                        strictly into MODEL.RESNET.STEM imagenet
  config_errors                         unknown keys and a global batch not divisible by
                                        the world size exit with status 2 and say why

Only the standard library is used. Each case works in --work-dir/CASE (wiped first) and
exits non-zero with a message on the first failed check.
"""

import argparse
import filecmp
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

ARGS = None
RUN_TIMEOUT_S = 240


class CheckFailed(Exception):
    pass


def check(cond, message):
    if not cond:
        raise CheckFailed(message)


def config_path(name):
    return os.path.join(ARGS.source_dir, "configs", name)


def run(cmd, env_extra=None, expect_rc=0, log_name=None):
    """Runs cmd; returns (rc, stdout, stderr). Checks rc unless expect_rc is None."""
    env = dict(os.environ)
    env.update(env_extra or {})
    start = time.time()
    # A session of its own: on timeout the whole job (mpirun and every rank) is killed.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        sys.stdout.write(out[-6000:] + err[-6000:])
        raise CheckFailed("timed out after %d s: %s" % (RUN_TIMEOUT_S, " ".join(cmd)))
    elapsed = time.time() - start
    print("$ %s%s  -> rc %d in %.1f s" % (
        "".join("%s=%s " % kv for kv in (env_extra or {}).items()), " ".join(cmd),
        proc.returncode, elapsed))
    if log_name:
        with open(os.path.join(work_dir(), log_name + ".log"), "w") as f:
            f.write(out + err)
    if expect_rc is not None and proc.returncode != expect_rc:
        sys.stdout.write(out[-6000:])
        sys.stdout.write(err[-6000:])
        raise CheckFailed("expected exit status %d, got %d" % (expect_rc, proc.returncode))
    return proc.returncode, out, err


def dtrain_cmd(ranks, config, out_dir, overrides, flags=()):
    """The command line of `dtrain train` on `ranks` ranks (0: no mpirun at all)."""
    cmd = [ARGS.dtrain, "train", "--config-file", config_path(config)] + list(flags)
    cmd += ["OUTPUT_DIR", out_dir] + [str(x) for x in overrides]
    if ranks == 0:
        return cmd
    return [ARGS.mpiexec, "-np", str(ranks), "--bind-to", "none"] + cmd


def work_dir():
    return os.path.join(ARGS.work_dir, ARGS.case)


def read_metrics(out_dir):
    """metrics.json as a list of dicts, in file order."""
    path = os.path.join(out_dir, "metrics.json")
    check(os.path.exists(path), "no metrics file %s" % path)
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def losses_by_iteration(records):
    """{iteration: total_loss} of the records that have one; checks no iteration twice."""
    out = {}
    for r in records:
        if "total_loss" in r:
            check(r["iteration"] not in out,
                  "iteration %d appears twice in metrics.json" % r["iteration"])
            out[r["iteration"]] = r["total_loss"]
    return out


def final_eval_line(stderr):
    """The last 'Evaluation on ...: k=v ...' log line's text after the colon."""
    lines = re.findall(r"Evaluation on (\S+): (.*)", stderr)
    check(lines, "no 'Evaluation on' line in the log")
    return lines[-1][0] + ": " + lines[-1][1].strip()


def eval_metrics(line):
    return {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.eE+-]+|nan|inf)", line)}


def compare_checkpoints(a, b):
    proc = subprocess.run([ARGS.compare, a, b], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=RUN_TIMEOUT_S)
    print(proc.stdout.strip())
    check(proc.returncode == 0, "checkpoints %s and %s differ (ckpt_compare rc %d)" %
          (a, b, proc.returncode))


# ---- (a) every reference config learns --------------------------------------------------

# config -> (iterations, overrides). Checkpoints only at the end; a metrics line per step.
LEARN = {
    "mlp": ("mlp_synthetic.yaml", 40, ["SOLVER.STEPS", "()"]),
    "resnet18": ("resnet18_synthetic.yaml", 30, ["SOLVER.STEPS", "()"]),
    "gpt": ("gpt_tiny_synthetic.yaml", 60, []),
}


def case_learn(name):
    config, iters, extra = LEARN[name]
    out = os.path.join(work_dir(), "out")
    overrides = ["SOLVER.MAX_ITER", iters, "SOLVER.CHECKPOINT_PERIOD", 100000, "LOG.PERIOD", 1]
    _, _, err = run(dtrain_cmd(2, config, out, overrides + extra), log_name="train")
    losses = losses_by_iteration(read_metrics(out))
    check(sorted(losses) == list(range(iters)),
          "expected total_loss for iterations 0..%d, got %s" % (iters - 1, sorted(losses)))
    first, last = losses[0], losses[iters - 1]
    print("%s: first total_loss %.4f, last %.4f (ratio %.3f); final %s" %
          (name, first, last, last / first, final_eval_line(err)))
    check(last < 0.8 * first, "loss did not drop: first %.4f, last %.4f" % (first, last))
    check(os.path.isdir(os.path.join(out, "model_final")), "no model_final")


# ---- (b) exact resume ---------------------------------------------------------------------

MAX_ITER = 16
PERIOD = 5  # saves after iterations 4, 9, 14 (and model_final after 15)
KILL_AT_SAVE = 3  # SIGKILL both ranks when the save of iteration 14 starts
RESUME_FROM = 9

RESUME = {
    # WARMUP_ITERS 12 and STEPS (13,): warmup ends and the LR steps after the resume point.
    "mlp": ("mlp_synthetic.yaml", []),
    "gpt": ("gpt_tiny_synthetic.yaml", ["MODEL.GPT.DROPOUT", 0.1,
                                        "SOLVER.LR_SCHEDULER_NAME", "WarmupMultiStepLR"]),
    # Real images with random flips and crops, made by data loader workers that read
    # ahead: see RESUME_WORKERS.
    "loader": ("mlp_fashion_mnist.yaml", ["MODEL.MLP.HIDDEN_DIMS", "[32]",
                                          "SOLVER.IMS_PER_BATCH", 32,
                                          "INPUT.RANDOM_FLIP", "horizontal",
                                          "INPUT.CROP.ENABLED", "true",
                                          "INPUT.CROP.PADDING", 3]),
}
# DATALOADER.NUM_WORKERS of the uninterrupted run, the killed run and the resumed run:
# the loader's read-ahead must neither change a batch nor leak into the saved position.
RESUME_WORKERS = {"loader": (0, 1, 4)}


def case_resume(name, async_save=False):
    """With async_save, every run saves with CHECKPOINT.ASYNC true, B is killed in the
    middle of the background shard write (training has gone on meanwhile), and A is also
    compared with a synchronous run: asynchronous saves change nothing."""
    config, extra = RESUME[name]
    overrides = ["SOLVER.MAX_ITER", MAX_ITER, "SOLVER.CHECKPOINT_PERIOD", PERIOD,
                 "SOLVER.WARMUP_ITERS", 12, "SOLVER.STEPS", "(13,)", "SOLVER.GAMMA", 0.5,
                 "LOG.PERIOD", 1, "TEST.EVAL_PERIOD", 0] + extra
    if async_save:
        overrides += ["CHECKPOINT.ASYNC", "true"]
    out_a = os.path.join(work_dir(), "uninterrupted")
    out_b = os.path.join(work_dir(), "interrupted")
    workers = [["DATALOADER.NUM_WORKERS", n] for n in RESUME_WORKERS.get(name, (0, 0, 0))]

    _, _, err_a = run(dtrain_cmd(2, config, out_a, overrides + workers[0]), log_name="a")
    if async_save:
        check("asynchronously" in err_a, "the run with CHECKPOINT.ASYNC true did not save "
              "asynchronously")
        out_sync = os.path.join(work_dir(), "synchronous")
        run(dtrain_cmd(2, config, out_sync, overrides[:-2]), log_name="sync")
        for ckpt in ["model_%07d" % (PERIOD * k - 1) for k in (1, 2, 3)] + ["model_final"]:
            compare_checkpoints(os.path.join(out_sync, ckpt), os.path.join(out_a, ckpt))

    # B: killed (SIGKILL, every rank) when the third periodic save begins (async: in the
    # middle of its background shard write).
    point = "ckpt.during_shard" if async_save else "ckpt.before_shard"
    fault = {"DTRAIN_FAULT": point, "DTRAIN_FAULT_AFTER": str(KILL_AT_SAVE)}
    rc, _, _ = run(dtrain_cmd(2, config, out_b, overrides + workers[1]), env_extra=fault,
                   expect_rc=None, log_name="b_killed")
    check(rc != 0, "the run with DTRAIN_FAULT=%s was not interrupted" % point)
    with open(os.path.join(out_b, "last_checkpoint")) as f:
        last = f.read().strip()
    check(last == "model_%07d" % RESUME_FROM,
          "after the kill last_checkpoint names %r, expected model_%07d" % (last, RESUME_FROM))
    check(not os.path.exists(os.path.join(out_b, "model_%07d" % (PERIOD * KILL_AT_SAVE - 1))),
          "the interrupted save left a committed-looking directory")
    check(not os.path.exists(os.path.join(out_b, "model_final")), "model_final before resume")
    killed = losses_by_iteration(read_metrics(out_b))
    # A synchronous save stops training; an asynchronous one lets it go on (but never
    # past model_final, which waits for the write in flight).
    check(max(killed) == PERIOD * KILL_AT_SAVE - 2 or
          (async_save and PERIOD * KILL_AT_SAVE - 2 <= max(killed) < MAX_ITER),
          "the killed run logged up to iteration %d" % max(killed))
    _, _, err_b = run(dtrain_cmd(2, config, out_b, overrides + workers[2], flags=["--resume"]),
                      log_name="b_resumed")
    check("Starting training from iteration %d" % (RESUME_FROM + 1) in err_b,
          "the resumed run did not start at iteration %d" % (RESUME_FROM + 1))

    rec_a = read_metrics(out_a)
    rec_b = read_metrics(out_b)
    loss_a = losses_by_iteration(rec_a)
    lr_a = {r["iteration"]: r["lr"] for r in rec_a if "lr" in r}
    # The resumed run drops the killed run's records after the checkpoint (they were
    # recomputed), so metrics.json holds exactly one record per iteration.
    loss_all = losses_by_iteration(rec_b)  # checks that no iteration appears twice
    check(sorted(loss_all) == list(range(0, MAX_ITER)),
          "metrics.json after the resume has iterations %s" % sorted(loss_all))
    resumed = [r for r in rec_b if r["iteration"] > RESUME_FROM]
    loss_b = losses_by_iteration(resumed)
    lr_b = {r["iteration"]: r["lr"] for r in resumed if "lr" in r}
    expected_iters = list(range(RESUME_FROM + 1, MAX_ITER))
    check(sorted(loss_b) == expected_iters,
          "resumed run logged iterations %s, expected %s" % (sorted(loss_b), expected_iters))
    for it in expected_iters:
        check(loss_b[it] == loss_a[it], "iteration %d: total_loss %r after resume, %r "
              "uninterrupted" % (it, loss_b[it], loss_a[it]))
        check(lr_b[it] == lr_a[it], "iteration %d: lr %r vs %r" % (it, lr_b[it], lr_a[it]))
    # The schedule really had warmup and a step after the resume point.
    check(lr_a[RESUME_FROM + 1] < lr_a[12] and lr_a[13] < lr_a[12],
          "lr schedule not as intended: %s" % lr_a)
    # Before the kill, B was the same run as A.
    for it in range(0, RESUME_FROM + 1):
        check(killed[it] == loss_a[it], "iteration %d differs before the kill" % it)
    print("%s: total_loss identical at iterations %d..%d after the resume (last %.6f)" %
          (name, RESUME_FROM + 1, MAX_ITER - 1, loss_a[MAX_ITER - 1]))

    compare_checkpoints(os.path.join(out_a, "model_final"), os.path.join(out_b, "model_final"))
    name_14 = "model_%07d" % (PERIOD * KILL_AT_SAVE - 1)
    compare_checkpoints(os.path.join(out_a, name_14), os.path.join(out_b, name_14))
    check(final_eval_line(err_a) == final_eval_line(err_b), "final evaluations differ: %s / %s"
          % (final_eval_line(err_a), final_eval_line(err_b)))


# ---- one step on 2 ranks == one step on 1 rank ------------------------------------------

def case_one_step_equivalence():
    """The real trainer: global batch B on 2 ranks against B in one process, same seed."""
    # gpt with SGD: AdamW's first update lr * g / (|g| + eps) turns the float noise of
    # near-zero gradient elements (~1e-10) into parameter differences of ~1e-5; with SGD
    # the parameters move by lr * g and the momentum buffers hold the averaged gradient.
    for config, extra in (("mlp_synthetic.yaml", []),
                          ("gpt_tiny_synthetic.yaml", ["MODEL.GPT.DROPOUT", 0.0,
                                                       "SOLVER.OPTIMIZER", "SGD",
                                                       "SOLVER.BASE_LR", 0.1])):
        # No warmup: the first step uses the full BASE_LR (else it is ~1000x smaller).
        overrides = ["SOLVER.MAX_ITER", 1, "SOLVER.WARMUP_ITERS", 0, "LOG.PERIOD", 1,
                     "SOLVER.CHECKPOINT_PERIOD", 100000, "DATASETS.TEST", "[]"] + extra
        outs = {}
        for ranks in (2, 0):
            outs[ranks] = os.path.join(work_dir(), "%s_np%d" % (config.split("_")[0], ranks))
            run(dtrain_cmd(ranks, config, outs[ranks], overrides),
                log_name=os.path.basename(outs[ranks]))
        loss2 = losses_by_iteration(read_metrics(outs[2]))[0]
        loss1 = losses_by_iteration(read_metrics(outs[0]))[0]
        print("%s: total_loss %r on 2 ranks, %r on 1 (relative difference %.2g)" %
              (config, loss2, loss1, abs(loss2 - loss1) / abs(loss1)))
        check(abs(loss2 - loss1) <= 1e-6 * abs(loss1), "losses differ beyond 1e-6")
        # Model and optimizer state after the step (the RNG states and thread counts are
        # per rank by design: one stream and one count per rank).
        proc = subprocess.run([ARGS.compare, "--rtol", "1e-5", "--ignore", "rng/",
                               "--ignore", "threads/",
                               "--ignore-world-size", os.path.join(outs[2], "model_final"),
                               os.path.join(outs[0], "model_final")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=RUN_TIMEOUT_S)
        print(proc.stdout.strip())
        check(proc.returncode == 0, "one step on 2 ranks differs from one step on 1 rank")


# ---- (c) MODEL.WEIGHTS and (e) --eval-only ----------------------------------------------

def case_weights():
    config = "mlp_synthetic.yaml"
    base = ["SOLVER.CHECKPOINT_PERIOD", 100000, "LOG.PERIOD", 1, "SOLVER.STEPS", "()",
            "SOLVER.BASE_LR", 0.01, "SOLVER.WARMUP_FACTOR", 0.001,
            "MODEL.MLP.HIDDEN_DIMS", "[512]"]
    trained = os.path.join(work_dir(), "trained")
    _, _, err = run(dtrain_cmd(2, config, trained, base + ["SOLVER.MAX_ITER", 30]),
                    log_name="train")
    trained_eval = eval_metrics(final_eval_line(err))
    trained_losses = losses_by_iteration(read_metrics(trained))
    weights = os.path.join(trained, "model_final")
    # A copy of the trained run's OUTPUT_DIR: it has a last_checkpoint, which only
    # --resume may use.
    trained_copy = os.path.join(work_dir(), "trained_copy")
    shutil.copytree(trained, trained_copy)

    # Single process, MODEL.WEIGHTS: the model only, from iteration 0 -- in a fresh
    # OUTPUT_DIR, in one holding a last_checkpoint (ignored without --resume), and with
    # --resume when OUTPUT_DIR has no checkpoint (falls back to MODEL.WEIGHTS).
    for name, out, flags in (("finetune", os.path.join(work_dir(), "finetune"), []),
                             ("finetune_in_trained_dir", trained_copy, []),
                             ("resume_without_checkpoint", os.path.join(work_dir(), "fallback"),
                              ["--resume"])):
        lines_before = len(read_metrics(out)) if os.path.exists(out) else 0
        _, _, err = run(dtrain_cmd(0, config, out, base + ["SOLVER.MAX_ITER", 3,
                                                          "MODEL.WEIGHTS", weights], flags),
                        log_name=name)
        check("Starting training from iteration 0" in err, name + ": did not start at 0")
        recs = read_metrics(out)[lines_before:]
        losses = losses_by_iteration(recs)
        check(sorted(losses) == [0, 1, 2], name + ": iterations %s" % sorted(losses))
        # The scheduler starts over (warmup from BASE_LR * WARMUP_FACTOR)...
        lr0 = [r["lr"] for r in recs if r["iteration"] == 0][0]
        check(abs(lr0 - 0.01 * 0.001) < 1e-12, name + ": lr at iteration 0 is %r" % lr0)
        # ... but the model is the trained one: its loss is far below a fresh model's.
        print("%s: first total_loss %.4f (fresh model: %.4f, trained model's last: %.4f)" %
              (name, losses[0], trained_losses[0], trained_losses[29]))
        check(losses[0] < 0.5 * trained_losses[0], name + ": the weights were not loaded")

    # --eval-only with MODEL.WEIGHTS: the same metrics as after training, no training.
    for ranks in (2, 0):
        out = os.path.join(work_dir(), "eval_np%d" % ranks)
        _, _, err = run(dtrain_cmd(ranks, config, out, ["MODEL.WEIGHTS", weights,
                                                        "MODEL.MLP.HIDDEN_DIMS", "[512]"],
                                   ["--eval-only"]), log_name="eval_np%d" % ranks)
        check("Starting training" not in err, "--eval-only trained")
        line = final_eval_line(err)
        m = eval_metrics(line)
        print("eval-only on %d rank(s): %s" % (max(ranks, 1), line))
        check(set(m) == {"accuracy", "loss"}, "metrics %s" % m)
        check(m["accuracy"] == trained_eval["accuracy"],
              "accuracy %r, after training %r" % (m["accuracy"], trained_eval["accuracy"]))
        check(abs(m["loss"] - trained_eval["loss"]) <= 2e-4,
              "loss %r, after training %r" % (m["loss"], trained_eval["loss"]))
        check(not os.path.exists(os.path.join(out, "model_final")), "--eval-only saved")


# ---- MODEL.WEIGHTS from an http:// URL ----------------------------------------------------

class TestServer:
    """tests/checkpoint/storage/http_test_server.py serving `root` on 127.0.0.1 (a free
    port); the mode is the URL path's first segment (/ok/, /cut/, /corrupt/<name>/, ...)."""

    def __init__(self, root):
        script = os.path.join(ARGS.source_dir, "tests", "checkpoint", "storage",
                              "http_test_server.py")
        # It exits when its stdin closes (also if this script dies) or after --lifetime s.
        self.proc = subprocess.Popen([sys.executable, script, "--root", root, "--lifetime",
                                      str(RUN_TIMEOUT_S * 2)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, universal_newlines=True)
        line = self.proc.stdout.readline()
        check(line.startswith("PORT "), "the test server did not start: %r" % line)
        self.port = int(line.split()[1])
        # Never through a proxy from the environment.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def url(self, path):
        return "http://127.0.0.1:%d/%s" % (self.port, path.lstrip("/"))

    def counts(self):
        """{path: GETs so far, "total": n}"""
        with self.opener.open(self.url("stats/json"), timeout=10) as r:
            return json.loads(r.read().decode())

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def cache_files(cache):
    """Every file under `cache`, relative to it."""
    out = []
    for d, _, files in os.walk(cache):
        out += [os.path.relpath(os.path.join(d, f), cache) for f in files]
    return sorted(out)


def check_nothing_cached(cache, what):
    """After a failed fetch: no entry that looks complete, and no temporaries left."""
    for rel in cache_files(cache):
        parts = rel.split(os.sep)
        check(parts[-1] == ".lock", "%s: %s left in the cache (only .lock files may remain "
              "after a failed download); cache: %s" % (what, rel, cache_files(cache)))
    for d, dirs, _ in os.walk(cache):
        for name in dirs:
            check(not os.path.exists(os.path.join(d, name, "checkpoint.h5")),
                  "%s: %s looks like a cached checkpoint" % (what, os.path.join(d, name)))


def torch_python(script, *args):
    """Runs a python3-torch script (Debian's interpreter) with args; checks it succeeds."""
    run(["/usr/bin/python3", "-c", script] + [str(a) for a in args], log_name="torch_peer")


def case_weights_pytorch():
    config = "mlp_synthetic.yaml"
    small = ["MODEL.MLP.HIDDEN_DIMS", "[512]"]
    trained = os.path.join(work_dir(), "trained")
    _, _, err = run(dtrain_cmd(2, config, trained, small + [
        "SOLVER.MAX_ITER", 20, "SOLVER.STEPS", "()", "SOLVER.CHECKPOINT_PERIOD", 100000]),
        log_name="train")
    trained_eval = eval_metrics(final_eval_line(err))
    pth = os.path.join(work_dir(), "export.pth")
    run([ARGS.dtrain, "ckpt", "export", trained, "--to", pth], log_name="export")
    d2 = os.path.join(work_dir(), "d2_ddp.pth")
    torch_python("""
import collections, sys, torch
src, dst = sys.argv[1:3]
top = torch.load(src)
assert sorted(top) == ["iteration", "model"] and isinstance(top["model"], collections.OrderedDict)
model = collections.OrderedDict(("module." + k, v) for k, v in top["model"].items())
torch.save({"model": model, "iteration": top["iteration"], "__author__": "e2e"}, dst,
           pickle_protocol=4)
""", pth, d2)
    st = os.path.join(work_dir(), "export.safetensors")
    run([ARGS.dtrain, "ckpt", "export", trained, "--to", st], log_name="export_st")
    for name, weights in (("d2_ddp", d2), ("safetensors", st)):
        out = os.path.join(work_dir(), "eval_" + name)
        _, _, err = run(dtrain_cmd(2, config, out, small + ["MODEL.WEIGHTS", weights,
                                                            "CHECKPOINT.STRICT", "True"],
                                   ["--eval-only"]), log_name="eval_" + name)
        m = eval_metrics(final_eval_line(err))
        print("%s: %s (trained: %s)" % (name, m, trained_eval))
        check(m["accuracy"] == trained_eval["accuracy"], name + ": accuracy %r" % m["accuracy"])
        check(abs(m["loss"] - trained_eval["loss"]) <= 2e-4, name + ": loss %r" % m["loss"])
    # torchvision's resnet18 as published (an OrderedDict) into the ImageNet-stem resnet.
    tv = os.path.join(work_dir(), "resnet18.pth")
    torch_python("""
import sys, torch, torchvision
torch.manual_seed(0)
torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), sys.argv[1])
""", tv)
    out = os.path.join(work_dir(), "eval_resnet18")
    _, _, err = run(dtrain_cmd(2, "resnet18_synthetic.yaml", out, [
        "MODEL.RESNET.STEM", "imagenet", "MODEL.RESNET.WIDTH", 64, "MODEL.WEIGHTS", tv,
        "CHECKPOINT.STRICT", "True", "DATASETS.SYNTHETIC.NUM_TEST", 64], ["--eval-only"]),
        log_name="eval_resnet18")
    check("Loaded torch zip weights from %s (122 of 122 model tensors)" % tv in err,
          "resnet18: not every tensor loaded")
    print("resnet18: " + final_eval_line(err))


def case_weights_url():
    config = "mlp_synthetic.yaml"
    model = ["MODEL.MLP.HIDDEN_DIMS", "[512]"]
    trained = os.path.join(work_dir(), "trained")
    run(dtrain_cmd(2, config, trained, model + ["SOLVER.MAX_ITER", 10, "SOLVER.STEPS", "()",
                                                "SOLVER.CHECKPOINT_PERIOD", 100000]),
        log_name="train")
    weights = os.path.join(trained, "model_final")
    files = sorted(os.listdir(weights))
    check(files == ["checkpoint.h5", "shard-00000-of-00002.h5", "shard-00001-of-00002.h5"],
          "model_final holds %s" % files)
    eval_out = os.path.join(work_dir(), "eval")

    def eval_only(name, weights_path, cache, expect_rc=0):
        return run(dtrain_cmd(2, config, eval_out, model + ["MODEL.WEIGHTS", weights_path],
                              ["--eval-only"]),
                   env_extra={"DTRAIN_CACHE": cache}, expect_rc=expect_rc, log_name=name)

    _, _, err = eval_only("eval_local", weights, os.path.join(work_dir(), "cache_unused"))
    local_line = final_eval_line(err)
    print("local path: %s" % local_line)

    server = TestServer(work_dir())
    try:
        # 1. Downloaded once (by local rank 0), verified, published, loaded: the same metrics.
        url = server.url("ok/trained/model_final")
        cache = os.path.join(work_dir(), "cache_ok")
        before = server.counts()
        _, _, err = eval_only("eval_url", url, cache)
        line = final_eval_line(err)
        print("%s: %s" % (url, line))
        check(line == local_line, "metrics from the URL %r differ from the local path's %r"
              % (line, local_line))
        after = server.counts()
        gets = {p: after.get(p, 0) - before.get(p, 0) for p in after if p != "total"}
        gets = {p: n for p, n in gets.items() if n}
        expected = {"/ok/trained/model_final/" + f: 1 for f in files}
        check(gets == expected, "expected one GET per file %s, the server saw %s"
              % (sorted(expected), gets))
        downloads = [l for l in err.splitlines() if "downloaded http://" in l]
        check(len(downloads) == len(files) and
              all(l.startswith("[dtrain r0/2") for l in downloads),
              "expected %d downloads, all by rank 0 (local rank 0): %s" % (len(files), downloads))
        entries = [f for f in cache_files(cache) if not f.endswith(".lock")]
        check(len(entries) == len(files) and all(os.sep + "model_final" + os.sep in f
                                                for f in entries),
              "the cache holds %s, expected the %d files of one model_final"
              % (entries, len(files)))
        cached = os.path.join(cache, os.path.dirname(entries[0]))
        check(not any(n.startswith(".") for n in os.listdir(os.path.dirname(cached))
                      if n != ".lock"), "temporaries left beside %s" % cached)
        for f in files:
            check(filecmp.cmp(os.path.join(weights, f), os.path.join(cached, f), shallow=False),
                  "cached %s differs from the served file" % f)
        run([ARGS.dtrain, "ckpt", "verify", cached], log_name="verify_cached")

        # 2. A second run finds the cached copy: no request at all.
        before = server.counts()
        _, _, err = eval_only("eval_url_cached", url, cache)
        check(final_eval_line(err) == local_line, "metrics differ on the cache hit")
        check(server.counts() == before, "the cache hit downloaded again: %s -> %s"
              % (before, server.counts()))
        print("second run: served from the cache, no request")

        # 3. One byte of shard 0 wrong (its HDF5 structure intact): the piece checksum
        #    rejects it, the shard is downloaded once more, then the load fails.
        bad = "shard-00000-of-00002.h5"
        url = server.url("corrupt/%s/trained/model_final" % bad)
        cache = os.path.join(work_dir(), "cache_corrupt")
        before = server.counts()
        rc, _, err = eval_only("eval_corrupt", url, cache, expect_rc=None)
        check(rc != 0, "a corrupt shard was accepted (exit status 0)")
        errors = [l for l in err.splitlines() if " error] " in l]
        print("corrupt shard: rc %d: %s" % (rc, errors[-1] if errors else err[-500:]))
        check(any(url + "/" + bad in l and "is corrupt" in l and "checksum" in l
                  and "model/fc1.weight" in l for l in errors),
              "the error does not name the URL, the shard, the tensor and the checksum: %s"
              % errors)
        shard_path = "/corrupt/%s/trained/model_final/%s" % (bad, bad)
        check(server.counts().get(shard_path, 0) - before.get(shard_path, 0) == 2,
              "the corrupt shard was not downloaded exactly twice: %s" % server.counts())
        check_nothing_cached(cache, "corrupt shard")

        # 4. Every byte wrong: checkpoint.h5 itself does not parse.
        url = server.url("wrong/trained/model_final")
        cache = os.path.join(work_dir(), "cache_wrong")
        before = server.counts()
        rc, _, err = eval_only("eval_wrong", url, cache, expect_rc=None)
        check(rc != 0, "wrong bytes were accepted (exit status 0)")
        errors = [l for l in err.splitlines() if " error] " in l]
        print("wrong bytes: rc %d: %s" % (rc, errors[-1] if errors else err[-500:]))
        check(any(url in l and "checkpoint.h5 is not a dtrain checkpoint index" in l
                  for l in errors),
              "the error does not name the URL and say checkpoint.h5 is not an index: %s"
              % errors)
        index_path = "/wrong/trained/model_final/checkpoint.h5"
        check(server.counts().get(index_path, 0) - before.get(index_path, 0) == 2,
              "checkpoint.h5 was not downloaded exactly twice: %s" % server.counts())
        check_nothing_cached(cache, "wrong bytes")

        # 5. Every transfer cut short: retried, then a clear error.
        url = server.url("cut/trained/model_final")
        cache = os.path.join(work_dir(), "cache_cut")
        rc, _, err = eval_only("eval_cut", url, cache, expect_rc=None)
        check(rc != 0, "truncated downloads were accepted (exit status 0)")
        errors = [l for l in err.splitlines() if " error] " in l]
        print("cut: rc %d: %s" % (rc, errors[-1] if errors else err[-500:]))
        check(any(url + "/checkpoint.h5" in l and "failed after 4 attempt(s)" in l and
                  re.search(r"connection closed after \d+ of \d+ bytes", l) for l in errors),
              "the error does not name the file, the attempts and the byte counts: %s" % errors)
        check_nothing_cached(cache, "cut")

        # 6. The first GET of every file cut short: the retries succeed.
        url = server.url("flaky/1/trained/model_final")
        cache = os.path.join(work_dir(), "cache_flaky")
        before = server.counts()
        _, _, err = eval_only("eval_flaky", url, cache)
        check(final_eval_line(err) == local_line, "metrics differ after retried downloads")
        for f in files:
            p = "/flaky/1/trained/model_final/" + f
            check(server.counts().get(p, 0) - before.get(p, 0) == 2,
                  "%s: expected a cut GET and one retry: %s" % (f, server.counts()))
        check(sum(1 for f in cache_files(cache) if os.sep + "model_final" + os.sep in f and
                  not os.path.basename(f).startswith(".")) == len(files),
              "the retried download was not cached: %s" % cache_files(cache))
        print("flaky: every file cut once, retried, loaded with the same metrics")

        # 7. A URL that does not exist: HTTP 404, named, not retried.
        url = server.url("ok/no_such_run/model_final")
        cache = os.path.join(work_dir(), "cache_404")
        rc, _, err = eval_only("eval_404", url, cache, expect_rc=None)
        check(rc != 0, "a missing URL was accepted (exit status 0)")
        errors = [l for l in err.splitlines() if " error] " in l]
        print("404: rc %d: %s" % (rc, errors[-1] if errors else err[-500:]))
        check(any("HTTP 404 Not Found for " + url + "/checkpoint.h5" in l for l in errors),
              "the error does not say HTTP 404 and name the URL: %s" % errors)
        check("attempt" not in " ".join(errors), "a 404 was retried: %s" % errors)
        check_nothing_cached(cache, "404")
    finally:
        server.close()


def case_weights_url_sigterm():
    root = os.path.join(work_dir(), "served")
    os.makedirs(root)
    with open(os.path.join(root, "w.pt"), "wb") as f:
        f.write(os.urandom(100000))
    server = TestServer(root)
    try:
        for ranks in (0, 2):
            path = "/trickle/1000/w.pt?ranks=%d" % ranks  # one byte a second: ~28 hours
            url = server.url(path)
            cache = os.path.join(work_dir(), "cache_%d" % ranks)
            cmd = dtrain_cmd(ranks, "mlp_synthetic.yaml", os.path.join(work_dir(), "out"),
                             ["MODEL.WEIGHTS", url], ["--eval-only"])
            env = dict(os.environ, DTRAIN_CACHE=cache)
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    universal_newlines=True, start_new_session=True)
            try:
                # Wait until the download is under way, then signal the job.
                deadline = time.time() + 60
                while server.counts().get(path, 0) == 0:
                    check(time.time() < deadline and proc.poll() is None,
                          "the download did not start (rc %s)" % proc.poll())
                    time.sleep(0.1)
                time.sleep(0.5)
                sent = time.time()
                proc.send_signal(signal.SIGTERM)  # to mpirun, which forwards it to the ranks
                _, err = proc.communicate(timeout=30)
                took = time.time() - sent
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            with open(os.path.join(work_dir(), "sigterm_%d.log" % ranks), "w") as f:
                f.write(err)
            print("ranks %d: SIGTERM during the download -> rc %d after %.2f s"
                  % (ranks, proc.returncode, took))
            check(took < 10, "the job took %.1f s to stop after SIGTERM" % took)
            if ranks == 0:
                check(proc.returncode == 75, "expected exit status 75, got %d" % proc.returncode)
                check("interrupted by signal 15" in err and url in err,
                      "the log does not say the download of %s was interrupted: %s"
                      % (url, err[-2000:]))
            else:
                check(proc.returncode != 0, "mpirun exited 0 after SIGTERM")
            check_nothing_cached(cache, "SIGTERM, %d ranks" % ranks)
    finally:
        server.close()


# ---- (d) configuration errors -----------------------------------------------------------

def case_config_errors():
    out = os.path.join(work_dir(), "out")
    # Unknown key on the command line.
    _, _, err = run(dtrain_cmd(2, "mlp_synthetic.yaml", out, ["SOLVER.BASE_LRR", 0.1]),
                    expect_rc=2)
    check("SOLVER.BASE_LRR" in err and "did you mean 'SOLVER.BASE_LR'" in err,
          "message does not name the key and a suggestion: " + err[-2000:])
    check(err.count("SOLVER.BASE_LRR") == 1, "the error was printed by more than one rank")
    # Unknown key in a YAML file (inheriting a shipped config).
    bad_yaml = os.path.join(work_dir(), "bad.yaml")
    with open(bad_yaml, "w") as f:
        f.write("_BASE_: %s\nSOLVER:\n  MAX_ITERS: 5\n" % config_path("mlp_synthetic.yaml"))
    cmd = [ARGS.dtrain, "train", "--config-file", bad_yaml, "OUTPUT_DIR", out]
    _, _, err = run(cmd, expect_rc=2)
    check("SOLVER.MAX_ITERS" in err and "SOLVER.MAX_ITER'" in err and "bad.yaml" in err,
          "message does not name the file, the key and a suggestion: " + err[-2000:])
    # A global batch the world size does not divide.
    _, _, err = run(dtrain_cmd(2, "mlp_synthetic.yaml", out, ["SOLVER.IMS_PER_BATCH", 63]),
                    expect_rc=2)
    check("SOLVER.IMS_PER_BATCH (63)" in err and "world size (2)" in err,
          "message does not explain the batch error: " + err[-2000:])
    check("Starting training" not in err, "training started")
    # A missing config file.
    _, _, err = run([ARGS.dtrain, "train", "--config-file", os.path.join(work_dir(), "no.yaml")],
                    expect_rc=2)
    check("no.yaml" in err, "message does not name the missing file: " + err[-2000:])


CASES = {
    "learn_mlp": lambda: case_learn("mlp"),
    "learn_resnet18": lambda: case_learn("resnet18"),
    "learn_gpt": lambda: case_learn("gpt"),
    "resume_mlp": lambda: case_resume("mlp"),
    "resume_gpt": lambda: case_resume("gpt"),
    "resume_loader": lambda: case_resume("loader"),
    "resume_mlp_async": lambda: case_resume("mlp", async_save=True),
    "one_step_equivalence": case_one_step_equivalence,
    "weights": case_weights,
    "weights_url": case_weights_url,
    "weights_url_sigterm": case_weights_url_sigterm,
    "weights_pytorch": case_weights_pytorch,
    "config_errors": case_config_errors,
}


class Skipped(Exception):
    """The case cannot run on this machine (exit status 77, CTest's SKIP_RETURN_CODE)."""


def main(cases=None, description=None):
    """Runs the case named on the command line; `cases` and `description` let other
    scripts (powercut_e2e.py) reuse the same command line and reporting."""
    global ARGS
    cases = CASES if cases is None else cases
    parser = argparse.ArgumentParser(description=(description or __doc__).split("\n")[0])
    parser.add_argument("--dtrain", required=True, help="the dtrain executable")
    parser.add_argument("--compare", required=True, help="the ckpt_compare executable")
    parser.add_argument("--mpiexec", default="mpirun")
    parser.add_argument("--source-dir", required=True, help="repository root (configs/)")
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--tool", action="append", default=[],
                        help="NAME=PATH of a helper executable a case needs")
    parser.add_argument("case", choices=sorted(cases))
    ARGS = parser.parse_args()
    for attr in ("dtrain", "compare", "source_dir", "work_dir"):
        setattr(ARGS, attr, os.path.abspath(getattr(ARGS, attr)))
    ARGS.tools = dict(t.split("=", 1) for t in ARGS.tool)
    shutil.rmtree(work_dir(), ignore_errors=True)
    os.makedirs(work_dir())
    start = time.time()
    try:
        cases[ARGS.case]()
    except Skipped as e:
        print("SKIPPED %s: %s" % (ARGS.case, e))
        return 77
    except CheckFailed as e:
        print("FAILED %s: %s (logs in %s)" % (ARGS.case, e, work_dir()))
        return 1
    except subprocess.TimeoutExpired as e:  # ckpt_compare
        print("FAILED %s: timed out: %s" % (ARGS.case, e))
        return 1
    print("PASSED %s in %.1f s" % (ARGS.case, time.time() - start))
    shutil.rmtree(work_dir(), ignore_errors=True)  # checkpoints are large; logs only on failure
    return 0


if __name__ == "__main__":
    sys.exit(main())
