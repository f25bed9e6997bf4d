"""The run directory: the one place that decides what a run holds and where.

    RUN/config.yaml          resolved config (the recipe plus overrides), as trained
    RUN/run.json             what predict/export need without the data: classes, input spec, dataset
    RUN/model.keras          the selected model (best validation accuracy, then lowest validation loss)
    RUN/checkpoints/         last.weights.h5 (every epoch) and best.weights.h5
    RUN/history.csv          per-epoch loss, accuracy, val_loss, val_accuracy, learning rate
    RUN/history.png          the same as training curves
    RUN/logs/                TensorBoard event files
    RUN/metrics.json         test metrics measured at the end of training
    RUN/eval/<split>/        written by `bigml eval`: report.json, confusion_matrix.csv/.png, predictions.csv
    RUN/export/savedmodel/   written by `bigml export`
    RUN/train.lock           held (flock) by the process training the run: its pid, host and start time
"""

import json
import os
import re
import shutil
import socket
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional, TYPE_CHECKING, Union

import yaml

from bigml_cli import files
from bigml_cli.errors import UserError

if TYPE_CHECKING:
    from bigml_cli.config import Config

RUNS_ROOT = Path("runs")
EXPORT_FILES = {"onnx": "model.onnx", "litert": "model.tflite"}  # the artifact inside an export folder
EXPORT_MARKS = ("saved_model.pb", *EXPORT_FILES.values())  # a folder holding one of these is an export


@dataclass
class RunInfo:
    """run.json: what eval, predict, export and a resume need without the data. Written once, when training
    starts; `input` is the input spec whose `kind` names the run's task."""

    model: str
    dataset: str
    class_names: list
    input: dict
    augment: str = "none"
    params: int = 0
    strategy: str = ""
    replicas: int = 1
    global_batch_size: int = 0
    per_replica_batch_size: int = 0
    steps_per_epoch: Optional[int] = None  # None: a run from before run.json recorded it
    config_sha256: str = ""
    data: dict = field(default_factory=dict)  # split -> {examples, sha256}; {} before run.json recorded it
    keras: str = ""
    tensorflow: str = ""

    @classmethod
    def from_dict(cls, d: dict) -> "RunInfo":
        names = {f.name for f in fields(cls)}
        missing = [n for n in ("model", "dataset", "class_names", "input") if n not in d]
        if missing:
            raise ValueError(f"has no {', '.join(missing)}")
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @property
    def multi_worker(self) -> bool:
        return str(self.strategy).startswith("multi-worker")


@dataclass
class Run:
    """A run directory; every file name in it is defined here."""

    path: Path

    config_file = property(lambda self: self.path / "config.yaml")
    info_file = property(lambda self: self.path / "run.json")
    model_file = property(lambda self: self.path / "model.keras")
    checkpoints = property(lambda self: self.path / "checkpoints")
    last_weights = property(lambda self: self.checkpoints / "last.weights.h5")  # every epoch's end
    best_weights = property(lambda self: self.checkpoints / "best.weights.h5")  # the best validation score's
    state = property(lambda self: self.checkpoints / "state")  # the full training state, for --resume
    lock_file = property(lambda self: self.path / "train.lock")
    history_file = property(lambda self: self.path / "history.csv")
    history_plot = property(lambda self: self.path / "history.png")
    logs = property(lambda self: self.path / "logs")
    metrics_file = property(lambda self: self.path / "metrics.json")

    def eval_dir(self, split: str) -> Path:
        return self.path / "eval" / split

    def default_export(self, fmt: str) -> Path:
        return self.path / "export" / fmt

    def write_info(self, info: RunInfo) -> None:
        files.write_text(self.info_file, info.to_json())

    @property
    def resumable(self) -> bool:
        """A training-state checkpoint is saved (tf.train.CheckpointManager writes one .index per save)."""
        return any(self.state.glob("*.index"))

    @property
    def info(self) -> RunInfo:
        return self._read(self.info_file, lambda text: RunInfo.from_dict(_mapping(json.loads(text))))

    @property
    def config(self) -> "Config":
        from bigml_cli import config

        return self._read(self.config_file, lambda text: config.from_dict(_mapping(yaml.safe_load(text))))

    @property
    def metrics(self) -> dict:
        """The test metrics written when training finished; {} before."""
        if not self.metrics_file.exists():
            return {}
        return self._read(self.metrics_file, lambda text: _mapping(json.loads(text)))

    def _read(self, path, parse):
        """A file bigml wrote into the run, parsed; a user error when it has been damaged or edited badly."""
        try:
            return parse(path.read_text())
        except Exception as e:
            if isinstance(e, OSError) and not path.exists():
                raise UserError(f"{path} is missing; copy the whole run directory again") from None
            reason = str(e).splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{path} is damaged ({type(e).__name__}: {reason[:80]}); restore it from a copy of "
                            f"the run, or train the run again") from None


