"""A training run as named stages, read top to bottom (as torchtune's recipes and nanoGPT's train.py read):
place it on devices, load the data, build the model, open the run directory, restore the state, fit, save the
selected model, test it. What depends on the kind of data is asked of the dataset's task."""

import json
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Optional, Union

import keras
import tensorflow as tf
from rich.console import Console
from rich.table import Table

from bigml_cli import distribute, files, runs

from bigml_cli.data.base import fingerprint
from bigml_cli.errors import Interrupted, UserError, WorkerLost
from bigml_cli.evaluate import plot_history
from bigml_cli.models import in_float32, whitening_biases
from bigml_cli.optim import make_optimizer
from bigml_cli.pretrained import check_loaded, enable_lora, load_matching, merge_lora, open_source
from bigml_cli.tasks import load_for, task_for
from bigml_cli.train.callbacks import (BestCheckpoint, FreezeAfter, HistoryLogger, Lookahead, RichProgress,
                                       SaveWeights, StepCheckpoints, StepTimer)
from bigml_cli.train.multiworker import (LOST, build_model_on, lost_worker, check_same_config, check_workers_same_data, custom_loop,
                                         scratch_state_dir, sync_from_chief)
from bigml_cli.train.resume import (check_config_unchanged, check_same_data, config_hash, open_for_resume,
                                   save_state)


def run(cfg: Any, run_dir: Optional[Union[str, Path]] = None, data_root: Optional[Union[str, Path]] = None, overwrite: bool = False, console: Optional[Console] = None,
        command: Optional[str] = None, extra_callbacks: tuple = (), resume: bool = False) -> dict:
    """Train `cfg` into a new run directory (or resume the run in `run_dir`); returns the test metrics. The run
    directory is locked to this process until it returns (`bigml list runs` shows it as training)."""
    lock = runs.Lock()
    try:
        return Training(cfg, run_dir, data_root, overwrite, console, command, extra_callbacks, resume, lock).run()
    except files.DiskError as e:  # the run keeps its last good checkpoint: say how to go on from it
        run_ = runs.Run(Path(lock.path)) if lock.path else None
        if run_ is None or not run_.info_file.exists():
            raise
        raise e.with_then(f"`bigml train --resume {run_.path}`" if run_.resumable else
                          f"train again with --run-dir {run_.path} --overwrite") from None
    finally:
        lock.release()


