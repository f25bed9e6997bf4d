"""Evaluation: accuracy, loss, per-class precision/recall/F1 and the confusion matrix, from probabilities."""

import csv
import json
import zipfile
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from bigml_cli import files, runs
from bigml_cli.data import DATASETS
from bigml_cli.data.base import length
from bigml_cli.data.pipeline import inputs_dataset
from bigml_cli.errors import UserError
from bigml_cli.models import float32_policies, inference

SPLITS = ("test", "val", "train")


def predict_probs(model: Any, x: Any, batch_size: int = 512, progress: Optional[str] = None) -> np.ndarray:
    """Class probabilities (N, classes) for in-memory inputs, in order; `progress` names a progress bar
    (on stderr, with rate and time left) for inputs of more than one batch."""
    batches = inputs_dataset(x, batch_size)
    steps = -(-length(x) // batch_size)
    if progress and steps > 1:
        from rich.console import Console
        from rich.progress import track

        batches = track(batches, description=progress, total=steps, console=Console(stderr=True), transient=True)
    forward = inference(model)
    return np.concatenate([np.asarray(forward(batch)) for batch in batches])


def metrics_from_probs(probs: np.ndarray, y: np.ndarray, class_names: list) -> dict:
    """The report: accuracy, loss (mean negative log-likelihood, nats), per-class P/R/F1, confusion matrix."""
    k = len(class_names)
    pred = probs.argmax(axis=1)
    confusion = np.zeros((k, k), np.int64)  # rows: true class, columns: predicted class
    np.add.at(confusion, (y, pred), 1)
    tp = np.diag(confusion).astype(float)
    precision = np.divide(tp, confusion.sum(axis=0), out=np.zeros(k), where=confusion.sum(axis=0) > 0)
    recall = np.divide(tp, confusion.sum(axis=1), out=np.zeros(k), where=confusion.sum(axis=1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0))))
    present = confusion.sum(axis=1) > 0
    return {
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,  # the classes' mean recall
        **({"top5_accuracy": top_k_accuracy(probs, y, 5)} if k > 5 else {}),
        "loss": loss,
        "examples": int(len(y)),
        "per_class": [{"class": c, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for c, p, r, f, s in zip(class_names, precision, recall, f1, confusion.sum(axis=1))],
        "confusion_matrix": confusion.tolist(),
        "most_confused": most_confused(confusion, class_names),
        "predictions": pred.tolist(),
        "probabilities": probs.max(axis=1).tolist(),  # of each predicted class, for predictions.csv
    }


def top_k_accuracy(probs: np.ndarray, y: np.ndarray, k: int) -> float:
    """The share of examples whose class is among the `k` most probable (fewer than k classes above it; ties at
    the boundary count as in, as tf.math.in_top_k has it)."""
    true = probs[np.arange(len(y)), y]
    return float(((probs > true[:, None]).sum(axis=1) < k).mean())


def most_confused(confusion: np.ndarray, class_names: list, n: int = 3) -> list:
    """The `n` commonest mistakes, commonest first: which class was taken for which, how many times."""
    mistakes = confusion.copy()
    np.fill_diagonal(mistakes, 0)
    order = np.argsort(-mistakes, axis=None, kind="stable")[:n]
    return [{"label": class_names[i], "predicted": class_names[j], "count": int(mistakes[i, j])}
            for i, j in zip(*np.unravel_index(order, mistakes.shape)) if mistakes[i, j]]


def weighted_scores(probs: np.ndarray, y: np.ndarray, class_weights: Optional[list] = None) -> dict:
    """Validation loss and accuracy as fit computes them with per-example weights (train.class_weight): the
    loss sum(w x nll) / n, the accuracy sum(w x correct) / sum(w); unweighted without `class_weights`."""
    w = np.ones(len(y)) if class_weights is None else np.asarray(class_weights)[y]
    nll = -np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0))
    return {"loss": float(np.sum(w * nll) / len(y)), "accuracy": float(np.sum(w * (probs.argmax(1) == y)) / np.sum(w))}


