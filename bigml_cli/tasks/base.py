"""What every task answers, and the classifier behaviour the image, table and text tasks share.

A task is the one place that knows a kind of data: the model's raw inputs, the tf.data streams, the loss,
metric and monitored score, the test report, how `eval --dataset` and `predict` read a user's own files,
and the export signature with the inputs that check it. Commands and the training loop ask the run's task
(`task_for(run.json's input)`) and never compare kinds themselves.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from bigml_cli.data.pipeline import eval_dataset, steps_per_epoch, train_dataset
from bigml_cli.errors import UserError

TASKS: dict = {}  # kind (run.json's input.kind) -> its task


def register(cls: type) -> type:
    """Class decorator: one instance of each task, found by its `kind`."""
    TASKS[cls.kind] = cls()
    return cls


def task_for(kind: Any) -> "Task":
    """The task of a kind, of a dataset's or run's input spec (its "kind" key), or of a dataset."""
    if isinstance(kind, dict):
        kind = kind["kind"]
    elif not isinstance(kind, str):
        kind = kind.kind
    if kind not in TASKS:
        raise UserError(f"this run's inputs are of kind '{kind}', which this bigml does not know; update bigml "
                        f"(it knows: {', '.join(sorted(TASKS))})")
    return TASKS[kind]


def load_for(cfg: Any, data_root: Any = None) -> Any:
    """The dataset a run's model reads: a language model (a builder registered with reads="corpus", or "masked
    corpus") reads a text dataset's training texts as its corpus."""
    from bigml_cli.data import load_dataset
    from bigml_cli.models import MODELS

    if getattr(MODELS.get(cfg.model["name"]), "reads", "") == "pairs":  # sentence pairs: files of their own
        from bigml_cli.data.pairs import load_pairs

        ds = load_pairs(cfg.data, data_root)
        ds.check_splits(cfg.data)
        return ds
    ds = load_dataset(cfg.data, data_root)
    kind = CORPUS_READERS.get(getattr(MODELS.get(cfg.model["name"]), "reads", ""))
    if kind:
        ds = task_for(kind).from_corpus(task_for(ds).corpus(ds, cfg.data))
    return ds


CORPUS_READERS = {"corpus": "lm", "masked corpus": "mlm"}  # what a builder reads -> the task that trains it


