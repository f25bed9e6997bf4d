"""Translating many sentences with a seq2seq run, and scoring translations with sacrebleu (corpus BLEU and chrF
on detokenized text, as published figures are)."""

from pathlib import Path
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from bigml_cli import files
from bigml_cli.errors import UserError

DEFAULT_DECODING = {"method": "greedy", "beams": 4, "alpha": 0.6, "temperature": 1.0, "top_k": 0, "seed": 0}


def decoding(beam: int = 0, alpha: float = 0.6, sample: bool = False, temperature: float = 1.0, top_k: int = 0,
             seed: int = 0) -> dict:
    """The decoding options of `predict` and `eval`, checked: greedy by default, beam search with --beam N,
    seeded sampling with --sample."""
    if beam < 0 or beam == 1:
        raise UserError(f"--beam must be 2 or more (beam search) or 0 (greedy), got {beam}")
    if beam and sample:
        raise UserError("--beam and --sample are two ways to decode; give one of them")
    if not 0 < temperature < np.inf or top_k < 0 or alpha < 0:
        raise UserError("--temperature must be above 0, --top-k 0 or more and --length-penalty 0 or more")
    method = "beam" if beam else "sample" if sample else "greedy"
    return {**DEFAULT_DECODING, "method": method, "beams": beam or 4, "alpha": alpha, "temperature": temperature,
            "top_k": top_k, "seed": seed}


def translate_all(translator: Any, sources: Any, options: Optional[dict] = None, batch: int = 128,
                  progress: Optional[str] = None) -> tuple:
    """(translations, how many sources were longer than the model reads and were cut): batches of `batch`
    sentences, each decoded in one compiled graph."""
    from rich.progress import track

    from bigml_cli.decode import sampler

    options = {**DEFAULT_DECODING, **(options or {})}
    options["chosen"] = None if options["method"] == "beam" else sampler(
        options["method"], options["temperature"], options["top_k"], options["seed"])
    run = tf.function(lambda ids: translator.target.decode(translator.translate_ids(ids, **options)),
                      reduce_retracing=True)
    outputs, cut = [], 0
    starts = range(0, len(sources), batch)
    for i in (track(starts, description=progress, transient=True) if progress and len(sources) > batch else starts):
        ids, counts = translator.encode(tf.constant([str(s) for s in sources[i:i + batch]]))
        cut += int(np.sum(counts.numpy() > translator.source_length))
        outputs += [t.decode("utf-8") for t in run(ids).numpy()]
    return outputs, cut


def scores(outputs: list, references: list) -> dict:
    """sacrebleu's corpus BLEU (13a tokenization, the default) and chrF."""
    import sacrebleu

    return {"bleu": float(sacrebleu.corpus_bleu(outputs, [references]).score),
            "chrf": float(sacrebleu.corpus_chrf(outputs, [references]).score)}


def worst(sources: Any, references: Any, outputs: list, n: int = 10) -> list:
    """The `n` sentences with the lowest sentence BLEU (ties: the longer reference first)."""
    import sacrebleu

    bleu = [sacrebleu.sentence_bleu(o, [r]).score for o, r in zip(outputs, references)]
    order = sorted(range(len(outputs)), key=lambda i: (bleu[i], -len(references[i])))[:n]
    return [{"source": str(sources[i]), "reference": str(references[i]), "output": outputs[i],
             "bleu": round(bleu[i], 2)} for i in order]


def report(translator: Any, sources: Any, references: Any, token_batches: Any, options: dict,
           names: Optional[list] = None) -> tuple:
    """(report, predictions rows): BLEU and chrF of the decoded sources against the references, the
    teacher-forced token loss and accuracy, and the 10 worst sentences."""
    from bigml_cli.evaluate import token_report
    from bigml_cli.models import inference

    outputs, cut = translate_all(translator, sources, options, progress="translating")
    tokens = token_report(inference(translator.model), token_batches)
    result = {**scores(outputs, [str(r) for r in references]), "loss": tokens["loss"],
              "accuracy": tokens["accuracy"], "tokens": tokens["examples"], "examples": len(outputs),
              "decoding": {k: options[k] for k in ("method", "beams", "alpha") if options["method"] == "beam" or
                           k == "method"},
              "worst": worst(sources, references, outputs),
              "notes": [f"note: {cut:,} source sentences are longer than the model's {translator.source_length} "
                        "tokens and were cut"] if cut else []}
    rows = [[*([names[i]] if names else []), str(s), str(r), o]
            for i, (s, r, o) in enumerate(zip(sources, references, outputs))]
    return result, rows


def save(result: dict, rows: list, out_dir: Path, named: bool = False) -> None:
    """report.json and predictions.csv (source, reference, output; each pair's FILE:LINE first when named)."""
    import json

    files.write_text(out_dir / "report.json", json.dumps(result, indent=2, ensure_ascii=False))
    files.write_csv(out_dir / "predictions.csv", [[*(["input"] if named else []), "source", "reference", "output"],
                                                  *rows])
