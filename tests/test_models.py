"""Every registered model is built and run on every input kind it supports: new models are tested for free."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from bigml_cli.errors import UserError
from bigml_cli.models import MODELS, build_model
from bigml_cli.models.fused import FusedBatchNorm, Gelu

IMAGE_INFO = {"kind": "image", "shape": [12, 12, 3], "mean": [0.5] * 3, "std": [0.25] * 3}
TABLE_INFO = {"kind": "table", "columns": [
    {"name": "a", "key": "a", "type": "numeric", "mean": 1.0, "std": 2.0},
    {"name": "b", "key": "b", "type": "categorical", "vocab": ["x", "y"]}]}
TEXT_INFO = {"kind": "text", "vocab": ["the", "movie", "good", "bad"], "sequence_length": 8, "tokens": "words"}
SMALL = {"mlp": {"hidden_units": [8]}, "cnn": {"widths": [4, 8], "stem_width": 4}, "rnn": {"units": 4},
         "transformer": {"dim": 8, "heads": 2, "mlp_dim": 8, "num_layers": 1},
         "gpt": {"dim": 8, "heads": 2, "mlp_dim": 8, "num_layers": 1},
         "seq2seq": {"dim": 8, "heads": 2, "mlp_dim": 8, "num_layers": 1}}
INPUTS = {
    "image": (IMAGE_INFO, np.random.default_rng(0).integers(0, 256, (4, 12, 12, 3)).astype(np.uint8)),
    "table": (TABLE_INFO, {"a": np.array([1.0, np.nan, 3.0, 4.0], np.float32), "b": np.array(["x", "zzz", "y", ""])}),
    "text": (TEXT_INFO, np.array(["the good movie", "bad", "", "unknown words only"])),
    "corpus": ({"kind": "lm", "vocab": list("abcde"), "sequence_length": 8, "tokens": "characters"},
               np.random.default_rng(0).integers(0, 5, (4, 8)).astype(np.int32)),
    "pairs": ({"kind": "pairs", "tokens": "words", "source_vocab": list("abcdef"), "target_vocab": list("abcde"),
               "source_length": 8, "target_length": 8},
              {"source": np.random.default_rng(0).integers(0, 6, (4, 8)).astype(np.int32),
               "target": np.random.default_rng(1).integers(0, 5, (4, 8)).astype(np.int32)}),
}


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_builds_on_its_inputs_and_refuses_others(name):
    """Each model gives probabilities on every input kind it supports, and a user error on the rest."""
    supported = []
    for kind, (info, x) in INPUTS.items():
        try:
            model = build_model({"name": name, **SMALL.get(name, {})}, info, num_classes=5)
        except UserError as e:
            assert f"'{name}' needs" in str(e)
            continue
        out = np.asarray(model(x, training=False))
        if kind in ("corpus", "pairs"):  # language models, translation: next-token logits at every position
            assert out.shape == (4, 8, 5) and np.isfinite(out).all()
            supported.append(kind)
            continue
        assert out.shape == (4, 5) and np.isfinite(out).all()
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
        if kind == "image":
            assert model.inputs[0].dtype == "uint8", "image models take raw uint8 images"
        supported.append(kind)
    assert supported, f"model {name} supports no input kind"


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
    from bigml_cli.models import with_test_time_augmentation

    model = with_test_time_augmentation(build_model({"name": "cnn", **SMALL["cnn"]}, IMAGE_INFO, num_classes=3))
    x = np.random.default_rng(1).integers(0, 256, (2, 12, 12, 3)).astype(np.uint8)
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(model(x[:, :, ::-1])), atol=1e-6)
    model.save(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(keras.models.load_model(tmp_path / "m.keras")(x)), np.asarray(model(x)),
                               atol=1e-6)


def test_translate_shifts_with_reflected_edges():
    from bigml_cli.models.base import Translate

    x = np.arange(2 * 4 * 5 * 3).reshape(2, 4, 5, 3).astype(np.uint8)
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="reflect")
    np.testing.assert_array_equal(np.asarray(Translate(1, 1)(x)), padded[:, :4, :5])  # content moves down-right
    np.testing.assert_array_equal(np.asarray(Translate(-1, -1)(x)), padded[:, 2:, 2:])
    np.testing.assert_array_equal(np.asarray(Translate(-1, -1)(x))[:, :3, :4], x[:, 1:, 1:])


def test_translate_averaging_uses_six_views_and_survives_save(tmp_path):
    from bigml_cli.models import with_test_time_augmentation
    from bigml_cli.models.base import Translate

    inner = build_model({"name": "cnn", **SMALL["cnn"]}, IMAGE_INFO, num_classes=3)
    model = with_test_time_augmentation(inner, flip=True, translate=True)
    x = np.random.default_rng(1).integers(0, 256, (2, 12, 12, 3)).astype(np.uint8)
    views = [x, np.asarray(Translate(-1, -1)(x)), np.asarray(Translate(1, 1)(x))]
    views += [v[:, :, ::-1] for v in views]
    expected = np.mean([np.asarray(inner(v)) for v in views], axis=0)
    np.testing.assert_allclose(np.asarray(model(x)), expected, atol=1e-6)
    model.save(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(keras.models.load_model(tmp_path / "m.keras")(x)), expected, atol=1e-6)


def test_gpt_is_causal():
    """A position's logits never depend on later tokens (generation pads after the context)."""
    info = {"kind": "lm", "vocab": list("abcdefgh"), "sequence_length": 10, "tokens": "characters"}
    model = build_model({"name": "gpt", **SMALL["gpt"]}, info, num_classes=8)
    a = np.random.default_rng(0).integers(0, 8, (1, 10)).astype(np.int32)
    b = a.copy()
    b[0, 6:] = (b[0, 6:] + 1) % 8
    la, lb = np.asarray(model(a)), np.asarray(model(b))
    np.testing.assert_allclose(la[0, :6], lb[0, :6], atol=1e-5)
    assert np.abs(la[0, 6:] - lb[0, 6:]).max() > 1e-4


