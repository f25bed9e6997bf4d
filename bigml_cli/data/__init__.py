"""Datasets registered by name; a folder, a .csv table or a .txt corpus given as the dataset name works too.

Every loader returns a `Dataset` of in-memory NumPy arrays with train/val/test splits; the tf.data
steps they share live in pipeline.py.
"""

import os
from pathlib import Path

from bigml_cli.data.base import DATASETS, Dataset, data_dir  # noqa: F401
from bigml_cli.data import images, table, text  # noqa: F401  (registers the datasets)
from bigml_cli.errors import UserError, did_you_mean


# what each registered dataset needs in the data directory (None: it ships with a package)
LOCAL_FILES = {"mnist": "mnist.npz", "fashion_mnist": "fashion-mnist/t10k-labels-idx1-ubyte.gz",
               "cifar10": "cifar-10-batches-py/test_batch", "cifar100": "cifar-100-python/test",
               "digits": None, "imdb": "aclImdb/test/pos", "tinyshakespeare": "tinyshakespeare.txt"}


def availability(name, root):
    """Whether a registered dataset is in the data directory `root`, for `bigml list datasets`."""
    if LOCAL_FILES[name] is None:
        return "ships with scikit-learn"
    return "here" if (Path(root) / LOCAL_FILES[name]).exists() else "not here: downloads on first use"


WHAT_PATHS = ("give a folder of images or .txt files (one sub-folder per class), a .csv (or .tsv) table or a .txt "
              "corpus")


def load_dataset(cfg, data_root=None):
    """Load the dataset a DataConfig names: registered name, image or text folder, or CSV file."""
    ds = _load(cfg, data_root)
    if ds.kind != "lm" and len(ds.y_test) == 0 and cfg.test_fraction > 0:  # too few to hold any out
        n = len(ds.y_train) + len(ds.y_val)
        raise UserError(f"dataset {cfg.name} has only {n} example(s), too few for a test split: "
                        f"data.test_fraction {cfg.test_fraction:g} of them rounds to none; give it at least "
                        f"{int(0.5 / cfg.test_fraction) + 1} examples (or a test/ part of its own)")
    if ds.kind != "lm" and len(ds.y_test) == 0:  # every result bigml reports is on the test split
        raise UserError(f"dataset {cfg.name} has no test split: data.test_fraction is {cfg.test_fraction} and it "
                        "has no test/ part of its own; set data.test_fraction above 0 (e.g. 0.2)")
    return ds


def _load(cfg, data_root):
    name = cfg.name
    if cfg.target and not name.lower().endswith(table.SUFFIXES):  # a column name means nothing to images or texts
        raise UserError(f"--target (data.target) names a CSV column, but dataset {name} is not a .csv table; "
                        "leave it out")
    if name in DATASETS.names():
        return DATASETS.get(name)(cfg, data_dir(data_root))
    path = Path(name).expanduser()
    if name.lower().endswith(".txt"):
        if not path.is_file():
            raise UserError(f"text file {name} does not exist; check the path")
        return text.load_corpus(path, cfg)
    if name.lower().endswith(table.SUFFIXES):
        if not path.is_file():
            raise UserError(f"CSV file {name} does not exist; check the path")
        return table.load_csv(path, cfg)
    if path.is_dir():
        return text.load_text_folder(path, cfg) if text.is_text_folder(path) else images.load_image_folder(path, cfg)
    if path.is_file():
        raise UserError(f"dataset file {name} is neither a table (.csv, .tsv) nor a corpus (.txt); {WHAT_PATHS}, "
                        "renaming the file if it holds one of these")
    if os.sep in name or path.suffix:
        raise UserError(f"dataset path {name} does not exist; {WHAT_PATHS}")
    raise UserError(
        f"unknown dataset '{name}'{did_you_mean(name, DATASETS.names())}; choose one of: "
        f"{', '.join(DATASETS.names())}; or {WHAT_PATHS}"
    )