def _mapping(value):
    if not isinstance(value, dict):
        raise ValueError(f"holds a {type(value).__name__}, not a mapping of keys to values")
    return value


class Lock:
    """The claim of one training process on its run directory, so a second `train --overwrite` or `--resume`
    cannot delete or write the same run under it. An flock: the kernel drops it when the process dies, even by
    SIGKILL, so a killed run is never reported as still training."""

    def __init__(self):
        self.file = None
        self.path = None  # the run directory, once acquired

    def acquire(self, run: Run) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, as before
            return
        f = open(run.lock_file, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            holder = trainer(run)
            raise UserError(f"run {run.path} is in use: {_describe(holder)}; wait for it to finish, or stop it "
                            f"({_stop(holder)}: it saves a checkpoint) and then resume it") from None
        self.file, self.path = f, run.path
        try:
            f.truncate(0)
            f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}))
            f.flush()
        except OSError as e:  # a full disk: the lock holds all the same, without saying who holds it
            error = files.disk_error(e, run.lock_file)
            if error is None:
                raise
            raise error from None

    def release(self) -> None:
        if self.file:
            self.file.close()  # closing drops the flock
            self.file = None


def trainer(run: Run) -> Optional[dict]:
    """Who holds the run's lock ({pid, host, started}), or None when no process is training it."""
    try:
        import fcntl
    except ImportError:
        return None
    if not run.lock_file.is_file():
        return None
    with open(run.lock_file) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            try:
                return json.loads(f.read() or "{}")
            except ValueError:
                return {}
        return None


def _describe(holder):
    if not holder:
        return "another process is training it"
    return f"pid {holder.get('pid')} on {holder.get('host')} has been training it since {holder.get('started')}"


def _stop(holder):
    return f"Ctrl-C in its terminal, or `kill {holder['pid']}`" if holder and holder.get("pid") else "Ctrl-C"


def slug(text: str) -> str:
    """A dataset's name for a folder name: a path's last part without its .csv/.tsv/.txt, however it was given
    (`data.csv`, `./data.csv` and `/home/me/data.csv` all give `data`)."""
    name = Path(str(text).rstrip("/")).name
    if Path(name).suffix.lower() in (".csv", ".tsv", ".txt"):
        name = Path(name).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def default_run_dir(model: str, dataset: str, root: Union[str, Path] = RUNS_ROOT) -> Path:
    """runs/MODEL-DATASET, then -2, -3, ... so a new run never lands on an old one."""
    base = Path(root) / f"{model}-{slug(dataset)}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def is_run(path: Union[str, Path]) -> bool:
    """A folder bigml wrote as a run: it holds run.json or config.yaml."""
    path = Path(path)
    return path.is_dir() and ((path / "run.json").is_file() or (path / "config.yaml").is_file())


