"""The GPT language model on a tiny synthetic corpus: train, eval, seeded generation, export, bad inputs."""

import json
import re
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from bigml_cli.cli import app
from conftest import assert_user_error

TINY_GPT = ["data.tokens=characters", "data.sequence_length=16", "train.steps_per_epoch=40", "train.epochs=3",
            "train.batch_size=16", "train.learning_rate=0.003", "model.dim=32", "model.heads=2", "model.num_layers=1",
            "model.mlp_dim=64", "model.dropout=0.0"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(0)
    words = ["to be", "or not", "that is", "the question", "whether tis", "nobler in", "the mind"]
    text = "\n".join(" ".join(rng.choice(words, size=5)) + "." for _ in range(300))
    path = tmp_path_factory.mktemp("corpus") / "verse.txt"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def lm_run(corpus, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "gpt"
    result = CliRunner().invoke(app, ["train", "gpt", "--dataset", str(corpus), "--run-dir", str(run_dir), "--json",
                                      *TINY_GPT])
    assert result.exit_code == 0, result.output
    return run_dir, json.loads(result.stdout.strip().splitlines()[-1])


def test_gpt_learns_the_corpus(lm_run, cli):
    run_dir, metrics = lm_run
    uniform = np.log(len(json.loads((run_dir / "run.json").read_text())["class_names"]))
    assert metrics["loss"] < 0.6 * uniform, (metrics["loss"], uniform)  # well below guessing
    assert metrics["perplexity"] == pytest.approx(np.exp(metrics["loss"]))
    assert metrics["tokens_per_second"] == pytest.approx(metrics["examples_per_second"] * 16, rel=0.01)  # 16 a window
    report = json.loads(cli("eval", run_dir, "--json").stdout)
    assert report["loss"] == pytest.approx(metrics["loss"], rel=1e-6) and report["split"] == "val"
    train = json.loads(cli("eval", run_dir, "--split", "train", "--json").stdout)  # was the validation text again
    assert train["split"] == "train" and train["examples"] > 5 * report["examples"]  # 90% of the text against 10%
    assert (run_dir / "eval" / "train" / "report.json").exists()
    assert_user_error(cli("eval", run_dir, "--split", "test"), "has no test split", "--split train")


def test_generation_is_seeded(lm_run, cli):
    run_dir, _ = lm_run
    args = ["generate", run_dir, "--prompt", "to be", "--max-tokens", 40, "--temperature", 0.8, "--top-k", 5]
    first, again = cli(*args, "--seed", 1), cli(*args, "--seed", 1)
    other = cli(*args, "--seed", 2)
    assert first.exit_code == 0, first.text
    assert first.stdout == again.stdout and first.stdout != other.stdout
    assert first.stdout.startswith("to be") and len(first.stdout.rstrip("\n")) == len("to be") + 40


def test_temperature_zero_is_greedy_whatever_the_seed(lm_run, cli):
    run_dir, _ = lm_run
    args = ["generate", run_dir, "--prompt", "to be", "--max-tokens", 30, "--temperature", 0]
    one, two = cli(*args, "--seed", 1), cli(*args, "--seed", 2)
    assert one.exit_code == 0, one.text
    assert one.stdout == two.stdout and len(one.stdout.rstrip("\n")) == len("to be") + 30


def test_export_returns_logits_and_the_vocabulary(lm_run, cli, tmp_path):
    run_dir, _ = lm_run
    result = cli("export", run_dir, "--out", tmp_path / "sm", "--json")
    assert result.exit_code == 0, result.text
    assert json.loads(result.stdout)["top1_agreement"] == 1.0
    vocab = json.loads((tmp_path / "sm" / "assets.extra" / "vocab.json").read_text())
    assert vocab["tokens"] == "characters" and "t" in vocab["vocab"] and vocab["sequence_length"] == 16
    import tensorflow as tf

    serve = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    logits = serve(tokens=tf.zeros((2, 16), tf.int32))["logits"]
    assert logits.shape == (2, 16, len(vocab["vocab"]))


def test_eval_on_your_own_text(lm_run, cli, corpus, tmp_path):
    """The corpus's own validation part, given as a file, scores as `bigml eval` does on it."""
    run_dir, _ = lm_run
    report = json.loads(cli("eval", run_dir, "--json").stdout)
    text = corpus.read_text()
    own = tmp_path / "held-out.txt"
    own.write_text(text[int(len(text) * 0.9):])  # data.val_fraction's default: the last 10%
    result = cli("eval", run_dir, "--dataset", own, "--json")
    assert result.exit_code == 0, result.text
    mine = json.loads(result.stdout)
    assert mine["examples"] == report["examples"] and mine["loss"] == pytest.approx(report["loss"], rel=1e-6)
    assert (run_dir / "eval" / "dataset-held-out" / "report.json").exists()
    assert mine["unknown_tokens"] == 0 and mine["tokens"] == len(own.read_text())
    # characters the model never saw are skipped: the report and a note say how many
    foreign = tmp_path / "foreign.txt"
    foreign.write_text(own.read_text() + "☃☃☃☃")
    result = cli("eval", run_dir, "--dataset", foreign)
    assert result.exit_code == 0, result.text
    assert f"note: 4 of {len(own.read_text()) + 4:,} characters" in result.stdout and "were skipped" in result.stdout
    own.write_text("to be")
    assert_user_error(cli("eval", run_dir, "--dataset", own), "scoring needs at least 17")
    assert_user_error(cli("eval", run_dir, "--dataset", tmp_path / "missing.txt"), "missing.txt does not exist")


def test_export_without_the_corpus_checks_random_tokens(lm_run, cli, tmp_path):
    copy = tmp_path / "copied-run"
    shutil.copytree(lm_run[0], copy)
    config = copy / "config.yaml"
    config.write_text(re.sub(r"name: .*verse\.txt", f"name: {tmp_path / 'gone.txt'}", config.read_text()))
    result = cli("export", copy, "--json")
    assert result.exit_code == 0, result.text
    check = json.loads(result.stdout)
    assert check["checked_on"].startswith("random inputs") and check["top1_agreement"] == 1.0


def test_onnx_export_of_the_gpt_runs_in_onnx_runtime(lm_run, cli, tmp_path):
    import onnxruntime

    run_dir, _ = lm_run  # its GELU computes erfc, which ONNX lacks: bigml rewrites it as 1 - erf
    result = cli("export", run_dir, "--format", "onnx", "--out", tmp_path / "onnx", "--json")
    assert result.exit_code == 0, result.text
    check = json.loads(result.stdout)
    assert check["top1_agreement"] == 1.0
    vocab = json.loads((tmp_path / "onnx" / "vocab.json").read_text())
    session = onnxruntime.InferenceSession(check["file"], providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: np.zeros((2, 16), np.int32)})[0]
    assert logits.shape == (2, 16, len(vocab["vocab"]))


def test_language_model_bad_inputs(lm_run, cli, tmp_path):
    run_dir, _ = lm_run
    assert_user_error(cli("generate", run_dir, "--prompt", "to be ☃"), "outside the model's vocabulary", "☃")
    assert_user_error(cli("generate", run_dir, "--prompt", ""), "give a --prompt", "it is empty")
    for option, value, message in (("--temperature", -1, "--temperature must be a number from 0 up"),
                                   ("--temperature", "nan", "got nan"), ("--temperature", "inf", "got inf"),
                                   ("--max-tokens", 0, "--max-tokens must be 1 or more, got 0"),
                                   ("--top-k", -2, "--top-k must be 0 (no cut) or more, got -2"),
                                   ("--seed", -3, "--seed must be 0 or more, got -3")):
        assert_user_error(cli("generate", run_dir, "--prompt", "to", option, value), message)
    result = cli("generate", run_dir, "--prompt", "to", "--temperature", 1e-300, "--max-tokens", 3)
    assert result.exit_code == 0, result.output  # as greedy, without overflowing to nan
    assert_user_error(cli("predict", run_dir, "to be"), "is a language model", "bigml generate")
    short = tmp_path / "short.txt"
    short.write_text("too short")
    assert_user_error(cli("train", "gpt", "--dataset", short, "--run-dir", tmp_path / "r", *TINY_GPT),
                      "too short for data.sequence_length=16")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    assert_user_error(cli("train", "gpt", "--dataset", empty, "--run-dir", tmp_path / "r"), "is empty")
    assert_user_error(cli("train", "gpt", "--dataset", "digits", "--run-dir", tmp_path / "r"), "needs corpus data")
    assert not (tmp_path / "r").exists()


def test_generate_on_a_classifier_is_refused(cli, tmp_path):
    run_dir = tmp_path / "digits"
    assert cli("train", "mlp", "--dataset", "digits", "--run-dir", run_dir, "train.epochs=1").exit_code == 0
    assert_user_error(cli("generate", run_dir, "--prompt", "hello"), "is a classifier")


def test_unknown_prompt_words_are_named():
    from bigml_cli.generate import encode, unknown_words

    info = {"tokens": "words", "vocab": ["", "<unk>", "to", "be"]}
    assert unknown_words("to be or not to be or", info) == ["or", "not"]
    assert encode("to zebra", info) == [2, 1]
    assert unknown_words("to be", {**info, "tokens": "characters"}) == []


def test_generation_runs_the_model_compiled(lm_run, monkeypatch):
    import keras

    from bigml_cli import generate as generate_mod
    from test_models import Recorder

    calls, load = [], generate_mod.load_model

    def recorded(run):
        model = load(run)
        tokens = model.inputs[0]
        return keras.Model(tokens, Recorder(calls)(model(tokens)))

    monkeypatch.setattr(generate_mod, "load_model", recorded)
    calls.clear()
    generate_mod.generate(lm_run[0], "to be", max_tokens=5, seed=0)
    assert calls and not any(calls) and len(calls) < 5, calls  # traced once or twice, not 5 eager steps
