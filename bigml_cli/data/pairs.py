"""Sentence pairs for sequence-to-sequence models (translation): the Anki/Tatoeba `spa-eng` file, any pairs
file (`source<TAB>target` per line, .tsv or .txt), a CSV with two text columns, and a folder of parallel files
in the Multi30k/WMT layout (`train.en` + `train.de`, `val.*`, `test*.*`).

Without splits of their own, pairs are split by source sentence (seeded): a sentence with several
translations falls wholly in train, val or test, so no test source was seen in training.
"""

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from bigml_cli.data.base import DATASETS
from bigml_cli.errors import UserError

PAIR_SUFFIXES = (".tsv", ".txt")


@dataclass
class Pairs:
    """Source and target sentences of each split (object arrays of str), their token ids and the tokenizers'
    vocabularies (in `input_info`). A model's classes are the target tokens."""

    name: str
    source: dict  # split -> sentences
    target: dict
    input_info: dict
    ids: dict = field(default_factory=dict)  # split -> (source ids (n, S), target ids (n, T + 1) with ends)
    kind: str = "pairs"
    augment: str = "none"
    notes: list = field(default_factory=list)
    names: dict = field(default_factory=dict)
    read_as: list = field(default_factory=list)

    @property
    def class_names(self) -> list:
        return self.input_info["target_vocab"]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_validation(self) -> bool:
        return len(self.source["val"]) > 0

    def arrays(self, split: str) -> tuple:
        return self.source[split], self.target[split]

    def check_splits(self, cfg: Any) -> None:
        if not len(self.source["test"]):
            raise UserError(f"dataset {self.name} has no test pairs: data.test_fraction {cfg.test_fraction:g} of "
                            f"its {len(self.source['train'])} training pairs rounds to none; raise it (e.g. 0.1) or "
                            "give more pairs")