def token_hits(outputs: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Whether each predicted token (the argmax of `outputs`) equals its integer target in `y`."""
    return tf.argmax(outputs, -1) == tf.cast(y, tf.int64)


@dataclass
class Streams:
    """What training needs from the task: the loss, the metric and the score that selects the model, the steps
    in an epoch, the training stream as a function of (start step, batch size, shard), the validation batches
    and each class's loss weight (None: unweighted). `weighted`: the streams' batches carry weights (a third
    element) that the metric weighs by too."""

    loss: Any
    metric: Any
    monitor: str
    steps: int
    train: Callable
    val: Any
    weights: Optional[list]
    weighted: bool = False


class Task:
    """The interface; `Classifier` implements it for class-labelled examples."""

    kind = ""
    unit = "ex/s"  # what the progress bar counts
    xla = False  # XLA can compile its training step (string ops, in tables and texts, it cannot)
    export_formats = ("savedmodel",)
    takes_encoders = False  # --init of a pretrained encoder (a keras-hub preset) applies
    starts_from: tuple = ()  # kinds of runs --init may start it from besides its own
    serving_inputs = ""  # what an export takes, for the refusal of a format that cannot take it
    output_name = "probabilities"
    generates = False  # `bigml generate` continues text with it
    predicts = True  # `bigml predict` classifies a user's inputs with it
    described = "a classifier"  # what its runs are, for the messages of commands that do not apply
    instead = "use `bigml predict` here"  # the command that does ({run}: the run's path)
    next_step = "bigml predict {run} INPUT..."  # the first command to try on a finished run
    takes = "inputs"  # what a user gives `predict`, for its messages
    input_suffixes: tuple = ()  # the files `predict` picks out of a folder
    example_files = "files"  # a labelled folder's examples, for `eval --dataset` messages

    def model_inputs(self, info: dict) -> tuple:
        """(raw Keras inputs, preprocessed features) for an input spec."""
        raise NotImplementedError

    def prepare_model(self, model: keras.Model, ds: Any) -> None:
        """Set data-dependent layers from the training inputs (none by default)."""

    def serving_model(self, model: keras.Model, t: Any) -> keras.Model:
        """The model a finished run saves (the trained one by default)."""
        return model

    def check(self, ds: Any, cfg: Any) -> None:
        """Refuse settings that do not apply to this kind of data (cutout is for images)."""
        if cfg.data.cutout:
            raise UserError(f"data.cutout applies to images, not to {ds.name}'s {ds.kind} data; set data.cutout=0")

    def add_endpoints(self, archive: Any, model: keras.Model, info: dict) -> None:
        """Serving signatures besides serving_default (none by default)."""

    def serving_needs(self, info: dict) -> str:
        """What loading the export needs besides TensorFlow ("" when nothing)."""
        return ""

    def write_extras(self, info: dict, folder: Path, fmt: str) -> None:
        """Files an export needs besides the model (none by default)."""

    decodes = False  # predict and eval take decoding options (--beam, --sample): it writes text

    def serving_module(self, model: keras.Model, info: dict) -> Any:
        """A tf.Module whose `serve` function is the SavedModel's serving_default, when the export serves more
        than the model's forward pass (a translation's decoding loop); None: the forward pass."""
        return None

    def compare(self, got: np.ndarray, expected: np.ndarray) -> tuple:
        """(agrees, figures, what differs) of a reloaded export's outputs against the Keras model's."""
        from bigml_cli.export import TOLERANCE

        diff = float(np.abs(got - expected).max())
        agree = float((got.argmax(-1) == expected.argmax(-1)).mean())
        ok = diff <= TOLERANCE * self.output_scale(expected) and agree == 1.0
        return ok, {"max_abs_diff": diff, "top1_agreement": agree, "checked_examples": int(len(expected))}, \
            self.differences.format(diff=diff, agree=agree)

    def output_scale(self, expected: np.ndarray) -> float:
        """What an export's tolerance is relative to: probabilities are compared absolutely."""
        return 1.0

    def extra_checks(self, runner: Callable, x: Any, expected: np.ndarray, what: str, fmt: str) -> dict:
        """Further checks of a reloaded export (none by default)."""
        return {}

    def corpus(self, ds: Any, data_cfg: Any) -> Any:
        """The dataset as a language model's corpus (for models that read one)."""
        raise UserError(f"a language model needs corpus data (tinyshakespeare, FILE.txt) or a text dataset, whose "
                        f"training texts it models, and {ds.name} is {ds.kind} data; use 'mlp' or 'cnn' for it")

    def adopt_vocabulary(self, ds: Any, info: dict, cfg: Any) -> Any:
        """The dataset read as the run `--init` starts from reads its data (input spec `info`): the same
        vocabulary for texts, so the tokens mean the same; nothing changes for images and tables."""
        return ds

    def sample_writer(self, ds: Any) -> Callable:
        """A function (input, path without suffix) -> file written, for `bigml samples`."""
        raise UserError(f"dataset {ds.name} is {self.kind} data; samples are written for image and text datasets")


