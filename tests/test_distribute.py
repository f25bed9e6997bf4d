"""Strategies: choice by name, device errors, and multi-replica training on two logical CPU devices."""

import json
import re
import os
import subprocess
import sys

import numpy as np
import pytest

from bigml_cli.distribute import free_local_ports
from conftest import assert_user_error

SAME_CURVE = """
import json, sys
import keras
from bigml_cli import config, train

class StepLosses(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))

curves = {}
for strategy in ("cpu", "mirrored"):
    cfg = config.load("mlp", "digits", overrides=[
        "train.epochs=2", "model.dropout=0.0", "train.jit_compile=false", "train.batch_size=64",
        f"train.strategy={strategy}"])
    losses = StepLosses()
    train.run(cfg, run_dir=f"{sys.argv[1]}/{strategy}", extra_callbacks=[losses])
    curves[strategy] = losses.losses
print(json.dumps(curves))
"""


def test_mirrored_over_two_cpu_devices_matches_one_device(tmp_path):
    env = {**os.environ, "BIGML_CPU_DEVICES": "2"}
    proc = subprocess.run([sys.executable, "-c", SAME_CURVE, str(tmp_path)], capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    curves = json.loads(proc.stdout.strip().splitlines()[-1])
    one, two = np.array(curves["cpu"]), np.array(curves["mirrored"])
    assert len(one) == len(two) == 2 * (1294 // 64)
    assert np.abs(one - two).max() < 1e-4, np.abs(one - two).max()
    info = json.loads((tmp_path / "mirrored" / "run.json").read_text())
    assert info["replicas"] == 2 and info["global_batch_size"] == 64 and info["per_replica_batch_size"] == 32


def test_mirrored_training_of_strings_and_of_first_batches_that_do_not_divide_over_the_replicas(tmp_path,
                                                                                               table_csv):
    # Keras' fit averaged the first batch over the replicas to build the model: 151 validation images on 3
    # devices (51/50/50), a batch larger than the data, and a CSV's categorical column stopped it with an
    # internal error
    bigml = str(__import__("pathlib").Path(sys.executable).with_name("bigml"))
    result = subprocess.run([bigml, "train", "mlp", "--dataset", "digits", "--strategy", "mirrored", "--run-dir",
                             tmp_path / "run", "train.epochs=1", "train.batch_size=60", "data.val_fraction=0.105"],
                            env={**os.environ, "BIGML_CPU_DEVICES": "3"}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(history) == 2 and "val_accuracy" in history[0]
    for name, args in (("big", ["mlp", "--dataset", "digits", "train.batch_size=3000"]),  # 1,294 images
                       ("table", ["mlp", "--dataset", table_csv, "--target", "label", "train.batch_size=30"])):
        result = subprocess.run([bigml, "train", *args, "--strategy", "mirrored", "--run-dir", tmp_path / name,
                                 "train.epochs=1"], env={**os.environ, "BIGML_CPU_DEVICES": "3"},
                                capture_output=True, text=True)
        assert result.returncode == 0, (name, result.stderr[-2000:])


def test_doctor_reports_versions_and_auto_choice(cli):
    result = cli("doctor", "--json")
    assert result.exit_code == 0, result.text
    report = json.loads(result.stdout)
    assert report["auto_strategy"] in ("cpu", "gpu", "mirrored", "tpu") and report["tensorflow"]
    assert any(d.startswith("CPU") for d in report["devices"])
    bf16 = {"avx512_bf16", "amx_bf16"} & set(report["cpu_vector_instructions"])  # what `precision: auto` reads
    assert report["auto_precision"] == ("mixed_bfloat16" if bf16 and report["auto_strategy"] == "cpu" else "float32")


@pytest.mark.skipif(bool(os.environ.get("TPU_NAME")), reason="a TPU is configured here")
def test_strategy_without_a_device_is_a_user_error(cli, tmp_path):
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        assert_user_error(cli("train", "mlp", "--dataset", "digits", "--strategy", "gpu", "--run-dir", tmp_path / "r"),
                          "sees no GPU")
    assert_user_error(cli("train", "mlp", "--dataset", "digits", "--strategy", "tpu", "--run-dir", tmp_path / "r"),
                      "no TPU is configured")
    assert_user_error(cli("train", "mlp", "--dataset", "digits", "--strategy", "gpus", "--run-dir", tmp_path / "r"),
                      "unknown value for train.strategy 'gpus'")
    assert not (tmp_path / "r").exists()


def test_two_workers_on_loopback_train_and_only_the_chief_writes(tmp_path):
    bigml = str(__import__("pathlib").Path(sys.executable).with_name("bigml"))
    workers = ",".join(f"localhost:{p}" for p in free_local_ports(2))
    args = ["train", "mlp", "--dataset", "digits", "--workers", workers, "--json", "train.epochs=3",
            "model.hidden_units=[64]", "train.learning_rate=0.01", "train.batch_size=64"]
    procs = [subprocess.Popen([bigml, *[a for a in args if i == 0 or a != "--json"], "--worker-index", str(i),
                               "--run-dir", str(tmp_path / f"run{i}")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "worker 0, the chief, writes the run directory" in outs[1][0]  # worker 1 prints tables, not JSON
    chief = json.loads(outs[0][0].strip().splitlines()[-1])
    assert chief["accuracy"] > 0.85
    assert (tmp_path / "run0" / "model.keras").exists() and not (tmp_path / "run1").exists()
    info = json.loads((tmp_path / "run0" / "run.json").read_text())
    assert info["replicas"] == 2 and info["per_replica_batch_size"] == 32


@pytest.mark.parametrize("args, message", [
    (["--workers", "localhost:1,localhost", "--worker-index", "0"], "must be HOST:PORT"),
    (["--workers", "localhost:1,localhost:2", "--worker-index", "2"], "--worker-index must be between 0 and 1"),
    (["--workers", "localhost:1,localhost:2"], "--worker-index must be between 0 and 1"),
    (["--worker-index", "1"], "--worker-index goes with --workers"),
])
def test_bad_worker_lists(cli, tmp_path, args, message):
    assert_user_error(cli("train", "mlp", "--dataset", "digits", "--run-dir", tmp_path / "r", *args), message)


@pytest.mark.parametrize("tf_config, message", [
    ("{not json", "TF_CONFIG is malformed"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "index 3 is out of range"),
])
def test_bad_tf_config(cli, tmp_path, monkeypatch, tf_config, message):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    assert_user_error(cli("train", "mlp", "--dataset", "digits", "--run-dir", tmp_path / "r"), message)
    assert not (tmp_path / "r").exists()


def test_a_worker_list_with_a_one_process_strategy_is_refused(cli, tmp_path, monkeypatch):
    # the list was ignored: each "worker" trained alone
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["localhost:1", "localhost:2"]}, '
                                    '"task": {"type": "worker", "index": 0}}')
    assert_user_error(cli("train", "mlp", "--dataset", "digits", "--strategy", "cpu", "--run-dir", tmp_path / "r"),
                      "train.strategy is cpu, but --workers (TF_CONFIG) asks for several workers")
    assert not (tmp_path / "r").exists()


def test_multi_worker_without_a_worker_list_says_how_to_give_one(cli, tmp_path, monkeypatch):
    # a multi-worker run resumed without --workers said "TF_CONFIG is malformed" of a TF_CONFIG never set
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert_user_error(cli("train", "mlp", "--dataset", "digits", "--strategy", "multi-worker", "--run-dir",
                          tmp_path / "r"), "needs the worker list: pass --workers HOST:PORT")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_with_float32_softmax(cli, tmp_path, precision):
    run_dir = tmp_path / "run"
    result = cli("train", "mlp", "--dataset", "digits", "--precision", precision, "--no-xla", "--run-dir", run_dir,
                 "--json", "train.epochs=3", "model.hidden_units=[64]", "train.learning_rate=0.01")
    assert result.exit_code == 0, result.text
    assert f"precision {precision}" in result.stderr + result.stdout  # the run's first line says so
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["accuracy"] > 0.85 and metrics["precision"] == precision  # trained in mixed precision ...
    import keras

    model = keras.models.load_model(run_dir / "model.keras")  # ... saved in float32: ONNX and LiteRT refuse bfloat16
    assert {layer.dtype_policy.compute_dtype for layer in model.layers} == {"float32"}
    assert keras.mixed_precision.global_policy().name == "float32"
    if precision == "mixed_bfloat16":
        result = cli("export", run_dir, "--format", "onnx", "--json")
        assert result.exit_code == 0, result.text


@pytest.mark.parametrize("model", ["mlp", "transformer"])
def test_runs_saved_with_bfloat16_layers_load_in_float32(cli, tmp_path, monkeypatch, model):
    """bigml before 2026-11-29 saved a mixed-precision run's bfloat16 layers: such a transformer did not even
    load, and an image model's ONNX export failed inside onnxruntime."""
    from bigml_cli.train import loop
    from test_text import write_reviews

    monkeypatch.setattr(loop, "in_float32", lambda model: model)  # how those runs were saved
    if model == "mlp":
        args = ["--dataset", "digits", "model.hidden_units=[32]"]
    else:
        write_reviews(tmp_path / "reviews", 30, seed=0)
        args = ["--dataset", tmp_path / "reviews", "model.dim=16", "model.heads=2", "model.mlp_dim=16",
                "model.num_layers=1", "data.sequence_length=16"]
    run_dir = tmp_path / "run"
    result = cli("train", model, *args, "--precision", "mixed_bfloat16", "--run-dir", run_dir, "--json",
                 "train.epochs=2")
    assert result.exit_code == 0, result.text
    trained = json.loads(result.stdout.strip().splitlines()[-1])
    import zipfile

    assert "mixed_bfloat16" in zipfile.ZipFile(run_dir / "model.keras").read("config.json").decode()
    result = cli("eval", run_dir, "--json")
    assert result.exit_code == 0, result.text
    assert json.loads(result.stdout)["accuracy"] == pytest.approx(trained["accuracy"], abs=0.02)  # float32 now
    if model == "mlp":
        result = cli("export", run_dir, "--format", "onnx", "--json")
        assert result.exit_code == 0, result.text


def test_mixed_precision_on_a_cpu_warns_that_it_is_slower(monkeypatch):
    from bigml_cli import distribute

    place = distribute.placement("cpu")
    monkeypatch.setattr(distribute, "cpu_flags", lambda: {"avx2", "fma"})
    assert "mixed_bfloat16 runs slower than float32" in distribute.slow_precision_note("mixed_bfloat16", place)
    assert "no float16 instructions" in distribute.slow_precision_note("mixed_float16", place)
    assert distribute.slow_precision_note("float32", place) is None
    assert distribute.pick_precision("auto", place.name) == "float32"  # auto: bfloat16 only where it is fast
    assert distribute.pick_precision("mixed_bfloat16", place.name) == "mixed_bfloat16"  # asked for: as asked
    monkeypatch.setattr(distribute, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert distribute.slow_precision_note("mixed_bfloat16", place) is None
    assert distribute.pick_precision("auto", place.name) == "mixed_bfloat16"
    assert distribute.pick_precision("float32", place.name) == "float32"


def _two_workers(chief_args, other_args):
    bigml = str(__import__("pathlib").Path(sys.executable).with_name("bigml"))
    workers = ",".join(f"localhost:{p}" for p in free_local_ports(2))
    return [subprocess.Popen([bigml, "train", *args, "--workers", workers, "--worker-index", str(i)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i, args in enumerate((chief_args, other_args))]


def _finish(procs, timeout=120):
    try:
        return [" ".join(p.communicate(timeout=timeout)[1].split()) for p in procs]
    finally:
        for p in procs:
            p.kill()


@pytest.mark.parametrize("chief, other, messages, required", [
    ("train.epochs=3", "train.epochs=4", ("another worker's differ from this worker's [",
                                          "the chief's are [85002, 20, 3, 64, 0, 0], not this worker's [85002, 20, 4,"),
     2),
    # a collective sees the mismatch on one worker or on both, as their timing goes: the other, if any, sees
    # its partner stop
    ("model.hidden_units=[32]", "model.hidden_units=[16]", ("the workers build different models",
                                                             "another worker stopped while the model was built"),
     1),
])
def test_workers_given_different_configs_stop_with_a_user_error(tmp_path, chief, other, messages, required):
    # more epochs on one worker left it waiting forever for the others; another model, a collective-op crash
    base = ["mlp", "--dataset", "digits"]
    procs = _two_workers([*base, chief, "--run-dir", tmp_path / "run0"], [*base, other, "--run-dir", tmp_path / "run1"])
    errs = _finish(procs)
    assert [p.returncode for p in procs] == [2, 2], errs
    for err in errs:
        assert err.startswith("error:") and "run the same command on every worker" in err, err
        assert any(message in err for message in messages), err
    for message in messages[:required]:  # either side may see the other stop first
        assert message in errs[0] + errs[1], errs
    assert not (tmp_path / "run0").exists()  # nothing written


def test_the_chiefs_early_stop_ends_training_on_every_worker_after_the_same_epoch(tmp_path):
    # only the chief validates; the other worker would otherwise wait at the next step's all-reduce forever
    args = ["mlp", "--dataset", "digits", "train.epochs=10", "train.patience=2", "train.learning_rate=1e-30",
            "train.weight_decay=0", "model.dropout=0", "model.hidden_units=[8]",
            "train.class_weight=balanced"]  # the loop's weighted steps and validation run too
    procs = _two_workers([*args, "--json", "--run-dir", tmp_path / "run0"], [*args, "--run-dir", tmp_path / "run1"])
    errs = _finish(procs)
    assert [p.returncode for p in procs] == [0, 0], errs
    metrics = json.loads((tmp_path / "run0" / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["early_stop"]["best_epoch"] == 1
    assert "early stop after epoch 3 of 10" in errs[0]


def test_workers_given_different_copies_of_the_data_stop_with_a_user_error(tmp_path, table_csv):
    # the same shapes and config, so nothing else differs: each worker would train on its own examples
    other = tmp_path / "other.csv"
    other.write_text(table_csv.read_text().replace(",yes\n", ",no\n", 1))
    base = ["mlp", "--target", "label", "train.epochs=1"]
    procs = _two_workers([*base, "--dataset", table_csv, "--run-dir", tmp_path / "run0"],
                         [*base, "--dataset", other, "--run-dir", tmp_path / "run1"])
    errs = _finish(procs)
    assert [p.returncode for p in procs] == [2, 2], errs
    for err in errs:
        assert err.startswith("error: the workers' data differ:") and "give every worker the same copy" in err, err
    assert not (tmp_path / "run0").exists()  # nothing written


def test_a_killed_workers_scratch_checkpoints_are_removed_by_the_next_worker(tmp_path, monkeypatch):
    # a non-chief worker saves to a temporary folder it removes at the end; SIGKILL skips that
    import tempfile
    from bigml_cli.train.multiworker import scratch_state_dir
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale, live = tmp_path / f"bigml-worker-state-{dead.pid}-x", tmp_path / f"bigml-worker-state-{os.getpid()}-y"
    stale.mkdir()
    live.mkdir()
    new = scratch_state_dir()
    assert not stale.exists() and live.exists()
    assert new.startswith(str(tmp_path / f"bigml-worker-state-{os.getpid()}-"))


def test_a_language_model_trains_on_two_workers_as_on_one_process(tmp_path, cli):
    # was refused: "multi-worker training of language models is not supported yet"
    rng = np.random.default_rng(0)
    words = ["to be", "or not", "that is", "the question", "whether tis", "nobler in", "the mind"]
    corpus = tmp_path / "verse.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(words, size=5)) + "." for _ in range(300)))
    tiny = ["gpt", "--dataset", corpus, "data.tokens=characters", "data.sequence_length=16", "train.epochs=2",
            "train.steps_per_epoch=40", "train.batch_size=16", "train.learning_rate=0.003", "model.dim=32",
            "model.heads=2", "model.num_layers=1", "model.mlp_dim=64", "model.dropout=0.0", "train.jit_compile=false"]
    single = cli("train", *tiny, "--run-dir", tmp_path / "one", "--json")
    assert single.exit_code == 0, single.text
    errs = _finish(_two_workers([*tiny, "--run-dir", tmp_path / "two"], [*tiny, "--run-dir", tmp_path / "w1"]))
    assert "Traceback" not in errs[0] + errs[1] and (tmp_path / "two" / "metrics.json").exists(), errs[0][-2000:]
    one, two = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert two["perplexity"] < 3.5  # learnt: characters of 7 phrases, against about 20 for guessing
    assert two["loss"] == pytest.approx(one["loss"], rel=0.02)  # the same global batches, summed in another order
    import csv
    first = [float(next(csv.DictReader(open(tmp_path / d / "history.csv")))["loss"]) for d in ("one", "two")]
    assert first[1] == pytest.approx(first[0], rel=1e-3), first  # epoch 1's training loss: per token in both


@pytest.mark.parametrize("kind", ["pairs"])  # "mlm" runs the same loop path (kept out of the default suite's time)
def test_a_masked_language_model_and_a_translation_train_on_two_workers_as_on_one_process(tmp_path, cli, kind):
    """Their losses are means over a count of tokens that varies by batch (masked ones, real target ones): the
    workers sum those counts before dividing, so the global batch's loss is the one process's."""
    from test_mlm import SMALL as MLM
    from test_seq2seq import SMALL as PAIRS, write_pairs
    from test_text import write_reviews

    if kind == "mlm":
        data = tmp_path / "reviews"
        write_reviews(data, 20, seed=2)
        tiny = ["transformer_mlm", "--dataset", data, *MLM, "train.epochs=2", "train.steps_per_epoch=6"]
    else:
        data = write_pairs(tmp_path / "pairs.tsv")
        tiny = ["seq2seq", "--dataset", data, *PAIRS, "train.epochs=3"]
    single = cli("train", *tiny, "--run-dir", tmp_path / "one", "--json")
    assert single.exit_code == 0, single.text
    errs = _finish(_two_workers([*tiny, "--run-dir", tmp_path / "two"], [*tiny, "--run-dir", tmp_path / "w1"]), 300)
    assert "Traceback" not in errs[0] + errs[1] and (tmp_path / "two" / "metrics.json").exists(), errs[0][-2000:]
    one, two = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert two["loss"] == pytest.approx(one["loss"], rel=0.1), (one, two)  # other batches (each worker's own
    # masks, its own length-sorted batches), the same steps and learning rates


def test_the_precision_policy_is_restored_however_the_block_ends():
    import keras

    from bigml_cli.distribute import precision_policy

    before = keras.mixed_precision.global_policy().name
    with pytest.raises(RuntimeError):
        with precision_policy("mixed_bfloat16"):
            assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
            raise RuntimeError("a failed run")
    assert keras.mixed_precision.global_policy().name == before


FAULTS = ["mlp", "--dataset", "digits", "train.epochs=3", "train.batch_size=32", "model.hidden_units=[32]",
          "model.dropout=0.2", "train.deterministic=true", "train.checkpoint_every=5"]  # 39 steps an epoch, 117 in all


def h5_weights(path):
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def wait_for_checkpoint(procs, run, at_least):
    import time

    state, deadline = run / "checkpoints" / "state" / "checkpoint", time.time() + 180
    while not (state.exists() and int(re.search(r'"ckpt-(\d+)"', state.read_text()).group(1)) >= at_least):
        if not all(p.poll() is None for p in procs) or time.time() > deadline:
            pytest.fail(" || ".join(e[-1500:] for e in _finish(procs)))
        time.sleep(0.02)


def latest_checkpoint(run):
    return int(re.search(r'"ckpt-(\d+)"', (run / "checkpoints" / "state" / "checkpoint").read_text()).group(1))


# (arguments, train.checkpoint_every): digits in the default suite; the mnist case under `make test-data`
FAULT_CASES = [pytest.param((FAULTS, 5), id="digits"),
               pytest.param((["mlp", "--dataset", "mnist", "train.epochs=2", "train.batch_size=256",
                              "model.hidden_units=[64]", "model.dropout=0.2", "train.deterministic=true",
                              "train.checkpoint_every=10"], 10), id="mnist", marks=pytest.mark.data)]


@pytest.mark.parametrize("case", FAULT_CASES)
def test_a_lost_worker_a_sigterm_and_a_ctrl_c_stop_every_worker_and_the_run_resumes_exactly(tmp_path, cli, case,
                                                                                          request, monkeypatch):
    """Worker 1 SIGKILLed at a random step after the first step checkpoint: worker 0 does not wait for it, says
    who was lost and how to resume (exit 75). Both relaunched with --resume RUN; then SIGTERM to worker 0 (what
    a preempted machine gets; TensorFlow's PreemptionCheckpointHandler tells the other): every worker saves the
    same step and exits 143. Relaunched (worker 1 with its original command), Ctrl-C on worker 1 travels with
    the step's all-reduce: both save the same step and exit 130. Relaunched again, both end with the weights of
    a two-worker run never stopped, to the bit."""
    import random
    import signal
    import time

    faults, every = case
    epochs = int(next(a for a in faults if a.startswith("train.epochs=")).split("=")[1])
    if "mnist" in faults:
        monkeypatch.setenv("BIGML_DATA_DIR", str(request.getfixturevalue("real_data_dir")))
    reference, run = tmp_path / "ref", tmp_path / "run"
    errs = _finish(_two_workers([*faults, "--run-dir", reference], [*faults, "--run-dir", tmp_path / "ref1"]), 900)
    assert (reference / "metrics.json").exists(), errs[0][-2000:]
    total = epochs * json.loads((reference / "run.json").read_text())["steps_per_epoch"]
    procs = _two_workers([*faults, "--run-dir", run], [*faults, "--run-dir", tmp_path / "run1"])
    wait_for_checkpoint(procs, run, every)
    time.sleep(random.Random().uniform(0, 0.3))
    procs[1].send_signal(signal.SIGKILL)
    killed = time.time()
    try:
        err = " ".join(procs[0].communicate(timeout=120)[1].split())
    finally:
        for p in procs:
            p.kill()
    assert time.time() - killed < 120 and procs[0].returncode == 75, err[-2000:]
    assert re.search(r"error: worker 1 \(localhost:\d+\) was lost", err), err[-2000:]
    assert f"bigml train --resume {run} --workers localhost:" in err and "Traceback" not in err
    # resumed on one worker, not the two it trained on: each one's share of the batch would change
    bigml = str(__import__("pathlib").Path(sys.executable).with_name("bigml"))
    one = subprocess.run([bigml, "train", "--resume", str(run), "--workers", f"localhost:{free_local_ports(1)[0]}",
                          "--worker-index", "0"], capture_output=True, text=True, timeout=300)
    assert one.returncode == 2 and "trained on 2 replica(s)" in one.stderr, one.stderr[-2000:]
    assert "Traceback" not in one.stderr

    first = latest_checkpoint(run)
    procs = _two_workers(["--resume", run], ["--resume", run])
    wait_for_checkpoint(procs, run, first + 2 * every)
    procs[0].send_signal(signal.SIGTERM)
    errs = _finish(procs, 60)
    assert [p.returncode for p in procs] == [143, 143], errs
    assert f"resuming at step {first}" in errs[0] and f"resuming at step {first}" in errs[1], errs
    steps = [re.search(r"stopped by SIGTERM \(signal 15\) at step (\d+)", e).group(1) for e in errs]
    assert steps[0] == steps[1] and int(steps[0]) == latest_checkpoint(run) < total, errs
    term = int(steps[0])

    procs = _two_workers(["--resume", run], [*faults, "--run-dir", tmp_path / "run1"])
    wait_for_checkpoint(procs, run, term + every)
    procs[1].send_signal(signal.SIGINT)
    errs = _finish(procs, 60)
    assert [p.returncode for p in procs] == [130, 130], errs
    steps = [re.search(r"stopped by SIGINT \(signal 2\) at step (\d+)", e).group(1) for e in errs]
    assert steps[0] == steps[1] and int(steps[0]) == latest_checkpoint(run) < total, errs
    assert "another worker got it" in errs[0] and f"bigml train --resume {run}" in errs[0], errs[0]
    assert "every worker stopped there" in errs[1] and "Traceback" not in errs[0] + errs[1]
    from bigml_cli.runs import list_runs
    status = {r["run"]: r["status"] for r in list_runs(tmp_path)}[str(run)]
    assert re.match(rf"\d/{epochs} epochs: bigml train --resume {run} --workers \.\.\. --worker-index 0", status)

    errs = _finish(_two_workers(["--resume", run], ["--resume", run]), 900)
    assert "Traceback" not in errs[0] + errs[1] and (run / "metrics.json").exists(), errs
    history = (run / "history.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in history] == [str(e) for e in range(epochs)]
    want, got = h5_weights(reference / "checkpoints/last.weights.h5"), h5_weights(run / "checkpoints/last.weights.h5")
    assert want.keys() == got.keys() and len(want) > 0
    for name in want:
        assert np.array_equal(want[name], got[name]), name
    assert not (tmp_path / "run1").exists()  # the chief alone writes


def test_a_resume_on_another_worker_count_global_batch_or_data_is_refused_by_every_worker(tmp_path, table_csv):
    """Each worker checks the run it resumes as the chief does (config.yaml, replicas, data), so none is left
    waiting for a chief that refused: one line each, exit 2, nothing of the run changed."""
    bigml = str(__import__("pathlib").Path(sys.executable).with_name("bigml"))
    run = tmp_path / "run"
    base = ["mlp", "--dataset", str(table_csv), "--target", "label", "train.batch_size=16", "train.epochs=200",
            "train.checkpoint_every=5"]
    procs = _two_workers([*base, "--run-dir", run], [*base, "--run-dir", tmp_path / "run1"])
    wait_for_checkpoint(procs, run, 5)
    for p in procs:
        p.kill()
        p.communicate()
    saved = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "train.lock"}

    one = subprocess.run([bigml, "train", "--resume", str(run), "--workers", f"localhost:{free_local_ports(1)[0]}",
                          "--worker-index", "0"], capture_output=True, text=True, timeout=300)
    assert one.returncode == 2 and "trained on 2 replica(s)" in one.stderr, one.stderr[-2000:]

    config = run / "config.yaml"
    original = config.read_text()
    config.write_text(original.replace("batch_size: 16", "batch_size: 32"))
    procs = _two_workers(["--resume", run], ["--resume", run])
    errs = _finish(procs)
    assert [p.returncode for p in procs] == [2, 2], errs
    assert all(e.startswith(f"error: {config} changed since the run started") for e in errs), errs
    config.write_text(original)

    table_csv.write_text(table_csv.read_text() + "41.0,red,70.00,no\n")
    procs = _two_workers(["--resume", run], ["--resume", run])
    errs = _finish(procs)
    assert [p.returncode for p in procs] == [2, 2], errs
    assert all(e.startswith("error: the dataset") and "changed since run" in e for e in errs), errs
    assert all("Traceback" not in e for e in errs)
    assert saved == {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "train.lock"}


EPOCH_END_STOP = """
import os, signal, sys
import keras
from bigml_cli import config, train
from bigml_cli.distribute import free_local_ports, workers_tf_config
from bigml_cli.errors import Interrupted

os.environ["TF_CONFIG"] = workers_tf_config(f"localhost:{free_local_ports(1)[0]}", 0)

class CtrlCBeforeTheLastStep(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.params["steps"] - 1:
            os.kill(os.getpid(), signal.SIGINT)

cfg = config.load("mlp", "digits", overrides=["train.epochs=2", "train.batch_size=64", "model.hidden_units=[8]"])
try:
    train.run(cfg, run_dir=sys.argv[1], extra_callbacks=[CtrlCBeforeTheLastStep()])
except Interrupted as e:
    print(e)
"""


def test_a_multi_worker_stop_at_an_epochs_last_step_ends_that_epoch_first(tmp_path):
    """A stop after an epoch's last step still validates the epoch and writes its history row (a resumed run
    starts at the next epoch and would never write it), as one process does."""
    proc = subprocess.run([sys.executable, "-c", EPOCH_END_STOP, str(tmp_path / "run")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"stopped by SIGINT \(signal 2\) at step \d+ \(after epoch 1/2\)", proc.stdout), proc.stdout
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(history) == 2 and history[1].startswith("0,") and "val_loss" in history[0]
