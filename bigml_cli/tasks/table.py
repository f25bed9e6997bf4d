"""Table classification: one raw input per CSV column (numbers and categories), class probabilities out."""

from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from bigml_cli.data.table import SUFFIXES, columns_to_arrays, read_table, unseen_values_notes
from bigml_cli.errors import UserError
from bigml_cli.tasks.base import Classifier, register


@register
class TableClassification(Classifier):
    kind = "table"
    serving_inputs = "one input per table column"
    takes = "CSV rows"
    input_suffixes = SUFFIXES

    def model_inputs(self, info: dict) -> tuple:
        from bigml_cli.models.base import TableEncoder

        inputs = {c["key"]: keras.Input(shape=(), dtype="float32" if c["type"] == "numeric" else "string",
                                        name=c["key"]) for c in info["columns"]}
        return inputs, TableEncoder(info["columns"], name="encode_table")(inputs)  # (batch, features)

    def labelled(self, path: Path, run: Any) -> tuple:
        """The rows of a CSV holding the run's target column: their names are FILE:LINE, and the notes name
        the categories the model never saw."""
        if not path.is_file():
            raise UserError(f"--dataset {path} is not a file; this run's model takes a CSV table")
        target = run.config.data.target
        table = read_table(path)
        if target not in table.header:
            raise UserError(f"{path} has no column '{target}', the labels this run predicts; add it to score the rows")
        t = table.header.index(target)
        table = table.labelled(target)
        columns = run.info.input["columns"]
        x = columns_to_arrays(table, columns, path)
        return (x, [r[t].strip() for r in table.rows], [f"{path}:{line}" for line in table.lines],
                unseen_values_notes(x, columns))

    def no_labels(self, path: Path, run: Any) -> str:
        return f"{path} has no rows with a value in its '{run.config.data.target}' column to score"

    def read_inputs(self, files: list, info: dict, from_files: bool) -> tuple:
        """The rows of CSV files with a header, each named FILE:LINE."""
        from bigml_cli.predict import expand_folders, require_files

        files, _ = expand_folders(files, self.input_suffixes)
        require_files(files, from_files, self.takes)
        names, parts = [], []
        for f in files:
            if not str(f).lower().endswith(SUFFIXES):
                raise UserError(f"{f} is not a CSV file; this run's model takes table rows (.csv with a header)")
            table = read_table(f)
            parts.append(columns_to_arrays(table, info["columns"], f))
            names += [f"{f}:{line}" for line in table.lines]  # the row's line number in the file
        columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return names, columns, unseen_values_notes(columns, info["columns"])

    def input_signature(self, info: dict) -> list:
        return [{c["key"]: tf.TensorSpec((None,), tf.float32 if c["type"] == "numeric" else tf.string, name=c["key"])
                 for c in info["columns"]}]

    def random_inputs(self, info: dict, n: int, seed: int = 0) -> dict:
        """Column values around their training mean (a tenth missing) or from their categories (blank and
        unseen ones included)."""
        rng = np.random.default_rng(seed)
        columns = {}
        for col in info["columns"]:
            if col["type"] == "numeric":
                values = (col["mean"] + col["std"] * rng.normal(size=n)).astype(np.float32)
                values[rng.random(n) < 0.1] = np.nan
            else:
                values = rng.choice(np.array(col["vocab"] + ["", "unseen"], dtype=object), n).astype(str)
            columns[col["key"]] = values
        return columns
