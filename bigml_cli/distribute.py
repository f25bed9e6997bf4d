"""Strategy selection from a name, as one flat if-chain (Model Garden's get_distribution_strategy).

    auto          TPU when one is configured, MirroredStrategy over >1 GPU, one GPU, else CPU
    cpu, gpu      one device
    mirrored      all local GPUs (or, without GPUs, all logical CPU devices: see BIGML_CPU_DEVICES)
    tpu           TPUClusterResolver (TPU_NAME, or the TPU VM's local TPU)

BIGML_CPU_DEVICES=N splits the CPU into N logical devices before TensorFlow starts, so that
multi-replica training can be run and tested on a machine without GPUs.
"""

import os
import platform
from dataclasses import dataclass

import tensorflow as tf

from bigml_cli.errors import UserError, unknown

STRATEGIES = ("auto", "cpu", "gpu", "mirrored", "tpu", "multi-worker")


@dataclass
class Placement:
    strategy: tf.distribute.Strategy
    name: str  # what was picked, in words for the user
    replicas: int


def split_cpu():
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


def tpu_resolver():
    """A TPU cluster resolver when a TPU is configured, else None."""
    if not (os.environ.get("TPU_NAME") or os.path.exists("/dev/accel0") or os.path.exists("/dev/vfio/0")):
        return None
    try:
        return tf.distribute.cluster_resolver.TPUClusterResolver()
    except (ValueError, RuntimeError):
        return None


def auto_choice():
    """The strategy name `auto` resolves to on this machine."""
    if os.environ.get("TF_CONFIG"):
        return "multi-worker"
    if tpu_resolver() is not None:
        return "tpu"
    gpus = tf.config.list_physical_devices("GPU")
    return "mirrored" if len(gpus) > 1 else "gpu" if gpus else "cpu"


def placement(name="auto"):
    """The tf.distribute strategy for a name; user errors when the machine lacks the device."""
    if name not in STRATEGIES:
        raise unknown("strategy", name, STRATEGIES)
    split_cpu()
    picked = auto_choice() if name == "auto" else name
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
    raise UserError("multi-worker training is not supported yet: Keras 3's fit cannot run under "
                    "MultiWorkerMirroredStrategy (keras-team/keras#20585); unset TF_CONFIG and train on one machine")


def doctor():
    """Versions, devices and the strategy `auto` would pick, for `bigml doctor`."""
    import keras

    split_cpu()
    devices = [(d.device_type, d.name) for d in tf.config.list_logical_devices()]
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "platform": platform.platform(),
        "cpu_cores": os.cpu_count(),
        "devices": [f"{kind} {name}" for kind, name in devices],
        "auto_strategy": auto_choice(),
        "tf_config": bool(os.environ.get("TF_CONFIG")),
    }
