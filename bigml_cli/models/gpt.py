"""GPT: a decoder-only causal language model (nanoGPT's shape in Keras 3): token + learned position
embeddings, pre-norm blocks of causal multi-head self-attention and an MLP, a final norm, and a
linear map to next-token logits at every position."""

from typing import Any

from keras import layers

from bigml_cli.errors import UserError
from keras import ops

from bigml_cli.models.base import MODELS, classifier_head, require, vocabulary_size
from bigml_cli.models.transformer import PositionEmbedding


def decoder_block(x: Any, dim: int, heads: int, mlp_dim: int, dropout: float) -> Any:
    h = layers.LayerNormalization(epsilon=1e-5)(x)
    h = layers.MultiHeadAttention(heads, dim // heads, dropout=dropout)(h, h, use_causal_mask=True)
    x = x + layers.Dropout(dropout)(h)  # (batch, seq, dim): position t sees positions <= t only
    h = layers.LayerNormalization(epsilon=1e-5)(x)
    h = layers.Dense(mlp_dim, activation="gelu")(h)
    return x + layers.Dropout(dropout)(layers.Dense(dim)(h))


def decoder(x: Any, dim: int, heads: int, num_layers: int, mlp_dim: int, dropout: float) -> Any:
    """Token ids (batch, seq) -> the final norm's outputs (batch, seq, dim); the same layers, in the same
    order, in the language model and in the classifier, so that one starts the other (--init)."""
    if dim % heads:
        raise UserError(f"model.dim {dim} must be a multiple of model.heads {heads}")
    h = layers.Embedding(vocabulary_size(x), dim)(x)  # (batch, seq, dim)
    h = layers.Dropout(dropout)(PositionEmbedding(x.shape[1], dim)(h))
    for _ in range(num_layers):
        h = decoder_block(h, dim, heads, mlp_dim, dropout)
    return layers.LayerNormalization(epsilon=1e-5)(h)


@MODELS.register(reads="corpus")
def gpt(x: Any, num_classes: int, dim: int = 128, heads: int = 4, num_layers: int = 4, mlp_dim: int = 512, dropout: float = 0.1) -> Any:
    """Causal language model returning next-token logits (batch, seq, vocab). On a text dataset (imdb, a
    folder) it models the training split's texts.

    Args:
        dim: model width.
        heads: attention heads (dim must divide evenly).
        num_layers: decoder blocks.
        mlp_dim: hidden width of each block's MLP.
        dropout: dropout on embeddings, attention weights and residual branches.
    """
    require(x, "gpt", "corpus", "'rnn' or 'transformer' to classify texts (gpt trains on a corpus: "
                                "tinyshakespeare or FILE.txt)")
    h = decoder(x, dim, heads, num_layers, mlp_dim, dropout)
    return layers.Dense(num_classes, dtype="float32", name="logits")(h)  # (batch, seq, vocab)


@MODELS.register
def gpt_classifier(x: Any, num_classes: int, dim: int = 128, heads: int = 4, num_layers: int = 4, mlp_dim: int = 512, dropout: float = 0.1, pool: str = "mean") -> Any:
    """gpt's decoder (causal attention) as a text classifier with a new head, so a gpt language model of the
    same sizes starts it (--init).

    Args:
        dim: model width.
        heads: attention heads (dim must divide evenly).
        num_layers: decoder blocks.
        mlp_dim: hidden width of each block's MLP.
        dropout: dropout on embeddings, attention weights, residual branches and before the head.
        pool: what feeds the head: "mean", the outputs averaged over the real tokens, or "last", the last
            real token's output, which has attended to the whole text (GPT's fine-tuning, Radford et al.
            2018); mean learnt faster on IMDB, from scratch and from a language model (docs/results.md).
    """
    require(x, "gpt_classifier", "text", "'gpt' for a corpus")
    if pool not in ("last", "mean"):
        raise UserError(f"model.pool must be 'last' or 'mean', got '{pool}'")
    h = decoder(x, dim, heads, num_layers, mlp_dim, dropout)
    real = ops.cast(ops.not_equal(x, 0), h.dtype)  # (batch, seq): padding is id 0, at the end
    if pool == "last":
        weight = ops.one_hot(ops.maximum(ops.cast(ops.sum(real, axis=1), "int32") - 1, 0), x.shape[1], dtype=h.dtype)
    else:
        weight = real / ops.maximum(ops.sum(real, axis=1, keepdims=True), 1.0)
    pooled = ops.sum(h * weight[..., None], axis=1)  # (batch, dim)
    return classifier_head(pooled, num_classes, dropout)
