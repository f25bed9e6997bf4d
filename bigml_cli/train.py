"""Training: build the data and model from a Config, fit with a rich progress display, save the run."""

import json
import os
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from bigml_cli import distribute, runs
from bigml_cli.data import load_dataset
from bigml_cli.data.pipeline import eval_dataset, train_dataset
from bigml_cli.errors import UserError
from bigml_cli.evaluate import metrics_from_probs, predict_probs, save_report
from bigml_cli.models import build_model


class RichProgress(keras.callbacks.Callback):
    """A progress bar per epoch with loss, accuracy, examples/s and time left; a summary line per epoch."""

    def __init__(self, epochs, steps, batch_size, console):
        super().__init__()
        self.epochs, self.steps, self.batch_size, self.console = epochs, steps, batch_size, console
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
            MofNCompleteColumn(), TextColumn("{task.fields[rate]:>7.0f} ex/s"), TimeRemainingColumn(),
            TextColumn("loss {task.fields[loss]:.4f} acc {task.fields[acc]:.2%}"),
            console=console, transient=True)

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()
        if self.console.is_terminal:  # a log file gets the per-epoch lines only
            self.progress.start()
        self.task = self.progress.add_task("train", total=self.steps, epoch=epoch + 1, epochs=self.epochs,
                                           rate=0.0, loss=0.0, acc=0.0)

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        done = batch + 1
        rate = done * self.batch_size / max(time.perf_counter() - self.start, 1e-9)
        self.progress.update(self.task, completed=done, rate=rate, loss=float(logs.get("loss", 0.0)),
                             acc=float(logs.get("accuracy", 0.0)))

    def on_epoch_end(self, epoch, logs=None):
        self.progress.stop()
        self.progress.remove_task(self.task)
        logs = logs or {}
        seconds = time.perf_counter() - self.start
        self.console.print(
            f"epoch {epoch + 1:>3}/{self.epochs}  loss {logs.get('loss', 0):.4f}  acc {logs.get('accuracy', 0):.2%}"
            f"  val_loss {logs.get('val_loss', 0):.4f}  val_acc {logs.get('val_accuracy', 0):.2%}"
            f"  {self.steps * self.batch_size / seconds:,.0f} ex/s  {seconds:.1f}s")


def make_optimizer(t, steps_per_epoch):
    """Optimizer with linear warmup then cosine decay (or constant) from the TrainConfig."""
    total = t.epochs * steps_per_epoch
    warmup = min(int(round(t.warmup_epochs * steps_per_epoch)), total - 1)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else t.learning_rate, decay_steps=max(1, total - warmup),
        alpha=0.0 if t.schedule == "cosine" else 1.0,
        warmup_target=t.learning_rate if warmup else None, warmup_steps=warmup)
    if t.optimizer == "sgd":
        opt = keras.optimizers.SGD(schedule, momentum=t.momentum, nesterov=t.nesterov, weight_decay=t.weight_decay)
    else:
        opt = keras.optimizers.AdamW(schedule, weight_decay=t.weight_decay)
    opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])  # no decay on norms and biases
    return opt


def _absolute_dataset(cfg):
    """Dataset paths are stored absolute so eval/export find them from any working directory."""
    p = Path(cfg.data.name).expanduser()
    if p.exists():
        cfg.data.name = str(p.resolve())


