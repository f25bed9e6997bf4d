"""bigml's seq2seq_spa_eng recipe against the Keras example's kind of model, side by side on the same held-out
pairs of spa-eng, for the same training time; records bench/translation.json.

1. `bigml train --recipe seq2seq_spa_eng` (greedy test BLEU), then `bigml eval RUN --beam 4` on the same run;
2. bench/translation_baseline.py trained for as long as bigml's run trained (its train_seconds), then greedy;
3. both scored with the same sacrebleu call against the same references: cased and punctuated as the data is,
   and, since the example's model writes lowercase words without punctuation, also with outputs and references
   lowercased and stripped of punctuation alike.

    python bench/translation.py [--reuse]    # --reuse: keep a finished bigml run whose config is unchanged
"""

import argparse
import csv
import datetime
import json
import re
import string
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from recipes import machine  # noqa: E402

RESULTS = ROOT / "bench" / "translation.json"
RUNS = ROOT / "runs" / "bench" / "translation"
BIGML = str(Path(sys.executable).with_name("bigml"))


def plain(text):
    """Lowercased, punctuation (and ¿¡) removed, spaces squeezed: what the example's model writes."""
    text = re.sub(f"[{re.escape(string.punctuation + '¿¡')}]", " ", text.lower())
    return " ".join(text.split())


def bigml_side(reuse):
    run = RUNS / "bigml"
    start = time.perf_counter()
    if not (reuse and (run / "metrics.json").exists()):
        proc = subprocess.run([BIGML, "train", "--recipe", "seq2seq_spa_eng", "--run-dir", str(run), "--overwrite",
                               "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        if proc.returncode:
            sys.exit(f"bigml train failed:\n{proc.stderr[-3000:]}")
    wall = time.perf_counter() - start
    metrics = json.loads((run / "metrics.json").read_text())
    beam = subprocess.run([BIGML, "eval", str(run), "--beam", "4", "--json"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd=ROOT)
    if beam.returncode:
        sys.exit(f"bigml eval --beam 4 failed:\n{beam.stderr[-3000:]}")
    beam = json.loads(beam.stdout.strip().splitlines()[-1])
    return run, {"command": "bigml train --recipe seq2seq_spa_eng", "wall_seconds": round(wall, 1),
                 **{k: metrics[k] for k in ("bleu", "chrf", "loss", "accuracy", "examples", "train_seconds",
                                            "epochs")},
                 "beam4_bleu": beam["bleu"], "beam4_chrf": beam["chrf"]}


def rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reuse", action="store_true")
    args = parser.parse_args(argv)
    from bigml_cli.translate import scores

    RUNS.mkdir(parents=True, exist_ok=True)
    run, ours = bigml_side(args.reuse)
    print("bigml", json.dumps(ours), flush=True)
    test = rows(run / "eval" / "test" / "predictions.csv")
    references = [r["reference"] for r in test]
    start = time.perf_counter()
    out = RUNS / "baseline.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "translation_baseline.py"), "--seconds",
                           str(ours["train_seconds"]), "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    if proc.returncode:
        sys.exit(f"baseline failed:\n{proc.stderr[-3000:]}")
    base = json.loads(out.read_text())
    base["wall_seconds"] = round(time.perf_counter() - start, 1)
    if base["test_pairs"] != len(references):
        sys.exit(f"the baseline scored {base['test_pairs']} pairs and bigml {len(references)}: not the same split")
    ours.update({f"plain_{k}": v for k, v in scores([plain(r["output"]) for r in test],
                                                    [plain(x) for x in references]).items()})
    base.update({f"plain_{k}": v for k, v in scores([plain(o) for o in base["outputs"]],
                                                    [plain(x) for x in references]).items()})
    base.pop("outputs")
    result = {"date": datetime.date.today().isoformat(), "machine": machine(), "test_pairs": len(references),
              "bigml": ours, "baseline": base, "bleu_ratio": round(ours["bleu"] / max(base["bleu"], 1e-9), 2),
              "plain_bleu_ratio": round(ours["plain_bleu"] / max(base["plain_bleu"], 1e-9), 2)}
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
