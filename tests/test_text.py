"""Text classification on tiny synthetic text: folders of .txt files and the aclImdb layout."""

import csv
import json
import shutil

import numpy as np
import pytest

from bigml_cli.config import DataConfig
from bigml_cli.data import load_dataset
from conftest import assert_user_error

POSITIVE = ["good", "great", "excellent", "wonderful", "loved"]
NEGATIVE = ["bad", "awful", "terrible", "boring", "hated"]
FILLER = ["the", "movie", "film", "was", "plot", "actors", "and", "it", "a", "story"]


def review(rng, words):
    return " ".join(rng.choice(FILLER + words, size=rng.integers(6, 14)).tolist()) + ". <br /> The end!"


def write_reviews(folder, n, seed):
    rng = np.random.default_rng(seed)
    for label, words in (("neg", NEGATIVE), ("pos", POSITIVE)):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (folder / label / f"{i}_{7 if label == 'pos' else 2}.txt").write_text(review(rng, words))


@pytest.fixture
def text_folder(tmp_path):
    write_reviews(tmp_path / "reviews", 60, seed=0)
    return tmp_path / "reviews"


def test_imdb_official_layout(tmp_path):
    write_reviews(tmp_path / "aclImdb" / "train", 20, seed=1)
    write_reviews(tmp_path / "aclImdb" / "test", 10, seed=2)
    ds = load_dataset(DataConfig(name="imdb", val_fraction=0.1), tmp_path)
    assert ds.class_names == ["neg", "pos"] and len(ds.y_train) == 36 and len(ds.y_test) == 20
    assert ds.kind == "text" and "good" in ds.input_info["vocab"] and "<br />" not in ds.x_train[0]


def test_vocabulary_comes_from_the_training_split_only(text_folder):
    ds = load_dataset(DataConfig(name=str(text_folder), val_fraction=0.2, test_fraction=0.25))
    train_words = {w for t in ds.x_train for w in t.lower().replace(".", " ").replace("!", " ").split()}
    assert set(ds.input_info["vocab"]) <= train_words


@pytest.mark.parametrize("model, params", [
    ("rnn", ["model.units=16", "model.embedding_dim=16"]),
    ("rnn", ["model.cell=gru", "model.bidirectional=false", "model.num_layers=2", "model.units=16"]),
    ("transformer", ["model.dim=32", "model.heads=2", "model.mlp_dim=32", "model.num_layers=1"]),
])
def test_text_models_train_predict_and_export_raw_strings(cli, text_folder, tmp_path, model, params):
    run_dir = tmp_path / "run"
    result = cli("train", model, "--dataset", text_folder, "--run-dir", run_dir, "--json", "train.epochs=12",
                 "train.batch_size=16", "train.learning_rate=0.01", "data.sequence_length=16", *params)
    assert result.exit_code == 0, result.text
    assert json.loads(result.stdout.strip().splitlines()[-1])["accuracy"] >= 0.8
    result = cli("predict", run_dir, "a wonderful excellent film, loved it", "boring awful plot, hated it", "--json")
    assert result.exit_code == 0, result.text
    labels = [p["top_k"][0]["label"] for p in json.loads(result.stdout)["predictions"]]
    assert labels == ["pos", "neg"]
    review_file = tmp_path / "r.txt"
    review_file.write_text("great great movie")
    result = cli("predict", run_dir, review_file, "--file", "--json")
    assert result.exit_code == 0, result.text
    assert cli("predict", run_dir, review_file, "--json").stdout == result.stdout, "a .txt path is read as a file"
    write_reviews(tmp_path / "new-reviews", 10, seed=5)  # the user's own labelled reviews
    result = cli("predict", run_dir, tmp_path / "new-reviews", "--json")
    assert result.exit_code == 0, result.text
    assert len(json.loads(result.stdout)["predictions"]) == 20
    result = cli("eval", run_dir, "--dataset", tmp_path / "new-reviews", "--json")
    assert result.exit_code == 0, result.text
    report = json.loads(result.stdout)
    assert report["examples"] == 20 and report["accuracy"] >= 0.8
    result = cli("samples", text_folder, "--out", tmp_path / "samples", "-n", 4)  # test texts as NNNNN_LABEL.txt
    assert result.exit_code == 0 and "wrote 4 texts" in result.stdout, result.text
    result = cli("predict", run_dir, tmp_path / "samples", "--json")
    predicted = [p["top_k"][0]["label"] for p in json.loads(result.stdout)["predictions"]]
    with open(run_dir / "eval/test/predictions.csv") as f:
        assert predicted == [r["predicted"] for r in csv.DictReader(f)][:4]  # the same texts as the test pass
    result = cli("export", run_dir, "--json")
    assert result.exit_code == 0, result.text
    assert json.loads(result.stdout)["top1_agreement"] == 1.0
    shutil.rmtree(text_folder)  # a run exports without its data: checked on random texts
    result = cli("export", run_dir, "--out", tmp_path / "served", "--json")
    assert result.exit_code == 0, result.text
    check = json.loads(result.stdout)
    assert check["checked_on"].startswith("random inputs") and check["top1_agreement"] == 1.0


