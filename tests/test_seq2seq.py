"""Sequence to sequence (translation): sentence-pair data, tokenizers, decoding, the seq2seq model end to end."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_user_error

SMALL = ["model.dim=32", "model.heads=2", "model.num_layers=1", "model.mlp_dim=64", "data.sequence_length=12",
         "train.batch_size=16", "train.learning_rate=0.005", "data.test_fraction=0.15", "data.val_fraction=0.1"]
ANIMALS = [("cat", "gato"), ("dog", "perro"), ("bird", "pájaro"), ("fish", "pez"), ("horse", "caballo"),
           ("cow", "vaca")]
PEOPLE = [("I see", "Veo"), ("You see", "Ves"), ("We see", "Vemos"), ("They see", "Ven")]
SIZES = [("big", "grande"), ("small", "pequeño"), ("", "")]


def sentences():
    """Pairs a tiny model learns: every person x animal x size, with its Spanish word order."""
    for who, quien in PEOPLE:
        for animal, animal_es in ANIMALS:
            for size, size_es in SIZES:
                yield (f"{who} the {size + ' ' if size else ''}{animal}.",
                       f"{quien} el {animal_es}{' ' + size_es if size_es else ''}.")


def write_pairs(path, extra=()):
    path.write_text("".join(f"{s}\t{t}\n" for s, t in [*sentences(), *extra]), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A seq2seq run on the pairs above (words), trained until it translates most of them."""
    from typer.testing import CliRunner

    from bigml_cli.cli import app

    folder = tmp_path_factory.mktemp("seq2seq")
    data = write_pairs(folder / "pairs.tsv")
    result = CliRunner().invoke(app, ["train", "seq2seq", "--dataset", str(data), "--run-dir", str(folder / "run"),
                                      "train.epochs=40", "model.dropout=0", *SMALL])
    assert result.exit_code == 0, result.stdout + result.stderr
    return folder / "run"


# --- data --------------------------------------------------------------------------------------------------------


def test_pairs_are_split_by_source_sentence_so_no_test_source_was_trained_on():
    from bigml_cli.data.pairs import split_by_source

    sources = [f"sentence {i % 50}" for i in range(400)]  # every source 8 times, as Anki repeats them
    idx = split_by_source(sources, 0.2, 0.1)
    seen = {k: {sources[i] for i in v} for k, v in idx.items()}
    assert not seen["train"] & seen["test"] and not seen["train"] & seen["val"] and not seen["val"] & seen["test"]
    assert len(seen["test"]) == 10 and sum(len(v) for v in idx.values()) == 400
    assert [list(v) for v in split_by_source(sources, 0.2, 0.1).values()] == [list(v) for v in idx.values()]


@pytest.mark.parametrize("line, fragment", [("no tab here", "has no tab"), ("\tuna frase", "empty source"),
                                            ("a sentence\t ", "empty target"), ("\nI go.\tVoy.", "is empty")])
def test_a_bad_pairs_file_is_refused_in_one_line(cli, tmp_path, line, fragment):
    data = tmp_path / "pairs.tsv"
    data.write_text("I see.\tVeo.\n" + line + "\n\n", encoding="utf-8")  # a blank last line is no mistake
    result = cli("train", "seq2seq", "--dataset", data, *SMALL)
    assert_user_error(result, f"{data}:2", fragment)
    assert not (tmp_path / "runs").exists()


def write_parallel(folder, lines, lang_a="en", lang_b="es"):
    folder.mkdir(exist_ok=True)
    for split, rows in lines.items():
        (folder / f"{split}.{lang_a}").write_text("".join(s + "\n" for s, _ in rows), encoding="utf-8")
        (folder / f"{split}.{lang_b}").write_text("".join(t + "\n" for _, t in rows), encoding="utf-8")


def test_a_folder_of_parallel_files_gives_its_own_train_val_and_test_splits(tmp_path, cli):
    from bigml_cli.config import load
    from bigml_cli.data.pairs import load_pairs

    pairs = list(sentences())
    folder = tmp_path / "multi30k"
    write_parallel(folder, {"train": pairs[:50], "val": pairs[50:60], "test2016": pairs[60:]})
    cfg = load("seq2seq", str(folder), None, ["data.source_lang=en", "data.target_lang=es"]).data
    ds = load_pairs(cfg, None)
    assert [len(ds.source[s]) for s in ("train", "val", "test")] == [50, 10, len(pairs) - 60]
    assert ds.source["test"][0] == pairs[60][0] and ds.target["test"][0] == pairs[60][1]
    assert ds.names["test"][0] == "test2016.en:1"
    reverse = load_pairs(load("seq2seq", str(folder), None, ["data.source_lang=es", "data.target_lang=en"]).data,
                         None)
    assert reverse.source["train"][0] == pairs[0][1]
    result = cli("train", "seq2seq", "--dataset", folder, "data.source_lang=en", "data.target_lang=es",
                 "--run-dir", tmp_path / "run", "train.epochs=1", "--json", *SMALL)
    assert result.exit_code == 0, result.text
    assert json.loads(result.stdout)["examples"] == len(pairs) - 60  # scored on its own test file


