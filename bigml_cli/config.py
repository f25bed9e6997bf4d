"""Config: dataclasses read once at the edge. load(model, dataset, recipe, overrides) -> Config.

A recipe is YAML with three sections, `model` (name + builder parameters), `data` and `train`.
Command-line overrides are dotted (`train.epochs=3 model.dropout=0.2`), parsed as YAML values,
and checked as strictly as the recipe: unknown keys and wrong types are user errors.
"""

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from bigml_cli.errors import UserError, did_you_mean, unknown

RECIPES_DIR = Path(__file__).parent / "recipes"


@dataclass
class DataConfig:
    name: str = ""  # a registered dataset, an image folder, or a .csv file
    target: str = ""  # CSV tables: the column to predict
    text_column: str = ""  # CSV tables: a column of text that text models read ("": one is detected, if any)
    val_fraction: float = 0.1  # of train, held out for model selection
    test_fraction: float = 0.2  # for datasets that ship no test split
    augment: str = "auto"  # auto (the dataset's choice) | none | crop_flip | crop_altflip | shift
    crop_padding: int = 4  # crop_flip and shift: pixels of padding before the random crop
    cutout: int = 0  # images: side of a mean-colour square at a random place in each training image (0: none)
    image_size: list = field(default_factory=list)  # image folders: [height, width]; [] = the most common size, scaled to fit 256
    vocab_size: int = 20000  # text: most frequent tokens of the training split (plus padding and unknown)
    sequence_length: int = 256  # text: tokens per example (longer texts are cut, shorter padded)
    tokens: str = "words"  # text: words | characters | wordpiece (the tokenizer of the --init preset) | subwords
    # (sentence pairs: a WordPiece vocabulary of about vocab_size pieces learned from the training split)
    target_length: int = 0  # sentence pairs: target tokens (0: sequence_length, which counts the source's)
    reverse: bool = False  # sentence pairs: translate the second column into the first
    source_lang: str = ""  # a folder of parallel files: the source's suffix (train.en -> en)
    target_lang: str = ""  # ... and the target's


@dataclass
class TrainConfig:
    epochs: int = 10
    steps_per_epoch: int = 0  # 0: one pass over the training examples (language models: tokens)
    batch_size: int = 128  # global: split across replicas
    seed: int = 0
    optimizer: str = "adamw"  # adamw | sgd (momentum, optionally Nesterov) | muon (sgd, but convolution
    # kernels take Muon's orthogonalized steps at muon_learning_rate: airbench94_muon)
    learning_rate: float = 1e-3  # peak, reached after warmup
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4  # decoupled
    warmup_epochs: float = 1.0
    schedule: str = "cosine"  # cosine | linear | constant | rsqrt (after warmup; rsqrt: the inverse square root
    # of the step, as in "Attention Is All You Need")
    lr_start: float = 0.0  # learning rate at step 0, as a fraction of learning_rate (warmup rises from it)
    lr_end: float = 0.0  # cosine and linear: the fraction of learning_rate the decay ends at
    muon_learning_rate: float = 0.24  # muon: the kernels' peak step, on the same schedule (airbench: 0.24)
    muon_momentum: float = 0.6  # muon: the kernels' Nesterov momentum (airbench: 0.6)
    bias_lr_scale: float = 1.0  # sgd: multiplies the learning rate of norm offsets, `beta` (airbench: 64)
    decay_biases: bool = False  # weight decay also on biases and BatchNorm offsets (airbench decays all)
    lookahead: bool = False  # airbench's lookahead EMA: from an epoch on, every few steps pull the weights
    # toward their running average, which tightens as training ends
    lookahead_start_epoch: int = 3  # the epoch the averaging starts at (airbench: 3)
    lookahead_every: int = 5  # steps between pulls (airbench: 5)
    lookahead_decay: float = 0.95  # per step: a pull keeps decay ** every x (step / total) ** 3 of the average
    whiten_bias_epochs: int = 0  # model.stem whiten: its bias trains this many epochs, then stays (airbench:
    # 3); 0: it trains throughout
    label_smoothing: float = 0.0
    class_weight: str = "none"  # none | balanced: each class's examples weigh n / (classes x its count) in the
    # loss, so a rare class counts as much as a common one
    precision: str = "float32"  # float32 | mixed_float16 | mixed_bfloat16 | auto (mixed_bfloat16 on CPUs with
    # BF16 instructions, else float32); a mixed-precision run saves its model in float32
    jit_compile: bool = True  # XLA
    deterministic: bool = False  # enable_op_determinism: bitwise-reproducible, somewhat slower
    steps_per_execution: int = 1
    test_time_flip: bool = False  # images: the saved model averages each image's and its mirror's predictions
    test_time_translate: bool = False  # images: ... and those of copies shifted 1 pixel up-left and down-right
    patience: int = 0  # early stopping: end training after this many epochs without a better validation score
    # (accuracy, then loss), keeping the best epoch's weights; 0: train every epoch
    checkpoint_every: int = 200  # steps between resumable checkpoints (also at epoch ends and on SIGTERM)
    strategy: str = "auto"  # auto | cpu | gpu | mirrored | tpu | multi-worker (see distribute.py)
    init: str = ""  # an earlier run, a keras-hub preset or a Hugging Face BERT folder to start from: its
    # weights wherever the layers match (--init)
    freeze_backbone_epochs: float = 0.0  # adamw: every weight but the head's (`logits`) stays as loaded (--init)
    # for this many epochs, then trains
    backbone_lr_scale: float = 1.0  # adamw: the backbone's learning rate is this times the head's
    lora_rank: int = 0  # LoRA: the rank of the update each Dense, Embedding and convolution learns beside its
    # frozen kernel, the head alone training fully; 0: every weight trains


