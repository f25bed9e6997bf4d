"""Training: build the data and model from a Config, fit with a rich progress display, save the run."""

import csv
import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import tensorflow as tf
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from bigml_cli import distribute, files, runs
from bigml_cli.data import load_dataset
from bigml_cli.data.base import fingerprint, split_change
from bigml_cli.data.pipeline import (eval_dataset, lm_eval_dataset, lm_steps_per_epoch, lm_train_dataset,
                                     steps_per_epoch, train_dataset)
from bigml_cli.errors import Interrupted, UserError
from bigml_cli.evaluate import (lm_report, metrics_from_probs, plot_history, predict_probs, save_lm_report,
                                save_report, weighted_scores)
from bigml_cli.models import (adapt_to_data, build_model, in_float32, inference, whitening_biases,
                              with_test_time_augmentation)
from bigml_cli.optim import make_optimizer


class RichProgress(keras.callbacks.Callback):
    """A progress bar per epoch with loss, accuracy, examples/s and time left; a summary line per epoch.

    `per_step` items of `unit` a step: examples, or a language model's tokens (batch x sequence length).
    The rate and the time left count from the end of each epoch's first step, which in the first epoch
    includes tracing and compiling the step (ten times a step's time, or more). `loss_label` names the
    training loss (`smoothed loss` with label smoothing, which the test loss leaves out).
    """

    def __init__(self, epochs, steps, per_step, console, unit="ex/s", loss_label="loss"):
        super().__init__()
        self.epochs, self.steps, self.per_step, self.console, self.unit = epochs, steps, per_step, console, unit
        self.loss_label = loss_label
        self.steps_per_epoch = steps  # `steps` is shorter for a resumed run's interrupted epoch
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
            MofNCompleteColumn(), TextColumn("{task.fields[rate]:>7.0f} " + unit), TimeRemainingColumn(),
            TextColumn(loss_label + " {task.fields[loss]:.4f} acc {task.fields[acc]:.2%}"),
            console=console, transient=True)

    def on_epoch_begin(self, epoch, logs=None):
        self.start, self.first_step = time.perf_counter(), None  # first_step: when the first step ended
        if self.console.is_terminal:  # a log file gets the per-epoch lines only
            self.progress.start()
        self.task = self.progress.add_task("train", total=self.steps, epoch=epoch + 1, epochs=self.epochs,
                                           rate=0.0, loss=0.0, acc=0.0)

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        done, now = batch + 1, time.perf_counter()
        fields = {"loss": float(logs.get("loss", 0.0)), "acc": float(logs.get("accuracy", 0.0))}
        if done == 1:  # the estimates start here: rich's time left is computed from the steps after this one
            self.first_step = now
            self.progress.reset(self.task, completed=1, **fields)
            return
        rate = (done - 1) * self.per_step / max(now - self.first_step, 1e-9)
        self.progress.update(self.task, completed=done, rate=rate, **fields)

    def pace(self, seconds):
        """Seconds a step at this epoch's pace, the first step left out when there were others."""
        if self.steps > 1 and self.first_step is not None:
            return (self.start + seconds - self.first_step) / (self.steps - 1)
        return seconds / self.steps

    def on_epoch_end(self, epoch, logs=None):
        if self.console.is_terminal:  # stopping a bar never started writes a blank line into a log file
            self.progress.stop()
        self.progress.remove_task(self.task)
        logs = logs or {}
        seconds = time.perf_counter() - self.start
        val = (f"  val_{self.loss_label.replace(' ', '_')} {logs['val_loss']:.4f}  "
               f"val_acc {logs.get('val_accuracy', 0):.2%}"
               if "val_loss" in logs else "")  # no validation split: training figures only
        left = self.pace(seconds) * self.steps_per_epoch * (self.epochs - epoch - 1)
        self.console.print(
            f"epoch {epoch + 1:>3}/{self.epochs}  {self.loss_label} {logs.get('loss', 0):.4f}  "
            f"acc {logs.get('accuracy', 0):.2%}"
            f"{val}  {self.steps * self.per_step / seconds:,.0f} {self.unit}  {seconds:.1f}s"
            + (f"  about {duration(left)} left" if epoch + 1 < self.epochs else ""))


def duration(seconds):
    """'45s', '12m 05s' or '2h 03m'."""
    s = int(round(seconds))
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


class StepTimer(keras.callbacks.Callback):
    """Wall time of every step (its median after warm-up gives the throughput); at each epoch end, the seconds
    since training began (history.csv's `elapsed_seconds`, for time-to-accuracy) and the learning rate the
    schedule has reached (`learning_rate`)."""

    def __init__(self, batch_size, steps_per_execution=1, warmup=10):
        super().__init__()
        self.batch_size, self.per_call, self.warmup = batch_size, steps_per_execution, warmup
        self.durations, self.began = [], None

    def on_train_begin(self, logs=None):
        self.began = self.began or time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        self.step_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.durations.append((time.perf_counter() - self.step_start) / self.per_call)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["elapsed_seconds"] = round(time.perf_counter() - self.began, 2)
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def summary(self):
        timed = self.durations[self.warmup:] or self.durations
        if not timed:
            return {}
        median = float(np.median(timed))
        return {"median_step_seconds": median, "examples_per_second": self.batch_size / median,
                "steps_timed": len(timed)}


