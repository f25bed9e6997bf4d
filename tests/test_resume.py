"""Exact resume: SIGKILL at a step, `bigml train --resume`, and the same final weights as a run never stopped."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from bigml_cli.runs import list_runs

BIGML = str(Path(sys.executable).with_name("bigml"))
TINY = ["train", "mlp", "--dataset", "digits", "train.epochs=3", "train.batch_size=32", "model.hidden_units=[32]",
        "model.dropout=0.2", "train.deterministic=true", "train.checkpoint_every=1"]


def latest_step(run_dir):
    index = Path(run_dir) / "checkpoints" / "state" / "checkpoint"
    if not index.exists():
        return -1
    match = re.search(r'model_checkpoint_path: "ckpt-(\d+)"', index.read_text())
    return int(match.group(1)) if match else -1


def start(args):
    return subprocess.Popen([BIGML, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(proc, run_dir, step, timeout=120):
    deadline = time.time() + timeout
    while latest_step(run_dir) < step:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline, "training made no progress"
        time.sleep(0.05)


def weights(path):
    """Every array in a Keras weights file, by name."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    proc = subprocess.run([BIGML, *TINY, "--run-dir", str(run_dir)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run_dir


def kill_resume_and_compare(args, reference, run_dir, kill_at):
    """Train `args` into run_dir, SIGKILL it after step `kill_at`, resume it, and check that its last weights are
    bitwise those of `reference`, the same run never stopped."""
    proc = start([*args, "--run-dir", run_dir])
    wait_for_step(proc, run_dir, kill_at)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "model.keras").exists()
    resumed = subprocess.run([BIGML, "train", "--resume", str(run_dir)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming at step" in resumed.stderr
    want, got = weights(reference / "checkpoints/last.weights.h5"), weights(run_dir / "checkpoints/last.weights.h5")
    assert want.keys() == got.keys() and len(want) > 0
    for name in want:
        assert np.array_equal(want[name], got[name]), name


@pytest.mark.parametrize("kill_at", [7, 58])  # mid-epoch in epochs 1 and 2 (40 steps each)
def test_sigkill_then_resume_gives_identical_weights(reference, tmp_path, kill_at):
    run_dir = tmp_path / "run"
    kill_resume_and_compare(TINY, reference, run_dir, kill_at)
    assert json.loads((run_dir / "metrics.json").read_text())["accuracy"] == \
        json.loads((reference / "metrics.json").read_text())["accuracy"]


def test_resume_keeps_the_steps_per_epoch_the_run_started_with(tmp_path):
    # its learning-rate schedule was built with them; bigml's definition of an epoch may change between
    # versions (language models: 21 steps an epoch now, 1,405 before), and a resumed run must not follow
    run_dir = tmp_path / "run"
    proc = start([*TINY, "--run-dir", run_dir])
    wait_for_step(proc, run_dir, 5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["steps_per_epoch"] == 40  # 1,257 training digits / batch 32
    (run_dir / "run.json").write_text(json.dumps({**info, "steps_per_epoch": 20}))  # as if counted otherwise
    resumed = subprocess.run([BIGML, "train", "--resume", str(run_dir)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert latest_step(run_dir) == 3 * 20  # three epochs of the run's own 20 steps, not of 40
    assert len((run_dir / "history.csv").read_text().splitlines()) == 1 + 3


def test_resume_appends_history_rows_under_the_files_own_columns(tmp_path):
    """A run started by a bigml that logged fewer columns (no learning_rate before 2026-11-29) resumes with
    its rows still under the right names."""
    import csv

    run_dir = tmp_path / "run"
    proc = start([*TINY, "--run-dir", run_dir])
    wait_for_step(proc, run_dir, 45)  # epoch 1 (40 steps) is in history.csv
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with open(run_dir / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    old = [k for k in rows[0] if "learning_rate" not in k]  # as the older bigml wrote it
    with open(run_dir / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, old, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    resumed = subprocess.run([BIGML, "train", "--resume", str(run_dir)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    with open(run_dir / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [list(r) for r in rows] == [old] * 3, "no value outside the header's columns"
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    losses = [float(r["loss"]) for r in rows]  # losses, not another column's values
    assert 3.0 > losses[0] > losses[1] > losses[2] > 0


def test_sigterm_saves_a_checkpoint_at_the_step_it_stopped(tmp_path):
    run_dir = tmp_path / "run"
    args = [a for a in TINY if not a.startswith("train.checkpoint_every")] + ["train.checkpoint_every=1000"]
    proc = start([*args, "--run-dir", run_dir])
    wait_for_step(proc, run_dir, 40)  # the end of epoch 1 always saves
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode in (143, 0), stderr[-2000:]
    if proc.returncode == 143:
        stopped = int(re.search(r"stopped by SIGTERM \(signal 15\) at step (\d+) \((epoch \d/3, \d+% done|after epoch \d/3)\)", stderr).group(1))
        assert latest_step(run_dir) == stopped  # the checkpoint is of the last finished step
        assert "Traceback" not in stderr
        # only finished epochs are reported: a stopped epoch is no epoch line and no history row
        epochs_done = stopped // 40
        assert len((run_dir / "history.csv").read_text().splitlines()) == 1 + epochs_done
        assert f"epoch {epochs_done + 1:>3}/3" not in stdout
        [listed] = list_runs(tmp_path)
        assert listed["status"] == f"{epochs_done}/3 epochs: bigml train --resume {run_dir}", listed
        resumed = subprocess.run([BIGML, "train", "--resume", str(run_dir)], capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        rows = (run_dir / "history.csv").read_text().splitlines()[1:]
        assert [int(r.split(",")[0]) for r in rows] == [0, 1, 2]  # one row per epoch, none twice
        assert list_runs(tmp_path)[0]["status"] == "finished"


def test_resume_refuses_a_changed_config_and_a_corrupt_checkpoint(tmp_path, cli):
    run_dir = tmp_path / "run"
    proc = start([*TINY, "--run-dir", run_dir])
    wait_for_step(proc, run_dir, 5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    config = run_dir / "config.yaml"
    original = config.read_text()
    config.write_text(original.replace("epochs: 3", "epochs: 4"))
    from conftest import assert_user_error

    assert_user_error(cli("eval", run_dir), "stopped before the end", f"bigml train --resume {run_dir}")
    assert_user_error(cli("train", "--resume", run_dir), "changed since the run started")
    config.write_text(original)
    for data in (run_dir / "checkpoints" / "state").glob("*.data-*"):
        data.write_bytes(data.read_bytes()[:20])
    assert_user_error(cli("train", "--resume", run_dir), "is corrupt")
    assert config.read_text() == original and (run_dir / "run.json").exists()
    assert_user_error(cli("train", "mlp", "--resume", run_dir), "give no model")


def killed_and_resumed_weights(tmp_path, args, kill_at):
    """The final weights of a run never stopped, and of the same run SIGKILLed at step `kill_at` and resumed."""
    ref = subprocess.run([BIGML, *args, "--run-dir", str(tmp_path / "ref")], capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-2000:]
    run_dir = tmp_path / "run"
    proc = start([*args, "--run-dir", run_dir])
    wait_for_step(proc, run_dir, kill_at)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run([BIGML, "train", "--resume", str(run_dir)], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    return weights(tmp_path / "ref/checkpoints/last.weights.h5"), weights(run_dir / "checkpoints/last.weights.h5")


def test_resume_with_muon_and_lookahead_is_exact(tmp_path):
    """train.optimizer=muon (a CNN, whose conv kernels take Muon steps) and the lookahead average (part of the
    checkpoint, started after epoch 1 of 40 steps): kill mid-epoch after the average started, resume, same
    weights."""
    args = ["train", "cnn", "--dataset", "digits", "train.epochs=2", "train.batch_size=32", "model.widths=[4,8]",
            "train.optimizer=muon", "train.learning_rate=0.05", "train.deterministic=true", "train.checkpoint_every=1",
            "train.lookahead=true", "train.lookahead_start_epoch=1"]
    want, got = killed_and_resumed_weights(tmp_path, args, 53)
    assert any(v.ndim == 4 for v in want.values())
    assert want.keys() == got.keys() and len(want) > 0  # an empty or partial file would pass the loop
    for name in want:
        assert np.array_equal(want[name], got[name]), name


def test_a_run_being_trained_is_locked_until_its_process_dies(tmp_path, cli):
    """While one process trains a run, a second cannot overwrite, resume or evaluate it, and `list runs` says
    so; a SIGKILL frees it (the kernel drops the lock), and the run is resumable again."""
    from conftest import assert_user_error

    run_dir = tmp_path / "run"
    args = [a.replace("train.epochs=3", "train.epochs=100") for a in TINY]  # far longer than the checks below
    proc = start([*args, "--run-dir", run_dir])
    wait_for_step(proc, run_dir, 3)
    [listed] = list_runs(tmp_path)
    assert re.fullmatch(rf"training: \d+/100 epochs \(pid {proc.pid}\)", listed["status"]), listed
    for attempt in (cli("train", "--resume", run_dir),
                    cli("train", "mlp", "--dataset", "digits", "--run-dir", run_dir, "--overwrite")):
        assert_user_error(attempt, f"{run_dir} is in use: pid {proc.pid} on ")
    assert_user_error(cli("eval", run_dir), "is still training", f"pid {proc.pid}")
    assert proc.poll() is None and (run_dir / "config.yaml").exists()  # nothing was deleted under it
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list_runs(tmp_path)[0]["status"].endswith(f"epochs: bigml train --resume {run_dir}")


def test_ctrl_c_in_the_test_pass_keeps_the_model_and_resume_runs_the_test_pass(tmp_path, cli, monkeypatch):
    import bigml_cli.evaluate

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(bigml_cli.evaluate, "predict_probs", interrupted)  # the task's test pass calls it
        result = cli(*TINY, "--run-dir", run_dir)
    assert result.exit_code == 130, result.text
    assert "in the test pass; the trained model is saved" in " ".join(result.stderr.split())
    assert (run_dir / "model.keras").exists() and not (run_dir / "metrics.json").exists()
    assert list_runs(tmp_path)[0]["status"] == f"trained, not tested: bigml train --resume {run_dir}"
    result = cli("train", "--resume", run_dir, "--json")
    assert result.exit_code == 0, result.text
    assert json.loads(result.stdout.strip().splitlines()[-1])["accuracy"] > 0.5
    assert list_runs(tmp_path)[0]["status"] == "finished"


def test_a_run_started_by_an_older_bigml_resumes_although_its_config_lacks_newer_keys(tmp_path):
    """An older bigml wrote config.yaml and its hash without keys added since (here train.patience); filling
    them in at their defaults is no change to the run."""
    import hashlib

    import yaml

    from bigml_cli import config, runs, train
    from bigml_cli.train import resume

    run_dir = tmp_path / "run"
    train.run(config.load("mlp", "digits", overrides=["train.epochs=1", "model.hidden_units=[8]"]), run_dir=run_dir)
    (run_dir / "metrics.json").unlink()  # as if stopped before its test pass
    older = yaml.safe_load((run_dir / "config.yaml").read_text())
    del older["train"]["patience"]
    text = yaml.safe_dump(older, sort_keys=False)
    (run_dir / "config.yaml").write_text("# bigml train mlp --dataset digits\n" + text)
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, "config_sha256": hashlib.sha256(text.encode()).hexdigest()}))
    lock = runs.Lock()
    try:
        run_, cfg = resume.open_for_resume(run_dir, lock)
    finally:
        lock.release()
    assert cfg.train.patience == 0 and cfg.train.epochs == 1


def test_list_runs_skips_a_folder_that_vanishes_while_it_walks(tmp_path, monkeypatch):
    """Training renames a checkpoint's `ckpt-N_temp` folder while `list runs` may be walking the tree; the walk
    skips the vanished folder instead of failing (Path.glob raised FileNotFoundError here)."""
    import os

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "state" / "ckpt-4_temp").mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"model": "mlp", "dataset": "digits"}))
    real_scandir = os.scandir

    def vanishing(path="."):
        if str(path).endswith("ckpt-4_temp"):
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", vanishing)
    [listed] = list_runs(tmp_path)
    assert listed["run"] == str(run_dir)
