"""Training: `run(config)` trains a new run (or resumes one) and returns its test metrics.

    loop.py         the run as named stages: place, data, model, run directory, state, fit, save, test
    callbacks.py    progress, timing, lookahead, freezing, checkpoints, history, the best epoch's weights
    multiworker.py  the strategy.run loop for several worker processes, and its collectives
    resume.py       saving and restoring the training state; checks that config and data did not change
"""

from bigml_cli.train.loop import run  # noqa: F401