def create(path: Union[str, Path], overwrite: bool = False) -> Run:
    """Make a new run directory; an existing non-empty one is refused unless `overwrite`."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        holder = trainer(Run(path)) if path.is_dir() else None
        if holder is not None:
            raise UserError(f"run directory {path} is in use: {_describe(holder)}; pick another --run-dir, or stop "
                            f"that process first ({_stop(holder)})")
        if not overwrite:
            raise UserError(f"run directory {path} already exists; pick another --run-dir or pass --overwrite "
                            "to replace it")
        if not is_run(path):  # --overwrite replaces an old run, never a folder of the user's own files
            raise UserError(f"{path} is not a bigml run directory, so --overwrite will not delete it; "
                            "pick another --run-dir")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return Run(path)


def open_run(path: Union[str, Path]) -> Run:
    """An existing, finished run directory."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"run directory {path} does not exist; see `bigml list runs`")
    run = Run(path)
    if not run.info_file.exists() or not run.config_file.exists():
        raise UserError(f"{path} is not a bigml run directory (no run.json/config.yaml); see `bigml list runs`")
    run.info, run.config  # noqa: B018  (a damaged file is named now, before any work)
    if not run.model_file.exists() and run.metrics_file.exists():
        raise UserError(f"run {path} finished, but its model.keras is missing (deleted, or not copied with the "
                        f"run); copy it back, or train the run again: bigml train --recipe {path} --run-dir NEW_DIR")
    if not run.model_file.exists():
        holder = trainer(run)
        if holder is not None:
            raise UserError(f"run {path} is still training ({_describe(holder)}); wait for it to finish "
                            "(`bigml list runs` shows how far it got)")
        if run.resumable:
            raise UserError(f"run {path} has no model.keras yet: its training stopped before the end; finish it "
                            f"with `bigml train --resume {path}`")
        raise UserError(f"run {path} has no model.keras: its training stopped before its first checkpoint; "
                        f"train it again with --run-dir {path} --overwrite")
    return run


def status(run: Run) -> str:
    """'finished', 'training' with how far it got, or how far an unfinished run got and the command that
    finishes it."""
    holder = trainer(run)
    try:
        workers = run.info.multi_worker
    except UserError:
        workers = False
    if run.metrics_file.exists() and not run.model_file.exists() and holder is None:
        return "finished, but model.keras is missing"
    if run.model_file.exists() and holder is None:
        if run.metrics_file.exists():
            stop = run.metrics.get("early_stop")
            return "finished" + (f": stopped early after epoch {stop.get('after_epoch')}, the best was epoch "
                                 f"{stop.get('best_epoch')}" if isinstance(stop, dict) else "")
        resume = run.resumable and not workers  # resuming needs every worker again: eval tests it alone
        return f"trained, not tested: bigml {'train --resume' if resume else 'eval'} {run.path}"
    try:
        epochs = yaml.safe_load(run.config_file.read_text())["train"]["epochs"]
        done = max(0, len(run.history_file.read_text().splitlines()) - 1) if run.history_file.exists() else 0
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return "unfinished" if holder is None else "training"
    if holder is not None:
        return (f"testing (pid {holder.get('pid')})" if run.model_file.exists() else
                f"training: {done}/{epochs} epochs (pid {holder.get('pid')})")
    if not run.resumable:
        return f"{done}/{epochs} epochs, no checkpoint: train again with --overwrite"
    if workers:
        return (f"{done}/{epochs} epochs: bigml train --resume {run.path} --workers ... --worker-index 0 on the "
                "chief, and each other worker's own command")
    return f"{done}/{epochs} epochs: bigml train --resume {run.path}"


def _run_dirs(root: Path) -> list:
    """The directories under `root` that hold a run.json. A directory that vanishes during the walk (a checkpoint's
    temporary folder that training is renaming) is skipped: `os.walk` ignores errors, where `Path.glob` raises."""
    found = []
    for directory, subdirs, names in os.walk(root):
        if "run.json" in names:
            found.append(Path(directory))
        subdirs.sort()
    return sorted(found)


def list_runs(root: Union[str, Path] = RUNS_ROOT) -> list:
    """Every run under `root`, with its test accuracy when training finished, else how far it got."""
    rows = []
    for run_path in _run_dirs(Path(root)):
        run = Run(run_path)
        try:
            info, metrics = run.info, run.metrics
        except UserError as e:  # one damaged run does not hide the others
            rows.append({"run": str(run.path), "model": None, "dataset": None, "test_accuracy": None,
                         "status": f"unreadable: {str(e).split(' (')[0]}"})
            continue
        rows.append({"run": str(run.path), "model": info.model, "dataset": info.dataset,
                     "test_accuracy": metrics.get("accuracy"), "status": status(run)})
    return rows
