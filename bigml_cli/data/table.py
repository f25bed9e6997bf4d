"""CSV tables: numeric and categorical columns with missing values; one column is the class to predict."""

import csv
import re
from pathlib import Path
from typing import Any, List, NamedTuple, Optional, Union

import numpy as np

from bigml_cli.data.base import Dataset, names_by_split, split
from bigml_cli.errors import UserError, did_you_mean

SUFFIXES = (".csv", ".tsv")  # the reader sniffs commas, semicolons and tabs in either
MISSING = {"", "na", "n/a", "nan", "null", "none", "?"}
MAX_VOCAB = 100  # most frequent categories kept per column; the rest share the out-of-vocabulary slot


def is_missing(value: Any) -> bool:
    return value.strip().lower() in MISSING


def input_key(column: str) -> str:
    """A column name as a SavedModel input name: letters, digits and underscores."""
    key = re.sub(r"\W+", "_", column.strip()).strip("_") or "column"
    return key if not key[0].isdigit() else f"c_{key}"


def guess_delimiter(header_line: str) -> str:
    """',' unless the header has none and has semicolons (European spreadsheets), tabs or pipes instead."""
    if "," in header_line:
        return ","
    counts = {d: header_line.count(d) for d in ";\t|"}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


class Table(NamedTuple):
    """A CSV file's cells: `lines` holds the line each row starts on, as an editor counts them (they name
    rows in messages and predictions); `decimal_comma` the columns whose numbers had decimal commas."""
    header: List[str]
    rows: List[List[str]]
    lines: List[int]
    decimal_comma: List[str]

    def select(self, indices: List[int]) -> "Table":
        """The same table with only the rows at `indices` (e.g. those with a label), each keeping its line."""
        return self._replace(rows=[self.rows[i] for i in indices], lines=[self.lines[i] for i in indices])

    def labelled(self, column: str) -> "Table":
        """The rows with a value in `column` (the target: rows without a label cannot be learnt or scored)."""
        c = self.header.index(column)
        return self.select([i for i, r in enumerate(self.rows) if not is_missing(r[c])])

    def texts(self, column: str) -> np.ndarray:
        """The cells of a text column as Python strings, a missing one as the empty text."""
        c = self.header.index(column)
        return np.array(["" if is_missing(r[c]) else r[c] for r in self.rows], dtype=object)


DECIMAL_COMMA = re.compile(r"[+-]?(\d{1,3}(\.\d{3})+|\d+),\d+")  # 0,044  -3,5  1.234,5


def read_decimal_commas(header: list, rows: list, sep: str) -> list:
    """In a file not separated by commas (a European spreadsheet's semicolons), a column whose cells are all
    numbers once a decimal comma is a point (and thousands points are dropped) holds numbers: its cells are
    rewritten as such, in place. Returns those columns' names."""
    if sep == ",":
        return []
    found = []
    for i, name in enumerate(header):
        cells = [r[i].strip() for r in rows]
        commas = [c for c in cells if DECIMAL_COMMA.fullmatch(c)]
        if commas and column_is_numeric(c for c in cells if not DECIMAL_COMMA.fullmatch(c)):
            for r in rows:
                if DECIMAL_COMMA.fullmatch(r[i].strip()):
                    r[i] = r[i].strip().replace(".", "").replace(",", ".")
            found.append(name)
    return found


