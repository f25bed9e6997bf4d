"""Model builders registered by name. A builder takes the preprocessed features and the number of
classes, and returns class probabilities; its keyword parameters are the recipe's `model.*` keys."""

import keras

from bigml_cli.errors import UserError

from bigml_cli.models.base import (MODELS, adapt_to_data, float32_policies, in_float32, inference,  # noqa: F401
                                   model_inputs, whitening_biases, with_test_time_augmentation)
from bigml_cli.models import cnn, gpt, mlp, rnn, transformer  # noqa: F401  (registers the builders)
from bigml_cli import optim  # noqa: F401  (registers the optimizer that a saved TTA model's inner model names)


def build_model(model_cfg: dict, input_info: dict, num_classes: int):
    """A Keras model from raw inputs (uint8 images or raw table columns) to class probabilities."""
    name = model_cfg["name"]
    params = {k: v for k, v in model_cfg.items() if k != "name"}
    MODELS.check_params(name, params, skip=2)
    inputs, features = model_inputs(input_info)
    try:
        outputs = MODELS.get(name)(features, num_classes, **params)
    except ValueError as e:  # Keras checks layer arguments (units=0, a negative width) as it builds them
        detail = " ".join(str(e).split())
        raise UserError(f"model '{name}' cannot be built from these model.* values: {detail[:300]}; check them "
                        f"with `bigml config {name} --dataset ...`") from None
    return keras.Model(inputs, outputs, name=name)
