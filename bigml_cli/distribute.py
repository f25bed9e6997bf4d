"""Strategy selection from a name, as one flat if-chain (Model Garden's get_distribution_strategy).

    auto          TPU when one is configured, MirroredStrategy over >1 GPU, one GPU, else CPU
    cpu, gpu      one device
    mirrored      all local GPUs (or, without GPUs, all logical CPU devices: see BIGML_CPU_DEVICES)
    tpu           TPUClusterResolver (TPU_NAME, or the TPU VM's local TPU)
    multi-worker  MultiWorkerMirroredStrategy from TF_CONFIG (worker 0 is the chief)

BIGML_CPU_DEVICES=N splits the CPU into N logical devices before TensorFlow starts, so that
multi-replica training can be run and tested on a machine without GPUs.
"""

import contextlib
import json
import os
import platform
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import tensorflow as tf

from bigml_cli.errors import UserError, unknown

STRATEGIES = ("auto", "cpu", "gpu", "mirrored", "tpu", "multi-worker")


def cpu_flags(info: Optional[dict] = None) -> set:
    """The CPU's instruction-set flags from /proc/cpuinfo, or from its text `info` (empty where there is none)."""
    import re
    from pathlib import Path

    if info is None:
        info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    found = re.search(r"^flags\s*:(.*)$", info, re.M)
    return set(found.group(1).split()) if found else set()


BF16_FLAGS = {"avx512_bf16", "amx_bf16"}  # the CPU instructions that make bfloat16 faster than float32


def _on_cpu(strategy):
    """Whether a run with this strategy name computes on the CPU (no GPU seen, no TPU)."""
    return not tf.config.list_physical_devices("GPU") and not strategy.startswith("tpu")


@contextlib.contextmanager
def precision_policy(name: str) -> Iterator[None]:
    """Keras' global dtype policy is `name` (float32, mixed_bfloat16, mixed_float16) inside the block, and
    what it was before once the block ends, however it ends: the one place bigml changes it."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def pick_precision(precision: str, strategy: str) -> str:
    """train.precision, with `auto` resolved: mixed_bfloat16 on a CPU with BF16 instructions (AVX512_BF16 or
    AMX), where it trains faster than float32 (docs/speed.md); float32 elsewhere, GPUs
    and TPUs included, where bigml has not measured it (pass mixed_float16 or mixed_bfloat16 there)."""
    if precision != "auto":
        return precision
    return "mixed_bfloat16" if _on_cpu(strategy) and cpu_flags() & BF16_FLAGS else "float32"


def slow_precision_note(precision: str, place: Any) -> Optional[str]:
    """A warning line when a mixed precision would run slower than float32: on a CPU, float16 always, and
    bfloat16 without BF16 instructions (many times slower; docs/speed.md)."""
    if precision == "float32" or not _on_cpu(place.name):
        return None
    if precision == "mixed_bfloat16" and cpu_flags() & BF16_FLAGS:
        return None
    return (f"note: {precision} runs slower than float32 on this CPU (it has no "
            f"{'BF16' if 'bfloat' in precision else 'float16'} instructions); --precision float32 is faster here")


@dataclass
class Placement:
    strategy: tf.distribute.Strategy
    name: str  # what was picked, in words for the user
    replicas: int
    is_chief: bool = True  # only the chief writes the run directory
    multi_worker: bool = False  # Keras' fit cannot run here: train.py uses its own loop
    workers: tuple = ()  # multi-worker: every worker's HOST:PORT
    worker_index: int = 0


def build_from_one_replica(model: Any) -> Any:
    """Keras 3's fit and evaluate under MirroredStrategy build the model from the first batch averaged over
    the replicas (`_maybe_symbolic_build` calls strategy.reduce("MEAN", batch)). That fails on strings (a
    text model's raw texts, a CSV's categorical columns) and on shares of different sizes (151 validation
    examples on 2 devices: 76 and 75). Only the batch's shapes and dtypes are used, so take them from the
    first replica's share instead. Keras versions without the method are left as they are."""
    if not callable(getattr(model, "_maybe_symbolic_build", None)) or not hasattr(model, "_symbolic_build"):
        return
    strategy = model.distribute_strategy

    def first_share(value):
        return strategy.experimental_local_results(value)[0] if isinstance(value, tf.distribute.DistributedValues) \
            else value

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:  # as Keras does: the epoch iterator is reset after the build
                data_batch = tf.nest.map_structure(first_share, next(it))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = maybe_symbolic_build


def split_cpu() -> None:
    """Apply BIGML_CPU_DEVICES (must run before TensorFlow initializes its devices)."""
    n = os.environ.get("BIGML_CPU_DEVICES")
    if not n:
        return
    if not n.isdigit() or int(n) < 1:
        raise UserError(f"BIGML_CPU_DEVICES must be a whole number >= 1, got {n!r}")
    cpu = tf.config.list_physical_devices("CPU")[0]  # physical listing does not start the runtime
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * int(n))
    except RuntimeError:  # already started: fine if it was started with the same split
        if len(tf.config.list_logical_devices("CPU")) == int(n):
            return
        raise UserError("BIGML_CPU_DEVICES must be set before TensorFlow starts; set it in the environment "
                        "of the bigml command") from None


def tpu_resolver() -> Any:
    """A TPU cluster resolver when a TPU is configured, else None."""
    if not (os.environ.get("TPU_NAME") or os.path.exists("/dev/accel0") or os.path.exists("/dev/vfio/0")):
        return None
    try:
        return tf.distribute.cluster_resolver.TPUClusterResolver()
    except (ValueError, RuntimeError):
        return None


