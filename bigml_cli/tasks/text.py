"""Text classification: raw strings in (the model tokenizes them itself), class probabilities out."""

from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from bigml_cli.data.base import sub_folders
from bigml_cli.data.text import STANDARDIZE, read_texts
from bigml_cli.errors import UserError
from bigml_cli.tasks.base import Classifier, register


@register
class TextClassification(Classifier):
    kind = "text"
    serving_inputs = "raw strings"
    takes = "texts"
    input_suffixes = (".txt",)
    example_files = ".txt files"

    def model_inputs(self, info: dict) -> tuple:
        inputs = keras.Input(shape=(), dtype="string", name="text")
        ids = layers.TextVectorization(
            vocabulary=info["vocab"], standardize=STANDARDIZE, output_sequence_length=info["sequence_length"],
            split="whitespace" if info["tokens"] == "words" else "character", name="tokenize")(inputs)
        return inputs, ids  # (batch, sequence_length) int token ids; 0 pads, 1 is out-of-vocabulary

    def sample_writer(self, ds: Any) -> Callable:
        def write(x: str, stem: Path) -> Path:
            path = stem.with_suffix(".txt")
            path.write_text(str(x), encoding="utf-8")
            return path
        return write

    def read_labelled_folder(self, folder: Path, info: dict) -> tuple:
        names, inputs = sub_folders(folder), []
        x, idx = read_texts(folder, names, inputs)
        return x, [names[i] for i in idx], inputs, []

    def read_inputs(self, files: list, info: dict, from_files: bool) -> tuple:
        """The arguments themselves, or the contents of .txt files (every argument with --file)."""
        from bigml_cli.predict import expand_folders

        files, _ = expand_folders(files, self.input_suffixes)
        names = [f if from_files or is_text_file(f) else (f[:40] + "..." if len(f) > 40 else f) for f in files]
        texts = []
        for item in files:
            if from_files or is_text_file(item):
                if not Path(item).is_file():
                    raise UserError(f"text file {item} does not exist")
                item = Path(item).read_text(encoding="utf-8", errors="replace")
            if not item.strip():
                raise UserError("an input text is empty; give some words to classify")
            texts.append(item)
        return names, np.array(texts, dtype=object), []  # Python strings: fixed width would pad to the longest

    def input_signature(self, info: dict) -> list:
        return [tf.TensorSpec((None,), tf.string, name="text")]

    def random_inputs(self, info: dict, n: int, seed: int = 0) -> np.ndarray:
        """Strings of vocabulary words (and an unseen one), of up to twice the sequence length."""
        rng = np.random.default_rng(seed)
        words = np.array(info["vocab"] + ["unseen"])
        return np.array([" ".join(rng.choice(words, rng.integers(1, 2 * info["sequence_length"])))
                         for _ in range(n)], dtype=object).astype(str)


def is_text_file(item: str) -> bool:
    """An argument naming an existing .txt file is read, not classified as the words of its name."""
    return item.lower().endswith(".txt") and Path(item).is_file()
