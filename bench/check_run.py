"""Acceptance checks on a finished run, each through the real CLI and a fresh process:

    python bench/check_run.py RUN [--data-dir DIR]

1. `bigml eval RUN --json` reproduces the test accuracy in RUN/metrics.json;
2. `bigml predict` on 20 test images written as PNG files agrees with eval's predictions;
3. the exported SavedModel, loaded in a fresh process with tf.saved_model.load, gives the same
   top-1 as the Keras model on 1,000 test images, probabilities within 1e-4;
4. `saved_model_cli show --all` lists serving_default with a uint8 image input.

For text classifiers (issue 3) items 2-4 become: 200 raw test reviews written as .txt files,
`bigml predict --file` on them, and the exported SavedModel loaded in a fresh process with
tf.saved_model.load returns the same labels for the same raw strings; serving_default takes strings.
"""

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

BIN = Path(sys.executable).parent

FRESH = """
import json, sys, numpy as np, tensorflow as tf, keras
import bigml_cli.models
from bigml_cli.data import load_dataset
from bigml_cli.runs import open_run
run = open_run(sys.argv[1])
x = load_dataset(run.config.data, sys.argv[3] or None).x_test[:1000]
serve = tf.saved_model.load(sys.argv[2]).signatures["serving_default"]
got = np.concatenate([serve(image=tf.constant(x[i:i + 250]))["probabilities"].numpy() for i in range(0, len(x), 250)])
want = keras.models.load_model(run.model_file).predict(x, verbose=0, batch_size=250)
print(json.dumps({"images": len(x), "top1_agreement": float((got.argmax(1) == want.argmax(1)).mean()),
                  "max_abs_diff": float(np.abs(got - want).max())}))
"""

FRESH_TEXT = """
import json, sys, numpy as np, tensorflow as tf
from pathlib import Path
files = json.loads(Path(sys.argv[2]).read_text())
texts = [Path(f).read_text(encoding="utf-8", errors="replace") for f in files]
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
probs = np.concatenate([serve(text=tf.constant(texts[i:i + 50]))["probabilities"].numpy() for i in range(0, len(texts), 50)])
print(json.dumps({"labels": probs.argmax(1).tolist()}))
"""


def bigml(*args):
    proc = subprocess.run([str(BIN / "bigml"), *map(str, args)], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bigml {' '.join(map(str, args))} failed: {proc.stderr.strip()}")
    return proc.stdout


def serving_signature(savedmodel):
    """`saved_model_cli show --all`'s text from the serving_default signature on."""
    shown = subprocess.run([str(BIN / "saved_model_cli"), "show", "--dir", str(savedmodel), "--all"],
                           capture_output=True, text=True).stdout
    return shown[shown.index("signature_def['serving_default']"):]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--data-dir", default="")
    ap.add_argument("--no-eval", action="store_true", help="skip item 1 (eval on the whole test split)")
    a = ap.parse_args()
    run = Path(a.run)
    data = ["--data-dir", a.data_dir] if a.data_dir else []
    trained = json.loads((run / "metrics.json").read_text())
    if not a.no_eval:
        report = json.loads(bigml("eval", run, "--json", *data))
        print(f"1. eval accuracy {report['accuracy']:.4f} vs training's {trained['accuracy']:.4f}: "
              f"{'same' if report['accuracy'] == trained['accuracy'] else 'DIFFERENT'}")
    info = json.loads((run / "run.json").read_text())
    if info["input"]["kind"] == "text":
        return check_text(run, info, data, a.data_dir)
    dataset = info["dataset"]
    with tempfile.TemporaryDirectory() as tmp:
        bigml("samples", dataset, "--out", tmp, "-n", 20, *data)
        files = sorted(Path(tmp).glob("*.png"))
        preds = json.loads(bigml("predict", run, *files, "--json"))["predictions"]
        with open(run / "eval" / "test" / "predictions.csv") as f:
            rows = list(csv.DictReader(f))[:20]
        agree = sum(p["top_k"][0]["label"] == r["predicted"] for p, r in zip(preds, rows))
        print(f"2. predict on {len(files)} PNG files agrees with eval on {agree}/{len(rows)}")
        out = Path(tmp) / "savedmodel"
        bigml("export", run, "--out", out, *data)
        fresh = subprocess.run([sys.executable, "-c", FRESH, str(run), str(out), a.data_dir],
                               capture_output=True, text=True, check=True)
        result = json.loads(fresh.stdout.strip().splitlines()[-1])
        print(f"3. fresh-process SavedModel vs Keras on {result['images']} test images: top-1 agreement "
              f"{result['top1_agreement']:.4f}, max |prob diff| {result['max_abs_diff']:.2e}")
        sig = serving_signature(out)
        ok = "DT_UINT8" in sig.split("outputs")[0]
        print(f"4. saved_model_cli: serving_default {'takes a uint8 image' if ok else 'has NO uint8 input'}: "
              + " ".join(line.strip() for line in sig.splitlines()[2:5]))


def check_text(run, info, data, data_dir, n=200):
    """Items 2-4 for a text classifier: predict and the fresh-process SavedModel on n raw test reviews."""
    from bigml_cli.data import load_dataset
    from bigml_cli.runs import open_run

    x = load_dataset(open_run(run).config.data, data_dir or None).x_test
    picked = [str(t) for t in x[::max(1, len(x) // n)][:n]]  # spread over the split (it is sorted by class)
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, text in enumerate(picked):
            files.append(Path(tmp) / f"review_{i:03d}.txt")
            files[-1].write_text(text, encoding="utf-8")
        preds = json.loads(bigml("predict", run, *files, "--file", "--json", "-k", 1))["predictions"]
        labels = [p["top_k"][0]["label"] for p in preds]
        out = Path(tmp) / "savedmodel"
        bigml("export", run, "--out", out, *data)
        (Path(tmp) / "files.json").write_text(json.dumps([str(f) for f in files]))
        fresh = subprocess.run([sys.executable, "-c", FRESH_TEXT, str(out), str(Path(tmp) / "files.json")],
                               capture_output=True, text=True, check=True)
        served = [info["class_names"][i] for i in json.loads(fresh.stdout.strip().splitlines()[-1])["labels"]]
        same = sum(a == b for a, b in zip(labels, served))
        print(f"2-3. {len(files)} raw test reviews: fresh-process SavedModel labels equal `bigml predict --file` "
              f"labels on {same}/{len(files)}")
        sig = serving_signature(out)
        print("4. saved_model_cli: serving_default " + " ".join(line.strip() for line in sig.splitlines()[2:5]))


if __name__ == "__main__":
    main()
