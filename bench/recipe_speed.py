"""Training speed of a recipe on its real data under other settings, without training it through:

    python bench/recipe_speed.py RECIPE STEPS [KEY=VALUE ...]
    python bench/recipe_speed.py transformer_imdb 15 train.precision=mixed_bfloat16

runs the recipe (with the overrides) in this process for STEPS steps, then prints examples/s from the
median step time after 5 warm-up steps as JSON (a language model's figure is sequences/s) and exits,
skipping the rest of the epoch and the test pass. Run each setting in a fresh process, and each twice
(README, "Speed choices": the other recipes).
"""

import json
import os
import shutil
import sys
import tempfile
import time

import keras
import numpy as np

from bigml_cli import config, train


class StopAfter(keras.callbacks.Callback):
    def __init__(self, steps, batch_size, report, workdir):
        super().__init__()
        self.steps, self.batch_size, self.report, self.workdir = steps, batch_size, report, workdir
        self.durations = []

    def on_train_batch_begin(self, batch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.durations.append(time.perf_counter() - self.start)
        if len(self.durations) == self.steps:
            median = float(np.median(self.durations[5:]))
            print(json.dumps({**self.report, "median_step_seconds": median,
                              "per_second": round(self.batch_size / median, 1)}), flush=True)
            shutil.rmtree(self.workdir, ignore_errors=True)
            os._exit(0)  # the measurement is all this run is for: no rest of the epoch, no test pass


def main(argv):
    if len(argv) < 2 or not argv[1].isdigit() or int(argv[1]) <= 5:
        sys.exit(__doc__)
    recipe, steps, overrides = argv[0], int(argv[1]), argv[2:]
    raw = config.read_recipe(config.find_recipe(recipe, None, None))
    cfg = config.load(raw["model"]["name"], recipe=recipe, overrides=overrides)
    workdir = tempfile.mkdtemp(prefix="bigml-recipe-speed-")
    probe = StopAfter(steps, cfg.train.batch_size, {"recipe": recipe, "overrides": overrides}, workdir)
    try:
        train.run(cfg, run_dir=os.path.join(workdir, "run"), extra_callbacks=[probe])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    sys.exit("the epoch ended before STEPS steps; give fewer")


if __name__ == "__main__":
    main(sys.argv[1:])
