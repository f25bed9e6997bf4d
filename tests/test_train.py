"""Optimizer pieces borrowed from airbench: the triangle schedule, the BatchNorm-offset learning-rate
scale, the lookahead EMA and the whitening bias's freeze (exact resume with it is in test_resume.py)."""

import json

import keras
import numpy as np
import pytest

from bigml_cli.config import TrainConfig
from bigml_cli.errors import UserError
from bigml_cli.optim import make_optimizer
from bigml_cli.models.base import PatchWhitening
from bigml_cli.train.callbacks import FreezeAfter, Lookahead


def learning_rates(optimizer, steps):
    """The learning rate the optimizer applies at each of `steps` (read through its public step counter)."""
    rates = []
    for step in steps:
        optimizer.iterations.assign(step)
        rates.append(float(optimizer.learning_rate))
    return rates


def test_linear_schedule_rises_then_falls_to_its_end_fractions():
    t = TrainConfig(epochs=10, learning_rate=2.0, warmup_epochs=2.5, schedule="linear", lr_start=0.2, lr_end=0.07)
    lr = learning_rates(make_optimizer(t, steps_per_epoch=4), range(41))
    assert lr[0] == pytest.approx(0.4) and lr[10] == pytest.approx(2.0) and lr[40] == pytest.approx(0.14)
    assert lr[5] == pytest.approx(1.2)  # halfway up
    assert np.all(np.diff(lr[:11]) > 0) and np.all(np.diff(lr[10:]) < 0)


def test_cosine_schedule_ends_at_lr_end():
    t = TrainConfig(epochs=2, learning_rate=1.0, warmup_epochs=0.5, lr_start=0.5, lr_end=0.1)
    first, last = learning_rates(make_optimizer(t, steps_per_epoch=10), (0, 20))
    assert first == pytest.approx(0.5) and last == pytest.approx(0.1)


def test_bias_lr_scale_moves_batchnorm_offsets_that_many_times_further():
    t = TrainConfig(optimizer="sgd", learning_rate=0.1, momentum=0.0, weight_decay=0.0, warmup_epochs=0,
                    schedule="constant", bias_lr_scale=8.0)
    opt = make_optimizer(t, steps_per_epoch=1)
    beta, other = keras.Variable(np.zeros(3), name="beta"), keras.Variable(np.zeros(3), name="kernel")
    grad = np.ones(3, np.float32)
    opt.apply_gradients([(grad, beta), (grad, other)])
    np.testing.assert_allclose(np.asarray(other), -0.1 * grad, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(beta), -0.8 * grad, rtol=1e-6)
    with pytest.raises(UserError, match="bias_lr_scale"):
        make_optimizer(TrainConfig(optimizer="adamw", bias_lr_scale=2.0), steps_per_epoch=1)