class Training:
    """The state one run builds up, stage by stage; `run` calls the stages in order."""

    def __init__(self, cfg, run_dir, data_root, overwrite: bool, console: Optional[Console], command: Optional[str],
                 extra_callbacks, resume: bool, lock: runs.Lock):
        self.cfg, self.run_dir, self.data_root, self.overwrite = cfg, run_dir, data_root, overwrite
        self.console, self.command = console or Console(stderr=True), command
        self.extra_callbacks, self.resume, self.lock = list(extra_callbacks), resume, lock
        self.run_: Optional[runs.Run] = None

    def run(self) -> dict:
        self.place()
        try:
            return self.stages()
        except LOST as e:
            if not self.place_.multi_worker:
                raise
            raise self.lost(e) from None

    def stages(self) -> dict:
        self.load_data()
        with distribute.precision_policy(self.precision):
            self.build_model()
            self.check_workers()
            self.open_run_dir()
            self.restore_state()
            self.announce()
            self.fit(self.callbacks())
            if not self.run_:  # a worker that is not the chief: the chief saves and tests
                return {"worker": "non-chief", "train_seconds": round(self.train_seconds, 1),
                        "epochs": self.epochs_run}
            self.save_model()
        return self.test()

    def place(self) -> None:
        """Devices and precision first (device set-up must precede any TensorFlow op), then the seeds. A resumed
        multi-worker run: the chief opens the run directory; another worker reads its config (the chief's state
        reaches it through the collectives)."""
        self.resumed = None  # the run being resumed, as every worker reads it (the chief alone locks and writes it)
        if self.resume and distribute.tf_config_index() > 0:
            self.resumed = worker_run(self.run_dir)
            self.run_, self.cfg = None, self.resumed.config
        elif self.resume:
            self.run_, self.cfg = open_for_resume(self.run_dir, self.lock)
            self.resumed = self.run_
        t = self.cfg.train
        absolute_dataset(self.cfg)
        self.place_ = distribute.placement(t.strategy)
        if self.resumed:  # every worker refuses alike: none is left waiting for a chief that stopped
            check_same_replicas(self.resumed, self.place_)
        self.precision = distribute.pick_precision(t.precision, self.place_.name)
        if t.batch_size % self.place_.replicas:
            raise UserError(f"train.batch_size {t.batch_size} is global and must divide evenly over "
                            f"{self.place_.replicas} replicas; use a multiple of {self.place_.replicas}")
        keras.utils.set_random_seed(t.seed)
        if t.deterministic:
            tf.config.experimental.enable_op_determinism()

    def load_data(self) -> None:
        """The dataset and its task; user errors surface here, before anything is written."""
        cfg, t = self.cfg, self.cfg.train
        self.ds = ds = load_for(cfg, self.data_root)
        self.task = task_for(ds)
        self.source = None  # the run --init starts from (a resumed run has its own weights)
        self.init_sizes: dict = {}  # model.* values --init's model set (a preset's, a pre-training run's)
        if t.init and not self.resume:
            self.source = open_source(t.init, self.task, cfg.model["name"])
            self.ds = ds = self.task.adopt_vocabulary(ds, self.source.input_info(), cfg)  # the cheap checks first
            self.init_sizes = self.source.model_sizes()  # its architecture; config.yaml records it
            cfg.model.update(self.init_sizes)
        elif t.init:  # resumed: the vocabulary the run started with, not one built again from this data
            self.ds = ds = self.task.adopt_vocabulary(ds, self.resumed.info.input, cfg)
        if t.patience and not ds.has_validation:
            raise UserError(f"train.patience={t.patience} stops training when the validation score stops improving, "
                            "but this run holds out no validation split (data.val_fraction is 0); set "
                            "data.val_fraction=0.1, or train.patience=0")
        self.data = fingerprint(ds)  # recorded in run.json; a resume and the workers compare it
        if self.resumed:
            check_same_data(self.resumed, cfg, self.data)
        self.augment = ds.augment if cfg.data.augment == "auto" else cfg.data.augment
        self.task.check(ds, cfg)
        self.streams = self.task.streams(ds, cfg)

    def build_model(self) -> None:
        """The model and its optimizer, under the strategy's scope (the one place it is opened)."""
        t, place, task, streams = self.cfg.train, self.place_, self.task, self.streams
        with place.strategy.scope():
            self.model = model = build_model_on(place, self.cfg.model, self.ds)
            task.prepare_model(model, self.ds)
            self.init_rows = self.source and place.is_chief and self.load_init()  # workers take the chief's
            self.lora = t.lora_rank and enable_lora(model, t.lora_rank)  # before the optimizer sees the weights
            steps = t.steps_per_epoch or streams.steps  # no throw-away pipeline (it would copy the data)
            if self.resume:  # the steps its schedule was built with
                steps = self.resumed.info.steps_per_epoch or task.legacy_steps(self.ds, t, steps)
            self.steps = steps
            model.compile(
                optimizer=make_optimizer(t, steps),
                loss=streams.loss,
                # with class weights, the accuracies fit shows weigh them too: the mean of the classes' recalls
                **{"weighted_metrics" if streams.weighted else "metrics": [streams.metric]},
                # XLA cannot compile string ops (tables, text), nor one step over several devices (tensorflow XLA
                # known issues: "tf.Variable on a different device")
                jit_compile=t.jit_compile and task.xla and place.replicas == 1,
                steps_per_execution=t.steps_per_execution)
            model.optimizer.build(model.trainable_variables)  # its variables must exist to be restored
            if place.replicas > 1 and not place.multi_worker:
                distribute.build_from_one_replica(model)

    def load_init(self) -> list:
        """The --init run's weights wherever its layers match the new model's; one row per layer."""
        rows = load_matching(self.model, self.source.model(), self.source.same_classes(self.ds.class_names))
        check_loaded(rows, self.cfg.train.init)
        return rows

    def check_workers(self) -> None:
        """Every worker must train the same model on the same data; and settings that are user errors are
        refused before the run directory exists."""
        t, place = self.cfg.train, self.place_
        if place.multi_worker:
            check_same_config(place, [self.model.count_params(), self.steps, t.epochs, t.batch_size, t.seed,
                                      t.patience])
            check_workers_same_data(place, self.ds, self.data)
        self.freeze = t.whiten_bias_epochs and FreezeAfter(
            whitening_biases(self.model), t.whiten_bias_epochs * self.steps, retrace=not place.multi_worker)

    def open_run_dir(self) -> None:
        """A new run directory with config.yaml and run.json (the chief alone writes one), or the resumed one."""
        cfg, t, place, ds = self.cfg, self.cfg.train, self.place_, self.ds
        if self.resume:  # place() opened it (the chief) or read it (another worker)
            return
        if not place.is_chief:
            return
        self.run_ = run_ = runs.create(self.run_dir or runs.default_run_dir(cfg.model["name"], cfg.data.name),
                                       self.overwrite)
        self.lock.acquire(run_)
        files.write_text(run_.config_file, f"# {self.command or 'bigml train'}\n" + cfg.dump())
        run_.write_info(runs.RunInfo(
            model=cfg.model["name"], dataset=cfg.data.name, class_names=ds.class_names, input=ds.input_info,
            augment=self.augment, params=self.model.count_params(), strategy=place.name, replicas=place.replicas,
            global_batch_size=t.batch_size, per_replica_batch_size=t.batch_size // place.replicas,
            steps_per_epoch=self.steps, config_sha256=config_hash(cfg.dump()), data=self.data,
            keras=keras.__version__, tensorflow=tf.__version__))

    def restore_state(self) -> None:
        """The training state that checkpoints carry, restored when resuming; every worker takes the chief's."""
        t, model, place = self.cfg.train, self.model, self.place_
        self.lookahead = lookahead = t.lookahead and Lookahead(
            model, t.epochs * self.steps, self.steps, t.lookahead_start_epoch, t.lookahead_every, t.lookahead_decay)
        averages = (lookahead.average + [lookahead.started]) if lookahead else []
        state = tf.train.Checkpoint(model=model, optimizer=model.optimizer,
                                    # seed-generator states are not carried by the model object itself
                                    non_trainable=[v.value for v in model.non_trainable_variables],
                                    **({"lookahead": averages} if lookahead else {}))
        self.manager = manager = self.run_ and tf.train.CheckpointManager(state, str(self.run_.state), max_to_keep=2)
        if self.resume and manager:
            try:
                state.restore(manager.latest_checkpoint).assert_existing_objects_matched()
            except Exception as e:
                raise UserError(f"checkpoint {manager.latest_checkpoint} is corrupt or does not match the run "
                                f"({type(e).__name__}); delete it to fall back to the one before, or start "
                                "again with --overwrite") from None
        self.worker_state = None
        if place.multi_worker:  # the chief's state (restored, or as built) on every worker; all of them save it
            sync_from_chief(place, [*model.variables, *model.optimizer.variables, *averages])
            # saving may read variables through collectives, so every worker saves; only the chief's copy is kept
            self.worker_state = None if manager else scratch_state_dir()
            self.manager = manager or tf.train.CheckpointManager(state, self.worker_state, max_to_keep=1)
        self.start_step = int(model.optimizer.iterations.numpy())

    def announce(self) -> None:
        """One line saying what trains where, then the notes on the data and the settings."""
        cfg, t, ds, place = self.cfg, self.cfg.train, self.ds, self.place_
        self.console.print(
            f"run directory [bold]{self.run_.path if self.run_ else '(none: not the chief)'}[/]  model "
            f"{cfg.model['name']} ({self.model.count_params():,} parameters)  dataset {cfg.data.name} "
            f"({self.task.sizes(ds)})  strategy {place.name}"
            + (f"  precision {self.precision}" if self.precision != "float32" else "")
            + (f"  resuming at step {self.start_step}" if self.start_step else ""))
        smoothing = t.label_smoothing and (
            f"note: the training and validation losses include label smoothing {t.label_smoothing} "
            "(train.label_smoothing) and read higher than the test loss, which does not")
        if self.init_rows:
            self.console.print(init_table(self.init_rows, self.cfg.train.init))
            if self.init_sizes:
                listed = ", ".join(f"model.{k}={v}" for k, v in self.init_sizes.items())
                self.console.print(f"note: the model's sizes are those of --init's model ({listed}); config.yaml "
                                   "records them",
                                   markup=False, highlight=False)
        if self.lora:
            trained, total = self.lora
            self.console.print(f"LoRA rank {t.lora_rank}: {trained:,} of {total:,} parameters train "
                               f"({trained / total:.2%}); the saved model holds the merged weights", highlight=False)
        for note in (*ds.notes, *ds.read_as, distribute.slow_precision_note(self.precision, place),
                     *self.task.notes(ds, cfg, self.steps), smoothing):
            if note:
                self.console.print(note, markup=False, highlight=False)

    def callbacks(self) -> list:
        """Progress and timing first; the freeze before the lookahead (which still moves what the optimizer may
        not); the lookahead before the checkpoints (so they save the averaged weights at epoch ends)."""
        t, run_, place = self.cfg.train, self.run_, self.place_
        self.has_val = self.ds.has_validation
        self.monitor = self.streams.monitor if self.has_val else "loss"
        self.checkpoints = StepCheckpoints(self.manager, 0 if place.multi_worker else t.checkpoint_every, self.steps)
        examples = min(t.batch_size, self.task.examples(self.ds))
        self.timer = StepTimer(examples, t.steps_per_execution)
        tokens = self.task.tokens_per_example(self.ds)
        callbacks = [RichProgress(t.epochs, self.steps, examples * (tokens or 1), self.console, self.task.unit,
                                  "smoothed loss" if t.label_smoothing else "loss"), self.timer]
        callbacks += [c for c in (self.freeze, self.lookahead) if c]
        self.best = run_ and BestCheckpoint(run_.best_weights, self.monitor,
                                            run_.history_file if self.resume else None, t.patience)
        if run_:
            run_.checkpoints.mkdir(exist_ok=True)
            callbacks += [HistoryLogger(str(run_.history_file), append=self.resume),
                          keras.callbacks.TensorBoard(str(run_.logs), write_graph=False),
                          SaveWeights(run_.last_weights), self.best]
            if not place.multi_worker:  # fit's step checkpoints; the multi-worker loop saves through `save`
                callbacks.append(self.checkpoints)
        return callbacks + self.extra_callbacks

    def fit(self, callbacks: list) -> None:
        """`fit`, one call per stretch of epochs (a resumed run first finishes its interrupted epoch), or the
        multi-worker loop; a signal saves a checkpoint and ends the run as Interrupted."""
        t, model, place, steps = self.cfg.train, self.model, self.place_, self.steps
        start, stopped, step = time.perf_counter(), None, self.start_step
        with self.checkpoints:
            if place.multi_worker:
                try:
                    stopped = custom_loop(model, place, self.ds, self.task, self.streams, t, steps,
                                          self.has_val and place.is_chief, callbacks, self.checkpoints,
                                          self.start_step, lambda step: save_state(self.manager, step))
                finally:
                    if self.worker_state:
                        shutil.rmtree(self.worker_state, ignore_errors=True)
            while (not place.multi_worker and step < t.epochs * steps and not model.stop_training
                   and not (self.best and self.best.exhausted)):  # a resumed run may have stopped early already
                epoch, offset = divmod(step, steps)
                train_ds, _ = self.streams.train(step)
                callbacks[0].steps = steps - offset
                try:
                    model.fit(train_ds, initial_epoch=epoch, epochs=epoch + 1 if offset else t.epochs,
                              steps_per_epoch=steps - offset, validation_data=self.streams.val if self.has_val else None,
                              callbacks=callbacks, verbose=0, shuffle=False)
                except StepCheckpoints.Stop:
                    pass
                step = int(model.optimizer.iterations.numpy())
        if stopped:
            self.interrupted_workers(*stopped)
        if self.checkpoints.signal is not None and not place.multi_worker:  # multi-worker: after the last step
            raise Interrupted(self.checkpoints.signal, step, self.run_.path, steps, t.epochs)
        self.train_seconds = time.perf_counter() - start
        self.epochs_run = int(model.optimizer.iterations.numpy()) // steps

    def lost(self, error: Exception) -> WorkerLost:
        """One line for a worker that died without warning: who, where the run can go on from, and how."""
        place, run_ = self.place_, self.run_
        last = run_ and tf.train.latest_checkpoint(str(run_.state))
        where = f"its last checkpoint, step {last.rsplit('-', 1)[1]}" if last else "its last checkpoint"
        run_path = run_.path if run_ else (self.run_dir or "RUN (the chief's run directory)")
        return WorkerLost(
            f"{lost_worker(error, place)} was lost (the collective with it failed: its process ended or its machine "
            f"is gone), and worker {place.worker_index} stopped rather than wait; the run keeps {where}: relaunch "
            f"every worker with `bigml train --resume {run_path} --workers {','.join(place.workers)} "
            "--worker-index I` (I: each worker's own index)")

    def interrupted_workers(self, signum: int, step: int) -> None:
        """Every worker stopped after the same step, and saved it: say how to resume them all."""
        run_ = self.run_
        raise Interrupted(signum, step, None, self.steps, self.cfg.train.epochs, then=(
            ("every worker stopped there" if self.checkpoints.signal is not None else "another worker got it, and "
             "every worker stopped there") + "; checkpoint saved: resume every worker with " +
            f"`bigml train --resume {run_.path if run_ else self.run_dir or 'RUN'} --workers "
            f"{','.join(self.place_.workers)} --worker-index I` (I: its own index; a worker without the run "
            "directory on its machine: its own original command again)"))

    def save_model(self) -> None:
        """The selected weights (the best validation score's; without a validation split, the last), saved
        computing in float32 as the model the run serves (README, Devices)."""
        t, run_, best = self.cfg.train, self.run_, self.best
        self.early_stop = best.exhausted and self.epochs_run < t.epochs and {
            "after_epoch": self.epochs_run, "best_epoch": best.best_epoch + 1, "patience": t.patience}
        if self.early_stop:
            self.console.print(f"early stop after epoch {self.epochs_run} of {t.epochs}: {self.monitor} has not "
                               f"improved for {t.patience} epochs (train.patience); keeping epoch "
                               f"{best.best_epoch + 1}'s weights", highlight=False)
        self.model.load_weights(run_.best_weights if self.has_val else run_.last_weights)
        with distribute.precision_policy("float32"):
            self.model = self.task.serving_model(in_float32(merge_lora(self.model)), t)
            files.write_staged(run_.model_file, self.model.save)  # never a half-written model.keras

    def test(self) -> dict:
        """The task's report on the held-out data, and metrics.json with the run's figures."""
        run_, task = self.run_, self.task
        try:
            report = task.test(self.model, self.ds, run_)
        except KeyboardInterrupt:
            raise Interrupted(signal.SIGINT, None, run_.path, then=None if not self.place_.multi_worker else (
                f"the trained model is saved: `bigml eval {run_.path}` tests it")) from None
        throughput = self.timer.summary().get("examples_per_second", 0.0)
        tokens = task.tokens_per_example(self.ds)
        metrics = {**task.metrics(report),
                   "train_seconds": round(self.train_seconds, 1), "epochs": self.epochs_run, "precision": self.precision,
                   **({"early_stop": self.early_stop} if self.early_stop else {}),
                   "examples_per_second": round(throughput, 1),
                   **({"tokens_per_second": round(throughput * tokens)} if tokens else {}),
                   "run": str(run_.path)}
        files.write_text(run_.metrics_file, json.dumps(metrics, indent=2))
        plot_history(run_.history_file, run_.history_plot)
        return metrics