def auto_choice() -> str:
    """The strategy name `auto` resolves to on this machine."""
    if os.environ.get("TF_CONFIG"):
        return "multi-worker"
    if tpu_resolver() is not None:
        return "tpu"
    gpus = tf.config.list_physical_devices("GPU")
    return "mirrored" if len(gpus) > 1 else "gpu" if gpus else "cpu"


def placement(name: str = "auto") -> Placement:
    """The tf.distribute strategy for a name; user errors when the machine lacks the device."""
    if name not in STRATEGIES:
        raise unknown("strategy", name, STRATEGIES)
    split_cpu()
    picked = auto_choice() if name == "auto" else name
    if picked == "multi-worker":  # before anything lists logical devices: that starts the runtime
        return multi_worker()
    if name != "auto" and os.environ.get("TF_CONFIG", "").strip():
        raise UserError(f"train.strategy is {name}, but --workers (TF_CONFIG) asks for several workers; train on "
                        "them with train.strategy auto or multi-worker, or drop --workers (unset TF_CONFIG) to "
                        "train in this process alone")
    gpus = tf.config.list_logical_devices("GPU")
    if picked == "cpu":
        if name == "auto":  # the default strategy: no distribution machinery on the common path
            return Placement(tf.distribute.get_strategy(), "cpu (default strategy)", 1)
        return Placement(tf.distribute.OneDeviceStrategy("/cpu:0"), "cpu", 1)
    if picked == "gpu":
        if not gpus:
            raise UserError("--strategy gpu but TensorFlow sees no GPU; check `bigml doctor` and your CUDA "
                            "install, or use --strategy cpu")
        return Placement(tf.distribute.OneDeviceStrategy("/gpu:0"), f"gpu ({gpus[0].name})", 1)
    if picked == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)
        return Placement(strategy, f"mirrored over {', '.join(devices)}", strategy.num_replicas_in_sync)
    if picked == "tpu":
        resolver = tpu_resolver()
        if resolver is None:
            raise UserError("--strategy tpu but no TPU is configured (set TPU_NAME or run on a TPU VM); "
                            "use --strategy auto")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
        return Placement(strategy, "tpu", strategy.num_replicas_in_sync)
    raise AssertionError(picked)


def multi_worker() -> bool:
    cluster = read_tf_config()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    task = cluster["task"]
    return Placement(strategy, f"multi-worker ({len(cluster['cluster']['worker'])} workers, this is "
                               f"worker {task['index']})", strategy.num_replicas_in_sync,
                     is_chief=task["index"] == 0, multi_worker=True, workers=tuple(cluster["cluster"]["worker"]),
                     worker_index=task["index"])


def free_local_ports(n: int) -> list:
    """`n` free TCP ports on localhost, for trying multi-worker training on one machine."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def workers_tf_config(workers: str, index: int) -> str:
    """TF_CONFIG (JSON) from `--workers HOST:PORT,HOST:PORT --worker-index I`."""
    hosts = [w.strip() for w in workers.split(",") if w.strip()]
    for h in hosts:
        host, sep, port = h.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UserError(f"worker '{h}' in --workers must be HOST:PORT, e.g. 10.0.0.1:12345")
    if len(hosts) < 1:
        raise UserError("--worker-index goes with --workers HOST:PORT,HOST:PORT,... (the same list on every "
                        "machine); give both, or neither to train on this machine alone")
    if index is None or not 0 <= index < len(hosts):
        raise UserError(f"--worker-index must be between 0 and {len(hosts) - 1} for {len(hosts)} workers, "
                        f"got {index}")
    return json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})


def tf_config_index() -> int:
    """This process's worker index in TF_CONFIG (0 without one: the chief, or a single process)."""
    try:
        return int(json.loads(os.environ.get("TF_CONFIG", "") or "{}").get("task", {}).get("index", 0))
    except (ValueError, TypeError, AttributeError):
        return 0  # malformed: read_tf_config says how, when the strategy is placed


def read_tf_config() -> dict:
    """The TF_CONFIG environment variable, checked: a worker list and this task's index in it."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        raise UserError("multi-worker training needs the worker list: pass --workers HOST:PORT,HOST:PORT,... and "
                        "--worker-index I (the same list on every machine), or set TF_CONFIG")
    try:
        cfg = json.loads(raw)
        workers = cfg["cluster"]["worker"]
        task = cfg["task"]
        ok = isinstance(workers, list) and workers and task["type"] in ("worker", "chief") \
            and isinstance(task["index"], int)
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise UserError('TF_CONFIG is malformed; it must look like {"cluster": {"worker": ["host:port", ...]}, '
                        '"task": {"type": "worker", "index": 0}}')
    if "chief" in cfg["cluster"]:
        raise UserError("TF_CONFIG with a separate 'chief' task is not supported; list every machine under "
                        "'worker' (worker 0 is the chief)")
    if not 0 <= task["index"] < len(workers):
        raise UserError(f"TF_CONFIG task index {task['index']} is out of range for {len(workers)} workers")
    return cfg


def doctor() -> dict:
    """Versions, devices and the strategy `auto` would pick, for `bigml doctor`."""
    import keras

    split_cpu()
    devices = [(d.device_type, d.name) for d in tf.config.list_logical_devices()]
    strategy, flags = auto_choice(), cpu_flags()
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "platform": platform.platform(),
        "cpu_cores": os.cpu_count(),
        "devices": [f"{kind} {name}" for kind, name in devices],
        "auto_strategy": strategy,
        "cpu_vector_instructions": [f for f in ("avx2", "fma", "avx512f", *sorted(BF16_FLAGS)) if f in flags],
        "auto_precision": pick_precision("auto", strategy),
        "tf_config": bool(os.environ.get("TF_CONFIG")),
    }