def test_patch_whitening_stem_decorrelates_patches_and_survives_save_and_load(tmp_path):
    """After adapt, the whitening stem's outputs on its training patches have identity covariance
    (each direction and its negative), and the adapted filters are saved with the model."""
    from bigml_cli.models import adapt_to_data

    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 256, (64, 6, 6, 3)).repeat(2, axis=1).repeat(2, axis=2)  # correlated neighbours
    x = np.clip(smooth + rng.integers(-20, 20, smooth.shape), 0, 255).astype(np.uint8)
    model = build_model({"name": "cnn", "widths": [4], "stem": "whiten", "stem_width": 24}, IMAGE_INFO, 5)
    adapt_to_data(model, x)
    stem = model.get_layer("whiten")
    out = keras.Model(model.inputs, stem.output).predict(x, verbose=0).reshape(-1, 24)[:, :12]
    cov = out.T @ out / len(out)
    np.testing.assert_allclose(cov, np.eye(12), atol=0.02)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(again.get_layer("whiten").kernel.numpy(), stem.kernel.numpy())
    np.testing.assert_allclose(again(x[:4]), model(x[:4]), atol=1e-6)
    with pytest.raises(UserError, match="model.stem must be"):
        build_model({"name": "cnn", "stem": "patch"}, IMAGE_INFO, 5)


def test_dirac_init_starts_convs_as_the_identity_on_their_first_filters():
    from bigml_cli.models.base import Dirac

    keras.utils.set_random_seed(0)
    w = np.asarray(Dirac()((3, 3, 4, 6)))
    x = np.random.default_rng(0).normal(size=(1, 5, 5, 4)).astype(np.float32)
    y = np.asarray(keras.ops.conv(x, w, padding="same"))
    np.testing.assert_allclose(y[..., :4], x, atol=1e-6)  # first min(in, out) filters: identity
    rest = w[..., 4:]
    assert np.abs(rest).max() <= 1 / np.sqrt(3 * 3 * 4) + 1e-6 and rest.std() > 0  # PyTorch's default bound


def test_airbench_cnn_options_build_and_scale_logits():
    options = {**SMALL["cnn"], "init": "dirac", "bn_scale": False, "bn_epsilon": 1e-12, "stem_activation": True,
               "pool_padding": "valid", "logit_scale": 0.5, "head_bias": False}
    model = build_model({"name": "cnn", **options}, IMAGE_INFO, num_classes=3)
    names = [v.path for v in model.trainable_variables]
    assert not any(n.endswith("gamma") for n in names) and not any("logits/bias" in n for n in names)
    assert {layer.epsilon for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)} == {1e-12}
    logits = keras.Model(model.inputs, model.get_layer("logits").output)
    x = np.random.default_rng(1).integers(0, 256, (2, 12, 12, 3)).astype(np.uint8)
    expected = keras.ops.softmax(0.5 * logits(x))
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(expected), atol=1e-6)
    with pytest.raises(UserError, match="model.init"):
        build_model({"name": "cnn", **SMALL["cnn"], "init": "he"}, IMAGE_INFO, 3)


