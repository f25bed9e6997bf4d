"""CNN: an airbench-style convolutional net (Keller Jordan's CIFAR-10 speedruns, David Page's ResNet-9).

Each stage is conv -> max-pool -> BN -> act -> conv -> BN -> act, halving the resolution once, so
most of the compute runs at low resolution; a global max-pool feeds the classifier.
"""

from keras import layers

from bigml_cli.errors import UserError
from bigml_cli.models.base import MODELS, PatchWhitening, classifier_head, require


def conv_bn(x, width, activation, bn_momentum, pool=False):
    x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
    if pool:
        x = layers.MaxPooling2D(2, padding="same")(x)
    x = layers.BatchNormalization(momentum=bn_momentum, epsilon=1e-5)(x)
    return layers.Activation(activation)(x)


@MODELS.register
def cnn(x, num_classes, widths=(64, 128, 256), stem="conv", stem_width=32, convs_per_stage=2, dropout=0.0,
        activation="gelu", bn_momentum=0.9):
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
    """
    require(x, "cnn", "image", "'mlp' for tables, 'rnn' or 'transformer' for text")
    if stem == "whiten":
        x = PatchWhitening(stem_width // 2, name="whiten")(x)  # (batch, H - 1, W - 1, <= stem_width)
    elif stem == "conv":
        x = conv_bn(x, stem_width, activation, bn_momentum)  # (batch, H, W, stem_width)
    else:
        raise UserError(f"model.stem must be 'conv' or 'whiten', got '{stem}'")
    for width in widths:
        x = conv_bn(x, width, activation, bn_momentum, pool=True)  # (batch, H/2, W/2, width)
        for _ in range(convs_per_stage - 1):
            x = conv_bn(x, width, activation, bn_momentum)
    x = layers.GlobalMaxPooling2D()(x)  # (batch, widths[-1])
    return classifier_head(x, num_classes, dropout)


@MODELS.register
def tutorial_cnn(x, num_classes, filters=(32, 64), dense_units=128):
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
