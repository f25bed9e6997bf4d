"""GPT: a decoder-only causal language model (nanoGPT's shape in Keras 3): token + learned position
embeddings, pre-norm blocks of causal multi-head self-attention and an MLP, a final norm, and a
linear map to next-token logits at every position."""

from typing import Any

from keras import layers

from bigml_cli.errors import UserError
from bigml_cli.models.base import MODELS, require, vocabulary_size
from bigml_cli.models.transformer import PositionEmbedding


def decoder_block(x: Any, dim: int, heads: int, mlp_dim: int, dropout: float) -> Any:
    h = layers.LayerNormalization(epsilon=1e-5)(x)
    h = layers.MultiHeadAttention(heads, dim // heads, dropout=dropout)(h, h, use_causal_mask=True)
    x = x + layers.Dropout(dropout)(h)  # (batch, seq, dim): position t sees positions <= t only
    h = layers.LayerNormalization(epsilon=1e-5)(x)
    h = layers.Dense(mlp_dim, activation="gelu")(h)
    return x + layers.Dropout(dropout)(layers.Dense(dim)(h))


@MODELS.register
def gpt(x: Any, num_classes: int, dim: int = 128, heads: int = 4, num_layers: int = 4, mlp_dim: int = 512, dropout: float = 0.1) -> Any:
    """Causal language model returning next-token logits (batch, seq, vocab).

    Args:
        dim: model width.
        heads: attention heads (dim must divide evenly).
        num_layers: decoder blocks.
        mlp_dim: hidden width of each block's MLP.
        dropout: dropout on embeddings, attention weights and residual branches.
    """
    require(x, "gpt", "corpus", "'rnn' or 'transformer' to classify texts (gpt trains on a corpus: "
                                "tinyshakespeare or FILE.txt)")
    if dim % heads:
        raise UserError(f"model.dim {dim} must be a multiple of model.heads {heads}")
    h = layers.Embedding(vocabulary_size(x), dim)(x)  # (batch, seq, dim)
    h = layers.Dropout(dropout)(PositionEmbedding(x.shape[1], dim)(h))
    for _ in range(num_layers):
        h = decoder_block(h, dim, heads, mlp_dim, dropout)
    h = layers.LayerNormalization(epsilon=1e-5)(h)
    return layers.Dense(num_classes, dtype="float32", name="logits")(h)  # (batch, seq, vocab)