CHOICES = {
    "data.augment": ("auto", "none", "crop_flip", "crop_altflip", "shift"),
    "data.tokens": ("words", "characters", "wordpiece", "subwords"),
    "train.optimizer": ("adamw", "sgd", "muon"),
    "train.class_weight": ("none", "balanced"),
    "train.schedule": ("cosine", "linear", "constant", "rsqrt"),
    "train.precision": ("float32", "mixed_float16", "mixed_bfloat16", "auto"),
    "train.strategy": ("auto", "cpu", "gpu", "mirrored", "tpu", "multi-worker"),
}
POSITIVE = ("data.vocab_size", "data.sequence_length", "train.epochs", "train.batch_size", "train.learning_rate",
            "train.steps_per_execution", "train.lookahead_every", "train.muon_learning_rate")
NON_NEGATIVE = ("data.target_length", "data.crop_padding", "data.cutout", "train.lora_rank", "train.freeze_backbone_epochs",
                "train.backbone_lr_scale", "train.steps_per_epoch", "train.weight_decay",
                "train.warmup_epochs", "train.lr_start", "train.lr_end", "train.bias_lr_scale",
                "train.lookahead_start_epoch", "train.whiten_bias_epochs", "train.patience",
                "train.checkpoint_every")
FRACTION = ("train.momentum", "train.muon_momentum", "train.lookahead_decay", "train.label_smoothing")  # from 0 to 1
SHARE = ("data.val_fraction", "data.test_fraction", "model.dropout")  # from 0 to below 1
AT_LEAST = {"data.vocab_size": (3, "the padding and unknown tokens take two places")}


@dataclass
class Config:
    model: dict  # {"name": ..., builder parameters...}
    data: DataConfig
    train: TrainConfig
    recipe: str = ""  # where it came from, for the record

    def to_dict(self) -> dict:
        return {
            "model": dict(self.model),
            "data": dataclasses.asdict(self.data),
            "train": dataclasses.asdict(self.train),
        }

    def dump(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _type_name(default):
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, str):
        return "a string"
    if isinstance(default, (list, tuple)):
        return "a list"
    return "a value"


