"""Faster training steps for BatchNormalization and GELU, the same arithmetic as Keras' layers.

Keras 3 runs both as chains of small TensorFlow ops, each a pass over memory: on the CIFAR-10 net they
took almost half of the training step. TensorFlow's fused batch-norm kernel (oneDNN on CPU, cuDNN on GPU)
does the normalization in one pass, and GELU's forward and backward are each compiled by XLA into one pass
(the timings: docs/speed.md, "Measurements the code cites").

Only training takes these paths. Inference (scoring, predict, every export format) runs Keras' own code,
so saved models hold nothing that an exporter has to know about.
"""

import math
from typing import Any, Optional

import keras
import tensorflow as tf
from keras import layers


@keras.saving.register_keras_serializable(package="bigml")
class FusedBatchNorm(layers.BatchNormalization):
    """keras.layers.BatchNormalization whose training step on 4-D channels-last inputs runs
    FusedBatchNormV3: normalized by the batch's mean and (biased) variance, moving statistics updated as
    Keras does. Anything else (inference, masks, renorm, synchronized, other ranks) is Keras' code."""

    def _fused(self, inputs, training, mask):
        return (training and self.trainable and mask is None and not self.renorm and not self.synchronized
                and len(inputs.shape) == 4 and self.axis in (-1, 3) and keras.backend.backend() == "tensorflow")

    def call(self, inputs: Any, training: Optional[bool] = None, mask: Any = None) -> Any:
        if not self._fused(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        x = inputs if inputs.dtype in (tf.float32, tf.bfloat16, tf.float16) else tf.cast(inputs, tf.float32)
        y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=scale, offset=offset, mean=tf.zeros([0]), variance=tf.zeros([0]), epsilon=self.epsilon,
            data_format="NHWC", is_training=True)
        # the kernel returns the batch variance with Bessel's correction; Keras' moving variance takes it without
        count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
        variance = variance * tf.maximum(count - 1.0, 0.0) / count
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(y, self.compute_dtype)


_SQRT_HALF, _INV_SQRT_2PI = 1 / math.sqrt(2), 1 / math.sqrt(2 * math.pi)


@tf.function(jit_compile=True, reduce_retracing=True)
def _gelu_forward(x):
    x32 = tf.cast(x, tf.float32)
    return tf.cast(x32 * 0.5 * (1.0 + tf.math.erf(x32 * _SQRT_HALF)), x.dtype)


@tf.function(jit_compile=True, reduce_retracing=True)
def _gelu_backward(x, dy):
    x32 = tf.cast(x, tf.float32)
    cdf = 0.5 * (1.0 + tf.math.erf(x32 * _SQRT_HALF))
    pdf = tf.exp(-0.5 * x32 * x32) * _INV_SQRT_2PI
    return tf.cast(tf.cast(dy, tf.float32) * (cdf + x32 * pdf), x.dtype)


@tf.custom_gradient
def gelu(x: Any) -> tuple:
    """Exact (erf) GELU, forward and backward each one XLA-compiled pass computing in float32; keeps only x
    for the backward pass."""
    return _gelu_forward(x), lambda dy: _gelu_backward(x, dy)


@keras.saving.register_keras_serializable(package="bigml")
class Gelu(layers.Layer):
    """Exact GELU: in training `gelu` above, otherwise keras.activations.gelu (the same function)."""

    def call(self, x: Any, training: Optional[bool] = None) -> Any:
        if training and keras.backend.backend() == "tensorflow":
            return gelu(x)
        return keras.activations.gelu(x)


def activation_layer(name: str) -> Any:
    """The layer for a Keras activation name: `Gelu` for "gelu", else keras.layers.Activation."""
    return Gelu() if name == "gelu" else layers.Activation(name)