def test_a_csv_of_two_text_columns_gives_pairs(tmp_path):
    from bigml_cli.config import load
    from bigml_cli.data.pairs import load_pairs

    data = tmp_path / "pairs.csv"
    data.write_text("english,spanish\n" + "".join(f'"{s}","{t}"\n' for s, t in sentences()), encoding="utf-8")
    ds = load_pairs(load("seq2seq", str(data), None, ["data.reverse=true"]).data, None)
    assert sum(len(ds.source[s]) for s in ("train", "val", "test")) == len(list(sentences()))
    assert set(ds.source["train"]) <= {t for _, t in sentences()}  # reversed: Spanish to English


def test_parallel_files_whose_line_counts_differ_are_refused(cli, tmp_path):
    folder = tmp_path / "parallel"
    write_parallel(folder, {"train": list(sentences())[:20], "test": list(sentences())[20:30]})
    (folder / "train.es").write_text("una\n" * 19, encoding="utf-8")
    result = cli("train", "seq2seq", "--dataset", folder, "data.source_lang=en", "data.target_lang=es", *SMALL)
    assert_user_error(result, "train.en has 20 lines", "train.es 19", "line counts")
    result = cli("train", "seq2seq", "--dataset", folder, *SMALL)
    assert_user_error(result, "data.source_lang", "en, es")
    (folder / "train.es").write_bytes("una ni\u00f1a\n".encode("latin-1") * 20)
    result = cli("train", "seq2seq", "--dataset", folder, "data.source_lang=en", "data.target_lang=es", *SMALL)
    assert_user_error(result, "train.es is not UTF-8 text")


@pytest.mark.parametrize("tokens", ["words", "subwords"])
def test_the_tokenizers_give_back_the_sentences_they_read(tokens):
    from bigml_cli.tokenizers import Codec, learn_vocabulary

    texts = [t for _, t in sentences()] + ["¿Dónde está el gato?", "¡Hola, amigo!"]
    codec = Codec(learn_vocabulary(texts, tokens, 200), tokens)
    ids, counts = codec.encode(tf.constant(texts), 16, ends=True)
    ids = ids.numpy()
    assert (ids[:, 0] == 2).all() and all(3 in row for row in ids)  # [START] ... [END]
    assert [t.decode("utf-8") for t in codec.decode(ids).numpy()] == texts
    cut, _ = codec.encode(tf.constant(["Veo el gato grande."]), 4, ends=True)
    assert list(cut.numpy()[0][[0, -1]]) == [2, 3]  # cut at the length, still ended


# --- decoding ----------------------------------------------------------------------------------------------------


def toy_next(table):
    """A `next` for a model whose next-token log-probabilities depend on the previous token only."""
    logp = tf.math.log(tf.constant(table, tf.float32))

    def next(prompt, cache, index):
        return tf.gather(logp, prompt[:, index - 1]), None, cache
    return next


def test_beam_search_finds_the_likelier_sentence_that_greedy_misses():
    """From [START] (2): token 4 (0.6) leads to two poor choices (0.5 each), token 5 (0.4) to [END] (3) surely;
    greedy takes 4 then a poor one (0.3 in all), beam search 5 then [END] (0.4)."""
    from bigml_cli.decode import beam_search, sampler

    table = np.full((7, 7), 1e-6)
    table[2, 4], table[2, 5] = 0.6, 0.4
    table[4, 5], table[4, 6] = 0.5, 0.5
    table[5, 3], table[6, 3], table[3, 0] = 1.0, 1.0, 1.0
    prompt = tf.constant([[2, 0, 0, 0]], tf.int32)
    greedy = sampler("greedy")(toy_next(table), prompt, (tf.zeros([1, 1]),), index=1, stop_token_ids=[3])
    assert list(greedy.numpy()[0][:3]) == [2, 4, 5]
    beam = beam_search(toy_next(table), prompt, (tf.zeros([1, 1]),), 1, 3, beams=2, alpha=0.0)
    assert list(beam.numpy()[0]) == [2, 5, 3, 0]


def test_seeded_sampling_repeats_itself_and_another_seed_differs(run, cli):
    args = ["predict", run, "I see the big dog.", "You see the cat.", "We see the small fish.", "--sample",
            "--temperature", "3", "--json"]
    first, again, other = (cli(*args, "--seed", s) for s in ("1", "1", "2"))
    assert first.exit_code == 0, first.text
    texts = [[t["translation"] for t in json.loads(r.stdout)["translations"]] for r in (first, again, other)]
    assert texts[0] == texts[1] and texts[0] != texts[2]


def test_predict_out_writes_each_source_and_its_translation(run, cli, tmp_path):
    out = tmp_path / "translations.csv"
    result = cli("predict", run, "I see the big dog.", "You see the cat.", "--out", out, "--json")
    assert result.exit_code == 0, result.text
    printed = [t["translation"] for t in json.loads(result.stdout)["translations"]]
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["source"] for r in rows] == ["I see the big dog.", "You see the cat."]
    assert [r["translation"] for r in rows] == printed and all(printed)