def worker_run(run_dir: Any) -> runs.Run:
    """The run a worker other than the chief resumes, read from the run directory (shared storage), never
    locked or written (the chief does that); its config checked as the chief checks it."""
    run_ = runs.Run(Path(run_dir))
    if not run_.config_file.exists() or not run_.info_file.exists():
        raise UserError(f"this worker resumes run {run_dir}, whose config.yaml is not on this machine: give the "
                        "workers shared storage for the run directory, or run this worker's original `bigml train` "
                        "command again (the chief's checkpoint reaches every worker)")
    check_config_unchanged(run_)
    return run_


def check_same_replicas(run_: Any, place: Any) -> None:
    """A run resumes on the workers (replicas) it started on: each one's share of the batch, and of the data
    stream, follows from their number."""
    if run_.info.replicas and run_.info.replicas != place.replicas:
        raise UserError(f"run {run_.path} trained on {run_.info.replicas} replica(s) ({run_.info.strategy}) and this "
                        f"resume has {place.replicas} ({place.name}); resume it on as many: the same --workers list, "
                        "one process per worker")


def init_table(rows: list, source: str) -> Table:
    """What --init loaded, what is new and what was skipped, a row per layer with weights."""
    loaded = sum(n for _, n, status, _ in rows if status == "loaded")
    total = sum(n for _, n, _, _ in rows)
    table = Table(title=f"--init {source}: {loaded:,} of {total:,} parameters loaded")
    for column in ("layer", "parameters", "weights", "from"):
        table.add_column(column, justify="right" if column == "parameters" else "left")
    for name, count, status, detail in rows:
        table.add_row(name, f"{count:,}", status, detail)
    return table


def absolute_dataset(cfg: Any) -> None:
    """Dataset and --init paths are stored absolute so eval/export (and a recipe taken from the run) find them
    from any working directory."""
    p = Path(cfg.data.name).expanduser()
    if p.exists():
        cfg.data.name = str(p.resolve())
    if cfg.train.init and Path(cfg.train.init).expanduser().exists():
        cfg.train.init = str(Path(cfg.train.init).expanduser().resolve())