def run(cfg, run_dir=None, data_root=None, overwrite=False, console=None, command=None, extra_callbacks=()):
    """Train `cfg` into a new run directory; returns the test metrics (also in RUN/metrics.json)."""
    console = console or Console(stderr=True)
    t = cfg.train
    _absolute_dataset(cfg)
    place = distribute.placement(t.strategy)  # first: device set-up must precede any TensorFlow op
    if t.batch_size % place.replicas:
        raise UserError(f"train.batch_size {t.batch_size} is global and must divide evenly over "
                        f"{place.replicas} replicas; use a multiple of {place.replicas}")
    keras.utils.set_random_seed(t.seed)
    if t.deterministic:
        tf.config.experimental.enable_op_determinism()
    ds = load_dataset(cfg.data, data_root)  # user errors surface before anything is written
    augment = ds.augment if cfg.data.augment == "auto" else cfg.data.augment
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(t.precision)
    try:
        with place.strategy.scope():  # the one place a strategy scope is opened
            model = build_model(cfg.model, ds.input_info, ds.num_classes)
            train_ds, steps = train_dataset(ds.x_train, ds.y_train, ds.num_classes, t.batch_size, t.seed,
                                            augment, cfg.data.crop_padding)
            model.compile(
                optimizer=make_optimizer(t, steps),
                loss=keras.losses.CategoricalCrossentropy(label_smoothing=t.label_smoothing),
                metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                # XLA cannot compile string lookups, nor one step over several devices (tensorflow XLA
                # known issues: "tf.Variable on a different device")
                jit_compile=t.jit_compile and ds.kind != "table" and place.replicas == 1,
                steps_per_execution=t.steps_per_execution)
        run_ = runs.create(run_dir or runs.default_run_dir(cfg.model["name"], cfg.data.name), overwrite)
        run_.config_file.write_text(
            f"# {command or 'bigml train'}\n" + cfg.dump())
        run_.info_file.write_text(json.dumps({
            "model": cfg.model["name"], "dataset": cfg.data.name, "class_names": ds.class_names,
            "input": ds.input_info, "augment": augment, "params": model.count_params(),
            "strategy": place.name, "replicas": place.replicas, "global_batch_size": t.batch_size,
            "per_replica_batch_size": t.batch_size // place.replicas, "keras": keras.__version__, "tensorflow": tf.__version__,
        }, indent=2))
        console.print(f"run directory [bold]{run_.path}[/]  model {cfg.model['name']} "
                      f"({model.count_params():,} parameters)  dataset {cfg.data.name} "
                      f"({len(ds.y_train):,} train / {len(ds.y_val):,} val / {len(ds.y_test):,} test)  "
                      f"strategy {place.name}")
        val_ds = eval_dataset(ds.x_val, ds.y_val, ds.num_classes, max(t.batch_size, 256))
        run_.checkpoints.mkdir(exist_ok=True)
        has_val = len(ds.y_val) > 0
        callbacks = [
            RichProgress(t.epochs, steps, min(t.batch_size, len(ds.y_train)), console),
            keras.callbacks.CSVLogger(str(run_.history_file)),
            keras.callbacks.TensorBoard(str(run_.logs), write_graph=False),
            keras.callbacks.ModelCheckpoint(str(run_.checkpoints / "last.weights.h5"), save_weights_only=True),
            keras.callbacks.ModelCheckpoint(str(run_.checkpoints / "best.weights.h5"), save_weights_only=True,
                                            save_best_only=True, monitor="val_accuracy" if has_val else "loss",
                                            mode="max" if has_val else "min"),
            *extra_callbacks,
        ]
        start = time.perf_counter()
        model.fit(train_ds, epochs=t.epochs, steps_per_epoch=steps, validation_data=val_ds if has_val else None,
                  callbacks=callbacks, verbose=0, shuffle=False)
        train_seconds = time.perf_counter() - start
        model.load_weights(run_.checkpoints / "best.weights.h5")  # model selection on validation accuracy
        model.save(run_.model_file)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)

    report = metrics_from_probs(predict_probs(model, ds.x_test), ds.y_test, ds.class_names)
    save_report(report, ds.class_names, run_.eval_dir("test"), ds.y_test)
    metrics = {"accuracy": report["accuracy"], "loss": report["loss"], "examples": report["examples"],
               "train_seconds": round(train_seconds, 1), "epochs": t.epochs, "run": str(run_.path)}
    run_.metrics_file.write_text(json.dumps(metrics, indent=2))
    return metrics
