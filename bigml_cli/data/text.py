"""Text classification datasets: IMDB reviews (official aclImdb/ layout) and folders of .txt files.

The vocabulary is built from the training split only and travels in `input_info`, so the model's
own TextVectorization layer turns raw strings into token ids (predict and export take raw text).
"""

import tarfile
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from bigml_cli.data.base import DATASETS, Corpus, Dataset, class_folders, files_in, names_by_split, split, sub_folders
from bigml_cli.data.download import fetch
from bigml_cli.errors import UserError

STANDARDIZE = "lower_and_strip_punctuation"


def read_texts(folder: Union[str, Path], classes: list, files: Optional[list] = None) -> tuple:
    """(texts, labels) from folder/<class>/*.txt; the path of each is appended to `files` when given."""
    texts, labels = [], []
    for label, name in enumerate(classes):
        for f in files_in(folder / name, (".txt",)):
            try:
                texts.append(f.read_text(encoding="utf-8", errors="replace").replace("<br />", " "))
            except OSError as e:
                raise UserError(f"{f} could not be read ({e.strerror}); check the file") from None
            labels.append(label)
            if files is not None:
                files.append(str(f))
    return np.array(texts, dtype=object), np.array(labels, np.int64)  # not <U: padded to the longest


STRIP = r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']'  # Keras' punctuation for lower_and_strip_punctuation


def standardize(texts: Any) -> list:
    """Texts lowercased and stripped of punctuation, as TextVectorization's STANDARDIZE reads them."""
    import tensorflow as tf

    out = tf.strings.regex_replace(tf.strings.lower(tf.constant(list(texts), tf.string)), STRIP, "")
    return [t.decode("utf-8", errors="replace") for t in out.numpy()]


def build_vocabulary(texts: list, cfg: Any) -> list:
    """The `cfg.vocab_size` most frequent tokens of the training texts (TextVectorization's adapt)."""
    import tensorflow as tf
    from keras import layers

    if not len(texts) or not any(t.strip() for t in texts):
        raise UserError("the training texts are empty; give files with text in them")
    vectorizer = layers.TextVectorization(max_tokens=cfg.vocab_size, standardize=STANDARDIZE,
                                          split="whitespace" if cfg.tokens == "words" else "character")
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(texts).batch(1024))
    return vectorizer.get_vocabulary()[2:]  # without the padding and out-of-vocabulary entries


def make_text_dataset(name: str, classes: list, x_train: Any, y_train: Any, x_test: Any, y_test: Any, cfg: Any) -> Dataset:
    x_tr, y_tr, x_val, y_val = split(x_train, y_train, cfg.val_fraction, seed=0)
    vocab = [] if cfg.tokens == "wordpiece" else build_vocabulary(x_tr, cfg)  # wordpiece: --init's own
    info = {"kind": "text", "vocab": vocab, "sequence_length": cfg.sequence_length,
            "tokens": cfg.tokens}
    return Dataset(name, "text", list(classes), x_tr, y_tr, x_val, y_val, x_test, y_test, augment="none",
                   input_info=info)


def tiny_imdb(root: Path) -> None:
    """A few reviews in aclImdb/{train,test}/{pos,neg}/*.txt."""
    words = {"pos": "a great film, wonderful and moving", "neg": "a dull film, boring and too long"}
    for part in ("train", "test"):
        for label, text in words.items():
            folder = root / "aclImdb" / part / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(6):
                (folder / f"{i}_{7 if label == 'pos' else 2}.txt").write_text(f"{text} {i}<br />the end")


@DATASETS.register(layout="aclImdb/test/pos", tiny_copy=tiny_imdb)
def imdb(cfg: Any, root: Union[str, Path]) -> Dataset:
    """IMDB movie reviews, positive or negative: 25,000 train / 25,000 test (official aclImdb/)."""
    folder = root / "aclImdb"
    if not (folder / "test" / "pos").is_dir():
        archive = fetch("https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz", root / "aclImdb_v1.tar.gz",
                        "7c2ac02c03563afcf9b574c7e56c153a", "md5", "aclImdb/",
                        f"put the official aclImdb/ folder ({{train,test}}/{{pos,neg}}/*.txt) in {root}")
        with tarfile.open(archive) as t:
            t.extractall(root, filter="data")
        archive.unlink()
    classes = ["neg", "pos"]
    x_train, y_train = read_texts(folder / "train", classes)
    x_test, y_test = read_texts(folder / "test", classes)
    if len(x_train) == 0 or len(x_test) == 0:
        raise UserError(f"{folder} has no reviews in train/ or test/; copy the official aclImdb/ again")
    return make_text_dataset("imdb", classes, x_train, y_train, x_test, y_test, cfg)


def is_text_folder(path: Path) -> bool:
    """Whether a class folder holds texts: more .txt files than images (a stray notes.txt beside the photos
    does not make it a text dataset)."""
    from bigml_cli.data.images import IMAGE_SUFFIXES

    root = path / "train" if (path / "train").is_dir() else path
    if not root.is_dir():
        return False
    found = [f for c in sub_folders(root) for f in files_in(root / c, IMAGE_SUFFIXES + (".txt",))]
    texts = sum(f.suffix.lower() == ".txt" for f in found)
    return texts > len(found) - texts


