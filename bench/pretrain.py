"""Pre-train, then fine-tune, side by side: gpt pre-trained on IMDB's training reviews (gpt_imdb_lm), then the
gpt_classifier recipe three ways for the same steps: from scratch, from the language model with every weight
training, and from it with LoRA. Records bench/pretrain.json and rewrites the table in docs/results.md.

    python bench/pretrain.py [--lora-rank 4] [--lora-lr 0.002]    # about 40 minutes on a 2-core CPU
    python bench/pretrain.py --table                               # only rewrite the table

Every run is `bigml train --recipe ...` with the overrides the table shows.
"""

import argparse
import datetime
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from recipes import machine  # noqa: E402

RESULTS = ROOT / "bench" / "pretrain.json"
DOC = ROOT / "docs" / "results.md"
RUNS = ROOT / "runs" / "bench"


def train(name, recipe, overrides):
    run_dir = RUNS.relative_to(ROOT) / name
    cmd = [str(Path(sys.executable).with_name("bigml")), "train", "--recipe", recipe, "--run-dir", str(run_dir),
           "--overwrite", "--json", *overrides]
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{name}: bigml train failed:\n{proc.stderr[-3000:]}")
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    lora = re.search(r"LoRA rank \d+: ([\d,]+) of ([\d,]+) parameters train", " ".join(proc.stderr.split()))
    entry = {"command": "bigml train --recipe " + recipe + "".join(f" {o}" for o in overrides),
             "wall_seconds": round(wall, 1), **{k: metrics[k] for k in ("accuracy", "loss", "perplexity",
                                                                         "train_seconds", "epochs") if k in metrics}}
    if lora:
        entry["trained_parameters"], entry["parameters"] = (int(n.replace(",", "")) for n in lora.groups())
    print(f"{name:<28} {json.dumps(entry)}", flush=True)
    return entry


def table(results):
    lines = ["| run | command | IMDB test accuracy | trains | wall time |", "|---|---|---|---|---|"]
    for name, r in results["runs"].items():
        if "perplexity" in r:
            result = f"val loss {r['loss']:.3f} (perplexity {r['perplexity']:.1f})"
        else:
            result = f"{r['accuracy']:.2%}"
        share = (f"{r['trained_parameters']:,} of {r['parameters']:,} parameters "
                 f"({r['trained_parameters'] / r['parameters']:.1%})" if "trained_parameters" in r else "every weight")
        lines.append(f"| {name} | `{r['command']}` | {result} | {share} | {r['wall_seconds']:,.0f} s |")
    lines.append(f"\nMeasured {results['measured_on']}.")
    return "\n".join(lines)


def write_table(results):
    text = DOC.read_text()
    block = f"<!-- pretrain:start -->\n{table(results)}\n<!-- pretrain:end -->"
    if "<!-- pretrain:start -->" in text:
        text = re.sub(r"<!-- pretrain:start -->.*<!-- pretrain:end -->", block, text, flags=re.S)
    else:
        text += f"\n## Pre-training, then fine-tuning (`bench/pretrain.py`)\n\n{block}\n"
    DOC.write_text(text)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--lora-rank", type=int, default=4)
    parser.add_argument("--lora-lr", type=float, default=0.002)
    a = parser.parse_args()
    if a.table:
        return write_table(json.loads(RESULTS.read_text()))
    lm = RUNS.relative_to(ROOT) / "gpt_imdb_lm"
    runs = {"language model (pre-training)": train("gpt_imdb_lm", "gpt_imdb_lm", [])}
    runs["classifier from scratch"] = train("gpt_imdb_scratch", "gpt_imdb_classifier", ["train.init="])
    runs["classifier from the language model"] = train("gpt_imdb_classifier", "gpt_imdb_classifier",
                                                       [f"train.init={lm}"])
    runs[f"... with LoRA rank {a.lora_rank}"] = train(
        "gpt_imdb_lora", "gpt_imdb_classifier",
        [f"train.init={lm}", f"train.lora_rank={a.lora_rank}", f"train.learning_rate={a.lora_lr}"])
    results = {"runs": runs, "measured_on": f"{datetime.date.today().isoformat()}, {machine()}"}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    write_table(results)


if __name__ == "__main__":
    main()
