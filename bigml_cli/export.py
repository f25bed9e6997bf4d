"""Export a run for serving (SavedModel, ONNX or LiteRT), then reload it and check it against Keras.

Every format takes the raw inputs `bigml predict` takes: a uint8 image batch, token ids for language
models. Only the SavedModel takes raw strings (text models) and one input per table column.
"""

import importlib.util
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import tensorflow as tf

from bigml_cli import files, runs

from bigml_cli.errors import UserError, unknown
from bigml_cli.evaluate import load_model
from bigml_cli.runs import EXPORT_FILES
from bigml_cli.tasks import Task, load_for, task_for

FORMATS = ("savedmodel", "onnx", "litert")
NEEDS = {"onnx": ("tf2onnx", "onnxruntime"), "litert": ("ai_edge_litert",)}  # modules each format imports
PACKAGES = {"onnx": "tf2onnx onnx onnxruntime", "litert": "ai-edge-litert"}  # what pip installs them from
NAMES = {"savedmodel": "SavedModel", "onnx": "ONNX model", "litert": "LiteRT model"}  # for messages
TOLERANCE = 1e-4  # max |probability difference| between the export and the Keras model


class ExportMismatch(RuntimeError):
    """The reloaded export disagrees with the Keras model: an internal failure, not a user error."""


def check_format(fmt: str, info: dict) -> None:
    """Refuse, as a user error, a format this run's inputs or this installation cannot export to."""
    if fmt == "savedmodel":
        return
    task = task_for(info)
    if fmt not in task.export_formats:
        raise UserError(f"{fmt} export takes image and language models (one numeric tensor in); this "
                        f"{info['kind']} model takes {task.serving_inputs}: export it with --format savedmodel")
    missing = [m for m in NEEDS[fmt] if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"{fmt} export needs {', '.join(missing)}; install them with: pip install {PACKAGES[fmt]}")


def forward(model: Any, task: Task) -> Callable:
    """The forward pass on raw inputs, its output named: what every format serves."""
    return lambda inputs: {task.output_name: model(inputs, training=False)}


def serving_function(model: Any, task: Task, info: dict) -> Any:
    return tf.function(forward(model, task), autograph=False).get_concrete_function(*task.input_signature(info))


def write_savedmodel(model: Any, task: Task, info: dict, path: Path) -> None:
    import keras

    module = task.serving_module(model, info)
    if module is not None:
        tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
        return
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", forward(model, task), input_signature=task.input_signature(info))
    task.add_endpoints(archive, model, info)
    archive.write_out(str(path), verbose=False)


def write_onnx(model: Any, task: Task, info: dict, path: Path) -> None:
    """tf2onnx on the frozen graph: Keras' own ONNX export leaves constants captured by layers (the
    Normalization layer's mean and variance) as extra graph inputs, which ONNX Runtime then demands."""
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(serving_function(model, task, info))
    Path(path).mkdir(parents=True)
    logger, level = tf.get_logger(), tf.get_logger().level
    logger.setLevel("ERROR")  # tf2onnx calls TF1 graph utilities, each of which warns it is deprecated
    try:
        tf2onnx.convert.from_graph_def(without_erfc(frozen.graph.as_graph_def()),
                                       input_names=[t.name for t in frozen.inputs],
                                       output_names=[t.name for t in frozen.outputs],
                                       output_path=str(Path(path) / EXPORT_FILES["onnx"]))
    finally:
        logger.setLevel(level)


def without_erfc(graph_def: Any) -> Any:
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


def write_litert(model: Any, task: Task, info: dict, path: Path) -> None:
    """Converted from the SavedModel, as Keras' own LiteRT export does: converting the concrete function
    directly gave a model whose every output was NaN (the tutorial CNN on MNIST, TF 2.21)."""
    import tempfile

    with tempfile.TemporaryDirectory() as saved:
        write_savedmodel(model, task, info, saved)
        flatbuffer = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=["serving_default"]).convert()
    Path(path).mkdir(parents=True)
    (Path(path) / EXPORT_FILES["litert"]).write_bytes(flatbuffer)


WRITERS = {"savedmodel": write_savedmodel, "onnx": write_onnx, "litert": write_litert}


