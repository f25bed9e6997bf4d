"""End to end through the CLI on scikit-learn's digits (real data, no download), and every bad input."""

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from bigml_cli.cli import app
from conftest import assert_user_error


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """One short mlp run on digits, shared by the tests that only read it."""
    run_dir = tmp_path_factory.mktemp("runs") / "digits"
    result = CliRunner().invoke(app, ["train", "mlp", "--dataset", "digits", "--run-dir", str(run_dir), "--json",
                                      "train.epochs=4", "model.hidden_units=[64]", "train.learning_rate=0.01"])
    assert result.exit_code == 0, result.output
    return run_dir, json.loads(result.stdout.strip().splitlines()[-1])


def test_train_writes_the_run_directory(digits_run):
    run_dir, metrics = digits_run
    assert metrics["accuracy"] > 0.85, "4 epochs on digits learn something real"
    for name in ("config.yaml", "run.json", "model.keras", "history.csv", "history.png", "metrics.json",
                 "checkpoints/best.weights.h5", "checkpoints/last.weights.h5", "eval/test/confusion_matrix.png"):
        assert (run_dir / name).exists(), name
    assert list((run_dir / "logs").rglob("*tfevents*")), "TensorBoard logs"
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    rates = [float(r["learning_rate"]) for r in rows]  # the cosine schedule's value at each epoch end
    assert rates[0] == pytest.approx(0.01) and rates[0] > rates[1] > rates[2] > rates[3] >= 0  # warmup: 1 epoch
    from PIL import Image

    assert Image.open(run_dir / "history.png").size[0] == 1500  # three 5-inch panels: loss, accuracy, learning rate
    assert "epochs: 4" in (run_dir / "config.yaml").read_text()


def test_eval_json_reproduces_training_accuracy(cli, digits_run):
    run_dir, metrics = digits_run
    result = cli("eval", run_dir, "--json")
    assert result.exit_code == 0, result.text
    report = json.loads(result.stdout)
    assert report["accuracy"] == metrics["accuracy"]
    assert report["loss"] == pytest.approx(metrics["loss"], abs=1e-6)
    assert len(report["per_class"]) == 10 and {"precision", "recall", "f1"} <= set(report["per_class"][0])
    confusion = np.array(report["confusion_matrix"])
    assert confusion.sum() == 359 and np.trace(confusion) / 359 == pytest.approx(report["accuracy"])
    assert (run_dir / "eval/test/confusion_matrix.csv").exists()
    mistakes = confusion - np.diag(np.diag(confusion))  # the commonest mistakes, named, commonest first
    counts = [m["count"] for m in report["most_confused"]]
    assert counts == sorted(mistakes.ravel(), reverse=True)[:len(counts)] and counts[0] > 0
    names = [c["class"] for c in report["per_class"]]
    top = report["most_confused"][0]
    assert mistakes[names.index(top["label"]), names.index(top["predicted"])] == top["count"]
    assert "most confused: '" in cli("eval", run_dir).stdout
    assert metrics["balanced_accuracy"] == pytest.approx(np.mean([c["recall"] for c in report["per_class"]]))
    assert report["accuracy"] <= report["top5_accuracy"] == metrics["top5_accuracy"] <= 1  # 10 classes: top-5 too
    assert "top-5 " in cli("eval", run_dir).stdout


def test_top5_accuracy_counts_the_true_class_among_the_five_most_probable():
    from bigml_cli.evaluate import metrics_from_probs, top_k_accuracy

    probs = np.array([[.5, .2, .1, .1, .05, .05], [.3, .25, .2, .1, .1, .05], [.1, .1, .1, .1, .1, .5]])
    assert top_k_accuracy(probs, np.array([5, 5, 0]), 5) == pytest.approx(2 / 3)  # rank 6 is out, a tie at 5 in
    assert top_k_accuracy(probs, np.array([0, 1, 2]), 1) == pytest.approx(1 / 3)
    assert metrics_from_probs(probs, np.array([5, 5, 0]), list("abcdef"))["top5_accuracy"] == pytest.approx(2 / 3)
    assert "top5_accuracy" not in metrics_from_probs(probs[:, :5] / probs[:, :5].sum(1, keepdims=True),
                                                     np.array([0, 1, 2]), list("abcde"))  # 5 classes: always 1


def test_eval_on_your_own_labelled_folder_matches_the_test_split(cli, digits_run, tmp_path):
    """The test split written out as PNGs in class sub-folders scores exactly as `eval --split test` does."""
    run_dir, metrics = digits_run
    assert cli("samples", "digits", "--out", tmp_path / "flat", "-n", 1000).exit_code == 0
    for png in (tmp_path / "flat").glob("*.png"):
        label = png.stem.split("_")[1]
        (tmp_path / "mine" / label).mkdir(parents=True, exist_ok=True)
        png.rename(tmp_path / "mine" / label / png.name)
    result = cli("eval", run_dir, "--dataset", tmp_path / "mine", "--json")
    assert result.exit_code == 0, result.text
    report = json.loads(result.stdout)
    assert report["examples"] == 359 and report["accuracy"] == metrics["accuracy"]
    assert (run_dir / "eval/dataset-mine/confusion_matrix.csv").exists()
    (tmp_path / "mine" / "11").mkdir()
    shutil.copy(next((tmp_path / "mine" / "0").iterdir()), tmp_path / "mine" / "11")
    assert_user_error(cli("eval", run_dir, "--dataset", tmp_path / "mine"), "labels this run was not trained on: 11")
    assert_user_error(cli("eval", run_dir, "--dataset", tmp_path / "flat"), "holds no labelled examples")
    assert_user_error(cli("eval", run_dir, "--dataset", tmp_path / "nowhere"), "does not exist")
    assert_user_error(cli("eval", run_dir, "--dataset", tmp_path / "mine", "--split", "val"), "give one of them")


