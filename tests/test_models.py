"""Every registered model is built and run on every input kind it supports: new models are tested for free."""

import keras
import numpy as np
import pytest

from bigml_cli.errors import UserError
from bigml_cli.models import MODELS, build_model

IMAGE_INFO = {"kind": "image", "shape": [12, 12, 3], "mean": [0.5] * 3, "std": [0.25] * 3}
TABLE_INFO = {"kind": "table", "columns": [
    {"name": "a", "key": "a", "type": "numeric", "mean": 1.0, "std": 2.0},
    {"name": "b", "key": "b", "type": "categorical", "vocab": ["x", "y"]}]}
SMALL = {"mlp": {"hidden_units": [8]}, "cnn": {"widths": [4, 8], "stem_width": 4}}


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_builds_and_outputs_probabilities(name):
    model = build_model({"name": name, **SMALL.get(name, {})}, IMAGE_INFO, num_classes=5)
    x = np.random.default_rng(0).integers(0, 256, (4, 12, 12, 3)).astype(np.uint8)
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (4, 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert model.inputs[0].dtype == "uint8", "models take raw uint8 images"


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_takes_tables_or_says_it_cannot(name):
    try:
        model = build_model({"name": name, **SMALL.get(name, {})}, TABLE_INFO, num_classes=2)
    except UserError as e:
        assert "needs image data" in str(e)
        return
    probs = np.asarray(model({"a": np.array([1.0, np.nan], np.float32), "b": np.array(["x", "zzz"])}))
    assert probs.shape == (2, 2) and np.isfinite(probs).all()


def test_table_model_survives_save_and_load(tmp_path):
    model = build_model({"name": "mlp", "hidden_units": [8]}, TABLE_INFO, num_classes=2)
    x = {"a": np.array([1.0, np.nan, 3.0], np.float32), "b": np.array(["x", "", "y"])}
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(model(x)), rtol=1e-6)


def test_unknown_builder_parameter_lists_the_valid_ones():
    with pytest.raises(UserError, match="model 'cnn' has no parameter 'width' \\(did you mean 'widths'\\?\\)"):
        build_model({"name": "cnn", "width": 3}, IMAGE_INFO, 2)


def test_flip_averaging_is_symmetric_and_survives_save(tmp_path):
    from bigml_cli.models import with_flip_averaging

    model = with_flip_averaging(build_model({"name": "cnn", **SMALL["cnn"]}, IMAGE_INFO, num_classes=3))
    x = np.random.default_rng(1).integers(0, 256, (2, 12, 12, 3)).astype(np.uint8)
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(model(x[:, :, ::-1])), atol=1e-6)
    model.save(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(keras.models.load_model(tmp_path / "m.keras")(x)), np.asarray(model(x)),
                               atol=1e-6)