class Lookahead(keras.callbacks.Callback):
    """airbench's lookahead EMA: from `start_epoch` on, every `every` steps the weights (BatchNorm
    statistics included) move to their exponential average, whose decay rises from 0 to
    `base ** every` as (step / total) ** 3 (fast early, strong averaging at the end); each epoch ends
    on the average. Its state lives in variables, so checkpoints carry it and resume is exact."""

    def __init__(self, model, total_steps, steps_per_epoch, start_epoch=3, every=5, base=0.95, power=3.0):
        super().__init__()
        self.tracked = [w for w in model.weights if "float" in str(w.dtype)]
        self.average = [tf.Variable(tf.zeros(w.shape, w.dtype), trainable=False) for w in self.tracked]
        self.started = tf.Variable(False, trainable=False)
        self.total, self.start = total_steps, start_epoch * steps_per_epoch
        self.every, self.base, self.power = every, base, power
        self.last = None  # the step of the previous call

    def on_train_begin(self, logs=None):
        self.last = int(self.model.optimizer.iterations.numpy())  # 0, or the step a resumed run starts at

    def on_train_batch_end(self, batch, logs=None):
        # With steps_per_execution k this runs every k steps: every multiple of `every` passed since the
        # last call counts, n of them pulling as one lerp with decay ** n.
        step = int(self.model.optimizer.iterations.numpy())
        last = step - 1 if self.last is None else self.last
        self.last = step
        # multiples of `every` in (max(last, start - 1), step]: none before the start
        crossed = step // self.every - max(last, self.start - 1) // self.every
        if crossed > 0:
            if bool(self.started.numpy()):
                decay = (self.base ** self.every * (step / self.total) ** self.power) ** crossed
                for a, w in zip(self.average, self.tracked):
                    a.assign(decay * a + (1 - decay) * w)
                    w.assign(a)
            else:
                for a, w in zip(self.average, self.tracked):
                    a.assign(w)
                self.started.assign(True)
        if batch + 1 == (self.params or {}).get("steps"):
            self.on_epoch_end(None)  # the epoch's last step: validation then sees the average, as saved

    def on_epoch_end(self, epoch, logs=None):
        if bool(self.started.numpy()):
            for a, w in zip(self.average, self.tracked):
                w.assign(a)


class FreezeAfter(keras.callbacks.Callback):
    """From optimizer step `step` on, the optimizer no longer changes `variables` (airbench trains the
    whitening stem's bias for its first 3 epochs only): each step's change to them, weight decay and
    momentum included, is undone at the step's end. Callbacks after this one (the lookahead) still move
    them, as airbench's does. Exact with steps_per_execution 1; with k > 1, they are put back every k
    steps. Holds no state between steps, so resume stays exact.

    With `retrace` (under `fit`), they also stop being trainable at that step and fit's step is traced again
    without them, so it no longer computes their gradients: for the stem's bias, the first convolution's
    gradient with respect to its input, which nothing else needs: the fast CIFAR-10 recipe's steps after
    the freeze take 7.6% less time on 2 Zen 3 cores. The arithmetic of every other weight's update is
    unchanged (a test checks bitwise on a small net); on the CIFAR-10 net oneDNN may round the retraced step
    differently in the last bits. They are trainable again when training ends."""

    def __init__(self, variables, step, retrace=True):
        super().__init__()
        self.variables, self.step, self.saved = list(variables), step, None
        self.retrace, self.trainable = retrace, None

    def on_train_batch_begin(self, batch, logs=None):
        frozen = int(self.model.optimizer.iterations.numpy()) >= self.step
        if frozen and self.retrace and self.trainable is None:
            self.trainable = [v.trainable for v in self.variables]
            for v in self.variables:
                v.trainable = False
            self.model.make_train_function(force=True)
        # retraced, the step no longer changes them: nothing to put back
        self.saved = [v.numpy() for v in self.variables] if frozen and self.trainable is None else None

    def on_train_batch_end(self, batch, logs=None):
        for v, value in zip(self.variables, self.saved or ()):
            v.assign(value)

    def on_train_end(self, logs=None):
        for v, trainable in zip(self.variables, self.trainable or ()):
            v.trainable = trainable
        self.trainable = None


class StepCheckpoints(keras.callbacks.Callback):
    """Saves the full training state every N steps, at each epoch end, and on SIGTERM/SIGINT (then stops).

    The state is model, optimizer (its step counter included) and the Keras seed-generator and
    BatchNorm variables; the data stream is a pure function of the step, so nothing else is needed.
    """

    class Stop(Exception):
        """Leaves `fit` at once: a stopped epoch gets no validation, epoch line or history row."""

    def __init__(self, manager, every, steps_per_epoch=0):
        super().__init__()
        self.manager, self.every, self.steps_per_epoch, self.signal = manager, every, steps_per_epoch, None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum, frame):
        self.signal = signum  # acted on at the end of the step in flight

    def save(self):
        return save_state(self.manager, int(self.model.optimizer.iterations.numpy()))

    def on_train_batch_end(self, batch, logs=None):
        if self.signal is not None:
            self.save()
            self.model.stop_training = True  # at an epoch's last step: the epoch ends as usual, then training
            if not self.steps_per_epoch or int(self.model.optimizer.iterations.numpy()) % self.steps_per_epoch:
                raise self.Stop()  # mid-epoch: resume finishes the epoch and writes its results then
        elif self.every and int(self.model.optimizer.iterations.numpy()) % self.every == 0:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        self.save()


