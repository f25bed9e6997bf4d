"""The encoder-decoder Transformer ("Attention Is All You Need", pre-norm): the encoder reads the source
tokens, the decoder writes the target with causal self-attention and cross-attention to the encoder; trained
with teacher forcing (the target shifted right in, the target out). keras-hub's TransformerEncoder and
TransformerDecoder layers, whose key/value caches make decoding one token's work per step.

`Translator` turns the trained model into strings in, strings out, in one graph: tokenize the source, encode
it once, decode greedily, by beam search or by sampling, and detokenize."""

from typing import Any

import tensorflow as tf
from keras import layers, ops

from bigml_cli.decode import beam_search, sampler
from bigml_cli.errors import UserError
from bigml_cli.models.base import MODELS, vocabulary_size
from bigml_cli.tokenizers import END, SPECIALS, START, Codec


@MODELS.register(reads="pairs")
def seq2seq(x: Any, num_classes: int, dim: int = 256, heads: int = 4, num_layers: int = 3, mlp_dim: int = 1024, dropout: float = 0.1, shared_embeddings: bool = False) -> Any:
    """Encoder-decoder Transformer for translation: target-token logits (batch, target length, vocab).

    Args:
        dim: model width (token and position embeddings).
        heads: attention heads (dim must divide evenly).
        num_layers: encoder blocks, and as many decoder blocks.
        mlp_dim: hidden width of each block's feed-forward network.
        dropout: dropout on embeddings, attention weights and residual branches.
        shared_embeddings: the output layer reuses the target embedding (tied weights), as the paper does.
    """
    import keras_hub

    if not isinstance(x, dict):
        raise UserError("model 'seq2seq' needs sentence pairs (spa-eng, a FILE.tsv of 'source<TAB>target' lines, a "
                        "CSV of two text columns, a folder of parallel files)")
    if dim % heads:
        raise UserError(f"model.dim {dim} must be a multiple of model.heads {heads}")
    source, target = x["source"], x["target"]
    source_mask, target_mask = ops.not_equal(source, 0), ops.not_equal(target, 0)
    embed = keras_hub.layers.TokenAndPositionEmbedding
    h = embed(vocabulary_size(source), longest(source), dim, name="source_embedding")(source)
    h = layers.Dropout(dropout)(h)
    for i in range(num_layers):
        h = keras_hub.layers.TransformerEncoder(mlp_dim, heads, dropout=dropout, normalize_first=True,
                                                name=f"encoder_{i}")(h, padding_mask=source_mask)
    encoded = layers.LayerNormalization(epsilon=1e-6, name="encoder_norm")(h)
    # tied (keras-hub's default): no separate output matrix in the layer, which the Dense head replaces unless
    # shared_embeddings
    target_embedding = embed(vocabulary_size(target), longest(target), dim, name="target_embedding")
    h = layers.Dropout(dropout)(target_embedding(target))
    for i in range(num_layers):
        h = keras_hub.layers.TransformerDecoder(mlp_dim, heads, dropout=dropout, normalize_first=True,
                                                name=f"decoder_{i}")(
            h, encoded, decoder_padding_mask=target_mask, encoder_padding_mask=source_mask)
    h = layers.LayerNormalization(epsilon=1e-6, name="decoder_norm")(h)
    if shared_embeddings:
        return layers.Activation("linear", dtype="float32", name="logits")(
            target_embedding.token_embedding(h, reverse=True))
    return layers.Dense(num_classes, dtype="float32", name="logits")(h)  # (batch, target length, vocab)


def longest(ids: Any) -> int:
    """The most tokens a pair's side holds (its positions' embeddings): the TokenIds layer records it."""
    return ids._keras_history[0].max_length


