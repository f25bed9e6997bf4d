"""Datasets registered by name; a folder, a .csv table or a .txt corpus given as the dataset name works too.

Every loader returns a `Dataset` of in-memory NumPy arrays with train/val/test splits; the tf.data
steps they share live in pipeline.py.
"""

import os
from pathlib import Path
from typing import Any, Optional, Union

from bigml_cli.data.base import DATASETS, Corpus, Dataset, data_dir  # noqa: F401
from bigml_cli.data import images, table, text  # noqa: F401
from bigml_cli.errors import UserError, did_you_mean
from bigml_cli.registry import import_all


def availability(name: str, root: Union[str, Path]) -> str:
    """Whether a registered dataset is in the data directory `root`, for `bigml list datasets`: its entry's
    `layout` is the file that shows it is there (None: it ships with a package)."""
    layout = getattr(DATASETS.get(name), "layout", None)
    if layout is None:
        return f"ships with {getattr(DATASETS.get(name), 'ships_with', 'a package')}"
    return "here" if (Path(root) / layout).exists() else "not here: downloads on first use"


WHAT_PATHS = ("give a folder of images or .txt files (one sub-folder per class), a .csv (or .tsv) table or a .txt "
              "corpus")


def load_dataset(cfg: Any, data_root: Optional[Union[str, Path]] = None) -> Union[Dataset, Corpus]:
    """Load the dataset a DataConfig names: registered name, image or text folder, or CSV file."""
    ds = _load(cfg, data_root)
    ds.check_splits(cfg)
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


# every dataset file registers its datasets: a new one needs no edit here; the shared steps are not dataset
# files (and tf.data's pipeline would load TensorFlow for `bigml list datasets`)
import_all(__name__, __path__, exclude=("base", "download", "pipeline", "samples"))
