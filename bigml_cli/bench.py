"""`bigml bench`: throughput, FLOPs, fraction of peak and time-to-accuracy for a recipe, and bigml's
throughput against the hand-written Keras baseline (baseline.py), measured in pairs of fresh processes."""

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from bigml_cli import USER_ONEDNN
from bigml_cli.errors import UserError

GPU_PEAK_FP32 = {"H100": 67e12, "H200": 67e12, "A100": 19.5e12, "V100": 15.7e12, "T4": 8.1e12, "L4": 30e12}


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity set where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def cpu_peak(info: Optional[dict] = None, lscpu: Any = None, precision: str = "float32") -> tuple:
    """Peak FLOP/s of this CPU: cores x clock x FLOPs per cycle (2 FMA units x vector lanes x 2), for float32;
    twice that for mixed_bfloat16 on AVX512_BF16, whose dot products take two bfloat16 pairs per float32
    lane. `info`, `lscpu`: the texts of /proc/cpuinfo and `lscpu` (read from this machine when not given)."""
    from bigml_cli.distribute import cpu_flags

    if info is None:
        info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = cpu_flags(info)
    mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", info, re.M)]
    if lscpu is None:
        try:
            lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        except OSError:
            lscpu = ""
    max_mhz = re.search(r"CPU max MHz:\s*([\d.]+)", lscpu)
    mhz = [float(max_mhz.group(1))] if max_mhz else mhz
    family = re.search(r"^cpu family\s*:\s*(\d+)", info, re.M)
    # AMD's Zen 4 (family 25) runs AVX-512 instructions as two halves on its 256-bit FMA units: AVX2's peak.
    zen4 = "AuthenticAMD" in info and family is not None and int(family.group(1)) == 25
    lanes = 16 if "avx512f" in flags and not zen4 else 8 if "avx2" in flags else 4
    per_cycle = lanes * 2 * (2 if "fma" in flags or "avx512f" in flags else 1)
    cores = usable_cores()
    clock = (max(mhz) if mhz else 2000.0) * 1e6
    isa = ("AVX-512 on 256-bit units, AMD Zen 4" if zen4 and "avx512f" in flags else "AVX-512" if "avx512f" in flags
           else "AVX2+FMA" if "avx2" in flags else "SSE")
    if precision == "mixed_bfloat16" and "avx512_bf16" in flags:
        per_cycle, isa = per_cycle * 2, isa + ", bfloat16 dot products"
    else:
        isa += ", float32"
    return cores * clock * per_cycle, f"{cores} cores x {clock / 1e9:.2f} GHz x {per_cycle} FLOP/cycle ({isa})"


ABOVE_PEAK = ("above 100% of the peak: the cores run faster than the clock the machine reports (turbo), or the "
              "kernels need fewer FLOPs than a direct convolution (Winograd)")


def peak_caveat(fractions: list) -> str:
    """The note owed to a reader when a measured fraction of the computed peak exceeds 1, else ""."""
    return ABOVE_PEAK if any(f is not None and f > 1 for f in fractions) else ""


def device_peak(precision: str = "float32") -> tuple:
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        name = tf.config.experimental.get_device_details(gpu).get("device_name", "")
        for key, peak in GPU_PEAK_FP32.items():
            if key in name:
                return peak, f"{name} (fp32 dense)"
    return cpu_peak(precision=precision)


LOOP_OPS = ("While", "StatelessWhile", "LoopCond")  # a recurrent layer's time loop: the profiler counts one step


def forward_flops(model: Any) -> Optional[float]:
    """FLOPs of one example's forward pass, counted by TensorFlow's profiler on the frozen graph; None when
    the profiler cannot count them (a recurrent layer's loop). A text model is counted from its token ids: its
    tokenizer's lookup table is not arithmetic, and its string input leaves every shape unknown to the
    profiler."""
    import keras
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    tokenizer = next((layer for layer in model.layers if isinstance(layer, keras.layers.TextVectorization)), None)
    if tokenizer is not None:
        model = keras.Model(tokenizer.output, model.output)
    inp = model.inputs[0]
    spec = tf.TensorSpec((1, *inp.shape[1:]), inp.dtype)
    logger = tf.get_logger()  # the v1 profiler logs a deprecation warning (3 lines) the first time it runs
    level = logger.level
    logger.setLevel("ERROR")
    try:
        forward = tf.function(lambda x: model(x, training=False), autograph=False)
        frozen = convert_variables_to_constants_v2(forward.get_concrete_function(spec))
        if any(op.type in LOOP_OPS for op in frozen.graph.get_operations()):
            return None
        opts = tf.compat.v1.profiler.ProfileOptionBuilder(
            tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()).with_empty_output().build()
        return int(tf.compat.v1.profiler.profile(graph=frozen.graph, options=opts).total_float_ops)
    finally:
        logger.setLevel(level)