def test_text_bad_inputs(cli, text_folder, tmp_path, digits_image_run):
    one_class = tmp_path / "one"
    (one_class / "only").mkdir(parents=True)
    (one_class / "only" / "a.txt").write_text("some words")
    assert_user_error(cli("train", "rnn", "--dataset", one_class, "--run-dir", tmp_path / "r"),
                      "at least two; found 1")
    assert_user_error(cli("train", "cnn", "--dataset", text_folder, "--run-dir", tmp_path / "r"), "needs image data")
    assert_user_error(cli("train", "mlp", "--dataset", text_folder, "--run-dir", tmp_path / "r"), "'rnn' or")
    assert_user_error(cli("train", "rnn", "--dataset", "digits", "--run-dir", tmp_path / "r"), "needs text data")
    assert_user_error(cli("predict", digits_image_run, "a lovely film"), "is not a file", "not text")


@pytest.fixture
def digits_image_run(cli, tmp_path):
    run_dir = tmp_path / "digits-run"  # not "digits": the tests run in tmp_path, where that name is a folder
    assert cli("train", "mlp", "--dataset", "digits", "--run-dir", run_dir, "train.epochs=1").exit_code == 0
    return run_dir


def test_empty_text_is_refused(cli, text_folder, tmp_path):
    run_dir = tmp_path / "run"
    assert cli("train", "rnn", "--dataset", text_folder, "--run-dir", run_dir, "train.epochs=1",
               "data.sequence_length=8", "model.units=8").exit_code == 0
    assert_user_error(cli("predict", run_dir, "   "), "input text is empty")


def write_review_csv(path, n, seed, sep=","):
    """`id,sentence,stars,label` rows, as text datasets are often shared; reviews with commas are quoted."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter=sep)
        w.writerow(["id", "sentence", "stars", "label"])
        for i in range(n):
            label = ["neg", "pos"][i % 2]
            w.writerow([i, review(rng, POSITIVE if label == "pos" else NEGATIVE), rng.integers(1, 6), label])


def test_a_csv_of_texts_trains_a_text_model_and_its_rows_are_predicted_and_scored(cli, tmp_path):
    table = tmp_path / "reviews.csv"
    write_review_csv(table, 160, seed=0)
    run_dir = tmp_path / "run"
    result = cli("train", "rnn", "--dataset", table, "--target", "label", "--run-dir", run_dir, "--json",
                 "train.epochs=12", "train.batch_size=16", "train.learning_rate=0.01", "data.sequence_length=16",
                 "model.units=16", "model.embedding_dim=16")
    assert result.exit_code == 0, result.text
    text = " ".join(result.stderr.split())
    assert "column 'sentence' reads as text" in text and "left out: id, stars" in text
    assert json.loads(result.stdout.strip().splitlines()[-1])["accuracy"] >= 0.8
    new = tmp_path / "new.tsv"
    write_review_csv(new, 20, seed=5, sep="\t")
    result = cli("predict", run_dir, new, "--json")
    assert result.exit_code == 0, result.text
    predictions = json.loads(result.stdout)["predictions"]
    assert [p["input"] for p in predictions[:2]] == [f"{new}:2", f"{new}:3"]
    right = sum(p["top_k"][0]["label"] == ["neg", "pos"][i % 2] for i, p in enumerate(predictions))
    assert right >= 16
    result = cli("eval", run_dir, "--dataset", new, "--json")
    assert result.exit_code == 0, result.text
    assert json.loads(result.stdout)["examples"] == 20
    predictions_csv = (run_dir / "eval/dataset-new/predictions.csv").read_text()
    assert f"{new}:2" in predictions_csv
    result = cli("export", run_dir, "--json")
    assert result.exit_code == 0, result.text


def test_text_csv_mistakes_are_one_line(cli, tmp_path):
    table = tmp_path / "reviews.csv"
    write_review_csv(table, 40, seed=0)
    assert_user_error(cli("train", "rnn", "--dataset", table, "--target", "label", "--text-column", "sentense",
                          "--run-dir", tmp_path / "r"), "text column 'sentense' is not in", "did you mean 'sentence'")
    assert_user_error(cli("train", "rnn", "--dataset", table, "--target", "label", "--text-column", "label",
                          "--run-dir", tmp_path / "r"), "both the target and the text column")
    two = tmp_path / "two.csv"
    two.write_text("a,b,label\n" + "".join(f'"the film was good {i}","a plot of many words {i}",x{i % 2}\n'
                                           for i in range(20)))
    assert_user_error(cli("train", "rnn", "--dataset", two, "--target", "label", "--run-dir", tmp_path / "r"),
                      "several columns of text (a, b)", "--text-column")
    assert not (tmp_path / "r").exists()
