"""MLP: the baseline for images (flattened pixels) and tables."""

from typing import Any

from keras import layers

from bigml_cli.models.base import MODELS, classifier_head, require


@MODELS.register
def mlp(x: Any, num_classes: int, hidden_units: tuple = (512, 512), dropout: float = 0.2, activation: str = "relu", batch_norm: bool = False) -> Any:
    """Multi-layer perceptron: Dense -> [BatchNorm] -> activation -> Dropout, per hidden layer.

    Args:
        hidden_units: width of each hidden layer.
        dropout: dropout rate after every hidden layer and before the output.
        activation: Keras activation name.
        batch_norm: add BatchNormalization after each Dense.
    """
    require(x, "mlp", "image or table", "'rnn' or 'transformer' for text")
    if len(x.shape) > 2:
        x = layers.Flatten()(x)  # (batch, height * width * channels)
    for units in hidden_units:
        x = layers.Dense(units, use_bias=not batch_norm)(x)
        if batch_norm:
            x = layers.BatchNormalization()(x)
        x = layers.Activation(activation)(x)
        if dropout:
            x = layers.Dropout(dropout)(x)
    return classifier_head(x, num_classes)
