"""Train shipped recipes with their defaults and record test accuracy and wall time.

    python bench/recipes.py [RECIPE ...]     # default: every recipe; writes bench/results.json
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bigml_cli.config import RECIPES_DIR, recipe_names  # noqa: E402


def main(names):
    results_file = ROOT / "bench" / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    for name in names or recipe_names():
        recipe = yaml.safe_load((RECIPES_DIR / f"{name}.yaml").read_text())
        run_dir = ROOT / "runs" / "bench" / name
        cmd = [str(Path(sys.executable).with_name("bigml")), "train", recipe["model"]["name"], "--dataset",
               recipe["data"]["name"], "--run-dir", str(run_dir), "--overwrite", "--json"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"{name}: bigml train failed with exit code {proc.returncode}")
        metrics = json.loads(proc.stdout.strip().splitlines()[-1])
        results[name] = {"command": " ".join(["bigml"] + cmd[1:5]), "test_accuracy": metrics["accuracy"],
                         "wall_seconds": round(wall, 1), "train_seconds": metrics["train_seconds"],
                         "epochs": metrics["epochs"]}
        print(f"{name:<16} test accuracy {metrics['accuracy']:.4f}  wall {wall / 60:.1f} min", flush=True)
        results_file.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
