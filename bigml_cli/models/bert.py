"""BERT: a bidirectional transformer encoder (keras-hub's BertBackbone) with a classification head on the
mean of its outputs over the real tokens. From scratch it reads the run's own vocabulary; with `--init` of a
BERT preset or Hugging Face folder it takes the preset's sizes, weights and WordPiece tokenizer."""

from typing import Any

from keras import layers, ops

from bigml_cli.errors import UserError
from bigml_cli.hub import WordPieceIds  # noqa: F401  (registers the tokenizer layer a saved model holds)
from bigml_cli.models.base import MODELS, classifier_head, require, vocabulary_size


@MODELS.register
def bert(x: Any, num_classes: int, dim: int = 128, heads: int = 2, num_layers: int = 2, mlp_dim: int = 512, dropout: float = 0.1, max_positions: int = 512) -> Any:
    """BERT encoder classifier; the padded positions (id 0) are masked out of attention and pooling.

    Args:
        dim: model width (hidden_dim).
        heads: attention heads (dim must divide evenly).
        num_layers: encoder blocks.
        mlp_dim: hidden width of each block's feed-forward network (intermediate_dim).
        dropout: dropout in the encoder and before the head.
        max_positions: position embeddings (at least data.sequence_length; a preset's own number to load it).
    """
    import keras_hub

    require(x, "bert", "text", "'cnn' or 'mlp' for images, 'mlp' for tables, 'gpt' for a corpus")
    if dim % heads:
        raise UserError(f"model.dim {dim} must be a multiple of model.heads {heads}")
    if x.shape[1] > max_positions:
        raise UserError(f"data.sequence_length {x.shape[1]} is longer than model.max_positions {max_positions}; "
                        f"use at most {max_positions} tokens")
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=vocabulary_size(x), num_layers=num_layers, num_heads=heads, hidden_dim=dim,
        intermediate_dim=mlp_dim, dropout=dropout, max_sequence_length=max_positions, name="backbone")
    backbone.get_layer("pooled_dense").trainable = False  # the [CLS] pooler: this head pools the mean instead
    not_pad = ops.not_equal(x, 0)  # (batch, seq)
    h = backbone({"token_ids": x, "segment_ids": ops.zeros_like(x), "padding_mask": not_pad})["sequence_output"]
    weight = ops.cast(not_pad, h.dtype)[..., None]  # (batch, seq, 1)
    pooled = ops.sum(h * weight, axis=1) / ops.maximum(ops.sum(weight, axis=1), 1.0)  # (batch, dim)
    return classifier_head(layers.Identity(name="pooled")(pooled), num_classes, dropout)
