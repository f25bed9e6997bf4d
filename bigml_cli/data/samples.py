"""Write dataset examples out as files (images as PNG, texts as .txt), to try `bigml predict` on real inputs."""

from pathlib import Path

import numpy as np

from bigml_cli.data import load_dataset
from bigml_cli.errors import UserError


def write_samples(cfg, out_dir, count=10, split="test", data_root=None):
    """Save the first `count` examples of a split as OUT/NNNNN_LABEL.png (images) or .txt (texts); returns
    the paths."""
    from PIL import Image

    if count < 1:
        raise UserError(f"-n must be at least 1, got {count}")
    from bigml_cli.data.table import SUFFIXES

    kind = "table" if cfg.name.lower().endswith(SUFFIXES) else None  # before loading: it would ask for --target
    ds = None if kind else load_dataset(cfg, data_root)
    kind = kind or ds.kind
    if kind not in ("image", "text"):
        what = {"table": "is a table: `bigml predict` reads rows of your CSV file itself",
                "lm": "is a text corpus: `bigml generate` continues a prompt"}.get(kind, f"is {kind}")
        raise UserError(f"dataset {cfg.name} {what}; samples are written for image and text datasets")
    x, y = ds.arrays(split)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(min(count, len(y))):
        label = "".join(ch if ch.isalnum() else "-" for ch in ds.class_names[y[i]])
        if ds.kind == "text":
            path = out / f"{i:05d}_{label}.txt"
            path.write_text(str(x[i]), encoding="utf-8")
        else:
            img = x[i][..., 0] if x[i].shape[-1] == 1 else x[i]
            path = out / f"{i:05d}_{label}.png"
            Image.fromarray(np.asarray(img, np.uint8)).save(path)
        paths.append(str(path))
    return paths
