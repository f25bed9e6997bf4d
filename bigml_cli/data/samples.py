"""Write dataset examples out as files (images as PNG, texts as .txt), to try `bigml predict` on real inputs."""

from pathlib import Path
from typing import Any, Optional, Union

from bigml_cli.data import load_dataset
from bigml_cli.errors import UserError


def write_samples(cfg: Any, out_dir: Union[str, Path], count: int = 10, split: str = "test", data_root: Optional[Union[str, Path]] = None) -> list:
    """Save the first `count` examples of a split as OUT/NNNNN_LABEL.png (images) or .txt (texts), as the
    dataset's task writes them; returns the paths."""
    from bigml_cli.data.table import SUFFIXES
    from bigml_cli.tasks import task_for

    if count < 1:
        raise UserError(f"-n must be at least 1, got {count}")
    if cfg.name.lower().endswith(SUFFIXES):  # before loading it, which would ask for --target
        raise UserError(f"dataset {cfg.name} is a table: `bigml predict` reads rows of your CSV file itself; samples "
                        "are written for image and text datasets")
    ds = load_dataset(cfg, data_root)
    write = task_for(ds).sample_writer(ds)
    x, y = ds.arrays(split)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(min(count, len(y))):
        label = "".join(ch if ch.isalnum() else "-" for ch in ds.class_names[y[i]])
        paths.append(str(write(x[i], out / f"{i:05d}_{label}")))
    return paths
