"""Sentence tokenizers for sequence-to-sequence models, in TensorFlow ops so that an exported model reads and
writes raw strings: words (Keras' TextVectorization, punctuation spaced off, case kept) or WordPiece subwords (keras-hub's tokenizer and
tensorflow-text's vocabulary learner). The same code encodes the training pairs and serves the export."""

from typing import Any, Optional

import numpy as np
import tensorflow as tf

PAD, UNK, START, END = "[PAD]", "[UNK]", "[START]", "[END]"
SPECIALS = [PAD, UNK, START, END]  # ids 0..3 in every vocabulary
PUNCTUATION = r'([¿¡?!.,;:"()«»…])'  # split off as tokens of their own (words)
NO_SPACE_BEFORE = r' ([?!.,;:)»…%])'
NO_SPACE_AFTER = r'([¿¡(«]) '


def space_punctuation(strings: Any) -> Any:
    """TextVectorization's standardize for translation: punctuation (Spanish's opening marks too) spaced off
    as words of its own, case kept (the references are cased)."""
    return tf.strings.regex_replace(tf.convert_to_tensor(strings, tf.string), PUNCTUATION, r" \1 ")


def words_layer(vocab: Optional[list] = None, size: int = 0) -> Any:
    """A TextVectorization layer of words that gives ragged ids in bigml's layout (0 padding, 1 unknown, then
    [START], [END] and the words), from a vocabulary, or to be adapted to at most `size` entries."""
    from keras import layers

    return layers.TextVectorization(max_tokens=size or None, standardize=space_punctuation, split="whitespace",
                                    ragged=True, vocabulary=vocab[2:] if vocab else None)


def join_tokens(text: Any) -> Any:
    """Tokens joined by spaces -> text: no space before closing punctuation nor after opening marks."""
    text = tf.strings.regex_replace(text, NO_SPACE_BEFORE, r"\1")
    return tf.strings.strip(tf.strings.regex_replace(text, NO_SPACE_AFTER, r"\1"))


LEARN_FROM = 40000  # WordPiece: sentences the vocabulary is learned from (a seeded sample of larger sets)


def learn_vocabulary(texts: list, tokens: str, size: int) -> list:
    """The vocabulary of the training texts, special tokens first: the `size` most frequent words, or a
    WordPiece vocabulary of at most `size` pieces learned by tensorflow-text's learner from at most LEARN_FROM
    of them (it counts words in Python: a minute for spa-eng's 110,000 sentences per language). A piece needs
    10 uses in the whole set (the learner's default floor), so a sample needs proportionally fewer: learning
    from the sample then keeps about the pieces the whole set would give."""
    if tokens == "subwords":
        return word_pieces(texts, size)
    layer = words_layer(size=max(size - 2, 1))  # [START] and [END] take two of the places
    layer.adapt(tf.data.Dataset.from_tensor_slices(np.asarray(texts, dtype=object).astype(str)).batch(1024))
    return SPECIALS + [w for w in layer.get_vocabulary()[2:]]


def word_pieces(texts: list, size: int, floor: int = 10) -> list:
    """keras-hub's `compute_word_piece_vocabulary` (its BERT pre-tokenization, case and accents kept), with the
    learner's count floor scaled to the sample taken."""
    from keras_hub.src.tokenizers.word_piece_tokenizer import pretokenize
    from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib as learner

    share = min(1.0, LEARN_FROM / max(len(texts), 1))
    if len(texts) > LEARN_FROM:
        keep = np.sort(np.random.default_rng(0).choice(len(texts), LEARN_FROM, replace=False))
        texts = [texts[i] for i in keep]
    data = tf.data.Dataset.from_tensor_slices(np.asarray(texts, dtype=object).astype(str)).batch(1024)
    counts = learner.count_words(data.map(lambda text: pretokenize(text, False, False, True, True)))
    vocab = learner.learn(counts, vocab_size=size, reserved_tokens=SPECIALS, lower_thresh=max(2, round(floor * share)),
                          include_joiner_token=True, joiner="##")
    return list(vocab)[:size]


class Codec(tf.Module):
    """Strings <-> token ids in one vocabulary. `encode(strings, length, ends)` gives (batch, length) int32
    ids padded with 0 and cut at `length` ([START] ... [END] around them when `ends`); `decode(ids)` reads
    ids up to the first [END] (or padding) back into strings."""

    def __init__(self, vocab: list, tokens: str):
        super().__init__()
        self.tokens, self.size = tokens, len(vocab)
        if tokens == "subwords":
            import keras_hub

            self.wordpiece = keras_hub.tokenizers.WordPieceTokenizer(
                vocabulary=list(vocab), lowercase=False, strip_accents=False, oov_token=UNK, dtype="int32")
        else:
            self.words = words_layer(list(vocab))
        self.vocab = tf.constant(vocab)

    def pieces(self, strings: Any) -> Any:
        """Ragged (batch, None) int32 ids, without start and end."""
        if self.tokens == "subwords" and tf.executing_eagerly():  # keras-hub's tokenizer gives eager callers lists
            self.eager_pieces = getattr(self, "eager_pieces", None) or tf.function(
                self.pieces, input_signature=[tf.TensorSpec([None], tf.string)])
            return self.eager_pieces(tf.convert_to_tensor(strings, tf.string))
        if self.tokens == "subwords":
            return tf.cast(self.wordpiece.tokenize(tf.convert_to_tensor(strings, tf.string)), tf.int32)
        return tf.cast(self.words(tf.convert_to_tensor(strings, tf.string)), tf.int32)

    def encode(self, strings: Any, length: int, ends: bool = False) -> tuple:
        """((batch, length) ids, (batch,) how many pieces each string had before the cut)."""
        ids = self.pieces(strings)
        counts = ids.row_lengths()
        if ends:
            batch = tf.shape(counts)[0]
            start = tf.fill([batch, 1], SPECIALS.index(START))
            end = tf.fill([batch, 1], SPECIALS.index(END))
            ids = tf.concat([start, ids[:, :length - 2], end], axis=1)
        return ids.to_tensor(0, shape=[None, length]), counts

    def decode(self, ids: Any) -> Any:
        """(batch, length) ids -> (batch,) strings: the tokens before the first [END] or padding, [START] and
        [UNK] left out."""
        if self.tokens == "subwords" and tf.executing_eagerly():
            self.eager_decode = getattr(self, "eager_decode", None) or tf.function(
                self.decode, input_signature=[tf.TensorSpec([None, None], tf.int32)])
            return self.eager_decode(tf.cast(ids, tf.int32))
        ids = tf.cast(ids, tf.int32)
        stop = tf.logical_or(tf.equal(ids, SPECIALS.index(END)), tf.equal(ids, 0))
        keep = tf.logical_and(tf.equal(tf.cumsum(tf.cast(stop, tf.int32), axis=1), 0), ids > SPECIALS.index(START))
        ragged = tf.ragged.boolean_mask(ids, keep)
        if self.tokens == "subwords":
            text = self.wordpiece.detokenize(ragged)
        else:
            text = tf.strings.reduce_join(tf.gather(self.vocab, ragged), axis=1, separator=" ")
        return join_tokens(text)