def save_state(manager, step):
    """Writes checkpoint `step` of the training state. TensorFlow writes it under temporary names and
    records it as the latest only once whole, so a full disk leaves the one before as the latest."""
    try:
        return manager.save(checkpoint_number=step)
    except Exception as e:
        error = files.disk_error(e, manager.directory)
        if error is None:
            raise
        for partial in Path(manager.directory).glob(f"*-{step}_temp"):  # TensorFlow's own half-written one
            files.remove(partial)
        raise error from None


class SaveWeights(keras.callbacks.Callback):
    """The weights at every epoch's end, in `path` (a .weights.h5), replaced whole or not at all."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        files.write_staged(self.path, self.model.save_weights)


def custom_loop(model, place, ds, t, steps, task, val_ds, callbacks, signals, start_step=0, save=None):
    """The training loop for MultiWorkerMirroredStrategy, where Keras 3's fit cannot run
    (keras-team/keras#20585): a tf.function step under strategy.run, driving the same callbacks.

    Every worker reads the same seeded index stream and keeps every k-th index (k = workers), so a
    step's batches across workers together are exactly the single-process global batch.

    A SIGINT or SIGTERM on any worker (`signals.signal`) travels with the step's all-reduce, so every
    worker stops after the same step (a worker leaving alone would leave the others waiting for it).
    `save(step)`, on every worker at the same steps (every train.checkpoint_every, each epoch's end, and
    a stop), writes the training state. Returns (signal number, step) when stopped, else None.
    """
    strategy = place.strategy

    def per_worker(ctx):
        local_batch = ctx.get_per_replica_batch_size(t.batch_size)
        return task.train(start_step, local_batch, (ctx.num_input_pipelines, ctx.input_pipeline_id))[0]

    iterator = iter(strategy.distribute_datasets_from_function(per_worker))
    lm = ds.kind == "lm"
    if lm:  # logits over every position's next token, sparse targets; the mean is over all the batch's tokens
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
        per_example = ds.input_info["sequence_length"]
    else:
        loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=t.label_smoothing, reduction=None)
        per_example = 1

    @tf.function
    def train_step(iterator, stop):
        def step(x, y, weights=None):  # weights: train.class_weight's, per example
            with tf.GradientTape() as tape:
                out = model(x, training=True)
                losses = loss_fn(y, out) if weights is None else loss_fn(y, out) * weights
                loss = tf.reduce_sum(losses) / (t.batch_size * per_example)  # mean over the global batch
            grads = tape.gradient(model.optimizer.scale_loss(loss), model.trainable_variables)
            model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
            hits = tf.argmax(out, -1) == (tf.cast(y, tf.int64) if lm else tf.argmax(y, -1))
            return loss, tf.reduce_sum(tf.cast(hits, tf.float32)), tf.identity(stop)

        loss, correct, stop = strategy.run(step, args=next(iterator))
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for value in (loss, correct, stop)]

    hooks = keras.callbacks.CallbackList(callbacks, model=model, epochs=t.epochs, steps=steps)
    hooks.on_train_begin()
    forward = inference(model)
    first_epoch, offset = divmod(start_step, steps)  # a resumed run first finishes its interrupted epoch
    save = save or (lambda step: None)
    logs = {}
    for epoch in range(first_epoch, t.epochs):
        callbacks[0].steps = steps - offset  # the progress bar's length
        hooks.on_epoch_begin(epoch)
        total_loss = total_correct = 0.0
        for n, i in enumerate(range(offset, steps), start=1):
            hooks.on_train_batch_begin(n - 1)
            stop = [signals.signal == signal.SIGINT, signals.signal == signal.SIGTERM]
            loss, correct, stop = train_step(iterator, tf.constant(stop, tf.float32))
            step = epoch * steps + i + 1
            if stop.numpy().any():  # the same step on every worker; SIGTERM wins over SIGINT
                save(step)
                return (signal.SIGTERM if stop[1] else signal.SIGINT), step
            if t.checkpoint_every and step % t.checkpoint_every == 0 and i + 1 < steps:
                save(step)
            total_loss += float(loss)
            total_correct += float(correct)
            logs = {"loss": total_loss / n, "accuracy": total_correct / (n * t.batch_size * per_example)}
            hooks.on_train_batch_end(n - 1, logs)
        offset = 0
        if val_ds is not None:  # the chief alone: workers wait at the next step's all-reduce
            if lm:
                report = lm_report(model, ds, forward)
            else:
                report = weighted_scores(np.concatenate([np.asarray(forward(batch[0])) for batch in val_ds]),
                                         ds.y_val, task.weights)
            logs = {**logs, "val_loss": report["loss"], "val_accuracy": report["accuracy"]}
        hooks.on_epoch_end(epoch, logs)
        save((epoch + 1) * steps)  # after the callbacks: with the lookahead's average, as fit's runs save
        if t.patience and epoch + 1 < t.epochs and chief_says(place, model.stop_training):
            break  # the chief's early stop (only it validates), on every worker after the same epoch
    hooks.on_train_end(logs)
    return None


def _all_sum(place, values, weight):
    """Each value times `weight`, summed over the workers (float64 carries int64 steps and seeds exactly)."""
    strategy = place.strategy

    def fn():
        ctx = tf.distribute.get_replica_context()
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, [tf.cast(v, tf.float64) * weight for v in values])
    return [strategy.experimental_local_results(r)[0] for r in strategy.run(fn)]


def build_model_on(place, model_cfg, ds):
    """build_model; under MultiWorkerMirroredStrategy every variable's first value comes from the chief, so
    a worker with another model stops here: say so instead of TensorFlow's collective-op errors."""
    try:
        return build_model(model_cfg, ds.input_info, ds.num_classes)
    except tf.errors.OpError as e:
        if place.multi_worker and "Shape mismatch" in str(e):
            raise UserError("the workers build different models (a weight's shape differs from the chief's); run "
                            "the same command on every worker, with the same overrides") from None
        if place.multi_worker and isinstance(e, tf.errors.UnavailableError):
            raise UserError("another worker stopped while the model was built, often because it was given another "
                            "command; its own output says why; run the same command on every worker") from None
        raise


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def scratch_state_dir():
    """A temporary folder for a non-chief worker's checkpoints, named by its pid; folders of workers that
    are gone (killed with SIGKILL, so their own clean-up never ran) are removed first."""
    for old in Path(tempfile.gettempdir()).glob("bigml-worker-state-*-*"):
        pid = old.name.split("-")[3]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"bigml-worker-state-{os.getpid()}-")