def lm_report(model: Any, ids: np.ndarray, starts: np.ndarray, length: int, forward: Any = None) -> dict:
    """A language model on the windows of `length` + 1 tokens of `ids` starting at `starts`: loss (nats per
    token), perplexity, next-token accuracy. `forward`: the model's compiled `inference`, when the caller holds
    one (a fresh one traces again)."""
    from bigml_cli.data.pipeline import lm_eval_dataset

    return token_report(forward or inference(model), lm_eval_dataset(ids, starts, length, 64))


def token_report(forward: Any, batches: Any) -> dict:
    """Loss (nats per token), perplexity and accuracy of the logits `forward` gives for batches of (inputs,
    target ids) or (inputs, target ids, weights): a masked language model's weights pick the masked tokens.
    `examples` counts the tokens scored."""
    total, correct, count = 0.0, 0.0, 0.0
    for batch in batches:
        logits = np.asarray(forward(batch[0]), np.float64)  # (batch, seq, vocab)
        logits -= logits.max(axis=-1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        y = np.asarray(batch[1])
        w = np.asarray(batch[2], np.float64) if len(batch) > 2 else np.ones(y.shape)
        total -= float((np.take_along_axis(log_probs, y[..., None], axis=-1)[..., 0] * w).sum())
        correct += float(((log_probs.argmax(-1) == y) * w).sum())
        count += float(w.sum())
    loss = total / max(count, 1.0)
    return {"loss": loss, "perplexity": float(np.exp(loss)), "accuracy": correct / max(count, 1.0),
            "examples": int(count)}


def save_lm_report(report: dict, out_dir: Path) -> None:
    files.write_text(out_dir / "report.json", json.dumps(report, indent=2))


PER_EXAMPLE = ("predictions", "probabilities")  # in predictions.csv, not in report.json or --json


def save_report(report: dict, class_names: list, out_dir: Path, y: np.ndarray, inputs: Optional[list] = None) -> None:
    """report.json, confusion_matrix.csv/.png and predictions.csv in `out_dir` (with an `input` column naming
    each example's file, or FILE:LINE, when `inputs` are given: which ones the model got wrong)."""
    summary = {k: v for k, v in report.items() if k not in PER_EXAMPLE}
    files.write_text(out_dir / "report.json", json.dumps(summary, indent=2))
    files.write_csv(out_dir / "confusion_matrix.csv", [["true \\ predicted", *class_names], *(
        [name, *row] for name, row in zip(class_names, report["confusion_matrix"]))])
    files.write_csv(out_dir / "predictions.csv", [
        ["index", *(["input"] if inputs else []), "label", "predicted", "probability"], *(
            [i, *([inputs[i]] if inputs else []), class_names[t], class_names[p], f"{q:.6f}"]
            for i, (t, p, q) in enumerate(zip(y, report["predictions"], report["probabilities"])))])
    plot_confusion(np.array(report["confusion_matrix"]), class_names, out_dir / "confusion_matrix.png")


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no display needed; imported only when plotting)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(confusion: np.ndarray, class_names: list, path: Path) -> None:
    plt = pyplot()
    k = len(class_names)
    size = min(4 + 0.45 * k, 30)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(k), class_names, rotation=90)
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, confusion[i, j], ha="center", va="center", fontsize=8,
                        color="white" if confusion[i, j] > confusion.max() / 2 else "black")
    save_figure(plt, fig, path)


