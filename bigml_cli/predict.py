"""Prediction on the user's own inputs; the run's task reads them (images, .npy arrays, CSV rows, texts)."""

from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from bigml_cli import files, runs

from bigml_cli.data.base import files_in
from bigml_cli.errors import UserError
from bigml_cli.evaluate import load_model, predict_probs


def read_npy(path: Union[str, Path], shape: list) -> np.ndarray:
    """A .npy file as a batch of images of `shape` (H, W, C); accepts (H, W) when C is 1, and the
    channels-first (C, H, W) that PyTorch code saves."""
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:
        raise UserError(f"{path} is not a readable .npy array ({type(e).__name__}); save it with numpy.save") from None
    shape, given = tuple(shape), arr.shape
    channels_first = (shape[-1],) + shape[:2]
    if arr.ndim in (3, 4) and arr.shape[-3:] == channels_first and shape[-1] != shape[0]:
        arr = np.moveaxis(arr, -3, -1)  # PyTorch's (N, C, H, W) layout
    elif shape[-1] == 1 and arr.shape[-2:] == shape[:2]:
        arr = arr[..., None]
    if arr.shape == shape:
        arr = arr[None]
    if arr.shape[1:] != shape:
        raise UserError(f"{path} has shape {given} but the model expects images of shape {shape} "
                        f"(or a batch: (N, {', '.join(map(str, shape))}); channels first, "
                        f"(N, {', '.join(map(str, channels_first))}), also works)")
    if not np.issubdtype(arr.dtype, np.number):
        raise UserError(f"{path} holds {arr.dtype} values; give raw pixel values 0-255")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).reshape(len(arr), -1).any(axis=1).sum())  # images holding any
        raise UserError(f"{path} holds NaN or infinite values (in {bad} of its {len(arr)} images); "
                        "give finite pixel values 0-255")
    if np.issubdtype(arr.dtype, np.floating) and arr.size and (np.nanmin(arr) < 0 or 0 < np.nanmax(arr) <= 1):
        # the model scales raw pixels itself: x / 255 or standardized arrays would be read as near-black
        raise UserError(f"{path} holds values from {np.nanmin(arr):.3g} to {np.nanmax(arr):.3g}, not raw pixels; "
                        "save the images as 0-255 values (e.g. x * 255 for arrays scaled to 0-1)")
    return np.clip(np.round(arr), 0, 255).astype(np.uint8)


def expand_folders(files: list, suffixes: tuple) -> tuple:
    """(inputs, the ones found in folders): each folder replaced by the files in it (and its sub-folders) whose
    names end in one of `suffixes` (those the run's model reads)."""
    out, in_folders = [], set()
    for f in files:
        if not Path(f).is_dir():
            out.append(f)
            continue
        found = files_in(f, suffixes)
        if not found:
            raise UserError(f"folder {f} holds no {'/'.join(suffixes)} files to predict on")
        out += [str(p) for p in found]
        in_folders.update(str(p) for p in found)
    return out, in_folders


def require_files(files: list, from_files: bool, takes: str) -> None:
    """Every input must be an existing file; words given to a model that takes `takes` are named as such."""
    for f in files:
        if not Path(f).is_file() and not from_files and (" " in f or not Path(f).suffix):
            raise UserError(f"'{f[:40]}' is not a file, and this run's model takes {takes}, not text")
        if not Path(f).is_file():
            raise UserError(f"input file {f} does not exist")


def check_out(out: Union[str, Path], files: list, overwrite: bool) -> Path:
    """--out must be a new .csv file (or one --overwrite may replace), and none of the inputs."""
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise UserError(f"--out {out} must name a .csv file (one row per input, a column per class)")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name ending in .csv")
    if any(Path(f).exists() and Path(f).resolve() == out.resolve() for f in files):
        raise UserError(f"--out {out} is one of the inputs; give another file name")
    if out.exists() and not overwrite:
        raise UserError(f"--out {out} already exists; pick another name or pass --overwrite to replace it")
    return out


def write_predictions(out: Path, names: list, probs: np.ndarray, classes: list) -> None:
    """One row per input: its name, the likeliest class, its probability, then every class's probability.
    Written to a temporary name and renamed, so an interrupted write leaves no half file."""
    rows = ([name, classes[int(np.argmax(p))], f"{p.max():.6g}", *(f"{v:.6g}" for v in p)]
            for name, p in zip(names, probs))
    files.write_csv(out, [["input", "predicted", "probability", *[f"p_{c}" for c in classes]], *rows])


def write_translations(out: Path, translations: list) -> None:
    """One row per input: its name, the source sentence read, its translation (written whole or not at all)."""
    files.write_csv(out, [["input", "source", "translation"],
                          *([t["input"], t["source"], t["translation"]] for t in translations)])


def check_decoding(task: Any, decoding: Optional[dict]) -> None:
    """--beam and --sample decode text: refused for a run that does not write any."""
    if decoding and decoding.get("method", "greedy") != "greedy" and not task.decodes:
        raise UserError(f"--beam and --sample choose how a translation run writes its sentences; this run is "
                        f"{task.described}: leave them out")


def predict(run_path: Union[str, Path], inputs: list, top_k: int = 5, from_files: bool = False, out: Optional[Union[str, Path]] = None,
            overwrite: bool = False, decoding: Optional[dict] = None) -> dict:
    """`bigml predict`: {"predictions": the top-k classes and probabilities of each input, "notes": what was
    left out}; with `out`, also every class's probability in a CSV file. A run that writes text (a translation)
    answers {"translations": ..., "notes": ...}, decoded as `decoding` says (greedy by default)."""
    if not inputs:
        raise UserError("give at least one input file to predict on")
    if top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {top_k}")
    if out is not None:
        out = check_out(out, inputs, overwrite)
    from bigml_cli.tasks import task_for

    run = runs.open_run(run_path)
    info = run.info
    task = task_for(info.input)
    if not task.predicts:
        raise UserError(f"run {run_path} is {task.described}; {task.instead.format(run=run_path)}")
    check_decoding(task, decoding)
    if task.decodes:
        from bigml_cli.translate import decoding as default_decoding

        answer = task.predict(run, inputs, from_files, decoding or default_decoding())
        if out is not None:
            write_translations(out, answer["translations"])
        return answer
    names, x, notes = task.read_inputs(inputs, info.input, from_files)
    probs = predict_probs(load_model(run), x, progress="predicting")
    classes = info.class_names
    k = min(top_k, len(classes))
    results = []
    for name, p in zip(names, probs):
        best = np.argsort(-p, kind="stable")[:k]
        results.append({"input": name, "top_k": [{"label": classes[i], "probability": float(p[i])} for i in best]})
    if out is not None:
        write_predictions(out, names, probs, classes)
    return {"predictions": results, "notes": notes}
