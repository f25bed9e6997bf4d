"""Pre-train, then fine-tune, side by side, for one of two pairs; records bench/pretrain.json and rewrites the
pair's table in docs/results.md. Every run is `bigml train --recipe ...` with the overrides the table shows.

gpt: gpt pre-trained on IMDB's training reviews (gpt_imdb_lm), then the gpt_classifier recipe three ways for
the same steps: from scratch, from the language model with every weight training, and with LoRA.
mlm: transformer_mlm pre-trained by masking those reviews (transformer_imdb_mlm), then the transformer recipe
from scratch (transformer_imdb) and from it (transformer_imdb_finetune), the same settings and steps.

    python bench/pretrain.py [--pair gpt] [--lm-epochs N] [--lora-rank 4] [--lora-lr 0.002]
    python bench/pretrain.py --pair mlm
    python bench/pretrain.py --reuse ...   # a run whose command is unchanged and whose directory is whole
                                           # keeps its recorded figures (resume a long comparison)
    python bench/pretrain.py --table       # only rewrite the tables
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


def same_config(run_dir, recipe, overrides):
    """Whether a finished run in run_dir has the settings the command resolves to now (a recipe may have
    changed under the same command)."""
    import yaml

    saved = ROOT / run_dir / "config.yaml"
    if not (ROOT / run_dir / "metrics.json").exists() or not saved.exists():
        return False
    now = subprocess.run([str(Path(sys.executable).with_name("bigml")), "config", "--recipe", recipe, *overrides],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT).stdout
    return yaml.safe_load(now) == yaml.safe_load(saved.read_text())


def train(name, recipe, overrides, previous=None):
    run_dir = RUNS.relative_to(ROOT) / name
    command = "bigml train --recipe " + recipe + "".join(f" {o}" for o in overrides)
    if previous and previous.get("command") == command and same_config(run_dir, recipe, overrides):
        print(f"{name:<28} kept: {json.dumps(previous)}", flush=True)
        return previous
    cmd = [str(Path(sys.executable).with_name("bigml")), "train", "--recipe", recipe, "--run-dir", str(run_dir),
           "--overwrite", "--json", *overrides]
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{name}: bigml train failed:\n{proc.stderr[-3000:]}")
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    lora = re.search(r"LoRA rank \d+: ([\d,]+) of ([\d,]+) parameters train", " ".join(proc.stderr.split()))
    entry = {"command": command,
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


TITLES = {"gpt": "pretrain", "mlm": "pretrain-mlm"}  # each pair's table's markers in docs/results.md


def write_table(results):
    text = DOC.read_text()
    for pair, mark in TITLES.items():
        if pair not in results:
            continue
        block = f"<!-- {mark}:start -->\n{table(results[pair])}\n<!-- {mark}:end -->"
        if f"<!-- {mark}:start -->" in text:
            text = re.sub(f"<!-- {mark}:start -->.*<!-- {mark}:end -->", lambda m: block, text, flags=re.S)
        else:
            text += f"\n## Pre-training, then fine-tuning: {pair} (`bench/pretrain.py --pair {pair}`)\n\n{block}\n"
    DOC.write_text(text)


def epochs(a):
    return [f"train.epochs={a.lm_epochs}"] if a.lm_epochs else []  # the recipe's own by default


def gpt_pair(a, old):
    lm = RUNS.relative_to(ROOT) / "gpt_imdb_lm"
    runs = {"language model (pre-training)": train("gpt_imdb_lm", "gpt_imdb_lm", epochs(a),
                                                   old.get("language model (pre-training)"))}
    for label, name, extra in (
            ("classifier from scratch", "gpt_imdb_scratch", ["train.init="]),
            ("classifier from the language model", "gpt_imdb_classifier", [f"train.init={lm}"]),
            (f"... with LoRA rank {a.lora_rank}", "gpt_imdb_lora",
             [f"train.init={lm}", f"train.lora_rank={a.lora_rank}", f"train.learning_rate={a.lora_lr}"])):
        runs[label] = train(name, "gpt_imdb_classifier", extra, old.get(label))
    return runs


def mlm_pair(a, old):
    mlm = RUNS.relative_to(ROOT) / "transformer_imdb_mlm"
    runs = {"masked language model (pre-training)": train(
        "transformer_imdb_mlm", "transformer_imdb_mlm", epochs(a),
        old.get("masked language model (pre-training)"))}
    runs["classifier from scratch"] = train("transformer_imdb_scratch", "transformer_imdb", [],
                                            old.get("classifier from scratch"))
    runs["classifier from the masked language model"] = train(
        "transformer_imdb_finetune", "transformer_imdb_finetune", [f"train.init={mlm}"],
        old.get("classifier from the masked language model"))
    return runs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pair", choices=("gpt", "mlm"), default="gpt")
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--lm-epochs", type=int, default=0, help="pre-training epochs (0: the recipe's)")
    parser.add_argument("--lora-rank", type=int, default=4)
    parser.add_argument("--lora-lr", type=float, default=0.002)
    a = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if "runs" in results:  # the file's first layout: the gpt pair alone
        results = {"gpt": results}
    if a.table:
        return write_table(results)
    old = results.get(a.pair, {}).get("runs", {}) if a.reuse else {}
    runs = (gpt_pair if a.pair == "gpt" else mlm_pair)(a, old)
    results[a.pair] = {"runs": runs, "measured_on": f"{datetime.date.today().isoformat()}, {machine()}"}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    write_table(results)


if __name__ == "__main__":
    main()
