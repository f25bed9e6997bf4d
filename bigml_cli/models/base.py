"""The model registry and the preprocessing every model starts with, so exported models take raw inputs."""

from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from bigml_cli.errors import UserError
from bigml_cli.registry import Registry

MODELS = Registry("model")


@keras.saving.register_keras_serializable(package="bigml")
class TableEncoder(layers.Layer):
    """Raw table columns -> one float vector per row.

    Numeric columns: standardized with the training mean/std, missing (NaN) filled with the mean,
    plus a was-missing flag. Categorical columns: one-hot over the training vocabulary plus one
    slot for unseen or missing values. String comparison needs `tf` (keras.ops has no strings).
    """

    def __init__(self, columns, **kwargs):
        super().__init__(**kwargs)
        self.columns = columns

    def call(self, inputs: Any) -> Any:
        parts = []
        for col in self.columns:
            value = inputs[col["key"]]  # (batch,)
            if col["type"] == "numeric":
                value = tf.cast(value, "float32")
                missing = tf.math.is_nan(value)
                filled = tf.where(missing, tf.cast(col["mean"], "float32"), value)
                parts += [(filled - col["mean"]) / col["std"], tf.cast(missing, "float32")]
            else:
                vocab = tf.constant(col["vocab"] or [""], tf.string)
                one_hot = tf.cast(tf.equal(value[:, None], vocab[None, :]), "float32")  # (batch, vocab)
                unseen = 1.0 - tf.reduce_sum(one_hot, axis=1, keepdims=True)
                parts += [one_hot, unseen]
        parts = [p if len(p.shape) == 2 else p[:, None] for p in parts]
        return tf.cast(tf.concat(parts, axis=1), self.compute_dtype)  # (batch, features)

    def compute_output_shape(self, input_shape: list) -> tuple:
        width = sum(2 if c["type"] == "numeric" else len(c["vocab"] or [""]) + 1 for c in self.columns)
        return (None, width)

    def get_config(self) -> dict:
        return {**super().get_config(), "columns": self.columns}


@keras.saving.register_keras_serializable(package="bigml")
class HorizontalFlip(layers.Layer):
    """Mirror images left-right: (batch, height, width, channels), width reversed."""

    def call(self, images: Any) -> Any:
        return keras.ops.flip(images, axis=2)


@keras.saving.register_keras_serializable(package="bigml")
class Translate(layers.Layer):
    """Shift images by (dy, dx) pixels (|dy|, |dx| <= 1), filling the edge by reflection; shape unchanged."""

    def __init__(self, dy, dx, **kwargs):
        super().__init__(**kwargs)
        self.dy, self.dx = dy, dx

    def call(self, images: Any) -> Any:
        h, w = images.shape[1], images.shape[2]
        padded = keras.ops.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="reflect")
        return padded[:, 1 - self.dy:1 - self.dy + h, 1 - self.dx:1 - self.dx + w, :]

    def get_config(self) -> dict:
        return {**super().get_config(), "dy": self.dy, "dx": self.dx}


