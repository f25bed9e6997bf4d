"""`make bench`: measure the tutorial CNN against the hand-written Keras baseline and the cnn_cifar10
recipe's throughput, write bench/throughput.json, and rewrite the throughput table in docs/results.md.

    python bench/run.py [--pairs 3] [--recipes tutorial_cnn_cifar10,cnn_cifar10]
"""

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bigml_cli.bench import bench, peak_caveat  # noqa: E402


def table(results):
    lines = ["| recipe | batch | precision | bigml ex/s | train MFLOP/example | achieved GFLOP/s | of peak | baseline ex/s | "
             "bigml / baseline (median of pairs) | time to val acc |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        base = [p.get("baseline_examples_per_second") for p in r["pairs"]]
        tta = [p["bigml_time_to_target_seconds"] for p in r["pairs"]]
        tta_s = f"{r['target_val_accuracy']:.0%} in {sorted(tta)[len(tta) // 2]:.0f} s" if None not in tta \
            else f"{r['target_val_accuracy']:.0%} not reached in 1 epoch"
        counted = r["train_flops_per_example"] is not None  # not for a recurrent layer's loop
        compute = (f"{r['train_flops_per_example'] / 1e6:,.1f} | {r['achieved_flops_per_second'] / 1e9:,.1f} | "
                   f"{r['fraction_of_peak']:.1%}" if counted else "not counted | - | -")
        lines.append(
            f"| {r['recipe']} | {r['global_batch_size']} | {r.get('precision', 'float32')} | "
            f"{r['examples_per_second']:,.0f} | {compute} | "
            + (f"{sorted(base)[len(base) // 2]:,.0f} | {r['median_ratio_vs_baseline']:.2f}x" if base[0] else "- | -")
            + f" | {tta_s} |")
    lines.append("")
    peaks = "; ".join(sorted({r["peak"] for r in results}))
    caveat = peak_caveat(r["fraction_of_peak"] for r in results)
    lines.append(f"Peak: {peaks}. The baseline trains in float32. Each measurement is one epoch in a fresh process; throughput is "
                 "the median step time after 10 warm-up steps. Training FLOPs = 3 x the forward pass's, counted "
                 "by TensorFlow's profiler."
                 + (f" A fraction {caveat}." if caveat else ""))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--recipes", default="tutorial_cnn_cifar10,cnn_cifar10",
                    help="comma-separated; the tutorial CNN is paired with the baseline, others timed alone")
    a = ap.parse_args()
    paired = "tutorial_cnn_cifar10"  # the recipe the hand-written baseline reproduces
    results = [bench(r, a.pairs if r == paired else 1, target=0.5, baseline=r == paired) for r in a.recipes.split(",")]
    (ROOT / "bench" / "throughput.json").write_text(json.dumps(results, indent=2) + "\n")
    md = table(results)
    print(md)
    readme = ROOT / "docs" / "results.md"
    text = readme.read_text()
    new = re.sub(r"<!-- bench:start -->.*<!-- bench:end -->", f"<!-- bench:start -->\n{md}\n<!-- bench:end -->",
                 text, flags=re.S)
    readme.write_text(new)


if __name__ == "__main__":
    main()
