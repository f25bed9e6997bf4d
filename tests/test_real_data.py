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
