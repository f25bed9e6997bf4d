"""Transformer encoder for text classification: token + learned position embeddings, pre-norm blocks of
multi-head self-attention and a feed-forward network, each with a residual connection and dropout."""

from typing import Any

import keras
from keras import layers, ops

from bigml_cli.models.base import MODELS, classifier_head, require, vocabulary_size


@keras.saving.register_keras_serializable(package="bigml")
class PositionEmbedding(layers.Layer):
    """Adds a learned embedding of each position: (batch, seq, dim) -> (batch, seq, dim)."""

    def __init__(self, sequence_length, dim, **kwargs):
        super().__init__(**kwargs)
        self.sequence_length, self.dim = sequence_length, dim
        self.positions = layers.Embedding(sequence_length, dim)

    def build(self, input_shape: list) -> None:
        self.positions.build((self.sequence_length,))

    def call(self, x: Any) -> Any:
        return x + self.positions(ops.arange(ops.shape(x)[1]))[None]

    def get_config(self) -> dict:
        return {**super().get_config(), "sequence_length": self.sequence_length, "dim": self.dim}


def encoder_block(x: Any, mask: Any, dim: int, heads: int, mlp_dim: int, dropout: float) -> Any:
    h = layers.LayerNormalization(epsilon=1e-6)(x)
    h = layers.MultiHeadAttention(heads, dim // heads, dropout=dropout)(h, h, attention_mask=mask)
    x = x + layers.Dropout(dropout)(h)  # (batch, seq, dim)
    h = layers.LayerNormalization(epsilon=1e-6)(x)
    h = layers.Dense(mlp_dim, activation="gelu")(h)
    h = layers.Dense(dim)(layers.Dropout(dropout)(h))
    return x + layers.Dropout(dropout)(h)


def encoder(x: Any, dim: int, heads: int, num_layers: int, mlp_dim: int, dropout: float) -> tuple:
    """Token ids (batch, seq) -> (the final norm's outputs (batch, seq, dim), 1.0 at real tokens (batch, seq));
    the same layers, in the same order, in the classifier and in the masked language model, so that one
    starts the other (--init)."""
    if dim % heads:
        from bigml_cli.errors import UserError

        raise UserError(f"model.dim {dim} must be a multiple of model.heads {heads}")
    not_pad = ops.cast(ops.not_equal(x, 0), "float32")  # (batch, seq)
    mask = ops.cast(not_pad[:, None, :], "bool")  # (batch, 1, seq): attend to real tokens only
    h = layers.Embedding(vocabulary_size(x), dim)(x)  # (batch, seq, dim)
    h = layers.Dropout(dropout)(PositionEmbedding(x.shape[1], dim)(h))
    for _ in range(num_layers):
        h = encoder_block(h, mask, dim, heads, mlp_dim, dropout)
    return layers.LayerNormalization(epsilon=1e-6)(h), not_pad


@MODELS.register
def transformer(x: Any, num_classes: int, dim: int = 128, heads: int = 4, num_layers: int = 2, mlp_dim: int = 256, dropout: float = 0.1) -> Any:
    """Transformer encoder classifier; the padded positions are masked out of attention and pooling.

    Args:
        dim: model width (token and position embeddings).
        heads: attention heads (dim must divide evenly).
        num_layers: encoder blocks.
        mlp_dim: hidden width of each block's feed-forward network.
        dropout: dropout on attention weights, residual branches and before the output.
    """
    require(x, "transformer", "text", "'cnn' or 'mlp' for images, 'mlp' for tables, 'gpt' for a corpus")
    h, not_pad = encoder(x, dim, heads, num_layers, mlp_dim, dropout)
    pooled = ops.sum(h * not_pad[..., None], axis=1) / ops.maximum(ops.sum(not_pad, axis=1, keepdims=True), 1.0)
    return classifier_head(pooled, num_classes, dropout)  # mean over real tokens -> probabilities


@MODELS.register(reads="masked corpus")
def transformer_mlm(x: Any, num_classes: int, dim: int = 128, heads: int = 4, num_layers: int = 2, mlp_dim: int = 256, dropout: float = 0.1) -> Any:
    """transformer's encoder pre-trained as BERT is: 15% of the tokens masked, their logits (batch, seq, vocab)
    predicted at every position. On a text dataset (imdb, a folder) it reads the training split's texts; a
    `transformer` classifier of the same sizes starts from it (--init).

    Args:
        dim: model width (token and position embeddings).
        heads: attention heads (dim must divide evenly).
        num_layers: encoder blocks.
        mlp_dim: hidden width of each block's feed-forward network.
        dropout: dropout on attention weights and residual branches.
    """
    require(x, "transformer_mlm", "corpus", "'transformer' to classify texts")
    h, _ = encoder(x, dim, heads, num_layers, mlp_dim, dropout)
    return layers.Dense(num_classes, dtype="float32", name="logits")(h)  # (batch, seq, vocab)