def savedmodel_runner(path: Path, task: Task, info: dict) -> Callable:
    """serving_default as a function of a batch; its `.signatures` are the reloaded SavedModel's (for
    serving_bytes), so the export is loaded once."""
    signatures = tf.saved_model.load(str(path)).signatures
    serve = signatures["serving_default"]
    spec, = task.input_signature(info)  # a table's is a dict of columns, named as its batches are

    def run(batch):
        inputs = {k: tf.constant(v) for k, v in batch.items()} if isinstance(spec, dict) else \
            {spec.name: tf.constant(batch)}
        return serve(**inputs)[task.output_name].numpy()

    run.signatures = signatures
    return run


def onnx_runner(path: Path, task: Task, info: dict) -> Callable:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(Path(path) / EXPORT_FILES["onnx"]), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


def litert_runner(path: Path, task: Task, info: dict) -> Callable:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(Path(path) / EXPORT_FILES["litert"]))
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


def batches(x: Any, size: int = 256) -> list:
    if isinstance(x, dict):
        n = len(next(iter(x.values())))
        return [{k: v[i:i + size] for k, v in x.items()} for i in range(0, n, size)]
    return [x[i:i + size] for i in range(0, len(x), size)]


def verify(path: Path, model: Any, task: Task, info: dict, x: Any, fmt: str = "savedmodel") -> dict:
    """Reload the export and compare its outputs with the Keras model's on inputs `x`."""
    runner = RUNNERS[fmt](path, task, info)
    got = np.concatenate([runner(batch) for batch in batches(x)])
    what = f"exported {NAMES[fmt]} disagrees with the Keras model"
    expected = task.expected_outputs(model, x, info)
    ok, check, differs = task.compare(got, expected)
    if not ok:
        raise ExportMismatch(f"{what}: {differs}; the export was removed")
    return {**check, **task.extra_checks(runner, x, expected, what, fmt)}


def check_inputs(run: Any, task: Task, info: dict, data_root: Union[str, Path], count: int) -> tuple:
    """(inputs, what they are) to check the export against: the run's own (its task says which), or random
    inputs of the model's spec when its dataset is not on this machine."""
    try:
        ds = load_for(run.config, data_root)
    except UserError:  # exporting needs the model, not the data: e.g. a run copied to a serving machine
        return task.random_inputs(info, min(count, 256)), f"random inputs ({run.config.data.name} is not here)"
    return task.export_inputs(ds, count)


def check_target(out: Path, run_path: Union[str, Path], overwrite: bool) -> None:
    """`out` may be replaced only when it is an earlier export: never the run itself, a folder holding the run,
    or a folder of other files."""
    if not out.exists():
        return
    if not overwrite:
        raise UserError(f"export target {out} already exists; pass --out elsewhere or --overwrite to replace it")
    if Path(run_path).resolve().is_relative_to(out.resolve()):
        raise UserError(f"--out {out} holds the run {run_path} itself; pick an --out outside it, e.g. the default "
                        f"{Path(run_path) / 'export'}/FORMAT")
    is_export = out.is_dir() and (not any(out.iterdir()) or any((out / f).is_file() for f in runs.EXPORT_MARKS))
    if not is_export:
        raise UserError(f"{out} is not an earlier export, so --overwrite will not delete it; pick another --out")


def export(run_path: Union[str, Path], fmt: str = "savedmodel", out: Optional[Union[str, Path]] = None, overwrite: bool = False, data_root: Optional[Union[str, Path]] = None,
           check_examples: int = 1000) -> dict:
    """`bigml export`: write the export atomically (to a temporary folder, then renamed) once it matches
    the Keras model on up to `check_examples` of the run's test inputs (random ones without its dataset)."""
    if fmt not in FORMATS:
        raise unknown("export format", fmt, FORMATS)
    run = runs.open_run(run_path)
    out = Path(out) if out else run.default_export(fmt)
    check_target(out, run.path, overwrite)
    info = run.info.input
    task = task_for(info)
    check_format(fmt, info)
    model = load_model(run)
    x, checked_on = check_inputs(run, task, info, data_root, check_examples)
    with files.atomic_path(out) as tmp:  # checked before it replaces an earlier export
        WRITERS[fmt](model, task, info, tmp)
        task.write_extras(info, tmp, fmt)
        check = verify(tmp, model, task, info, x, fmt)
    artifact = {"file": str(out / EXPORT_FILES[fmt])} if fmt in EXPORT_FILES else {}
    needs = {"needs": task.serving_needs(info)} if task.serving_needs(info) else {}
    return {"path": str(out), "format": fmt, **artifact, **check, "checked_on": checked_on, **needs}
