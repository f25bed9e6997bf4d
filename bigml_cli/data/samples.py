"""Write dataset examples out as image files, to try `bigml predict` on real inputs."""

from pathlib import Path

import numpy as np

from bigml_cli.data import load_dataset
from bigml_cli.errors import UserError


def write_samples(cfg, out_dir, count=10, split="test", data_root=None):
    """Save the first `count` images of a split as OUT/NNNNN_LABEL.png; returns the paths."""
    from PIL import Image

    if count < 1:
        raise UserError(f"-n must be at least 1, got {count}")
    ds = load_dataset(cfg, data_root)
    if ds.kind != "image":
        what = {"table": "is a table", "text": "holds texts", "lm": "is a text corpus"}.get(ds.kind, f"is {ds.kind}")
        raise UserError(f"dataset {cfg.name} {what}; samples are written for image datasets only")
    x, y = ds.arrays(split)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(min(count, len(y))):
        img = x[i][..., 0] if x[i].shape[-1] == 1 else x[i]
        label = "".join(ch if ch.isalnum() else "-" for ch in ds.class_names[y[i]])
        path = out / f"{i:05d}_{label}.png"
        Image.fromarray(np.asarray(img, np.uint8)).save(path)
        paths.append(str(path))
    return paths
