"""The callbacks a training run drives, under `fit` or the multi-worker loop: progress, timing, the lookahead
average, freezing, checkpoints, the history and the best epoch's weights."""

import csv
import signal
import threading
import time
from pathlib import Path
from typing import Any, Optional

import keras
import numpy as np
import tensorflow as tf
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from bigml_cli import files
from bigml_cli.train.resume import save_state


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

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
        # first_step: when the epoch's first call ended; first_done: the steps done by then (with
        # steps_per_execution k, Keras calls back every k steps, first at batch k - 1)
        self.start, self.first_step, self.first_done = time.perf_counter(), None, 0
        if self.console.is_terminal:  # a log file gets the per-epoch lines only
            self.progress.start()
        self.task = self.progress.add_task("train", total=self.steps, epoch=epoch + 1, epochs=self.epochs,
                                           rate=0.0, loss=0.0, acc=0.0)

    def on_train_batch_end(self, batch: Any, logs: Optional[dict] = None) -> None:
        logs = logs or {}
        done, now = batch + 1, time.perf_counter()
        fields = {"loss": float(logs.get("loss", 0.0)), "acc": float(logs.get("accuracy", 0.0))}
        if self.first_step is None:  # the estimates start here: rich's time left counts the steps after these
            self.first_step, self.first_done = now, done
            self.progress.reset(self.task, completed=done, **fields)
            return
        rate = (done - self.first_done) * self.per_step / max(now - self.first_step, 1e-9)
        self.progress.update(self.task, completed=done, rate=rate, **fields)

    def pace(self, seconds: float) -> float:
        """Seconds a step at this epoch's pace, the first call's steps left out when there were others."""
        if self.first_step is not None and self.steps > self.first_done:
            return (self.start + seconds - self.first_step) / (self.steps - self.first_done)
        return seconds / self.steps

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
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



def duration(seconds: float) -> str:
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

    def on_train_begin(self, logs: Optional[dict] = None) -> None:
        self.began = self.began or time.perf_counter()

    def on_train_batch_begin(self, batch: Any, logs: Optional[dict] = None) -> None:
        self.step_start = time.perf_counter()

    def on_train_batch_end(self, batch: Any, logs: Optional[dict] = None) -> None:
        self.durations.append((time.perf_counter() - self.step_start) / self.per_call)

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        if logs is not None:
            logs["elapsed_seconds"] = round(time.perf_counter() - self.began, 2)
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def summary(self) -> dict:
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

    def on_train_begin(self, logs: Optional[dict] = None) -> None:
        self.last = int(self.model.optimizer.iterations.numpy())  # 0, or the step a resumed run starts at

    def on_train_batch_end(self, batch: Any, logs: Optional[dict] = None) -> None:
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

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
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
    the freeze take less time (docs/speed.md). The arithmetic of every other weight's update is
    unchanged (a test checks bitwise on a small net); on the CIFAR-10 net oneDNN may round the retraced step
    differently in the last bits. They are trainable again when training ends."""

    def __init__(self, variables, step, retrace=True):
        super().__init__()
        self.variables, self.step, self.saved = list(variables), step, None
        self.retrace, self.trainable = retrace, None

    def on_train_batch_begin(self, batch: Any, logs: Optional[dict] = None) -> None:
        frozen = int(self.model.optimizer.iterations.numpy()) >= self.step
        if frozen and self.retrace and self.trainable is None:
            self.trainable = [v.trainable for v in self.variables]
            for v in self.variables:
                v.trainable = False
            self.model.make_train_function(force=True)
        # retraced, the step no longer changes them: nothing to put back
        self.saved = [v.numpy() for v in self.variables] if frozen and self.trainable is None else None

    def on_train_batch_end(self, batch: Any, logs: Optional[dict] = None) -> None:
        for v, value in zip(self.variables, self.saved or ()):
            v.assign(value)

    def on_train_end(self, logs: Optional[dict] = None) -> None:
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

    def save(self) -> Any:
        return save_state(self.manager, int(self.model.optimizer.iterations.numpy()))

    def on_train_batch_end(self, batch: Any, logs: Optional[dict] = None) -> None:
        if self.signal is not None:
            self.save()
            self.model.stop_training = True  # at an epoch's last step: the epoch ends as usual, then training
            if not self.steps_per_epoch or int(self.model.optimizer.iterations.numpy()) % self.steps_per_epoch:
                raise self.Stop()  # mid-epoch: resume finishes the epoch and writes its results then
        elif self.every and int(self.model.optimizer.iterations.numpy()) % self.every == 0:
            self.save()

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        self.save()



class SaveWeights(keras.callbacks.Callback):
    """The weights at every epoch's end, in `path` (a .weights.h5), replaced whole or not at all."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        files.write_staged(self.path, self.model.save_weights)



def _selection_key(logs, monitor):
    """How good an epoch is for model selection, larger is better: accuracy first, ties broken by the lower
    loss (on a small validation set accuracy moves in coarse steps, and equal accuracies are common; keeping
    the first of them kept a much worse model, docs/results.md); else the lower loss."""
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

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
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
    def exhausted(self) -> bool:
        """True once `patience` epochs in a row were no better than the best."""
        waited = self.epochs - 1 - self.best_epoch if self.best_epoch is not None else 0
        return bool(self.patience) and waited >= self.patience

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        if not logs or logs.get(self.monitor) is None:
            return
        key = _selection_key(logs, self.monitor)
        self.epochs = epoch + 1
        if self.best is None or key > self.best:
            self.best, self.best_epoch = key, epoch
            files.write_staged(self.path, self.model.save_weights)
        if self.exhausted:
            self.model.stop_training = True