class Classifier(Task):
    """Examples with class labels: one-hot targets, softmax outputs, accuracy, a confusion-matrix report."""

    monitor = "val_accuracy"

    # --- training ---------------------------------------------------------------------------------------------

    def examples(self, ds: Any) -> int:
        return len(ds.y_train)

    def tokens_per_example(self, ds: Any) -> int:
        """Tokens an example holds, for a tokens-per-second rate (0: examples are counted, not tokens)."""
        return 0

    def sizes(self, ds: Any) -> str:
        return f"{len(ds.y_train):,} train / {len(ds.y_val):,} val / {len(ds.y_test):,} test"

    def streams(self, ds: Any, cfg: Any) -> Streams:
        t, d = cfg.train, cfg.data
        augment = ds.augment if d.augment == "auto" else d.augment
        weights = class_weights(ds.y_train, ds.num_classes) if t.class_weight == "balanced" else None
        fill = self.cutout_fill(ds) if d.cutout else None
        return Streams(
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=t.label_smoothing),
            metric=keras.metrics.CategoricalAccuracy(name="accuracy"), monitor=self.monitor,
            steps=steps_per_epoch(len(ds.y_train), t.batch_size),
            train=lambda step=0, batch=t.batch_size, shard=None: train_dataset(
                ds.x_train, ds.y_train, ds.num_classes, batch, t.seed, augment, d.crop_padding, step, shard,
                weights, d.cutout, fill),
            val=eval_dataset(ds.x_val, ds.y_val, ds.num_classes, max(t.batch_size, 256), weights), weights=weights,
            weighted=weights is not None)

    def cutout_fill(self, ds: Any) -> Optional[list]:
        return None

    def legacy_steps(self, ds: Any, t: Any, steps: int) -> int:
        """Steps per epoch of a resumed run whose run.json does not record them."""
        return steps

    def notes(self, ds: Any, cfg: Any, steps: int) -> list:
        """Lines for a run's start about this data and these settings (None: nothing to say)."""
        return [imbalance_note(ds, cfg.train), batch_note(ds, cfg.train)]

    def loop_loss(self, ds: Any, t: Any) -> tuple:
        """(per-example loss, values each example's loss is a mean over) for the multi-worker loop."""
        return keras.losses.CategoricalCrossentropy(label_smoothing=t.label_smoothing, reduction=None), 1

    def hits(self, outputs: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return tf.argmax(outputs, -1) == tf.argmax(y, -1)

    def validate(self, model: keras.Model, ds: Any, forward: Callable, streams: Streams) -> dict:
        """Validation loss and accuracy as fit computes them (the multi-worker loop's validation)."""
        from bigml_cli.evaluate import weighted_scores

        probs = np.concatenate([np.asarray(forward(batch[0])) for batch in streams.val])
        return weighted_scores(probs, ds.y_val, streams.weights)

    # --- reports ----------------------------------------------------------------------------------------------

    def test(self, model: keras.Model, ds: Any, run: Any) -> dict:
        """The test report of a finished run, saved in RUN/eval/test/."""
        from bigml_cli.evaluate import metrics_from_probs, predict_probs, save_report

        report = metrics_from_probs(predict_probs(model, ds.x_test, progress="testing"), ds.y_test, ds.class_names)
        save_report(report, ds.class_names, run.eval_dir("test"), ds.y_test, ds.names.get("test"))
        return report

    def metrics(self, report: dict) -> dict:
        """The headline figures of a report, for metrics.json."""
        return {"accuracy": report["accuracy"], "balanced_accuracy": report["balanced_accuracy"],
                **({"top5_accuracy": report["top5_accuracy"]} if "top5_accuracy" in report else {}),
                "loss": report["loss"], "examples": report["examples"]}

    def evaluate_split(self, run: Any, ds: Any, model: keras.Model, asked: Optional[str]) -> dict:
        """`bigml eval RUN [--split S]`: the report on one of the run's splits (test by default)."""
        from bigml_cli.evaluate import changed_split_notes, metrics_from_probs, predict_probs, save_report

        split = asked or "test"
        x, y = ds.arrays(split)
        if len(y) == 0:
            raise UserError(f"run {run.path} has no {split} split (its data.{split}_fraction is 0); "
                            "evaluate another with --split test or --split train")
        report = {**metrics_from_probs(predict_probs(model, x, progress="evaluating"), y, ds.class_names),
                  "notes": ds.notes + changed_split_notes(run, ds, split)}
        save_report(report, ds.class_names, run.eval_dir(split), y, ds.names.get(split))
        return {"run": str(run.path), "split": split, **report}

    def evaluate_own(self, run: Any, path: Path, name: str) -> dict:
        """`bigml eval RUN --dataset PATH`: the report on the user's own labelled examples."""
        from bigml_cli.evaluate import load_model, metrics_from_probs, predict_probs, save_report

        if not path.exists():
            raise UserError(f"--dataset {path} does not exist")
        x, labels, inputs, notes = self.labelled(path, run)
        classes = run.info.class_names
        unknown_labels = sorted(set(labels) - set(classes))
        if unknown_labels:
            raise UserError(f"{path} has labels this run was not trained on: {', '.join(unknown_labels[:10])}; its "
                            f"classes are: {', '.join(classes)}")
        if not labels:
            raise UserError(self.no_labels(path, run))
        y = np.array([classes.index(label) for label in labels], np.int64)
        report = metrics_from_probs(predict_probs(load_model(run), x, progress="evaluating"), y, classes)
        report["notes"] = notes
        save_report(report, classes, run.eval_dir(name), y, inputs)
        return report

    def labelled(self, path: Path, run: Any) -> tuple:
        """(inputs, label names, each example's name, notes) of a user's labelled folder (its test/ part when it
        is split into train/ and test/)."""
        if not path.is_dir():
            raise UserError(f"--dataset {path} is not a folder; give one with a sub-folder of {self.example_files} "
                            "per class")
        folder = path / "test" if (path / "train").is_dir() and (path / "test").is_dir() else path
        return self.read_labelled_folder(folder, run.info.input)

    def read_labelled_folder(self, folder: Path, info: dict) -> tuple:
        raise NotImplementedError

    def no_labels(self, path: Path, run: Any) -> str:
        return (f"{path} holds no labelled examples: give it a sub-folder of {self.example_files} per class, named "
                f"as the run's classes ({', '.join(run.info.class_names[:10])})")

    # --- predict and export -----------------------------------------------------------------------------------

    def read_inputs(self, files: list, info: dict, from_files: bool) -> tuple:
        """(names, model inputs, notes) for the inputs given to `bigml predict`."""
        raise NotImplementedError

    def input_signature(self, info: dict) -> list:
        raise NotImplementedError

    def expected_outputs(self, model: keras.Model, x: Any, info: Optional[dict] = None) -> np.ndarray:
        from bigml_cli.evaluate import predict_probs

        return predict_probs(model, x)

    differences = "max |diff| {diff:.2e}, top-1 agreement {agree:.2%}"

    def export_inputs(self, ds: Any, count: int) -> tuple:
        """(inputs, what they are) that an export is checked on: the run's test inputs."""
        if isinstance(ds.x_test, dict):
            return {k: v[:count] for k, v in ds.x_test.items()}, "test split"
        return ds.x_test[:count], "test split"

    def random_inputs(self, info: dict, n: int, seed: int = 0) -> Any:
        raise NotImplementedError


def class_weights(y: np.ndarray, num_classes: int) -> list:
    """train.class_weight=balanced: n / (classes x count) per class (scikit-learn's 'balanced'), so the
    weights average 1 over the examples and the learning rate keeps its meaning; 0 for an absent class."""
    counts = np.bincount(y, minlength=num_classes)
    return [len(y) / (num_classes * c) if c else 0.0 for c in counts]


def imbalance_note(ds: Any, t: Any) -> Optional[str]:
    """A note when the training split's largest class has 10 times the examples of its smallest, or None."""
    if t.class_weight != "none" or not len(ds.y_train):
        return None
    counts = np.bincount(ds.y_train, minlength=ds.num_classes)
    big, small = int(np.argmax(counts)), int(np.argmin(counts))
    if counts[big] < 10 * counts[small]:
        return None
    return (f"note: the classes are imbalanced: in the training split '{ds.class_names[big]}' has "
            f"{counts[big]:,} examples and '{ds.class_names[small]}' {counts[small]:,}; train.class_weight=balanced "
            "weighs each class alike in the loss, and `bigml eval` shows each class's recall")


def batch_note(ds: Any, t: Any) -> Optional[str]:
    """A note when the batch holds more examples than the training split: every epoch is one step of it all."""
    if t.steps_per_epoch or t.batch_size <= len(ds.y_train):
        return None
    return (f"note: train.batch_size {t.batch_size} is larger than the {len(ds.y_train):,} training examples, so "
            f"each epoch is a single step over all of them; a smaller batch (e.g. train.batch_size="
            f"{max(1, len(ds.y_train) // 8)}) takes more steps per epoch")