def check_value(key: str, value: Any, default: Any) -> Any:
    """Return `value` converted to the type of `default`, or raise a UserError naming the key."""
    ok = True
    if default is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        if isinstance(value, str):  # YAML reads 1e-12 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, (list, tuple)):  # widths, filters, hidden_units, image_size: positive integers
        ok = isinstance(value, (list, tuple))
        value = list(value) if ok else value
        if ok and not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
            raise UserError(f"{key} must be a list of positive integers, got {value!r}")
    if not ok:
        raise UserError(f"{key} must be {_type_name(default)}, got {value!r}")
    if key == "data.image_size" and len(value) not in (0, 2):
        raise UserError(f"{key} must be [height, width] (or [] for the folder's most common size), got {value!r}")
    if key == "train.seed" and not 0 <= value < 2 ** 32:
        raise UserError(f"{key} must be from 0 to 2**32 - 1, got {value!r}")
    if key in CHOICES and value not in CHOICES[key]:
        raise unknown(f"value for {key}", value, CHOICES[key])
    if key in AT_LEAST and value < AT_LEAST[key][0]:
        raise UserError(f"{key} must be at least {AT_LEAST[key][0]} ({AT_LEAST[key][1]}), got {value!r}")
    model_count = key.startswith("model.") and isinstance(default, int) and not isinstance(default, bool)
    if (key in POSITIVE or model_count) and value <= 0:  # model counts: widths, heads, layers, units
        raise UserError(f"{key} must be positive, got {value!r}")
    if key in NON_NEGATIVE and value < 0:
        raise UserError(f"{key} must be 0 or more, got {value!r}")
    if key in FRACTION and not 0 <= value <= 1:
        raise UserError(f"{key} must be from 0 to 1, got {value!r}")
    if key in SHARE and not 0 <= value < 1:
        raise UserError(f"{key} must be from 0 to below 1, got {value!r}")
    return value


# names other tools use (nanoGPT, Keras, timm, Hugging Face) for keys bigml spells differently
ALIASES = {"lr": "learning_rate", "bs": "batch_size", "batch": "batch_size", "wd": "weight_decay",
           "max_epochs": "epochs", "num_epochs": "epochs", "n_layer": "num_layers", "n_layers": "num_layers",
           "layers": "num_layers", "n_head": "heads", "num_heads": "heads", "n_embd": "dim", "d_model": "dim",
           "embed_dim": "dim", "hidden_size": "dim", "block_size": "sequence_length", "seq_len": "sequence_length",
           "max_len": "sequence_length", "context_length": "sequence_length", "validation_split": "val_fraction",
           "val_split": "val_fraction", "max_tokens": "vocab_size", "warmup": "warmup_epochs",
           "mixed_precision": "precision", "xla": "jit_compile", "augmentation": "augment",
           "early_stopping": "patience", "early_stop": "patience", "early_stopping_patience": "patience",
           "class_weights": "class_weight"}


def locate(key: str, sections: list) -> Optional[str]:
    """(section, key) where `key`, or our name for it (lr: learning_rate), is one of `sections`' keys, the
    first section first; else None."""
    for name in (key, ALIASES.get(key)):
        for section, keys in sections.items():
            if name in keys:
                return section, name
    return None


def key_hint(section: str, key: str, sections: list) -> str:
    """' (did you mean ...?)' for an unknown key: the same name in another section, a name other tools
    use for one of ours (lr: learning_rate), else the closest spelling in its own section."""
    found = locate(key, {section: sections[section], **sections})
    if found:
        other, name = found
        return f" (did you mean '{other}.{name}'?" + (f" {name} belongs to the {other} section)" if other != section
                                                      else ")")
    close = difflib.get_close_matches(key, list(sections[section]), n=1, cutoff=0.5)
    return f" (did you mean '{section}.{close[0]}'?)" if close else ""


def _apply(section_name, target: dict, values: dict, sections: dict):
    defaults = sections[section_name]
    for key, value in values.items():
        if key not in defaults:
            raise UserError(
                f"unknown recipe key '{section_name}.{key}'{key_hint(section_name, key, sections)}; "
                f"{section_name} takes: {', '.join(defaults)}"
            )
        target[key] = check_value(f"{section_name}.{key}", value, defaults[key])


def recipe_names() -> list:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def find_recipe(recipe: str, model: Any, dataset: Any) -> Optional[Path]:
    """The recipe file: `recipe` as a path, a run directory (its config.yaml: train again with a run's
    settings) or a recipe name; else MODEL_DATASET if shipped; else None."""
    if recipe:
        path = Path(recipe)
        if path.is_file():
            return path
        if (path / "config.yaml").is_file():
            return path / "config.yaml"
        shipped = RECIPES_DIR / f"{path.stem}.yaml"
        if os.sep not in recipe and shipped.is_file():
            return shipped
        raise UserError(
            f"recipe '{recipe}' is neither a file, a run directory nor a shipped recipe"
            f"{did_you_mean(recipe, recipe_names())}; "
            "see `bigml list recipes`"
        )
    if dataset:
        shipped = RECIPES_DIR / f"{model}_{dataset}.yaml"
        if os.sep not in dataset and shipped.is_file():
            return shipped
    return None


