"""Checks on the real datasets, run by `make test-data` (BIGML_DATA_DIR set). Not part of `make test`."""

import json

import numpy as np
import pytest

from bigml_cli.config import DataConfig
from bigml_cli.data import load_dataset

pytestmark = pytest.mark.data


def test_mnist_official_file(real_data_dir):
    ds = load_dataset(DataConfig(name="mnist", val_fraction=0.1), real_data_dir)
    assert len(ds.y_train) + len(ds.y_val) == 60000 and ds.x_test.shape == (10000, 28, 28, 1)
    assert np.bincount(ds.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_cifar10_official_batches(real_data_dir):
    ds = load_dataset(DataConfig(name="cifar10", val_fraction=0.1), real_data_dir)
    assert len(ds.y_train) == 45000 and len(ds.y_val) == 5000 and ds.x_test.shape == (10000, 32, 32, 3)
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.class_names[0] == "airplane" and ds.class_names[9] == "truck"


def test_cifar10_image_folder_matches_batches(real_data_dir):
    folder = real_data_dir / "cifar10-images"
    ds = load_dataset(DataConfig(name=str(folder), val_fraction=0.0))
    assert ds.x_test.shape == (10000, 32, 32, 3) and len(ds.class_names) == 10


def test_one_epoch_of_mlp_on_mnist_learns(cli, real_data_dir, tmp_path):
    result = cli("train", "mlp", "--dataset", "mnist", "--data-dir", real_data_dir, "--run-dir", tmp_path / "r",
                 "--json", "train.epochs=1", "model.hidden_units=[128]")
    assert result.exit_code == 0, result.text
    assert json.loads(result.stdout.strip().splitlines()[-1])["accuracy"] > 0.90


def test_eval_on_the_cifar10_image_folder_matches_the_test_split(cli, real_data_dir, tmp_path):
    """The 10,000 test JPEGs, read as the user's own labelled folder, score exactly as the pickled test batch."""
    run_dir = tmp_path / "r"
    result = cli("train", "tutorial_cnn", "--dataset", "cifar10", "--data-dir", real_data_dir, "--run-dir", run_dir,
                 "--json", "train.epochs=1", "train.steps_per_epoch=20")
    assert result.exit_code == 0, result.text
    on_split = json.loads(result.stdout.strip().splitlines()[-1])
    result = cli("eval", run_dir, "--dataset", real_data_dir / "cifar10-images", "--json")
    assert result.exit_code == 0, result.text
    on_folder = json.loads(result.stdout)
    assert on_folder["examples"] == 10000 and on_folder["accuracy"] == on_split["accuracy"]
    assert on_folder["loss"] == pytest.approx(on_split["loss"], rel=1e-6)