def _differs_from_chief(place, numbers):
    """(whether any worker's `numbers` differ from the chief's, the chief's), through two all-reduces."""
    mine = tf.constant(numbers, tf.float64)
    chiefs = tf.function(lambda: _all_sum(place, [mine], 1.0 if place.is_chief else 0.0))()[0]
    mismatches = tf.function(lambda: _all_sum(place, [tf.reduce_any(chiefs != mine)], 1.0))()[0]
    return bool(float(mismatches)), chiefs


def chief_says(place, flag):
    """The chief's `flag`, on every worker (through an all-reduce: every worker must call it)."""
    return bool(float(tf.function(lambda: _all_sum(place, [float(flag)], 1.0 if place.is_chief else 0.0))()[0]))


def check_workers_same_data(place, ds, data):
    """Every worker must read the same examples: a worker with another copy of the data (a folder with more
    images) would train on other examples and shard a different stream. `data`: fingerprint(ds)."""
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    differs, _ = _differs_from_chief(place, [int(digest[:12], 16)])  # 48 bits: exact in float64
    if differs:
        raise UserError(f"the workers' data differ: {ds.name} on one worker holds other examples than on another; "
                        "give every worker the same copy of the data and the same data.* settings")


def check_same_config(place, signature):
    """Every worker must train the same steps: one with more epochs would wait forever for the others.
    `signature`: numbers that must agree (parameters, steps per epoch, epochs, batch size, seed, patience)."""
    differs, chiefs = _differs_from_chief(place, signature)
    if differs:
        theirs = "another worker's differ from" if place.is_chief else f"the chief's are {[int(x) for x in chiefs]}, not"
        raise UserError(f"the workers' configs differ: parameters, steps per epoch, epochs, batch size, seed and "
                        f"patience: "
                        f"{theirs} this worker's {[int(x) for x in signature]}; run the same command on every "
                        "worker (with --resume RUN on the chief alone when resuming)")


def sync_from_chief(place, variables):
    """Every worker takes the chief's values of `variables`: a resumed chief restored them from its run
    directory, and the others have none."""
    @tf.function
    def assign():
        values = [v.value if isinstance(v, keras.Variable) else v for v in variables]
        for v, value in zip(variables, _all_sum(place, values, 1.0 if place.is_chief else 0.0)):
            v.assign(tf.cast(value, v.dtype))
    assign()


def short_run_note(ds, cfg, steps):
    """A warning when a language model's run is too short to learn: an epoch of a small corpus is a few steps."""
    t = cfg.train
    total = t.epochs * steps
    if ds.kind != "lm" or t.steps_per_epoch or total >= 100:
        return None
    length = ds.input_info["sequence_length"]
    return (f"note: one epoch of {cfg.data.name} is {steps} step{'s' * (steps != 1)} ({len(ds.x_train):,} training tokens / "
            f"(batch {t.batch_size} x {length} tokens)), so {t.epochs} epochs train only {total} steps, too few to "
            f"learn from; raise train.epochs (e.g. train.epochs={-(-1000 // steps)}), or train the tested recipe on "
            f"your text: bigml train {cfg.model['name']} --recipe gpt_tinyshakespeare --dataset {cfg.data.name}")


def batch_note(ds, t):
    """A note when the batch holds more examples than the training split: every epoch is one step of it all."""
    if ds.kind == "lm" or t.steps_per_epoch or t.batch_size <= len(ds.y_train):
        return None
    return (f"note: train.batch_size {t.batch_size} is larger than the {len(ds.y_train):,} training examples, so "
            f"each epoch is a single step over all of them; a smaller batch (e.g. train.batch_size="
            f"{max(1, len(ds.y_train) // 8)}) takes more steps per epoch")


def class_weights(y, num_classes):
    """train.class_weight=balanced: n / (classes x count) per class (scikit-learn's 'balanced'), so the
    weights average 1 over the examples and the learning rate keeps its meaning; 0 for an absent class."""
    counts = np.bincount(y, minlength=num_classes)
    return [len(y) / (num_classes * c) if c else 0.0 for c in counts]


def imbalance_note(ds, t):
    """A note when the training split's largest class has 10 times the examples of its smallest, or None."""
    if ds.kind == "lm" or t.class_weight != "none" or not len(ds.y_train):
        return None
    counts = np.bincount(ds.y_train, minlength=ds.num_classes)
    big, small = int(np.argmax(counts)), int(np.argmin(counts))
    if counts[big] < 10 * counts[small]:
        return None
    return (f"note: the classes are imbalanced: in the training split '{ds.class_names[big]}' has "
            f"{counts[big]:,} examples and '{ds.class_names[small]}' {counts[small]:,}; train.class_weight=balanced "
            "weighs each class alike in the loss, and `bigml eval` shows each class's recall")


