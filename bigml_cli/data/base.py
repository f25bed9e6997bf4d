"""The Dataset record every loader returns, the dataset registry, and split helpers."""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from bigml_cli.errors import UserError
from bigml_cli.registry import Registry

DATASETS = Registry("dataset")


def data_dir(explicit: Optional[Union[str, Path]] = None) -> Path:
    """--data-dir, else $BIGML_DATA_DIR, else the per-user cache."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("BIGML_DATA_DIR"):
        return Path(os.environ["BIGML_DATA_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "bigml-data"


@dataclass
class Dataset:
    """A classification dataset: inputs and class indices of its train, val and test splits, in memory."""

    name: str
    kind: str  # which task reads it: "image" (uint8 N x H x W x C), "table" (dict of columns), "text" (strings)
    class_names: list
    x_train: object
    y_train: np.ndarray
    x_val: object
    y_val: np.ndarray
    x_test: object
    y_test: np.ndarray
    augment: str = "none"  # what data.augment=auto means for this dataset
    input_info: dict = field(default_factory=dict)  # what the model's preprocessing needs
    notes: list = field(default_factory=list)  # lines for the user: what loading left out, and why
    names: dict = field(default_factory=dict)  # split -> each example's file (or FILE:LINE); {} for built-ins
    read_as: list = field(default_factory=list)  # lines for a run's start: how the data was read (column types)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_validation(self) -> bool:
        return len(self.y_val) > 0

    def arrays(self, split: str) -> tuple:
        """(inputs, labels) of the "train", "val" or "test" split."""
        return {"test": (self.x_test, self.y_test), "val": (self.x_val, self.y_val),
                "train": (self.x_train, self.y_train)}[split]

    def check_splits(self, cfg: Any) -> None:
        """Every result bigml reports is on the test split: refuse a dataset that has none."""
        if len(self.y_test) == 0 and cfg.test_fraction > 0:  # too few to hold any out
            n = len(self.y_train) + len(self.y_val)
            raise UserError(f"dataset {cfg.name} has only {n} example(s), too few for a test split: "
                            f"data.test_fraction {cfg.test_fraction:g} of them rounds to none; give it at least "
                            f"{int(0.5 / cfg.test_fraction) + 1} examples (or a test/ part of its own)")
        if len(self.y_test) == 0:
            raise UserError(f"dataset {cfg.name} has no test split: data.test_fraction is {cfg.test_fraction} and "
                            "it has no test/ part of its own; set data.test_fraction above 0 (e.g. 0.2)")


@dataclass
class Corpus:
    """A language-modelling corpus: token ids of its training and validation text, and where windows start
    (training: every position; validation: non-overlapping windows, as held-out text is scored). It has no
    test split: the validation text is what `bigml eval` reports on."""

    name: str
    vocab: list
    train_ids: np.ndarray
    train_starts: np.ndarray
    val_ids: np.ndarray
    val_starts: np.ndarray
    input_info: dict
    kind: str = "lm"
    text: str = ""  # the corpus itself: another vocabulary (--init) encodes it again
    augment: str = "none"
    notes: list = field(default_factory=list)
    names: dict = field(default_factory=dict)
    read_as: list = field(default_factory=list)

    @property
    def class_names(self) -> list:  # a language model's classes are the next token's
        return self.vocab

    @property
    def num_classes(self) -> int:
        return len(self.vocab)

    @property
    def has_validation(self) -> bool:
        return len(self.val_starts) > 0

    def arrays(self, split: str) -> tuple:
        """(token ids, window starts) of a split; "test" is the validation text."""
        return {"train": (self.train_ids, self.train_starts), "val": (self.val_ids, self.val_starts),
                "test": (self.val_ids, self.val_starts)}[split]

    def check_splits(self, cfg: Any) -> None:
        """A corpus is scored on its validation text, which make_lm_dataset has checked."""


def toy_images(n: int, shape: tuple, num_classes: int, seed: int = 0) -> tuple:
    """(uint8 images, labels) that a model can learn: each class a bright square at its own place, on noise.
    The datasets' `tiny_copy` writers use them to write a few examples in a dataset's official layout."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % num_classes
    x = rng.integers(0, 60, size=(n, *shape)).astype(np.uint8)
    h, w = shape[0], shape[1]
    s = max(2, h // 4)
    for i, label in enumerate(y):
        r, c = (label * s) % (h - s + 1), (label * 2 * s // 3) % (w - s + 1)
        x[i, r:r + s, c:c + s] = 230
    return x, y


def read_many(read: Any, items: list, what: str) -> list:
    """[read(item) for item in items], in order, on a thread per core (file reads and PIL's decoding and
    resizing release the GIL), with a bar on a terminal when there are many: a folder of 25,000 photos takes
    minutes to read."""
    from concurrent.futures import ThreadPoolExecutor

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    columns = (TextColumn(f"reading {what}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool, \
            Progress(*columns, console=console, transient=True,
                     disable=len(items) < 500 or not console.is_terminal) as bar:
        task = bar.add_task(what, total=len(items))
        out = []
        for result in pool.map(read, items):
            out.append(result)
            bar.advance(task)
    return out


def fingerprint(ds: Any, splits: tuple = ("train", "val", "test")) -> dict:
    """{split: {"examples": n, "sha256": hash of its inputs and labels}}: what a run trained and was tested on,
    so that a resume or an evaluation can tell when the data under it changed (a folder with images added
    shifts every split, and puts training examples into the test split)."""
    import hashlib

    def digest(x, y):
        h = hashlib.sha256()
        for part in ([x[k] for k in sorted(x)] if isinstance(x, dict) else [x]) + [y]:
            part = np.asarray(part)
            if part.dtype == object:
                h.update("\0".join(map(str, part.ravel())).encode("utf-8", "surrogatepass"))
            else:
                h.update(str((part.dtype.str, part.shape)).encode())
                h.update(np.ascontiguousarray(part).tobytes())
        return h.hexdigest()

    return {split: {"examples": int(len(ds.arrays(split)[1])), "sha256": digest(*ds.arrays(split))}
            for split in splits if ds.arrays(split)[0] is not None}


def split_change(split: str, then: Any, now: Any) -> str:
    """'test: 48 examples then, 50 now', or 'test: 48 examples, not the same ones'."""
    return f"{split}: {then:,} examples then, {now:,} now" if then != now else \
        f"{split}: {then:,} examples, not the same ones"


def take(x: Any, idx: Any) -> Any:
    """Rows `idx` of an array or of every column of a table."""
    if isinstance(x, dict):
        return {k: v[idx] for k, v in x.items()}
    return x[idx]


def length(x: Any) -> int:
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def split_indices(n: int, fraction: float, seed: Any) -> tuple:
    """(rest, held-out) row indices of a seeded split with `fraction` of `n` rows held out."""
    order = np.random.default_rng(seed).permutation(n)
    k = int(round(n * fraction))
    if n and k >= n:
        raise UserError(f"holding out {fraction:g} of {n} examples leaves none to train on; lower "
                        "data.val_fraction or data.test_fraction")
    return np.sort(order[k:]), np.sort(order[:k])


def split(x: Any, y: Any, fraction: float, seed: Any) -> tuple:
    """Seeded split of (x, y) into (rest, held-out) with `fraction` of the rows held out."""
    rest, held = split_indices(length(x), fraction, seed)
    return take(x, rest), y[rest], take(x, held), y[held]


def names_by_split(names: list, cfg: Any, test_names: Optional[list] = None) -> dict:
    """Each split's example names, split as `split` splits the examples (seed 0): `names` are the examples
    read for training, in order; the test split is held out of them first, unless a test folder gave
    `test_names`; then data.val_fraction of the rest validates."""
    def rest_and_held(items, fraction):
        rest, held = split_indices(len(items), fraction, seed=0)
        return [items[i] for i in rest], [items[i] for i in held]

    if test_names is None:
        names, test_names = rest_and_held(names, cfg.test_fraction)
    train, val = rest_and_held(names, cfg.val_fraction)
    return {"train": train, "val": val, "test": list(test_names)}


def sub_folders(folder: Union[str, Path]) -> list:
    """The class sub-folders of `folder`, sorted; hidden ones (.ipynb_checkpoints, .git) are not classes."""
    return sorted(p.name for p in Path(folder).iterdir()
                  if p.is_dir() and not p.name.startswith(".") and p.name not in ("train", "test"))


def files_in(folder: Union[str, Path], suffixes: list) -> list:
    """The files under `folder` (sub-folders included, as Keras' *_dataset_from_directory reads them) whose
    names end in one of `suffixes`, sorted; hidden ones (macOS' ._IMG.jpg copies) are skipped."""
    found = []

    def walk(directory):  # os.scandir knows each entry's type without a stat: 60,000 files list in 0.3 s, not 4
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):  # as rglob: linked folders inside are not entered
                    walk(entry.path)
                elif os.path.splitext(entry.name)[1].lower() in suffixes and entry.is_file():
                    found.append(Path(entry.path))

    walk(folder)
    return sorted(found)


def class_folders(path: Union[str, Path], what: str) -> tuple:
    """(train folder, test folder or None, class names) of a folder with one sub-folder per class,
    optionally split into train/ and test/."""
    train_dir = path / "train" if (path / "train").is_dir() else path
    classes = sub_folders(train_dir)
    if len(classes) < 2:
        raise UserError(f"{what} folder {train_dir} needs one sub-folder per class, at least two; found "
                        f"{len(classes)}")
    test_dir = path / "test" if train_dir != path and (path / "test").is_dir() else None
    return train_dir, test_dir, classes


def image_info(x_train: Any) -> dict:
    """Per-channel mean and std of the training images, for the model's normalization layer."""
    channels = x_train.shape[-1]
    x = x_train.reshape(-1, channels)
    if x.dtype == np.uint8:  # from each channel's histogram: exact, and no float64 copy (1 GB for CIFAR)
        values = np.arange(256) / 255.0
        counts = [np.bincount(np.ascontiguousarray(x[:, c]), minlength=256) for c in range(channels)]
        mean = np.array([values @ n / len(x) for n in counts])
        std = np.sqrt([((values - m) ** 2) @ n / len(x) for m, n in zip(mean, counts)])
    else:
        x = x.astype(np.float64) / 255.0
        mean, std = x.mean(axis=0), x.std(axis=0)
    return {"shape": list(x_train.shape[1:]), "mean": mean.round(6).tolist(),
            "std": np.maximum(std, 1e-3).round(6).tolist()}


def make_image_dataset(name: str, class_names: list, x_train: Any, y_train: Any, x_test: Any, y_test: Any, cfg: Any, augment: str) -> Dataset:
    """Hold out the validation split and compute normalization stats from what remains of train."""
    y_train, y_test = np.asarray(y_train, np.int64), np.asarray(y_test, np.int64)
    x_tr, y_tr, x_val, y_val = split(x_train, y_train, cfg.val_fraction, seed=0)
    return Dataset(name, "image", list(class_names), x_tr, y_tr, x_val, y_val, x_test, y_test,
                   augment=augment, input_info={"kind": "image", **image_info(x_tr)})
