"""`bigml train --init RUN`: an earlier run's weights where the layers match, its vocabulary, a new head."""

import json

import numpy as np
import pytest

from conftest import assert_user_error
from test_lm import TINY_GPT
from test_text import FILLER, write_reviews

SMALL_RNN = ["train.batch_size=16", "train.learning_rate=0.01", "data.sequence_length=16", "model.units=16",
             "model.embedding_dim=16"]


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A small rnn trained on positive and negative reviews."""
    from typer.testing import CliRunner

    from bigml_cli.cli import app

    root = tmp_path_factory.mktemp("init")
    write_reviews(root / "reviews", 60, seed=0)
    result = CliRunner().invoke(app, ["train", "rnn", "--dataset", str(root / "reviews"), "--run-dir",
                                      str(root / "source"), "train.epochs=12", *SMALL_RNN, "--json"])
    assert result.exit_code == 0, result.output
    return root / "source"


def test_init_loads_the_backbone_keeps_the_vocabulary_and_builds_a_new_head(cli, source_run, tmp_path):
    data = tmp_path / "three"
    write_reviews(data, 20, seed=3)  # neg and pos again, and a third class of plain filler
    (data / "meh").mkdir()
    rng = np.random.default_rng(1)
    for i in range(20):
        (data / "meh" / f"{i}.txt").write_text(" ".join(rng.choice(FILLER, size=8)))
    run_dir = tmp_path / "new"
    result = cli("train", "rnn", "--dataset", data, "--init", source_run, "--run-dir", run_dir, "train.epochs=1",
                 *SMALL_RNN, "--json")
    assert result.exit_code == 0, result.text
    text = " ".join(result.stderr.split())
    assert f"--init {source_run}:" in text and "parameters loaded" in text
    assert "loaded" in text and "the head: other classes" in text
    source_info = json.loads((source_run / "run.json").read_text())
    info = json.loads((run_dir / "run.json").read_text())
    assert info["input"]["vocab"] == source_info["input"]["vocab"]  # the tokens mean what they meant there
    assert info["class_names"] == ["meh", "neg", "pos"]
    import yaml
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["init"] == str(source_run.resolve())


def test_a_language_model_continues_pretraining_in_its_own_vocabulary(cli, tmp_path):
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text("to be or not to be, that is the question.\n" * 60)
    second.write_text("whether tis nobler in the mind to suffer.\n" * 60)
    short = [arg for arg in TINY_GPT if not arg.startswith(("train.steps_per_epoch", "train.epochs"))]
    short += ["train.steps_per_epoch=5", "train.epochs=1"]  # what is loaded matters here, not what is learnt
    assert cli("train", "gpt", "--dataset", first, "--run-dir", tmp_path / "lm", *short).exit_code == 0
    result = cli("train", "gpt", "--dataset", second, "--init", tmp_path / "lm", "--run-dir", tmp_path / "more",
                 *short, "--json")
    assert result.exit_code == 0, result.text
    vocab = json.loads((tmp_path / "lm" / "run.json").read_text())["input"]["vocab"]
    assert json.loads((tmp_path / "more" / "run.json").read_text())["input"]["vocab"] == vocab
    import re
    loaded, total = re.search(r"([\d,]+) of ([\d,]+) parameters loaded", result.stderr).groups()
    assert loaded == total  # the same model on the same vocabulary: every layer, the next-token head too


def test_init_mistakes_are_one_line_and_write_nothing(cli, source_run, tmp_path):
    data = tmp_path / "reviews"
    write_reviews(data, 10, seed=4)
    new = tmp_path / "new"
    assert_user_error(cli("train", "rnn", "--dataset", data, "--init", tmp_path / "nowhere", "--run-dir", new),
                      "nowhere does not exist")
    assert_user_error(cli("train", "rnn", "--dataset", data, "--init", source_run, "--run-dir", new,
                          "model.units=8", "model.embedding_dim=8"), "shares no layer with the new model")
    digits = tmp_path / "digits"
    assert cli("train", "mlp", "--dataset", "digits", "--run-dir", digits, "train.epochs=1",
               "model.hidden_units=[8]").exit_code == 0
    assert_user_error(cli("train", "rnn", "--dataset", data, "--init", digits, "--run-dir", new),
                      "is a model of image data, and this run's data is text")
    assert_user_error(cli("train", "rnn", "--dataset", data, "--init", source_run, "--run-dir", new,
                          "data.tokens=characters"), "set data.tokens=words")
    assert not new.exists()


def test_lora_trains_a_few_percent_and_saves_merged_weights(cli, source_run, tmp_path):
    import zipfile

    data = tmp_path / "reviews"
    write_reviews(data, 30, seed=6)
    run_dir = tmp_path / "lora"
    result = cli("train", "rnn", "--dataset", data, "--init", source_run, "--run-dir", run_dir, "train.epochs=2",
                 "train.lora_rank=2", *SMALL_RNN, "--json")
    assert result.exit_code == 0, result.text
    import re
    trained, total = (int(n.replace(",", "")) for n in re.search(
        r"LoRA rank 2: ([\d,]+) of ([\d,]+) parameters train", " ".join(result.stderr.split())).groups())
    assert 0 < trained < 0.2 * total  # the low-rank updates and the head; a tiny model, so more than 5%
    with zipfile.ZipFile(run_dir / "model.keras") as saved:
        assert "lora" not in saved.read("config.json").decode()  # merged: nothing extra to load
    assert json.loads(result.stdout.strip().splitlines()[-1])["accuracy"] >= 0.8  # the source already knew
    result = cli("predict", run_dir, "a wonderful excellent film, loved it", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["predictions"][0]["top_k"][0]["label"] == "pos"
    assert cli("export", run_dir, "--json").exit_code == 0
    assert_user_error(cli("train", "mlp", "--dataset", "digits", "--run-dir", tmp_path / "m", "train.lora_rank=4",
                          "model.hidden_units=[]"), "train.lora_rank=4 adapts Dense")


def test_merging_lora_gives_the_same_outputs():
    """The merged model (what a LoRA run saves) computes what the model with its low-rank updates computed."""
    import keras

    from bigml_cli.pretrained import enable_lora, merge_lora

    inputs = keras.Input((6,))
    x = keras.layers.Dense(8, activation="relu")(inputs)
    x = keras.layers.Dense(8, activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
    trained, total = enable_lora(model, 2)
    assert trained == (6 * 2 + 2 * 8) + (8 * 2 + 2 * 8) + (8 * 3 + 3) and total > trained  # A and B, and the head
    for w in model.weights:  # updates that are not zero, as after training
        if "lora" in w.path:
            w.assign(np.random.default_rng(0).normal(size=w.shape).astype("float32"))
    x = np.random.default_rng(1).normal(size=(5, 6)).astype("float32")
    merged = merge_lora(model)
    assert not any(getattr(layer, "lora_enabled", False) for layer in merged.layers)
    np.testing.assert_allclose(merged(x), model(x), atol=1e-5)
