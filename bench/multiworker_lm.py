"""A language model trained on two worker processes (loopback ports) against one process, the same recipe
and global batch: their validation losses should agree within 0.02 nats. Records bench/multiworker_lm.json.

    python bench/multiworker_lm.py [--recipe gpt_tinyshakespeare] [overrides...]
"""

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from recipes import machine  # noqa: E402

BIGML = str(Path(sys.executable).with_name("bigml"))
RUNS = ROOT / "runs" / "bench" / "multiworker_lm"


def main(argv=None):
    from bigml_cli.distribute import free_local_ports

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="gpt_tinyshakespeare")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args(argv)
    base = [BIGML, "train", "--recipe", a.recipe, *a.overrides, "--json", "--overwrite"]
    start = time.perf_counter()
    one = subprocess.run([*base, "--run-dir", str(RUNS / "one")], capture_output=True, text=True)
    if one.returncode:
        sys.exit(f"the single process failed:\n{one.stderr[-2000:]}")
    single = {**json.loads(one.stdout.strip().splitlines()[-1]), "wall_seconds": round(time.perf_counter() - start)}
    workers = ",".join(f"localhost:{p}" for p in free_local_ports(2))
    start = time.perf_counter()
    procs = [subprocess.Popen([*base, "--run-dir", str(RUNS / ("two" if i == 0 else "worker1")), "--workers", workers,
                               "--worker-index", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate() for p in procs]
    for i, (p, (_, err)) in enumerate(zip(procs, outs)):
        if p.returncode:
            sys.exit(f"worker {i} failed:\n{err[-2000:]}")
    two = {**json.loads(outs[0][0].strip().splitlines()[-1]), "wall_seconds": round(time.perf_counter() - start)}
    keys = ("loss", "perplexity", "accuracy", "train_seconds", "wall_seconds", "epochs")
    result = {"date": datetime.date.today().isoformat(), "machine": machine(),
              "command": "bigml train --recipe " + " ".join([a.recipe, *a.overrides]),
              "one_process": {k: single[k] for k in keys}, "two_workers": {k: two[k] for k in keys},
              "val_loss_difference_nats": round(abs(two["loss"] - single["loss"]), 4)}
    (ROOT / "bench" / "multiworker_lm.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
