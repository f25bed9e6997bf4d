"""Export a run for serving (SavedModel, ONNX or LiteRT), then reload it and check it against Keras.

Every format takes the raw inputs `bigml predict` takes: a uint8 image batch, token ids for language
models. Only the SavedModel takes raw strings (text models) and one input per table column.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from bigml_cli import files, runs
from bigml_cli.data import load_dataset
from bigml_cli.errors import UserError, unknown
from bigml_cli.evaluate import load_model, predict_probs
from bigml_cli.models import inference

FORMATS = ("savedmodel", "onnx", "litert")
FILES = {"onnx": "model.onnx", "litert": "model.tflite"}  # the artifact inside the export folder
EXPORT_MARKS = ("saved_model.pb", *FILES.values())  # a folder holding one of these is an export --overwrite may replace
NEEDS = {"onnx": ("tf2onnx", "onnxruntime"), "litert": ("ai_edge_litert",)}  # modules each format imports
PACKAGES = {"onnx": "tf2onnx onnx onnxruntime", "litert": "ai-edge-litert"}  # what pip installs them from
NAMES = {"savedmodel": "SavedModel", "onnx": "ONNX model", "litert": "LiteRT model"}  # for messages
NUMERIC_KINDS = ("image", "lm")  # what ONNX and LiteRT can take
TOLERANCE = 1e-4  # max |probability difference| between the export and the Keras model


class ExportMismatch(RuntimeError):
    """The reloaded export disagrees with the Keras model: an internal failure, not a user error."""


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


def output_name(info):
    return "logits" if info["kind"] == "lm" else "probabilities"  # logits: (batch, seq, vocab), next token


def check_format(fmt, info):
    """Refuse, as a user error, a format this run's inputs or this installation cannot export to."""
    if fmt == "savedmodel":
        return
    if info["kind"] not in NUMERIC_KINDS:
        takes = "raw strings" if info["kind"] == "text" else "one input per table column"
        raise UserError(f"{fmt} export takes image and language models (one numeric tensor in); this "
                        f"{info['kind']} model takes {takes}: export it with --format savedmodel")
    missing = [m for m in NEEDS[fmt] if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"{fmt} export needs {', '.join(missing)}; install them with: pip install {PACKAGES[fmt]}")


def forward(model, info):
    """The forward pass on raw inputs, its output named: what every format serves."""
    return lambda inputs: {output_name(info): model(inputs, training=False)}


def serving_function(model, info):
    return tf.function(forward(model, info), autograph=False).get_concrete_function(*input_signature(info))


def decode_images(image_bytes, shape):
    """Encoded PNG, JPEG, GIF or BMP files (a string per image) -> a uint8 batch of `shape` (H, W, C): decoded
    to C channels and resized with an antialiased bilinear filter, as `bigml predict` reads image files."""
    h, w, c = shape

    def one(data):
        image = tf.io.decode_image(data, channels=c, expand_animations=False)
        image = tf.image.resize(image, (h, w), method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

    return tf.map_fn(one, image_bytes, fn_output_signature=tf.TensorSpec((h, w, c), tf.uint8))


BYTES_SIGNATURE = "serving_bytes"  # image models' SavedModel: encoded image files in (TF Serving's b64 JSON)


def write_savedmodel(model, info, path):
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", forward(model, info), input_signature=input_signature(info))
    if info["kind"] == "image":  # the files themselves, any size: what a web client has to send
        archive.add_endpoint(
            BYTES_SIGNATURE,
            lambda image_bytes: {"probabilities": model(decode_images(image_bytes, info["shape"]), training=False)},
            input_signature=[tf.TensorSpec((None,), tf.string, name="image_bytes")])
    archive.write_out(str(path), verbose=False)


def write_vocab(info, folder):
    """What a client needs to decode a language model's logits."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(
        {"vocab": info["vocab"], "tokens": info["tokens"], "sequence_length": info["sequence_length"]}))


def write_onnx(model, info, path):
    """tf2onnx on the frozen graph: Keras' own ONNX export leaves constants captured by layers (the
    Normalization layer's mean and variance) as extra graph inputs, which ONNX Runtime then demands."""
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(serving_function(model, info))
    Path(path).mkdir(parents=True)
    logger, level = tf.get_logger(), tf.get_logger().level
    logger.setLevel("ERROR")  # tf2onnx calls TF1 graph utilities, each of which warns it is deprecated
    try:
        tf2onnx.convert.from_graph_def(without_erfc(frozen.graph.as_graph_def()),
                                       input_names=[t.name for t in frozen.inputs],
                                       output_names=[t.name for t in frozen.outputs],
                                       output_path=str(Path(path) / FILES["onnx"]))
    finally:
        logger.setLevel(level)


def without_erfc(graph_def):
    """TensorFlow's exact GELU computes erfc, which ONNX lacks (tf2onnx passes it through, and ONNX
    Runtime then refuses the model): rewrite each erfc(x) as 1 - erf(x)."""
    for node in [n for n in graph_def.node if n.op == "Erfc"]:
        dtype = node.attr["T"].type
        erf = graph_def.node.add(name=f"{node.name}/erf", op="Erf", input=[node.input[0]])
        erf.attr["T"].type = dtype
        one = graph_def.node.add(name=f"{node.name}/one", op="Const")
        one.attr["dtype"].type = dtype
        one.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(1.0, dtype=tf.as_dtype(dtype)))
        node.op = "Sub"
        node.input[:] = [one.name, erf.name]
    return graph_def