def task_for(ds, t, augment, crop_padding, cutout=0):
    """What differs between classifiers and language models: loss, metric, model selection, data."""
    if cutout:
        if ds.kind != "image":
            raise UserError(f"data.cutout applies to images, not to {ds.name}'s {ds.kind} data; "
                            "set data.cutout=0")
        side = min(ds.input_info["shape"][:2])
        if cutout > side:
            raise UserError(f"data.cutout={cutout} is larger than {ds.name}'s {side}-pixel images; set it to at "
                            f"most {side} (airbench96 uses 12 on CIFAR's 32)")
    if ds.kind == "lm":
        for key, off in (("label_smoothing", 0), ("class_weight", "none")):
            if getattr(t, key) != off:
                raise UserError(f"train.{key} applies to classifiers; set it to {off} for a language model")
        length = ds.input_info["sequence_length"]
        return SimpleNamespace(
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),  # nats per token
            metric=keras.metrics.SparseCategoricalAccuracy(name="accuracy"), monitor="val_loss",
            steps=lm_steps_per_epoch(len(ds.x_train), length, t.batch_size),
            train=lambda step=0, batch=t.batch_size, shard=None: lm_train_dataset(
                ds.x_train, ds.y_train, length, batch, t.seed, step, shard),
            val=lm_eval_dataset(ds.x_val, ds.y_val, length, max(t.batch_size, 64)), weights=None)
    weights = class_weights(ds.y_train, ds.num_classes) if t.class_weight == "balanced" else None
    return SimpleNamespace(
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=t.label_smoothing),
        metric=keras.metrics.CategoricalAccuracy(name="accuracy"), monitor="val_accuracy",
        steps=steps_per_epoch(len(ds.y_train), t.batch_size),
        train=lambda step=0, batch=t.batch_size, shard=None: train_dataset(
            ds.x_train, ds.y_train, ds.num_classes, batch, t.seed, augment, crop_padding, step, shard, weights,
            cutout, [round(255 * m) for m in ds.input_info["mean"]] if cutout else None),
        val=eval_dataset(ds.x_val, ds.y_val, ds.num_classes, max(t.batch_size, 256), weights), weights=weights)


def config_hash(text):
    """sha256 of a config's YAML as dumped again: comments and layout do not count, and a run's config.yaml
    matches its hash after a later bigml added keys (at their defaults, which the file does not hold)."""
    return hashlib.sha256(yaml.safe_dump(yaml.safe_load(text), sort_keys=False).encode()).hexdigest()


def _absolute_dataset(cfg):
    """Dataset paths are stored absolute so eval/export find them from any working directory."""
    p = Path(cfg.data.name).expanduser()
    if p.exists():
        cfg.data.name = str(p.resolve())


def open_for_resume(run_dir, lock):
    """The unfinished run to resume, locked to this process, its config checked against the one it started with."""
    run_ = runs.Run(Path(run_dir))
    if not run_.info_file.exists() or not run_.config_file.exists():
        raise UserError(f"{run_dir} is not a bigml run directory (no run.json/config.yaml); nothing to resume")
    lock.acquire(run_)  # before anything is read: another process may be training it now
    if run_.metrics_file.exists():
        raise UserError(f"run {run_dir} already finished; score it with `bigml eval {run_dir}`, or train a new run "
                        f"with its settings, changed as you like: `bigml train --recipe {run_dir} train.epochs=N`")
    cfg = run_.config
    if config_hash(run_.config_file.read_text()) != run_.info.get("config_sha256"):
        raise UserError(f"{run_.config_file} changed since the run started; restore it, or start a new run "
                        "with the new config")
    if tf.train.latest_checkpoint(run_.state) is None:
        raise UserError(f"run {run_dir} has no checkpoint yet; start it again with --overwrite")
    return run_, cfg


def check_same_data(run_, cfg, now):
    """Resuming on data that changed would train on other examples, and could test on ones it trained on.
    `now`: the fingerprint of the data as loaded for this resume."""
    then = run_.info.get("data")
    if not then:  # a run from before run.json recorded its data
        return
    changed = [split for split in then if then[split] != now.get(split)]
    if changed:
        counts = "; ".join(split_change(split, then[split]["examples"], now.get(split, {}).get("examples", 0))
                           for split in changed)
        raise UserError(f"the dataset {cfg.data.name} changed since run {run_.path} started ({counts}); resuming "
                        "would train on other examples and could test on ones it trained on. Restore the data, or "
                        f"train a new run with its settings: bigml train --recipe {run_.path} --run-dir NEW_DIR")


def _selection_key(logs, monitor):
    """How good an epoch is for model selection, larger is better: accuracy first, ties broken by the lower
    loss (on a small validation set accuracy moves in coarse steps, and equal accuracies are common: the
    first of them was kept, measured 56% test accuracy against 76% for the later one); else the lower loss."""
    if monitor.endswith("accuracy"):
        return float(logs[monitor]), -float(logs.get(monitor.replace("accuracy", "loss"), 0.0))
    return (-float(logs[monitor]),)


