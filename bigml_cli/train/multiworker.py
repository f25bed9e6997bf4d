"""Several worker processes (MultiWorkerMirroredStrategy): the training loop Keras 3's fit cannot run there
(keras-team/keras#20585), and the collectives that keep the workers in step and in agreement."""

import hashlib
import json
import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any, Callable

import keras
import tensorflow as tf

from bigml_cli.errors import UserError
from bigml_cli.models import build_model, inference


def custom_loop(model: Any, place: Any, ds: Any, task: Any, streams: Any, t: Any, steps: int, validate: bool, callbacks: list, signals: Any, start_step: int = 0,
                save: Any = None) -> Any:
    """The training loop for MultiWorkerMirroredStrategy, where Keras 3's fit cannot run
    (keras-team/keras#20585): a tf.function step under strategy.run, driving the same callbacks.

    Every worker reads the same seeded index stream and keeps every k-th index (k = workers), so a
    step's batches across workers together are exactly the single-process global batch.

    A SIGTERM on any worker (`signals.signal`: what a preempted machine gets) reaches every worker through
    TensorFlow's PreemptionCheckpointHandler (`Preemption`); a SIGINT (Ctrl-C) travels with the step's
    all-reduce. Either way every worker saves and stops after the same step (a worker leaving alone would leave
    the others waiting for it). `save(step)`, on every worker at the same steps (every train.checkpoint_every,
    each epoch's end, and a stop), writes the training state. `validate`: whether this worker validates (the
    chief). Returns (signal number, step) when stopped, else None.
    """
    def per_worker(ctx):
        local_batch = ctx.get_per_replica_batch_size(t.batch_size)
        return streams.train(start_step, local_batch, (ctx.num_input_pipelines, ctx.input_pipeline_id))[0]

    iterator = iter(place.strategy.distribute_datasets_from_function(per_worker))
    loss_fn, per_example = task.loop_loss(ds, t)
    train_step = distributed_step(model, place.strategy, task, loss_fn,
                                  per_example if per_example == "weights" else t.batch_size * per_example)
    hooks = keras.callbacks.CallbackList(callbacks, model=model, epochs=t.epochs, steps=steps)
    hooks.on_train_begin()
    forward = inference(model)
    first_epoch, offset = divmod(start_step, steps)  # a resumed run first finishes its interrupted epoch
    save = save or (lambda step: None)
    with Preemption(place, signals, save) as preemption:
        logs, stopped = {}, None
        for epoch in range(first_epoch, t.epochs):
            callbacks[0].steps = steps - offset  # the progress bar's length
            hooks.on_epoch_begin(epoch)
            total_loss = total_correct = total_counted = 0.0
            for n, i in enumerate(range(offset, steps), start=1):
                hooks.on_train_batch_begin(n - 1)
                stop = [signals.signal == signal.SIGINT, signals.signal == signal.SIGTERM and not preemption.active]
                loss, correct, counted, stop = train_step(iterator, tf.constant(stop, tf.float32))
                step = epoch * steps + i + 1
                if stop.numpy().any():  # the same step on every worker; SIGTERM wins over SIGINT
                    save(step)
                    stopped = (signal.SIGTERM if stop[1] else signal.SIGINT), step
                elif preemption.saved_at(step):
                    stopped = signal.SIGTERM, step
                if stopped and i + 1 < steps:
                    return stopped  # mid-epoch: the resumed run finishes the epoch and reports it then
                if not stopped and t.checkpoint_every and step % t.checkpoint_every == 0 and i + 1 < steps:
                    save(step)
                total_loss += float(loss)
                total_correct += float(correct)
                total_counted += float(counted)
                logs = {"loss": total_loss / n, "accuracy": total_correct / max(total_counted, 1.0)}
                hooks.on_train_batch_end(n - 1, logs)
            offset = 0
            if validate:  # the chief alone: workers wait at the next step's all-reduce
                report = task.validate(model, ds, forward, streams)
                logs = {**logs, "val_loss": report["loss"], "val_accuracy": report["accuracy"]}
            hooks.on_epoch_end(epoch, logs)
            save((epoch + 1) * steps)  # after the callbacks: with the lookahead's average, as fit's runs save
            if stopped:  # at an epoch's last step: the epoch ended as usual (validation, history), then the stop
                return stopped
            if t.patience and epoch + 1 < t.epochs and chief_says(place, model.stop_training):
                break  # the chief's early stop (only it validates), on every worker after the same epoch
        hooks.on_train_end(logs)
        return None


class Preemption:
    """TensorFlow's PreemptionCheckpointHandler, for a SIGTERM on any worker: the worker that got it (its
    `signals.signal`, polled each second) tells the others through the coordination service which step to
    save; each worker then saves that step with `save` and leaves the loop. bigml's own checkpoints carry the
    state (`save_fn`); the handler's manager, in a scratch folder, only counts the steps of this launch.

    `active` is False where TensorFlow's handler does nothing (a CPU or TPU machine on Google Cloud: it says
    so in a warning); there the SIGTERM travels with the step's all-reduce instead."""

    class Exit(Exception):
        pass

    def __init__(self, place: Any, signals: Any, save: Callable):
        from tensorflow.python.distribute.failure_handling import failure_handling_util as util

        self.scratch = tempfile.mkdtemp(prefix="bigml-preemption-")

        def exit_fn():
            raise self.Exit()

        config = tf.distribute.experimental.TerminationConfig(
            termination_watcher_fn=lambda: signals.signal == signal.SIGTERM, exit_fn=exit_fn, save_fn=save,
            grace_period=0)
        counter = tf.train.CheckpointManager(tf.train.Checkpoint(), self.scratch, max_to_keep=1)
        self.handler = tf.distribute.experimental.PreemptionCheckpointHandler(
            place.strategy.cluster_resolver, counter, termination_config=config)
        self.active = getattr(self.handler, "_platform_device", None) not in (
            util.PlatformDevice.GCE_CPU, util.PlatformDevice.GCE_TPU)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handler = None  # its watcher threads stop when it is collected
        shutil.rmtree(self.scratch, ignore_errors=True)

    def saved_at(self, step: int) -> bool:
        """After each step: whether every worker saved `step` for a preemption (then training stops)."""
        logger = logging.getLogger("tensorflow")
        level = logger.level
        logger.setLevel(logging.ERROR)  # the handler warns of its own deprecated calls
        try:
            self.handler.save_checkpoint_if_preempted(step)
        except self.Exit:
            return True
        finally:
            logger.setLevel(level)
        return False


