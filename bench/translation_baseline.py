"""The baseline bigml's translation is measured against: a model of the kind the Keras example "English-to-Spanish
translation with a sequence-to-sequence Transformer" (keras.io/examples/nlp/neural_machine_translation_with_
transformer) teaches, written here from its description: its sizes (15,000-word vocabularies, 20 tokens,
embeddings of 256, a feed-forward width of 2,048, 8 heads, one encoder and one decoder block, post-norm), its word
vectorization (lowercased; the Spanish side stripped of punctuation), RMSprop, batch 64, and greedy decoding by
running the whole model once per output word.

    python bench/translation_baseline.py --seconds 1500 --out /tmp/bench/baseline.json

trains on bigml's own split of spa-eng (the same held-out pairs `bench/translation.py` scores bigml on) for
`--seconds` of training, then translates the test sources and scores them with the same sacrebleu call.
"""

import argparse
import json
import re
import string
import sys
import time
from pathlib import Path

import numpy as np

VOCAB, LENGTH, BATCH, EMBED, LATENT, HEADS = 15000, 20, 64, 256, 2048, 8
STRIP = string.punctuation.replace("[", "").replace("]", "") + "¿"


def spanish_standardize(x):
    import tensorflow as tf

    return tf.strings.regex_replace(tf.strings.lower(x), f"[{re.escape(STRIP)}]", "")


def vectorizers(train_eng, train_spa):
    import tensorflow as tf
    from keras import layers

    eng = layers.TextVectorization(max_tokens=VOCAB, output_mode="int", output_sequence_length=LENGTH)
    spa = layers.TextVectorization(max_tokens=VOCAB, output_mode="int", output_sequence_length=LENGTH + 1,
                                   standardize=spanish_standardize)
    eng.adapt(tf.data.Dataset.from_tensor_slices(train_eng).batch(1024))
    spa.adapt(tf.data.Dataset.from_tensor_slices(train_spa).batch(1024))
    return eng, spa


