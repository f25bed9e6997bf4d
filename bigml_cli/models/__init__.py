"""Model builders registered by name. A builder takes the preprocessed features and the number of
classes, and returns class probabilities; its keyword parameters are the recipe's `model.*` keys."""

import keras

from bigml_cli.errors import UserError

from bigml_cli.models.base import (MODELS, adapt_to_data, float32_policies, in_float32, inference,  # noqa: F401
                                   whitening_biases, with_test_time_augmentation)
from bigml_cli.registry import import_all
from bigml_cli import optim  # noqa: F401  (registers the optimizer that a saved TTA model's inner model names)

import_all(__name__, __path__)  # every model file registers its builder: a new one needs no edit here


def build_model(model_cfg: dict, input_info: dict, num_classes: int) -> keras.Model:
    """A Keras model from raw inputs (the input spec's task says which) to class probabilities (or logits)."""
    from bigml_cli.tasks import task_for

    name = model_cfg["name"]
    params = {k: v for k, v in model_cfg.items() if k != "name"}
    MODELS.check_params(name, params, skip=2)
    inputs, features = task_for(input_info).model_inputs(input_info)
    try:
        outputs = MODELS.get(name)(features, num_classes, **params)
    except ValueError as e:  # Keras checks layer arguments (units=0, a negative width) as it builds them
        detail = " ".join(str(e).split())
        raise UserError(f"model '{name}' cannot be built from these model.* values: {detail[:300]}; check them "
                        f"with `bigml config {name} --dataset ...`") from None
    return keras.Model(inputs, outputs, name=name)
