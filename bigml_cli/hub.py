"""Pretrained encoders from keras-hub: `--init` of a keras-hub preset (a local preset directory, or a handle
keras-hub resolves when online) or of a Hugging Face BERT-family folder (config.json, model.safetensors, and
vocab.txt or tokenizer.json), read through keras-hub's own converters.

A preset gives the `bert` model its sizes, its weights (matched by layer name and shape as for an earlier
run) and its WordPiece vocabulary; `WordPieceIds` puts that tokenizer inside the model, so `predict` and the
SavedModel take raw strings (the SavedModel then needs `import tensorflow_text` where it is loaded).
"""

import json
import re
import shutil
from pathlib import Path
from typing import Any, Optional

import keras
import tensorflow as tf
from keras import layers

from bigml_cli.errors import UserError

HANDLES = ("kaggle://", "hf://", "gs://", "modelscope://")
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


def is_preset(source: str) -> bool:
    """A keras-hub handle, a preset name (no path separator, not an existing path), or a directory holding a
    config.json but no run.json."""
    path = Path(source).expanduser()
    if source.startswith(HANDLES):
        return True
    if path.is_dir():
        return (path / "config.json").is_file() and not (path / "run.json").exists()
    return not path.exists() and "/" not in source and re.fullmatch(r"[A-Za-z0-9_.-]+", source) is not None


class PresetSource:
    """A keras-hub preset or Hugging Face folder that `--init` starts from (the interface of
    pretrained.RunSource: input_info, model_sizes, model, same_classes)."""

    def __init__(self, source: str):
        self.source = source
        path = Path(source).expanduser()
        self.local = path.resolve() if path.is_dir() else None
        self.preset = str(self.local) if self.local else source
        self._backbone: Optional[keras.Model] = None

    def backbone(self) -> keras.Model:
        """The preset's backbone with its pretrained weights (loaded once)."""
        if self._backbone is None:
            import keras_hub

            self._backbone = resolve(lambda: keras_hub.models.Backbone.from_preset(self.preset), self.source)
            if type(self._backbone).__name__ != "BertBackbone":
                raise UserError(f"--init {self.source} is a {type(self._backbone).__name__}; bigml fine-tunes "
                                "BERT-family encoders (BertBackbone presets and Hugging Face BERT folders)")
        return self._backbone

    def model(self) -> keras.Model:
        """What `--init` loads layers from: the backbone (a preset has no head of this run's classes)."""
        return self.backbone()

    def same_classes(self, class_names: list) -> bool:
        return False

    def model_sizes(self) -> dict:
        """The `bert` model's parameters that reproduce the preset's architecture."""
        c = self.backbone().get_config()
        return {"dim": c["hidden_dim"], "heads": c["num_heads"], "num_layers": c["num_layers"],
                "mlp_dim": c["intermediate_dim"], "max_positions": c["max_sequence_length"]}

    def input_info(self) -> dict:
        """The text input spec of the preset's tokenizer: WordPiece pieces, its vocabulary and casing."""
        vocab, lowercase = self.vocabulary()
        missing = [t for t in SPECIAL if t not in vocab]
        if missing or vocab[0] != "[PAD]":
            raise UserError(f"--init {self.source}: its vocabulary lacks {', '.join(missing) or '[PAD] at id 0'}; "
                            "bigml reads BERT WordPiece vocabularies")
        return {"kind": "text", "tokens": "wordpiece", "vocab": vocab, "lowercase": lowercase}

    def vocabulary(self) -> tuple:
        """(WordPiece vocabulary in id order, whether text is lowercased) from vocab.txt, tokenizer.json or a
        keras-hub preset's tokenizer."""
        if self.local and not keras_preset(self.local):  # a Hugging Face folder
            if (self.local / "vocab.txt").is_file():
                return (self.local / "vocab.txt").read_text(encoding="utf-8").splitlines(), hf_lowercase(self.local)
            if (self.local / "tokenizer.json").is_file():
                return hf_tokenizer_json(self.local / "tokenizer.json")
            raise UserError(f"--init {self.source} has neither vocab.txt nor tokenizer.json; a Hugging Face BERT "
                            "folder needs one of them for its tokenizer")
        import keras_hub

        tokenizer = resolve(lambda: keras_hub.models.Tokenizer.from_preset(self.preset), self.source)
        return list(tokenizer.get_vocabulary()), bool(getattr(tokenizer, "lowercase", False))


def keras_preset(folder: Path) -> bool:
    try:
        return "registered_name" in json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False


def hf_lowercase(folder: Path) -> bool:
    try:
        return bool(json.loads((folder / "tokenizer_config.json").read_text()).get("do_lower_case", True))
    except (OSError, ValueError):
        return True


