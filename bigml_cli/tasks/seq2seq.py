"""Sequence to sequence (translation): source and target token ids in, target-token logits out in training
(teacher forcing, loss over the real target tokens); sentences in, sentences out for predict, eval and export."""

from pathlib import Path
from typing import Any, Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from bigml_cli.data.pipeline import pairs_eval_dataset, pairs_train_dataset, steps_per_epoch
from bigml_cli.errors import UserError
from bigml_cli.tasks.base import Streams, Task, register, token_hits


@keras.saving.register_keras_serializable(package="bigml")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of logits against sparse targets with label smoothing: (1 - s) x the target's negative
    log-probability + s x the mean over the vocabulary (Keras' sparse loss has no smoothing)."""

    def __init__(self, smoothing: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.smoothing = smoothing

    def call(self, y_true: Any, y_pred: Any) -> Any:
        logp = keras.ops.log_softmax(keras.ops.cast(y_pred, "float32"), axis=-1)
        nll = -keras.ops.take_along_axis(logp, keras.ops.cast(y_true, "int32")[..., None], axis=-1)[..., 0]
        return (1.0 - self.smoothing) * nll - self.smoothing * keras.ops.mean(logp, axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "smoothing": self.smoothing}


@register
class Translation(Task):
    kind = "pairs"
    monitor = "val_loss"
    xla = False  # batches are cut to their longest sentence: shapes vary (XLA would compile each; no faster here)
    output_name = "translation"
    serving_inputs = ("raw source strings and decodes them in a loop of string and lookup ops, which ONNX and "
                      "LiteRT do not convert")
    described = "a translation model (sentences in, sentences out)"
    instead = 'use `bigml predict {run} "a sentence"`'
    next_step = 'bigml predict {run} "a sentence"'
    takes = "sentences"
    decodes = True  # predict and eval take decoding options (--beam, --sample)

    def model_inputs(self, info: dict) -> tuple:
        from bigml_cli.models.base import TokenIds

        source = keras.Input(shape=(None,), dtype="int32", name="source")  # up to source_length tokens
        target = keras.Input(shape=(None,), dtype="int32", name="target")
        return {"source": source, "target": target}, {
            "source": TokenIds(len(info["source_vocab"]), info["source_length"], name="source_ids")(source),
            "target": TokenIds(len(info["target_vocab"]), info["target_length"], name="target_ids")(target)}

    # --- training ---------------------------------------------------------------------------------------------

    def check(self, ds: Any, cfg: Any) -> None:
        from bigml_cli.models import MODELS

        super().check(ds, cfg)
        if getattr(MODELS.get(cfg.model["name"]), "reads", "") != "pairs":
            raise UserError(f"dataset {ds.name} holds sentence pairs, which model '{cfg.model['name']}' does not "
                            "read; use seq2seq (e.g. bigml train --recipe seq2seq_spa_eng)")
        if cfg.train.class_weight != "none":
            raise UserError("train.class_weight applies to classifiers; set it to none for translation")

    def examples(self, ds: Any) -> int:
        return len(ds.source["train"])

    def tokens_per_example(self, ds: Any) -> int:
        return 0

    def sizes(self, ds: Any) -> str:
        return " / ".join(f"{len(ds.source[s]):,} {s}" for s in ("train", "val", "test")) + " pairs"

    def streams(self, ds: Any, cfg: Any) -> Streams:
        t = cfg.train
        source, target = ds.ids["train"]
        return Streams(
            loss=SmoothedSparseCrossentropy(t.label_smoothing, reduction="mean_with_sample_weight"),
            metric=keras.metrics.SparseCategoricalAccuracy(name="accuracy"), monitor=self.monitor,
            steps=steps_per_epoch(len(source), t.batch_size),
            train=lambda step=0, batch=t.batch_size, shard=None: pairs_train_dataset(
                source, target, batch, t.seed, step, shard),
            val=pairs_eval_dataset(*ds.ids["val"], max(t.batch_size, 64)), weights=None, weighted=True)

    def legacy_steps(self, ds: Any, t: Any, steps: int) -> int:
        return steps

    def loop_loss(self, ds: Any, t: Any) -> tuple:
        """The multi-worker loop's loss: a mean over the real target tokens of every worker's batch."""
        return SmoothedSparseCrossentropy(t.label_smoothing, reduction=None), "weights"

    def hits(self, outputs: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return token_hits(outputs, y)

    def validate(self, model: keras.Model, ds: Any, forward: Callable, streams: Streams) -> dict:
        """The multi-worker loop's validation: teacher-forced loss (without smoothing) and token accuracy."""
        from bigml_cli.evaluate import token_report

        return token_report(forward, pairs_eval_dataset(*ds.ids["val"], 64))

    def notes(self, ds: Any, cfg: Any, steps: int) -> list:
        return []

    # --- reports ----------------------------------------------------------------------------------------------

    def test(self, model: keras.Model, ds: Any, run: Any) -> dict:
        """BLEU and chrF of greedy translations of the test sources, saved in RUN/eval/test/."""
        return self.score(model, ds, "test", run.eval_dir("test"), run.info.input)

    def score(self, model: keras.Model, ds: Any, split: str, out: Path, info: dict, options: Optional[dict] = None,
              names: Optional[list] = None) -> dict:
        from bigml_cli import translate
        from bigml_cli.models.seq2seq import Translator

        result, rows = translate.report(Translator(model, info), ds.source[split], ds.target[split],
                                        pairs_eval_dataset(*ds.ids[split], 64), options or translate.decoding(),
                                        names)
        translate.save(result, rows, out, bool(names))
        return result

    def metrics(self, report: dict) -> dict:
        return {k: report[k] for k in ("bleu", "chrf", "loss", "accuracy", "examples")}

    def evaluate_split(self, run: Any, ds: Any, model: keras.Model, asked: Optional[str], **decoding: Any) -> dict:
        from bigml_cli.evaluate import changed_split_notes

        split = asked or "test"
        folder = run.eval_dir(split + decoded_as(decoding))
        report = self.score(model, ds, split, folder, run.info.input, decoding or None, ds.names.get(split))
        report["notes"] += changed_split_notes(run, ds, split)
        return {"run": str(run.path), "split": split, "saved_in": str(folder), **report}

    def evaluate_own(self, run: Any, path: Path, name: str, **decoding: Any) -> dict:
        """The user's own pairs (a pairs file, a CSV of two text columns, a folder of parallel files), all
        of them scored."""
        from dataclasses import replace

        from bigml_cli.data.pairs import load_pairs
        from bigml_cli.evaluate import load_model

        if not path.exists():
            raise UserError(f"--dataset {path} does not exist")
        info, cfg = run.info.input, run.config.data
        whole = not path.is_dir()  # a file's pairs all score; a folder's test files
        held_out = {"test_fraction": 0.0, "val_fraction": 0.0} if whole else {}
        read = load_pairs(replace(cfg, name=str(path), **held_out), None,
                          vocabs=(info["source_vocab"], info["target_vocab"]))
        split, folder = "train" if whole else "test", run.eval_dir(name + decoded_as(decoding))
        return {"saved_in": str(folder), **self.score(load_model(run), read, split, folder, info, decoding or None,
                                                      read.names.get(split))}

    # --- predict and export -----------------------------------------------------------------------------------

    def read_inputs(self, files: list, info: dict, from_files: bool) -> tuple:
        """The arguments themselves (sentences), or with --file (and for .txt arguments) one sentence per line."""
        from bigml_cli.tasks.text import is_text_file

        names, sentences = [], []
        for item in files:
            if from_files or is_text_file(item):
                if not Path(item).is_file():
                    raise UserError(f"text file {item} does not exist")
                lines = Path(item).read_text(encoding="utf-8", errors="replace").splitlines()
                names += [f"{item}:{i}" for i, line in enumerate(lines, 1) if line.strip()]
                sentences += [line.strip() for line in lines if line.strip()]
                continue
            if Path(item).is_file():
                raise UserError(f"{item} is a file, and this run translates sentences; give sentences, or a .txt "
                                "file of one sentence per line (--file reads any file so)")
            if not item.strip():
                raise UserError("an input sentence is empty; give some words to translate")
            names.append(item)
            sentences.append(item)
        if not sentences:
            raise UserError("the input files hold no sentences; give one per line")
        return names, np.array(sentences, dtype=object), []

    def predict(self, run: Any, files: list, from_files: bool, options: dict) -> dict:
        """`bigml predict` on a translation run: {"translations": [{input, source, translation}], "notes"}."""
        from bigml_cli.evaluate import load_model
        from bigml_cli.models.seq2seq import Translator
        from bigml_cli.translate import translate_all

        names, sentences, notes = self.read_inputs(files, run.info.input, from_files)
        translator = Translator(load_model(run), run.info.input)
        outputs, cut = translate_all(translator, sentences, options, progress="translating")
        if cut:
            notes.append(f"note: {cut} of the sentences are longer than the model's {translator.source_length} "
                         "source tokens; they were cut there")
        return {"translations": [{"input": n, "source": str(s), "translation": o}
                                 for n, s, o in zip(names, sentences, outputs)], "notes": notes}

    def serving_module(self, model: keras.Model, info: dict) -> Any:
        """A module whose `serve` takes a batch of source strings and returns greedy translations."""
        from bigml_cli.models.seq2seq import Translator

        translator = Translator(model, info)
        translator.serve = tf.function(lambda source: {self.output_name: translator.translate(source)},
                                       input_signature=self.input_signature(info))
        return translator

    def input_signature(self, info: dict) -> list:
        return [tf.TensorSpec((None,), tf.string, name="source")]

    def serving_needs(self, info: dict) -> str:
        if info["tokens"] == "subwords":
            return "pip install tensorflow-text; import tensorflow_text before tf.saved_model.load"
        return ""

    def expected_outputs(self, model: keras.Model, x: Any, info: Optional[dict] = None) -> np.ndarray:
        """bigml's own greedy translations, as bytes (what the SavedModel returns)."""
        from bigml_cli.models.seq2seq import Translator
        from bigml_cli.translate import translate_all

        outputs, _ = translate_all(Translator(model, info), x)
        return np.array([o.encode("utf-8") for o in outputs], dtype=object)

    def compare(self, got: np.ndarray, expected: np.ndarray) -> tuple:
        """(agrees, figures, what differs): every translation must be the same string."""
        same = np.array([g == e for g, e in zip(got, expected)])
        agree = float(same.mean()) if len(same) else 1.0
        return agree == 1.0, {"agreement": agree, "checked_examples": int(len(same))}, \
            f"{int((~same).sum())} of {len(same)} translations differ"

    def export_inputs(self, ds: Any, count: int) -> tuple:
        return ds.source["test"][:count].astype(str), "test split"

    def random_inputs(self, info: dict, n: int, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        words = np.array([w for w in info["source_vocab"] if w.isalpha()] or ["word"])
        return np.array([" ".join(rng.choice(words, rng.integers(1, 12))) for _ in range(n)], dtype=object).astype(str)

    def sample_writer(self, ds: Any) -> Callable:
        raise UserError(f"dataset {ds.name} holds sentence pairs; samples are written for image and text datasets")


def decoded_as(decoding: dict) -> str:
    """The suffix of the eval folder of a decoding other than greedy ("-beam4", "-sample"), so that the test
    report written at the end of training (greedy) stays."""
    method = (decoding or {}).get("method", "greedy")
    return "" if method == "greedy" else f"-beam{decoding['beams']}" if method == "beam" else "-sample"
