"""`bigml train --init RUN`: start from an earlier run's weights wherever the layers match.

Layers are matched by name, an automatic name's counter left out (`lstm_3` is the first LSTM of its model
whatever models the process built before) and counted by order among layers of that name, then by the shapes
of all their weights. The new data's own preprocessing (normalization statistics) is kept, and the head
(`logits`) is loaded only when the classes are the same ones, so a new task gets a fresh head.
"""

import re
from typing import Any

import keras
import numpy as np

from bigml_cli.errors import UserError

KEEP_OWN = (keras.layers.Normalization,)  # statistics of the new run's own data
HEAD = "logits"


def flat_layers(model: keras.Model) -> list:
    """The layers with weights, nested models (a test-time-augmentation wrapper's inner net) opened up."""
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out += flat_layers(layer)
        elif layer.weights:
            out.append(layer)
    return out


def keyed(model: keras.Model) -> dict:
    """{(name without its counter, its place among layers of that name): layer}, in the model's order."""
    seen: dict = {}
    out = {}
    for layer in flat_layers(model):
        base = re.sub(r"_\d+$", "", layer.name)
        out[(base, seen.get(base, 0))] = layer
        seen[base] = seen.get(base, 0) + 1
    return out


def shapes(weights: list) -> list:
    return [tuple(w.shape) for w in weights]


def parameters(weights: list) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


def load_matching(model: keras.Model, source: keras.Model, same_classes: bool) -> list:
    """Copy `source`'s weights into `model` layer by layer; returns one row per layer of `model` that has
    weights: (layer, parameters, "loaded" | "new" | "skipped", why)."""
    theirs = keyed(source)
    rows = []
    for key, layer in keyed(model).items():
        count = parameters(layer.weights)
        match = theirs.get(key)
        if isinstance(layer, KEEP_OWN):
            rows.append((layer.name, count, "new", "preprocessing: this run's own data"))
        elif key[0] == HEAD and not same_classes:
            rows.append((layer.name, count, "new", "the head: other classes"))
        elif match is None:
            rows.append((layer.name, count, "new", "not in the source"))
        elif shapes(values := match.get_weights()) != shapes(layer.weights):
            rows.append((layer.name, count, "skipped", f"shapes {shapes(values)} there"))
        else:
            layer.set_weights(values)
            rows.append((layer.name, count, "loaded", match.name))
    return rows


SIZES = ("dim", "heads", "num_layers", "mlp_dim")  # the model.* values that shape a backbone's weights


class RunSource:
    """An earlier bigml run that `--init` starts from."""

    def __init__(self, run: Any, model: str):
        self.run, self.new_model = run, model

    def input_info(self) -> dict:
        return self.run.info.input

    def model_sizes(self) -> dict:
        """A pre-training run of another family (transformer_mlm for transformer, gpt for gpt_classifier) sets the
        new model's sizes, as a preset does; a run of the same family leaves the new run's own."""
        from bigml_cli.models import MODELS

        if self.run.info.model == self.new_model:
            return {}
        theirs, takes = self.run.config.model, MODELS.params(self.new_model, skip=2)
        return {k: theirs[k] for k in SIZES if k in theirs and k in takes}

    def model(self) -> keras.Model:
        from bigml_cli.evaluate import load_model

        return load_model(self.run)

    def same_classes(self, class_names: list) -> bool:
        return self.run.info.class_names == class_names


def open_source(path: str, task: Any, model: str) -> Any:
    """What `--init` names: an earlier run (refused when its data is of another kind than this run's), or a
    keras-hub preset / Hugging Face folder (a BERT encoder, for tasks that take one, with the `bert` model)."""
    from bigml_cli import hub, runs

    if hub.is_preset(path):
        if not task.takes_encoders or model != "bert":
            raise UserError(f"--init {path} is a pretrained text encoder; it initializes `bigml train bert` on text "
                            f"data (this run: model {model}, {task.kind} data)")
        return hub.PresetSource(path)
    run = runs.open_run(path)
    theirs = run.info.input["kind"]
    if theirs != task.kind and theirs not in task.starts_from:
        raise UserError(f"--init {path} is a model of {theirs} data, and this run's data is {task.kind}; start from a "
                        f"run trained on {task.kind} data")
    return RunSource(run, model)


def check_loaded(rows: list, path: str) -> None:
    if not any(status == "loaded" for _, _, status, _ in rows):
        raise UserError(f"--init {path} shares no layer with the new model (no layer of the same name and shapes); "
                        "start from a run of the same model family and sizes")


def lora_targets(layer: Any) -> list:
    """The layers LoRA adapts in `layer`: itself when it can take a low-rank update (Dense, EinsumDense,
    Embedding, convolution) and trainable, else those among its sub-layers (a transformer block's attention projections
    and feed-forward layers)."""
    if hasattr(layer, "enable_lora"):
        return [layer] if layer.trainable else []
    return [sub for sub in layer._flatten_layers(include_self=False)
            if hasattr(sub, "enable_lora") and sub.weights and sub.trainable]  # not bert's unused pooler


def enable_lora(model: keras.Model, rank: int) -> tuple:
    """LoRA (train.lora_rank): every Dense, EinsumDense, Embedding and convolution but the head, top-level or
    inside a block, learns a rank `rank` update beside its frozen kernel; every other weight is frozen but the
    head's. Returns (weights that train, all weights), counted in parameters."""
    layers = flat_layers(model)
    adapted = [target for layer in layers if layer.name != HEAD for target in lora_targets(layer)]
    if not adapted:
        raise UserError(f"train.lora_rank={rank} adapts Dense, Embedding and convolution layers, and this model has "
                        "none besides its head; set train.lora_rank=0")
    for layer in adapted:
        layer.enable_lora(rank)
    head = [id(w) for layer in layers if layer.name == HEAD for w in layer.weights]
    for weight in model.trainable_weights:
        if "lora" not in weight.path and id(weight) not in head:
            weight.trainable = False  # kernels, biases, norms: only the low-rank updates and the head learn
    return parameters(model.trainable_weights), parameters(model.weights)


def merge_lora(model: keras.Model) -> keras.Model:
    """The same model without LoRA: each adapted layer's kernel with its low-rank update added (Keras' own
    save_own_variables merges them), so a saved model and every export load with nothing extra."""
    everything = model._flatten_layers(include_self=False)
    if not any(getattr(layer, "lora_enabled", False) for layer in everything):
        return model
    plain = type(model).from_config(without_lora(model.get_config()))
    mine = plain._flatten_layers(include_self=False)
    for theirs, own in zip(everything, mine):  # layer by layer, each its own variables (sub-layers hold theirs)
        store: dict = {}
        theirs.save_own_variables(store)
        own.load_own_variables(store)
    return plain


def without_lora(config: Any) -> Any:
    """A model config with every layer's lora_rank and lora_alpha left out."""
    if isinstance(config, dict):
        return {k: without_lora(v) for k, v in config.items() if k not in ("lora_rank", "lora_alpha")}
    if isinstance(config, list):
        return [without_lora(v) for v in config]
    return config
