"""Optimizer pieces borrowed from airbench: the triangle schedule, the BatchNorm-offset learning-rate
scale, and the lookahead EMA (exact resume with it is in test_resume.py)."""

import keras
import numpy as np
import pytest

from bigml_cli.config import TrainConfig
from bigml_cli.errors import UserError
from bigml_cli.optim import WarmupLinear, make_optimizer
from bigml_cli.train import Lookahead


def test_linear_schedule_rises_then_falls_to_its_end_fractions():
    t = TrainConfig(epochs=10, learning_rate=2.0, warmup_epochs=2.5, schedule="linear", lr_start=0.2, lr_end=0.07)
    schedule = make_optimizer(t, steps_per_epoch=4)._learning_rate
    assert isinstance(schedule, WarmupLinear)
    lr = [float(schedule(s)) for s in range(41)]
    assert lr[0] == pytest.approx(0.4) and lr[10] == pytest.approx(2.0) and lr[40] == pytest.approx(0.14)
    assert lr[5] == pytest.approx(1.2)  # halfway up
    assert np.all(np.diff(lr[:11]) > 0) and np.all(np.diff(lr[10:]) < 0)


def test_cosine_schedule_ends_at_lr_end():
    t = TrainConfig(epochs=2, learning_rate=1.0, warmup_epochs=0.5, lr_start=0.5, lr_end=0.1)
    schedule = make_optimizer(t, steps_per_epoch=10)._learning_rate
    assert float(schedule(0)) == pytest.approx(0.5) and float(schedule(20)) == pytest.approx(0.1)


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
