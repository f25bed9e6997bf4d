"""Text classification: raw strings in (the model tokenizes them itself), class probabilities out."""

from pathlib import Path
from typing import Any, Callable, Optional

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from bigml_cli.data.base import sub_folders
from bigml_cli.data.table import SUFFIXES as TABLE_SUFFIXES
from bigml_cli.data.text import STANDARDIZE, read_texts
from bigml_cli.errors import UserError
from bigml_cli.tasks.base import Classifier, register


@register
class TextClassification(Classifier):
    kind = "text"
    serving_inputs = "raw strings"
    takes_encoders = True
    starts_from = ("lm", "mlm")  # a (masked) language model pre-trained on the dataset's own training texts
    takes = "texts"
    input_suffixes = (".txt",)
    example_files = ".txt files"

    def model_inputs(self, info: dict) -> tuple:
        inputs = keras.Input(shape=(), dtype="string", name="text")
        if info["tokens"] == "wordpiece":  # a pretrained encoder's own tokenizer ([CLS] ... [SEP], 0 pads)
            from bigml_cli.hub import WordPieceIds

            return inputs, WordPieceIds(info["vocab"], info["lowercase"], info["sequence_length"], name="tokenize")(inputs)
        ids = layers.TextVectorization(
            vocabulary=info["vocab"], standardize=STANDARDIZE, output_sequence_length=info["sequence_length"],
            split="whitespace" if info["tokens"] == "words" else "character", name="tokenize")(inputs)
        return inputs, ids  # (batch, sequence_length) int token ids; 0 pads, 1 is out-of-vocabulary

    def adopt_vocabulary(self, ds: Any, info: dict, cfg: Any) -> Any:
        check_tokens(info, cfg)
        extra = {"lowercase": info["lowercase"]} if info["tokens"] == "wordpiece" else {}
        vocab = list(info["vocab"])
        if info["kind"] in self.starts_from:  # ids 0 (padding) and 1 (unknown) are TextVectorization's own
            if vocab[:2] != CORPUS_SPECIALS:
                raise UserError(f"--init {cfg.train.init} is a language model of a text file, which reads tokens "
                                "otherwise than a classifier; pre-train it on the classifier's dataset: bigml train "
                                f"gpt --dataset {ds.name}")
            vocab = vocab[2:]
        ds.input_info = {**ds.input_info, "vocab": vocab, **extra}  # words it lacks read as unknown
        return ds

    def corpus(self, ds: Any, data_cfg: Any) -> Any:
        """The training split's texts alone (validation and test texts are never seen), standardized as the
        classifier's TextVectorization reads them and in its vocabulary ('' pads, '[UNK]' is unknown), so that
        a classifier started from the language model (--init) sees the same token ids."""
        from bigml_cli.data.text import build_vocabulary, make_lm_dataset, standardize

        vocab = CORPUS_SPECIALS + build_vocabulary(ds.x_train, data_cfg)
        return make_lm_dataset(ds.name, "\n".join(standardize(ds.x_train)), data_cfg, vocab=vocab)

    def check(self, ds: Any, cfg: Any) -> None:
        super().check(ds, cfg)
        if ds.input_info["tokens"] == "wordpiece" and not ds.input_info["vocab"]:
            raise UserError("data.tokens=wordpiece reads texts with a pretrained encoder's tokenizer; give --init a "
                            "keras-hub preset or a Hugging Face BERT folder, or set data.tokens=words")

    def sample_writer(self, ds: Any) -> Callable:
        def write(x: str, stem: Path) -> Path:
            path = stem.with_suffix(".txt")
            path.write_text(str(x), encoding="utf-8")
            return path
        return write

    def labelled(self, path: Path, run: Any) -> tuple:
        """A labelled folder, or, for a run trained on a CSV's text column, a CSV with that column and the
        target's (rows named FILE:LINE)."""
        if path.is_file() and path.name.lower().endswith(TABLE_SUFFIXES):
            return csv_texts(path, run.info.input, run.config.data.target)
        return super().labelled(path, run)

    def read_labelled_folder(self, folder: Path, info: dict) -> tuple:
        names, inputs = sub_folders(folder), []
        x, idx = read_texts(folder, names, inputs)
        return x, [names[i] for i in idx], inputs, []

    def read_inputs(self, files: list, info: dict, from_files: bool) -> tuple:
        """The arguments themselves, the contents of .txt files (every argument with --file), or, for a run
        trained on a CSV's text column, the rows of CSV files (named FILE:LINE)."""
        from bigml_cli.predict import expand_folders

        files, _ = expand_folders(files, self.input_suffixes + (TABLE_SUFFIXES if "column" in info else ()))
        names, texts = [], []
        for item in files:
            if "column" in info and item.lower().endswith(TABLE_SUFFIXES) and Path(item).is_file():
                rows, _, lines, _ = csv_texts(Path(item), info, None)  # a CSV like the one the run trained on
                names += lines
                texts += list(rows)
                continue
            names.append(item if from_files or is_text_file(item) else (item[:40] + "..." if len(item) > 40 else item))
            if from_files or is_text_file(item):
                if not Path(item).is_file():
                    raise UserError(f"text file {item} does not exist")
                item = Path(item).read_text(encoding="utf-8", errors="replace")
            if not item.strip():
                raise UserError("an input text is empty; give some words to classify")
            texts.append(item)
        return names, np.array(texts, dtype=object), []  # Python strings: fixed width would pad to the longest

    def serving_needs(self, info: dict) -> str:
        if info["tokens"] == "wordpiece":  # its tokenizer's ops live in TensorFlow Text
            return "pip install tensorflow-text; import tensorflow_text before tf.saved_model.load"
        return ""

    def input_signature(self, info: dict) -> list:
        return [tf.TensorSpec((None,), tf.string, name="text")]

    def random_inputs(self, info: dict, n: int, seed: int = 0) -> np.ndarray:
        """Strings of vocabulary words (and an unseen one), of up to twice the sequence length."""
        rng = np.random.default_rng(seed)
        words = np.array([w for w in info["vocab"] if w.isalpha()] + ["unseen"])  # no [CLS], ##ing
        return np.array([" ".join(rng.choice(words, rng.integers(1, 2 * info["sequence_length"])))
                         for _ in range(n)], dtype=object).astype(str)