def load_text_folder(path: Path, cfg: Any) -> Dataset:
    """A folder with one sub-folder of .txt files per class, optionally split into train/ and test/."""
    train_dir, test_dir, classes = class_folders(path, "text")
    files, test_files = [], []
    x, y = read_texts(train_dir, classes, files)
    if test_dir:
        x_test, y_test = read_texts(test_dir, classes, test_files)
        x_train, y_train = x, y
    else:
        x_train, y_train, x_test, y_test = split(x, y, cfg.test_fraction, seed=0)
    ds = make_text_dataset(str(path), classes, x_train, y_train, x_test, y_test, cfg)
    ds.names = names_by_split(files, cfg, test_files if test_dir else None)
    return ds


# --- language modelling: a corpus split into train and validation text -------------------------------


def encode_tokens(text: str, vocab: list, tokens: Any) -> np.ndarray:
    """Token ids of `text` in a language model's vocabulary: characters it lacks are skipped, and words it
    lacks read as <unk>."""
    index = {t: i for i, t in enumerate(vocab)}
    unknown = index.get("<unk>", index.get("[UNK]"))
    ids = [index.get(t, unknown) for t in (list(text) if tokens == "characters" else text.split())]
    return np.array([i for i in ids if i is not None], np.int32)


def lm_eval_starts(tokens: Any, length: int) -> np.ndarray:
    """Starts of the non-overlapping windows over `tokens` tokens, as held-out text is scored."""
    return np.arange(0, tokens - length, length, dtype=np.int64)


def make_lm_dataset(name: str, text: str, cfg: Any, vocab: Optional[list] = None) -> Corpus:
    """Token ids of a corpus: the first 90% (by default) trains, the rest validates.

    Windows of `sequence_length + 1` tokens start at every training position, and at non-overlapping places
    in the validation text (see `Corpus`).
    """
    if cfg.tokens == "wordpiece":
        raise UserError("data.tokens=wordpiece reads texts to classify with a pretrained encoder's tokenizer; a "
                        "language model reads words or characters")
    if not cfg.val_fraction:
        raise UserError("data.val_fraction is 0, but a language model is measured on held-out text (the end of "
                        "the corpus); set it above 0 (e.g. 0.1)")
    cut = int(len(text) * (1 - cfg.val_fraction))
    train_text, val_text = text[:cut], text[cut:]
    if vocab is not None:  # an earlier run's (--init), so that its token ids mean the same here
        vocab = list(vocab)
    elif cfg.tokens == "characters":
        vocab = sorted(set(train_text))
    else:
        words = train_text.split()
        names, counts = np.unique(words, return_counts=True)
        vocab = ["<unk>"] + [str(w) for w in names[np.argsort(-counts, kind="stable")][:cfg.vocab_size - 1]]
    train_ids, val_ids = encode_tokens(train_text, vocab, cfg.tokens), encode_tokens(val_text, vocab, cfg.tokens)
    block = cfg.sequence_length
    if len(train_ids) < block + 2 or len(val_ids) < block + 1:
        raise UserError(f"corpus {name} is too short for data.sequence_length={block}: it has {len(train_ids)} "
                        f"training and {len(val_ids)} validation tokens; give more text or a shorter sequence_length")
    train_starts = np.arange(len(train_ids) - block, dtype=np.int64)
    val_starts = lm_eval_starts(len(val_ids), block)
    info = {"kind": "lm", "vocab": vocab, "sequence_length": block, "tokens": cfg.tokens}
    return Corpus(name, vocab, train_ids, train_starts, val_ids, val_starts, input_info=info, text=text)


def tiny_tinyshakespeare(root: Path) -> None:
    """A short play in tinyshakespeare.txt."""
    (root / "tinyshakespeare.txt").write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n\n" * 200)


@DATASETS.register(layout="tinyshakespeare.txt", tiny_copy=tiny_tinyshakespeare)
def tinyshakespeare(cfg: Any, root: Union[str, Path]) -> Corpus:
    """Tiny Shakespeare (char-rnn's 1.1M-character corpus), for language models (data.tokens=characters)."""
    path = root / "tinyshakespeare.txt"
    if not path.exists():
        fetch("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt", path,
              "6fb458f1232090904fb40fe944165e91", "md5", "tinyshakespeare.txt",
              f"put tinyshakespeare.txt in {root} or pass --data-dir")
    return load_corpus(path, cfg, name="tinyshakespeare")


def load_corpus(path: Union[str, Path], cfg: Any, name: Optional[str] = None) -> Corpus:
    """A plain-text file as a language-modelling corpus."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; convert it to UTF-8") from None
    if not text.strip():
        raise UserError(f"corpus {path} is empty; give a text file with some text in it")
    return make_lm_dataset(name or str(path), text, cfg)