def text_lines(path: Path) -> list:
    """The lines of a UTF-8 text file, without the blank lines at its end (no sentences, nor mistakes)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; convert it to UTF-8") from None
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def read_pairs_file(path: Path, reverse: bool = False) -> tuple:
    """(sources, targets, line numbers) of a `source<TAB>target` file; extra columns are ignored."""
    sources, targets, lines = [], [], []
    for number, line in enumerate(text_lines(path), 1):
        if not line.strip():
            raise UserError(f"{path}:{number} is empty; each line must be 'source<TAB>target': remove the empty "
                            "line")
        cells = line.split("\t")
        if len(cells) < 2:
            raise UserError(f"{path}:{number} has no tab: each line must be 'source<TAB>target' (a pair of "
                            "sentences); fix or remove that line")
        source, target = cells[0].strip(), cells[1].strip()
        if not source or not target:
            raise UserError(f"{path}:{number} has an empty {'source' if not source else 'target'} side; every pair "
                            "needs both sentences: fix or remove that line")
        sources.append(source)
        targets.append(target)
        lines.append(number)
    if not sources:
        raise UserError(f"{path} holds no sentence pairs; give lines of 'source<TAB>target'")
    if reverse:
        sources, targets = targets, sources
    return sources, targets, lines


def split_by_source(sources: list, test_fraction: float, val_fraction: float, seed: int = 0) -> dict:
    """split -> row indices: `test_fraction` of the distinct source sentences (and all their pairs) held out
    for testing, then `val_fraction` of the rest for validation; a seeded permutation of the sentences."""
    unique = sorted(set(sources))
    order = np.random.default_rng(seed).permutation(len(unique))
    n_test = int(round(len(unique) * test_fraction))
    n_val = int(round((len(unique) - n_test) * val_fraction))
    if n_test + n_val >= len(unique):
        raise UserError(f"holding out data.test_fraction {test_fraction:g} and data.val_fraction {val_fraction:g} of "
                        f"{len(unique)} distinct source sentences leaves none to train on; lower them")
    which = np.zeros(len(unique), np.int8)  # 0 train, 1 val, 2 test
    which[order[:n_test]] = 2
    which[order[n_test:n_test + n_val]] = 1
    of = dict(zip(unique, which))
    place = np.array([of[s] for s in sources], np.int8)
    return {split: np.flatnonzero(place == k) for split, k in (("train", 0), ("val", 1), ("test", 2))}


def make_pairs_dataset(name: str, splits: dict, cfg: Any, names: Optional[dict] = None,
                       vocabs: Optional[tuple] = None) -> Pairs:
    """Pairs of each split (split -> (sources, targets)), their vocabularies learned from the training split (or
    `vocabs`, an earlier run's), and every split encoded."""
    from bigml_cli.tokenizers import learn_vocabulary

    source = {k: np.array(v[0], dtype=object) for k, v in splits.items()}
    target = {k: np.array(v[1], dtype=object) for k, v in splits.items()}
    tokens = pair_tokens(cfg)
    if vocabs is None:
        vocabs = (learn_vocabulary(list(source["train"]), tokens, cfg.vocab_size),
                  learn_vocabulary(list(target["train"]), tokens, cfg.vocab_size))
    info = {"kind": "pairs", "tokens": tokens, "source_vocab": list(vocabs[0]), "target_vocab": list(vocabs[1]),
            "source_length": cfg.sequence_length, "target_length": cfg.target_length or cfg.sequence_length}
    ds = Pairs(name, source, target, info, names=names or {})
    ds.ids, cut = encode_splits(ds)
    if cut:
        ds.notes.append(f"note: {cut:,} training source sentences are longer than data.sequence_length "
                        f"{cfg.sequence_length} tokens and were cut; raise it to read them whole")
    return ds


def pair_tokens(cfg: Any) -> str:
    """data.tokens for pairs: words, or subwords (a WordPiece vocabulary learned from the training split)."""
    if cfg.tokens not in ("words", "subwords"):
        raise UserError(f"data.tokens {cfg.tokens} does not apply to sentence pairs; use words or subwords")
    return cfg.tokens


def encode_splits(ds: Pairs) -> tuple:
    """(split -> (source ids, target ids with [START] and [END]), training sources cut at the maximum)."""
    from bigml_cli.tokenizers import Codec

    info = ds.input_info
    source, target = Codec(info["source_vocab"], info["tokens"]), Codec(info["target_vocab"], info["tokens"])
    ids, cut = {}, 0
    for split in ds.source:
        s, counts = batched(source, ds.source[split], info["source_length"])
        t, _ = batched(target, ds.target[split], info["target_length"] + 1, ends=True)
        ids[split] = (s, t)
        if split == "train":
            cut = int(np.sum(counts > info["source_length"]))
    return ids, cut


def batched(codec: Any, texts: Any, length: int, ends: bool = False) -> tuple:
    """codec.encode over `texts` in batches: ((n, length) int32 ids, (n,) piece counts)."""
    import tensorflow as tf

    ids, counts = [np.zeros((0, length), np.int32)], [np.zeros((0,), np.int64)]
    for i in range(0, len(texts), 4096):
        a, c = codec.encode(tf.constant([str(t) for t in texts[i:i + 4096]], tf.string), length, ends)
        ids.append(a.numpy())
        counts.append(c.numpy())
    return np.concatenate(ids), np.concatenate(counts)


def from_rows(name: str, sources: list, targets: list, cfg: Any, where: list, vocabs: Optional[tuple] = None) -> Pairs:
    """A dataset of pairs without splits of their own: split by source sentence."""
    idx = split_by_source(sources, cfg.test_fraction, cfg.val_fraction)
    splits = {k: ([sources[i] for i in v], [targets[i] for i in v]) for k, v in idx.items()}
    return make_pairs_dataset(name, splits, cfg, {k: [where[i] for i in v] for k, v in idx.items()}, vocabs)


def tiny_spa_eng(root: Path) -> None:
    folder = Path(root) / "spa-eng"
    folder.mkdir(parents=True, exist_ok=True)
    people = [("I see", "Veo"), ("You see", "Ves"), ("We see", "Vemos"), ("They see", "Ven")]
    things = [("cat", "gato"), ("dog", "perro"), ("bird", "pájaro"), ("fish", "pez"), ("horse", "caballo")]
    pairs = [(f"{p} the {t}.", f"{q} el {u}.") for p, q in people for t, u in things]
    lines = [f"{e}\t{s}\tCC-BY 2.0 (France)" for e, s in pairs * 2]  # Anki repeats sources: two each
    (folder / "spa.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def spa_eng(cfg: Any, root: Union[str, Path]) -> Pairs:
    """English-Spanish sentence pairs from Tatoeba (manythings.org/anki): English -> Spanish, or Spanish ->
    English with data.reverse=true."""
    path = Path(root) / "spa-eng" / "spa.txt"
    if not path.exists():
        archive = Path(root) / "spa-eng.zip"
        if not archive.exists():
            raise UserError(f"spa-eng is not in the data directory {root}: put spa-eng/spa.txt (or spa-eng.zip) "
                            "there, e.g. with `python ../shared/datasets/prepare.py DIR` and --data-dir DIR")
        with zipfile.ZipFile(archive) as z:
            z.extractall(root)
    sources, targets, lines = read_pairs_file(path, cfg.reverse)
    return from_rows("spa-eng", sources, targets, cfg, [f"spa.txt:{n}" for n in lines])


spa_eng.__name__ = "spa-eng"  # the name the Keras example and Anki use
DATASETS.register(spa_eng, layout="spa-eng/spa.txt", tiny_copy=tiny_spa_eng, sentence_pairs=True)


def parallel_files(folder: Path, cfg: Any, vocabs: Optional[tuple] = None) -> Pairs:
    """A Multi30k/WMT folder: train.SRC + train.TGT, val.SRC + val.TGT, test*.SRC + test*.TGT (the first test
    file in name order), line i of one translating line i of the other."""
    src, tgt = cfg.source_lang, cfg.target_lang
    if not src or not tgt:
        langs = sorted({p.suffix[1:] for p in folder.glob("train.*")})
        raise UserError(f"{folder} is a folder of parallel files: set data.source_lang and data.target_lang to the "
                        f"languages to translate between (its train files: {', '.join(langs) or 'none'})")
    splits, names = {}, {}
    for split, pattern in (("train", "train"), ("val", "val"), ("test", "test*")):
        found = sorted(folder.glob(f"{pattern}.{src}"))
        if not found:
            if split == "val":
                continue
            raise UserError(f"{folder} has no {pattern}.{src} file; a parallel folder needs train.{src}, "
                            f"train.{tgt}, test.{src} and test.{tgt} (val.* optional)")
        a = found[0]
        b = a.with_suffix(f".{tgt}")
        splits[split], names[split] = read_parallel(a, b)
    if "val" not in splits:  # held out of train by source sentence, as a single file's pairs are
        sources, targets = splits["train"]
        idx = split_by_source(sources, 0.0, cfg.val_fraction)
        splits["val"] = ([sources[i] for i in idx["val"]], [targets[i] for i in idx["val"]])
        names["val"] = [names["train"][i] for i in idx["val"]]
        splits["train"] = ([sources[i] for i in idx["train"]], [targets[i] for i in idx["train"]])
        names["train"] = [names["train"][i] for i in idx["train"]]
    return make_pairs_dataset(str(folder), splits, cfg, names, vocabs)


def read_parallel(a: Path, b: Path) -> tuple:
    """((sources, targets), names) of two line-aligned files."""
    if not b.exists():
        raise UserError(f"{a} has no parallel file {b.name} beside it; give both languages' files")
    left, right = text_lines(a), text_lines(b)
    if len(left) != len(right):
        raise UserError(f"{a} has {len(left):,} lines and {b} {len(right):,}: parallel files must translate line "
                        "by line; fix the files so that their line counts agree")
    for i, (s, t) in enumerate(zip(left, right), 1):
        if not s.strip() or not t.strip():
            raise UserError(f"line {i} of {a if not s.strip() else b} is empty; every line needs a sentence in "
                            "both files: fix or remove it in both")
    return ([s.strip() for s in left], [t.strip() for t in right]), [f"{a.name}:{i}" for i in range(1, len(left) + 1)]


def csv_pairs(path: Path, cfg: Any, vocabs: Optional[tuple] = None) -> Pairs:
    """A CSV with a source and a target text column: data.text_column and data.target, else its only two."""
    from bigml_cli.data.table import read_table

    table = read_table(path)
    header = table.header
    if cfg.text_column and cfg.target:
        columns = [cfg.text_column, cfg.target]
    elif len(header) == 2:
        columns = list(header)
    else:
        raise UserError(f"{path} has {len(header)} columns: name the source and target with data.text_column=COL "
                        f"and --target COL (its columns: {', '.join(header[:10])})")
    missing = [c for c in columns if c not in header]
    if missing:
        raise UserError(f"{path} has no column {missing[0]}; its columns: {', '.join(header[:10])}")
    a, b = header.index(columns[0]), header.index(columns[1])
    sources, targets, where = [], [], []
    for row, line in zip(table.rows, table.lines):
        s, t = (row[a].strip() if a < len(row) else ""), (row[b].strip() if b < len(row) else "")
        if not s or not t:
            raise UserError(f"{path}:{line} has an empty {columns[0] if not s else columns[1]}; every pair needs "
                            "both sentences: fix or remove that row")
        sources.append(s)
        targets.append(t)
        where.append(f"{path.name}:{line}")
    if cfg.reverse:
        sources, targets = targets, sources
    return from_rows(str(path), sources, targets, cfg, where, vocabs)


def load_pairs(cfg: Any, root: Any, vocabs: Optional[tuple] = None) -> Pairs:
    """The sentence pairs a DataConfig names: spa-eng, a pairs file, a CSV, or a folder of parallel files;
    encoded with `vocabs` (an earlier run's source and target vocabularies) when given, else with vocabularies
    learned from its training split."""
    from bigml_cli.data.base import data_dir

    name = cfg.name
    if name in DATASETS.names():
        if not getattr(DATASETS.get(name), "sentence_pairs", False):
            raise UserError(f"dataset {name} is not sentence pairs; a seq2seq model translates spa-eng, a pairs "
                            "file (FILE.tsv of 'source<TAB>target'), a CSV of two text columns, or a folder of "
                            "parallel files")
        return DATASETS.get(name)(cfg, data_dir(root))
    path = Path(name).expanduser()
    if not path.exists():
        raise UserError(f"dataset {name} does not exist; give spa-eng, a pairs file (.tsv or .txt of "
                        "'source<TAB>target' lines), a .csv of two text columns, or a folder of parallel files")
    if path.is_dir():
        return parallel_files(path, cfg, vocabs)
    if path.suffix.lower() in PAIR_SUFFIXES:
        sources, targets, lines = read_pairs_file(path, cfg.reverse)
        return from_rows(str(path), sources, targets, cfg, [f"{path.name}:{n}" for n in lines], vocabs)
    if path.suffix.lower() == ".csv":
        return csv_pairs(path, cfg, vocabs)
    raise UserError(f"{name} is not a pairs file; give a .tsv or .txt of 'source<TAB>target' lines, a .csv of two "
                    "text columns, or a folder of parallel files")
