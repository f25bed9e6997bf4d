"""Forward-and-backward time of BatchNormalization and GELU, Keras' layers against bigml's fused ones
(bigml_cli/models/fused.py), on the CIFAR-10 net's 2000 x 15 x 15 x 48 activations:

    python bench/fused_speed.py [float32|bfloat16]

prints the median of 8 calls of each in milliseconds, and one multiply's for scale (docs/speed.md).
"""

import sys
import time

import keras
import numpy as np
import tensorflow as tf

from bigml_cli.models.fused import FusedBatchNorm, gelu


def median_ms(fn, calls=8):
    fn()  # trace
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def forward_backward(x, layer):
    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(layer(x), tf.float32) * 0.001)
        return tape.gradient(loss, x)
    return lambda: step().numpy()


def main(dtype="float32"):
    x = tf.cast(tf.random.stateless_normal([2000, 15, 15, 48], [0, 0]), dtype)
    keras_bn, fused_bn = keras.layers.BatchNormalization(scale=False), FusedBatchNorm(scale=False)
    for bn in (keras_bn, fused_bn):
        bn.build(x.shape)
    cases = {
        "BatchNormalization, Keras": lambda v: keras_bn(v, training=True),
        "BatchNormalization, fused": lambda v: fused_bn(v, training=True),
        "GELU, Keras": lambda v: keras.activations.gelu(v, approximate=False),
        "GELU, fused": gelu,
        "one multiply": lambda v: v * 1.5,
    }
    for name, layer in cases.items():
        print(f"{name:28s} {median_ms(forward_backward(x, layer)):8.1f} ms  ({dtype})", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:2])
