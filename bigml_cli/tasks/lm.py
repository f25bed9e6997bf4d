"""Language modelling: windows of token ids in, next-token logits at every position out."""

import json
from pathlib import Path
from typing import Any, Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from bigml_cli.data.pipeline import lm_eval_dataset, lm_steps_per_epoch, lm_train_dataset, steps_per_epoch
from bigml_cli.errors import UserError
from bigml_cli.tasks.base import Streams, Task, register, token_hits


@register
class LanguageModel(Task):
    kind = "lm"
    unit = "tok/s"
    monitor = "val_loss"
    xla = True
    export_formats = ("savedmodel", "onnx", "litert")
    output_name = "logits"  # (batch, seq, vocab): the next token's, at every position
    generates = True
    predicts = False
    described = "a language model"
    instead = "use `bigml generate {run} --prompt TEXT`"
    next_step = "bigml generate {run} --prompt TEXT"

    def from_corpus(self, ds: Any) -> Any:
        """A corpus as this task trains on it (as it is)."""
        return ds

    def model_inputs(self, info: dict) -> tuple:
        from bigml_cli.models.base import TokenIds

        inputs = keras.Input(shape=(info["sequence_length"],), dtype="int32", name="tokens")
        return inputs, TokenIds(len(info["vocab"]), name="token_ids")(inputs)  # (batch, seq)

    # --- training ---------------------------------------------------------------------------------------------

    def check(self, ds: Any, cfg: Any) -> None:
        super().check(ds, cfg)
        for key, off in (("label_smoothing", 0), ("class_weight", "none")):
            if getattr(cfg.train, key) != off:
                raise UserError(f"train.{key} applies to classifiers; set it to {off} for a language model")

    def examples(self, ds: Any) -> int:
        return len(ds.train_starts)

    def tokens_per_example(self, ds: Any) -> int:
        return ds.input_info["sequence_length"]

    def sizes(self, ds: Any) -> str:
        return f"{len(ds.train_ids):,} train / {len(ds.val_ids):,} val tokens"

    def streams(self, ds: Any, cfg: Any) -> Streams:
        t, length = cfg.train, ds.input_info["sequence_length"]
        return Streams(
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),  # nats per token
            metric=keras.metrics.SparseCategoricalAccuracy(name="accuracy"), monitor=self.monitor,
            steps=lm_steps_per_epoch(len(ds.train_ids), length, t.batch_size),
            train=lambda step=0, batch=t.batch_size, shard=None: lm_train_dataset(
                ds.train_ids, ds.train_starts, length, batch, t.seed, step, shard),
            val=lm_eval_dataset(ds.val_ids, ds.val_starts, length, max(t.batch_size, 64)), weights=None)

    def legacy_steps(self, ds: Any, t: Any, steps: int) -> int:
        """Runs from before run.json recorded their steps counted an epoch in windows, not tokens."""
        return steps if t.steps_per_epoch else steps_per_epoch(len(ds.train_starts), t.batch_size)

    def notes(self, ds: Any, cfg: Any, steps: int) -> list:
        return [short_run_note(ds, cfg, steps)]

    def loop_loss(self, ds: Any, t: Any) -> tuple:
        """Logits over every position's next token, sparse targets: the mean is over all the batch's tokens."""
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
        return loss, ds.input_info["sequence_length"]

    def hits(self, outputs: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return token_hits(outputs, y)

    def validate(self, model: keras.Model, ds: Any, forward: Callable, streams: Streams) -> dict:
        return self.report(model, ds.val_ids, ds.val_starts, ds.input_info, forward)

    def report(self, model: keras.Model, ids: np.ndarray, starts: np.ndarray, info: dict, forward: Any = None) -> dict:
        """Loss, perplexity and next-token accuracy on the windows of `ids` starting at `starts`."""
        from bigml_cli.evaluate import lm_report

        return lm_report(model, ids, starts, info["sequence_length"], forward)

    # --- reports ----------------------------------------------------------------------------------------------

    def test(self, model: keras.Model, ds: Any, run: Any) -> dict:
        """A corpus has no test split: the report on the validation text, saved in RUN/eval/val/."""
        from bigml_cli.evaluate import save_lm_report

        report = self.report(model, ds.val_ids, ds.val_starts, ds.input_info)
        save_lm_report(report, run.eval_dir("val"))
        return report

    def metrics(self, report: dict) -> dict:
        return {"accuracy": report["accuracy"], "loss": report["loss"], "examples": report["examples"],
                "perplexity": report["perplexity"]}

    def evaluate_split(self, run: Any, ds: Any, model: keras.Model, asked: Optional[str]) -> dict:
        """The validation text (the default) or the training text, in non-overlapping windows."""
        from bigml_cli.data.text import lm_eval_starts
        from bigml_cli.evaluate import save_lm_report

        if asked == "test":
            raise UserError(f"run {run.path} is a language model, and its corpus has no test split: the last "
                            f"data.val_fraction of the text validates; score that (the default, --split val), "
                            "--split train, or your own text with --dataset FILE.txt")
        split, length = asked or "val", ds.input_info["sequence_length"]
        ids, starts = ds.val_ids, ds.val_starts
        if split == "train":
            ids, starts = ds.train_ids, lm_eval_starts(len(ds.train_ids), length)
        report = self.report(model, ids, starts, ds.input_info)
        save_lm_report(report, run.eval_dir(split))
        return {"run": str(run.path), "split": split, **report}

    def evaluate_own(self, run: Any, path: Path, name: str) -> dict:
        """A user's own UTF-8 text, in non-overlapping windows, as the run's validation text is scored."""
        from bigml_cli.evaluate import load_model, save_lm_report

        info = run.info.input
        ids, starts, counts = text_windows(path, info)
        report = {**self.report(load_model(run), ids, starts, info), **counts}
        save_lm_report(report, run.eval_dir(name))
        return report

    def corpus(self, ds: Any, data_cfg: Any) -> Any:
        return ds

    def adopt_vocabulary(self, ds: Any, info: dict, cfg: Any) -> Any:
        """The corpus encoded again in the earlier run's vocabulary (characters it lacks are skipped, words
        read as <unk>)."""
        from bigml_cli.data.text import make_lm_dataset
        from bigml_cli.tasks.text import check_tokens

        check_tokens(info, cfg)
        return make_lm_dataset(ds.name, ds.text, cfg.data, vocab=info["vocab"])

    def sample_writer(self, ds: Any) -> Callable:
        raise UserError(f"dataset {ds.name} is a text corpus: `bigml generate` continues a prompt; samples are "
                        "written for image and text datasets")

    # --- export -----------------------------------------------------------------------------------------------

    def input_signature(self, info: dict) -> list:
        return [tf.TensorSpec((None, info["sequence_length"]), tf.int32, name="tokens")]

    def write_extras(self, info: dict, folder: Path, fmt: str) -> None:
        """What a client needs to decode the logits; the SavedModel's goes where TF Serving looks (assets.extra)."""
        folder = folder / "assets.extra" if fmt == "savedmodel" else folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocab.json").write_text(json.dumps(
            {"vocab": info["vocab"], "tokens": info["tokens"], "sequence_length": info["sequence_length"]}))

    def expected_outputs(self, model: keras.Model, x: Any, info: Optional[dict] = None) -> np.ndarray:
        from bigml_cli.models import inference

        return np.asarray(inference(model)(x))

    def output_scale(self, expected: np.ndarray) -> float:
        return max(1.0, float(np.abs(expected).max()))  # logits: relative to their size

    differences = "max |logit diff| {diff:.2e}, next-token agreement {agree:.2%}"

    def export_inputs(self, ds: Any, count: int) -> tuple:
        length = ds.input_info["sequence_length"]
        windows = np.stack([ds.val_ids[s:s + length] for s in ds.val_starts[:count // 4 or 1]]).astype(np.int32)
        return windows, "validation text"

    def random_inputs(self, info: dict, n: int, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return rng.integers(0, len(info["vocab"]), (n // 4 or 1, info["sequence_length"]), dtype=np.int32)


def short_run_note(ds: Any, cfg: Any, steps: int) -> Optional[str]:
    """A warning when a language model's run is too short to learn: an epoch of a small corpus is a few steps."""
    t = cfg.train
    total = t.epochs * steps
    if t.steps_per_epoch or total >= 100:
        return None
    length = ds.input_info["sequence_length"]
    return (f"note: one epoch of {cfg.data.name} is {steps} step{'s' * (steps != 1)} ({len(ds.train_ids):,} training "
            f"tokens / (batch {t.batch_size} x {length} tokens)), so {t.epochs} epochs train only {total} steps, too "
            f"few to learn from; raise train.epochs (e.g. train.epochs={-(-1000 // steps)}), or train the tested "
            f"recipe on your text: bigml train {cfg.model['name']} --recipe gpt_tinyshakespeare --dataset "
            f"{cfg.data.name}")


def text_windows(path: Path, info: dict) -> tuple:
    """(token ids, window starts, counts of unknown tokens) of a user's own text for a language-model run:
    non-overlapping windows, as the run's validation text is scored (characters the model never saw are
    skipped; unseen words read as <unk>)."""
    from bigml_cli.data.text import encode_tokens, lm_eval_starts

    path = Path(path)
    if not path.exists():
        raise UserError(f"--dataset {path} does not exist")
    if not path.is_file():
        raise UserError(f"--dataset {path} is not a file; a language model is scored on a UTF-8 .txt file")
    text = path.read_text(encoding="utf-8", errors="replace")
    ids = encode_tokens(text, info["vocab"], info["tokens"])
    length = info["sequence_length"]
    if len(ids) < length + 1:
        raise UserError(f"{path} has {len(ids)} tokens the model reads; scoring needs at least {length + 1} "
                        f"(sequence_length + 1)")
    return ids, lm_eval_starts(len(ids), length), unknown_tokens(text, ids, info)


def unknown_tokens(text: str, ids: np.ndarray, info: dict) -> dict:
    """How many of the text's tokens the model does not know: characters (skipped) or words (read as <unk>)."""
    if info["tokens"] == "characters":
        return {"tokens": len(text), "unknown_tokens": len(text) - len(ids), "token_kind": "characters"}
    unk = info["vocab"].index("<unk>" if "<unk>" in info["vocab"] else "[UNK]")  # a corpus file's, a text dataset's
    return {"tokens": len(ids), "unknown_tokens": int(np.sum(ids == unk)), "token_kind": "words"}
