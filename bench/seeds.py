"""Train recipes with several seeds and record each result's mean and range (docs/results.md's spread).

    python bench/seeds.py [--seeds 0,1,2] RECIPE [RECIPE ...]

Each run is `bigml train --recipe NAME train.seed=S`, one after another; results go to bench/seeds.json
(one entry per recipe: the machine, each seed's figure and wall time, their mean and range).
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from recipes import machine  # noqa: E402

OUT = ROOT / "bench" / "seeds.json"


def one(name: str, seed: int) -> dict:
    run_dir = ROOT / "runs" / "seeds" / f"{name}-{seed}"
    cmd = [str(Path(sys.executable).with_name("bigml")), "train", "--recipe", name, f"train.seed={seed}",
           "--run-dir", str(run_dir), "--overwrite", "--json"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name} seed {seed} failed ({proc.returncode})")
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    figure = metrics["loss"] if "perplexity" in metrics else metrics["accuracy"]
    return {"seed": seed, "figure": figure, "wall_seconds": round(wall, 1),
            "train_seconds": metrics["train_seconds"], "precision": metrics["precision"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipes", nargs="+")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    for name in args.recipes:
        runs = [one(name, int(s)) for s in args.seeds.split(",")]
        figures = [r["figure"] for r in runs]
        results[name] = {"machine": machine(), "figure": "val loss" if name.startswith("gpt") else "test accuracy",
                         "mean": statistics.mean(figures), "min": min(figures), "max": max(figures),
                         "mean_wall_seconds": round(statistics.mean(r["wall_seconds"] for r in runs), 1),
                         "runs": runs, "date": time.strftime("%Y-%m-%d")}
        OUT.write_text(json.dumps(results, indent=2) + "\n")
        print(name, json.dumps(results[name]), flush=True)


if __name__ == "__main__":
    main()