# --- the model end to end ----------------------------------------------------------------------------------------


def test_seq2seq_learns_to_translate_and_eval_reports_bleu_chrf_and_the_worst_sentences(run, cli):
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["bleu"] > 50 and metrics["chrf"] > 60, metrics
    result = cli("predict", run, "They see the small horse.", "--json")
    assert json.loads(result.stdout)["translations"][0]["translation"] == "Ven el caballo pequeño."
    greedy = cli("eval", run, "--json")
    beam = cli("eval", run, "--beam", "4", "--json")
    assert greedy.exit_code == 0 and beam.exit_code == 0, beam.text
    greedy, beam = json.loads(greedy.stdout), json.loads(beam.stdout)
    assert greedy["bleu"] == pytest.approx(metrics["bleu"]) and beam["decoding"] == {"method": "beam", "beams": 4,
                                                                                     "alpha": 0.6}
    assert len(greedy["worst"]) == 10 and greedy["examples"] == metrics["examples"]
    rows = (run / "eval" / "test" / "predictions.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "input,source,reference,output" and rows[1].startswith("pairs.tsv:")


def test_eval_dataset_scores_the_users_own_pairs(run, cli, tmp_path):
    own = write_pairs(tmp_path / "mine.tsv")
    result = cli("eval", run, "--dataset", own, "--json")
    assert result.exit_code == 0, result.text
    report = json.loads(result.stdout)
    assert report["examples"] == len(list(sentences())) and report["bleu"] > 50


def test_the_savedmodel_translates_raw_strings_in_a_fresh_process_as_bigml_predict_does(run, cli, tmp_path):
    out = tmp_path / "export"
    result = cli("export", run, "--out", out, "--json")
    assert result.exit_code == 0, result.text
    assert json.loads(result.stdout)["agreement"] == 1.0
    tests = [s for s, _ in sentences()][::5]
    code = ("import json, sys, tensorflow as tf\n"
            f"serve = tf.saved_model.load({str(out)!r}).signatures['serving_default']\n"
            f"out = serve(source=tf.constant({tests!r}))['translation'].numpy()\n"
            "print(json.dumps([t.decode('utf-8') for t in out]))\n")
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    exported = json.loads(fresh.stdout.strip().splitlines()[-1])
    predicted = [t["translation"] for t in json.loads(cli("predict", run, *tests, "--json").stdout)["translations"]]
    assert exported == predicted


def test_translation_runs_refuse_what_does_not_apply_in_one_line(run, cli, tmp_path):
    from PIL import Image

    image = tmp_path / "cat.png"
    Image.new("RGB", (8, 8)).save(image)
    assert_user_error(cli("predict", run, image), "is a file", "translates sentences")
    assert_user_error(cli("generate", run, "--prompt", "I see"), "translation model", "bigml predict")
    assert_user_error(cli("export", run, "--format", "onnx"), "savedmodel")
    assert_user_error(cli("predict", run, "I see", "--beam", "1"), "--beam must be 2 or more")
    long = " ".join(["I see the big dog."] * 5)
    result = cli("predict", run, long)
    assert result.exit_code == 0 and "longer than the model's 12 source tokens" in result.stderr


def test_models_that_do_not_translate_refuse_sentence_pairs(cli, tmp_path):
    data = tmp_path / "data"
    from bigml_cli.data.pairs import tiny_spa_eng

    tiny_spa_eng(data)
    assert_user_error(cli("train", "mlp", "--dataset", "spa-eng", "--data-dir", data), "sentence pairs", "seq2seq")


def test_pair_batches_resume_exactly_at_any_step():
    from bigml_cli.data.pipeline import pairs_train_dataset

    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 10, 200)
    source = np.where(np.arange(10)[None] < lengths[:, None], 5, 0).astype(np.int32)
    target = np.where(np.arange(11)[None] < lengths[:, None] + 1, 6, 0).astype(np.int32)

    def batches(start, n):
        ds, _ = pairs_train_dataset(source, target, 8, 3, start)
        return [(b[0]["source"].numpy(), b[1].numpy()) for b in ds.take(n)]
    whole, later = batches(0, 40), batches(29, 11)
    for (a, b), (c, d) in zip(whole[29:], later):
        assert np.array_equal(a, c) and np.array_equal(b, d)
    assert len({a.shape[1] for a, _ in whole}) > 2  # cut to each batch's longest sentence: lengths vary


def test_sigkill_then_resume_of_seq2seq_is_exact(tmp_path):
    from test_resume import BIGML, kill_resume_and_compare

    data = write_pairs(tmp_path / "pairs.tsv")
    args = ["train", "seq2seq", "--dataset", data, "train.epochs=2", "train.deterministic=true",
            "train.checkpoint_every=1", *SMALL]
    reference = tmp_path / "reference"
    done = subprocess.run([BIGML, *map(str, args), "--run-dir", str(reference)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    kill_resume_and_compare(args, reference, tmp_path / "killed", 4)