def build(eng_vocab, spa_vocab):
    import keras
    from keras import layers, ops

    def embed(x, vocab):
        positions = layers.Embedding(LENGTH, EMBED)(ops.arange(LENGTH))
        return layers.Embedding(vocab, EMBED)(x) + positions[None]

    src = keras.Input((LENGTH,), dtype="int64", name="encoder_inputs")
    tgt = keras.Input((LENGTH,), dtype="int64", name="decoder_inputs")
    src_mask = ops.not_equal(src, 0)
    x = embed(src, eng_vocab)
    a = layers.MultiHeadAttention(HEADS, EMBED)(x, x, attention_mask=src_mask[:, None, :])
    x = layers.LayerNormalization()(x + a)
    f = layers.Dense(EMBED)(layers.Dense(LATENT, activation="relu")(x))
    encoded = layers.LayerNormalization()(x + f)
    y = embed(tgt, spa_vocab)
    a = layers.MultiHeadAttention(HEADS, EMBED)(y, y, use_causal_mask=True)
    y = layers.LayerNormalization()(y + a)
    a = layers.MultiHeadAttention(HEADS, EMBED)(y, encoded, attention_mask=src_mask[:, None, :])
    y = layers.LayerNormalization()(y + a)
    f = layers.Dense(EMBED)(layers.Dense(LATENT, activation="relu")(y))
    y = layers.LayerNormalization()(y + f)
    out = layers.Dense(spa_vocab, activation="softmax")(layers.Dropout(0.5)(y))
    model = keras.Model([src, tgt], out)
    model.compile("rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class Budget:
    """Stops fit once `seconds` of training have passed (checked after every batch)."""

    def __new__(cls, seconds):
        import keras

        class _Budget(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.start = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                if time.perf_counter() - self.start >= seconds:
                    self.model.stop_training = True

        return _Budget()


def greedy(model, eng, spa, sources, batch=256):
    """The example's greedy decoding (the whole model once per word, argmax, until [end]), a batch at a time."""
    import tensorflow as tf

    vocab = np.array(spa.get_vocabulary())
    end = int(np.flatnonzero(vocab == "[end]")[0])
    start = int(np.flatnonzero(vocab == "[start]")[0])
    forward = tf.function(lambda s, t: model([s, t], training=False))
    out = []
    for i in range(0, len(sources), batch):
        src = eng(tf.constant(sources[i:i + batch]))
        tgt = np.zeros((len(src), LENGTH), np.int64)
        tgt[:, 0] = start
        done = np.zeros(len(src), bool)
        for k in range(LENGTH - 1):
            probs = forward(src, tf.constant(tgt)).numpy()[:, k]
            token = probs.argmax(-1)
            tgt[:, k + 1] = np.where(done, 0, token)
            done |= token == end
            if done.all():
                break
        for row in tgt:
            words = [vocab[t] for t in row[1:] if t != 0]
            out.append(" ".join(words[:words.index("[end]")] if "[end]" in words else words))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, required=True, help="training time budget")
    parser.add_argument("--out", required=True)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--test-fraction", type=float, default=0.05)
    parser.add_argument("--val-fraction", type=float, default=0.02)
    args = parser.parse_args(argv)
    import tensorflow as tf

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bigml_cli.data.base import data_dir
    from bigml_cli.data.pairs import read_pairs_file, split_by_source
    from bigml_cli.translate import scores

    sources, targets, _ = read_pairs_file(data_dir(args.data_dir) / "spa-eng" / "spa.txt")
    idx = split_by_source(sources, args.test_fraction, args.val_fraction)  # bigml's split of the same file
    pick = lambda rows, split: [rows[i] for i in idx[split]]  # noqa: E731
    tf.keras.utils.set_random_seed(0)
    eng, spa = vectorizers(pick(sources, "train"), ["[start] " + t + " [end]" for t in pick(targets, "train")])

    def pairs(split, shuffle):
        ds = tf.data.Dataset.from_tensor_slices((pick(sources, split), ["[start] " + t + " [end]"
                                                                         for t in pick(targets, split)]))
        ds = ds.shuffle(len(idx[split]), seed=0) if shuffle else ds
        ds = ds.batch(BATCH).map(lambda e, s: (spa_pair(eng(e), spa(s))), num_parallel_calls=tf.data.AUTOTUNE)
        return ds.cache().prefetch(tf.data.AUTOTUNE) if not shuffle else ds.prefetch(tf.data.AUTOTUNE)

    def spa_pair(e, s):
        return {"encoder_inputs": e, "decoder_inputs": s[:, :-1]}, s[:, 1:]

    model = build(eng.vocabulary_size(), spa.vocabulary_size())
    start = time.perf_counter()
    history = model.fit(pairs("train", True), validation_data=pairs("val", False), epochs=1000,
                        callbacks=[Budget(args.seconds)], verbose=2)
    trained = time.perf_counter() - start
    t0 = time.perf_counter()
    outputs = greedy(model, eng, spa, pick(sources, "test"))
    result = {"model": "Keras example (1+1 blocks, 256/2048, word vectorization, rmsprop)",
              "params": int(model.count_params()), "train_seconds": round(trained, 1),
              "epochs": len(history.history["loss"]), "val_accuracy": float(history.history["val_accuracy"][-1]),
              **scores(outputs, pick(targets, "test")), "test_pairs": len(outputs),
              "decode_seconds": round(time.perf_counter() - t0, 1), "examples": list(zip(pick(sources, "test")[:5],
                                                                                          outputs[:5]))}
    Path(args.out).write_text(json.dumps({**result, "outputs": outputs}, ensure_ascii=False, indent=1))
    print(json.dumps({k: v for k, v in result.items()}, ensure_ascii=False))


if __name__ == "__main__":
    main()
