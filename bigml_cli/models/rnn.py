"""RNN: token embeddings read by (bidirectional, stacked) LSTM or GRU layers, for text classification."""

from typing import Any

from keras import layers

from bigml_cli.models.base import MODELS, classifier_head, require, vocabulary_size


@MODELS.register
def rnn(x: Any, num_classes: int, embedding_dim: int = 128, units: int = 64, cell: str = "lstm", bidirectional: bool = True, num_layers: int = 1,
        dropout: float = 0.3) -> Any:
    """Recurrent text classifier.

    Args:
        embedding_dim: size of the learned token embeddings.
        units: hidden units of each recurrent layer (per direction).
        cell: "lstm" or "gru".
        bidirectional: read the text both ways and concatenate.
        num_layers: stacked recurrent layers.
        dropout: dropout on the embeddings and before the output.
    """
    require(x, "rnn", "text", "'cnn' or 'mlp' for images, 'mlp' for tables, 'gpt' for a corpus")
    if cell not in ("lstm", "gru"):
        from bigml_cli.errors import unknown

        raise unknown("value for model.cell", cell, ("lstm", "gru"))
    recurrent = layers.LSTM if cell == "lstm" else layers.GRU
    x = layers.Embedding(vocabulary_size(x), embedding_dim, mask_zero=True)(x)  # (batch, seq, embedding_dim)
    x = layers.Dropout(dropout)(x)
    for i in range(num_layers):
        last = i == num_layers - 1
        layer = recurrent(units, return_sequences=not last)
        x = layers.Bidirectional(layer)(x) if bidirectional else layer(x)  # (batch, [seq,] units * directions)
    return classifier_head(x, num_classes, dropout)