class _StrictLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise UserError(f"recipe key '{key}' is given twice (line {key_node.start_mark.line + 1}); "
                                "keep one")
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_recipe(path: Union[str, Path]) -> dict:
    try:
        data = yaml.load(Path(path).read_text(), Loader=_StrictLoader)
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise UserError(f"recipe {path} is not valid YAML{where}; fix the syntax") from None
    data = data or {}
    if not isinstance(data, dict):
        raise UserError(f"recipe {path} must be a mapping with sections model, data, train")
    for section in data:
        if section not in ("model", "data", "train"):
            raise UserError(
                f"unknown recipe section '{section}'{did_you_mean(section, ('model', 'data', 'train'))} "
                f"in {path}; sections are: model, data, train"
            )
        if not isinstance(data[section] or {}, dict):
            raise UserError(f"recipe section '{section}' in {path} must be a mapping of keys to values")
    return data


def section_hint(key: str, value: Any) -> str:
    """'; did you mean train.epochs=5?' for a bare key of the data or train section (yolo-style epochs=5)."""
    from dataclasses import fields

    found = locate(key, {"data": [f.name for f in fields(DataConfig)],  # --lr 0.1: train.learning_rate=0.1
                         "train": [f.name for f in fields(TrainConfig)]})
    return f"; did you mean {found[0]}.{found[1]}={value}?" if found else ""


def parse_overrides(overrides: list) -> dict:
    """['train.epochs=3', ...] -> {'train': {'epochs': 3}, ...} (values parsed as YAML)."""
    parsed = {}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise UserError(f"override '{item}' must look like SECTION.KEY=VALUE, e.g. train.epochs=3"
                            f"{section_hint(key, raw) if sep and not dot else ''}")
        if section not in ("model", "data", "train"):
            raise UserError(
                f"unknown recipe section '{section}'{did_you_mean(section, ('model', 'data', 'train'))} "
                f"in override '{item}'; sections are: model, data, train"
            )
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        if name in parsed.get(section, {}):  # the last would win without a word
            first = next(o for o in overrides if o.partition("=")[0] == key)
            raise UserError(f"{key} is given twice ({first} and {item}); keep the one you mean (a flag such as "
                            "--precision or --target sets its key too)")
        parsed.setdefault(section, {})[name] = value
    return parsed


def load(model: Any, dataset: Any = None, recipe: Optional[str] = None, overrides: tuple = ()) -> Config:
    """Resolve the config for `bigml train MODEL --dataset DATASET [--recipe R] [KEY=VALUE...]`."""
    from bigml_cli.models import MODELS  # the model registry defines what model.* may hold

    path = find_recipe(recipe, model, dataset)
    raw = read_recipe(path) if path else {}
    recipe_model = (raw.get("model") or {}).get("name", model)
    if model and recipe_model != model:
        raise UserError(f"recipe {path} is for model '{recipe_model}', not '{model}'; drop --recipe or the model")
    model = model or recipe_model
    if not model:
        raise UserError(f"recipe {path} does not name its model (model.name); give the model as the first argument")
    MODELS.get(model)

    model_defaults = MODELS.params(model, skip=2)
    model_cfg = {"name": model, **{k: list(v) if isinstance(v, tuple) else v for k, v in model_defaults.items()}}
    data_cfg = dataclasses.asdict(DataConfig())
    train_cfg = dataclasses.asdict(TrainConfig())
    sections = {"model": model_defaults, "data": dict(data_cfg), "train": dict(train_cfg)}

    for source in (raw, parse_overrides(overrides)):
        model_values = {k: v for k, v in (source.get("model") or {}).items() if k != "name"}
        if "name" in (source.get("model") or {}) and source is not raw:
            raise UserError("model.name cannot be overridden; give the model as the first argument")
        _apply("model", model_cfg, model_values, sections)
        _apply("data", data_cfg, source.get("data") or {}, sections)
        _apply("train", train_cfg, source.get("train") or {}, sections)
    if dataset:
        data_cfg["name"] = dataset
    if not data_cfg["name"]:
        raise UserError("no dataset given; pass --dataset NAME (see `bigml list datasets`)")
    return Config(model=model_cfg, data=DataConfig(**data_cfg), train=TrainConfig(**train_cfg),
                  recipe=str(path or ""))


def from_dict(d: dict) -> Config:
    """Rebuild a Config saved in a run directory (already checked when it was written)."""
    return Config(model=dict(d["model"]), data=DataConfig(**d["data"]), train=TrainConfig(**d["train"]))