def test_train_prints_its_results_and_what_to_run_next(cli, tmp_path):
    run_dir = tmp_path / "run"
    result = cli("train", "mlp", "--dataset", "digits", "--run-dir", run_dir, "train.epochs=1")
    assert result.exit_code == 0, result.text
    assert "accuracy" in result.stdout
    assert "(1,294 train / 144 val / 359 test, 8x8x1 images)" in result.stderr
    assert f"next: bigml predict {run_dir} INPUT...  |  bigml eval {run_dir}  |  bigml export {run_dir}" in result.stdout


@pytest.mark.parametrize("args, fragments", [
    (["train", "mlp", "--dataset", "digits", "--epochs", "3"], ["No such option: --epochs", "did you mean train.epochs=3?"]),
    (["train", "mlp", "--dataset", "digits", "--lr", "0.1"], ["No such option: --lr",
                                                            "did you mean train.learning_rate=0.1?"]),
    (["predict"], ["Missing argument 'run'", "see `bigml predict --help`"]),
    (["eval", "runs/x", "--split"], ["Option '--split' requires an argument", "--help`"]),
])
def test_command_line_mistakes_are_one_line(args, fragments):
    """Typer's own usage errors (an unknown option, a missing argument) end as bigml's do: one line, exit 2."""
    proc = subprocess.run([str(Path(sys.executable).with_name("bigml")), *args], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_target_is_refused_for_data_without_columns(cli, tmp_path):
    assert_user_error(cli("train", "mlp", "--dataset", "digits", "--target", "label", "--run-dir", tmp_path / "r"),
                      "names a CSV column", "not a .csv table")
    assert not (tmp_path / "r").exists()


def test_eval_of_a_split_the_run_does_not_have(cli, digits_run, tmp_path):
    copy = tmp_path / "no-val"
    shutil.copytree(digits_run[0], copy)
    config = copy / "config.yaml"
    config.write_text(re.sub(r"val_fraction: [0-9.]+", "val_fraction: 0.0", config.read_text()))
    assert_user_error(cli("eval", copy, "--split", "val"), "has no val split", "--split test")


def test_samples_bad_requests(cli, tmp_path):
    assert_user_error(cli("samples", "digits", "--out", tmp_path, "-n", 0), "-n must be at least 1")
    table = tmp_path / "t.csv"
    table.write_text("x,label\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(40)))
    assert_user_error(cli("samples", table, "--out", tmp_path / "s"), "is a table",
                      "reads rows of your CSV file itself")


def test_predict_on_png_files_agrees_with_eval(cli, digits_run, tmp_path):
    run_dir, _ = digits_run
    assert cli("samples", "digits", "--out", tmp_path, "-n", 20).exit_code == 0
    files = sorted(tmp_path.glob("*.png"))
    assert len(files) == 20
    result = cli("predict", run_dir, *files, "--json", "--top-k", 2)
    assert result.exit_code == 0, result.text
    predictions = json.loads(result.stdout)["predictions"]
    with open(run_dir / "eval/test/predictions.csv") as f:
        eval_rows = list(csv.DictReader(f))[:20]
    assert [p["top_k"][0]["label"] for p in predictions] == [r["predicted"] for r in eval_rows]
    assert [p["top_k"][0]["probability"] for p in predictions] == pytest.approx(
        [float(r["probability"]) for r in eval_rows], abs=1e-4)  # how sure it was, right or wrong
    assert all(len(p["top_k"]) == 2 and p["top_k"][0]["probability"] >= p["top_k"][1]["probability"]
               for p in predictions)
    (tmp_path / "README.txt").write_text("not an image: a folder's other files are skipped")
    result = cli("predict", run_dir, tmp_path, "--json", "--top-k", 2)
    assert result.exit_code == 0, result.text
    assert json.loads(result.stdout)["predictions"] == predictions
    (tmp_path / "empty").mkdir()
    assert_user_error(cli("predict", run_dir, tmp_path / "empty"), "holds no .png", "files to predict on")


def test_predict_resizes_large_images_and_reads_npy(cli, digits_run, tmp_path):
    run_dir, _ = digits_run
    big = tmp_path / "big.jpg"
    Image.fromarray(np.full((64, 48), 200, np.uint8)).save(big)
    arr = tmp_path / "batch.npy"
    np.save(arr, np.zeros((3, 8, 8), np.uint8))
    result = cli("predict", run_dir, big, arr, "--json")
    assert result.exit_code == 0, result.text
    assert len(json.loads(result.stdout)["predictions"]) == 4


def test_export_savedmodel_matches_keras_in_a_fresh_process(cli, digits_run, tmp_path):
    run_dir, _ = digits_run
    out = tmp_path / "sm"
    result = cli("export", run_dir, "--out", out, "--json")
    assert result.exit_code == 0, result.text
    check = json.loads(result.stdout)
    assert check["top1_agreement"] == 1.0 and check["max_abs_diff"] <= 1e-4
    assert check["bytes_checked_examples"] == 64 and check["bytes_max_abs_diff"] <= 1e-4
    script = f"""
import io, json, numpy as np, tensorflow as tf, keras
from PIL import Image
import bigml_cli.models
from bigml_cli.config import DataConfig
from bigml_cli.data import load_dataset
from bigml_cli.data.images import read_image
x = load_dataset(DataConfig(name="digits")).x_test
signatures = tf.saved_model.load({str(out)!r}).signatures
got = signatures["serving_default"](image=tf.constant(x))["probabilities"].numpy()
want = keras.models.load_model({str(run_dir / 'model.keras')!r}).predict(x, verbose=0)
def encoded(image, fmt):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()
files = [encoded(image[..., 0], "PNG") for image in x[:20]]
from_files = signatures["serving_bytes"](image_bytes=tf.constant(files))["probabilities"].numpy()
big = [Image.fromarray(image[..., 0]).convert("RGB").resize((40, 24), Image.NEAREST) for image in x[:20]]
for i, image in enumerate(big):
    image.save({str(tmp_path)!r} + f"/big{{i}}.png")
ours = np.stack([read_image({str(tmp_path)!r} + f"/big{{i}}.png", (8, 8), 1) for i in range(20)])
decoded = tf.map_fn(lambda b: tf.image.resize(tf.io.decode_image(b, channels=1, expand_animations=False), (8, 8),
                                              antialias=True), tf.constant([encoded(np.asarray(i), "PNG") for i in big]),
                    fn_output_signature=tf.float32).numpy()
print(json.dumps({{"diff": float(abs(got - want).max()), "agree": float((got.argmax(1) == want.argmax(1)).mean()),
                  "files_diff": float(abs(from_files - want[:20]).max()),
                  "resized_pixels": float(abs(np.round(decoded) - ours).max())}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    fresh = json.loads(proc.stdout.strip().splitlines()[-1])
    assert fresh["agree"] == 1.0 and fresh["diff"] <= 1e-4
    assert fresh["files_diff"] <= 1e-4  # serving_bytes: PNG files in, the same probabilities
    assert fresh["resized_pixels"] <= 3  # other sizes and colour modes: converted and resized as predict does
    cli_tool = Path(sys.executable).with_name("saved_model_cli")
    shown = subprocess.run([str(cli_tool), "show", "--dir", str(out), "--all"], capture_output=True, text=True).stdout
    assert "signature_def['serving_default']" in shown and "DT_UINT8" in shown
    assert "signature_def['serving_bytes']" in shown and "image_bytes" in shown
    assert_user_error(cli("export", run_dir, "--out", out), "already exists", "--overwrite")


@pytest.mark.parametrize("fmt", ["onnx", "litert"])
def test_export_onnx_and_litert_take_raw_images_and_match_keras(cli, digits_run, tmp_path, fmt):
    import keras

    from bigml_cli.config import DataConfig
    from bigml_cli.data import load_dataset

    run_dir, _ = digits_run
    result = cli("export", run_dir, "--format", fmt, "--out", tmp_path / fmt, "--json")
    assert result.exit_code == 0, result.text
    check = json.loads(result.stdout)
    assert check["top1_agreement"] == 1.0 and check["checked_examples"] == 359
    x = load_dataset(DataConfig(name="digits")).x_test[:50]
    assert x.dtype == np.uint8
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(check["file"], providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
    else:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=check["file"])
        source = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(source, x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(source, x)
        interpreter.invoke()
        got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    want = keras.models.load_model(run_dir / "model.keras").predict(x, verbose=0)
    assert got.shape == (50, 10) and np.abs(got - want).max() <= 1e-4


def test_export_formats_a_run_or_install_cannot_take_are_user_errors(cli, digits_run, tmp_path, monkeypatch):
    import importlib.util

    from bigml_cli import export as export_mod
    from bigml_cli.errors import UserError

    run_dir, _ = digits_run
    assert_user_error(cli("export", run_dir, "--format", "tflite"), "unknown export format 'tflite'", "litert")
    assert_user_error(cli("export", tmp_path / "run[old]"), "run[old] does not exist")  # printed as is, not markup
    with pytest.raises(UserError, match="export it with --format savedmodel"):
        export_mod.check_format("onnx", {"kind": "text"})
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tf2onnx" else real(name, *a))
    assert_user_error(cli("export", run_dir, "--format", "onnx", "--out", tmp_path / "x"), "needs tf2onnx",
                      "pip install tf2onnx onnx onnxruntime")
    assert not (tmp_path / "x").exists()


def test_export_refuses_a_mismatching_model(digits_run, tmp_path, monkeypatch):
    from bigml_cli import evaluate, export as export_mod, files

    run_dir, _ = digits_run
    real = evaluate.predict_probs  # what the export is checked against
    monkeypatch.setattr(evaluate, "predict_probs", lambda m, x: real(m, x) + 0.01)
    with pytest.raises(export_mod.ExportMismatch):
        export_mod.export(run_dir, out=tmp_path / "sm")
    assert not (tmp_path / "sm").exists() and not files.partial_name(tmp_path / "sm").exists()


def test_help_shows_the_defaults(cli):
    """Help strings go through rich markup, which silently drops an unescaped `[default: ...]`."""
    text = " ".join(cli("train", "--help").stdout.replace("│", " ").split())
    assert "[default: MODEL_DATASET if shipped]" in text and "[default: the recipe's train.strategy]" in text


def test_list_datasets_says_which_are_in_the_data_directory(cli, tmp_path):
    from bigml_cli.data import DATASETS

    for name in DATASETS.names():  # a new dataset must say what shows it is here, or what ships it
        entry = DATASETS.get(name)
        assert entry.layout or entry.ships_with, name
    (tmp_path / "mnist.npz").write_bytes(b"")
    rows = json.loads(cli("list", "datasets", "--data-dir", tmp_path, "--json").stdout)["datasets"]
    shown = {r["dataset"]: r["data_dir"] for r in rows}
    assert shown["mnist"] == "here" and shown["digits"] == "ships with scikit-learn"
    assert shown["cifar10"] == "not here: downloads on first use" and shown["FILE.csv"] is None
    assert f"data_dir: {tmp_path}" in " ".join(cli("list", "datasets", "--data-dir", tmp_path).stdout.split())


def test_list_and_config_commands(cli, digits_run):
    assert "cnn" in cli("list", "models").stdout
    datasets = cli("list", "datasets").stdout
    assert "cifar10" in datasets and "FILE.csv" in datasets and "FILE.txt" in datasets
    assert "cnn_cifar10" in cli("list", "recipes").stdout
    assert "no runs under nowhere/" in cli("list", "runs", "--runs-root", "nowhere").stdout
    runs = json.loads(cli("list", "runs", "--runs-root", digits_run[0].parent, "--json").stdout)["runs"]
    assert runs[0]["model"] == "mlp" and runs[0]["test_accuracy"] > 0.85
    shown = cli("config", "cnn", "--dataset", "cifar10", "train.epochs=2")
    assert shown.exit_code == 0 and "epochs: 2" in shown.stdout and "cnn_cifar10.yaml" in shown.stdout
    by_recipe = cli("config", "--recipe", "cnn_cifar10_fast", "train.epochs=2")  # the recipe names model and data
    assert by_recipe.exit_code == 0 and "name: cnn" in by_recipe.stdout and "epochs: 2" in by_recipe.stdout
    assert_user_error(cli("config", "--dataset", "digits"), "give the model")


# --- every bad input: one line, exit code 2, no traceback, nothing lost ----------------------------------


def test_unknown_model_dataset_and_recipe_key(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a default run directory would land
    assert_user_error(cli("train", "resnet", "--dataset", "digits"), "unknown model 'resnet'")
    assert_user_error(cli("train", "mlp", "--dataset", "mnsit"), "unknown dataset 'mnsit'", "did you mean 'mnist'",
                      ".txt corpus")
    assert_user_error(cli("train", "gpt", "--dataset", tmp_path / "corpus.txt"), "corpus.txt does not exist")
    assert_user_error(cli("train", "mlp", "--dataset", "digits", "train.epoch=1"), "did you mean 'train.epochs'")
    assert_user_error(cli("train", "mlp", "--dataset", "digits", "train.epochs=1.5"),
                      "train.epochs must be an integer")
    assert_user_error(cli("config", "mlp", "--dataset", "digits", "--recipe", "nope"), "shipped recipe")
    assert_user_error(cli("train", "mlp", "--dataset", "digits", "model.activation=nope", "--run-dir",
                          tmp_path / "zero"), "model 'mlp' cannot be built", "activation function identifier: nope")
    assert not (tmp_path / "zero").exists()
    assert_user_error(cli("train", "mlp", "--dataset", "digits", "model.hidden_units=[0]"),
                      "model.hidden_units must be a list of positive integers, got [0]")
    assert_user_error(cli("train", "mlp", "--dataset", "digits", "train.whiten_bias_epochs=1"),
                      "train.whiten_bias_epochs applies to models with the whitening stem")
    assert not (tmp_path / "runs").exists(), "a mistake left a run directory"


def test_missing_and_corrupt_data_dir(cli, mnist_dir, tmp_path):
    assert_user_error(cli("train", "mlp", "--dataset", "mnist", "--data-dir", tmp_path / "nowhere",
                          "--run-dir", tmp_path / "r"), "put mnist.npz", "nowhere")
    (mnist_dir / "mnist.npz").write_bytes(b"PK\x03\x04 truncated")
    assert_user_error(cli("train", "mlp", "--dataset", "mnist", "--data-dir", mnist_dir,
                          "--run-dir", tmp_path / "r"), "corrupt or truncated")
    assert not (tmp_path / "r").exists(), "a failed start leaves no run directory"


def test_existing_run_directory_is_refused_and_kept(cli, digits_run):
    run_dir, _ = digits_run
    before = (run_dir / "model.keras").read_bytes()
    assert_user_error(cli("train", "mlp", "--dataset", "digits", "--run-dir", run_dir, "train.epochs=1"),
                      "already exists", "--overwrite")
    assert (run_dir / "model.keras").read_bytes() == before


def test_overwrite_replaces_only_what_bigml_wrote(cli, digits_run, tmp_path):
    """--overwrite never deletes the run being exported, a folder holding it, or a folder of the user's files."""
    run_dir, _ = digits_run
    before = (run_dir / "model.keras").read_bytes()
    mine = tmp_path / "my-photos"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert_user_error(cli("train", "mlp", "--dataset", "digits", "--run-dir", mine, "--overwrite", "train.epochs=1"),
                      "not a bigml run directory", "will not delete")
    for out in (run_dir, run_dir.parent):
        assert_user_error(cli("export", run_dir, "--out", out, "--overwrite"), "holds the run", "outside it")
    assert_user_error(cli("export", run_dir, "--out", mine, "--overwrite"), "not an earlier export")
    assert (mine / "notes.txt").read_text() == "keep me"
    assert (run_dir / "model.keras").read_bytes() == before
    out = tmp_path / "export"
    assert cli("export", run_dir, "--out", out).exit_code == 0
    result = cli("export", run_dir, "--out", out, "--overwrite", "--json")
    assert result.exit_code == 0, result.text
    assert (out / "saved_model.pb").is_file()


def test_a_finished_run_trains_again_from_its_own_settings(cli, digits_run, tmp_path):
    """--resume of a finished run says how to train more: --recipe RUN takes the run's config.yaml."""
    run_dir, _ = digits_run
    assert_user_error(cli("train", "--resume", run_dir), "already finished",
                      f"bigml train --recipe {run_dir} train.epochs=N")
    result = cli("config", "--recipe", run_dir, "train.epochs=7")
    assert result.exit_code == 0, result.text
    assert f"# recipe: {run_dir / 'config.yaml'}" in result.stdout
    cfg = yaml.safe_load(result.stdout)
    assert cfg["model"]["name"] == "mlp" and cfg["model"]["hidden_units"] == [64] and cfg["train"]["learning_rate"] == 0.01
    assert cfg["train"]["epochs"] == 7 and cfg["data"]["name"] == "digits"


def test_a_damaged_run_is_named_and_does_not_hide_the_others(cli, digits_run, tmp_path):
    """A run.json or config.yaml damaged by hand (or a model.keras not copied) is a user error naming the file;
    `list runs` still lists every run."""
    run_dir, _ = digits_run
    root = tmp_path / "runs"
    good, bad = root / "good", root / "bad"
    shutil.copytree(run_dir, good)
    shutil.copytree(run_dir, bad)
    (bad / "run.json").write_text("{ not json")
    for command in (("eval", bad), ("predict", bad, "x.png"), ("export", bad)):
        assert_user_error(cli(*command), f"{bad / 'run.json'} is damaged (JSONDecodeError", "restore it")
    listed = {r["run"]: r["status"] for r in json.loads(cli("list", "runs", "--runs-root", root, "--json").stdout)["runs"]}
    assert listed == {str(bad): f"unreadable: {bad / 'run.json'} is damaged", str(good): "finished"}
    shutil.copy(good / "run.json", bad / "run.json")
    (bad / "config.yaml").write_text("model: [unclosed\n")
    assert_user_error(cli("eval", bad), f"{bad / 'config.yaml'} is damaged (ParserError")
    shutil.copy(good / "config.yaml", bad / "config.yaml")
    (bad / "model.keras").unlink()
    assert_user_error(cli("predict", bad, "x.png"), "finished, but its model.keras is missing",
                      f"bigml train --recipe {bad} --run-dir NEW_DIR")
    listed = {r["run"]: r["status"] for r in json.loads(cli("list", "runs", "--runs-root", root, "--json").stdout)["runs"]}
    assert listed[str(bad)] == "finished, but model.keras is missing"


def test_predict_writes_every_prediction_to_a_csv_and_keeps_the_table_short(cli, digits_run, tmp_path,
                                                                            monkeypatch):
    run_dir, _ = digits_run
    monkeypatch.chdir(tmp_path)  # short input names: the table does not wrap them
    batch = Path("batch.npy")
    np.save(batch, np.random.default_rng(0).integers(0, 256, (120, 8, 8), dtype=np.uint8))
    out = tmp_path / "preds" / "all.csv"
    result = cli("predict", run_dir, batch, "--out", out)
    assert result.exit_code == 0, result.text
    assert f"showing 100 of 120 predictions; all of them are in {out}" in result.stdout
    assert f"{batch}[99]" in result.stdout and f"{batch}[100]" not in result.stdout
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["input"] for r in rows] == [f"{batch}[{i}]" for i in range(120)]
    probs = np.array([[float(r[f"p_{c}"]) for c in map(str, range(10))] for r in rows])
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-4)
    top = json.loads(cli("predict", run_dir, batch, "--json").stdout)["predictions"]
    assert [r["predicted"] for r in rows] == [p["top_k"][0]["label"] for p in top]
    assert [float(r["probability"]) for r in rows] == pytest.approx([p["top_k"][0]["probability"] for p in top],
                                                                      abs=1e-5)
    assert_user_error(cli("predict", run_dir, batch, "--out", out), "already exists", "--overwrite")
    assert cli("predict", run_dir, batch, "--out", out, "--overwrite").exit_code == 0
    assert_user_error(cli("predict", run_dir, batch, "--out", tmp_path / "p.json"), "must name a .csv file")
    table = tmp_path / "rows.csv"
    table.write_text("a\n1\n")
    assert_user_error(cli("predict", run_dir, table, "--out", table, "--overwrite"), "is one of the inputs")
    assert table.read_text() == "a\n1\n"