LOST = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError, tf.errors.InternalError,
        tf.errors.UnknownError, tf.errors.DeadlineExceededError)  # what a collective raises when a peer is gone


def lost_worker(error: Exception, place: Any) -> str:
    """Which worker an error of a collective names as gone ("worker 1 (host:port)"), or "another worker"."""
    import re

    found = re.search(r"/job:(?:worker|chief)/replica:\d+/task:(\d+)", str(error))
    index = int(found.group(1)) if found else None
    if index is None or index == place.worker_index:
        return "another worker"
    hosts = place.workers
    return f"worker {index}" + (f" ({hosts[index]})" if index < len(hosts) else "")


def distributed_step(model: Any, strategy: str, task: Any, loss_fn: Any, global_values: Any) -> Any:
    """One training step on every replica: the loss is summed over the replicas' values and divided by
    `global_values` (the global batch's examples, or tokens), so it is the global batch's mean; or, when
    `global_values` is "weights", by the sum of every replica's weights (the masked tokens of a masked language
    model, the real target tokens of a translation: a count that varies by step), and accuracy counts those
    alone. Returns (loss, correct predictions, predictions counted, stop flags), each summed over the
    replicas."""
    by_weights = global_values == "weights"

    @tf.function
    def train_step(iterator, stop):
        def step(x, y, weights=None):  # weights: train.class_weight's per example, or which tokens count
            with tf.GradientTape() as tape:
                out = model(x, training=True)
                losses = loss_fn(y, out)
                if by_weights:
                    counted = tf.distribute.get_replica_context().all_reduce(
                        tf.distribute.ReduceOp.SUM, tf.reduce_sum(weights))
                    loss = tf.reduce_sum(losses * weights) / tf.maximum(counted, 1.0)
                else:
                    losses = losses if weights is None else losses * weights
                    loss = tf.reduce_sum(losses) / global_values  # mean over the global batch
            grads = tape.gradient(model.optimizer.scale_loss(loss), model.trainable_variables)
            model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
            hits = tf.cast(task.hits(out, y), tf.float32)
            scored = weights if by_weights else tf.ones_like(hits)
            return loss, tf.reduce_sum(hits * scored), tf.reduce_sum(scored), tf.identity(stop)

        values = strategy.run(step, args=next(iterator))
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for value in values]
    return train_step



def _all_sum(place, values, weight):
    """Each value times `weight`, summed over the workers (float64 carries int64 steps and seeds exactly)."""
    strategy = place.strategy

    def fn():
        ctx = tf.distribute.get_replica_context()
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, [tf.cast(v, tf.float64) * weight for v in values])
    return [strategy.experimental_local_results(r)[0] for r in strategy.run(fn)]



def build_model_on(place: Any, model_cfg: Any, ds: Any) -> keras.Model:
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



def scratch_state_dir() -> str:
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



def chief_says(place: Any, flag: bool) -> bool:
    """The chief's `flag`, on every worker (through an all-reduce: every worker must call it)."""
    return bool(float(tf.function(lambda: _all_sum(place, [float(flag)], 1.0 if place.is_chief else 0.0))()[0]))



def check_workers_same_data(place: Any, ds: Any, data: dict) -> None:
    """Every worker must read the same examples: a worker with another copy of the data (a folder with more
    images) would train on other examples and shard a different stream. `data`: fingerprint(ds)."""
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    differs, _ = _differs_from_chief(place, [int(digest[:12], 16)])  # 48 bits: exact in float64
    if differs:
        raise UserError(f"the workers' data differ: {ds.name} on one worker holds other examples than on another; "
                        "give every worker the same copy of the data and the same data.* settings")



def check_same_config(place: Any, signature: list) -> None:
    """Every worker must train the same steps: one with more epochs would wait forever for the others.
    `signature`: numbers that must agree (parameters, steps per epoch, epochs, batch size, seed, patience)."""
    differs, chiefs = _differs_from_chief(place, signature)
    if differs:
        theirs = "another worker's differ from" if place.is_chief else f"the chief's are {[int(x) for x in chiefs]}, not"
        raise UserError(f"the workers' configs differ: parameters, steps per epoch, epochs, batch size, seed and "
                        f"patience: "
                        f"{theirs} this worker's {[int(x) for x in signature]}; run the same command on every "
                        "worker (with --resume RUN on the chief alone when resuming)")



def sync_from_chief(place: Any, variables: Any) -> None:
    """Every worker takes the chief's values of `variables`: a resumed chief restored them from its run
    directory, and the others have none."""
    @tf.function
    def assign():
        values = [v.value if isinstance(v, keras.Variable) else v for v in variables]
        for v, value in zip(variables, _all_sum(place, values, 1.0 if place.is_chief else 0.0)):
            v.assign(tf.cast(value, v.dtype))
    assign()
