"""The catalogue of a careless user's mistakes: each ends with exit code 2 and one `error:` line, no traceback,
and every file that existed before is unchanged (and no partial file is left)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bigml_cli.cli import app


def learnable_table(path, header="x,colour,label", rows=160, extra=None):
    """A CSV whose label is x > 0 (plus a noise colour column); `extra(i)` may replace a row's text."""
    rng = np.random.default_rng(0)
    lines = [header]
    for i in range(rows):
        x = rng.normal()
        lines.append((extra and extra(i)) or f"{x:.3f},{'red' if i % 2 else 'blue'},{'pos' if x > 0 else 'neg'}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished image run (digits) and table run, shared by the cases that only read them."""
    root = tmp_path_factory.mktemp("catalogue")
    image, table = root / "digits", root / "table"
    runner = CliRunner()
    for args in (["mlp", "--dataset", "digits", "--run-dir", image, "train.epochs=1", "model.hidden_units=[16]"],
                 ["mlp", "--dataset", learnable_table(root / "t.csv"), "--target", "label", "--run-dir", table,
                  "train.epochs=1", "model.hidden_units=[16]"]):
        result = runner.invoke(app, ["train", *map(str, args)])
        assert result.exit_code == 0, result.output
    return {"image": image, "table": table}


def write(path, text):
    path.write_text(text)
    return path


def npy(path, array):
    np.save(path, array)
    return path


# (name, a function (tmp_path, runs) -> the command's arguments, fragments the error line must hold)
CASES = [
    ("unknown model", lambda d, r: ["train", "resnet", "--dataset", "digits"], ["unknown model 'resnet'"]),
    ("unknown dataset", lambda d, r: ["train", "mlp", "--dataset", "mnsit"], ["did you mean 'mnist'"]),
    ("bad recipe key", lambda d, r: ["train", "mlp", "--dataset", "digits", "train.epoch=1"],
     ["did you mean 'train.epochs'"]),
    ("bad recipe type", lambda d, r: ["train", "mlp", "--dataset", "digits", "train.epochs=1.5"],
     ["train.epochs must be an integer"]),
    ("the same override twice", lambda d, r: ["train", "mlp", "--dataset", "digits", "train.epochs=1",
                                              "train.epochs=2"],
     ["train.epochs is given twice (train.epochs=1 and train.epochs=2)"]),
    ("a flag and its override", lambda d, r: ["train", "mlp", "--dataset", "digits", "--precision", "float32",
                                              "train.precision=auto"], ["train.precision is given twice"]),
    ("missing dataset file", lambda d, r: ["train", "mlp", "--dataset", d / "nope.csv", "--target", "y"],
     ["does not exist"]),
    ("existing run directory", lambda d, r: ["train", "mlp", "--dataset", "digits", "--run-dir", r["image"]],
     ["already exists", "--overwrite"]),
    ("two CSV columns of one name", lambda d, r: [
        "train", "mlp", "--dataset", write(d / "x.csv", "x,x,label\n" + "1,2,a\n3,4,b\n" * 20), "--target", "label",
        "--run-dir", d / "run"], ["columns 1 and 2 are both named 'x'", "a name of its own"]),
    ("an infinite CSV cell", lambda d, r: [
        "train", "mlp", "--dataset", learnable_table(d / "inf.csv", extra=lambda i: "inf,red,pos" if i == 7 else None),
        "--target", "label", "--run-dir", d / "run"], ["inf.csv line 9", "'inf', an infinite number"]),
    ("a CSV without --target", lambda d, r: ["train", "mlp", "--dataset", learnable_table(d / "t.csv")],
     ["pass --target COLUMN"]),
    ("--target on images", lambda d, r: ["train", "mlp", "--dataset", "digits", "--target", "label"],
     ["names a CSV column"]),
    ("resume a finished run", lambda d, r: ["train", "--resume", r["image"]], ["already finished"]),
    ("predict on NaN pixels", lambda d, r: ["predict", r["image"], npy(d / "nan.npy", np.full((3, 8, 8), np.nan))],
     ["holds NaN or infinite values (in 3 of its 3 images)"]),
    ("predict on an infinite table cell", lambda d, r: [
        "predict", r["table"], write(d / "rows.csv", "x,colour\n0.5,red\n-inf,blue\n")],
     ["rows.csv line 3", "'-inf', an infinite number"]),
    ("predict on the wrong shape", lambda d, r: ["predict", r["image"], npy(d / "w.npy", np.zeros((5, 5), np.uint8))],
     ["has shape (5, 5)"]),
    ("predict on a missing file", lambda d, r: ["predict", r["image"], d / "gone.png"], ["does not exist"]),
    ("predict on a CSV missing a column", lambda d, r: ["predict", r["table"], write(d / "c.csv", "x\n1\n")],
     ["missing the column 'colour'"]),
    ("predict --out over a file", lambda d, r: [
        "predict", r["image"], npy(d / "b.npy", np.zeros((2, 8, 8), np.uint8)), "--out", write(d / "p.csv", "mine\n")],
     ["already exists", "--overwrite"]),
    ("predict on a folder that is no run", lambda d, r: ["predict", d, "x.png"], ["not a bigml run directory"]),
    ("export over a folder of the user's", lambda d, r: [
        "export", r["image"], "--out", write(d / "mine.txt", "keep").parent, "--overwrite"],
     ["not an earlier export"]),
    ("unknown export format", lambda d, r: ["export", r["image"], "--format", "pt"], ["unknown export format 'pt'"]),
    ("eval of a damaged run.json", lambda d, r: ["eval", _damaged(d, r["image"])], ["is damaged", "restore it"]),
    ("eval on an unknown split", lambda d, r: ["eval", r["image"], "--split", "dev"], ["unknown"]),
]


def _damaged(tmp, run):
    import shutil

    copy = tmp / "damaged"
    shutil.copytree(run, copy)
    (copy / "run.json").write_text("{ not json")
    return copy


def hashes(*roots):
    """sha256 of every file under `roots`, but train.lock: it names whoever last claimed the run (a --resume
    claims it before it reads the run), and holds no result."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for root in roots for p in Path(root).rglob("*") if p.is_file() and p.name != "train.lock"}


@pytest.mark.parametrize("name, make_args, fragments", CASES, ids=[c[0] for c in CASES])
def test_a_mistake_is_one_line_exit_2_and_loses_nothing(runs, tmp_path, monkeypatch, name, make_args, fragments):
    monkeypatch.chdir(tmp_path)  # a default run directory would land here
    args = [str(a) for a in make_args(tmp_path, runs)]
    before = hashes(tmp_path, *runs.values())
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    text = result.stdout + result.stderr
    assert "Traceback" not in text and "Warning" not in text, text
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    line = " ".join(result.stderr.split())
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    after = hashes(tmp_path, *runs.values())
    assert {p: after.get(p) for p in before} == before, "a file that existed before changed or went"
    assert not [p for p in after if ".partial" in p], "a partial file was left"
    assert not (tmp_path / "runs").exists(), "a failed start left a run directory"


def test_columns_with_the_same_input_name_each_reach_the_model(cli, tmp_path):
    """`price ($)` and `price (€)` both read as `price`: the second becomes `price_2`, the run says so, the model
    learns from the first (the label depends on it alone), and the SavedModel takes both."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    a, b = rng.uniform(0, 10, 300), rng.uniform(0, 10, 300)
    data = write(tmp_path / "prices.csv", "price ($),price (€),label\n" + "".join(
        f"{x:.3f},{y:.3f},{'high' if x > 5 else 'low'}\n" for x, y in zip(a, b)))
    run = tmp_path / "run"
    result = cli("train", "mlp", "--dataset", data, "--target", "label", "--run-dir", run, "train.epochs=20",
                 "train.seed=0", "--json")
    assert result.exit_code == 0, result.text
    assert "'price (€)' is input 'price_2'" in result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["accuracy"] >= 0.95
    info = json.loads((run / "run.json").read_text())["input"]
    assert [(c["name"], c["key"]) for c in info["columns"]] == [("price ($)", "price"), ("price (€)", "price_2")]
    assert cli("export", run, "--out", tmp_path / "sm").exit_code == 0
    signature = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    assert set(signature.structured_input_signature[1]) == {"price", "price_2"}


def test_decimal_commas_in_a_semicolon_file_are_numbers(tmp_path):
    from bigml_cli.config import DataConfig
    from bigml_cli.data.table import load_csv

    rows = [f"{'0,044' if i % 2 else '1.234,5'};{'rot' if i % 3 else 'blau'};{'ja' if i % 2 else 'nein'}"
            for i in range(40)]
    path = write(tmp_path / "euro.csv", "gewicht;farbe;label\n" + "\n".join(rows) + "\n")
    ds = load_csv(path, DataConfig(name=str(path), target="label"))
    columns = {c["name"]: c["type"] for c in ds.input_info["columns"]}
    assert columns == {"gewicht": "numeric", "farbe": "categorical"}
    values = np.concatenate([ds.x_train["gewicht"], ds.x_val["gewicht"], ds.x_test["gewicht"]])
    assert set(np.round(values, 3)) == {np.float32(0.044), np.float32(1234.5)}
    assert "note: columns read as numbers: gewicht (decimal commas); as categories: farbe" in ds.read_as


def test_small_things_that_misled_now_say_so(cli, tmp_path):
    """A batch larger than the training split and label smoothing each get a note, the smoothed loss is named
    as such, and the next: hint quotes a run path with a space so that it pastes back as one argument."""
    run = tmp_path / "my runs" / "digits"
    result = cli("train", "mlp", "--dataset", "digits", "--run-dir", run, "train.epochs=1",
                 "train.batch_size=4096", "train.label_smoothing=0.1", "model.hidden_units=[8]")
    assert result.exit_code == 0, result.text
    err = " ".join(result.stderr.split())
    assert "train.batch_size 4096 is larger than the 1,294 training examples" in err
    assert "include label smoothing 0.1" in err and "smoothed loss" in err and "val_smoothed_loss" in err
    assert f"next: bigml predict '{run}' INPUT..." in result.stdout


def test_time_left_leaves_out_the_compiling_first_step(monkeypatch):
    """A first step of 10 s (tracing, compiling) and nine of 1 s: the pace is 1 s a step, not 1.9 s."""
    from rich.console import Console

    from bigml_cli.train import callbacks

    clock = iter([0.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0, 19.0])
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: next(clock))
    progress = callbacks.RichProgress(epochs=3, steps=10, per_step=32, console=Console(file=open("/dev/null", "w")))
    progress.on_epoch_begin(0)
    for batch in range(10):
        progress.on_train_batch_end(batch, {"loss": 1.0})
    assert progress.pace(19.0) == 1.0
    assert progress.progress.tasks[0].fields["rate"] == 32.0  # examples a second after the first step