def write_litert(model, info, path):
    """Converted from the SavedModel, as Keras' own LiteRT export does: converting the concrete function
    directly gave a model whose every output was NaN (the tutorial CNN on MNIST, TF 2.21)."""
    import tempfile

    with tempfile.TemporaryDirectory() as saved:
        write_savedmodel(model, info, saved)
        flatbuffer = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=["serving_default"]).convert()
    Path(path).mkdir(parents=True)
    (Path(path) / FILES["litert"]).write_bytes(flatbuffer)


WRITERS = {"savedmodel": write_savedmodel, "onnx": write_onnx, "litert": write_litert}


def savedmodel_runner(path, info):
    """serving_default as a function of a batch; its `.signatures` are the reloaded SavedModel's (for
    serving_bytes), so the export is loaded once."""
    signatures = tf.saved_model.load(str(path)).signatures
    serve = signatures["serving_default"]
    spec, = input_signature(info)  # a table's is a dict of columns, named as its batches are

    def run(batch):
        inputs = {k: tf.constant(v) for k, v in batch.items()} if isinstance(spec, dict) else \
            {spec.name: tf.constant(batch)}
        return serve(**inputs)[output_name(info)].numpy()

    run.signatures = signatures
    return run


def onnx_runner(path, info):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(Path(path) / FILES["onnx"]), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


def litert_runner(path, info):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(Path(path) / FILES["litert"]))
    source, = interpreter.get_input_details()
    target = interpreter.get_output_details()[0]["index"]

    def run(batch):
        interpreter.resize_tensor_input(source["index"], batch.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], batch)
        interpreter.invoke()
        return interpreter.get_tensor(target).copy()

    return run


RUNNERS = {"savedmodel": savedmodel_runner, "onnx": onnx_runner, "litert": litert_runner}


def batches(x, size=256):
    if isinstance(x, dict):
        n = len(next(iter(x.values())))
        return [{k: v[i:i + size] for k, v in x.items()} for i in range(0, n, size)]
    return [x[i:i + size] for i in range(0, len(x), size)]


def verify(path, model, info, x, fmt="savedmodel"):
    """Reload the export and compare its outputs with the Keras model's on inputs `x`."""
    run = RUNNERS[fmt](path, info)
    got = np.concatenate([run(batch) for batch in batches(x)])
    what = f"exported {NAMES[fmt]} disagrees with the Keras model"
    if info["kind"] == "lm":
        expected = np.asarray(inference(model)(x))
        diff = float(np.abs(got - expected).max())
        agree = float((got.argmax(-1) == expected.argmax(-1)).mean())
        if diff > TOLERANCE * max(1.0, float(np.abs(expected).max())) or agree < 1.0:
            raise ExportMismatch(f"{what}: max |logit diff| {diff:.2e}, next-token agreement {agree:.2%}; "
                                 "the export was removed")
        return {"max_abs_diff": diff, "top1_agreement": agree, "checked_examples": int(len(x))}
    expected = predict_probs(model, x)
    diff = float(np.abs(got - expected).max())
    agree = float((got.argmax(1) == expected.argmax(1)).mean())
    if diff > TOLERANCE or agree < 1.0:
        raise ExportMismatch(f"{what}: max |diff| {diff:.2e}, top-1 agreement {agree:.2%}; the export was removed")
    check = {"max_abs_diff": diff, "top1_agreement": agree, "checked_examples": int(len(expected))}
    if fmt == "savedmodel" and info["kind"] == "image":  # the same images, sent as PNG files
        serve = run.signatures[BYTES_SIGNATURE]
        n = min(len(x), 64)
        got = serve(image_bytes=tf.constant([png_bytes(image) for image in x[:n]]))["probabilities"].numpy()
        diff = float(np.abs(got - expected[:n]).max())
        if diff > TOLERANCE:
            raise ExportMismatch(f"{what} on PNG files ({BYTES_SIGNATURE}): max |diff| {diff:.2e}; the export "
                                 "was removed")
        check.update(bytes_max_abs_diff=diff, bytes_checked_examples=n)
    return check