def test_predict_bad_inputs(cli, digits_run, tmp_path):
    run_dir, _ = digits_run
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert_user_error(cli("predict", run_dir, text), "not a readable image")
    rgb = tmp_path / "colour.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(rgb)
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((5, 5), np.uint8))
    assert_user_error(cli("predict", run_dir, wrong), "has shape (5, 5)")
    scaled = tmp_path / "scaled.npy"
    np.save(scaled, np.full((2, 8, 8), 0.5, np.float32))
    assert_user_error(cli("predict", run_dir, scaled), "values from 0.5 to 0.5, not raw pixels", "x * 255")
    assert_user_error(cli("predict", run_dir, tmp_path / "missing.png"), "does not exist")
    assert_user_error(cli("predict", tmp_path, rgb), "not a bigml run directory")


def test_predict_converts_colour_and_size(cli, digits_run, tmp_path):
    """A photo's channels and size are converted to the model's input, as its grayscale twin would be."""
    run_dir, _ = digits_run
    digit = np.random.default_rng(0).integers(0, 256, (16, 16), dtype=np.uint8)
    gray, rgb, rgba = tmp_path / "gray.png", tmp_path / "rgb.png", tmp_path / "rgba.png"
    Image.fromarray(digit).save(gray)
    Image.fromarray(np.repeat(digit[..., None], 3, axis=-1)).save(rgb)
    Image.fromarray(np.concatenate([np.repeat(digit[..., None], 3, axis=-1), np.full((16, 16, 1), 255, np.uint8)],
                                   axis=-1)).save(rgba)
    outputs = []
    for f in (gray, rgb, rgba):
        result = cli("predict", run_dir, f, "--json")
        assert result.exit_code == 0, result.text
        outputs.append(json.loads(result.stdout)["predictions"][0]["top_k"])
    assert outputs[0] == outputs[1] == outputs[2]