def test_muon_steps_conv_kernels_by_their_orthogonalized_momentum_and_the_rest_as_sgd():
    """train.optimizer=muon: a 4-D kernel is renormalized to norm sqrt(outputs) and moved by a matrix whose
    singular values lie within a factor of 4 (the gradient's: 100); it takes no weight decay; any other
    variable takes exactly the sgd step."""
    t = TrainConfig(optimizer="muon", learning_rate=0.5, muon_learning_rate=0.2, muon_momentum=0.6, momentum=0.85,
                    weight_decay=0.1, warmup_epochs=0, schedule="constant", bias_lr_scale=4.0, decay_biases=True)
    muon, sgd = make_optimizer(t, 1), make_optimizer(TrainConfig(**{**vars(t), "optimizer": "sgd"}), 1)
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    v, _ = np.linalg.qr(rng.normal(size=(18, 8)))
    grad = (v @ np.diag(np.geomspace(100, 1, 8)) @ u.T).reshape(3, 3, 2, 8).astype(np.float32)  # 8 outputs
    start = rng.normal(size=(3, 3, 2, 8)).astype(np.float32)
    kernel = keras.Variable(start, name="kernel")
    beta, beta_sgd = keras.Variable(np.ones(3), name="beta"), keras.Variable(np.ones(3), name="beta")
    small = np.full(3, 0.5, np.float32)
    muon.apply_gradients([(grad, kernel), (small, beta)])
    sgd.apply_gradients([(small, beta_sgd)])
    np.testing.assert_allclose(np.asarray(beta), np.asarray(beta_sgd), rtol=1e-6)  # sgd's step, bias scale included
    normalized = start * np.sqrt(8) / np.linalg.norm(start)
    step = (normalized - np.asarray(kernel)).reshape(-1, 8) / 0.2
    singular = np.linalg.svd(step, compute_uv=False)
    assert singular.max() < 1.5 and singular.max() / singular.min() < 4  # the gradient's: 100
    left, _, right = np.linalg.svd(grad.reshape(-1, 8), full_matrices=False)
    polar = left @ right  # the exact orthogonalization that the iteration approximates

    def cosine(a, b):
        return float(np.sum(a * b) / np.linalg.norm(a) / np.linalg.norm(b))

    assert cosine(step, polar) > 0.9 and cosine(step, grad.reshape(-1, 8)) < 0.7  # plain sgd: 1.0
    muon.apply_gradients([(grad, kernel), (small, beta)])
    assert np.linalg.norm(np.asarray(kernel)) < np.linalg.norm(normalized) + 0.5  # renormalized first; no decay
    plain = make_optimizer(TrainConfig(**{**vars(t), "momentum": 0.0}), 1)  # sgd without momentum: Muon keeps its own
    plain.apply_gradients([(grad, keras.Variable(start)), (small, keras.Variable(np.ones(3), name="beta"))])


def test_lookahead_pulls_weights_to_their_running_average():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    look = Lookahead(model, total_steps=10, steps_per_epoch=2, start_epoch=1, every=2, base=0.5, power=1.0)
    look.set_model(model)
    kernel = model.layers[0].kernel

    def at_step(step, value):
        model.optimizer.iterations.assign(step)
        kernel.assign(np.full((2, 1), value, np.float32))
        look.on_train_batch_end(0)
        return float(np.asarray(kernel)[0, 0])

    assert at_step(1, 5.0) == 5.0  # before the start: untouched
    assert at_step(2, 4.0) == 4.0  # the start: the average begins at the weights
    decay = 0.5 ** 2 * (4 / 10)
    assert at_step(4, 10.0) == pytest.approx(decay * 4.0 + (1 - decay) * 10.0)  # pulled toward the average
    kernel.assign(np.zeros((2, 1), np.float32))
    look.on_epoch_end(1)
    assert float(np.asarray(kernel)[0, 0]) == pytest.approx(decay * 4.0 + (1 - decay) * 10.0)  # epoch ends on it


def test_lookahead_ends_the_epoch_on_its_average_at_the_last_step():
    """So that validation, run before on_epoch_end, scores the weights that the checkpoint saves."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    look = Lookahead(model, total_steps=10, steps_per_epoch=2, start_epoch=1, every=2)
    look.set_model(model)
    look.set_params({"steps": 3})
    kernel = model.layers[0].kernel
    model.optimizer.iterations.assign(2)
    kernel.assign(np.full((2, 1), 4.0, np.float32))
    look.on_train_batch_end(0)  # the average starts at 4
    model.optimizer.iterations.assign(3)
    kernel.assign(np.full((2, 1), 9.0, np.float32))
    look.on_train_batch_end(1)  # not the last step: untouched
    assert float(np.asarray(kernel)[0, 0]) == 9.0
    look.on_train_batch_end(2)  # the last of 3 steps
    assert float(np.asarray(kernel)[0, 0]) == 4.0


def test_lookahead_counts_every_average_step_passed_when_called_every_few_steps():
    """Under steps_per_execution k the callback runs every k steps; the pulls it passed still count."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    look = Lookahead(model, total_steps=10, steps_per_epoch=2, start_epoch=1, every=2, base=0.5, power=1.0)
    look.set_model(model)
    look.on_train_begin()
    kernel = model.layers[0].kernel
    for step, value in [(3, 4.0), (6, 10.0)]:  # called at steps 3 and 6, as with steps_per_execution 3
        model.optimizer.iterations.assign(step)
        kernel.assign(np.full((2, 1), value, np.float32))
        look.on_train_batch_end(step - 1)
    decay = (0.5 ** 2 * (6 / 10)) ** 2  # steps 4 and 6 passed: two pulls
    assert float(np.asarray(kernel)[0, 0]) == pytest.approx(decay * 4.0 + (1 - decay) * 10.0)