@keras.saving.register_keras_serializable(package="bigml")
class PatchWhitening(layers.Layer):
    """airbench's first layer: a frozen `patch` x `patch` conv (valid padding) whose filters whiten the
    training set's patches: the covariance's eigenvectors scaled by 1/sqrt(eigenvalue + eps), each with
    its negative, so the next layer sees decorrelated unit-variance inputs from the first step.
    `adapt(features)` sets the filters from a sample of (normalized) training images; only the bias learns.
    (batch, H, W, C) -> (batch, H - patch + 1, W - patch + 1, 2 * directions)."""

    def __init__(self, directions=12, patch=2, eps=5e-4, **kwargs):
        super().__init__(**kwargs)
        self.directions, self.patch, self.eps = directions, patch, eps

    def build(self, input_shape: list) -> None:
        channels = input_shape[-1]
        self.directions = min(self.directions, self.patch * self.patch * channels)
        self.kernel = self.add_weight(shape=(self.patch, self.patch, channels, 2 * self.directions),
                                      initializer="glorot_uniform", trainable=False, name="kernel")
        self.bias = self.add_weight(shape=(2 * self.directions,), initializer="zeros", name="bias")

    def adapt(self, features: Any) -> None:
        x = np.asarray(features, np.float64)
        n, h, w, c = x.shape
        p = self.patch
        patches = np.stack([x[:, i:h - p + 1 + i, j:w - p + 1 + j, :] for i in range(p) for j in range(p)], axis=3)
        patches = patches.reshape(-1, p * p * c)  # (patches, p*p*c) in the kernel's (row, col, channel) order
        values, vectors = np.linalg.eigh(patches.T @ patches / len(patches))
        order = np.argsort(values)[::-1][:self.directions]  # the largest-variance directions first
        filters = vectors[:, order] / np.sqrt(values[order] + self.eps)  # (p*p*c, directions)
        filters = np.concatenate([filters, -filters], axis=1).reshape(p, p, c, 2 * self.directions)
        self.kernel.assign(filters.astype(self.kernel.dtype))

    def call(self, x: Any) -> Any:
        y = keras.ops.conv(x, keras.ops.cast(self.kernel, x.dtype), padding="valid")
        return y + keras.ops.cast(self.bias, x.dtype)

    def compute_output_shape(self, input_shape: list) -> tuple:
        b, h, w, _ = input_shape
        return (b, None if h is None else h - self.patch + 1, None if w is None else w - self.patch + 1,
                2 * self.directions)

    def get_config(self) -> dict:
        return {**super().get_config(), "directions": self.directions, "patch": self.patch, "eps": self.eps}


def inference(model: Any) -> Any:
    """The model's forward pass in inference mode, compiled into one graph (traced per input shape).

    Called eagerly, a model runs op by op from Python, several times slower (docs/speed.md).
    """
    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


def adapt_to_data(model: Any, x_train: Any, sample: int = 10000) -> None:
    """Set data-dependent layers (PatchWhitening) from the first `sample` training inputs."""
    for layer in model.layers:
        if isinstance(layer, PatchWhitening):
            features = keras.Model(model.inputs, layer.input).predict(x_train[:sample], batch_size=500, verbose=0)
            layer.adapt(features)


def whitening_biases(model: Any) -> list:
    """The biases of the model's PatchWhitening layers (for train.whiten_bias_epochs)."""
    found = [layer.bias for layer in model.layers if isinstance(layer, PatchWhitening)]
    if not found:
        raise UserError("train.whiten_bias_epochs applies to models with the whitening stem (model.stem: whiten);"
                        " set it to 0")
    return found


def with_test_time_augmentation(model: Any, flip: bool = True, translate: bool = False) -> keras.Model:
    """Test-time augmentation (airbench's levels 1 and 2): average the probabilities over each image and
    its mirror image (`flip`) and over copies shifted one pixel up-left and down-right (`translate`)."""
    inputs = keras.Input(shape=model.inputs[0].shape[1:], dtype=model.inputs[0].dtype, name="image")
    views = [inputs]
    if translate:
        views += [Translate(-1, -1, name="shift_up_left")(inputs), Translate(1, 1, name="shift_down_right")(inputs)]
    if flip:
        views += [HorizontalFlip(name=f"mirror_{i}")(v) for i, v in enumerate(views)]
    probs = layers.Average(dtype="float32", name="probabilities")([model(v) for v in views])
    return keras.Model(inputs, probs, name=f"{model.name}_tta")


