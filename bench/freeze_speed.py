"""Step time of the fast CIFAR-10 recipe before and after the whitening stem's bias freezes (docs/speed.md, "Speed
choices", "No gradient for the frozen whitening bias"):

    python bench/freeze_speed.py [STEPS_PER_EPOCH [KEY=VALUE ...]]

trains 2 epochs of STEPS_PER_EPOCH (default 8) steps, the bias frozen after the first, on the real CIFAR-10
in the data directory (BIGML_DATA_DIR, else ~/.cache/bigml-data), and prints each step's seconds and the
medians of each epoch after its first step.
"""

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import bigml_cli  # noqa: F401  first: it turns oneDNN on before TensorFlow loads
import keras
from bigml_cli import config, train


class StepTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times, self.start = [], None

    def on_train_batch_begin(self, batch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def main(steps=8, *overrides):
    steps = int(steps)
    cfg = config.load("cnn", "cifar10", recipe="cnn_cifar10_fast", overrides=[
        "train.epochs=2", f"train.steps_per_epoch={steps}", "train.whiten_bias_epochs=1",
        "train.checkpoint_every=0", *overrides])
    timer = StepTimes()
    data = os.environ.get("BIGML_DATA_DIR", os.path.expanduser("~/.cache/bigml-data"))
    with tempfile.TemporaryDirectory() as scratch:
        train.run(cfg, run_dir=Path(scratch) / "run", data_root=data, extra_callbacks=[timer])
    before, after = timer.times[:steps], timer.times[steps:]
    for name, times in (("epoch 1, bias trains", before), ("epoch 2, bias frozen", after)):
        print(f"{name}: " + " ".join(f"{t:.2f}" for t in times) + f"  median after the first {np.median(times[1:]):.3f} s")
    print(f"ratio {np.median(after[1:]) / np.median(before[1:]):.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