def test_predict_reads_channels_first_arrays_as_pytorch_saves_them(cli, digits_run, tmp_path):
    """(N, C, H, W) arrays are moved to channels-last, pixel for pixel; a wrong shape is named as given."""
    from bigml_cli.predict import read_npy
    rgb = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "nchw.npy", rgb.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(read_npy(tmp_path / "nchw.npy", (32, 32, 3)), rgb)
    run_dir, _ = digits_run
    digits = np.random.default_rng(1).integers(0, 256, (3, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "nhw.npy", digits)
    np.save(tmp_path / "nchw1.npy", digits[:, None])
    outputs = []
    for f in ("nhw.npy", "nchw1.npy"):
        result = cli("predict", run_dir, tmp_path / f, "--json")
        assert result.exit_code == 0, result.text
        outputs.append([p["top_k"] for p in json.loads(result.stdout)["predictions"]])
    assert outputs[0] == outputs[1]
    np.save(tmp_path / "small.npy", digits[:, None, :5, :5])
    assert_user_error(cli("predict", run_dir, tmp_path / "small.npy"), "has shape (3, 1, 5, 5)",
                      "channels first, (N, 1, 8, 8)")


def test_predict_and_eval_leave_out_unreadable_images_found_in_a_folder(cli, digits_run, tmp_path):
    run_dir, _ = digits_run
    folder = tmp_path / "labelled"
    for label in ("3", "7"):
        (folder / label).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(folder / label / f"{i}.png")
    (folder / "7" / "broken.png").write_bytes(b"\x89PNG cut short")
    result = cli("predict", run_dir, folder, "--json")
    assert result.exit_code == 0, result.text
    answer = json.loads(result.stdout)
    assert [p["input"] for p in answer["predictions"]] == [str(folder / l / f"{i}.png") for l in "37" for i in (0, 1)]
    assert answer["notes"] == [f"note: left out 1 file(s) that are not readable images: {folder / '7' / 'broken.png'}"
                               " (UnidentifiedImageError); delete or replace them to silence this"]
    assert "left out 1 file(s)" in result.stderr
    result = cli("eval", run_dir, "--dataset", folder, "--json")
    assert result.exit_code == 0, result.text
    report = json.loads(result.stdout)
    assert report["examples"] == 4 and report["notes"] == answer["notes"]
    with open(run_dir / "eval" / "dataset-labelled" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["input"], r["label"]) for r in rows] == [(str(folder / l / f"{i}.png"), l) for l in "37" for i in (0, 1)]
    assert_user_error(cli("predict", run_dir, folder / "7" / "broken.png"), "broken.png is not a readable image")