class Translator(tf.Module):
    """Strings in, strings out, with a trained seq2seq model and its run's vocabularies (input spec `info`)."""

    def __init__(self, model: Any, info: dict):
        super().__init__()
        self.model = model
        self.source = Codec(info["source_vocab"], info["tokens"])
        self.target = Codec(info["target_vocab"], info["tokens"])
        self.source_length, self.target_length = info["source_length"], info["target_length"]
        names = [layer.name for layer in model.layers]
        self.encoders = [model.get_layer(n) for n in names if n.startswith("encoder_") and n != "encoder_norm"]
        self.decoders = [model.get_layer(n) for n in names if n.startswith("decoder_") and n != "decoder_norm"]
        self.shared = model.get_layer("logits").__class__.__name__ == "Activation"

    def logits(self, h: Any) -> Any:
        h = self.model.get_layer("decoder_norm")(h)
        if self.shared:
            return self.model.get_layer("target_embedding").token_embedding(h, reverse=True)
        return self.model.get_layer("logits")(h)

    def start(self, source_ids: Any) -> tuple:
        """Encode the source once; the cache: (self-attention keys/values, cross-attention keys/values, encoder
        outputs, source mask), each with the batch first, so that beams can copy it row by row."""
        mask = tf.not_equal(source_ids, 0)
        h = self.model.get_layer("source_embedding")(source_ids)
        for layer in self.encoders:
            h = layer(h, padding_mask=mask)
        encoded = self.model.get_layer("encoder_norm")(h)
        first = self.model.get_layer("decoder_0")
        heads, size = first.num_heads, first._self_attention_layer._key_dim
        batch = tf.shape(source_ids)[0]
        self_cache = tf.zeros([batch, len(self.decoders), 2, self.target_length, heads, size], encoded.dtype)
        cross_cache = tf.zeros([batch, len(self.decoders), 2, self.source_length, heads, size], encoded.dtype)
        prompt = self.prompt(batch)
        _, self_cache, cross_cache = self.step(prompt[:, :1], 0, (self_cache, cross_cache, encoded, mask), 0)
        return prompt, (self_cache, cross_cache, encoded, mask)

    def prompt(self, batch: Any) -> Any:
        return tf.concat([tf.fill([batch, 1], SPECIALS.index(START)),
                          tf.zeros([batch, self.target_length - 1], tf.int32)], axis=1)

    def step(self, token: Any, index: Any, cache: tuple, cross_index: Any = None) -> tuple:
        """One token (batch, 1) at position `index` through the decoder: (hidden (batch, 1, dim), caches)."""
        self_cache, cross_cache, encoded, mask = cache
        h = self.model.get_layer("target_embedding")(token, start_index=index)
        selfs, crosses = [], []
        for i, layer in enumerate(self.decoders):
            h, s, c = layer(h, encoded, encoder_padding_mask=mask, self_attention_cache=self_cache[:, i],
                            self_attention_cache_update_index=index, cross_attention_cache=cross_cache[:, i],
                            cross_attention_cache_update_index=cross_index)
            selfs.append(s)
            crosses.append(c)
        return h, tf.stack(selfs, axis=1), tf.stack(crosses, axis=1) if cross_index is not None else cross_cache

    def next(self, prompt: Any, cache: tuple, index: Any) -> tuple:
        """keras-hub's sampler interface: the logits of the token at `index`, from the one before it."""
        token = prompt[:, index - 1:index]
        h, self_cache, _ = self.step(token, index - 1, cache)
        return self.logits(h)[:, 0, :], h, (self_cache, *cache[1:])

    def translate_ids(self, source_ids: Any, method: str = "greedy", beams: int = 4, alpha: float = 0.6,
                      temperature: float = 1.0, top_k: int = 0, seed: int = 0, chosen: Any = None) -> Any:
        """(batch, source length) ids -> (batch, target length) ids: [START], the translation, [END], padding.
        `chosen`: the keras-hub sampler to use, made outside any tf.function (a seeded one holds a variable)."""
        prompt, cache = self.start(source_ids)
        end = SPECIALS.index(END)
        if method == "beam":
            return beam_search(self.next, prompt, cache, 1, end, beams, alpha, per_beam=(0,))  # the self-attention
            # cache alone: the encoder's outputs, keys and values are the same for every beam of a sentence
        chosen = chosen or sampler(method, temperature, top_k, seed)
        out = chosen(self.next, prompt, cache, index=1, stop_token_ids=[end])
        return self.after_end_padded(out)

    def after_end_padded(self, ids: Any) -> Any:
        """Samplers keep writing after a row's [END] until every row has one: padding from there on."""
        ended = tf.cumsum(tf.cast(tf.equal(ids, SPECIALS.index(END)), tf.int32), axis=1, exclusive=True) > 0
        return tf.where(ended, tf.zeros_like(ids), ids)

    def encode(self, strings: Any) -> tuple:
        """((batch, source length) ids, (batch,) pieces before the cut) of source strings."""
        return self.source.encode(strings, self.source_length)

    def translate(self, strings: Any, **decoding: Any) -> Any:
        ids, _ = self.encode(strings)
        return self.target.decode(self.translate_ids(ids, **decoding))
