"""Kill a real training run with SIGKILL at a random step, resume it, and compare its final weights
with an uninterrupted run of the same command (both with train.deterministic=true).

    python bench/resume_check.py cnn mnist train.epochs=2 [--data-dir DIR]
"""

import argparse
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

BIGML = str(Path(sys.executable).with_name("bigml"))


def latest_step(run_dir):
    index = Path(run_dir) / "checkpoints" / "state" / "checkpoint"
    match = re.search(r'model_checkpoint_path: "ckpt-(\d+)"', index.read_text()) if index.exists() else None
    return int(match.group(1)) if match else -1


def weights(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("dataset")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seed", type=int, default=None, help="seeds the choice of the kill step")
    a = ap.parse_args()
    extra = ["--data-dir", a.data_dir] if a.data_dir else []
    args = ["train", a.model, "--dataset", a.dataset, *a.overrides, "train.deterministic=true", *extra]
    with tempfile.TemporaryDirectory() as tmp:
        ref, cut = Path(tmp) / "uninterrupted", Path(tmp) / "killed"
        start = time.perf_counter()
        subprocess.run([BIGML, *args, "--run-dir", str(ref)], check=True, capture_output=True)
        print(f"uninterrupted run: {time.perf_counter() - start:.0f} s")
        steps = latest_step(ref)
        rng = random.Random(a.seed)
        kill_at = rng.randrange(1, steps)
        proc = subprocess.Popen([BIGML, *args, "--run-dir", str(cut)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        while latest_step(cut) < kill_at and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 3))  # land between checkpoints: the steps since the last one are replayed
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        print(f"killed with SIGKILL {('after the run ended' if proc.returncode == 0 else 'mid-run')}; last "
              f"checkpoint at step {latest_step(cut)} of {steps}; resuming")
        subprocess.run([BIGML, "train", "--resume", str(cut), *extra], check=True, capture_output=True)
        want, got = weights(ref / "checkpoints/last.weights.h5"), weights(cut / "checkpoints/last.weights.h5")
        same = want.keys() == got.keys() and all(np.array_equal(want[k], got[k]) for k in want)
        diff = max(float(np.abs(want[k] - got[k]).max()) for k in want)
        print(f"final weights: {len(want)} arrays, {'bitwise identical' if same else 'DIFFERENT'} "
              f"(max |diff| {diff:.3g})")
        sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