def test_progress_with_several_steps_per_call(monkeypatch, cli, tmp_path):
    """With train.steps_per_execution=k Keras calls back every k steps, first at batch k - 1: the bar took the
    first call for a later one and stopped the run with a TypeError (the tutorial CNN recipes use 16)."""
    from rich.console import Console

    from bigml_cli.train import callbacks

    clock = iter([0.0, 10.0, 14.0, 18.0])  # a first call of 4 steps (compiling) in 10 s, then 4 steps a 4 s
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: next(clock))
    progress = callbacks.RichProgress(epochs=1, steps=12, per_step=8, console=Console(file=open("/dev/null", "w")))
    progress.on_epoch_begin(0)
    for batch in (3, 7, 11):
        progress.on_train_batch_end(batch, {"loss": 1.0})
    assert progress.pace(18.0) == 1.0  # 8 steps in the 8 s after the first call
    assert progress.progress.tasks[0].fields["rate"] == 8.0 * 8 / 8.0
    monkeypatch.undo()
    result = cli("train", "mlp", "--dataset", "digits", "--run-dir", tmp_path / "r", "train.epochs=1",
                 "train.steps_per_execution=4", "model.hidden_units=[8]")
    assert result.exit_code == 0, result.text


def test_class_names_the_font_lacks_draw_without_warnings(tmp_path):
    import warnings

    from bigml_cli.evaluate import metrics_from_probs, save_report

    names = ["猫", "犬"]
    y = np.array([0, 1, 1, 0])
    report = metrics_from_probs(np.eye(2)[[0, 1, 0, 0]], y, names)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save_report(report, names, tmp_path, y)
    assert not [w for w in caught if "Glyph" in str(w.message)], [str(w.message) for w in caught]
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0
    assert "猫" in (tmp_path / "confusion_matrix.csv").read_text(encoding="utf-8")