class HistoryLogger(keras.callbacks.Callback):
    """history.csv: a row per epoch (epoch, then the logs' values, NA where one is missing), the whole file
    written again each epoch so that a full disk never leaves half a row. Rows appended to an existing
    history.csv (`--resume`) keep that file's columns: a run started by an older bigml has fewer, and a value
    of a column the file lacks is left out."""

    def __init__(self, path, append=False):
        super().__init__()
        self.path, self.rows, self.keys = Path(path), [], None
        if append and self.path.exists():
            with open(self.path, newline="") as f:
                table = list(csv.reader(f))
            if table:
                self.keys, self.rows = table[0][1:], table[1:]

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.keys = self.keys if self.keys is not None else sorted(logs)
        self.rows.append([epoch, *(logs[k] if k in logs else "NA" for k in self.keys)])

        def write(tmp):
            with open(tmp, "w", newline="") as f:
                csv.writer(f).writerows([["epoch", *self.keys], *self.rows])
        files.write_with(self.path, write)


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the weights of the best epoch so far (`_selection_key`) at each epoch's end, and with `patience`
    (train.patience) stops training once that many epochs in a row were no better.

    A resumed run starts from the best epoch in its history.csv, so it keeps the best model and counts the
    epochs since it."""

    def __init__(self, path, monitor, history_file=None, patience=0):
        super().__init__()
        self.path, self.monitor, self.best, self.patience = str(path), monitor, None, patience
        self.best_epoch, self.epochs = None, 0  # 0-based; epochs seen, including a resumed run's history
        if history_file is not None and history_file.exists():
            with open(history_file) as f:
                keys = [_selection_key(r, monitor) for r in csv.DictReader(f) if r.get(monitor)]
            self.best = max(keys, default=None)
            self.best_epoch, self.epochs = (keys.index(self.best) if keys else None), len(keys)

    @property
    def exhausted(self):
        """True once `patience` epochs in a row were no better than the best."""
        waited = self.epochs - 1 - self.best_epoch if self.best_epoch is not None else 0
        return bool(self.patience) and waited >= self.patience

    def on_epoch_end(self, epoch, logs=None):
        if not logs or logs.get(self.monitor) is None:
            return
        key = _selection_key(logs, self.monitor)
        self.epochs = epoch + 1
        if self.best is None or key > self.best:
            self.best, self.best_epoch = key, epoch
            files.write_staged(self.path, self.model.save_weights)
        if self.exhausted:
            self.model.stop_training = True


def run(cfg, run_dir=None, data_root=None, overwrite=False, console=None, command=None, extra_callbacks=(),
        resume=False):
    """Train `cfg` into a new run directory (or resume the run in `run_dir`); returns the test metrics. The run
    directory is locked to this process until it returns (`bigml list runs` shows it as training)."""
    lock = runs.Lock()
    try:
        return _train(cfg, run_dir, data_root, overwrite, console, command, extra_callbacks, resume, lock)
    except files.DiskError as e:  # the run keeps its last good checkpoint: say how to go on from it
        run_ = runs.Run(Path(lock.path)) if lock.path else None
        if run_ is None or not run_.info_file.exists():
            raise
        raise e.with_then(f"`bigml train --resume {run_.path}`" if run_.resumable else
                          f"train again with --run-dir {run_.path} --overwrite") from None
    finally:
        lock.release()


def _train(cfg, run_dir, data_root, overwrite, console, command, extra_callbacks, resume, lock):
    console = console or Console(stderr=True)
    if resume:
        run_, cfg = open_for_resume(run_dir, lock)
    t = cfg.train
    _absolute_dataset(cfg)
    place = distribute.placement(t.strategy)  # first: device set-up must precede any TensorFlow op
    precision = distribute.pick_precision(t.precision, place.name)
    if t.batch_size % place.replicas:
        raise UserError(f"train.batch_size {t.batch_size} is global and must divide evenly over "
                        f"{place.replicas} replicas; use a multiple of {place.replicas}")
    keras.utils.set_random_seed(t.seed)
    if t.deterministic:
        tf.config.experimental.enable_op_determinism()
    ds = load_dataset(cfg.data, data_root)  # user errors surface before anything is written
    if t.patience and not len(ds.y_val):
        raise UserError(f"train.patience={t.patience} stops training when the validation score stops improving, "
                        "but this run holds out no validation split (data.val_fraction is 0); set "
                        "data.val_fraction=0.1, or train.patience=0")
    data = fingerprint(ds)  # recorded in run.json; a resume and the workers compare it
    if resume:
        check_same_data(run_, cfg, data)
    augment = ds.augment if cfg.data.augment == "auto" else cfg.data.augment
    task = task_for(ds, t, augment, cfg.data.crop_padding, cfg.data.cutout)
    with distribute.precision_policy(precision):
        with place.strategy.scope():  # the one place a strategy scope is opened
            model = build_model_on(place, cfg.model, ds)
            if ds.kind == "image":
                adapt_to_data(model, ds.x_train)  # e.g. the CNN's patch-whitening stem
            steps = t.steps_per_epoch or task.steps  # no throw-away pipeline (it would copy the data)
            if resume:  # the steps its schedule was built with (runs without the key: LM epochs counted windows)
                steps = run_.info.get("steps_per_epoch") or (
                    steps_per_epoch(len(ds.y_train), t.batch_size) if ds.kind == "lm" and not t.steps_per_epoch
                    else steps)
            model.compile(
                optimizer=make_optimizer(t, steps),
                loss=task.loss,
                # with class weights, the accuracies fit shows weigh them too: the mean of the classes' recalls
                **{"weighted_metrics" if task.weights else "metrics": [task.metric]},
                # XLA cannot compile string ops (tables, text), nor one step over several devices (tensorflow XLA
                # known issues: "tf.Variable on a different device")
                jit_compile=t.jit_compile and ds.kind in ("image", "lm") and place.replicas == 1,
                steps_per_execution=t.steps_per_execution)
            model.optimizer.build(model.trainable_variables)  # its variables must exist to be restored
            if place.replicas > 1 and not place.multi_worker:
                distribute.build_from_one_replica(model)
        if place.multi_worker:  # before the run directory exists
            check_same_config(place, [model.count_params(), steps, t.epochs, t.batch_size, t.seed, t.patience])
            check_workers_same_data(place, ds, data)
        # a user error, so before the run directory exists
        freeze = t.whiten_bias_epochs and FreezeAfter(whitening_biases(model), t.whiten_bias_epochs * steps,
                                                  retrace=not place.multi_worker)
        run_ = None
        if not resume and place.is_chief:  # only the chief writes a run directory
            run_ = runs.create(run_dir or runs.default_run_dir(cfg.model["name"], cfg.data.name), overwrite)
            lock.acquire(run_)
            files.write_text(run_.config_file, f"# {command or 'bigml train'}\n" + cfg.dump())
            files.write_text(run_.info_file, json.dumps({
                "model": cfg.model["name"], "dataset": cfg.data.name, "class_names": ds.class_names,
                "input": ds.input_info, "augment": augment, "params": model.count_params(),
                "strategy": place.name, "replicas": place.replicas, "global_batch_size": t.batch_size,
                "per_replica_batch_size": t.batch_size // place.replicas, "steps_per_epoch": steps,
                "config_sha256": config_hash(cfg.dump()), "data": data,
                "keras": keras.__version__, "tensorflow": tf.__version__,
            }, indent=2))
        elif resume:
            run_ = runs.Run(Path(run_dir))
        lookahead = t.lookahead and Lookahead(model, t.epochs * steps, steps, t.lookahead_start_epoch,
                                              t.lookahead_every, t.lookahead_decay)
        averages = (lookahead.average + [lookahead.started]) if lookahead else []
        state = tf.train.Checkpoint(model=model, optimizer=model.optimizer,
                                    # seed-generator states are not carried by the model object itself
                                    non_trainable=[v.value for v in model.non_trainable_variables],
                                    **({"lookahead": averages} if lookahead else {}))
        manager = run_ and tf.train.CheckpointManager(state, str(run_.state), max_to_keep=2)
        start_step = 0
        if resume:
            try:
                state.restore(manager.latest_checkpoint).assert_existing_objects_matched()
            except Exception as e:
                raise UserError(f"checkpoint {manager.latest_checkpoint} is corrupt or does not match the run "
                                f"({type(e).__name__}); delete it to fall back to the one before, or start "
                                "again with --overwrite") from None
            start_step = int(model.optimizer.iterations.numpy())
        worker_state = None
        if place.multi_worker:  # the chief's state (restored, or as built) on every worker; all of them save it
            sync_from_chief(place, [*model.variables, *model.optimizer.variables, *averages])
            start_step = int(model.optimizer.iterations.numpy())
            # saving may read variables through collectives, so every worker saves; only the chief's copy is kept
            worker_state = None if manager else scratch_state_dir()
            manager = manager or tf.train.CheckpointManager(state, worker_state, max_to_keep=1)
        sizes = (f"{len(ds.x_train):,} train / {len(ds.x_val):,} val tokens" if ds.kind == "lm" else
                 f"{len(ds.y_train):,} train / {len(ds.y_val):,} val / {len(ds.y_test):,} test")
        if ds.kind == "image":  # folders pick their size; say which
            sizes += ", {}x{}x{} images".format(*ds.input_info["shape"])
        console.print(f"run directory [bold]{run_.path if run_ else '(none: not the chief)'}[/]  model "
                      f"{cfg.model['name']} ({model.count_params():,} parameters)  dataset {cfg.data.name} "
                      f"({sizes})  "
                      f"strategy {place.name}" + (f"  precision {precision}" if precision != "float32" else "")
                      + (f"  resuming at step {start_step}" if start_step else ""))
        for note in (*ds.notes, *ds.read_as, distribute.slow_precision_note(precision, place),
                     short_run_note(ds, cfg, steps), imbalance_note(ds, t), batch_note(ds, t),
                     t.label_smoothing and f"note: the training and validation losses include label smoothing "
                     f"{t.label_smoothing} (train.label_smoothing) and read higher than the test loss, which does "
                     "not"):
            if note:
                console.print(note, markup=False, highlight=False)
        val_ds = task.val
        has_val = len(ds.y_val) > 0
        monitor = task.monitor if has_val else "loss"
        checkpoints = StepCheckpoints(manager, 0 if place.multi_worker else t.checkpoint_every, steps)
        timer = StepTimer(min(t.batch_size, len(ds.y_train)), t.steps_per_execution)
        tokens = ds.input_info["sequence_length"] if ds.kind == "lm" else 0  # per example
        callbacks = [RichProgress(t.epochs, steps, min(t.batch_size, len(ds.y_train)) * (tokens or 1), console,
                                  "tok/s" if tokens else "ex/s",
                                  "smoothed loss" if t.label_smoothing else "loss"), timer]
        if freeze:  # before the lookahead, which still moves what the optimizer may not
            callbacks.append(freeze)
        if lookahead:  # before the checkpoints, so they save the averaged weights at epoch ends
            callbacks.append(lookahead)
        best = run_ and BestCheckpoint(run_.checkpoints / "best.weights.h5", monitor,
                                       run_.history_file if resume else None, t.patience)
        if run_:
            run_.checkpoints.mkdir(exist_ok=True)
            callbacks += [
                HistoryLogger(str(run_.history_file), append=resume),
                keras.callbacks.TensorBoard(str(run_.logs), write_graph=False),
                SaveWeights(run_.checkpoints / "last.weights.h5"),
                best,
            ]
            if not place.multi_worker:  # fit's step checkpoints; the multi-worker loop saves through `save`
                callbacks.append(checkpoints)
        callbacks += list(extra_callbacks)
        start = time.perf_counter()
        stopped = None
        with checkpoints:
            if place.multi_worker:
                try:
                    stopped = custom_loop(model, place, ds, t, steps, task,
                                          val_ds if has_val and place.is_chief else None, callbacks, checkpoints,
                                          start_step, lambda step: save_state(manager, step))
                finally:
                    if worker_state:
                        shutil.rmtree(worker_state, ignore_errors=True)
            step = start_step
            while (not place.multi_worker and step < t.epochs * steps and not model.stop_training
                   and not (best and best.exhausted)):  # a resumed run may have stopped early already
                # a resumed run first finishes its interrupted epoch, then runs whole epochs
                epoch, offset = divmod(step, steps)
                train_ds, _ = task.train(step)
                callbacks[0].steps = steps - offset
                try:
                    model.fit(train_ds, initial_epoch=epoch, epochs=epoch + 1 if offset else t.epochs,
                              steps_per_epoch=steps - offset, validation_data=val_ds if has_val else None,
                              callbacks=callbacks, verbose=0, shuffle=False)
                except StepCheckpoints.Stop:
                    pass
                step = int(model.optimizer.iterations.numpy())
        if stopped:
            signum, step = stopped
            raise Interrupted(signum, step, None, steps, t.epochs, then=(
                ("every worker stopped there" if checkpoints.signal is not None else "another worker got it, and "
                 "every worker stopped there") + "; checkpoint saved: resume with " +
                (f"`bigml train --resume {run_.path}` and the same --workers and --worker-index (or TF_CONFIG) on "
                 "the chief, and each other worker's own command again" if run_ else
                 "this worker's command again, and `bigml train --resume RUN` on the chief (worker 0), which keeps "
                 "the run directory")))
        if checkpoints.signal is not None and not place.multi_worker:  # multi-worker: it came after the last step
            raise Interrupted(checkpoints.signal, step, run_.path, steps, t.epochs)
        train_seconds = time.perf_counter() - start
        epochs_run = int(model.optimizer.iterations.numpy()) // steps
        if not run_:
            return {"worker": "non-chief", "train_seconds": round(train_seconds, 1), "epochs": epochs_run}
        early_stop = best.exhausted and epochs_run < t.epochs and {
            "after_epoch": epochs_run, "best_epoch": best.best_epoch + 1, "patience": t.patience}
        if early_stop:
            console.print(f"early stop after epoch {epochs_run} of {t.epochs}: {monitor} has not improved for "
                          f"{t.patience} epochs (train.patience); keeping epoch {best.best_epoch + 1}'s weights",
                          highlight=False)
        # model selection on validation accuracy; without a validation split, the final weights
        model.load_weights(run_.checkpoints / ("best.weights.h5" if has_val else "last.weights.h5"))
        with distribute.precision_policy("float32"):  # the saved model computes in float32 (README, Devices)
            model = in_float32(model)
            if (t.test_time_flip or t.test_time_translate) and ds.kind == "image":
                model = with_test_time_augmentation(model, flip=t.test_time_flip, translate=t.test_time_translate)
            files.write_staged(run_.model_file, model.save)  # never a half-written model.keras

    try:
        if ds.kind == "lm":
            report = lm_report(model, ds)
            save_lm_report(report, run_.eval_dir("val"))
        else:
            report = metrics_from_probs(predict_probs(model, ds.x_test, progress="testing"), ds.y_test,
                                        ds.class_names)
            save_report(report, ds.class_names, run_.eval_dir("test"), ds.y_test, ds.names.get("test"))
    except KeyboardInterrupt:
        raise Interrupted(signal.SIGINT, None, run_.path, then=None if not place.multi_worker else (
            f"the trained model is saved: `bigml eval {run_.path}` tests it")) from None
    throughput = timer.summary().get("examples_per_second", 0.0)
    metrics = {"accuracy": report["accuracy"],
               **({} if ds.kind == "lm" else {"balanced_accuracy": report["balanced_accuracy"]}),
               **({"top5_accuracy": report["top5_accuracy"]} if "top5_accuracy" in report else {}),
               "loss": report["loss"], "examples": report["examples"],
               **({"perplexity": report["perplexity"]} if ds.kind == "lm" else {}),
               "train_seconds": round(train_seconds, 1), "epochs": epochs_run, "precision": precision,
               **({"early_stop": early_stop} if early_stop else {}),
               "examples_per_second": round(throughput, 1),
               **({"tokens_per_second": round(throughput * tokens)} if tokens else {}),
               "run": str(run_.path)}
    files.write_text(run_.metrics_file, json.dumps(metrics, indent=2))
    plot_history(run_.history_file, run_.history_plot)
    return metrics
