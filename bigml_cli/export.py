"""Export a run as a SavedModel that takes raw inputs, then reload it and check it against Keras."""

import json
import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf

from bigml_cli import runs
from bigml_cli.data import load_dataset
from bigml_cli.errors import UserError
from bigml_cli.evaluate import load_model, predict_probs

FORMATS = ("savedmodel",)
TOLERANCE = 1e-4  # max |probability difference| between the SavedModel and the Keras model


class ExportMismatch(RuntimeError):
    """The reloaded SavedModel disagrees with the Keras model: an internal failure, not a user error."""


def input_signature(info):
    """The serving signature's inputs: a uint8 image batch, or one 1-D tensor per raw table column."""
    if info["kind"] == "image":
        return [tf.TensorSpec((None, *info["shape"]), tf.uint8, name="image")]
    if info["kind"] == "text":
        return [tf.TensorSpec((None,), tf.string, name="text")]
    if info["kind"] == "lm":
        return [tf.TensorSpec((None, info["sequence_length"]), tf.int32, name="tokens")]
    return [{c["key"]: tf.TensorSpec((None,), tf.float32 if c["type"] == "numeric" else tf.string, name=c["key"])
             for c in info["columns"]}]


def write_savedmodel(model, info, path):
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    output = "logits" if info["kind"] == "lm" else "probabilities"  # logits: (batch, seq, vocab), next token
    archive.add_endpoint("serving_default", lambda inputs: {output: model(inputs, training=False)},
                         input_signature=input_signature(info))
    archive.write_out(str(path), verbose=False)
    if info["kind"] == "lm":  # what a client needs to decode the logits (TF Serving's assets.extra)
        (Path(path) / "assets.extra").mkdir(exist_ok=True)
        (Path(path) / "assets.extra" / "vocab.json").write_text(json.dumps(
            {"vocab": info["vocab"], "tokens": info["tokens"], "sequence_length": info["sequence_length"]}))


def verify(path, model, info, x):
    """Reload the SavedModel and compare its probabilities with the Keras model's on real inputs."""
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    if info["kind"] == "lm":
        expected = np.asarray(model(x, training=False))
        got = serve(tokens=tf.constant(x))["logits"].numpy()
        diff = float(np.abs(got - expected).max())
        agree = float((got.argmax(-1) == expected.argmax(-1)).mean())
        if diff > TOLERANCE * max(1.0, float(np.abs(expected).max())) or agree < 1.0:
            raise ExportMismatch(f"exported SavedModel disagrees with the Keras model: max |logit diff| "
                                 f"{diff:.2e}, next-token agreement {agree:.2%}; the export was removed")
        return {"max_abs_diff": diff, "top1_agreement": agree, "checked_examples": int(len(x))}
    expected = predict_probs(model, x)
    if info["kind"] in ("image", "text"):
        got = np.concatenate([serve(**{info["kind"]: tf.constant(x[i:i + 256])})["probabilities"].numpy()
                              for i in range(0, len(x), 256)])
    else:
        n = len(next(iter(x.values())))
        got = np.concatenate([serve(**{k: tf.constant(v[i:i + 256]) for k, v in x.items()})["probabilities"].numpy()
                              for i in range(0, n, 256)])
    diff = float(np.abs(got - expected).max())
    agree = float((got.argmax(1) == expected.argmax(1)).mean())
    if diff > TOLERANCE or agree < 1.0:
        raise ExportMismatch(f"exported SavedModel disagrees with the Keras model: max |diff| {diff:.2e}, "
                             f"top-1 agreement {agree:.2%}; the export was removed")
    return {"max_abs_diff": diff, "top1_agreement": agree, "checked_examples": int(len(expected))}


def export(run_path, fmt="savedmodel", out=None, overwrite=False, data_root=None, check_examples=1000):
    """`bigml export`: write the SavedModel atomically (to a temporary folder, then renamed)."""
    if fmt not in FORMATS:
        from bigml_cli.errors import unknown

        raise unknown("export format", fmt, FORMATS)
    run = runs.open_run(run_path)
    out = Path(out) if out else run.default_export(fmt)
    if out.exists() and not overwrite:
        raise UserError(f"export target {out} already exists; pass --out elsewhere or --overwrite to replace it")
    info = run.info["input"]
    model = load_model(run)
    ds = load_dataset(run.config.data, data_root)  # real inputs to check the export against
    x = ds.x_test
    if ds.kind == "lm":  # validation windows of token ids
        length = info["sequence_length"]
        x = np.stack([ds.x_val[s:s + length] for s in ds.y_val[:check_examples // 4 or 1]]).astype(np.int32)
    if isinstance(x, dict):
        x = {k: v[:check_examples] for k, v in x.items()}
    else:
        x = x[:check_examples]
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_savedmodel(model, info, tmp)
        check = verify(tmp, model, info, x)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return {"path": str(out), "format": fmt, **check}