def hf_tokenizer_json(path: Path) -> tuple:
    """(vocabulary, lowercase) of a Hugging Face tokenizer.json holding a WordPiece model."""
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        model = spec["model"]
        if model.get("type") != "WordPiece":
            raise UserError(f"{path} holds a {model.get('type')} tokenizer; bigml reads WordPiece (BERT) ones")
        vocab = sorted(model["vocab"].items(), key=lambda item: item[1])
        lowercase = bool((spec.get("normalizer") or {}).get("lowercase", True))
    except (OSError, ValueError, KeyError, AttributeError) as e:
        raise UserError(f"{path} could not be read as a tokenizer ({e}); check the file") from None
    if [i for _, i in vocab] != list(range(len(vocab))):
        raise UserError(f"{path}: the WordPiece ids are not 0..{len(vocab) - 1}; check the file")
    return [token for token, _ in vocab], lowercase


def resolve(load: Any, source: str) -> Any:
    """keras-hub's loading, its failures turned into one line: a handle offline, a damaged folder."""
    try:
        return load()
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - keras-hub raises many kinds (network, format, file)
        if Path(source).expanduser().is_dir():
            raise UserError(f"--init {source} could not be read as a keras-hub preset or Hugging Face BERT folder "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); check its files") from None
        where = "" if source.startswith(HANDLES) else " (no run or folder of that name is here either)"
        raise UserError(f"--init {source}: this preset could not be resolved ({type(e).__name__}){where}; a preset "
                        "name or handle needs internet access, or give a local preset directory") from None


@keras.saving.register_keras_serializable(package="bigml")
class WordPieceIds(layers.Layer):
    """Raw strings -> (batch, sequence_length) int32 ids: BERT's WordPiece pieces between [CLS] and [SEP],
    padded with [PAD] (id 0). A text with more pieces than fit keeps its first quarter of the budget and
    its end (head+tail truncation: a review's verdict is often in its last sentences)."""

    def __init__(self, vocabulary, lowercase, sequence_length, **kwargs):
        super().__init__(**kwargs)
        import keras_hub

        self.vocabulary, self.lowercase, self.sequence_length = list(vocabulary), lowercase, sequence_length
        self.pieces = keras_hub.tokenizers.WordPieceTokenizer(
            vocabulary=self.vocabulary, lowercase=lowercase, strip_accents=lowercase, dtype="int32", name="wordpiece")
        self.cls, self.sep = self.vocabulary.index("[CLS]"), self.vocabulary.index("[SEP]")

    def build(self, input_shape: Any) -> None:
        self.pieces.build(input_shape)
        self.built = True

    def call(self, texts: Any) -> Any:
        if tf.executing_eagerly():  # keras-hub hands eager results back as Python lists; traced, as tensors
            return tf.function(self.ids)(texts)
        return self.ids(texts)

    def ids(self, texts: Any) -> Any:
        pieces = self.pieces(tf.strings.regex_replace(texts, r"<br\s*/?>", " "))  # ragged (batch, pieces)
        budget = self.sequence_length - 2
        head = budget // 4
        n = pieces.row_lengths()[:, None]  # (batch, 1)
        position = tf.ragged.range(pieces.row_lengths())
        keep = (n <= budget) | (position < head) | (position >= n - (budget - head))
        kept = tf.ragged.boolean_mask(pieces, keep)
        batch = tf.shape(n)[:1]
        ends = [tf.fill(tf.concat([batch, [1]], 0), tf.constant(i, tf.int32)) for i in (self.cls, self.sep)]
        ids = tf.concat([ends[0], tf.cast(kept, tf.int32), ends[1]], axis=1)
        return ids.to_tensor(default_value=0, shape=[None, self.sequence_length])

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return (input_shape[0], self.sequence_length)

    def compute_output_spec(self, texts: Any) -> Any:
        return keras.KerasTensor((texts.shape[0], self.sequence_length), dtype="int32")

    def vocabulary_size(self) -> int:
        return len(self.vocabulary)

    def get_config(self) -> dict:
        return {**super().get_config(), "vocabulary": self.vocabulary, "lowercase": self.lowercase,
                "sequence_length": self.sequence_length}


def tiny_preset(folder: Path, words: list, seed: int = 0) -> Path:
    """A small random BERT preset saved with keras-hub's save_to_preset (tests, and trying --init offline)."""
    import keras_hub

    vocab = list(SPECIAL) + ["[MASK]"] + sorted(set(words))
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(vocab), num_layers=2, num_heads=2, hidden_dim=16,
                                             intermediate_dim=32, max_sequence_length=64)
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocab, lowercase=True)
    if folder.exists():
        shutil.rmtree(folder)
    backbone.save_to_preset(str(folder))
    tokenizer.save_to_preset(str(folder))
    return folder

