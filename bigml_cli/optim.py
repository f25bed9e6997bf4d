"""Optimizers and learning-rate schedules from a TrainConfig. The classes are registered with Keras, and
a saved model's nested compiled parts name them, so loading a run imports this module."""

import keras

from bigml_cli.errors import UserError


@keras.saving.register_keras_serializable(package="bigml")
class WarmupLinear(keras.optimizers.schedules.LearningRateSchedule):
    """airbench's triangle: linear from `start` to `peak` over `warmup` steps, then linear to `end` at `total`."""

    def __init__(self, start, peak, end, warmup, total):
        self.start, self.peak, self.end, self.warmup, self.total = start, peak, end, warmup, total

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        up = self.start + (self.peak - self.start) * step / max(self.warmup, 1)
        down = self.peak + (self.end - self.peak) * (step - self.warmup) / max(self.total - self.warmup, 1)
        return keras.ops.where(step < self.warmup, up, keras.ops.maximum(down, min(self.end, self.peak)))

    def get_config(self):
        return {"start": self.start, "peak": self.peak, "end": self.end, "warmup": self.warmup, "total": self.total}


@keras.saving.register_keras_serializable(package="bigml")
class ScaledSGD(keras.optimizers.SGD):
    """SGD whose normalization offsets (variables named `beta`: BatchNorm's, and LayerNorm's where a model
    has them) take `bias_scale` times the learning rate (airbench's bias scaler, for BatchNorm). For SGD,
    scaling a gradient is scaling its learning rate."""

    def __init__(self, *args, bias_scale=1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.bias_scale = bias_scale

    def update_step(self, gradient, variable, learning_rate):
        if variable.name.split(":")[0] == "beta":  # TensorFlow hands over its variable: "beta:0"
            gradient = gradient * keras.ops.cast(self.bias_scale, gradient.dtype)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "bias_scale": self.bias_scale}


def make_optimizer(t, steps_per_epoch):
    """Optimizer with linear warmup then cosine or linear decay (or constant) from the TrainConfig."""
    total = t.epochs * steps_per_epoch
    warmup = min(int(round(t.warmup_epochs * steps_per_epoch)), total - 1)
    if t.schedule == "linear":
        schedule = WarmupLinear(t.lr_start * t.learning_rate, t.learning_rate, t.lr_end * t.learning_rate,
                                warmup, total)
    else:
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=t.lr_start * t.learning_rate if warmup else t.learning_rate,
            decay_steps=max(1, total - warmup), alpha=t.lr_end if t.schedule == "cosine" else 1.0,
            warmup_target=t.learning_rate if warmup else None, warmup_steps=warmup)
    if t.optimizer == "sgd":
        opt = ScaledSGD(schedule, momentum=t.momentum, nesterov=t.nesterov, weight_decay=t.weight_decay,
                        bias_scale=t.bias_lr_scale)
    else:
        if t.bias_lr_scale != 1.0:
            raise UserError("train.bias_lr_scale applies to sgd; set it to 1 for adamw")
        opt = keras.optimizers.AdamW(schedule, weight_decay=t.weight_decay)
    if not t.decay_biases:
        opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])  # no decay on norms and biases
    return opt
