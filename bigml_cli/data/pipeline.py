"""The tf.data steps every dataset shares: in-memory tensors, seeded shuffling, per-batch augmentation.

The arrays stay in memory as tensors; a batch is a gather of shuffled indices, so an epoch costs
no copy of the data. Augmentation runs on whole uint8 batches with stateless random ops seeded by
(seed, step): the same seed gives the same stream, and it never touches the eval splits.
"""

from typing import Any, Optional

import numpy as np
import tensorflow as tf

from bigml_cli.data.base import length


def _to_tensors(x):
    if isinstance(x, dict):
        return {k: tf.constant(v) for k, v in x.items()}
    return tf.constant(x)


def _gather(x, idx):
    if isinstance(x, dict):
        return {k: tf.gather(v, idx) for k, v in x.items()}
    return tf.gather(x, idx)


def random_crop(images: Any, seed: Any, padding: int, mode: str, flip: Any) -> Any:
    """Per-image random crop of `padding`-padded images (and a horizontal flip), vectorized over the batch.

    images: (batch, height, width, channels) uint8
    flip: False, True (each image mirrored with probability 1/2), or a (batch,) bool tensor: which to mirror
    """
    b, h, w = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]], mode=mode)
    offsets = tf.random.stateless_uniform((2, b), seed, 0, 2 * padding + 1, dtype=tf.int32)
    rows = offsets[0][:, None] + tf.range(h)[None, :]  # (batch, height)
    cols = offsets[1][:, None] + tf.range(w)[None, :]  # (batch, width)
    out = tf.gather(padded, rows, axis=1, batch_dims=1)  # (batch, height, width + 2p, channels)
    out = tf.gather(out, cols, axis=2, batch_dims=1)  # (batch, height, width, channels)
    if flip is True:
        flip = tf.random.stateless_uniform((b,), seed + [0, 1]) < 0.5
    if flip is not False:
        out = tf.where(flip[:, None, None, None], tf.reverse(out, axis=[2]), out)
    return out


def cutout(images: Any, seed: Any, size: Any, fill: list) -> Any:
    """Per-image cutout (DeVries & Taylor, 2017; airbench96's `batch_cutout`), vectorized over the batch: a
    size x size square, wholly inside the image at a random place, set to `fill` (one value per channel).

    images: (batch, height, width, channels) uint8
    """
    b, h, w = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    choices = tf.cast(tf.stack([h - size + 1, w - size + 1]), tf.float32)[:, None]
    places = tf.random.stateless_uniform((2, b), seed) * choices
    top, left = tf.unstack(tf.cast(places, tf.int32))  # each from 0 to (side - size), uniform
    rows = tf.range(h)[None, :] - top[:, None]  # (batch, height)
    cols = tf.range(w)[None, :] - left[:, None]  # (batch, width)
    inside = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]
    return tf.where(inside[..., None], tf.constant(fill, images.dtype), images)


AUGMENTATIONS = {
    "none": None,
    "crop_flip": lambda x, seed, p, flips: random_crop(x, seed, p, "REFLECT", flip=True),  # CIFAR
    # airbench's alternating flip: each image mirrored in every other epoch (a random half in the first)
    "crop_altflip": lambda x, seed, p, flips: random_crop(x, seed, p, "REFLECT", flip=flips),
    "shift": lambda x, seed, p, flips: random_crop(x, seed, p, "CONSTANT", flip=False),  # digits: no flips
}


