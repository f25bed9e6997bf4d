"""Text generation from a language-model run: temperature and top-k sampling, seeded."""

import numpy as np

from bigml_cli import runs
from bigml_cli.errors import UserError
from bigml_cli.evaluate import load_model
from bigml_cli.models import inference


def unknown_words(prompt, info):
    """The prompt's words that a word-level model reads as <unk>, each once, in order."""
    known = set(info["vocab"])
    return [] if info["tokens"] == "characters" else list(dict.fromkeys(w for w in prompt.split() if w not in known))


def encode(prompt, info):
    vocab = info["vocab"]
    index = {t: i for i, t in enumerate(vocab)}
    if info["tokens"] == "characters":
        unknown = sorted({c for c in prompt if c not in index})
        if unknown:
            raise UserError(f"the prompt has characters outside the model's vocabulary: {''.join(unknown)!r}; "
                            f"use only these: {''.join(vocab)!r}")
        return [index[c] for c in prompt]
    return [index.get(w, index["<unk>"]) for w in prompt.split()]


def generate(run_path, prompt, max_tokens=200, temperature=1.0, top_k=0, seed=0):
    """`bigml generate`: continue `prompt` by sampling `max_tokens` tokens; the same seed, the same text."""
    run = runs.open_run(run_path)
    info = run.info["input"]
    if info["kind"] != "lm":
        raise UserError(f"run {run_path} is a classifier; `bigml generate` needs a language-model run "
                        "(e.g. bigml train gpt --dataset tinyshakespeare); use `bigml predict` here")
    if max_tokens < 1 or temperature < 0 or top_k < 0:
        raise UserError("--max-tokens must be >= 1, --temperature >= 0 (0: always the likeliest token) and "
                        "--top-k >= 0 (0: no top-k cut)")
    ids = encode(prompt, info)
    if not ids:  # an empty prompt, or only spaces for a word-level model
        raise UserError("give a --prompt to continue (it has no tokens: "
                        f"{'it is empty' if not prompt else 'a word-level model reads words, and it has none'})")
    length, vocab = info["sequence_length"], info["vocab"]
    forward = inference(load_model(run))
    rng = np.random.default_rng(seed)
    for _ in range(max_tokens):
        context = ids[-length:]
        window = np.zeros((1, length), np.int32)
        window[0, :len(context)] = context  # padding after the context: the causal mask hides it
        logits = np.asarray(forward(window))[0, len(context) - 1].astype(np.float64)
        if temperature == 0:  # greedy: the same text whatever the seed
            ids.append(int(np.argmax(logits)))
            continue
        logits /= temperature
        if top_k:
            logits[np.argsort(logits)[:-top_k]] = -np.inf
        probs = np.exp(logits - logits.max())
        ids.append(int(rng.choice(len(vocab), p=probs / probs.sum())))
    sep = "" if info["tokens"] == "characters" else " "
    return {"prompt": prompt, "text": sep.join(vocab[i] for i in ids), "tokens": max_tokens, "seed": seed,
            "unknown_words": unknown_words(prompt, info)}