def test_a_file_staged_in_memory_falls_back_beside_its_target_when_memory_is_full(tmp_path, monkeypatch):
    """A small /dev/shm (containers give 64 MB) must not fail a save that the target's disk has room for."""
    import errno

    from bigml_cli import files

    full = tmp_path / "shm"
    full.mkdir()
    monkeypatch.setattr(files, "memory_dir", lambda: str(full))
    tried = []

    def write(name):
        tried.append(Path(name).parent.parent)
        if Path(name).parent.parent == full:
            raise OSError(errno.ENOSPC, "No space left on device", name)
        Path(name).write_bytes(b"weights")

    target = tmp_path / "run" / "last.weights.h5"
    target.parent.mkdir()
    files.write_staged(target, write)
    assert target.read_bytes() == b"weights" and tried == [full, target.parent]
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.weights.h5"]  # no staging folder left
    assert list(full.iterdir()) == []


def test_a_disk_refusal_without_a_path_is_still_one_line(capsys):
    """An OSError ENOSPC that names no file (a flush of an open file) is the user's disk, not bigml's bug."""
    import errno

    import typer

    from bigml_cli.cli import handle_errors

    @handle_errors
    def flush():
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(typer.Exit) as stopped:
        flush()
    assert stopped.value.exit_code == 2
    assert "error: cannot write a file: the disk is full; free some space" in " ".join(capsys.readouterr().err.split())
