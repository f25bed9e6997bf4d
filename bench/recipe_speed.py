"""Training speed of a recipe on its real data under other settings, without training it through:

    python bench/recipe_speed.py RECIPE STEPS [KEY=VALUE ...]
    python bench/recipe_speed.py transformer_imdb 15 train.precision=mixed_bfloat16

runs the recipe (with the overrides) in this process for STEPS steps, then prints examples/s from the
median step time after 5 warm-up steps as JSON (`examples_per_second`; for a language model, sequences/s)
and exits, skipping the rest of the epoch and the test pass. Run each setting in a fresh process, and each twice
(docs/speed.md, "Speed choices": the other recipes).
"""

import json
import os
import shutil
import sys
import tempfile

from bigml_cli import config, train


class StopAfter(train.StepTimer):
    """The run's own step timer (median step after `warmup` steps), printing its figures after `steps` steps
    and ending the process there."""

    def __init__(self, steps, batch_size, steps_per_execution, report, workdir):
        super().__init__(batch_size, steps_per_execution, warmup=5)
        self.steps, self.report, self.workdir = steps, report, workdir

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        if len(self.durations) == self.steps:
            print(json.dumps({**self.report, **self.summary()}), flush=True)
            shutil.rmtree(self.workdir, ignore_errors=True)
            os._exit(0)  # the measurement is all this run is for: no rest of the epoch, no test pass


def main(argv):
    if len(argv) < 2 or not argv[1].isdigit() or int(argv[1]) <= 5:
        sys.exit(__doc__)
    recipe, steps, overrides = argv[0], int(argv[1]), argv[2:]
    raw = config.read_recipe(config.find_recipe(recipe, None, None))
    cfg = config.load(raw["model"]["name"], recipe=recipe, overrides=overrides)
    workdir = tempfile.mkdtemp(prefix="bigml-recipe-speed-")
    probe = StopAfter(steps, cfg.train.batch_size, cfg.train.steps_per_execution,
                      {"recipe": recipe, "overrides": overrides}, workdir)
    try:
        train.run(cfg, run_dir=os.path.join(workdir, "run"), extra_callbacks=[probe])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    sys.exit("the epoch ended before STEPS steps; give fewer")


if __name__ == "__main__":
    main(sys.argv[1:])