CORPUS_SPECIALS = ["", "[UNK]"]  # TextVectorization's padding and out-of-vocabulary entries


def csv_texts(path: Path, info: dict, target: Optional[str]) -> tuple:
    """(texts, labels, FILE:LINE of each row, notes) of a CSV holding the text column a run was trained on,
    and its `target` column when given (rows without a label are left out then; labels are [] without one)."""
    from bigml_cli.data.table import read_table

    table = read_table(path)
    column = info["column"]
    for needed in (column, target):
        if needed and needed not in table.header:
            raise UserError(f"{path} has no column '{needed}', which this run reads; its columns are: "
                            f"{', '.join(table.header)}")
    if target:
        table = table.labelled(target)
    labels = [r[table.header.index(target)].strip() for r in table.rows] if target else []
    return table.texts(column), labels, [f"{path}:{line}" for line in table.lines], []


def check_tokens(info: dict, cfg: Any) -> None:
    """An earlier run's vocabulary serves only data split into the same tokens."""
    if info["tokens"] != cfg.data.tokens:
        if info["tokens"] == "wordpiece":
            raise UserError(f"--init {cfg.train.init} is a pretrained encoder with its own WordPiece tokenizer; set "
                            "data.tokens=wordpiece")
        raise UserError(f"--init starts from a model of {info['tokens']}, and this run reads {cfg.data.tokens}; "
                        f"set data.tokens={info['tokens']}")


def is_text_file(item: str) -> bool:
    """An argument naming an existing .txt file is read, not classified as the words of its name."""
    return item.lower().endswith(".txt") and Path(item).is_file()