def png_bytes(image):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
    return buffer.getvalue()


def check_inputs(run, info, data_root, count):
    """(inputs, what they are) to check the export against: the run's own test inputs (validation windows for
    a language model), or random inputs of the model's spec when its dataset is not on this machine."""
    try:
        ds = load_dataset(run.config.data, data_root)
    except UserError:  # exporting needs the model, not the data: e.g. a run copied to a serving machine
        return random_inputs(info, min(count, 256)), f"random inputs ({run.config.data.name} is not here)"
    if ds.kind == "lm":  # validation windows of token ids
        length = info["sequence_length"]
        windows = np.stack([ds.x_val[s:s + length] for s in ds.y_val[:count // 4 or 1]]).astype(np.int32)
        return windows, "validation text"
    if isinstance(ds.x_test, dict):
        return {k: v[:count] for k, v in ds.x_test.items()}, "test split"
    return ds.x_test[:count], "test split"


def random_inputs(info, n, seed=0):
    """`n` inputs drawn to fit the model's input spec (run.json's input): pixels, vocabulary words, column
    values around their training mean or from their categories (missing ones included), token ids."""
    rng = np.random.default_rng(seed)
    if info["kind"] == "image":
        return rng.integers(0, 256, (n, *info["shape"]), dtype=np.uint8)
    if info["kind"] == "lm":
        return rng.integers(0, len(info["vocab"]), (n // 4 or 1, info["sequence_length"]), dtype=np.int32)
    if info["kind"] == "text":
        words = np.array(info["vocab"] + ["unseen"])
        return np.array([" ".join(rng.choice(words, rng.integers(1, 2 * info["sequence_length"])))
                         for _ in range(n)], dtype=object).astype(str)
    columns = {}
    for col in info["columns"]:
        if col["type"] == "numeric":
            values = (col["mean"] + col["std"] * rng.normal(size=n)).astype(np.float32)
            values[rng.random(n) < 0.1] = np.nan
        else:
            values = rng.choice(np.array(col["vocab"] + ["", "unseen"], dtype=object), n).astype(str)
        columns[col["key"]] = values
    return columns


def check_target(out, run_path, overwrite):
    """`out` may be replaced only when it is an earlier export: never the run itself, a folder holding the run,
    or a folder of other files."""
    if not out.exists():
        return
    if not overwrite:
        raise UserError(f"export target {out} already exists; pass --out elsewhere or --overwrite to replace it")
    if Path(run_path).resolve().is_relative_to(out.resolve()):
        raise UserError(f"--out {out} holds the run {run_path} itself; pick an --out outside it, e.g. the default "
                        f"{Path(run_path) / 'export'}/FORMAT")
    is_export = out.is_dir() and (not any(out.iterdir()) or any((out / f).is_file() for f in EXPORT_MARKS))
    if not is_export:
        raise UserError(f"{out} is not an earlier export, so --overwrite will not delete it; pick another --out")


def export(run_path, fmt="savedmodel", out=None, overwrite=False, data_root=None, check_examples=1000):
    """`bigml export`: write the export atomically (to a temporary folder, then renamed) once it matches
    the Keras model on up to `check_examples` of the run's test inputs (random ones without its dataset)."""
    if fmt not in FORMATS:
        raise unknown("export format", fmt, FORMATS)
    run = runs.open_run(run_path)
    out = Path(out) if out else run.default_export(fmt)
    check_target(out, run.path, overwrite)
    info = run.info["input"]
    check_format(fmt, info)
    model = load_model(run)
    x, checked_on = check_inputs(run, info, data_root, check_examples)
    with files.atomic_path(out) as tmp:  # checked before it replaces an earlier export
        WRITERS[fmt](model, info, tmp)
        if info["kind"] == "lm":  # the SavedModel's goes where TF Serving looks: assets.extra
            write_vocab(info, tmp / "assets.extra" if fmt == "savedmodel" else tmp)
        check = verify(tmp, model, info, x, fmt)
    artifact = {"file": str(out / FILES[fmt])} if fmt in FILES else {}
    return {"path": str(out), "format": fmt, **artifact, **check, "checked_on": checked_on}
