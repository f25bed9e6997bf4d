"""Inference speed of a run's exports: Keras, SavedModel, ONNX Runtime and LiteRT on the same test inputs.

    python bench/export_speed.py RUN [--data-dir DIR]

Exports RUN in each format to a temporary folder (each checked against Keras by `bigml export`), then
prints a Markdown table: examples/s over 1,024 test inputs in batches of 256, and ms per input at batch
1 (32 inputs), best of 3 passes after one warm-up call. Image and language-model runs only.
"""

import argparse
import tempfile
import time
from pathlib import Path

from bigml_cli import runs
from bigml_cli.data import load_dataset
from bigml_cli.evaluate import load_model
from bigml_cli.export import RUNNERS, export


def best_seconds(fn, batches, passes=3):
    fn(batches[0])
    times = []
    for _ in range(passes):
        start = time.perf_counter()
        for batch in batches:
            fn(batch)
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    run = runs.open_run(args.run)
    info = run.info["input"]
    x = load_dataset(run.config.data, args.data_dir).x_test[:1024]
    model = load_model(run)
    runtimes = {"Keras, `predict_on_batch`": model.predict_on_batch}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("savedmodel", "onnx", "litert"):
            path = Path(tmp) / fmt
            export(args.run, fmt, out=path, data_root=args.data_dir)
            runtimes[fmt] = RUNNERS[fmt](path, info)
        print("| runtime | examples/s, batch 256 | ms per example, batch 1 |\n|---|---|---|")
        for name, fn in runtimes.items():
            big = best_seconds(fn, [x[i:i + 256] for i in range(0, len(x), 256)])
            one = best_seconds(fn, [x[i:i + 1] for i in range(32)])
            print(f"| {name} | {len(x) / big:,.0f} | {one / 32 * 1000:.1f} |", flush=True)


if __name__ == "__main__":
    main()