def read_table(path: Union[str, Path]) -> Table:
    """A CSV file's header and rows, blank rows left out."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            sep = guess_delimiter(f.readline())
            f.seek(0)
            reader = csv.reader(f, delimiter=sep)
            rows, lines, end = [], [], 0
            for row in reader:
                if any(cell.strip() for cell in row):
                    rows.append(row)
                    lines.append(end + 1)  # a quoted cell may span lines: the row starts after the last one
                end = reader.line_num
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path} is not a readable CSV file ({e}); save it as UTF-8 CSV with a header row") from None
    if len(rows) < 2:
        raise UserError(f"{path} has no data rows; a CSV needs a header row and at least one row of values")
    header = [h.strip() for h in rows[0]]
    for line, r in zip(lines[1:], rows[1:]):
        if len(r) != len(header):
            raise UserError(f"{path} line {line} has {len(r)} fields but the header has {len(header)}; fix that row")
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:  # one name, two columns: which one a model's input is would be a guess
        where = "; ".join(f"columns {' and '.join(str(i + 1) for i, h in enumerate(header) if h == name)} are "
                          f"both named '{name}'" for name in twice)
        raise UserError(f"{path}: {where}; give each column a name of its own in the header row")
    return Table(header, rows[1:], lines[1:], read_decimal_commas(header, rows[1:], sep))


def column_is_numeric(values: list) -> bool:
    try:
        for v in values:
            if not is_missing(v):
                float(v)
    except ValueError:
        return False
    return True


def unique_keys(names: list) -> tuple:
    """Each column's SavedModel input name (input_key), made unique with _2, _3, ... where two names give
    the same one (`price ($)` and `price (€)` are both `price`), and a note naming those, or None."""
    keys, renamed = [], []
    for name in names:
        key = base = input_key(name)
        n = 1
        while key in keys:
            n += 1
            key = f"{base}_{n}"
        if key != base:
            renamed.append(f"'{name}' is input '{key}'")
        keys.append(key)
    note = renamed and (f"note: column names that read as the same input name were made unique: "
                        f"{', '.join(renamed)} (the exported model's inputs are: {', '.join(keys)})")
    return keys, note or None


def columns_to_arrays(table: Table, columns: list, path: str = "the CSV") -> dict:
    """Raw cells -> {input key: float32 (NaN = missing) or str array}, following `columns` (input_info).
    An infinite number is refused: a model would give it a confident, meaningless answer."""
    header, rows = table.header, table.rows
    index = {h: i for i, h in enumerate(header)}
    out = {}
    for col in columns:
        if col["name"] not in index:
            raise UserError(f"{path} is missing the column '{col['name']}'{did_you_mean(col['name'], header)}; "
                            f"the model needs: {', '.join(c['name'] for c in columns)}")
        cells = [r[index[col["name"]]].strip() for r in rows]
        if col["type"] == "numeric":
            bad = next((c for c in cells if not is_missing(c) and not column_is_numeric([c])), None)
            if bad is not None:
                raise UserError(f"{path}: column '{col['name']}' holds '{bad}', but the model was trained on numbers "
                                "there; fix that cell, or leave it blank to mark it missing")
            values = np.array([np.nan if is_missing(c) else float(c) for c in cells], np.float32)
            if np.isinf(values).any():
                row = int(np.flatnonzero(np.isinf(values))[0])
                raise UserError(f"{path} line {table.lines[row]}: column '{col['name']}' holds '{cells[row]}', an "
                                "infinite number; give a finite value, or leave the cell blank to mark it missing")
            out[col["key"]] = values
        else:
            out[col["key"]] = np.array(["" if is_missing(c) else c for c in cells], dtype=object).astype(str)
    return out


def unseen_values_notes(arrays: Any, columns: list) -> list:
    """[a note naming the categories the model never saw in training] (they read as a blank cell does: a
    'Red' where training had 'red' is unseen), or [] when there are none."""
    parts = []
    for col in columns:
        if col["type"] == "numeric":
            continue
        seen = set(col["vocab"])
        new = sorted({v for v in arrays[col["key"]] if v and v not in seen})
        if new:
            known = {v.lower(): v for v in col["vocab"]}
            shown = [f"'{v}'" + (f" (training had '{known[v.lower()]}')" if v.lower() in known else "")
                     for v in new[:5]]
            parts.append(f"column '{col['name']}': {', '.join(shown)}" + (f" and {len(new) - 5} more" if len(new) > 5
                                                                           else ""))
    if not parts:
        return []
    return [f"note: values the model never saw in training read as a blank cell does; {'; '.join(parts)}"]


def check_classes(target: Any, class_names: list, rows: list) -> None:
    """bigml trains classifiers: a target of measurements (fractional numbers, or nearly one value per row)
    would silently become hundreds of one-example classes."""
    numeric = column_is_numeric(class_names)
    fractional = numeric and any(float(v) != int(float(v)) for v in class_names if np.isfinite(float(v)))
    if (fractional and len(class_names) > 20) or (len(class_names) > 100 and len(class_names) > rows // 2):
        example = ", ".join(class_names[:3])
        raise UserError(f"target column '{target}' has {len(class_names)} distinct values in {rows} rows ({example}, "
                        "...): it looks like a measurement, not a class label; bigml trains classifiers, so "
                        "give a column of class labels (or bin the values into classes)")


def load_csv(path: Union[str, Path], cfg: Any) -> Dataset:
    """A CSV table with a header row; `data.target` (--target) names the class column. A table whose feature is
    a column of text (`sentence,label`) is a text dataset: `data.text_column` names it, else it is detected."""
    table = read_table(path)
    header, rows = table.header, table.rows
    if not cfg.target:
        raise UserError(f"a CSV dataset needs the column to predict: pass --target COLUMN (one of: "
                        f"{', '.join(header)})")
    if cfg.target not in header:
        raise UserError(f"target column '{cfg.target}' is not in {path}{did_you_mean(cfg.target, header)}; "
                        f"columns are: {', '.join(header)}")
    t = header.index(cfg.target)
    table = table.labelled(cfg.target)
    rows, names = table.rows, [f"{path}:{line}" for line in table.lines]
    labels = [r[t].strip() for r in rows]
    class_names = sorted(set(labels))
    if len(class_names) < 2:
        raise UserError(f"target column '{cfg.target}' has {len(class_names)} distinct value(s); "
                        "a classifier needs at least two classes")
    check_classes(cfg.target, class_names, len(labels))
    y = np.array([class_names.index(v) for v in labels], np.int64)
    column, note = text_column(table, cfg, path)
    if column:
        return text_table_dataset(path, table, column, note, class_names, y, names, cfg)
    features = [h for i, h in enumerate(header) if i != t]
    if not features:
        raise UserError(f"{path} has no feature columns besides the target '{cfg.target}'")
    keys, renamed = unique_keys(features)
    columns = [{"name": h, "key": key,
                "type": "numeric" if column_is_numeric(r[header.index(h)] for r in rows) else "categorical"}
               for h, key in zip(features, keys)]
    x = columns_to_arrays(table, columns, path)
    x_train, y_train, x_test, y_test = split(x, y, cfg.test_fraction, seed=0)
    x_tr, y_tr, x_val, y_val = split(x_train, y_train, cfg.val_fraction, seed=0)
    example_names = names_by_split(names, cfg)
    for col in columns:  # statistics from the training rows only
        values = x_tr[col["key"]]
        if col["type"] == "numeric":
            finite = values[~np.isnan(values)]
            col["mean"] = float(finite.mean()) if finite.size else 0.0
            col["std"] = float(max(finite.std(), 1e-6)) if finite.size else 1.0
        else:
            seen, counts = np.unique(values[values != ""], return_counts=True)
            col["vocab"] = [str(n) for n in seen[np.argsort(-counts, kind="stable")][:MAX_VOCAB]]
    return Dataset(str(path), "table", class_names, x_tr, y_tr, x_val, y_val, x_test, y_test,
                   augment="none", input_info={"kind": "table", "columns": columns},
                   names=example_names, read_as=[n for n in (renamed, column_types_note(columns, table)) if n])


TEXT_WORDS = 4  # a column whose cells average this many words or more reads as text


def is_text(values: list) -> bool:
    """Cells of prose: most of them distinct, averaging TEXT_WORDS words or more."""
    cells = [v for v in values if not is_missing(v)]
    if not cells or column_is_numeric(cells):
        return False
    words = sum(len(v.split()) for v in cells) / len(cells)
    return words >= TEXT_WORDS and len(set(cells)) > len(cells) / 2


def text_column(table: Table, cfg: Any, path: Union[str, Path]) -> tuple:
    """(the column of text a text model reads, a note saying it was detected), or ("", None) for a table of
    numbers and categories. `data.text_column` (--text-column) names it; else a single column of prose is it."""
    header = table.header
    if cfg.text_column:
        if cfg.text_column not in header:
            raise UserError(f"text column '{cfg.text_column}' is not in {path}{did_you_mean(cfg.text_column, header)};"
                            f" columns are: {', '.join(header)}")
        if cfg.text_column == cfg.target:
            raise UserError(f"'{cfg.text_column}' is both the target and the text column; give the text's column "
                            "to --text-column and the labels' to --target")
        return cfg.text_column, None
    found = [h for i, h in enumerate(header) if h != cfg.target and is_text([r[i] for r in table.rows])]
    if len(found) > 1:
        raise UserError(f"{path} has several columns of text ({', '.join(found)}); pick the one to read with "
                        "--text-column COLUMN")
    if not found:
        return "", None
    return found[0], (f"note: column '{found[0]}' reads as text (a text model's input); --text-column names "
                      "another")


def text_table_dataset(path: Union[str, Path], table: Table, column: str, note: Optional[str], class_names: list,
                       y: np.ndarray, names: list, cfg: Any) -> Dataset:
    """The text of one column and the labels of a CSV, as a text dataset; the other columns are left out."""
    from bigml_cli.data.text import make_text_dataset

    x_train, y_train, x_test, y_test = split(table.texts(column), y, cfg.test_fraction, seed=0)
    ds = make_text_dataset(str(path), class_names, x_train, y_train, x_test, y_test, cfg)
    ds.input_info["column"] = column  # predict and eval read this column of a CSV
    ds.names = names_by_split(names, cfg)
    others = [h for h in table.header if h not in (column, cfg.target)]
    ds.read_as = [n for n in (note, others and f"note: text models read one column; left out: {', '.join(others)}")
                  if n]
    return ds


def column_types_note(columns: list, table: Table) -> str:
    """Which columns the model reads as numbers and which as categories (a number column with a stray word
    becomes categories: this is where a user sees it)."""
    numbers = [c["name"] + (" (decimal commas)" if c["name"] in table.decimal_comma else "")
               for c in columns if c["type"] == "numeric"]
    categories = [c["name"] for c in columns if c["type"] != "numeric"]
    return ("note: columns read as numbers: " + (", ".join(numbers) or "none")
            + "; as categories: " + (", ".join(categories) or "none"))
