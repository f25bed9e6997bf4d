"""`bigml train --init RUN`: an earlier run's weights where the layers match, its vocabulary, a new head."""

import json
import re

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


GPT_WORDS = ["data.sequence_length=12", "train.batch_size=16", "train.learning_rate=0.003", "model.dim=16",
             "model.heads=2", "model.num_layers=1", "model.mlp_dim=32"]


def test_gpt_pretrains_on_the_training_texts_then_starts_a_classifier_on_the_same_token_ids(cli, tmp_path):
    """`bigml train gpt --dataset FOLDER` models the training split's texts (never the test texts), and
    gpt_classifier --init takes every layer but the head, reading each word as the same id."""
    from bigml_cli.data.text import encode_tokens, standardize
    from bigml_cli.evaluate import load_model
    from bigml_cli.runs import Run

    data = tmp_path / "reviews"
    write_reviews(data, 30, seed=5)
    lm, classifier = tmp_path / "lm", tmp_path / "classifier"
    result = cli("train", "gpt", "--dataset", data, "--run-dir", lm, "train.epochs=2", *GPT_WORDS, "--json")
    assert result.exit_code == 0, result.text
    assert cli("eval", lm, "--json").exit_code == 0  # the same corpus again, from the same dataset
    own = tmp_path / "own.txt"
    own.write_text("the film was great and the plot was zyzzyva " * 10)
    result = cli("eval", lm, "--dataset", own, "--json")
    assert result.exit_code == 0, result.text
    assert json.loads(result.stdout)["unknown_tokens"] == 10  # zyzzyva, read as [UNK]
    result = cli("train", "gpt_classifier", "--dataset", data, "--init", lm, "--run-dir", classifier,
                 "train.epochs=2", *GPT_WORDS, "--json")
    assert result.exit_code == 0, result.text
    loaded, total = (int(n.replace(",", "")) for n in re.search(
        r"([\d,]+) of ([\d,]+) parameters loaded", " ".join(result.stderr.split())).groups())
    assert total - loaded == 16 * 2 + 2  # the head alone is new
    lm_vocab = json.loads((lm / "run.json").read_text())["input"]["vocab"]
    text = "The film was GREAT, and the plot... wonderful! zyzzyva"
    tokenize = load_model(Run(classifier)).get_layer("tokenize")
    ids = np.asarray(tokenize(np.array([text], dtype=object)))[0]
    want = encode_tokens(standardize([text])[0], lm_vocab, "words")
    assert ids[:len(want)].tolist() == want.tolist() and want[-1] == 1  # the unknown word too


def test_the_corpus_of_a_text_dataset_is_its_training_texts_alone():
    from bigml_cli.config import DataConfig
    from bigml_cli.data.text import make_text_dataset
    from bigml_cli.tasks import task_for

    texts = np.array([f"review number{i} says Hello." for i in range(40)], dtype=object)
    labels = np.arange(40) % 2
    cfg = DataConfig(sequence_length=4, val_fraction=0.2)
    ds = make_text_dataset("toy", ["a", "b"], texts[:30], labels[:30], texts[30:], labels[30:], cfg)
    corpus = task_for(ds).corpus(ds, cfg)
    assert corpus.kind == "lm" and corpus.vocab[:2] == ["", "[UNK]"]
    seen = set(corpus.text.split())
    assert {f"number{i}" for i in range(30, 40)}.isdisjoint(seen)  # no test text
    assert {w for t in ds.x_val for w in t.lower().split()} - seen  # nor the validation texts held out
    assert "hello" in seen and "Hello." not in corpus.text  # standardized as the classifier reads


def test_a_language_model_of_a_text_file_does_not_start_a_classifier(cli, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the film was good and the plot was great.\n" * 80)
    data = tmp_path / "reviews"
    write_reviews(data, 10, seed=4)
    assert cli("train", "gpt", "--dataset", corpus, "--run-dir", tmp_path / "lm", "train.epochs=1",
               *GPT_WORDS).exit_code == 0
    assert_user_error(cli("train", "gpt_classifier", "--dataset", data, "--init", tmp_path / "lm", "--run-dir",
                          tmp_path / "new", *GPT_WORDS), "is a language model of a text file",
                      "bigml train gpt --dataset")
    assert not (tmp_path / "new").exists()


def test_the_backbone_stays_frozen_then_steps_at_its_scale():
    """train.freeze_backbone_epochs: no change to any weight but the head's for the first steps (no weight decay
    either); train.backbone_lr_scale: then the backbone's Adam steps are that fraction of the head's."""
    import keras

    from bigml_cli.config import TrainConfig
    from bigml_cli.optim import make_optimizer

    def model_and_step(scale, freeze_epochs):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(keras.layers.Dense(3, name="body")(inputs)))
        t = TrainConfig(epochs=3, learning_rate=0.01, warmup_epochs=0, schedule="constant", weight_decay=0.1,
                        freeze_backbone_epochs=freeze_epochs, backbone_lr_scale=scale)
        model.compile(make_optimizer(t, steps_per_epoch=2), loss="mse")
        return model

    x, y = np.ones((8, 4), "float32"), np.zeros((8, 2), "float32")
    model = model_and_step(0.5, 1)
    body, head = model.get_layer("body").get_weights(), model.get_layer("logits").get_weights()
    for _ in range(2):  # one epoch: 2 steps
        model.train_on_batch(x, y)
    assert all(np.array_equal(a, b) for a, b in zip(body, model.get_layer("body").get_weights()))
    assert not np.array_equal(head[0], model.get_layer("logits").get_weights()[0])
    model.train_on_batch(x, y)  # the third step moves the backbone, at half the rate
    half = model.get_layer("body").get_weights()[1] - body[1]  # the bias: no weight decay
    full = model_and_step(1.0, 0)
    before = full.get_layer("body").get_weights()[1]
    full.train_on_batch(x, y)
    step = full.get_layer("body").get_weights()[1] - before  # Adam's first step: about lr in size
    assert np.all(np.abs(half) > 0) and np.allclose(np.abs(half), 0.5 * np.abs(step), rtol=0.05)


def test_gpt_classifier_pools_the_last_real_token_or_the_mean():
    """pool=last feeds the head the final norm's output at the last real token (what has attended to the whole
    text); pool=mean its average over the real tokens."""
    import keras

    from bigml_cli.models import build_model

    info = {"kind": "text", "vocab": ["good", "bad", "film"], "sequence_length": 6, "tokens": "words"}
    sizes = {"dim": 8, "heads": 2, "num_layers": 1, "mlp_dim": 16, "dropout": 0.0}
    texts = np.array(["good film", "good film bad", "bad film good film"], dtype=object)
    real = np.array([[1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]], np.float32)[..., None]
    for pool, pooled in (("last", lambda h: h[np.arange(3), [1, 2, 3]]),
                         ("mean", lambda h: (h * real).sum(1) / real.sum(1))):
        model = build_model({"name": "gpt_classifier", **sizes, "pool": pool}, info, 2)
        norm = [layer for layer in model.layers if isinstance(layer, keras.layers.LayerNormalization)][-1]
        h = np.asarray(keras.Model(model.inputs, norm.output)(texts))  # (3, 6, 8)
        want = keras.activations.softmax(model.get_layer("logits")(pooled(h))).numpy()
        assert np.allclose(np.asarray(model(texts)), want, atol=1e-5), pool