def save_figure(plt: Any, fig: Any, path: Path) -> None:
    """The figure as a PNG, whole or not at all. A glyph the font lacks (a class name in a script DejaVu Sans
    does not cover) is drawn as a box rather than warned about: the CSV files carry the names in full."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        fig.tight_layout()
        files.write_with(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def as_float(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def plot_history(history_csv: Path, path: Path) -> None:
    """Training curves from history.csv: loss and accuracy per epoch, training and validation, and the
    learning rate the schedule reached at each epoch's end."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    with open(history_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    panels = [m for m in ("loss", "accuracy", "learning_rate") if rows and m in rows[0]]
    if not panels:
        return
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], panels):
        for key, label in ((metric, "schedule" if metric == "learning_rate" else "train"),
                           (f"val_{metric}", "validation")):
            values = [as_float(r.get(key)) for r in rows]  # CSVLogger writes NA where there is no validation
            if any(v == v for v in values):  # not all NaN
                ax.plot(epochs, values, marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(metric.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(plt, fig, path)


def load_model(run: runs.Run) -> Any:
    """The run's model for inference, computing in float32. Runs saved by older versions of bigml kept a
    mixed-precision model's bfloat16 layers (see `in_float32`), and some of those (the transformer's) do
    not even load under the float32 policy: their config is made float32 before the model is built."""
    import keras

    import bigml_cli.models  # noqa: F401  (registers the custom layers)

    try:
        with zipfile.ZipFile(run.model_file) as saved:
            config = json.loads(saved.read("config.json"))
        float32 = float32_policies(config)
        if float32 == config:
            return keras.models.load_model(run.model_file, compile=False)  # inference only: no optimizer state
        model = keras.saving.deserialize_keras_object(float32)
        model.load_weights(run.model_file)
        return model
    except Exception as e:
        raise UserError(f"{run.model_file} could not be loaded ({type(e).__name__}); it is corrupt: "
                        "train the run again") from None


def changed_split_notes(run: runs.Run, ds: Any, split: str) -> list:
    """A note when the split scored now is not the one the run had when it trained (its data changed since)."""
    from bigml_cli.data.base import fingerprint, split_change

    then = run.info.data.get(split)
    if not then:  # a run from before run.json recorded its data
        return []
    now = fingerprint(ds, (split,))[split]
    if now == then:
        return []
    return [f"note: the {split} split is not the one this run had when it trained "
            f"({split_change(split, then['examples'], now['examples'])}): {ds.name} changed since, so these figures "
            f"are not comparable with the run's own{' and may include examples it trained on' if split != 'train' else ''}"]


def evaluate(run_path: Union[str, Path], split: Optional[str] = None, data_root: Optional[Union[str, Path]] = None, dataset: Optional[str] = None,
             decoding: Optional[dict] = None) -> dict:
    """`bigml eval`: evaluate a finished run on one split, or on the user's own labelled `dataset`;
    saves RUN/eval/SPLIT/ (RUN/eval/dataset-NAME/)."""
    if split is not None and dataset is not None:
        raise UserError(f"--split {split} and --dataset both name what to score; --dataset scores all of your "
                        "data, so give one of them")
    asked = split
    if (split or "test") not in SPLITS:
        from bigml_cli.errors import unknown

        raise unknown("split", split, SPLITS)
    from bigml_cli.tasks import load_for, task_for

    from bigml_cli.predict import check_decoding

    run = runs.open_run(run_path)
    task = task_for(run.info.input)
    check_decoding(task, decoding)
    options = {**decoding} if decoding and task.decodes else {}  # how a translation run decodes
    if dataset is not None:
        name = f"dataset-{runs.slug(dataset)}"
        report = task.evaluate_own(run, Path(dataset), name, **options)
        return {"run": str(run.path), "split": name, "dataset": str(dataset), **report}
    cfg = run.config
    if cfg.data.name not in DATASETS.names() and not Path(cfg.data.name).expanduser().exists():
        raise UserError(f"this run's dataset {cfg.data.name} is not here (moved, or the run was copied); score the "
                        f"run on a copy: bigml eval {run_path} --dataset PATH")
    ds = load_for(cfg, data_root)
    return task.evaluate_split(run, ds, load_model(run), asked, **options)