def test_saved_tta_model_with_its_compiled_inner_model_loads_in_a_fresh_process(tmp_path):
    """The TTA wrapper nests the trained (compiled) model, whose config names bigml's optimizer and
    schedule: `import bigml_cli.models` must be enough to load it."""
    import subprocess
    import sys

    from bigml_cli.config import TrainConfig
    from bigml_cli.models import with_test_time_augmentation
    from bigml_cli.optim import make_optimizer

    inner = build_model({"name": "cnn", **SMALL["cnn"]}, IMAGE_INFO, num_classes=3)
    t = TrainConfig(optimizer="sgd", schedule="linear", bias_lr_scale=4.0, epochs=2)
    inner.compile(optimizer=make_optimizer(t, steps_per_epoch=3), loss="categorical_crossentropy")
    with_test_time_augmentation(inner, flip=True).save(tmp_path / "m.keras")
    code = f"import keras, bigml_cli.models; keras.models.load_model({str(tmp_path / 'm.keras')!r}); print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-1500:]


class Recorder(keras.layers.Layer):
    """Passes its input through and notes whether each call runs eagerly (op by op) or in a traced graph."""

    def __init__(self, calls, **kwargs):
        super().__init__(**kwargs)
        self.note = calls.append  # a list attribute would be copied by Keras' tracking

    def call(self, x):
        import tensorflow as tf

        self.note(tf.executing_eagerly())
        return x


def test_scoring_runs_the_model_compiled_not_op_by_op():
    # eager calls ran the IMDB LSTM 5.7x slower (15.8 s against 2.8 s for 2,048 reviews)
    from bigml_cli.evaluate import predict_probs

    calls = []
    model = keras.Sequential([keras.Input((3,)), Recorder(calls), keras.layers.Dense(2, activation="softmax")])
    calls.clear()
    probs = predict_probs(model, np.ones((1100, 3), np.float32), batch_size=512)  # batches of 512, 512, 76
    assert probs.shape == (1100, 2)
    assert calls and not any(calls), calls  # traced (once per batch shape), never run eagerly


@pytest.mark.parametrize("scale", [True, False])
def test_fused_batch_norm_trains_and_infers_as_keras_batch_normalization(scale):
    # the fused kernel must give Keras' outputs, gradients and moving statistics (biased variance: the
    # kernel's own is Bessel-corrected, 0.5% apart over these 200 values per channel)
    x = tf.random.stateless_normal((8, 5, 5, 6), [1, 2]) * 3.0 + 1.0
    keras_bn = keras.layers.BatchNormalization(momentum=0.6, epsilon=1e-5, scale=scale)
    fused_bn = FusedBatchNorm(momentum=0.6, epsilon=1e-5, scale=scale)
    results = []
    for bn in (keras_bn, fused_bn):
        bn.build(x.shape)
        bn.beta.assign(tf.range(6, dtype=tf.float32) * 0.1)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = bn(x, training=True)
            loss = tf.reduce_sum(y * tf.sin(y))
        results.append([y, *tape.gradient(loss, [x, bn.beta]), bn.moving_mean, bn.moving_variance,
                        bn(x, training=False)])
    for name, a, b in zip(["output", "input grad", "offset grad", "moving mean", "moving variance", "inference"],
                          *results):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5, err_msg=name)


def test_fused_gelu_and_its_gradient_match_keras_gelu():
    x = tf.random.stateless_normal((4, 7, 7, 3), [3, 4]) * 3.0
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        fused, plain = Gelu()(x, training=True), keras.layers.Activation("gelu")(x)
        losses = [tf.reduce_sum(y * tf.cos(y)) for y in (fused, plain)]
    np.testing.assert_allclose(fused.numpy(), plain.numpy(), atol=1e-5)
    np.testing.assert_allclose(tape.gradient(losses[0], x).numpy(), tape.gradient(losses[1], x).numpy(), atol=1e-4)


def test_cnn_is_built_from_the_fused_layers():
    model = build_model({"name": "cnn", "widths": [8], "stem": "conv", "stem_width": 4}, IMAGE_INFO, 10)
    kinds = {type(layer) for layer in model.layers}
    assert FusedBatchNorm in kinds and Gelu in kinds and keras.layers.BatchNormalization not in kinds