@keras.saving.register_keras_serializable(package="bigml")
class TokenIds(layers.Layer):
    """Language-model input: token ids pass through unchanged; the layer records the vocabulary size (and, for
    inputs of varying length, the most tokens they hold)."""

    def __init__(self, vocab_size, max_length=None, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.max_length = vocab_size, max_length

    def call(self, ids: Any) -> Any:
        return ids

    def vocabulary_size(self) -> int:
        return self.vocab_size

    def get_config(self) -> dict:
        return {**super().get_config(), "vocab_size": self.vocab_size, "max_length": self.max_length}


def vocabulary_size(ids: Any) -> int:
    """Token-id range of the model's TextVectorization layer (the builders' embedding size)."""
    return ids._keras_history[0].vocabulary_size()


def require(x: Any, model: Any, needs: str, instead: str) -> None:
    """A user error when a model gets inputs of the wrong kind (text to a CNN, images to an RNN)."""
    if isinstance(x, dict) and "source" in x:  # sentence pairs: seq2seq's alone
        raise UserError(f"model '{model}' needs {needs} data, not sentence pairs; use seq2seq for those")
    is_ids = len(x.shape) == 2 and "int" in str(x.dtype)
    is_corpus = is_ids and isinstance(x._keras_history[0], TokenIds)
    ok = {"image": len(x.shape) == 4, "text": is_ids and not is_corpus, "corpus": is_corpus,
          "image or table": not is_ids}[needs]
    if not ok:
        raise UserError(f"model '{model}' needs {needs} data; use {instead}")


def classifier_head(x: Any, num_classes: int, dropout: float = 0.0, use_bias: bool = True, logit_scale: float = 1.0, kernel_initializer: str = "glorot_uniform") -> Any:
    """Dropout, a dense layer (its logits times `logit_scale`) and a float32 softmax (kept in float32
    under mixed precision)."""
    if dropout:
        x = layers.Dropout(dropout)(x)
    x = layers.Dense(num_classes, use_bias=use_bias, kernel_initializer=kernel_initializer, name="logits")(x)
    if logit_scale != 1.0:
        x = layers.Rescaling(logit_scale, name="logit_scale")(x)
    return layers.Activation("softmax", dtype="float32", name="probabilities")(x)


@keras.saving.register_keras_serializable(package="bigml")
class Dirac(keras.initializers.Initializer):
    """airbench's conv init: PyTorch's default scale (uniform, variance 1 / (3 fan_in)), then the first
    min(in, out) filters set to the identity, so each conv starts as an implicit residual connection.
    shape: (kernel height, kernel width, in channels, out channels)."""

    def __init__(self, seed=None):
        self.seed = seed

    def __call__(self, shape, dtype=None):
        w = keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform", seed=self.seed)(shape, dtype)
        kh, kw, cin, cout = shape
        k = min(cin, cout)
        identity = np.zeros(shape, np.float32)
        identity[kh // 2, kw // 2, np.arange(k), np.arange(k)] = 1.0
        keep = np.ones(shape, np.float32)
        keep[..., :k] = 0.0  # the first k filters are the identity alone
        return w * keep + keras.ops.cast(identity, w.dtype)

    def get_config(self) -> dict:
        return {"seed": self.seed}


def float32_policies(config: dict) -> Any:
    """A model's `config` with every mixed-precision dtype policy (mixed_bfloat16, mixed_float16) float32."""
    if isinstance(config, dict):
        name = str(config.get("config", {}).get("name")) if config.get("class_name") == "DTypePolicy" else ""
        if name.startswith("mixed_"):
            return "float32"
        return {k: float32_policies(v) for k, v in config.items()}
    if isinstance(config, list):
        return [float32_policies(v) for v in config]
    return config


def in_float32(model: Any) -> keras.Model:
    """The model itself when every layer computes in float32, else a float32 copy with the same weights (a
    mixed-precision model's weights are float32 already). A mixed-precision run saves this copy (`load_model`
    converts runs saved by older versions): bfloat16 layers run many times slower on CPUs without BF16
    instructions, and ONNX and LiteRT refuse them."""
    config = model.get_config()
    float32 = float32_policies(config)
    if float32 == config:
        return model
    copy = type(model).from_config(float32)
    copy.set_weights(model.get_weights())
    return copy
