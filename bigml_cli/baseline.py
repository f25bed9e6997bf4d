"""The hand-written baseline `bigml bench` compares against: a plain Keras script as the tutorials
teach it (NumPy arrays into model.fit, batch 64, Adam, no tf.data tuning), training the tutorial CNN.

    python -m bigml_cli.baseline --data-dir DIR --steps N      # prints one JSON line

Only the data loading reuses bigml (the tutorials' keras.datasets loader would download).
"""

import argparse
import json
import time
from typing import Any

import numpy as np


def tutorial_script(x_train: Any, y_train: Any, steps: int, batch_size: int = 64) -> Any:
    """Train as the tutorial does and time each step; returns the per-step wall times."""
    import keras
    from keras import layers

    model = keras.Sequential([
        keras.Input(shape=(32, 32, 3)),
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    class Timer(keras.callbacks.Callback):
        durations = []

        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.durations.append(time.perf_counter() - self.start)

    n = steps * batch_size
    x = x_train[:n].astype("float32") / 255.0
    model.fit(x, y_train[:n], batch_size=batch_size, epochs=1, verbose=0, callbacks=[Timer()])
    return Timer.durations


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--steps", type=int, default=700)
    ap.add_argument("--warmup", type=int, default=10)
    a = ap.parse_args()
    from bigml_cli.config import DataConfig
    from bigml_cli.data import load_dataset

    ds = load_dataset(DataConfig(name="cifar10", val_fraction=0.1), a.data_dir)
    durations = tutorial_script(ds.x_train, ds.y_train, a.steps)
    median = float(np.median(durations[a.warmup:]))
    print(json.dumps({"median_step_seconds": median, "examples_per_second": 64 / median,
                      "steps_timed": len(durations) - a.warmup}))


if __name__ == "__main__":
    main()
