"""Optimizers and learning-rate schedules from a TrainConfig. The classes are registered with Keras, and
a saved model's nested compiled parts name them, so loading a run imports this module."""

from typing import Any

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

    def get_config(self) -> dict:
        return {"start": self.start, "peak": self.peak, "end": self.end, "warmup": self.warmup, "total": self.total}


@keras.saving.register_keras_serializable(package="bigml")
class WarmupRsqrt(keras.optimizers.schedules.LearningRateSchedule):
    """"Attention Is All You Need": linear from `start` to `peak` over `warmup` steps, then peak x
    sqrt(warmup / step), the inverse square root of the step."""

    def __init__(self, start, peak, warmup):
        self.start, self.peak, self.warmup = start, peak, warmup

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warmup = max(self.warmup, 1)
        up = self.start + (self.peak - self.start) * step / warmup
        return keras.ops.where(step < warmup, up, self.peak * keras.ops.sqrt(warmup / keras.ops.maximum(step, 1.0)))

    def get_config(self) -> dict:
        return {"start": self.start, "peak": self.peak, "warmup": self.warmup}


@keras.saving.register_keras_serializable(package="bigml")
class ScaledSGD(keras.optimizers.SGD):
    """SGD whose normalization offsets (variables named `beta`: BatchNorm's, and LayerNorm's where a model
    has them) take `bias_scale` times the learning rate (airbench's bias scaler, for BatchNorm). For SGD,
    scaling a gradient is scaling its learning rate."""

    def __init__(self, *args, bias_scale=1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.bias_scale = bias_scale

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        if variable.name.split(":")[0] == "beta":  # TensorFlow hands over its variable: "beta:0"
            gradient = gradient * keras.ops.cast(self.bias_scale, gradient.dtype)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict:
        return {**super().get_config(), "bias_scale": self.bias_scale}


def orthogonalize(g: Any, steps: int = 3) -> Any:
    """Newton-Schulz iteration toward the nearest semi-orthogonal matrix, U V^T of g = U S V^T, loosely: the
    quintic of Muon (Keller Jordan, 2024), whose singular values land between about 0.5 and 1.5."""
    a, b, c = 3.4445, -4.7750, 2.0315
    wide = g.shape[0] <= g.shape[1]
    x = g if wide else keras.ops.transpose(g)
    x = x / (keras.ops.sqrt(keras.ops.sum(keras.ops.square(x))) + 1e-7)  # every singular value <= 1
    for _ in range(steps):
        s = keras.ops.matmul(x, keras.ops.transpose(x))
        x = a * x + keras.ops.matmul(b * s + c * keras.ops.matmul(s, s), x)
    return x if wide else keras.ops.transpose(x)


@keras.saving.register_keras_serializable(package="bigml")
class MuonSGD(ScaledSGD):
    """airbench94_muon's optimizer: convolution kernels take Muon steps, everything else ScaledSGD's.

    A Muon step keeps each kernel at Frobenius norm sqrt(its output channels) and moves it by the
    orthogonalized Nesterov momentum of its gradient, a matrix of output channels x (height x width x
    input channels), times `muon_scale` x the scheduled learning rate; kernels take no weight decay (the
    normalization fixes their scale). Orthogonal updates change every direction of a filter bank at one rate,
    which lets airbench reach 94% on CIFAR-10 in 8 epochs instead of 9.9."""

    def __init__(self, *args, muon_scale=1.0, muon_momentum=0.6, **kwargs):
        super().__init__(*args, **kwargs)
        self.muon_scale, self.muon_momentum = muon_scale, muon_momentum

    @staticmethod
    def takes_muon(variable: Any) -> bool:
        return len(variable.shape) == 4

    def build(self, variables: Any) -> None:
        if self.built:
            return
        super().build(variables)
        if not self.momentums:  # sgd without momentum makes none; Muon's kernels still need theirs
            self.momentums = self.add_optimizer_variables(variables, "momentum")

    def _use_weight_decay(self, variable):
        return not self.takes_muon(variable) and super()._use_weight_decay(variable)

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> Any:
        if not self.takes_muon(variable):
            return super().update_step(gradient, variable, learning_rate)
        ops = keras.ops
        gradient = ops.cast(gradient, variable.dtype)
        m = self.momentums[self._get_variable_index(variable)]
        self.assign(m, ops.add(ops.multiply(m, self.muon_momentum), gradient))
        direction = ops.add(gradient, ops.multiply(m, self.muon_momentum))  # Nesterov
        outputs = variable.shape[-1]
        norm = ops.sqrt(ops.sum(ops.square(variable)))
        self.assign(variable, ops.multiply(variable, outputs ** 0.5 / (norm + 1e-12)))
        update = orthogonalize(ops.transpose(ops.reshape(direction, (-1, outputs))))
        step = ops.cast(learning_rate, variable.dtype) * self.muon_scale
        self.assign_sub(variable, ops.multiply(ops.reshape(ops.transpose(update), variable.shape), step))

    def get_config(self) -> dict:
        return {**super().get_config(), "muon_scale": self.muon_scale, "muon_momentum": self.muon_momentum}


@keras.saving.register_keras_serializable(package="bigml")
class FineTuneAdamW(keras.optimizers.AdamW):
    """AdamW whose backbone (every variable outside the head, the layer named `logits`) steps at `backbone_scale`
    times the learning rate, and not at all in the first `freeze_steps` steps (its weight decay too), while the
    head trains at the full rate. A function of the step count alone, so a resumed run steps as an unbroken one.
    (Adam's moments keep averaging the backbone's gradients while it is frozen.)"""

    def __init__(self, *args, backbone_scale=1.0, freeze_steps=0, **kwargs):
        super().__init__(*args, **kwargs)
        self.backbone_scale, self.freeze_steps = backbone_scale, freeze_steps

    def build(self, variables: Any) -> None:
        super().build(variables)
        self._backbone = [not v.path.startswith("logits/") for v in variables]
        decays = [self._use_weight_decay(v) for v in variables]
        self._backbone_decays = [b and d for b, d in zip(self._backbone, decays)]
        self.exclude_from_weight_decay(var_list=[v for v, b in zip(variables, self._backbone) if b])  # decayed here

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        index = self._get_variable_index(variable)
        if self._backbone[index]:
            frozen = keras.ops.less(self.iterations, self.freeze_steps)
            scale = keras.ops.where(frozen, 0.0, self.backbone_scale)
            learning_rate = keras.ops.cast(learning_rate, variable.dtype) * keras.ops.cast(scale, variable.dtype)
            if self._backbone_decays[index] and self.weight_decay:
                variable.assign_sub(variable * keras.ops.cast(self.weight_decay, variable.dtype) * learning_rate)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict:
        return {**super().get_config(), "backbone_scale": self.backbone_scale, "freeze_steps": self.freeze_steps}


def make_optimizer(t: Any, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Optimizer with linear warmup then cosine, linear or inverse-square-root decay (or constant) from the
    TrainConfig."""
    total = t.epochs * steps_per_epoch
    warmup = min(int(round(t.warmup_epochs * steps_per_epoch)), total - 1)
    if t.schedule == "rsqrt":
        schedule = WarmupRsqrt(t.lr_start * t.learning_rate, t.learning_rate, warmup)
    elif t.schedule == "linear":
        schedule = WarmupLinear(t.lr_start * t.learning_rate, t.learning_rate, t.lr_end * t.learning_rate,
                                warmup, total)
    else:
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=t.lr_start * t.learning_rate if warmup else t.learning_rate,
            decay_steps=max(1, total - warmup), alpha=t.lr_end if t.schedule == "cosine" else 1.0,
            warmup_target=t.learning_rate if warmup else None, warmup_steps=warmup)
    if t.optimizer != "adamw" and (t.freeze_backbone_epochs or t.backbone_lr_scale != 1.0):
        raise UserError("train.freeze_backbone_epochs and train.backbone_lr_scale apply to the adamw optimizer; set "
                        "train.optimizer=adamw, or them to 0 and 1")
    if t.optimizer == "sgd":
        opt = ScaledSGD(schedule, momentum=t.momentum, nesterov=t.nesterov, weight_decay=t.weight_decay,
                        bias_scale=t.bias_lr_scale)
    elif t.optimizer == "muon":
        opt = MuonSGD(schedule, momentum=t.momentum, nesterov=t.nesterov, weight_decay=t.weight_decay,
                      bias_scale=t.bias_lr_scale, muon_scale=t.muon_learning_rate / t.learning_rate,
                      muon_momentum=t.muon_momentum)
    else:
        if t.bias_lr_scale != 1.0:
            raise UserError("train.bias_lr_scale applies to sgd and muon; set it to 1 for adamw")
        if t.freeze_backbone_epochs or t.backbone_lr_scale != 1.0:
            opt = FineTuneAdamW(schedule, weight_decay=t.weight_decay, backbone_scale=t.backbone_lr_scale,
                                freeze_steps=int(round(t.freeze_backbone_epochs * steps_per_epoch)))
        else:
            opt = keras.optimizers.AdamW(schedule, weight_decay=t.weight_decay)
    if not t.decay_biases:
        opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])  # no decay on norms and biases
    return opt
