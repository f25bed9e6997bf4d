"""Train with two worker processes on loopback ports and compare with a single-process run.

    python bench/multiworker_check.py mlp mnist --single runs/bench/mlp_mnist/metrics.json [overrides...]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bigml_cli.distribute import free_local_ports

BIGML = str(Path(sys.executable).with_name("bigml"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("dataset")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--single", help="metrics.json of the single-process run to compare with")
    ap.add_argument("--data-dir", default=None)
    a = ap.parse_args()
    workers = ",".join(f"localhost:{p}" for p in free_local_ports(2))
    extra = ["--data-dir", a.data_dir] if a.data_dir else []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        procs = [subprocess.Popen([BIGML, "train", a.model, "--dataset", a.dataset, *a.overrides, *extra, "--json",
                                   "--workers", workers, "--worker-index", str(i), "--run-dir", f"{tmp}/worker{i}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
        outs = [p.communicate() for p in procs]
        for i, (p, (_, err)) in enumerate(zip(procs, outs)):
            if p.returncode != 0:
                sys.exit(f"worker {i} failed: {err[-2000:]}")
        chief = json.loads(outs[0][0].strip().splitlines()[-1])
        print(f"two workers ({workers}): test accuracy {chief['accuracy']:.4f} in {time.perf_counter() - start:.0f} s")
        print(f"run directories: chief's exists: {Path(tmp, 'worker0', 'model.keras').exists()}, "
              f"worker 1's exists: {Path(tmp, 'worker1').exists()}")
        if a.single:
            single = json.loads(Path(a.single).read_text())["accuracy"]
            print(f"single process: {single:.4f}; difference {abs(chief['accuracy'] - single) * 100:.2f} points")


if __name__ == "__main__":
    main()