def _bigml_once(recipe, cfg, data_dir, workdir, steps):
    """One bigml measurement: an epoch of the recipe in a fresh process; returns its run's numbers."""
    run_dir = Path(workdir) / "run"
    cmd = [sys.executable, "-m", "bigml_cli.cli", "train", cfg.model["name"], "--recipe", recipe, "--run-dir",
           str(run_dir), "--overwrite", "--json", "train.epochs=1"]
    if cfg.data.val_fraction == 0:  # a recipe that trains on every example: hold out 10% to time accuracy
        cmd.append("data.val_fraction=0.1")
    if data_dir:
        cmd += ["--data-dir", str(data_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bigml train failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), run_dir


def _baseline_once(data_dir, steps):
    cmd = [sys.executable, "-m", "bigml_cli.baseline", "--steps", str(steps)]
    if data_dir:
        cmd += ["--data-dir", str(data_dir)]
    env = dict(os.environ, BIGML_TF_DEFAULTS="1")  # the tutorial script runs as the user's TensorFlow would
    if USER_ONEDNN is None:  # bigml set it; a user's own value is already in os.environ and stays
        env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"baseline failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def time_to_accuracy(history_file: Union[str, Path], target: Any) -> Optional[float]:
    """Seconds from the start of training until validation accuracy first reached `target`, else None."""
    import csv

    with open(history_file) as f:
        for row in csv.DictReader(f):
            if float(row.get("val_accuracy") or 0) >= target:
                return float(row["elapsed_seconds"])
    return None


def bench(recipe: str = "tutorial_cnn_cifar10", pairs: int = 3, data_dir: Optional[Union[str, Path]] = None, target: float = 0.5, baseline: bool = True) -> dict:
    """Measure a recipe (one epoch per measurement) and, for the tutorial CNN, the baseline, in pairs."""
    import keras

    from bigml_cli import config
    from bigml_cli.data import load_dataset
    from bigml_cli.models import build_model

    path = config.find_recipe(recipe, None, None)
    raw_model = config.read_recipe(path)["model"]["name"]
    cfg = config.load(raw_model, recipe=recipe)
    if baseline and cfg.model["name"] != "tutorial_cnn":
        raise UserError("the hand-written baseline trains the tutorial CNN; bench tutorial_cnn_cifar10, "
                        "or pass --no-baseline")
    ds = load_dataset(cfg.data, data_dir)
    model = build_model(cfg.model, ds.input_info, ds.num_classes)
    forward = forward_flops(model)
    flops = None if forward is None else 3 * forward  # training = forward + backward (about twice the forward)
    steps = len(ds.y_train) // cfg.train.batch_size
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(pairs):
            metrics, run_dir = _bigml_once(recipe, cfg, data_dir, tmp, steps)
            precision = metrics.get("precision", cfg.train.precision)  # auto: what this machine picked
            row = {"pair": i + 1, "bigml_examples_per_second": metrics["examples_per_second"],
                   "bigml_time_to_target_seconds": time_to_accuracy(run_dir / "history.csv", target)}
            if baseline:
                base = _baseline_once(data_dir, steps)
                row["baseline_examples_per_second"] = round(base["examples_per_second"], 1)
                row["ratio"] = round(metrics["examples_per_second"] / base["examples_per_second"], 3)
            rows.append(row)
    throughput = float(np.median([r["bigml_examples_per_second"] for r in rows]))
    peak, peak_how = device_peak(precision)  # of the precision the recipe trained in here
    keras.backend.clear_session()
    result = {
        "recipe": recipe, "model": cfg.model["name"], "global_batch_size": cfg.train.batch_size,
        "precision": precision,
        "examples_per_second": round(throughput, 1), "train_flops_per_example": flops,
        "achieved_flops_per_second": None if flops is None else round(flops * throughput),
        "peak_flops_per_second": round(peak), "peak": peak_how,
        "fraction_of_peak": None if flops is None else round(flops * throughput / peak, 4),
        "target_val_accuracy": target, "pairs": rows,
    }
    if baseline:
        result["median_ratio_vs_baseline"] = float(np.median([r["ratio"] for r in rows]))
    return result