def _ready(ds):
    """Prefetch, without tf.data's autotuning thread.

    That thread sleeps between tuning rounds for periods that double up to 60 s, and deleting an
    iterator can wait for it to wake, so a short `fit` could return seconds late. Without it, parallel
    maps use one call per core and prefetch buffers grow on demand, at the same speed (docs/speed.md).
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches in one pass over n examples (at least one)."""
    return max(1, n // min(batch_size, n))


def lm_steps_per_epoch(tokens: Any, length: int, batch_size: int) -> int:
    """Batches of `length`-token windows in one pass over `tokens` training tokens (at least one).

    An epoch is one pass over the text, as in Hugging Face's run_clm, not one window per position:
    that would show every token `length` times per epoch (a 256-token model: 256 passes).
    """
    return max(1, tokens // (length * batch_size))


def index_stream(n: int, batch_size: int, seed: Any, start_step: int = 0, shard: Any = None) -> Any:
    """(step, indices) batches of a seeded, endlessly reshuffled range(n), from `start_step` on.

    The stream is a pure function of (seed, step): `start_step` resumes it exactly where a run stopped
    (the skip runs over shuffled indices only). `shard` = (workers, index) keeps every workers-th
    index of the same stream, for multi-worker training.
    """
    ds = tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True).repeat()
    if shard:
        ds = ds.shard(*shard)
    return ds.batch(batch_size, drop_remainder=True).enumerate().skip(start_step)


def train_dataset(x: Any, y: Any, num_classes: int, batch_size: int, seed: Any, augment: str = "none", crop_padding: int = 4, start_step: int = 0, shard: Any = None,
                  class_weights: Any = None, cutout_size: int = 0, cutout_fill: Optional[list] = None) -> tuple:
    """Endless shuffled batches of (inputs, one-hot labels), and each example's weight when `class_weights`
    (one per class) are given; returns (dataset, steps per epoch). `cutout_size` > 0: images also get
    `cutout`, filled with `cutout_fill` (the training images' mean colour, one value per channel)."""
    n = length(x)
    batch_size = min(batch_size, n)
    xs, ys = _to_tensors(x), tf.constant(y)
    augment_fn = AUGMENTATIONS[augment]
    first_flips = tf.random.stateless_uniform((n,), [seed, 1]) < 0.5  # crop_altflip: epoch 1's mirrored half

    def make_batch(step, idx):
        inputs = _gather(xs, idx)
        step_seed = tf.stack([tf.constant(seed, tf.int64), step])
        if augment_fn is not None:
            # Each example's pass over the data, from its place in the shuffled stream (batches straddle
            # passes when the batch size does not divide n): mirrored in every other pass.
            place = step * batch_size + tf.range(batch_size, dtype=tf.int64)
            if shard:
                place = place * shard[0] + shard[1]  # the worker's examples are every workers-th of the stream
            odd_pass = (place // n) % 2 == 1
            flips = tf.not_equal(tf.gather(first_flips, idx), odd_pass)  # (batch,) bool
            inputs = augment_fn(inputs, step_seed, crop_padding, flips)
        if cutout_size:
            # a stream of its own: the crops and flips draw from (seed, step) and (seed, step + 1)
            inputs = cutout(inputs, step_seed + [1 << 32, 0], cutout_size, cutout_fill)
        labels = tf.gather(ys, idx)
        if class_weights is not None:
            return inputs, tf.one_hot(labels, num_classes), tf.gather(tf.constant(class_weights, tf.float32), labels)
        return inputs, tf.one_hot(labels, num_classes)

    ds = index_stream(n, batch_size, seed, start_step, shard)
    return _ready(ds.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE)), steps_per_epoch(n, batch_size)


def _windows(ids, starts, length):
    """(inputs, next-token targets) for windows of `length` + 1 tokens: (batch, length) each."""
    w = tf.gather(ids, starts[:, None] + tf.range(length + 1, dtype=starts.dtype)[None, :])
    return w[:, :-1], w[:, 1:]


def lm_train_dataset(ids: Any, starts: Any, length: int, batch_size: int, seed: Any, start_step: int = 0, shard: Any = None) -> tuple:
    """Endless shuffled batches of random windows of a token-id corpus; returns (dataset, steps per epoch)."""
    ids, starts = tf.constant(ids), tf.constant(starts)
    ds = index_stream(len(starts), batch_size, seed, start_step, shard)
    ds = ds.map(lambda step, idx: _windows(ids, tf.gather(starts, idx), length), num_parallel_calls=tf.data.AUTOTUNE)
    return _ready(ds), lm_steps_per_epoch(len(ids), length, batch_size)


def mask_tokens(x: Any, seed: Any, mask_id: int, vocab_size: int, rate: float = 0.15) -> tuple:
    """BERT's masking of token ids (batch, seq): each token is picked with probability `rate`; a picked
    token becomes `mask_id` 80% of the time, a random token 10%, and stays itself 10%. Returns (masked ids,
    the loss's weights: 1.0 where picked, 0.0 elsewhere). Stateless random ops seeded by `seed` (two int64s),
    so a training batch's masks are a function of (seed, step) and a resumed run masks as the uninterrupted
    one did (keras-hub's MaskedLMMaskGenerator draws from unseeded random ops)."""
    seed = tf.cast(seed, tf.int64)
    draw = tf.random.stateless_uniform(tf.shape(x), seed)
    picked = draw < rate
    # the same draw splits the picked tokens 80/10/10: below 0.8 * rate masks, above 0.9 * rate keeps
    to_mask = draw < 0.8 * rate
    to_random = picked & ~to_mask & (draw < 0.9 * rate)
    random_ids = tf.random.stateless_uniform(tf.shape(x), seed + [0, 1 << 32], 0, vocab_size, dtype=x.dtype)
    masked = tf.where(to_mask, tf.cast(mask_id, x.dtype), tf.where(to_random, random_ids, x))
    return masked, tf.cast(picked, tf.float32)


def mlm_train_dataset(ids: Any, starts: Any, length: int, batch_size: int, seed: Any, mask_id: int, vocab_size: int, start_step: int = 0, shard: Any = None) -> tuple:
    """Endless shuffled batches of (masked windows, original windows, weights on the masked positions) of a
    token-id corpus; returns (dataset, steps per epoch)."""
    ids, starts = tf.constant(ids), tf.constant(starts)

    def make_batch(step, idx):
        x = _windows(ids, tf.gather(starts, idx), length)[0]
        masked, weights = mask_tokens(x, tf.stack([tf.constant(seed, tf.int64), step]), mask_id, vocab_size)
        return masked, x, weights

    ds = index_stream(len(starts), batch_size, seed, start_step, shard)
    return _ready(ds.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE)), lm_steps_per_epoch(len(ids), length, batch_size)


