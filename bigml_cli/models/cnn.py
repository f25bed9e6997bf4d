"""CNN: an airbench-style convolutional net (Keller Jordan's CIFAR-10 speedruns, David Page's ResNet-9).

Each stage is conv -> max-pool -> BN -> act -> conv -> BN -> act, halving the resolution once, so
most of the compute runs at low resolution; a global max-pool feeds the classifier.
"""

from typing import Any

import keras
from keras import layers

from bigml_cli.errors import UserError
from bigml_cli.models.base import MODELS, Dirac, PatchWhitening, classifier_head, require
from bigml_cli.models.fused import FusedBatchNorm, activation_layer

INITS = ("glorot", "dirac")


def conv_bn(x: Any, width: int, activation: str, bn_momentum: float, pool: bool = False, init: str = "glorot", bn_scale: bool = True, pool_padding: str = "same",
            bn_epsilon: float = 1e-5) -> Any:
    x = layers.Conv2D(width, 3, padding="same", use_bias=False,
                      kernel_initializer=Dirac() if init == "dirac" else "glorot_uniform")(x)
    if pool:
        x = layers.MaxPooling2D(2, padding=pool_padding)(x)
    x = FusedBatchNorm(momentum=bn_momentum, epsilon=bn_epsilon, scale=bn_scale)(x)
    return activation_layer(activation)(x)


@MODELS.register
def cnn(x: Any, num_classes: int, widths: tuple = (64, 128, 256), stem: str = "conv", stem_width: int = 32, convs_per_stage: int = 2, dropout: float = 0.0,
        activation: str = "gelu", bn_momentum: float = 0.9, bn_epsilon: float = 1e-5, bn_scale: bool = True, init: str = "glorot", stem_activation: bool = False, pool_padding: str = "same",
        logit_scale: float = 1.0, head_bias: bool = True) -> Any:
    """Convolutional classifier for images.

    Args:
        widths: channels of each stage; each stage halves height and width.
        stem: "conv" (a learned 3x3 conv, BN and activation) or "whiten" (airbench's frozen 2x2
            patch-whitening conv, set from the training images before the first step).
        stem_width: channels of the stem, at full resolution (whiten: at most 2 x 4 x channels).
        convs_per_stage: 3x3 convs per stage (the first one is followed by the max-pool).
        dropout: dropout before the classifier.
        activation: Keras activation name.
        bn_momentum: BatchNormalization moving-average momentum (lower adapts faster in short runs).
        bn_epsilon: added to the batch variance (airbench: 1e-12; weight decay shrinks the conv weights,
            and with them the variance, far below 1e-5).
        bn_scale: BatchNormalization learns a scale (airbench: no, only the offset).
        init: conv and classifier weights: "glorot" (Keras' default) or "dirac" (airbench: PyTorch's
            default scale, each conv starting as the identity on its first filters).
        stem_activation: the activation also after the whitening stem (airbench: yes).
        pool_padding: "same" or "valid" (airbench: odd sizes round down, 31 -> 15 -> 7 -> 3).
        logit_scale: multiplies the logits (airbench: 1/9).
        head_bias: the classifier's dense layer has a bias (airbench: no).
    """
    require(x, "cnn", "image", "'mlp' for tables, 'rnn' or 'transformer' for text")
    if init not in INITS or pool_padding not in ("same", "valid"):
        raise UserError(f"model.init must be one of {', '.join(INITS)} and model.pool_padding 'same' or 'valid'; "
                        f"got '{init}', '{pool_padding}'")
    block = dict(activation=activation, bn_momentum=bn_momentum, init=init, bn_scale=bn_scale, bn_epsilon=bn_epsilon)
    if stem == "whiten":
        x = PatchWhitening(stem_width // 2, name="whiten")(x)  # (batch, H - 1, W - 1, <= stem_width)
        if stem_activation:
            x = activation_layer(activation)(x)
    elif stem == "conv":
        x = conv_bn(x, stem_width, **block)  # (batch, H, W, stem_width)
    else:
        raise UserError(f"model.stem must be 'conv' or 'whiten', got '{stem}'")
    for width in widths:
        x = conv_bn(x, width, pool=True, pool_padding=pool_padding, **block)  # (batch, H/2, W/2, width)
        for _ in range(convs_per_stage - 1):
            x = conv_bn(x, width, **block)
    x = layers.GlobalMaxPooling2D()(x)  # (batch, widths[-1])
    head_init = keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform") if init == "dirac" else "glorot_uniform"
    return classifier_head(x, num_classes, dropout, use_bias=head_bias, logit_scale=logit_scale,
                           kernel_initializer=head_init)


@MODELS.register
def tutorial_cnn(x: Any, num_classes: int, filters: tuple = (32, 64), dense_units: int = 128) -> Any:
    """The TensorFlow tutorials' CNN: Conv(3x3, relu) -> MaxPool per filter count, Flatten, Dense, softmax.

    Args:
        filters: channels of each conv (valid padding), each followed by a 2x2 max-pool.
        dense_units: width of the hidden dense layer.
    """
    require(x, "tutorial_cnn", "image", "'mlp' for tables, 'rnn' or 'transformer' for text")
    for f in filters:
        x = layers.Conv2D(f, 3, activation="relu")(x)  # (batch, H - 2, W - 2, f)
        x = layers.MaxPooling2D(2)(x)  # (batch, (H - 2) / 2, (W - 2) / 2, f)
    x = layers.Flatten()(x)
    x = layers.Dense(dense_units, activation="relu")(x)
    return classifier_head(x, num_classes)
