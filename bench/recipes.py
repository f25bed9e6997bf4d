"""Train shipped recipes with their defaults, record test results and wall time in bench/results.json, and
rewrite the table of them in docs/results.md.

    python bench/recipes.py [RECIPE ...]     # default: every recipe, one after another (75 minutes)
    python bench/recipes.py --table          # only rewrite docs/results.md's table from bench/results.json
    python bench/recipes.py --from-run NAME RUN_DIR   # record a run of recipe NAME trained by hand (its wall time:
                                                      # config.yaml written to metrics.json written)

Each recipe runs as `bigml train --recipe NAME`, which is what the command on its first line resolves to.
Recipes named here replace their own entries; the others are kept, each with the date and machine of its run.
"""

import datetime
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bigml_cli.config import RECIPES_DIR, recipe_names  # noqa: E402

RESULTS = ROOT / "bench" / "results.json"
README = ROOT / "docs" / "results.md"


def machine():
    """`2-core AMD EPYC (AVX-512, AVX512_BF16), TensorFlow 2.21.0, Keras 3.15.1`, from this machine."""
    import keras
    import tensorflow as tf

    from bigml_cli.bench import usable_cores
    from bigml_cli.distribute import cpu_flags

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    flags = cpu_flags(info)
    isa = ", ".join(f for f, present in (("AVX-512", "avx512f" in flags), ("AVX512_BF16", "avx512_bf16" in flags),
                                         ("AMX", "amx_bf16" in flags)) if present) or ("AVX2" if "avx2" in flags else "")
    cpu = name.group(1).strip() if name else platform.processor() or "CPU"
    return f"{usable_cores()}-core {cpu} ({isa or 'no AVX'}), TensorFlow {tf.__version__}, Keras {keras.__version__}"


def command_of(name):
    """The command on the recipe's first line (`# bigml train cnn --dataset cifar10`), or the --recipe form."""
    first = (RECIPES_DIR / f"{name}.yaml").read_text().splitlines()[0]
    return first[2:].strip() if first.startswith("# bigml ") else f"bigml train --recipe {name}"


def run(name, on):
    run_dir = ROOT / "runs" / "bench" / name
    cmd = [str(Path(sys.executable).with_name("bigml")), "train", "--recipe", name, "--run-dir", str(run_dir),
           "--overwrite", "--json"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return None
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"command": command_of(name), "wall_seconds": round(wall, 1),
            **{k: metrics[k] for k in ("accuracy", "loss", "perplexity", "train_seconds", "epochs",
                                       "examples_per_second", "precision") if k in metrics},
            "measured_on": f"{datetime.date.today().isoformat()}, {on}"}


def from_run(name, run_dir, on):
    """The entry of a finished run of recipe `name` (trained with `bigml train --recipe NAME`)."""
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    wall = (run_dir / "metrics.json").stat().st_mtime - (run_dir / "config.yaml").stat().st_mtime
    return {"command": command_of(name), "wall_seconds": round(wall, 1),
            **{k: metrics[k] for k in ("accuracy", "loss", "perplexity", "train_seconds", "epochs",
                                       "examples_per_second", "precision") if k in metrics},
            "measured_on": f"{datetime.date.today().isoformat()}, {on}"}


def table(results):
    lines = ["| recipe | command | result | wall time | training | precision | measured |", "|---|---|---|---|---|---|---|"]
    for name, r in sorted(results.items()):
        result = (f"val loss {r['loss']:.3f} nats/char (perplexity {r['perplexity']:.2f})" if "perplexity" in r
                  else f"{r['accuracy']:.2%} test accuracy")
        rate = f", {r['examples_per_second']:,.0f} examples/s" if "examples_per_second" in r else ""
        lines.append(f"| `{name}` | `{r['command']}` | {result} | {r['wall_seconds']:,.0f} s | "
                     f"{r['train_seconds']:,.1f} s, {r['epochs']} epochs{rate} | {r.get('precision', 'float32')} | "
                     f"{r.get('measured_on', '')} |")
    return "\n".join(lines)


def write_table(results):
    text = README.read_text()
    README.write_text(re.sub(r"<!-- recipes:start -->.*<!-- recipes:end -->",
                             f"<!-- recipes:start -->\n{table(results)}\n<!-- recipes:end -->", text, flags=re.S))


def main(names):
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    old_date = results.pop("_measured_on", "")  # files before 2026-11-29: one date for all, other key names
    for entry in results.values():
        for was, now in (("test_accuracy", "accuracy"), ("val_loss", "loss")):
            if was in entry:
                entry[now] = entry.pop(was)
        entry.setdefault("measured_on", old_date)
    if names == ["--table"]:
        return write_table(results)
    if names[:1] == ["--from-run"]:
        results[names[1]] = from_run(names[1], names[2], machine())
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        return write_table(results)
    on, failed = machine(), []
    for name in names or recipe_names():
        entry = run(name, on)
        if entry is None:
            failed.append(name)
            print(f"{name:<22} bigml train failed; its entry is left as it was", flush=True)
            continue
        results[name] = entry
        shown = f"val loss {entry['loss']:.3f}" if "perplexity" in entry else f"test accuracy {entry['accuracy']:.4f}"
        print(f"{name:<22} {shown}  wall {entry['wall_seconds'] / 60:.1f} min", flush=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        write_table(results)
    if failed:
        sys.exit(f"bigml train failed for: {', '.join(failed)}")


if __name__ == "__main__":
    main(sys.argv[1:])
