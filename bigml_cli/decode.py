"""Decoding token by token inside one compiled graph, for every model that writes text: greedy, seeded sampling
(keras-hub's samplers) and beam search with a length penalty (here: keras-hub's BeamSampler keeps extending
beams that have ended and has no length penalty).

A model gives `next(prompt, cache, index) -> (logits (batch, vocab), hidden, cache)`, keras-hub's sampler
interface: `prompt` (batch, length) holds the tokens so far, `index` is the position to fill, and `cache` is
whatever the model keeps between steps (a decoder's keys and values: each step then costs one token's work).
"""

from typing import Any, Callable

import tensorflow as tf

METHODS = ("greedy", "sample", "beam")


def sampler(method: str, temperature: float = 1.0, top_k: int = 0, seed: int = 0) -> Any:
    """keras-hub's greedy sampler, or its top-k / random sampler seeded by `seed`."""
    import keras_hub

    if method == "greedy":
        return keras_hub.samplers.GreedySampler()
    if top_k:
        return keras_hub.samplers.TopKSampler(k=top_k, seed=seed, temperature=temperature)
    return keras_hub.samplers.RandomSampler(seed=seed, temperature=temperature)


def any_rows(x: tf.Tensor) -> tf.TensorShape:
    """The shape of a loop variable with its first dimension (rows) left open: a static batch of 1 becomes None
    once beams are gathered."""
    shape = x.shape
    return shape if shape.rank == 0 else tf.TensorShape([None, *shape[1:]])


def reorder(cache: Any, parent: tf.Tensor, per_beam: Any) -> Any:
    """The cache's rows taken from each new beam's parent, for the entries that differ between beams."""
    if per_beam is None:
        return tf.nest.map_structure(lambda c: tf.gather(c, parent), cache)
    return tuple(tf.gather(c, parent) if i in per_beam else c for i, c in enumerate(cache))


def beam_search(next: Callable, prompt: tf.Tensor, cache: Any, index: int, end_id: int, beams: int = 4,
                alpha: float = 0.6, per_beam: Any = None) -> tf.Tensor:
    """The `beams` likeliest continuations of each prompt kept at every step; a beam that has written `end_id`
    stays as it is (padding after it, at no cost). The answer is the beam with the highest log-probability
    divided by GNMT's length penalty ((5 + length) / 6) ** alpha (alpha 0: the likeliest outright; larger:
    longer outputs). `per_beam`: the positions in the `cache` tuple that differ from beam to beam (a decoder's
    own keys and values), reordered as beams are; the others (the encoder's outputs and their keys and values)
    are alike for every beam of a row and are not copied (None: every one is reordered). Returns (batch,
    length) tokens."""
    batch, length = tf.shape(prompt)[0], prompt.shape[1]
    expand = lambda x: tf.repeat(x, beams, axis=0)  # noqa: E731  (batch * beams, ...): beam b of row r at r * beams + b
    prompt, cache = expand(prompt), tf.nest.map_structure(expand, cache)
    scores = tf.tile(tf.constant([[0.0] + [-1e9] * (beams - 1)]), [batch, 1])  # only beam 0 at the start
    done = tf.zeros([batch * beams], tf.bool)

    def body(i, prompt, cache, scores, done):
        logits, _, cache = next(prompt, cache, i)
        logp = tf.nn.log_softmax(tf.cast(logits, tf.float32))  # (batch * beams, vocab)
        vocab = tf.shape(logp)[1]
        ended = tf.where(tf.range(vocab)[None, :] == 0, 0.0, -1e9)  # an ended beam can only pad, for free
        logp = tf.where(done[:, None], ended, logp)
        total = tf.reshape(tf.reshape(scores, [-1, 1]) + logp, [batch, beams * vocab])
        scores, flat = tf.math.top_k(total, beams)
        parent = tf.reshape(flat // vocab + tf.range(batch)[:, None] * beams, [-1])
        token = tf.cast(tf.reshape(flat % vocab, [-1]), prompt.dtype)
        prompt, done = tf.gather(prompt, parent), tf.gather(done, parent)
        cache = reorder(cache, parent, per_beam)
        column = tf.one_hot(i, length, on_value=True, off_value=False, dtype=tf.bool)[None, :]
        prompt = tf.where(column, token[:, None], prompt)
        done = tf.logical_or(done, tf.equal(token, end_id))
        return i + 1, prompt, cache, scores, done

    _, prompt, _, scores, done = tf.while_loop(
        lambda i, prompt, cache, scores, done: tf.logical_and(i < length, tf.logical_not(tf.reduce_all(done))),
        body, (tf.constant(index), prompt, cache, scores, done),
        shape_invariants=tf.nest.map_structure(any_rows, (tf.constant(index), prompt, cache, scores, done)))
    written = tf.reduce_sum(tf.cast(tf.not_equal(prompt[:, index:], 0), tf.float32), axis=1)  # with the end token
    penalty = tf.pow((5.0 + written) / 6.0, alpha)
    best = tf.argmax(tf.reshape(tf.reshape(scores, [-1]) / penalty, [batch, beams]), axis=1, output_type=tf.int32)
    return tf.gather(prompt, best + tf.range(batch) * beams)
