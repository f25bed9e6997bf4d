"""Resuming a run: its training state saved and restored, its config and data checked against the start."""

import hashlib
from pathlib import Path
from typing import Any, Union

import tensorflow as tf
import yaml

from bigml_cli import files, runs
from bigml_cli.data.base import split_change
from bigml_cli.errors import UserError


def save_state(manager: Any, step: Any) -> str:
    """Writes checkpoint `step` of the training state. TensorFlow writes it under temporary names and
    records it as the latest only once whole, so a full disk leaves the one before as the latest."""
    try:
        return manager.save(checkpoint_number=step)
    except Exception as e:
        error = files.disk_error(e, manager.directory)
        if error is None:
            raise
        for partial in Path(manager.directory).glob(f"*-{step}_temp"):  # TensorFlow's own half-written one
            files.remove(partial)
        raise error from None



def config_hash(text: str) -> str:
    """sha256 of a config's YAML as dumped again: comments and layout do not count, and a run's config.yaml
    matches its hash after a later bigml added keys (at their defaults, which the file does not hold)."""
    return hashlib.sha256(yaml.safe_dump(yaml.safe_load(text), sort_keys=False).encode()).hexdigest()



def open_for_resume(run_dir: Union[str, Path], lock: Any) -> tuple:
    """The unfinished run to resume, locked to this process, its config checked against the one it started with."""
    run_ = runs.Run(Path(run_dir))
    if not run_.info_file.exists() or not run_.config_file.exists():
        raise UserError(f"{run_dir} is not a bigml run directory (no run.json/config.yaml); nothing to resume")
    lock.acquire(run_)  # before anything is read: another process may be training it now
    if run_.metrics_file.exists():
        raise UserError(f"run {run_dir} already finished; score it with `bigml eval {run_dir}`, or train a new run "
                        f"with its settings, changed as you like: `bigml train --recipe {run_dir} train.epochs=N`")
    cfg = check_config_unchanged(run_)
    if tf.train.latest_checkpoint(run_.state) is None:
        raise UserError(f"run {run_dir} has no checkpoint yet; start it again with --overwrite")
    return run_, cfg



def check_config_unchanged(run_: Any) -> Any:
    """The run's config, refused when config.yaml changed since the run started (another global batch, epochs,
    model: a resume must continue the run it checkpointed)."""
    if config_hash(run_.config_file.read_text()) != run_.info.config_sha256:
        raise UserError(f"{run_.config_file} changed since the run started; restore it, or start a new run "
                        "with the new config")
    return run_.config


def check_same_data(run_: Any, cfg: Any, now: Any) -> None:
    """Resuming on data that changed would train on other examples, and could test on ones it trained on.
    `now`: the fingerprint of the data as loaded for this resume."""
    then = run_.info.data
    if not then:  # a run from before run.json recorded its data
        return
    changed = [split for split in then if then[split] != now.get(split)]
    if changed:
        counts = "; ".join(split_change(split, then[split]["examples"], now.get(split, {}).get("examples", 0))
                           for split in changed)
        raise UserError(f"the dataset {cfg.data.name} changed since run {run_.path} started ({counts}); resuming "
                        "would train on other examples and could test on ones it trained on. Restore the data, or "
                        f"train a new run with its settings: bigml train --recipe {run_.path} --run-dir NEW_DIR")
