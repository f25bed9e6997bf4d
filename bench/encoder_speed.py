"""Training speed of all-MiniLM-L6-v2 (the minilm_imdb recipe's encoder) against sequence length, to choose
data.sequence_length for a CPU: one AdamW step on random token ids, XLA on and off.

    python bench/encoder_speed.py [LENGTH:BATCH ...]     # default 128:32 256:16; needs `make minilm`
"""

import sys
import time
from pathlib import Path

import keras
import keras_hub
import numpy as np
import tensorflow as tf

MODEL = Path.home() / ".cache" / "bigml-pretrained" / "all-MiniLM-L6-v2"


def examples_per_second(length, batch, jit):
    backbone = keras_hub.models.Backbone.from_preset(str(MODEL))
    ids = keras.Input(shape=(length,), dtype="int32")
    out = backbone({"token_ids": ids, "segment_ids": keras.ops.zeros_like(ids),
                    "padding_mask": keras.ops.not_equal(ids, 0)})["sequence_output"]
    model = keras.Model(ids, keras.layers.Dense(2, activation="softmax")(out[:, 0, :]))
    model.compile(keras.optimizers.AdamW(2e-5), "sparse_categorical_crossentropy", jit_compile=jit)
    x = np.random.default_rng(0).integers(1000, 30000, (batch * 6, length)).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((x, np.zeros(batch * 6, "int32"))).batch(batch)
    model.fit(data, epochs=1, verbose=0)  # compiles
    start = time.perf_counter()
    model.fit(data.repeat(2), epochs=1, verbose=0)
    return 12 * batch / (time.perf_counter() - start)


if __name__ == "__main__":
    for spec in sys.argv[1:] or ["128:32", "256:16"]:
        length, batch = map(int, spec.split(":"))
        for jit in (True, False):
            print(f"sequence {length:>4}  batch {batch:>3}  XLA {'on ' if jit else 'off'}  "
                  f"{examples_per_second(length, batch, jit):6.1f} examples/s", flush=True)
