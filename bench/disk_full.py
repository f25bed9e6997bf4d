"""A full and a read-only disk, for real: trains into a small tmpfs until it fills, then checks that bigml
stopped with one line and exit code 2, kept its last good checkpoint, left no partial file, and that
`--resume` finishes once space is freed; then the same for `predict --out` and `export --out`.

Needs root (it mounts a tmpfs).  Run:  sudo .venv/bin/python bench/disk_full.py
Prints each step and ends with `disk full: N passed, N failed`."""

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BIGML = str(Path(sys.executable).with_name("bigml"))
results = []


def bigml(*args, cwd=None):
    proc = subprocess.run([BIGML, *map(str, args)], capture_output=True, text=True, cwd=cwd)
    return proc.returncode, proc.stdout, proc.stderr


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else ""), flush=True)


def one_error_line(stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    error = [line for line in lines if line.startswith("error:")]
    return len(error) == 1 and "Traceback" not in stderr, (error[0] if error else stderr[-600:])


def partial_files(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if ".partial" in p.name
                  or p.name.endswith("_temp") or "_temp/" in str(p))


def fill(path):
    """Writes zeros into `path` until the disk says it is full."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


def mount(size):
    mnt = Path(tempfile.mkdtemp(prefix="bigml-full-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], check=True)
    return mnt


def main():
    if os.geteuid() != 0:
        sys.exit("run as root: it mounts a tmpfs")
    mnt = mount("64m")
    try:
        run = mnt / "run"
        state = run / "checkpoints" / "state" / "checkpoint"
        filler = mnt / "filler"

        def fill_after_first_checkpoint():
            while not state.exists():
                time.sleep(0.01)
            fill(filler)

        threading.Thread(target=fill_after_first_checkpoint, daemon=True).start()
        code, out, err = bigml("train", "mlp", "--dataset", "digits", "--run-dir", run, "train.epochs=40",
                               "train.checkpoint_every=3", "model.hidden_units=[512,512]")
        ok, line = one_error_line(err)
        check("train into a disk that fills: exit 2 and one error line", code == 2 and ok, f"exit {code}: {line}")
        check("  the line names the run and --resume", "--resume" in line and str(run) in line)
        check("  no partial files left", not partial_files(run), str(partial_files(run)))
        reader = subprocess.run([sys.executable, "-c", (
            "import sys, tensorflow as tf; p = tf.train.latest_checkpoint(sys.argv[1]); "
            "r = tf.train.load_checkpoint(p); print(p, len(r.get_variable_to_shape_map()))"), str(state.parent)],
            capture_output=True, text=True)
        check("  the latest checkpoint reads back whole", reader.returncode == 0,
              reader.stdout.strip().replace(str(mnt), "MNT") or reader.stderr[-300:])
        filler.unlink()
        code, out, err = bigml("train", "--resume", run)
        check("after freeing space, --resume finishes", code == 0 and "accuracy" in out,
              f"exit {code}; {err.strip().splitlines()[0] if err.strip() else ''}")

        samples = Path(tempfile.mkdtemp(prefix="bigml-samples-"))
        bigml("samples", "digits", "--out", samples, "--count", "200")
        inputs = sorted(samples.glob("*.png"))
        fill(filler)
        predictions = mnt / "p.csv"
        code, out, err = bigml("predict", run, *inputs, "--out", predictions)
        ok, line = one_error_line(err)
        check("predict --out on a full disk: exit 2 and one error line", code == 2 and ok, f"exit {code}: {line}")
        check("  no prediction file, no partial one", not predictions.exists() and not partial_files(mnt),
              str(partial_files(mnt)))
        export = mnt / "export"
        code, out, err = bigml("export", run, "--out", export)
        ok, line = one_error_line(err)
        check("export --out on a full disk: exit 2 and one error line", code == 2 and ok, f"exit {code}: {line}")
        check("  no export folder, no partial one", not export.exists() and not partial_files(mnt),
              str(partial_files(mnt)))
        filler.unlink()
        code, out, err = bigml("export", run, "--out", export)
        check("export after freeing space", code == 0, f"exit {code}")
        before = sorted(p.name for p in export.iterdir())

        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        code, out, err = bigml("export", run, "--out", export, "--overwrite")
        ok, line = one_error_line(err)
        check("export --out on a read-only disk: exit 2 and one error line", code == 2 and ok, f"exit {code}: {line}")
        check("  the earlier export is intact", sorted(p.name for p in export.iterdir()) == before)
        code, out, err = bigml("predict", run, *inputs[:3], "--out", predictions)
        ok, line = one_error_line(err)
        check("predict --out on a read-only disk: exit 2 and one error line", code == 2 and ok,
              f"exit {code}: {line}")
        code, out, err = bigml("train", "mlp", "--dataset", "digits", "--run-dir", mnt / "new", "train.epochs=1")
        ok, line = one_error_line(err)
        check("train into a read-only disk: exit 2 and one error line", code == 2 and ok, f"exit {code}: {line}")
    finally:
        subprocess.run(["umount", "-l", str(mnt)])
    passed = sum(results)
    print(f"disk full: {passed} passed, {len(results) - passed} failed")
    sys.exit(0 if passed == len(results) else 1)


if __name__ == "__main__":
    main()