def mlm_eval_dataset(ids: Any, starts: Any, length: int, batch_size: int, mask_id: int, vocab_size: int, seed: int = 0) -> Any:
    """Every window starting at `starts`, once, in order; a window's masks are a function of (seed, its start),
    so it is masked alike every time it is read, whatever the batch size (fit's validation and the report's)."""
    ids = tf.constant(ids)

    def make_window(s):
        x = _windows(ids, s[None], length)[0][0]  # (length,)
        masked, weights = mask_tokens(x, tf.stack([tf.constant(seed, tf.int64), tf.cast(s, tf.int64)]), mask_id,
                                      vocab_size)
        return masked, x, weights

    ds = tf.data.Dataset.from_tensor_slices(starts).map(make_window, num_parallel_calls=tf.data.AUTOTUNE)
    return _ready(ds.batch(batch_size))


def lm_eval_dataset(ids: Any, starts: Any, length: int, batch_size: int) -> Any:
    """Every window starting at `starts`, once, in order."""
    ids = tf.constant(ids)
    ds = tf.data.Dataset.from_tensor_slices(starts).batch(batch_size)
    return _ready(ds.map(lambda s: _windows(ids, s, length)))


def eval_dataset(x: Any, y: Any, num_classes: int, batch_size: int, class_weights: Any = None) -> Any:
    """Batches of (inputs, one-hot labels) in order, every example once, and each one's weight when
    `class_weights` are given (fit's validation accuracy is then the mean of the classes' recalls)."""
    y = np.asarray(y)
    columns = (_to_tensors(x), tf.one_hot(y, num_classes))
    if class_weights is not None:
        columns += (tf.constant(np.asarray(class_weights, np.float32)[y]),)
    return _ready(tf.data.Dataset.from_tensor_slices(columns).batch(batch_size))


def inputs_dataset(x: Any, batch_size: int) -> Any:
    return _ready(tf.data.Dataset.from_tensor_slices(_to_tensors(x)).batch(batch_size))


def _pair_batch(source, target, idx):
    """({source ids, target ids shifted right: [START] ...}, target ids, 1.0 at real target tokens), each cut
    after the batch's longest sentence: padding costs as much as words, and most sentences are short."""
    s, t = tf.gather(source, idx), tf.gather(target, idx)
    s = s[:, :tf.maximum(tf.reduce_max(tf.reduce_sum(tf.cast(s > 0, tf.int32), axis=1)), 1)]
    t = t[:, :tf.reduce_max(tf.reduce_sum(tf.cast(t > 0, tf.int32), axis=1))]  # [START] ... [END]: 2 or more
    return {"source": s, "target": t[:, :-1]}, t[:, 1:], tf.cast(t[:, 1:] > 0, tf.float32)


def pairs_train_dataset(source: Any, target: Any, batch_size: int, seed: Any, start_step: int = 0,
                        shard: Any = None, pool: int = 32) -> tuple:
    """Endless shuffled batches of sentence pairs for teacher forcing; `target` rows hold [START] ... [END].

    Batches of sentences of about one length: the shuffled stream is read `pool` batches at a time, sorted by
    length, cut into batches, and those are taken in a shuffled order (as fairseq and tensor2tensor bucket by
    length), so each batch pads little. A pure function of (seed, step), like `index_stream`: `start_step`
    resumes it exactly.
    """
    lengths = tf.constant(np.maximum((source > 0).sum(1), (target > 0).sum(1)).astype(np.int32))
    source, target = tf.constant(source), tf.constant(target)
    batch_size = min(batch_size, len(source))
    pool = max(1, min(pool, len(lengths) // batch_size))

    def batches(group, idx):
        order = tf.gather(idx, tf.argsort(tf.gather(lengths, idx), stable=True))
        shuffled = tf.argsort(tf.random.stateless_uniform([pool], tf.stack([tf.constant(seed, tf.int64), group])))
        return tf.data.Dataset.from_tensor_slices(tf.gather(tf.reshape(order, [pool, batch_size]), shuffled))

    ds = index_stream(len(lengths), batch_size * pool, seed, 0, shard).flat_map(batches).skip(start_step)
    ds = ds.map(lambda idx: _pair_batch(source, target, idx), num_parallel_calls=tf.data.AUTOTUNE)
    return _ready(ds), steps_per_epoch(len(source), batch_size)


def pairs_eval_dataset(source: Any, target: Any, batch_size: int) -> Any:
    """Every pair once, in order, as pairs_train_dataset's batches."""
    source, target = tf.constant(source), tf.constant(target)
    ds = tf.data.Dataset.range(len(source)).batch(batch_size)
    return _ready(ds.map(lambda idx: _pair_batch(source, target, idx)))