def test_a_run_knows_when_its_data_changed_under_it(cli, table_csv, tmp_path):
    """Rows added to a CSV shift every split: resuming would train on other rows and could test on rows it
    trained on, so it is refused; eval still scores, with a note that the split is not the run's own."""
    run_dir = tmp_path / "run"
    result = cli("train", "mlp", "--dataset", table_csv, "--target", "label", "--run-dir", run_dir,
                 "train.epochs=1", "model.hidden_units=[8]")
    assert result.exit_code == 0, result.text
    recorded = json.loads((run_dir / "run.json").read_text())["data"]
    assert {k: v["examples"] for k, v in recorded.items()} == {"train": 173, "val": 19, "test": 48}
    assert json.loads(cli("eval", run_dir, "--json").stdout)["notes"] == []
    original = table_csv.read_text()
    table_csv.write_text(original + "".join(f"{30 + i},red,70,yes\n" for i in range(10)))
    report = json.loads(cli("eval", run_dir, "--json").stdout)
    assert report["notes"] == ["note: the test split is not the one this run had when it trained (test: 48 examples "
                               f"then, 50 now): {table_csv} changed since, so these figures are not comparable with "
                               "the run's own and may include examples it trained on"]
    (run_dir / "metrics.json").unlink()  # as if it had stopped before its test pass
    assert_user_error(cli("train", "--resume", run_dir), f"the dataset {table_csv} changed since run {run_dir} "
                      "started (train: 173 examples then, 180 now; val: 19 examples then, 20 now; test: 48 "
                      "examples then, 50 now); resuming would train on other examples",
                      f"bigml train --recipe {run_dir} --run-dir NEW_DIR")
    table_csv.write_text(original.replace(",yes\n", ",no\n", 1))  # one label changed: the same counts
    assert_user_error(cli("train", "--resume", run_dir), "examples, not the same ones")
    table_csv.write_text(original)
    result = cli("train", "--resume", run_dir)
    assert result.exit_code == 0, result.text


