"""Shared fixtures: tiny synthetic datasets in the official layouts, and a CLI runner.

Nothing here downloads: BIGML_OFFLINE=1 makes a missing dataset an immediate user error.
"""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bigml_cli.cli import app
from bigml_cli.data import images
from bigml_cli.data.base import toy_images
from bigml_cli.data.images import tiny_fashion_mnist


REAL_DATA_DIR = os.environ.get("BIGML_DATA_DIR")


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("BIGML_OFFLINE", "1")
    monkeypatch.setenv("BIGML_DATA_DIR", str(tmp_path / "empty-data-dir"))
    monkeypatch.chdir(tmp_path)  # a default run directory (runs/...) lands in the test's own folder


@pytest.fixture
def real_data_dir():
    """The real datasets (`make test-data` sets BIGML_DATA_DIR); missing data fails, never skips."""
    assert REAL_DATA_DIR, "set BIGML_DATA_DIR to the folder prepare.py wrote (make test-data does)"
    return Path(REAL_DATA_DIR)


class Cli:
    def __init__(self):
        self.runner = CliRunner()

    def __call__(self, *args):
        result = self.runner.invoke(app, [str(a) for a in args])
        result.text = result.stdout + result.stderr
        return result


@pytest.fixture
def cli():
    return Cli()


def assert_user_error(result, *fragments):
    """Exit code 2, one line naming the problem, no traceback."""
    text = " ".join(result.stderr.split())
    assert result.exit_code == 2, (result.exit_code, result.text, result.exception)
    assert "Traceback" not in result.text
    assert text.startswith("error:"), text
    for fragment in fragments:
        assert fragment in text, (fragment, text)


def synthetic_images(n, shape, num_classes, seed=0):
    """Learnable images: each class a bright square at its own position, plus noise (the datasets' tiny copies
    use the same ones)."""
    return toy_images(n, shape, num_classes, seed)


@pytest.fixture
def mnist_dir(tmp_path):
    """A data dir holding a small mnist.npz in the Keras layout (28x28 uint8)."""
    d = tmp_path / "data"
    d.mkdir()
    x_train, y_train = synthetic_images(300, (28, 28), 10)
    x_test, y_test = synthetic_images(100, (28, 28), 10, seed=1)
    np.savez(d / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return d


def write_cifar_batch(path, x, y):
    images.write_cifar_batch(path, x, {b"labels": [int(v) for v in y]})


@pytest.fixture
def cifar_dir(tmp_path):
    """A data dir holding a small cifar-10-batches-py/ in the official pickled layout."""
    d = tmp_path / "data"
    folder = d / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        x, y = synthetic_images(40, (32, 32, 3), 10, seed=i)
        write_cifar_batch(folder / f"data_batch_{i}", x, y)
    x, y = synthetic_images(50, (32, 32, 3), 10, seed=9)
    write_cifar_batch(folder / "test_batch", x, y)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names}, f, protocol=3)
    return d


@pytest.fixture
def fashion_dir(tmp_path):
    """A data dir holding fashion-mnist/*.gz IDX files (the dataset's own tiny copy)."""
    d = tmp_path / "data"
    tiny_fashion_mnist(d)
    return d


@pytest.fixture
def image_folder(tmp_path):
    """An image folder with train/ and test/, three classes of 16x16 RGB PNGs of mixed sizes."""
    from PIL import Image

    root = tmp_path / "shapes"
    x, y = synthetic_images(48, (16, 16, 3), 3)
    for i, (img, label) in enumerate(zip(x, y)):
        split = "test" if i % 4 == 0 else "train"
        folder = root / split / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(img)
        if i % 5 == 0:
            im = im.resize((20, 24))  # other sizes are resized to the first image's
        im.save(folder / f"{i}.png")
    return root


@pytest.fixture
def table_csv(tmp_path):
    """A CSV with numeric and categorical columns, missing values, and a string target."""
    rng = np.random.default_rng(0)
    lines = ["age,colour,income,label"]
    for i in range(240):
        colour = ["red", "green", "blue"][i % 3]
        age = rng.normal(40, 10)
        income = rng.normal(50, 5) + (20 if colour == "red" else 0)
        label = "yes" if (colour == "red") != (age > 45) else "no"
        age_s = "" if i % 17 == 0 else f"{age:.1f}"
        colour_s = "NA" if i % 23 == 0 else colour
        lines.append(f"{age_s},{colour_s},{income:.2f},{label}")
    path = tmp_path / "people.csv"
    path.write_text("\n".join(lines) + "\n")
    return path