def test_frozen_whitening_bias_stops_moving_while_the_rest_trains():
    """airbench's whitening bias trains for its first epochs only: from the freeze step on, momentum and
    weight decay no longer move it either, while the other weights keep training."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 3))
    white = PatchWhitening(2)
    head = keras.layers.Dense(2)
    model = keras.Model(inputs, head(keras.layers.GlobalAveragePooling2D()(white(inputs))))
    model.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9, weight_decay=0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 6, 6, 3)).astype(np.float32), rng.integers(0, 2, 16)
    biases, kernels = [], []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: (
        biases.append(np.array(white.bias)), kernels.append(np.array(head.kernel))))
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0, callbacks=[FreezeAfter([white.bias], 4), record])
    assert len(biases) == 8
    assert all(not np.array_equal(a, b) for a, b in zip(biases[:4], biases[1:4]))  # steps 1-4 train it
    assert all(np.array_equal(b, biases[3]) for b in biases[4:])  # from step 5 on it stays
    assert all(not np.array_equal(a, b) for a, b in zip(kernels[3:], kernels[4:]))  # the head still trains


def test_a_frozen_bias_leaves_fits_step_and_the_other_weights_come_out_the_same():
    """Under fit, from the freeze step on the step is traced again without the frozen bias, so its gradient
    is no longer computed; every weight ends exactly as when each step's change to it is undone instead,
    and the bias is trainable again after training."""
    def fit(retrace):
        keras.backend.clear_session()  # the same layer names both times
        keras.utils.set_random_seed(0)
        inputs = keras.Input((6, 6, 3))
        white = PatchWhitening(2)
        conv = keras.layers.Conv2D(4, 3, padding="same")
        head = keras.layers.Dense(2)
        model = keras.Model(inputs, head(keras.layers.GlobalAveragePooling2D()(conv(white(inputs)))))
        traced, flags = [], []  # (steps done, the variables a trace of the step hands the optimizer)

        class Recording(keras.optimizers.SGD):
            def apply(self, grads, trainable_variables=None):
                traced.append((len(flags), {v.path for v in trainable_variables}))
                return super().apply(grads, trainable_variables)

        model.compile(optimizer=Recording(0.5, momentum=0.9, weight_decay=0.1),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(16, 6, 6, 3)).astype(np.float32), rng.integers(0, 2, 16)
        record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: flags.append(
            white.bias.trainable))
        model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0,
                  callbacks=[FreezeAfter([white.bias], 4, retrace=retrace), record])
        return traced, flags, [np.array(w) for w in model.weights], white.bias.trainable, white.bias.path

    traced, flags, weights, after, bias = fit(retrace=True)
    assert flags == [True] * 4 + [False] * 4
    before = [names for done, names in traced if done < 4]
    later = [names for done, names in traced if done >= 4]
    assert before and later  # traced again at the freeze
    everything = before[0]
    assert all(names == everything for names in before) and all(names == everything - {bias} for names in later)
    assert bias in everything
    assert after  # trainable again
    kept_traced, kept_flags, kept_weights, _, _ = fit(retrace=False)
    assert all(done < 4 and names == everything for done, names in kept_traced) and all(kept_flags)
    assert all(np.array_equal(a, b) for a, b in zip(weights, kept_weights))


def test_training_with_whiten_bias_epochs_freezes_the_stem_bias_after_them(cifar_dir, tmp_path):
    """Through `bigml train`'s own loop: the stem's bias moves during epoch 1 and not after it."""
    from bigml_cli import config, train

    cfg = config.load("cnn", "cifar10", recipe="cnn_cifar10_fast", overrides=[
        "model.widths=[4,8,8]", "train.epochs=2", "train.batch_size=40", "train.whiten_bias_epochs=1",
        "train.lookahead=false", "train.test_time_translate=false", "train.test_time_flip=false"])
    biases = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: biases.append(
        np.array(record.model.get_layer("whiten").bias)))
    train.run(cfg, run_dir=tmp_path / "run", data_root=cifar_dir, extra_callbacks=[record])
    assert len(biases) == 10  # 200 images in batches of 40, twice
    assert not np.array_equal(biases[3], biases[4])  # epoch 1 trains it
    assert all(np.array_equal(b, biases[4]) for b in biases[5:])  # epoch 2 does not


@pytest.mark.parametrize("optimizer", ["muon", "sgd"])
def test_a_muon_run_trains_saves_and_evaluates(optimizer, cifar_dir, tmp_path, cli):
    """Through `bigml train`: the run trains with the optimizer its config names, and evaluates like any other."""
    from bigml_cli import config, train
    from bigml_cli.optim import MuonSGD

    cfg = config.load("cnn", "cifar10", recipe="cnn_cifar10_fast", overrides=[
        "model.widths=[4,8,8]", "train.epochs=2", "train.batch_size=40", f"train.optimizer={optimizer}",
        "train.lookahead=false", "train.test_time_translate=false", "train.test_time_flip=false"])
    used = []
    record = keras.callbacks.LambdaCallback(on_train_begin=lambda logs: used.append(record.model.optimizer))
    metrics = train.run(cfg, run_dir=tmp_path / "run", data_root=cifar_dir, extra_callbacks=[record])
    assert isinstance(used[0], MuonSGD) == (optimizer == "muon")
    if optimizer == "muon":
        assert used[0].muon_scale == pytest.approx(0.24 / 1.5) and used[0].muon_momentum == 0.6
    result = cli("eval", tmp_path / "run", "--data-dir", cifar_dir, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["accuracy"] == pytest.approx(metrics["accuracy"])


def test_the_best_epoch_breaks_accuracy_ties_by_the_lower_loss(tmp_path):
    # 64 validation examples: accuracy moves in steps of 1.6%, and the first of equal accuracies was kept
    # (an IMDB folder run: epoch 3 of 10, 56% test accuracy, against 76% for epoch 10's equal accuracy)
    from bigml_cli.train.callbacks import BestCheckpoint
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    path, history = tmp_path / "best.weights.h5", tmp_path / "history.csv"
    best = BestCheckpoint(path, "val_accuracy")
    best.set_model(model)
    for epoch, (acc, loss) in enumerate([(0.5, 0.69), (0.734, 0.686), (0.70, 0.60), (0.734, 0.533), (0.734, 0.6)]):
        model.layers[0].kernel.assign([[float(epoch)]])
        best.on_epoch_end(epoch, {"val_accuracy": acc, "val_loss": loss})
    model.load_weights(path)
    assert float(model.layers[0].kernel.numpy()[0, 0]) == 3.0  # not 1.0 (the first 0.734), nor 4.0 (higher loss)
    # a resumed run starts from the best epoch of its history
    history.write_text("epoch,val_accuracy,val_loss\n0,0.5,0.69\n1,0.734,0.533\n")
    resumed = BestCheckpoint(path, "val_accuracy", history)
    resumed.set_model(model)
    model.layers[0].kernel.assign([[9.0]])
    resumed.on_epoch_end(2, {"val_accuracy": 0.734, "val_loss": 0.6})
    model.load_weights(path)
    assert float(model.layers[0].kernel.numpy()[0, 0]) == 3.0  # not saved: no better than epoch 1
    lm = BestCheckpoint(path, "val_loss", history)
    assert lm.best == (-0.533,)


def test_patience_counts_epochs_since_the_best_and_stops_training(tmp_path):
    from bigml_cli.train.callbacks import BestCheckpoint
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    path, history = tmp_path / "best.weights.h5", tmp_path / "history.csv"
    best = BestCheckpoint(path, "val_accuracy", patience=2)
    best.set_model(model)
    stops = []
    for epoch, acc in enumerate([0.5, 0.7, 0.6, 0.7, 0.65]):
        model.stop_training = False
        best.on_epoch_end(epoch, {"val_accuracy": acc, "val_loss": 0.5})
        stops.append(model.stop_training)
    assert stops == [False, False, False, True, True] and best.best_epoch == 1  # epoch 3 ties, no better
    # a run resumed after its epoch 4 knows it already waited 3 epochs; one resumed after epoch 3 waited 1
    history.write_text("epoch,val_accuracy,val_loss\n0,0.5,0.5\n1,0.7,0.5\n2,0.6,0.5\n3,0.7,0.5\n")
    assert BestCheckpoint(path, "val_accuracy", history, patience=2).exhausted
    assert not BestCheckpoint(path, "val_accuracy", history, patience=3).exhausted
    assert not BestCheckpoint(path, "val_accuracy", history).exhausted  # patience 0: never


def test_training_stops_early_and_keeps_the_best_epoch(tmp_path):
    """A learning rate too small to move any weight: the first epoch stays the best, and two epochs later
    training ends, of 10."""
    from bigml_cli import config, train

    cfg = config.load("mlp", "digits", overrides=[
        "train.epochs=10", "train.patience=2", "train.learning_rate=1e-30", "train.weight_decay=0",
        "model.dropout=0", "model.hidden_units=[8]"])
    metrics = train.run(cfg, run_dir=tmp_path / "run")
    assert metrics["epochs"] == 3 and metrics["early_stop"] == {"after_epoch": 3, "best_epoch": 1, "patience": 2}
    assert len((tmp_path / "run" / "history.csv").read_text().splitlines()) == 1 + 3
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"] == 3
    from bigml_cli.runs import list_runs
    assert list_runs(tmp_path)[0]["status"] == "finished: stopped early after epoch 3, the best was epoch 1"


def test_patience_without_a_validation_split_is_a_user_error(cli):
    from conftest import assert_user_error

    assert_user_error(cli("train", "mlp", "--dataset", "digits", "data.val_fraction=0", "train.patience=3"),
                      "train.patience=3", "data.val_fraction=0.1")


def test_cutout_reaches_the_training_stream_and_its_mistakes_are_user_errors(cli, tmp_path):
    from conftest import assert_user_error

    from bigml_cli import config
    from bigml_cli.data import load_dataset
    from bigml_cli.tasks import task_for

    cfg = config.load("mlp", "digits", overrides=["data.cutout=3", "data.augment=none"])
    ds = load_dataset(cfg.data, None)
    fill = round(255 * ds.input_info["mean"][0])
    batch = next(iter(task_for(ds).streams(ds, cfg).train()[0]))[0].numpy()
    for img in batch[..., 0]:  # a 3 x 3 window of the mean grey in every image
        windows = np.lib.stride_tricks.sliding_window_view(img, (3, 3))
        assert (windows == fill).all(axis=(-2, -1)).any()
    assert_user_error(cli("train", "mlp", "--dataset", "digits", "data.cutout=9", "--run-dir", str(tmp_path / "r")),
                      "data.cutout=9", "8-pixel", "at most 8")
    assert not (tmp_path / "r").exists()
    table = tmp_path / "t.csv"
    table.write_text("x,label\n" + "".join(f"{i},{i % 2}\n" for i in range(20)))
    assert_user_error(cli("train", "mlp", "--dataset", str(table), "--target", "label", "data.cutout=2"),
                      "data.cutout applies to images")


def test_balanced_class_weights_find_a_rare_class_that_plain_training_ignores(tmp_path, capsys):
    """60 'yes' rows among 1,060, overlapping the 'no' rows: plain training predicts 'no' for everything."""
    from rich.console import Console

    from bigml_cli import config, train

    rng = np.random.default_rng(0)
    rows = [f"{rng.normal(0, 1):.3f},{rng.normal(0, 1):.3f},no" for _ in range(1000)]
    rows += [f"{rng.normal(1.5, 1):.3f},{rng.normal(0, 1):.3f},yes" for _ in range(60)]
    table = tmp_path / "rare.csv"
    table.write_text("\n".join(["x,z,label"] + [rows[i] for i in rng.permutation(len(rows))]) + "\n")
    recall, notes = {}, {}
    for weighting in ("none", "balanced"):
        cfg = config.load("mlp", str(table), overrides=[
            "data.target=label", "train.epochs=30", "train.learning_rate=0.01", "model.hidden_units=[8]",
            f"train.class_weight={weighting}"])
        console = Console(file=__import__("io").StringIO(), width=400)
        metrics = train.run(cfg, run_dir=tmp_path / weighting, console=console)
        report = json.loads((tmp_path / weighting / "eval" / "test" / "report.json").read_text())
        recall[weighting] = report["per_class"][1]["recall"]
        assert metrics["balanced_accuracy"] == pytest.approx(np.mean([c["recall"] for c in report["per_class"]]))
        notes[weighting] = "note: the classes are imbalanced" in console.file.getvalue()
    assert recall["none"] < 0.2 and recall["balanced"] > 0.5, recall
    assert notes == {"none": True, "balanced": False}


def test_class_weight_on_a_language_model_is_a_user_error(tmp_path, cli):
    from conftest import assert_user_error

    corpus = tmp_path / "c.txt"
    corpus.write_text("to be or not to be " * 200)
    assert_user_error(cli("train", "gpt", "--dataset", corpus, "data.sequence_length=16",
                          "train.class_weight=balanced"),
                      "train.class_weight applies to classifiers; set it to none")


def test_multi_worker_validation_scores_weigh_classes_as_fit_does():
    """The multi-worker loop validates with weighted_scores; fit with the weighted validation set. They
    must agree, or train.patience and the best epoch would differ between the two."""
    from bigml_cli.data.pipeline import eval_dataset
    from bigml_cli.evaluate import weighted_scores
    from bigml_cli.tasks.base import class_weights

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 3)).astype("float32"), np.array([0] * 40 + [1] * 7 + [2] * 3)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(loss="categorical_crossentropy", weighted_metrics=["categorical_accuracy"])
    weights = class_weights(y, 3)
    assert weights == pytest.approx([50 / 120, 50 / 21, 50 / 9])
    loss, accuracy = model.evaluate(eval_dataset(x, y, 3, 16, weights), verbose=0)
    ours = weighted_scores(model.predict(x, verbose=0), y, weights)
    assert ours["loss"] == pytest.approx(loss, rel=1e-5) and ours["accuracy"] == pytest.approx(accuracy, rel=1e-5)
    assert weighted_scores(model.predict(x, verbose=0), y)["accuracy"] != pytest.approx(accuracy)  # it matters


def test_each_epoch_line_says_about_how_long_the_rest_takes():
    import io

    from rich.console import Console

    from bigml_cli.train.callbacks import RichProgress, duration

    assert [duration(s) for s in (7.4, 65, 3725)] == ["7s", "1m 05s", "1h 02m"]
    console = Console(file=io.StringIO(), width=300)
    progress = RichProgress(epochs=3, steps=10, per_step=32, console=console)
    for epoch in range(3):
        progress.on_epoch_begin(epoch)
        progress.start -= 60  # each epoch "took" a minute
        progress.on_epoch_end(epoch, {"loss": 0.5, "accuracy": 0.8})
    lines = console.file.getvalue().splitlines()  # one line an epoch in a log file, no blank ones
    assert len(lines) == 3 and lines[0].endswith("about 2m 00s left") and lines[1].endswith("about 1m 00s left")
    assert "left" not in lines[2]
