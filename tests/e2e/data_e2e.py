#!/usr/bin/python3
"""End-to-end tests of dtrain's data sets through the real `dtrain train` (one case per run).

    data_e2e.py --dtrain build/bin/dtrain --source-dir . --work-dir /tmp/data_e2e CASE

Cases:
  h5_larger_than_memory
      A layout-A file (uint8 images, ~614 MB, written in blocks by
      tools/make_h5_dataset.py under /tmp) trains for a few iterations under an address
      space limit (RLIMIT_AS) of the baseline of the same training on a small file plus
      128 MiB: several times smaller than the file, so the run only passes when the file
      is read lazily (the read-whole loader fails to allocate it). The baseline is
      measured in this run (LibTorch and Open MPI reserve ~1-2 GB of address space). The
      file is deleted afterwards.

Only the standard library is used (the generator needs /usr/bin/python3 with h5py and
numpy; without them the case is skipped with exit code 77).
"""

import argparse
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e import CheckFailed, check  # noqa: E402  (shared with the other e2e scripts)

ARGS = None
MARGIN = 128 << 20          # address space allowed above the measured baseline
SAMPLE_SHAPE = [3072]       # 3 x 32 x 32 bytes per sample, flattened for an MLP
BIG_SAMPLES = 200000        # 614.4 MB of images
SMALL_SAMPLES = 2048        # 6.3 MB: read whole, the baseline

CONFIG = """\
MODEL:
  NAME: mlp
  MLP:
    INPUT_DIM: 3072
    HIDDEN_DIMS: [32]
    NUM_CLASSES: 10
DATASETS:
  TRAIN: [{data}]
  TEST: []
SOLVER:
  IMS_PER_BATCH: 64
  MAX_ITER: 30
  CHECKPOINT_PERIOD: 1000
  BASE_LR: 0.01
LOG:
  PERIOD: 10
"""


def make_file(path, num):
    cmd = ["/usr/bin/python3", os.path.join(ARGS.source_dir, "tools", "make_h5_dataset.py"),
           "--kind", "images", "--num", str(num), "--shape"] + [str(s) for s in SAMPLE_SHAPE] + [
           "--classes", "10", "--block-rows", "8192", "--out", path]
    start = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    print("wrote %s: %.1f MB in %.1f s" % (path, os.path.getsize(path) / 1e6, time.time() - start))


def vm_peak(pid):
    """VmPeak of a live process in bytes, or 0 once it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            m = re.search(r"^VmPeak:\s+(\d+) kB", f.read(), re.M)
            return int(m.group(1)) * 1024 if m else 0
    except OSError:
        return 0


def train(config, out, limit=None, timeout=120):
    """Runs dtrain train alone (a singleton MPI process). Returns (rc, output, VmPeak
    seen while it ran, ru_maxrss in bytes)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def set_limit():
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([ARGS.dtrain, "train", "--config-file", config, "OUTPUT_DIR", out],
                            env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=set_limit,
                            start_new_session=True)
    peak, start = 0, time.time()
    while True:
        peak = max(peak, vm_peak(proc.pid))
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.time() - start > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            raise CheckFailed("timed out after %d s" % timeout)
        time.sleep(0.01)
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.seek(0)
    output = log.read()
    print("$ dtrain train %s%s -> rc %d in %.1f s, VmPeak %.0f MiB, max RSS %.0f MiB" % (
        os.path.basename(config), "" if limit is None else " (RLIMIT_AS %.0f MiB)" % (limit / 2**20),
        proc.returncode, time.time() - start, peak / 2**20, usage.ru_maxrss / 1024))
    return proc.returncode, output, peak, usage.ru_maxrss * 1024


def write_config(name, data):
    path = os.path.join(ARGS.work_dir, name)
    with open(path, "w") as f:
        f.write(CONFIG.format(data=data))
    return path


def case_h5_larger_than_memory():
    scratch = tempfile.mkdtemp(prefix="dtrain_h5_big_", dir="/tmp")
    try:
        small = os.path.join(scratch, "small.h5")
        big = os.path.join(scratch, "big.h5")
        make_file(small, SMALL_SAMPLES)
        make_file(big, BIG_SAMPLES)
        small_cfg = write_config("small.yaml", small)
        big_cfg = write_config("big.yaml", big)

        rc, out, baseline, _ = train(small_cfg, os.path.join(ARGS.work_dir, "out_base"))
        check(rc == 0, "baseline run failed:\n" + out[-3000:])
        check(baseline > 0, "could not read the baseline VmPeak")
        limit = baseline + MARGIN
        size = os.path.getsize(big)
        print("baseline address space %.0f MiB; limit %.0f MiB (+%d MiB); file %.0f MiB (%.1fx "
              "the margin)" % (baseline / 2**20, limit / 2**20, MARGIN >> 20, size / 2**20,
                               size / MARGIN))
        check(size > 4 * MARGIN, "the file must be several times the margin")

        # The limit itself leaves a normal run alone ...
        rc, out, _, _ = train(small_cfg, os.path.join(ARGS.work_dir, "out_small"), limit)
        check(rc == 0, "the small file failed under the limit:\n" + out[-3000:])
        # ... and the file larger than the margin trains under it, read lazily.
        rc, out, _, rss = train(big_cfg, os.path.join(ARGS.work_dir, "out_big"), limit)
        check(rc == 0, "training from the large file failed under the limit:\n" + out[-3000:])
        check("read lazily" in out, "the large file was not read lazily:\n" + out[-3000:])
        check(os.path.isdir(os.path.join(ARGS.work_dir, "out_big", "model_final")),
              "no model_final after 30 iterations:\n" + out[-3000:])
        print("peak RSS of the large-file run: %.0f MiB (file %.0f MiB)" % (rss / 2**20,
                                                                           size / 2**20))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


CASES = {"h5_larger_than_memory": case_h5_larger_than_memory}


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dtrain", required=True)
    p.add_argument("--source-dir", required=True)
    p.add_argument("--work-dir", required=True)
    p.add_argument("case", choices=sorted(CASES))
    ARGS = p.parse_args()
    if subprocess.call(["/usr/bin/python3", "-c", "import h5py, numpy"],
                       stderr=subprocess.DEVNULL) != 0:
        print("SKIP: /usr/bin/python3 cannot import h5py and numpy")
        return 77
    ARGS.work_dir = os.path.join(ARGS.work_dir, ARGS.case)
    shutil.rmtree(ARGS.work_dir, ignore_errors=True)
    os.makedirs(ARGS.work_dir)
    start = time.time()
    try:
        CASES[ARGS.case]()
    except CheckFailed as e:
        print("FAILED: %s" % e)
        return 1
    print("PASSED in %.1f s" % (time.time() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