def test_image_folder_end_to_end(cli, image_folder, tmp_path):
    run_dir = tmp_path / "run"
    result = cli("train", "cnn", "--dataset", image_folder, "--run-dir", run_dir, "--json", "train.epochs=2",
                 "model.widths=[8]", "model.stem_width=4", "train.batch_size=8", "data.val_fraction=0.1")
    assert result.exit_code == 0, result.text
    with open(run_dir / "eval" / "test" / "predictions.csv", newline="") as f:  # the test pass names its files
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and all(Path(r["input"]).parent == image_folder / "test" / r["label"] for r in rows)
    assert cli("eval", run_dir, "--split", "val").exit_code == 0  # the validation images, held out of train/
    with open(run_dir / "eval" / "val" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(Path(r["input"]).parent == image_folder / "train" / r["label"] for r in rows)
    png = next((image_folder / "test" / "class_1").glob("*.png"))
    result = cli("predict", run_dir, png, "--json")
    assert result.exit_code == 0, result.text
    assert json.loads(result.stdout)["predictions"][0]["top_k"][0]["label"].startswith("class_")
    shutil.rmtree(image_folder)
    assert_user_error(cli("eval", run_dir), "is not here", f"bigml eval {run_dir} --dataset PATH")
    result = cli("export", run_dir, "--json")
    assert result.exit_code == 0, result.text
    assert json.loads(result.stdout)["checked_on"] == f"random inputs ({image_folder} is not here)"


def test_csv_table_end_to_end(cli, table_csv, tmp_path):
    run_dir = tmp_path / "run"
    result = cli("train", "mlp", "--dataset", table_csv, "--target", "label", "--run-dir", run_dir, "--json",
                 "train.epochs=15", "model.hidden_units=[32]", "train.learning_rate=0.01")
    assert result.exit_code == 0, result.text
    assert json.loads(result.stdout.strip().splitlines()[-1])["accuracy"] >= 0.7
    rows = tmp_path / "rows.csv"
    rows.write_text("label,income,colour,age\n?,70,red,30\n?,,purple,\n?,60,Blue,40\n")  # any column order,
    result = cli("predict", run_dir, rows, "--json")  # unseen and missing values
    assert result.exit_code == 0, result.text
    answer = json.loads(result.stdout)
    assert len(answer["predictions"]) == 3
    assert answer["notes"] == ["note: values the model never saw in training read as a blank cell does; column "
                               "'colour': 'Blue' (training had 'blue'), 'purple'"]
    rows.write_text("label,income,colour,age\n?,70,red,30\n")
    assert json.loads(cli("predict", run_dir, rows, "--json").stdout)["notes"] == []
    result = cli("eval", run_dir, "--dataset", table_csv, "--json")  # every labelled row of a CSV
    assert result.exit_code == 0, result.text
    assert json.loads(result.stdout)["examples"] == 240
    lines = table_csv.read_text().splitlines()
    with open(run_dir / "eval" / "test" / "predictions.csv", newline="") as f:  # the held-out rows, by line
        tested = list(csv.DictReader(f))
    assert len(tested) == 48 and len({r["input"] for r in tested}) == 48
    named = {"test": tested}
    for split in ("val", "train"):  # the other splits name their rows too
        assert cli("eval", run_dir, "--split", split).exit_code == 0
        with open(run_dir / "eval" / split / "predictions.csv", newline="") as f:
            named[split] = list(csv.DictReader(f))
    assert [len(named[split]) for split in ("train", "val", "test")] == [173, 19, 48]
    inputs = [r["input"] for rows_ in named.values() for r in rows_]
    assert sorted(inputs) == sorted(f"{table_csv}:{n}" for n in range(2, 242))  # each row once
    for r in (r for rows_ in named.values() for r in rows_):
        file, line = r["input"].rsplit(":", 1)
        assert file == str(table_csv) and lines[int(line) - 1].rsplit(",", 1)[1] == r["label"]
    some = tmp_path / "some.csv"
    lines = table_csv.read_text().splitlines()
    some.write_text("\n".join([lines[0], lines[1], lines[2].rsplit(",", 1)[0] + ",", lines[3]]) + "\n")
    assert cli("eval", run_dir, "--dataset", some).exit_code == 0
    with open(run_dir / "eval" / "dataset-some" / "predictions.csv", newline="") as f:
        assert [r["input"] for r in csv.DictReader(f)] == [f"{some}:2", f"{some}:4"]  # line 3 has no label
    assert_user_error(cli("eval", run_dir, "--dataset", rows), "no rows with a value in its 'label' column")
    rows.write_text("income,colour,age\n70,red,30\n")
    assert_user_error(cli("eval", run_dir, "--dataset", rows), "has no column 'label'")
    result = cli("export", run_dir, "--json")
    assert result.exit_code == 0, result.text
    assert json.loads(result.stdout)["checked_on"] == "test split"
    assert json.loads(result.stdout)["top1_agreement"] == 1.0
    assert_user_error(cli("train", "mlp", "--dataset", table_csv, "--run-dir", tmp_path / "r2"), "--target")
    assert_user_error(cli("train", "mlp", "--dataset", table_csv, "--target", "lable", "--run-dir", tmp_path / "r2"),
                      "did you mean 'label'")
    assert_user_error(cli("train", "cnn", "--dataset", table_csv, "--target", "label", "--run-dir", tmp_path / "r2"),
                      "needs image data")
    bad = tmp_path / "bad.csv"
    bad.write_text("age,colour\n30,red\n")
    assert_user_error(cli("predict", run_dir, bad), f"{bad} is missing the column 'income'")
    bad.write_text("age,colour,income\n30,red,70\n41,blue,n/a?\n")
    assert_user_error(cli("predict", run_dir, bad), f"{bad}: column 'income' holds 'n/a?'", "leave it blank")
    table_csv.rename(tmp_path / "moved.csv")  # exporting needs the run, not its data
    result = cli("export", run_dir, "--out", tmp_path / "served", "--json")
    assert result.exit_code == 0, result.text
    check = json.loads(result.stdout)
    assert check["checked_on"].startswith("random inputs") and check["top1_agreement"] == 1.0
    assert check["checked_examples"] == 256


def test_metrics_print_large_numbers_in_full():
    from bigml_cli.cli import format_number
    assert [format_number(v) for v in (29430.4, 0.952613, 359, 12345, True, "x")] == \
        ["29,430", "0.9526", "359", "12,345", "True", "x"]


def test_version(cli):
    from importlib.metadata import version

    result = cli("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"bigml {version('bigml-keras')}"


def test_ctrl_c_while_tensorflow_loads_prints_one_line(monkeypatch, capsys):
    """The first seconds of every command go to importing TensorFlow (once its arguments parsed)."""
    from bigml_cli import cli as cli_module

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_module, "_quiet_tensorflow_import", interrupted)
    monkeypatch.setattr(sys, "argv", ["bigml", "doctor"])
    with pytest.raises(SystemExit) as exit_:
        cli_module.main()
    assert exit_.value.code == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_an_output_path_through_a_file_is_a_user_error(cli, tmp_path):
    # was "internal error: NotADirectoryError ..." and exit 1
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    assert_user_error(cli("samples", "digits", "--out", blocker / "samples"), f"cannot use {blocker}",
                      "part of that path is a file, not a folder; pick another path")
    assert_user_error(cli("train", "mlp", "--dataset", "digits", "--run-dir", blocker / "run", "train.epochs=1"),
                      f"cannot use {blocker}", "pick another path")
    assert blocker.read_text() == "a file, not a folder"


def test_a_dataset_path_names_its_folders_the_same_however_it_is_written():
    # `eval --dataset data.csv` wrote eval/dataset-data.csv/ but `--dataset ./data.csv` eval/dataset-data/, and
    # a folder named v1.2-images/ became 'v1'
    from bigml_cli.runs import slug
    assert {slug(p) for p in ("data.csv", "./data.csv", "/home/me/data.csv")} == {"data"}
    assert slug("v1.2-images/") == "v1.2-images" and slug("my photos/") == "my_photos" and slug("cifar10") == "cifar10"


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["train", "--help"], ["list", "recipes"],
                                  ["list", "runs"], ["list", "datasets"]])
def test_help_the_version_and_light_listings_do_not_load_tensorflow(tmp_path, args):
    # importing TensorFlow takes 3 s or more; `bigml --help` took as long as a command that trains
    code = ("import sys\nfrom bigml_cli import cli\nsys.argv = ['bigml', *sys.argv[1:]]\ntry:\n    cli.main()\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\nprint('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "False"
