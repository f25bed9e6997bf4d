"""Masked language modelling (BERT's pre-training): windows of token ids with 15% of them masked in, the
original token's logits at every position out, scored on the masked positions only. An encoder trained so
starts a text classifier of the same sizes (--init)."""

from dataclasses import replace
from typing import Any

import keras
import numpy as np

from bigml_cli.data.pipeline import lm_steps_per_epoch, mlm_eval_dataset, mlm_train_dataset
from bigml_cli.errors import UserError
from bigml_cli.tasks.base import Streams, register
from bigml_cli.tasks.lm import LanguageModel

MASK = "[MASK]"  # the last entry of a masked corpus's vocabulary: after it, the ids a classifier reads are alike


def mask_id(info: dict) -> int:
    return info["vocab"].index(MASK)


@register
class MaskedLanguageModel(LanguageModel):
    kind = "mlm"
    generates = False
    described = "a masked language model (an encoder pre-trained to start a classifier)"
    instead = "fine-tune it as a classifier of its corpus's texts: bigml train transformer --dataset DATA --init {run}"
    next_step = "bigml train transformer --dataset DATA --init {run}"

    def from_corpus(self, ds: Any) -> Any:
        """The corpus with a [MASK] token added at the end of its vocabulary (the other ids are unchanged). Only
        a text dataset's corpus: its id 0 pads, as the encoder's attention mask and a classifier expect."""
        from bigml_cli.tasks.text import CORPUS_SPECIALS

        if list(ds.vocab[:2]) != CORPUS_SPECIALS:
            raise UserError(f"a masked language model pre-trains an encoder for a text classifier, on a text "
                            f"dataset's training texts (imdb, a folder of .txt files per class, a CSV with a text "
                            f"column), and {ds.name} is a corpus; use gpt for a language model of it")
        vocab = list(ds.vocab) + ([] if MASK in ds.vocab else [MASK])
        return replace(ds, vocab=vocab, kind=self.kind, input_info={**ds.input_info, "kind": self.kind, "vocab": vocab})

    def adopt_vocabulary(self, ds: Any, info: dict, cfg: Any) -> Any:
        return self.from_corpus(super().adopt_vocabulary(ds, info, cfg))

    def loop_loss(self, ds: Any, t: Any) -> tuple:
        """The multi-worker loop's loss: a mean over the masked tokens of every worker's batch."""
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None), "weights"

    def streams(self, ds: Any, cfg: Any) -> Streams:
        t, info = cfg.train, ds.input_info
        length, mask, size = info["sequence_length"], mask_id(info), len(info["vocab"])
        return Streams(
            # nats per masked token: the batches' third element is 1.0 at the masked positions, 0.0 elsewhere
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight"),
            metric=keras.metrics.SparseCategoricalAccuracy(name="accuracy"), monitor=self.monitor,
            steps=lm_steps_per_epoch(len(ds.train_ids), length, t.batch_size),
            train=lambda step=0, batch=t.batch_size, shard=None: mlm_train_dataset(
                ds.train_ids, ds.train_starts, length, batch, t.seed, mask, size, step, shard),
            val=mlm_eval_dataset(ds.val_ids, ds.val_starts, length, max(t.batch_size, 64), mask, size),
            weights=None, weighted=True)

    def notes(self, ds: Any, cfg: Any, steps: int) -> list:
        return []

    def report(self, model: keras.Model, ids: np.ndarray, starts: np.ndarray, info: dict, forward: Any = None) -> dict:
        """Loss, perplexity and accuracy on the masked tokens of the windows of `ids` starting at `starts`,
        masked alike every time (seed 0)."""
        from bigml_cli.evaluate import token_report
        from bigml_cli.models import inference

        batches = mlm_eval_dataset(ids, starts, info["sequence_length"], 64, mask_id(info), len(info["vocab"]))
        return token_report(forward or inference(model), batches)
