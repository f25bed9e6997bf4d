"""Masked-language-model pre-training of an encoder (`transformer_mlm`), then a `transformer` classifier from it."""

import json
import re
import subprocess

import numpy as np
import tensorflow as tf

from conftest import assert_user_error
from test_text import write_reviews

SMALL = ["data.sequence_length=12", "train.batch_size=16", "train.learning_rate=0.003", "model.dim=16",
         "model.heads=2", "model.num_layers=1", "model.mlp_dim=32"]
WIDER = [*SMALL[:3], "model.dim=32", "model.heads=2", "model.num_layers=1", "model.mlp_dim=64", "model.dropout=0"]


def test_masking_picks_15_percent_and_splits_them_80_10_10_as_bert_does():
    from bigml_cli.data.pipeline import mask_tokens

    x = tf.constant(np.random.default_rng(0).integers(2, 1000, (64, 512)), tf.int32)
    masked, picked = mask_tokens(x, [3, 7], mask_id=1000, vocab_size=1001)
    masked, picked, x = masked.numpy(), picked.numpy().astype(bool), x.numpy()
    assert abs(picked.mean() - 0.15) < 0.005
    assert (masked[~picked] == x[~picked]).all()  # the tokens not picked are untouched
    as_mask = (masked[picked] == 1000).mean()
    kept = (masked[picked] == x[picked]).mean()  # (a random token equal to the original counts as kept)
    assert abs(as_mask - 0.8) < 0.01 and abs(kept - 0.1) < 0.01
    again, _ = mask_tokens(tf.constant(x), [3, 7], mask_id=1000, vocab_size=1001)
    other, _ = mask_tokens(tf.constant(x), [3, 8], mask_id=1000, vocab_size=1001)
    assert (again.numpy() == masked).all() and (other.numpy() != masked).any()  # a function of (seed, step)


def test_held_out_windows_are_masked_alike_whatever_the_batch_size():
    """fit's validation batches and the report's differ in size; each window keeps its masks."""
    from bigml_cli.data.pipeline import mlm_eval_dataset

    ids = np.random.default_rng(1).integers(2, 50, 400).astype(np.int32)
    starts = np.arange(0, 380, 19, dtype=np.int64)
    read = [np.concatenate([b[0].numpy() for b in mlm_eval_dataset(ids, starts, 16, size, 50, 51)])
            for size in (3, 64)]
    assert read[0].shape == (len(starts), 16) and (read[0] == 50).any()
    assert np.array_equal(read[0], read[1])


def write_sentences(folder, n):
    """Reviews of fixed sentences, whose masked words the context tells."""
    for label, word in (("neg", "awful"), ("pos", "great")):
        (folder / label).mkdir(parents=True)
        for i in range(n):
            (folder / label / f"{i}.txt").write_text(f"i watched this film and it was {word} . " * 3)


def test_an_encoder_pretrained_by_masking_starts_a_classifier_on_the_same_ids_and_sizes(cli, tmp_path):
    from bigml_cli.evaluate import load_model
    from bigml_cli.runs import Run

    data = tmp_path / "reviews"
    write_sentences(data, 40)
    mlm, classifier = tmp_path / "mlm", tmp_path / "classifier"
    result = cli("train", "transformer_mlm", "--dataset", data, "--run-dir", mlm, "train.epochs=3",
                 "train.steps_per_epoch=40", *WIDER, "--json")
    assert result.exit_code == 0, result.text
    report = json.loads(result.stdout)
    info = json.loads((mlm / "run.json").read_text())["input"]
    assert info["kind"] == "mlm" and info["vocab"][:2] == ["", "[UNK]"] and info["vocab"][-1] == "[MASK]"
    assert report["examples"] > 10 and report["accuracy"] > 0.5  # the masked validation tokens, told by context
    again = cli("eval", mlm, "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["loss"] == report["loss"]  # the same masks each time
    # the classifier asks for other sizes, and takes the pre-trained encoder's
    result = cli("train", "transformer", "--dataset", data, "--init", mlm, "--run-dir", classifier, "train.epochs=1",
                 *SMALL[:3], "model.dim=16", "model.heads=2", "model.num_layers=2", "--json")
    assert result.exit_code == 0, result.text
    text = " ".join(result.stderr.split())
    assert "model.dim=32" in text and "model.num_layers=1" in text and "model.mlp_dim=64" in text
    loaded, total = (int(n.replace(",", "")) for n in re.search(r"([\d,]+) of ([\d,]+) parameters loaded",
                                                                  text).groups())
    assert total - loaded == 32 * 2 + 2  # the head alone is new
    new = load_model(Run(classifier))
    assert np.array_equal(new.get_layer("tokenize")(np.array(["this film was great"], dtype=object))[0, :4],
                          [info["vocab"].index(w) for w in ("this", "film", "was", "great")])


def test_a_masked_language_model_is_refused_where_it_does_not_apply(cli, tmp_path):
    data = tmp_path / "reviews"
    write_reviews(data, 10, seed=4)
    mlm = tmp_path / "mlm"
    assert cli("train", "transformer_mlm", "--dataset", data, "--run-dir", mlm, "train.epochs=1",
               "train.steps_per_epoch=2", *SMALL).exit_code == 0
    assert_user_error(cli("generate", mlm, "--prompt", "the film"), "is a masked language model",
                      f"--init {mlm}")
    assert_user_error(cli("predict", mlm, "the film"), "is a masked language model", f"--init {mlm}")
    corpus = tmp_path / "play.txt"
    corpus.write_text("to be or not to be, that is the question.\n" * 60)
    assert_user_error(cli("train", "transformer_mlm", "--dataset", corpus, "--run-dir", tmp_path / "x", *SMALL),
                      "play.txt is a corpus", "use gpt")
    assert not (tmp_path / "x").exists()


def test_sigkill_then_resume_of_a_masked_language_model_is_exact(tmp_path):
    """The masks are a function of (seed, step): a resumed run masks its batches as the uninterrupted one did."""
    from test_resume import BIGML, kill_resume_and_compare

    data = tmp_path / "reviews"
    write_reviews(data, 20, seed=2)
    args = ["train", "transformer_mlm", "--dataset", data, "train.epochs=2", "train.steps_per_epoch=8",
            "train.deterministic=true", "train.checkpoint_every=1", *SMALL]
    reference = tmp_path / "reference"
    done = subprocess.run([BIGML, *map(str, args), "--run-dir", str(reference)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    kill_resume_and_compare(args, reference, tmp_path / "killed", 5)
