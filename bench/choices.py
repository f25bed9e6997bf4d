"""The measurements behind bigml's speed choices (docs/speed.md): each setting trains a net on
random data in a fresh process and reports examples/s (median step time after 3 warm-up steps).

    python bench/choices.py                 # every setting below, twice, as a markdown table
    python bench/choices.py --one NET INPUT STEPS_PER_EXECUTION JIT PRECISION   # one measurement (JSON)

NET is `tutorial` (the tutorial CNN, batch 64, Adam, as in `bigml bench`) or `cifar` (the cnn_cifar10
recipe's net, batch 512, SGD); INPUT is `numpy` (arrays into fit, as the tutorials do) or `tfdata`.
oneDNN on/off is TF_ENABLE_ONEDNN_OPTS=1/0 in the child's environment.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

SETTINGS = [  # (net, input, steps_per_execution, jit, oneDNN, precision)
    ("tutorial", "numpy", 1, False, "0", "float32"),
    ("tutorial", "numpy", 1, False, "1", "float32"),
    ("tutorial", "tfdata", 1, False, "0", "float32"),
    ("tutorial", "tfdata", 1, False, "1", "float32"),
    ("tutorial", "tfdata", 16, False, "1", "float32"),
    ("tutorial", "tfdata", 16, True, "1", "float32"),
    ("tutorial", "tfdata", 16, False, "1", "mixed_bfloat16"),
    ("cifar", "numpy", 1, False, "0", "float32"),
    ("cifar", "numpy", 1, True, "0", "float32"),
    ("cifar", "numpy", 1, False, "1", "float32"),
    ("cifar", "numpy", 1, True, "1", "float32"),
    ("cifar", "numpy", 1, False, "1", "mixed_bfloat16"),
]


def one(net, source, spe, jit, precision):
    import keras
    import tensorflow as tf
    from keras import layers

    keras.mixed_precision.set_global_policy(precision)
    sys.path.insert(0, str(ROOT))
    if net == "tutorial":
        batch, steps = 64, 300
        model = keras.Sequential([
            keras.Input(shape=(32, 32, 3)),
            layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2),
            layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dense(10, activation="softmax")])
        optimizer = "adam"
        scale = 1 / 255.0
    else:
        from bigml_cli.config import load
        from bigml_cli.models import build_model

        batch, steps = 512, 10
        info = {"kind": "image", "shape": [32, 32, 3], "mean": [0.5] * 3, "std": [0.25] * 3}
        model = build_model(load("cnn", dataset="cifar10").model, info, 10)  # takes raw uint8 images
        optimizer = keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True)
        scale = None
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", jit_compile=jit,
                  steps_per_execution=spe)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (steps * batch, 32, 32, 3)).astype(np.uint8)
    y = rng.integers(0, 10, steps * batch)

    class Timer(keras.callbacks.Callback):
        durations = []

        def on_train_batch_begin(self, b, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, b, logs=None):
            self.durations.append((time.perf_counter() - self.start) / spe)

    if source == "numpy":
        model.fit(x.astype("float32") * scale if scale else x, y, batch_size=batch, epochs=1, verbose=0,
                  callbacks=[Timer()])
    else:
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
        if scale:
            ds = ds.map(lambda a, b: (tf.cast(a, tf.float32) * scale, b))
        model.fit(ds.prefetch(8), epochs=1, verbose=0, callbacks=[Timer()])
    timed = Timer.durations[3:]
    return {"examples_per_second": round(batch / float(np.median(timed)), 1), "batch": batch}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", nargs=5, metavar=("NET", "INPUT", "SPE", "JIT", "PRECISION"))
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    if a.one:
        net, source, spe, jit, precision = a.one
        print(json.dumps(one(net, source, int(spe), jit == "1", precision)))
        return
    rows = {}
    for _ in range(a.repeats):  # interleaved, so a slow spell of the machine hits every setting alike
        for net, source, spe, jit, onednn, precision in SETTINGS:
            env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn, TF_CPP_MIN_LOG_LEVEL="3")
            proc = subprocess.run([sys.executable, __file__, "--one", net, source, str(spe), str(int(jit)), precision],
                                  capture_output=True, text=True, env=env, check=True)
            rows.setdefault((net, source, spe, jit, onednn, precision), []).append(
                json.loads(proc.stdout.strip().splitlines()[-1])["examples_per_second"])
    print("| net | input | steps per execution | XLA | oneDNN | precision | examples/s (each run) |")
    print("|---|---|---|---|---|---|---|")
    for (net, source, spe, jit, onednn, precision), values in rows.items():
        print(f"| {net} | {source} | {spe} | {'on' if jit else 'off'} | {'on' if onednn == '1' else 'off'} | "
              f"{precision} | {', '.join(f'{v:,.0f}' for v in values)} |")


if __name__ == "__main__":
    main()
