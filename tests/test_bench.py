"""The benchmark's arithmetic: FLOP counts, the CPU peak, time-to-accuracy from a history file."""

import pytest

from bigml_cli.bench import cpu_peak, forward_flops, peak_caveat, time_to_accuracy
from bigml_cli.models import build_model

CIFAR_INFO = {"kind": "image", "shape": [32, 32, 3], "mean": [0.5] * 3, "std": [0.25] * 3}


def test_tutorial_cnn_flops_match_a_hand_count():
    # multiply-adds x 2: conv1 30*30*32*27, conv2 13*13*64*288, dense 2304*128 and 128*10
    by_hand = 2 * (30 * 30 * 32 * 27 + 13 * 13 * 64 * 288 + 2304 * 128 + 128 * 10)
    counted = forward_flops(build_model({"name": "tutorial_cnn"}, CIFAR_INFO, 10))
    assert by_hand <= counted <= by_hand * 1.02  # plus bias adds, scaling and normalization


def test_cpu_peak_is_cores_times_clock_times_vector_width():
    import re

    peak, how = cpu_peak()  # this machine's: the figure must be the product the text states
    cores, ghz, per_cycle = re.match(r"(\d+) cores x ([\d.]+) GHz x (\d+) FLOP/cycle", how).groups()
    assert peak == pytest.approx(int(cores) * float(ghz) * 1e9 * int(per_cycle), rel=0.005)


def test_cpu_peak_counts_the_vector_units_each_cpu_has():
    import os

    cores = len(os.sched_getaffinity(0))
    flags = "flags\t\t: fpu sse2 avx fma avx2 avx512f avx512_bf16\n"
    intel = "vendor_id\t: GenuineIntel\ncpu family\t: 6\ncpu MHz\t\t: 2000.000\n" + flags
    zen4 = "vendor_id\t: AuthenticAMD\ncpu family\t: 25\ncpu MHz\t\t: 2000.000\n" + flags
    zen3 = zen4.replace(" avx512f avx512_bf16", "")
    assert cpu_peak(intel, "")[0] == cores * 2e9 * 64  # two 512-bit FMA units
    assert cpu_peak(zen4, "")[0] == cores * 2e9 * 32  # AVX-512 split over 256-bit units
    assert cpu_peak(zen3, "")[0] == cores * 2e9 * 32 and "AVX2+FMA" in cpu_peak(zen3, "")[1]
    assert cpu_peak(zen4, "CPU max MHz:  3000.0\n")[0] == cores * 3e9 * 32  # the maximum clock where lscpu has one
    assert cpu_peak(zen4, "", "mixed_bfloat16")[0] == cores * 2e9 * 64  # two bfloat16 pairs per float32 lane
    assert cpu_peak(zen3, "", "mixed_bfloat16")[0] == cores * 2e9 * 32  # no BF16 instructions: no such gain


def test_time_to_accuracy_reads_the_history(tmp_path):
    history = tmp_path / "history.csv"
    history.write_text("epoch,elapsed_seconds,val_accuracy\n0,10.5,0.41\n1,20.0,0.52\n2,30.2,0.61\n")
    assert time_to_accuracy(history, 0.5) == 20.0
    assert time_to_accuracy(history, 0.61) == 30.2
    assert time_to_accuracy(history, 0.9) is None


def test_bench_refuses_the_baseline_for_another_model(cli):
    result = cli("bench", "mlp_mnist", "--pairs", 1)
    assert result.exit_code == 2 and "baseline trains the tutorial CNN" in result.stderr


def test_counting_flops_prints_no_tensorflow_deprecation_warning():
    # the v1 profiler's first call logged 3 lines ("... is deprecated ... Instructions for updating")
    # into `bigml bench`'s output; a fresh process, since TensorFlow logs it once per process
    import subprocess
    import sys
    code = ("import keras; from bigml_cli.bench import forward_flops; "
            "m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]); print(forward_flops(m))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) > 0 and "deprecated" not in done.stderr, done.stderr


def test_text_models_are_counted_from_their_token_ids_and_recurrent_loops_are_not_guessed():
    """A string input left every shape unknown, so the profiler counted 0 FLOPs for IMDB's models and bench
    printed '0.0 MFLOP/example, 0.0% of peak'. A transformer is now counted from its token ids; an LSTM's time
    loop shows the profiler one step, so its count is None rather than a figure 400 times too small."""
    info = {"kind": "text", "vocab": [f"w{i}" for i in range(50)], "sequence_length": 16, "tokens": "words"}
    params = {"name": "transformer", "dim": 16, "heads": 2, "num_layers": 1, "mlp_dim": 32}
    counted = forward_flops(build_model(params, info, 2))
    one_projection = 2 * 16 * 16 * 16  # (16 tokens x 16) @ (16 x 16), one of attention's four
    assert counted > 6 * one_projection  # queries, keys, values, output, and the MLP's two (x 2 in width)
    assert forward_flops(build_model({"name": "rnn", "embedding_dim": 8, "units": 4}, info, 2)) is None


def test_a_fraction_above_the_computed_peak_comes_with_its_caveat():
    assert "turbo" in peak_caveat([0.56, 1.024]) and "Winograd" in peak_caveat([1.024])
    assert peak_caveat([0.56, None, 1.0]) == ""
