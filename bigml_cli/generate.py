"""Text generation from a language-model run: temperature and top-k sampling, seeded."""

from pathlib import Path
from typing import Any, Union

import numpy as np

from bigml_cli import runs
from bigml_cli.errors import UserError
from bigml_cli.evaluate import load_model


def unknown_words(prompt: str, info: dict) -> list:
    """The prompt's words that a word-level model reads as <unk>, each once, in order."""
    known = set(info["vocab"])
    return [] if info["tokens"] == "characters" else list(dict.fromkeys(w for w in prompt.split() if w not in known))


def encode(prompt: str, info: dict) -> list:
    vocab = info["vocab"]
    index = {t: i for i, t in enumerate(vocab)}
    if info["tokens"] == "characters":
        unknown = sorted({c for c in prompt if c not in index})
        if unknown:
            raise UserError(f"the prompt has characters outside the model's vocabulary: {''.join(unknown)!r}; "
                            f"use only these: {''.join(vocab)!r}")
        return [index[c] for c in prompt]
    return [index.get(w, index["<unk>"]) for w in prompt.split()]


def continue_tokens(model: Any, ids: list, length: int, max_tokens: int, temperature: float, top_k: int,
                    seed: int) -> list:
    """`ids` and `max_tokens` more, written by keras-hub's samplers in one compiled loop (bigml_cli.decode, as
    translations are): greedy at temperature 0, else seeded sampling (among the `top_k` likeliest when set). The
    model reads the last `length` tokens before each position (its window slides over a long text)."""
    import tensorflow as tf

    from bigml_cli.decode import sampler

    prompt = np.zeros((1, max(len(ids) + max_tokens, length)), np.int32)
    prompt[0, :len(ids)] = ids

    def next(prompt, cache, index):
        start = tf.maximum(0, index - length)  # padding after the context: the causal mask hides it
        logits = model(tf.slice(prompt, [0, start], [-1, length]), training=False)
        return tf.gather(logits, index - 1 - start, axis=1), None, cache

    # a temperature this small picks the likeliest token anyway, and dividing by it would overflow
    chosen = sampler("greedy" if temperature < 1e-4 else "sample", temperature, top_k, seed)
    out = tf.function(lambda p: chosen(next, p, index=len(ids)))(tf.constant(prompt))
    return [int(t) for t in out.numpy()[0, :len(ids) + max_tokens]]


def generate(run_path: Union[str, Path], prompt: str, max_tokens: int = 200, temperature: float = 1.0, top_k: int = 0,
             seed: int = 0) -> dict:
    """`bigml generate`: continue `prompt` by sampling `max_tokens` tokens; the same seed, the same text."""
    from bigml_cli.tasks import task_for

    run = runs.open_run(run_path)
    info = run.info.input
    task = task_for(info)
    if not task.generates:
        raise UserError(f"run {run_path} is {task.described}; `bigml generate` needs a language-model run "
                        f"(e.g. bigml train gpt --dataset tinyshakespeare); {task.instead.format(run=run_path)}")
    for bad, message in ((max_tokens < 1, f"--max-tokens must be 1 or more, got {max_tokens}"),
                         (not 0 <= temperature < np.inf, f"--temperature must be a number from 0 up (0: always the "
                          f"likeliest token; 1: the model's own probabilities), got {temperature}"),
                         (top_k < 0, f"--top-k must be 0 (no cut) or more, got {top_k}"),
                         (seed < 0, f"--seed must be 0 or more, got {seed}")):
        if bad:
            raise UserError(message)
    ids = encode(prompt, info)
    if not ids:  # an empty prompt, or only spaces for a word-level model
        raise UserError("give a --prompt to continue (it has no tokens: "
                        f"{'it is empty' if not prompt else 'a word-level model reads words, and it has none'})")
    tokens = continue_tokens(load_model(run), ids, info["sequence_length"], max_tokens, temperature, top_k, seed)
    sep = "" if info["tokens"] == "characters" else " "
    vocab = info["vocab"]
    return {"prompt": prompt, "text": sep.join(vocab[i] for i in tokens), "tokens": max_tokens, "seed": seed,
            "unknown_words": unknown_words(prompt, info)}
